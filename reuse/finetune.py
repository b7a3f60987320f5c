"""Fine-tune a masked-LM checkpoint on a GLUE task (or the offline task `next`) and report the task's dev score.

    python -m reuse.finetune snap/demo/bert-2L-64H-0.02D/best --task next --glue-dir data/glue --out rows.csv
    python -m reuse.finetune peihaowang/data-efficient-scaling/bert-12L-64H-0.001D --task rte --glue-dir data/glue

The encoder gets a fresh classification head (a regression head for STS-B) through
AutoModelForSequenceClassification. The recipe is the usual GLUE one, every part settable: AdamW (weight decay 0.01
except biases and LayerNorm), lr 2e-5, batch 32, 3 epochs, linear warm-up over 10% of the steps then linear decay,
sequences of at most 128 tokens, gradient clipping at 1. The dev set is scored every --eval-every steps (0: at the
end of every epoch) and at the last step; the best and the final score are both reported (the best is chosen on the
dev set it is reported on, as GLUE dev results usually are: optimistic, but alike for every checkpoint compared).

The output folder gets tensorboardX logs (tb/), log.jsonl and, at the end, finetune.json: the result, with the
checkpoint's and the data's sha256, so the same fine-tune is recognised and not redone. A fine-tune is not resumed:
one killed before finetune.json exists is started over from scratch, and finetune.json and the --out table are
written under temporary names and renamed, so no half-written result is ever read.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from reuse.glue import GlueError, Task, load_task, majority_baseline, metrics, score, task_file
from reuse.hub import from_pretrained_args, is_local
from reuse.model import ModelError, checkpoint_config, is_causal
from reuse.tokenize import TokenizeError, load_tokenizer

ROW_COLUMNS = ["checkpoint", "task", "seed", "steps", "metric", "best_score", "best_step", "final_score",
               "majority_score", "best_parts", "final_parts", "train_examples", "wall_time_s"]
# Settings that change where or how fast a fine-tune runs, not its result.
NOT_RECIPE = {"glue_dir", "output_dir", "out", "device", "threads", "overwrite"}


@dataclass
class FinetuneConfig:
    task: str = field(default="", metadata={"help": "cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli or next"})
    glue_dir: str = field(default="data/glue", metadata={"help": "folder of the task folders (CoLA/, SST-2/, ...)"})
    output_dir: str = field(default="", metadata={"help": "default snap/finetune/<checkpoint>/<task>-s<seed>"})
    out: str = field(default="", metadata={"help": "a CSV table: this fine-tune's row is added or replaced"})
    lr: float = 2e-5
    batch_size: int = 32
    epochs: float = 3.0
    max_steps: int = field(default=0, metadata={"help": "optimizer steps; 0 = derive from --epochs"})
    warmup: float = field(default=0.1, metadata={"help": "warm-up: a fraction of the steps if < 1, else steps"})
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    max_length: int = field(default=128, metadata={"help": "tokens per example, pairs truncated longest first"})
    tokenizer: str = field(default="", metadata={"help": "default: the checkpoint's own (a vendored name, folder or "
                                                         "Hub id for a checkpoint saved without one)"})
    max_train_examples: int = field(default=0, metadata={"help": "a seeded subset of the training set; 0 = all"})
    dropout: float = field(default=-1.0, metadata={"help": "override hidden and attention dropout; -1 keeps the "
                                                           "checkpoint's"})
    eval_every: int = field(default=0, metadata={"help": "score the dev set every N steps; 0 = every epoch"})
    eval_batch_size: int = 128
    seed: int = field(default=0, metadata={"help": "the head's initialisation, the order and subset of examples"})
    device: str = field(default="", metadata={"help": "cuda or cpu; default cuda when available"})
    threads: int = field(default=0, metadata={"help": "CPU threads; 0 = torch's default"})
    overwrite: bool = field(default=False, metadata={"help": "redo a finished fine-tune"})


class FinetuneError(Exception):
    """Bad fine-tuning input; the message says what to do."""


def check(cfg: FinetuneConfig) -> None:
    positive = {"batch_size": cfg.batch_size, "max_length": cfg.max_length, "eval_batch_size": cfg.eval_batch_size,
                "lr": cfg.lr}
    nonnegative = {"max_steps": cfg.max_steps, "epochs": cfg.epochs, "warmup": cfg.warmup, "seed": cfg.seed,
                   "weight_decay": cfg.weight_decay, "max_train_examples": cfg.max_train_examples,
                   "eval_every": cfg.eval_every, "threads": cfg.threads}
    for name, value in positive.items():
        if not (math.isfinite(value) and value > 0):
            raise FinetuneError(f"--{name.replace('_', '-')} must be > 0, not {value}")
    for name, value in nonnegative.items():
        if not (math.isfinite(value) and value >= 0):
            raise FinetuneError(f"--{name.replace('_', '-')} must be >= 0, not {value}")
    if not cfg.max_steps and not cfg.epochs:
        raise FinetuneError("give --max-steps or --epochs above 0")


def sha256_files(paths) -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(paths):
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def default_output_dir(checkpoint: str, cfg: FinetuneConfig) -> Path:
    """snap/finetune/<label>/<task>-s<seed>; a run's best/ is labelled with its run's name."""
    if is_local(checkpoint):
        path = Path(checkpoint).resolve()
        label = f"{path.parent.name}-{path.name}" if path.name == "best" else path.name
    else:
        label = "+".join(p for p in checkpoint.split("/") if p)
    return Path("snap/finetune") / label / f"{cfg.task}-s{cfg.seed}"


def identity(checkpoint: str, cfg: FinetuneConfig) -> dict:
    """What makes two fine-tunes the same: the checkpoint's weights (a Hub id by name), the data, the recipe."""
    task, files = load_task_files(cfg)
    weights = sorted(Path(checkpoint).glob("*.safetensors")) + sorted(Path(checkpoint).glob("pytorch_model.bin")) \
        if is_local(checkpoint) else []
    return {"checkpoint": checkpoint, "checkpoint_sha256": sha256_files(weights) if weights else None,
            "task": task.name, "seed": cfg.seed, "data_sha256": sha256_files(files),
            "recipe": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_RECIPE}}


def load_task_files(cfg: FinetuneConfig) -> tuple[Task, list[Path]]:
    from reuse.glue import get_task

    task = get_task(cfg.task)
    return task, [task_file(cfg.glue_dir, task, name) for name in ["train.tsv"] + [f for _, f in task.dev]]


def cached(out: Path, ident: dict) -> dict | None:
    """The result in out/finetune.json if it is of this very fine-tune."""
    path = out / "finetune.json"
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    # A local checkpoint is known by its weights (a run folder may be given by another path); a Hub one by its id.
    keys = [k for k in ident if k != "checkpoint" or ident["checkpoint_sha256"] is None]
    same = all(result.get(k) == ident[k] for k in keys)
    return result if same else None


def prepare_output_dir(out: Path, ident: dict, overwrite: bool) -> None:
    """Another fine-tune's result is refused unless --overwrite; a killed one's leftovers are removed."""
    done = out / "finetune.json"
    if done.is_file() and not overwrite:
        raise FinetuneError(f"{out} holds another fine-tune's finetune.json (another checkpoint, data or recipe); "
                            f"pass --overwrite to replace it or choose another --output-dir")
    leftovers = [p for p in (out / "tb", out / "log.jsonl", out / "finetune.json.tmp") if p.exists()]
    if leftovers and not done.is_file():
        print(f"{out}: no complete result (a killed fine-tune); starting over from scratch", flush=True)
    for path in leftovers + ([done] if done.is_file() else []):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)


# ---------------------------------------------------------------------------------------------------- model, data
def check_encoder(checkpoint: str, cfg: FinetuneConfig):
    """The checkpoint's config, if it is an encoder with room for --max-length tokens; a missing checkpoint, a
    folder that is none, and a decoder are refused in one line."""
    config = checkpoint_config(checkpoint)
    if is_causal(config) or getattr(config, "is_decoder", False):
        raise FinetuneError(f"{checkpoint} is a decoder (model_type {config.model_type}), not an encoder: "
                            f"fine-tune a BERT or RoBERTa checkpoint")
    # RoBERTa's position ids start after the padding index, so that many positions are never used.
    positions = config.max_position_embeddings - (config.pad_token_id + 1 if config.model_type == "roberta" else 0)
    if cfg.max_length > positions:
        raise FinetuneError(f"--max-length {cfg.max_length} exceeds the {positions} positions of {checkpoint}")
    return config


def load_encoder(checkpoint: str, config, task: Task, cfg: FinetuneConfig):
    """(model with a fresh head, tokenizer); a tokenizer that does not fit the model is refused first."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    tokenizer = load_tokenizer(cfg.tokenizer or checkpoint)  # its own: its ids are the ones the model learned
    if len(tokenizer) > config.vocab_size:
        raise FinetuneError(f"the tokenizer of {checkpoint} has {len(tokenizer)} tokens but the model "
                            f"{config.vocab_size} embeddings")
    where, kwargs = from_pretrained_args(checkpoint)
    if cfg.dropout >= 0:
        kwargs.update(hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout)
    torch.manual_seed(cfg.seed)  # the fresh head's initialisation
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # its load report lists the MLM head left out: expected, not news
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            where, num_labels=task.num_labels, problem_type="regression" if task.regression else None,
            attn_implementation="sdpa", **kwargs)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load checkpoint {checkpoint!r}: {str(e).splitlines()[0]}") from e
    finally:
        hf_logging.set_verbosity(verbosity)
    return model, tokenizer


def encode(tokenizer, examples, max_length: int) -> dict:
    """Token ids of every example (pairs truncated longest first), padded later per batch."""
    enc = tokenizer(examples.a, examples.b, truncation=True, max_length=max_length)
    return {"input_ids": enc["input_ids"], "token_type_ids": enc.get("token_type_ids"),
            "labels": examples.labels}


def collate(data: dict, index, pad_id: int, regression: bool) -> dict:
    rows = [data["input_ids"][i] for i in index]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    batch = {"input_ids": ids, "attention_mask": mask}
    if data["token_type_ids"] is not None:
        batch["token_type_ids"] = torch.zeros((len(rows), width), dtype=torch.long)
    for row, i in enumerate(index):
        n = len(rows[row])
        ids[row, :n] = torch.tensor(rows[row])
        mask[row, :n] = 1
        if "token_type_ids" in batch:
            batch["token_type_ids"][row, :n] = torch.tensor(data["token_type_ids"][i])
    labels = [data["labels"][i] for i in index]
    batch["labels"] = torch.tensor(labels, dtype=torch.float if regression else torch.long)
    return batch


@torch.no_grad()
def predict(model, data: dict, task: Task, batch_size: int, pad_id: int, device) -> np.ndarray:
    """Class indices (scores for regression) in the examples' order; batches of similar length waste no padding."""
    model.eval()
    order = np.argsort([len(x) for x in data["input_ids"]], kind="stable")
    out = np.empty(len(order), dtype=np.float64 if task.regression else np.int64)
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        batch = {k: v.to(device) for k, v in collate(data, index, pad_id, task.regression).items() if k != "labels"}
        logits = model(**batch).logits.float()
        out[index] = (logits[:, 0] if task.regression else logits.argmax(-1)).cpu().numpy()
    model.train()
    return out


def evaluate_dev(model, task: Task, dev: dict, cfg: FinetuneConfig, pad_id: int, device) -> tuple[float, dict]:
    parts = {prefix: metrics(task, data["labels"], predict(model, data, task, cfg.eval_batch_size, pad_id, device))
             for prefix, data in dev.items()}
    return score(task, parts)


def make_optimizer(model, cfg: FinetuneConfig):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]  # biases and LayerNorm
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


# ---------------------------------------------------------------------------------------------------- the run
def finetune(checkpoint: str, cfg: FinetuneConfig) -> dict:
    check(cfg)
    task, train_ex, dev_ex = load_task(cfg.glue_dir, cfg.task)  # bad task names and files fail here, first
    config = check_encoder(checkpoint, cfg)
    out = Path(cfg.output_dir) if cfg.output_dir else default_output_dir(checkpoint, cfg)
    ident = identity(checkpoint, cfg)
    if not cfg.overwrite and (done := cached(out, ident)) is not None:
        print(f"{out / 'finetune.json'}: already done, {done['metric']} {done['best_score']:.4f}", flush=True)
        write_row(done, cfg.out)
        return done
    model, tokenizer = load_encoder(checkpoint, config, task, cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    prepare_output_dir(out, ident, cfg.overwrite)

    if cfg.max_train_examples and cfg.max_train_examples < len(train_ex):
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(train_ex))[:cfg.max_train_examples])
        train_ex.a, train_ex.labels = [train_ex.a[i] for i in keep], [train_ex.labels[i] for i in keep]
        train_ex.b = [train_ex.b[i] for i in keep] if train_ex.b is not None else None
    train = encode(tokenizer, train_ex, cfg.max_length)
    dev = {prefix: encode(tokenizer, ex, cfg.max_length) for prefix, ex in dev_ex.items()}
    majority = majority_baseline(task, train_ex, dev_ex)
    steps_per_epoch = math.ceil(len(train_ex) / cfg.batch_size)
    max_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    eval_every = cfg.eval_every or steps_per_epoch

    from tensorboardX import SummaryWriter

    from reuse.train import lr_lambda

    model.to(device).train()
    optimizer = make_optimizer(model, cfg)
    warmup = int(cfg.warmup * max_steps) if cfg.warmup < 1 else int(cfg.warmup)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(max(1, warmup), max_steps))
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    writer = SummaryWriter(str(out / "tb"))
    log = open(out / "log.jsonl", "a")
    best, best_step, best_parts, curve = -math.inf, 0, {}, []
    start = time.perf_counter()
    bar = tqdm(total=max_steps, desc=f"{task.name} {out.parent.name}", disable=None)
    for step in range(max_steps):
        epoch, position = divmod(step, steps_per_epoch)
        if position == 0:  # an epoch's order depends only on (seed, epoch)
            perm = torch.randperm(len(train_ex), generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        batch = collate(train, perm[position * cfg.batch_size:(position + 1) * cfg.batch_size].tolist(), pad_id,
                        task.regression)
        with torch.autocast(**autocast):
            loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(loss.item()):
            raise FinetuneError(f"the loss became {loss.item()} at step {step + 1}: lower --lr")
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        writer.add_scalar("train/loss", loss.item(), step + 1)
        writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step + 1)
        if (step + 1) % eval_every == 0 or step + 1 == max_steps:
            with torch.autocast(**autocast):
                final, final_parts = evaluate_dev(model, task, dev, cfg, pad_id, device)
            curve.append([step + 1, final])
            log.write(json.dumps({"step": step + 1, "loss": loss.item(), "dev_score": final, **final_parts}) + "\n")
            log.flush()
            writer.add_scalar(f"dev/{task.metric}", final, step + 1)
            for name, value in final_parts.items():
                writer.add_scalar(f"dev/{name}", value, step + 1)
            if final > best:
                best, best_step, best_parts = final, step + 1, final_parts
            bar.set_postfix(loss=f"{loss.item():.3f}", dev=f"{final:.3f}")
    bar.close()
    writer.close()
    log.close()
    result = {**ident, "metric": task.metric, "steps": max_steps, "epochs": max_steps / steps_per_epoch,
              "train_examples": len(train_ex), "dev_examples": {p or "dev": len(ex) for p, ex in dev_ex.items()},
              "best_score": best, "best_step": best_step, "best_parts": best_parts, "final_score": final,
              "final_parts": final_parts, "majority_score": majority, "curve": curve,
              "wall_time_s": time.perf_counter() - start}
    tmp = out / "finetune.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out / "finetune.json")
    write_row(result, cfg.out)
    return result


def write_row(result: dict, path: str) -> None:
    """Add this fine-tune's row to a CSV table (replacing an earlier row of the same checkpoint, task and seed),
    written whole under a temporary name and renamed."""
    if not path:
        return
    path = Path(path)
    row = {k: result[k] for k in ROW_COLUMNS if k in result}
    row.update(best_parts=json.dumps(result["best_parts"]), final_parts=json.dumps(result["final_parts"]))
    rows = []
    if path.is_file():
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != ROW_COLUMNS:
                raise FinetuneError(f"{path} is not a fine-tune table (its columns differ); give another --out")
            key = (row["checkpoint"], row["task"], str(row["seed"]))
            rows = [r for r in reader if (r["checkpoint"], r["task"], r["seed"]) != key]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ROW_COLUMNS)
        writer.writeheader()
        writer.writerows(rows + [row])
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    from reuse.cli import Parser, add_dataclass_arguments, dataclass_from_args

    parser = Parser(prog="python -m reuse.finetune", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint folder (a run folder or its best/), a Hub id, or "
                                           "owner/repo/subfolder")
    add_dataclass_arguments(parser, FinetuneConfig)
    args = parser.parse_args(argv)
    cfg = dataclass_from_args(FinetuneConfig, args)
    if not cfg.task:
        parser.error("--task is required")
    try:
        result = finetune(args.checkpoint, cfg)
    except (FinetuneError, GlueError, ModelError, TokenizeError) as e:
        sys.exit(f"error: {e}")
    parts = ", ".join(f"{k} {v:.4f}" for k, v in result["best_parts"].items())
    print(f"{args.checkpoint}\t{result['task']}\t{result['metric']}: best {result['best_score']:.4f} at step "
          f"{result['best_step']} ({parts}), final {result['final_score']:.4f}; majority class "
          f"{result['majority_score']:.4f}")


if __name__ == "__main__":
    main()
