"""Masked-LM training of BERT/RoBERTa on a fraction of a tokenized corpus; one process or several (torchrun).

    python -m reuse.train --config configs/bert-12L-64H.json --train-data D/en.train.raw.bert-base-uncased.hdf5 \
        --valid-data D/en.valid.raw.bert-base-uncased.hdf5 --output-dir snap/bert-12L-64H-0.001D --fraction 0.001
    torchrun --nproc_per_node 4 -m reuse.train ...            (DDP: NCCL on GPUs, gloo on CPU)

The whole training step is `train_step` below. The global batch (`batch_size` sequences) is masked identically on
every rank with one seeded generator, each rank takes its slice, and losses are summed and divided by the global
number of masked tokens, so with dropout off N processes compute the gradient of 1 process. A checkpoint holds the
model (save_pretrained), the tokenizer and the trainer state (optimizer, scheduler, step, RNG states), so a resumed
run continues bitwise where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from reuse import checkpoint as ckpt
from reuse.cli import add_dataclass_arguments, dataclass_from_args
from reuse.config import ConfigError, TrainConfig, check_config
from reuse.data import DataError, inspect_tokens, load_blocks, mask_tokens
from reuse.dropout import use_cpu_dropout
from reuse.evaluate import evaluate_blocks, model_inputs, special_ids
from reuse.grow import GrowthError
from reuse.model import (ModelError, build_model, causal_lm_loss, count_parameters, flops_per_step, is_causal,
                         load_config, load_model, masked_lm_loss, matmul_peak)
from reuse.tokenize import TokenizeError, load_tokenizer


class TrainError(Exception):
    """Bad training input; the message says what to do."""


# ---------------------------------------------------------------------------------------------------- set-up
def setup_distributed(cfg: TrainConfig) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    use_cuda = (cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return rank, world, device


def prepare_output_dir(cfg: TrainConfig, resolved: dict, rank: int) -> bool:
    """Returns whether to resume. Another run's folder is refused unless --resume or --overwrite."""
    out = Path(cfg.output_dir)
    saved = out / "run_config.json"
    if saved.exists() and not cfg.overwrite:
        previous = json.loads(saved.read_text())
        changed = {k: [previous.get(k), v] for k, v in resolved.items()
                   if k not in ("resume", "overwrite") and previous.get(k) != v}
        if changed and not cfg.resume:
            raise TrainError(f"{out} holds another run (its run_config.json differs in {', '.join(sorted(changed))}); "
                             f"pass --resume to continue it with these arguments, --overwrite to replace it, or "
                             f"choose another --output-dir")
        if changed and rank == 0:
            # The folder must describe the run as it continues: the new config replaces the old, and the history
            # keeps what changed and when, so a result can still be traced to every setting it was trained under.
            with open(out / "run_history.jsonl", "a") as f:
                f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": " ".join(sys.argv),
                                    "changed": changed}) + "\n")
            saved.write_text(json.dumps(resolved, indent=2))
            (out / "command.txt").write_text(" ".join(sys.argv) + "\n")
        return True
    if rank == 0:
        if cfg.overwrite:
            for name in ("checkpoints", "best", "tb", "summary.json", "run_config.json", "log.jsonl", "growth.json",
                         "run_history.jsonl"):
                path = out / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(resolved, indent=2))
        (out / "command.txt").write_text(" ".join(sys.argv) + "\n")
    return False


def make_model(cfg: TrainConfig):
    """Returns (model, growth report or None)."""
    if cfg.init_from and cfg.grow_method:
        from reuse.grow import grow_checkpoint  # the growth operators plug in here
        if not cfg.config:
            raise TrainError("--grow-method needs --config, the larger target model")
        return grow_checkpoint(cfg.init_from, load_config(cfg.config), cfg.grow_method, seed=cfg.seed,
                               depth_method=cfg.grow_depth_method, mapping=cfg.grow_mapping, noise=cfg.grow_noise)
    if cfg.init_from:
        return load_model(cfg.init_from), None
    if not cfg.config:
        raise TrainError("give --config (a model config) or --init-from (a checkpoint)")
    torch.manual_seed(cfg.seed)
    return build_model(load_config(cfg.config)), None


def place_model(model, device: torch.device):
    """Move the model to its device; on CPU, with the cheaper dropout (reuse.dropout: same p, same checkpoints)."""
    model.to(device)
    if device.type == "cpu":
        use_cpu_dropout(model)
    return model


def lr_lambda(warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor


def make_optimizer(model, cfg: TrainConfig):
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]  # biases and LayerNorm
    # fused: one kernel for all parameters instead of a loop over ~200 small tensors (the optimizer step of
    # bert-12L-64H on 2 CPU cores: 1.8 ms instead of 8.3 ms).
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=cfg.lr, betas=(0.9, cfg.adam_beta2), eps=cfg.adam_eps, fused=True)


# ---------------------------------------------------------------------------------------------------- the step
def train_step(model, loss_fn, optimizer, scheduler, input_ids, cfg, rank, world, mask_gen, special, tokenizer,
               autocast_dtype):
    """One optimizer step on one global batch; returns (mean loss per predicted token, grad norm, predicted
    tokens). Predicted tokens are the masked ones for an MLM, every next token for a causal LM."""
    if is_causal(model.config):
        inputs = labels = input_ids
        global_masked = torch.tensor(float(input_ids.shape[0] * (input_ids.shape[1] - 1)), device=input_ids.device)
    else:
        inputs, labels = mask_tokens(input_ids, special, tokenizer.mask_token_id, len(tokenizer),
                                     cfg.mlm_probability, generator=mask_gen)
        global_masked = (labels != -100).sum().float()
    share = cfg.batch_size // world
    inputs, labels = inputs[rank * share:(rank + 1) * share], labels[rank * share:(rank + 1) * share]
    micro = cfg.micro_batch_size or share
    loss_total = torch.zeros((), device=input_ids.device)
    for start in range(0, share, micro):
        accumulating = world > 1 and start + micro < share
        with loss_fn.no_sync() if accumulating else contextlib.nullcontext(), \
                torch.autocast(input_ids.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss_sum = loss_fn(inputs[start:start + micro], labels[start:start + micro])
        # DDP averages gradients over ranks, hence the factor world: the sum is then the global mean's gradient.
        (loss_sum * world / global_masked).backward()
        loss_total += loss_sum.detach()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if world > 1:
        dist.all_reduce(loss_total)
    return (loss_total / global_masked).item(), grad_norm.item(), int(global_masked.item())


class LossModule(torch.nn.Module):
    """The summed loss as a module, so that DDP (which reduces gradients through its wrapper's forward) and
    torch.compile see the whole computation."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.causal = is_causal(model.config)

    def forward(self, inputs, labels):
        return causal_lm_loss(self.model, inputs) if self.causal else masked_lm_loss(self.model, inputs, labels)


def evaluate_and_keep_best(state, model, valid_blocks, tokenizer, device, cfg, rank, world, out, writer, log,
                           autocast_dtype) -> None:
    """Evaluate on the valid blocks (rank 0), log it, save best/ on a new best, count evaluations without one."""
    if rank == 0:
        result = evaluate_blocks(model, valid_blocks, tokenizer, device, cfg.eval_batch_size,
                                 autocast_dtype=autocast_dtype)
        state["valid"] = result["log_ppl"]
        writer.add_scalar("valid/log_ppl", result["log_ppl"], state["step"])
        log.write(json.dumps({"step": state["step"], "valid_log_ppl": result["log_ppl"]}) + "\n")
        log.flush()
        if result["log_ppl"] < state["best_valid"]:
            state["best_valid"], state["best_step"], state["stale_evals"] = result["log_ppl"], state["step"], 0
            ckpt.save_model(out / "best", model, tokenizer, {"step": state["step"], **result},
                            run_config=out / "run_config.json")
        else:
            state["stale_evals"] += 1
    if world > 1:  # every rank must agree to stop
        flag = torch.tensor([float(state["stale_evals"])], device=device)
        dist.broadcast(flag, 0)
        state["stale_evals"] = int(flag.item())
    model.train()


# ---------------------------------------------------------------------------------------------------- the run
def train(cfg: TrainConfig) -> dict:
    check_config(cfg)
    rank, world, device = setup_distributed(cfg)
    if cfg.batch_size % world:
        raise TrainError(f"--batch-size {cfg.batch_size} is not divisible by {world} processes")
    share = cfg.batch_size // world
    if cfg.micro_batch_size and share % cfg.micro_batch_size:
        raise TrainError(f"--micro-batch-size {cfg.micro_batch_size} does not divide the per-process batch {share}")
    info = inspect_tokens(cfg.train_data)
    tokenizer = load_tokenizer(cfg.tokenizer or info.tokenizer, search_dirs=[Path(cfg.train_data).parent])
    model, growth = make_model(cfg)
    if model.config.vocab_size != len(tokenizer):
        raise TrainError(f"the model has vocab_size {model.config.vocab_size} but tokenizer {info.tokenizer!r} has "
                         f"{len(tokenizer)} tokens: use a config with vocab_size {len(tokenizer)}")
    if cfg.dropout >= 0:
        # The config's own names (BERT/RoBERTa or GPT-2), so the saved config.json says what was trained.
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
            if hasattr(model.config, name):
                setattr(model.config, name, cfg.dropout)
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = cfg.dropout
    blocks = load_blocks(cfg.train_data, cfg.block_size, cfg.fraction, cfg.seed)
    steps_per_epoch = len(blocks) // cfg.batch_size
    if steps_per_epoch == 0:
        raise TrainError(f"fraction {cfg.fraction} gives {len(blocks)} blocks, fewer than one batch of "
                         f"{cfg.batch_size}: raise --fraction or lower --batch-size")
    max_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    valid_blocks = load_blocks(cfg.valid_data, cfg.block_size)[:cfg.eval_batches * cfg.eval_batch_size] \
        if cfg.valid_data else None

    resolved = {**dataclasses.asdict(cfg), "max_steps": max_steps, "world_size": world,
                "tokenizer": cfg.tokenizer or info.tokenizer}
    resume = prepare_output_dir(cfg, resolved, rank)
    out = Path(cfg.output_dir)
    if growth is not None and rank == 0:
        (out / "growth.json").write_text(json.dumps(growth))

    place_model(model, device)
    optimizer = make_optimizer(model, cfg)
    warmup = int(cfg.warmup * max_steps) if cfg.warmup < 1 else int(cfg.warmup)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(max(1, warmup), max_steps))
    mask_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    torch.manual_seed(cfg.seed)
    state = {"step": 0, "wall_time": 0.0, "flops": 0.0, "best_valid": math.inf, "best_step": -1, "valid": None,
             "stale_evals": 0, "stopped_early": False}
    latest = ckpt.latest(out) if resume else None
    if latest is not None:
        state = ckpt.load_trainer_state(latest, model, optimizer, scheduler, mask_gen)
        if rank == 0:
            print(f"resuming from {latest} at step {state['step']}", flush=True)
    if dist.is_initialized():
        dist.barrier()

    autocast_dtype = torch.bfloat16 if device.type == "cuda" and cfg.bf16 else None
    loss_module = LossModule(model)
    if cfg.compile:
        loss_module = torch.compile(loss_module)
    if world > 1:
        loss_module = torch.nn.parallel.DistributedDataParallel(
            loss_module, device_ids=[device.index] if device.type == "cuda" else None)
    special = special_ids(tokenizer).to(device)
    seq_len = cfg.block_size if is_causal(model.config) else cfg.block_size + 2  # MLM blocks get [CLS], [SEP]
    writer, peak = None, None
    if rank == 0:
        from tensorboardX import SummaryWriter
        writer = SummaryWriter(str(out / "tb"))
        peak = matmul_peak(device, autocast_dtype or torch.float32) * world  # world: a peer per process
    bar = tqdm(total=max_steps, initial=state["step"], desc=out.name, disable=None if rank == 0 else True)
    log = open(out / "log.jsonl", "a") if rank == 0 else None
    perm, perm_epoch = None, -1
    window_start, window_tokens, window_flops = time.perf_counter(), 0, 0.0
    if valid_blocks is not None and cfg.init_from and state["step"] == 0:
        # A warm start is evaluated before its first step: the loss right after growth (what the operator kept),
        # and a start that training never improves on stays the best model.
        evaluate_and_keep_best(state, model, valid_blocks, tokenizer, device, cfg, rank, world, out, writer, log,
                               autocast_dtype)
        state["start_valid"] = state["valid"]
    model.train()
    end = state["step"] if state.get("stopped_early") else max_steps  # a run that stopped early stays stopped
    for step in range(state["step"], end):
        epoch, position = divmod(step, steps_per_epoch)
        if epoch != perm_epoch:  # the order of an epoch depends only on (seed, epoch): resuming needs no data state
            perm = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
            perm_epoch = epoch
        index = perm[position * cfg.batch_size:(position + 1) * cfg.batch_size]
        input_ids = model_inputs(blocks[index], tokenizer, model.config).to(device)
        t0 = time.perf_counter()
        loss, grad_norm, masked = train_step(model, loss_module, optimizer, scheduler, input_ids, cfg, rank, world,
                                             mask_gen, special, tokenizer, autocast_dtype)
        state["wall_time"] += time.perf_counter() - t0
        if not math.isfinite(loss):
            raise TrainError(f"the loss became {loss} at step {step + 1}; the last good checkpoint is kept in "
                             f"{out / 'checkpoints'}: lower --lr or check the data")
        state["step"] = step + 1
        step_flops = flops_per_step(model.config, cfg.batch_size, seq_len, masked)
        state["flops"] += step_flops
        window_tokens += cfg.batch_size * seq_len
        window_flops += step_flops
        if rank == 0:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
            if state["step"] % cfg.log_every == 0 or state["step"] == max_steps:
                elapsed = time.perf_counter() - window_start
                record = {"step": state["step"], "loss": loss, "lr": scheduler.get_last_lr()[0],
                          "grad_norm": grad_norm, "tokens_per_s": window_tokens / elapsed,
                          "mfu": window_flops / elapsed / peak}
                log.write(json.dumps(record) + "\n")
                log.flush()
                for key, value in record.items():
                    if key != "step":
                        writer.add_scalar(f"train/{key}", value, state["step"])
                window_start, window_tokens, window_flops = time.perf_counter(), 0, 0.0
        last = state["step"] == max_steps
        if valid_blocks is not None and (state["step"] % cfg.eval_every == 0 or last):
            evaluate_and_keep_best(state, model, valid_blocks, tokenizer, device, cfg, rank, world, out, writer, log,
                                   autocast_dtype)
            if cfg.patience and state["stale_evals"] >= cfg.patience and not last:
                state["stopped_early"] = last = True
        if rank == 0 and (state["step"] % cfg.save_every == 0 or last):
            ckpt.save_checkpoint(out, state, model, tokenizer, optimizer, scheduler, mask_gen, cfg.keep_last,
                                 run_config=out / "run_config.json")
        if dist.is_initialized():
            dist.barrier()
        if state["stopped_early"]:
            if rank == 0:
                print(f"early stop at step {state['step']}: {cfg.patience} evaluations without improvement; "
                      f"best valid {state['best_valid']:.4f} at step {state['best_step']}", flush=True)
            break
    bar.close()
    summary = {"steps": state["step"], "tokens_seen": state["step"] * cfg.batch_size * seq_len,
               "parameters": count_parameters(model), "train_flops": state["flops"], "wall_time_s": state["wall_time"],
               "final_valid_log_ppl": state["valid"], "start_valid_log_ppl": state.get("start_valid"),
               "best_valid_log_ppl": state["best_valid"] if state["best_step"] >= 0 else None,
               "best_step": state["best_step"], "stopped_early": state["stopped_early"], "fraction": cfg.fraction,
               "training_blocks": len(blocks), "epochs": state["step"] * cfg.batch_size / len(blocks)}
    if rank == 0:
        ckpt.save_model(out, model, tokenizer)  # the run folder itself is a save_pretrained folder
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        writer.close()
        log.close()
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m reuse.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_arguments(parser, TrainConfig)
    cfg = dataclass_from_args(TrainConfig, parser.parse_args(argv))
    try:
        summary = train(cfg)
    except (TrainError, ConfigError, DataError, ModelError, TokenizeError, ckpt.CheckpointError,
            GrowthError) as e:
        sys.exit(f"error: {e}")
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
