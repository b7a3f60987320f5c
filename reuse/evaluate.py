"""Log-perplexity of checkpoints on a tokenized split.

    python -m reuse.evaluate snap/bert-12L-64H-0.001D peihaowang/... --data data/wiki-cased/en.valid.raw.bert-base-uncased.hdf5 --out results.csv

By default it follows the original project's evaluation step for step (see README), so the released checkpoints
give the paper's numbers: seed 0 set before each checkpoint, [CLS] + 126 tokens + [SEP] blocks in order (the last
full block unused, as there), batch 64, BERT masking drawn from the global generator after the DataLoader's own
draw, and log-perplexity = mean over batches of each batch's mean masked-token loss. `--weighting token` averages
over masked tokens instead. Evaluation streams batches and never holds more than one batch of logits.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import random
import sys
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader, SequentialSampler
from tqdm import tqdm

from reuse.data import BLOCK_SIZE, BlockDataset, DataError, check_file_ids, inspect_tokens, load_blocks, to_device
from reuse.model import ModelError, checkpoint_config, count_parameters, is_causal, load_model
from reuse.objective import objective_for
from reuse.runs import parse_run_name
from reuse.tokenize import TokenizeError, load_tokenizer


@torch.no_grad()
def score_batches(model, batches: Iterable[torch.Tensor], tokenizer, device: torch.device,
                  generator: torch.Generator | None = None, autocast_dtype: torch.dtype | None = None) -> dict:
    """Score batches of input ids on `device`: an MLM's masks are drawn on the CPU (global generator unless one is
    given); a causal LM is scored on every next token.

    Each batch's count of predicted tokens is known on the host (its masks are drawn there) and its summed loss stays
    on the device until the end, so the loop never waits on the device between batches.
    """
    model.eval()
    objective = objective_for(model.config, tokenizer)
    loss_sums, counts = [], []
    for input_ids in batches:
        inputs, labels, predicted = objective.targets(input_ids, generator)
        predicted = int(predicted)  # host tensors: no device sync
        if predicted == 0:  # a loss over no tokens is undefined; such a batch adds nothing to either mean
            continue
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss_sums.append(objective.loss_sum(model, to_device(inputs, device), to_device(labels, device)).float())
        counts.append(predicted)
    if not loss_sums:
        raise DataError("no batch had a masked token: the evaluation data is too small")
    sums = torch.stack(loss_sums).double().cpu()
    counts = torch.tensor(counts, dtype=torch.float64)
    return {"log_ppl": float((sums / counts).mean()), "log_ppl_token": float(sums.sum() / counts.sum()),
            "batches": len(counts), "masked_tokens": int(counts.sum())}


def evaluate_blocks(model, blocks: torch.Tensor, tokenizer, device: torch.device, batch_size: int = 64,
                    seed: int = 0, autocast_dtype: torch.dtype | None = None) -> dict:
    """In-memory blocks, masks from a private generator: the trainer's periodic evaluation, global RNG untouched."""
    generator = torch.Generator().manual_seed(seed)
    objective = objective_for(model.config, tokenizer)
    batches = (objective.input_ids(blocks[i:i + batch_size]) for i in range(0, len(blocks), batch_size))
    return score_batches(model, batches, tokenizer, device, generator, autocast_dtype)


def evaluate_original(model, tokenizer, data: str | Path, device: torch.device, batch_size: int = 64,
                      block_size: int = BLOCK_SIZE, max_batches: int | None = None) -> dict:
    """The original project's evaluation, draw for draw (see the module docstring)."""
    dataset = BlockDataset(data, tokenizer.cls_token_id, tokenizer.sep_token_id, block_size)
    dataset.num_blocks -= 1  # the original's dataset length is one less than its number of full blocks
    if dataset.num_blocks <= 0:
        raise DataError(f"{data} holds fewer than two blocks of {block_size} tokens")
    return evaluate_dataset(model, tokenizer, dataset, device, batch_size, max_batches)


def evaluate_dataset(model, tokenizer, dataset, device: torch.device, batch_size: int = 64,
                     max_batches: int | None = None) -> dict:
    """The original procedure over any dataset of input ids (a file's blocks, or a sample of a run's training
    blocks): global seeds 0, sequential batches, masks from the global generator after the DataLoader's own draw."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    # Creating the iterator draws the workers' base seed from the global generator, before the first mask.
    loader = DataLoader(dataset, batch_size=batch_size, sampler=SequentialSampler(dataset))
    batches = itertools.islice(loader, max_batches)  # stops reading at the last batch wanted
    total = len(loader) if max_batches is None else min(max_batches, len(loader))
    return score_batches(model, tqdm(batches, total=total, desc="evaluate", leave=False, disable=None),
                         tokenizer, device)


def evaluate_checkpoint(model, tokenizer, data: str | Path, device: torch.device, batch_size: int = 64,
                        block_size: int = BLOCK_SIZE, max_batches: int | None = None) -> dict:
    """An MLM by the original protocol; a causal LM by its mean next-token loss over consecutive blocks (no
    randomness involved)."""
    if not is_causal(model.config):
        return evaluate_original(model, tokenizer, data, device, batch_size, block_size, max_batches)
    blocks = load_blocks(data, block_size)
    blocks = blocks[:max_batches * batch_size] if max_batches else blocks
    return evaluate_blocks(model, blocks, tokenizer, device, batch_size)


def token_counts(path: str | Path, vocab_size: int, chunk: int = 1 << 22) -> np.ndarray:
    import h5py

    counts = np.zeros(vocab_size, dtype=np.float64)
    with h5py.File(path, "r") as h5:
        tokens = h5["tokens"]
        for start in range(0, len(tokens), chunk):
            counts += np.bincount(tokens[start:start + chunk], minlength=vocab_size)
    return counts


def unigram_baseline(train: str | Path, valid: str | Path, vocab_size: int) -> float:
    """Cross-entropy (nats) on `valid` of a model that predicts training token frequencies (add-one smoothed):
    the level a masked LM must beat to have learned anything beyond frequencies."""
    frequencies = token_counts(train, vocab_size) + 1
    valid_counts = token_counts(valid, vocab_size)
    return float(-(valid_counts * np.log(frequencies / frequencies.sum())).sum() / valid_counts.sum())


def load_checkpoint_tokenizer(checkpoint: str, data: Path):
    """The checkpoint's own tokenizer files, else the tokenizer named by the data file."""
    try:
        return load_tokenizer(checkpoint)
    except TokenizeError:
        return load_tokenizer(inspect_tokens(data).tokenizer, search_dirs=[data.parent])


def evaluate_folder(root: str | Path, data: str | Path, batch_size: int = 64, device: str = "cpu",
                    cache: str | Path | None = None) -> list[dict]:
    """Evaluate every checkpoint folder under `root` named like the released ones (bert-12L-64H-0.001D,
    bert-n2n-..., and this project's gpt2-... and -sN runs; reuse.runs); rows for reuse.plot. Results are cached in
    `cache` (CSV) and reused on the next call."""

    root, data = Path(root), Path(data)
    cached = {}
    if cache and Path(cache).is_file():
        with open(cache, newline="") as f:
            cached = {r["run_id"]: r for r in csv.DictReader(f)}
    rows = []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and parse_run_name(p.name))
    if not folders:
        raise DataError(f"no checkpoint folders named like bert-12L-64H-0.001D under {root}")
    for folder in tqdm(folders, desc="checkpoints", disable=None):
        meta = parse_run_name(folder.name)
        if folder.name in cached:
            row = cached[folder.name]
        else:
            model = load_model(folder).to(device)
            tokenizer = load_checkpoint_tokenizer(str(folder), data)
            check_vocabulary(str(folder), model.config, tokenizer, inspect_tokens(data))
            result = evaluate_checkpoint(model, tokenizer, data, torch.device(device), batch_size)
            row = {"run_id": folder.name, "parameters": count_parameters(model), "final_log_ppl": result["log_ppl"]}
        rows.append({**row, "run_id": folder.name, "method": meta["method"], "fraction": meta["fraction"],
                     "seed": meta["seed"], "target": meta["language"], "parameters": float(row["parameters"]),
                     "final_log_ppl": float(row["final_log_ppl"]), "model": f"{meta['layers']}L-{meta['hidden']}H"})
    if cache:
        with open(cache, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["run_id", "parameters", "final_log_ppl"])
            writer.writeheader()
            writer.writerows({k: r[k] for k in ("run_id", "parameters", "final_log_ppl")} for r in rows)
    return rows


def check_vocabulary(checkpoint: str, config, tokenizer, info) -> None:
    """The model, its tokenizer and the data must share one vocabulary: otherwise the ids mean other tokens and the
    loss is a number about nothing."""
    if not info.vocab_size:  # a token file without the attribute: only the model and tokenizer can be compared
        if config.vocab_size < len(tokenizer):
            raise ModelError(f"{checkpoint} has {config.vocab_size} token embeddings but its tokenizer "
                             f"{len(tokenizer)} tokens")
        return
    if config.vocab_size != info.vocab_size:
        raise ModelError(f"{checkpoint} has vocab_size {config.vocab_size} but {info.path} was tokenized with "
                         f"{info.tokenizer!r} ({info.vocab_size} tokens): evaluate it on data tokenized with the "
                         f"model's own tokenizer")
    if len(tokenizer) != info.vocab_size:
        raise ModelError(f"the tokenizer of {checkpoint} has {len(tokenizer)} tokens but {info.path} was tokenized "
                         f"with {info.tokenizer!r} ({info.vocab_size} tokens)")


def device_argument(text: str) -> str:
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: CUDA is not available on this machine; use --device cpu")
    return text


def main(argv: list[str] | None = None) -> None:
    from reuse.cli import Parser, output_file, positive_int

    parser = Parser(prog="python -m reuse.evaluate", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="checkpoint folders, Hub ids, or owner/repo/subfolder ids")
    parser.add_argument("--data", type=Path, required=True, help="a tokenized split, <file>.<tokenizer>.hdf5")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--block-size", type=positive_int, default=BLOCK_SIZE)
    parser.add_argument("--device", type=device_argument, default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--weighting", choices=("batch", "token"), default="batch",
                        help="batch: the original's mean of batch means; token: mean over masked tokens")
    parser.add_argument("--max-batches", type=positive_int, help="evaluate only the first N batches")
    parser.add_argument("--out", type=output_file, help="write one row per checkpoint to this .csv or .json")
    args = parser.parse_args(argv)
    if args.out and (args.out.suffix not in (".csv", ".json") or args.out.resolve() == args.data.resolve()):
        parser.error(f"--out {args.out}: give a new .csv or .json file (never the data it reads)")
    rows = []
    try:
        # Every checkpoint is checked against the data before the first one is evaluated.
        info = inspect_tokens(args.data)
        tokenizers, vocab_sizes = [], []
        for ckpt in args.checkpoints:
            config = checkpoint_config(ckpt)
            tokenizers.append(load_checkpoint_tokenizer(ckpt, args.data))
            check_vocabulary(ckpt, config, tokenizers[-1], info)
            vocab_sizes.append(config.vocab_size)
        check_file_ids(args.data, min(vocab_sizes))
        for ckpt, tokenizer in zip(args.checkpoints, tokenizers):
            model = load_model(ckpt).to(args.device)
            result = evaluate_checkpoint(model, tokenizer, args.data, torch.device(args.device), args.batch_size,
                                         args.block_size, args.max_batches)
            value = result["log_ppl"] if args.weighting == "batch" else result["log_ppl_token"]
            rows.append({"checkpoint": ckpt, "parameters": count_parameters(model), "log_ppl": value,
                         "weighting": args.weighting, "batches": result["batches"],
                         "masked_tokens": result["masked_tokens"], "data": str(args.data)})
            print(f"{ckpt}\t{value:.4f}")
    except (ModelError, DataError, TokenizeError) as e:
        sys.exit(f"error: {e}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.out.suffix == ".json":
            args.out.write_text(json.dumps(rows, indent=2))
        else:
            with open(args.out, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)


if __name__ == "__main__":
    main()
