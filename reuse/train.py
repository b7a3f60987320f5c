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
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from reuse import checkpoint as ckpt
from reuse.carry import carry_from_checkpoint
from reuse.checkpoint import TrainState
from reuse.cli import add_dataclass_arguments, dataclass_values
from reuse.config import ConfigError, TrainConfig, check_config, config_from_dict, resolve
from reuse.data import DataError, check_file_ids, check_ids, inspect_tokens, load_blocks, to_device
from reuse.dropout import use_cpu_dropout
from reuse.evaluate import evaluate_blocks
from reuse.grow import GrowthError
from reuse.heldout import heldout_scores, training_sample
from reuse.growing import grow_for_run
from reuse.model import (ModelError, build_model, check_block, checkpoint_config, count_parameters, flops_per_step,
                         load_config, load_model, set_dropout)
from reuse.objective import CausalLM, LossModule, MaskedLM, objective_for
from reuse.runlog import RunLog
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


def make_model(cfg: TrainConfig, blocks: torch.Tensor, tokenizer, max_steps: int, device: torch.device):
    """Returns (model, growth report or None, MSG transition or None)."""
    if cfg.init_from and cfg.grow_method:
        if not cfg.config:
            raise TrainError("--grow-method needs --config, the larger target model")
        grown = grow_for_run(cfg, blocks, tokenizer, max_steps, device)  # the growth operators plug in here
        return grown.model, grown.report, grown.transition
    if cfg.init_from:
        return load_model(cfg.init_from), None, None
    if not cfg.config:
        raise TrainError("give --config (a model config) or --init-from (a checkpoint)")
    torch.manual_seed(cfg.seed)
    return build_model(load_config(cfg.config)), None, None


def ramping(transition) -> bool:
    """Whether MSG's masks are still on: the masked model's weights alone are another function, so it is never
    saved as best/ and its evaluations do not count towards --patience."""
    return transition is not None and transition.active


def advance_ramp(transition, steps_done: int) -> None:
    """MSG's masks for the next step (steps_done / ramp); at 1 the masks go and the model is a plain one again
    (the same parameters, so the optimizer is unaffected)."""
    if ramping(transition) and transition.step(steps_done) == 1.0:
        transition.finish()


def use_speed_paths(model, objective, device: torch.device, autocast_dtype: torch.dtype | None,
                    compiled: bool = False):
    """The CPU speed paths, chosen here for the trainer and the benchmark alike. On CPU in fp32: the cheaper dropout
    (reuse.dropout: same p, same checkpoints) and the fused vocabulary projection + cross-entropy
    (reuse.model.LinearCrossEntropy, training only). On GPUs the library's kernels are already the fast ones. Under
    torch.compile neither: dynamo breaks the graph at their autograd Functions and recompiles them for every tensor
    rank (TORCH_LOGS=recompiles), so the compiled step gets the library's graph to fuse whole."""
    model.to(device)
    cpu_paths = device.type == "cpu" and not compiled
    if cpu_paths:
        use_cpu_dropout(model)
    objective.fused_head = not objective.causal and cpu_paths and autocast_dtype is None
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
    # fused: one kernel for all parameters instead of a loop over ~200 small tensors, on CPU (the optimizer step of
    # bert-12L-64H on 2 CPU cores: 1.8 ms instead of 8.3 ms) as on CUDA.
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=cfg.lr, betas=(0.9, cfg.adam_beta2), eps=cfg.adam_eps, fused=True)


@dataclass
class Run:
    """Everything the loop uses, built once by `setup`."""
    cfg: TrainConfig
    rank: int
    world: int
    device: torch.device
    out: Path
    model: torch.nn.Module
    tokenizer: object
    objective: MaskedLM | CausalLM
    loss_module: torch.nn.Module       # the model's summed loss, compiled and/or DDP-wrapped
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    mask_gen: torch.Generator          # MLM masks, on the device, identical on every rank
    autocast_dtype: torch.dtype | None
    blocks: torch.Tensor               # the fraction's training blocks
    valid_blocks: torch.Tensor | None
    steps_per_epoch: int
    max_steps: int
    seq_len: int
    state: TrainState
    log: RunLog
    transition: object | None          # MSG's masked transition while it ramps (reuse.msg), else None
    lock: ckpt.RunLock | None          # rank 0's hold on the run folder
    epoch_order: tuple[int, torch.Tensor] = (-1, torch.empty(0))  # (epoch, its block order), made once per epoch


def setup(cfg: TrainConfig) -> Run:
    """Check, load and build everything before the first step; a bad input fails here, before any work is spent."""
    check_config(cfg)
    rank, world, device = setup_distributed(cfg)
    if cfg.batch_size % world:
        raise TrainError(f"--batch-size {cfg.batch_size} is not divisible by {world} processes")
    share = cfg.batch_size // world
    if cfg.micro_batch_size and share % cfg.micro_batch_size:
        raise TrainError(f"--micro-batch-size {cfg.micro_batch_size} does not divide the per-process batch {share}")
    info = inspect_tokens(cfg.train_data)
    tokenizer = load_tokenizer(cfg.tokenizer or info.tokenizer, search_dirs=[Path(cfg.train_data).parent])
    blocks = load_blocks(cfg.train_data, cfg.block_size, cfg.fraction, cfg.seed)
    check_ids(blocks, len(tokenizer), cfg.train_data)  # before growth: LiGO trains on these blocks
    steps_per_epoch = len(blocks) // cfg.batch_size
    if steps_per_epoch == 0:
        raise TrainError(f"fraction {cfg.fraction} gives {len(blocks)} blocks, fewer than one batch of "
                         f"{cfg.batch_size}: raise --fraction or lower --batch-size")
    max_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    if cfg.config or cfg.init_from:  # the model the run trains, checked before growth spends any work on it
        check_block(load_config(cfg.config) if cfg.config else checkpoint_config(cfg.init_from), cfg.block_size)
    model, growth, transition = make_model(cfg, blocks, tokenizer, max_steps, device)
    if model.config.vocab_size != len(tokenizer):
        raise TrainError(f"the model has vocab_size {model.config.vocab_size} but tokenizer {info.tokenizer!r} has "
                         f"{len(tokenizer)} tokens: use a config with vocab_size {len(tokenizer)}")
    dropout = set_dropout(model, cfg.dropout)
    objective = objective_for(model.config, tokenizer, cfg.mlm_probability)
    valid_blocks = load_blocks(cfg.valid_data, cfg.block_size)[:cfg.eval_batches * cfg.eval_batch_size] \
        if cfg.valid_data else None
    if valid_blocks is not None:
        check_ids(valid_blocks, len(tokenizer), cfg.valid_data)
    if cfg.test_data:  # read only at the end: a bad file must fail here, before any step
        check_file_ids(inspect_tokens(cfg.test_data).path, len(tokenizer))

    resolved = resolve(cfg, model_config=model.config, tokenizer=cfg.tokenizer or info.tokenizer, world_size=world,
                       device=device.type, max_steps=max_steps, dropout=dropout)
    # One trainer per folder (a sweep killed with -9 leaves its child running; a re-run must not add a second
    # writer). A failure below releases it with the process, or with the lock object in-process.
    ckpt.refuse_foreign_folder(cfg)
    lock = ckpt.RunLock(cfg.output_dir) if rank == 0 else None
    taken_over = lock.acquire() if lock else None
    if taken_over:
        print(taken_over, flush=True)
    resume = ckpt.prepare_run_dir(cfg, resolved, rank)
    out = Path(cfg.output_dir)
    if growth is not None and rank == 0:
        (out / "growth.json").write_text(json.dumps(growth))

    autocast_dtype = torch.bfloat16 if device.type == "cuda" and cfg.bf16 else None
    use_speed_paths(model, objective, device, autocast_dtype, compiled=cfg.compile)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(resolved["warmup_steps"], max_steps))
    mask_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    torch.manual_seed(cfg.seed)
    state = TrainState()
    latest = ckpt.latest(out) if resume else None
    if latest is not None:
        state = ckpt.load_trainer_state(latest, model, optimizer, scheduler, mask_gen)
        if rank == 0:
            print(f"resuming from {latest} at step {state.step}", flush=True)
    elif growth is not None:
        state.flops += growth.get("ligo_flops", 0.0)  # LiGO's operator steps are the run's compute too
        if cfg.grow_optimizer:
            carry_from_checkpoint(cfg.init_from, optimizer, model, growth, lambda small: make_optimizer(small, cfg))
    advance_ramp(transition, state.step)  # a resumed run's masks where it stopped
    if dist.is_initialized():
        dist.barrier()

    loss_module = LossModule(model, objective)
    if cfg.compile:
        loss_module = torch.compile(loss_module)
    if world > 1:
        loss_module = torch.nn.parallel.DistributedDataParallel(
            loss_module, device_ids=[device.index] if device.type == "cuda" else None)
    log = RunLog(out, max_steps, state.step, device, autocast_dtype, world, cfg.log_every, enabled=rank == 0)
    return Run(cfg, rank, world, device, out, model, tokenizer, objective, loss_module, optimizer, scheduler,
               mask_gen, autocast_dtype, blocks, valid_blocks, steps_per_epoch, max_steps,
               objective.seq_len(cfg.block_size), state, log, transition, lock)


# ---------------------------------------------------------------------------------------------------- the step
def train_step(loss_module, optimizer, scheduler, input_ids, *, objective, mask_gen, grad_clip: float,
               micro_batch_size: int | None = None, rank: int = 0, world: int = 1,
               autocast_dtype: torch.dtype | None = None) -> tuple[float, float, int]:
    """One optimizer step on one global batch of input ids; returns (mean loss per predicted token, grad norm,
    predicted tokens), read from the device once."""
    inputs, labels, global_predicted = objective.targets(input_ids, mask_gen)
    share = input_ids.shape[0] // world
    inputs, labels = inputs[rank * share:(rank + 1) * share], labels[rank * share:(rank + 1) * share]
    micro = micro_batch_size or share
    loss_total = torch.zeros((), device=input_ids.device)
    for start in range(0, share, micro):
        accumulating = world > 1 and start + micro < share
        with loss_module.no_sync() if accumulating else contextlib.nullcontext(), \
                torch.autocast(input_ids.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss_sum = loss_module(inputs[start:start + micro], labels[start:start + micro])
        # DDP averages gradients over ranks, hence the factor world: the sum is then the global mean's gradient.
        (loss_sum * world / global_predicted).backward()
        loss_total += loss_sum.detach()
    grad_norm = torch.nn.utils.clip_grad_norm_(loss_module.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if world > 1:
        dist.all_reduce(loss_total)
    loss, norm, predicted = torch.stack([loss_total / global_predicted, grad_norm.float(),
                                         global_predicted.float()]).tolist()
    return loss, norm, int(predicted)


def get_batch(run: Run, step: int) -> torch.Tensor:
    """The global batch of a step. An epoch's order depends only on (seed, epoch), so a resumed run needs no data
    state and draws the batches an uninterrupted run would."""
    epoch, position = divmod(step, run.steps_per_epoch)
    if run.epoch_order[0] != epoch:
        generator = torch.Generator().manual_seed(run.cfg.seed * 1_000_003 + epoch)
        run.epoch_order = (epoch, torch.randperm(len(run.blocks), generator=generator))
    index = run.epoch_order[1][position * run.cfg.batch_size:(position + 1) * run.cfg.batch_size]
    return to_device(run.objective.input_ids(run.blocks[index]), run.device)


def evaluate_and_keep_best(run: Run) -> None:
    """Evaluate on the valid blocks (rank 0), log it, save best/ on a new best, count evaluations without one."""
    state = run.state
    if run.rank == 0:
        result = evaluate_blocks(run.model, run.valid_blocks, run.tokenizer, run.device, run.cfg.eval_batch_size,
                                 autocast_dtype=run.autocast_dtype)
        state.valid = result["log_ppl"]
        run.log.valid(state.step, state.valid)
        candidate = not ramping(run.transition)  # a masked model is only logged
        if candidate and state.valid < state.best_valid:
            state.best_valid, state.best_step, state.stale_evals = state.valid, state.step, 0
            ckpt.save_model(run.out / "best", run.model, run.tokenizer, {"step": state.step, **result},
                            run_config=run.out / "run_config.json")
        elif candidate:
            state.stale_evals += 1
    if run.world > 1:  # every rank must agree to stop
        flag = torch.tensor([float(state.stale_evals)], device=run.device)
        dist.broadcast(flag, 0)
        state.stale_evals = int(flag.item())
    run.model.train()


# ---------------------------------------------------------------------------------------------------- the run
def train(cfg: TrainConfig) -> dict:
    run = setup(cfg)
    try:
        return train_loop(run)
    finally:
        if run.lock:
            run.lock.release()


def train_loop(run: Run) -> dict:
    cfg = run.cfg
    state, evaluating = run.state, run.valid_blocks is not None
    if evaluating and cfg.init_from and state.step == 0:
        # A warm start is evaluated before its first step: the loss right after growth (what the operator kept),
        # and a start that training never improves on stays the best model.
        evaluate_and_keep_best(run)
        state.start_valid = state.valid
    run.model.train()
    end = state.step if state.stopped_early else run.max_steps  # a run that stopped early stays stopped
    for step in range(state.step, end):
        input_ids = get_batch(run, step)
        started = time.perf_counter()
        loss, grad_norm, predicted = train_step(
            run.loss_module, run.optimizer, run.scheduler, input_ids, objective=run.objective, mask_gen=run.mask_gen,
            grad_clip=cfg.grad_clip, micro_batch_size=cfg.micro_batch_size, rank=run.rank, world=run.world,
            autocast_dtype=run.autocast_dtype)
        state.wall_time += time.perf_counter() - started
        if not math.isfinite(loss):
            raise TrainError(f"the loss became {loss} at step {step + 1}; the last good checkpoint is kept in "
                             f"{run.out / 'checkpoints'}: lower --lr or check the data")
        state.step = step + 1
        advance_ramp(run.transition, state.step)
        step_flops = flops_per_step(run.model.config, cfg.batch_size, run.seq_len, predicted)
        state.flops += step_flops
        last = state.step == run.max_steps
        run.log.train(state.step, loss, grad_norm, run.scheduler.get_last_lr()[0], cfg.batch_size * run.seq_len,
                      step_flops, force=last)
        if evaluating and (state.step % cfg.eval_every == 0 or last):
            evaluate_and_keep_best(run)
            if cfg.patience and state.stale_evals >= cfg.patience and not last:
                state.stopped_early = last = True
        if run.rank == 0 and (state.step % cfg.save_every == 0 or last):
            ckpt.save_checkpoint(run.out, state, run.model, run.tokenizer, run.optimizer, run.scheduler,
                                 run.mask_gen, cfg.keep_last, run_config=run.out / "run_config.json")
        if dist.is_initialized():
            dist.barrier()
        if state.stopped_early:
            if run.rank == 0:
                print(f"early stop at step {state.step}: {cfg.patience} evaluations without improvement; "
                      f"best valid {state.best_valid:.4f} at step {state.best_step}", flush=True)
            break
    return finish(run)


def finish(run: Run) -> dict:
    """The run folder becomes a save_pretrained folder of the final model, with summary.json beside it."""
    state, cfg = run.state, run.cfg
    summary = {"steps": state.step, "tokens_seen": state.step * cfg.batch_size * run.seq_len,
               "parameters": count_parameters(run.model), "train_flops": state.flops, "wall_time_s": state.wall_time,
               "final_valid_log_ppl": state.valid, "start_valid_log_ppl": state.start_valid,
               "best_valid_log_ppl": state.best_valid if state.best_step >= 0 else None,
               "best_step": state.best_step, "stopped_early": state.stopped_early, "fraction": cfg.fraction,
               "training_blocks": len(run.blocks), "epochs": state.step * cfg.batch_size / len(run.blocks),
               # how far a fixed budget trained past the best periodic valid loss (0: still improving at the end)
               "epochs_past_best": (state.step - state.best_step) * cfg.batch_size / len(run.blocks)
               if state.best_step >= 0 else None}
    run.log.close()
    if run.rank == 0:
        ckpt.save_model(run.out, run.model, run.tokenizer)
        if cfg.heldout:  # after the save: a run killed in here resumes at its end and evaluates again
            print("end-of-run evaluation of the last and best checkpoints (reuse.heldout)", flush=True)
            summary["heldout"] = heldout_scores(
                run.model, run.out, run.tokenizer, run.device, run.objective, valid_data=cfg.valid_data,
                test_data=cfg.test_data, train_sample=training_sample(run.blocks, cfg.heldout_train_blocks),
                block_size=cfg.block_size, max_batches=cfg.heldout_batches)
        (run.out / "summary.json").write_text(json.dumps(summary, indent=2))
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m reuse.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_arguments(parser, TrainConfig)
    values = dataclass_values(TrainConfig, parser.parse_args(argv))
    try:
        summary = train(config_from_dict(values))  # typed: a file's "1e-3" becomes 1e-3, a file's "abc" an error
    except (TrainError, ConfigError, DataError, ModelError, TokenizeError, ckpt.CheckpointError,
            GrowthError) as e:
        sys.exit(f"error: {e}")
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
