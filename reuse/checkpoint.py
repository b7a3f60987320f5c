"""Checkpoint folders: a save_pretrained model + tokenizer, and for resumable ones a `trainer_state.pt`.

Layout of a run folder:
    run_config.json, command.txt, log.jsonl, tb/, summary.json
    config.json, model.safetensors, tokenizer files       (the final model: the run folder loads with from_pretrained)
    checkpoints/step-0000200/ ...                          (the last K, each with trainer_state.pt)
    best/                                                  (the best model by valid log-perplexity)

Every folder is written under a temporary name and renamed into place, so a run killed at any moment leaves only
complete checkpoints under final names; the temporary folders it leaves are removed when the run folder is next
saved to or resumed from. A checkpoint damaged after the fact (a truncated copy, a full disk) is skipped on resume
for the newest one that loads.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import re
import shutil
import sys
import time
import uuid
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers.utils import logging as hf_logging

# A progress bar per save would bury the training bar; saves of these model sizes take milliseconds.
hf_logging.disable_progress_bar()

STATE = "trainer_state.pt"
TRAINER_KEYS = {"state", "optimizer", "scheduler", "mask_generator", "torch_rng", "cuda_rng"}
# What save_model leaves when killed inside a run folder: `.tmp-<name>-<8 hex>` while writing, `.old-<name>-<8 hex>`
# while replacing. Only checkpoint and best folders: the run folder's own temporary copy lies in its parent, which
# other runs share.
LEFTOVER = re.compile(r"\.(tmp|old)-(step-\d+|best)-[0-9a-f]{8}")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message says what to do."""


@dataclasses.dataclass
class TrainState:
    """What the training loop carries from step to step, saved in every checkpoint's trainer_state.pt."""
    step: int = 0
    wall_time: float = 0.0                 # seconds inside training steps (evaluation and saving excluded)
    flops: float = 0.0                     # model FLOPs of the steps so far (reuse.model.flops_per_step)
    valid: float | None = None             # the latest valid log-perplexity
    start_valid: float | None = None       # a warm start's valid log-perplexity before its first step
    best_valid: float = math.inf
    best_step: int = -1                    # -1: no evaluation yet
    stale_evals: int = 0                   # evaluations since the last new best (early stopping counts these)
    stopped_early: bool = False


class RunLock:
    """One trainer per run folder: a second process training into the same folder is refused.

    The lock is flock(2) on `<run>/.lock` (through filelock): the OS drops it when its process dies, so the lock of a
    killed run is free for the next one. `<run>/.owner` names the holder; finding it under a free lock means its
    process died holding the folder, and the new run says it took over.
    """

    def __init__(self, run_dir: Path):
        from filelock import FileLock

        self.run_dir = Path(run_dir)
        self.lock = FileLock(str(self.run_dir / ".lock"))
        self.owner = self.run_dir / ".owner"

    def acquire(self) -> str | None:
        """Take the folder, or raise CheckpointError naming the process that holds it; returns a message when a
        dead process's hold was taken over."""
        from filelock import Timeout

        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            holder = self.owner.read_text().strip() if self.owner.exists() else "another process"
            raise CheckpointError(f"{self.run_dir} is being trained by {holder}: wait for it to finish or stop it, "
                                  f"or choose another --output-dir") from None
        previous = self.owner.read_text().strip() if self.owner.exists() else None
        self.owner.write_text(f"process {os.getpid()} on {os.uname().nodename}\n")
        return f"took over {self.run_dir} from {previous}, which is no longer running" if previous else None

    def release(self) -> None:
        if self.lock.is_locked:
            self.owner.unlink(missing_ok=True)
            self.lock.release()


def refuse_foreign_folder(cfg) -> None:
    """An --output-dir holding files that no trainer wrote (a model from reuse.grow, say) is refused, before the
    run lock writes into it: the final save would replace that model and leave its growth.json stale."""
    out = Path(cfg.output_dir)
    if cfg.overwrite or not out.is_dir() or (out / "run_config.json").exists():
        return
    if any(p.name not in (".lock", ".owner") for p in out.iterdir()):
        raise CheckpointError(f"{out} holds files but no run_config.json: it is not a reuse.train run folder (a "
                              f"model written by reuse.grow?); choose another --output-dir, or pass --overwrite to "
                              f"replace what is there")


def prepare_run_dir(cfg, resolved: dict, rank: int) -> bool:
    """Make cfg.output_dir (a TrainConfig's) this run's folder, recording `resolved` (reuse.config.resolve) in
    run_config.json; returns whether to resume. Another run's folder is refused unless --resume or --overwrite."""
    out = Path(cfg.output_dir)
    saved = out / "run_config.json"
    if saved.exists() and not cfg.overwrite:
        previous = json.loads(saved.read_text())
        changed = {k: [previous.get(k), v] for k, v in resolved.items()
                   if k not in ("resume", "overwrite") and previous.get(k) != v}
        if changed and not cfg.resume:
            raise CheckpointError(f"{out} holds another run (its run_config.json differs in {', '.join(sorted(changed))}); "
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


def _move_into(tmp: Path, target: Path) -> None:
    """Make `target` hold what `tmp` holds; a reader never sees a half-written file under the final name."""
    if not target.exists():
        os.replace(tmp, target)
        return
    if (target / "run_config.json").exists():
        # A run folder: replace file by file (each os.replace is atomic), keeping the run's other files.
        for item in tmp.iterdir():
            os.replace(item, target / item.name)
        tmp.rmdir()
        return
    old = target.with_name(f".old-{target.name}-{uuid.uuid4().hex[:8]}")
    os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old)


def save_model(folder: Path, model, tokenizer, info: dict | None = None, extra=None,
               run_config: Path | None = None) -> None:
    """A save_pretrained folder with the tokenizer, and the run's resolved config beside the weights (so a checkpoint
    copied out of its run folder still says how it was trained)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}"
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    if info is not None:
        (tmp / "checkpoint.json").write_text(json.dumps(info, indent=2))
    if run_config is not None and Path(run_config).is_file():
        shutil.copyfile(run_config, tmp / "run_config.json")
    if extra is not None:
        extra(tmp)
    _move_into(tmp, folder)


def save_checkpoint(run_dir: Path, state: TrainState, model, tokenizer, optimizer, scheduler, mask_gen,
                    keep_last: int, run_config: Path | None = None) -> Path:
    folder = Path(run_dir) / "checkpoints" / f"step-{state.step:07d}"
    clean_leftovers(run_dir)
    trainer_state = {"state": dataclasses.asdict(state), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "mask_generator": mask_gen.get_state(), "torch_rng": torch.get_rng_state(),
                     "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    save_model(folder, model, tokenizer, extra=lambda tmp: torch.save(trainer_state, tmp / STATE),
               run_config=run_config)
    done = sorted((Path(run_dir) / "checkpoints").glob("step-*"))
    for old in done[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old)
    return folder


def clean_leftovers(run_dir: Path) -> list[Path]:
    """Remove the temporary folders of saves that were killed; returns what was removed.

    A kill between the two renames of a replacement leaves the previous folder as `.old-*` and none under the final
    name: that one is put back rather than removed. Every process of a distributed run resumes, so several may
    clean at once: whatever another one removed first is not an error.
    """
    removed = []
    for parent in (Path(run_dir), Path(run_dir) / "checkpoints"):
        for path in sorted(parent.glob(".*")) if parent.is_dir() else []:
            m = LEFTOVER.fullmatch(path.name)
            if not m or not path.is_dir():
                continue
            final = parent / m.group(2)
            if m.group(1) == "old" and not final.exists():
                try:
                    os.replace(path, final)
                except FileNotFoundError:
                    pass
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def latest(run_dir: Path) -> Path | None:
    """The newest checkpoint that loads; a damaged newer one is reported and skipped. None if there is none."""
    clean_leftovers(run_dir)
    done = sorted(p for p in (Path(run_dir) / "checkpoints").glob("step-*") if (p / STATE).exists())
    problems = []
    for folder in reversed(done):
        try:
            check_loadable(folder)
        except CheckpointError as e:
            problems.append(str(e))
            print(f"skipping checkpoint {folder.name}: {e}", flush=True)
            continue
        if problems:
            print(f"resuming from the previous complete checkpoint, {folder.name}", flush=True)
        return folder
    if problems:
        raise CheckpointError(f"no checkpoint in {Path(run_dir) / 'checkpoints'} loads ({problems[0]}); "
                              f"pass --overwrite to start the run over")
    return None


def check_loadable(folder: Path) -> None:
    """Read every file a resume needs, so that damage shows here and not halfway through loading."""
    folder = Path(folder)
    try:
        json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder / 'config.json'} is missing or not JSON ({first_sentence(e)})") from e
    read_weights(folder)
    read_trainer_state(folder)


def read_weights(folder: Path) -> dict:
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder} has no .safetensors weights")
    state = {}
    for f in files:
        try:
            state.update(load_file(str(f)))
        except (OSError, SafetensorError) as e:
            raise CheckpointError(f"{f} is truncated or corrupt ({first_sentence(e)})") from e
    return state


def read_trainer_state(folder: Path) -> dict:
    """trainer_state.pt, unpickled with weights_only: tensors and plain values only, as save_checkpoint writes.

    A pickle can name any callable to run while loading; weights_only refuses everything else, so a planted or
    tampered file is an error and not code execution.
    """
    path = Path(folder) / STATE
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path} holds objects other than tensors and plain values, which could run code "
                              f"when loaded: refused; resume from a checkpoint written by reuse.train") from e
    except (OSError, RuntimeError, EOFError) as e:
        raise CheckpointError(f"{path} is truncated or corrupt ({first_sentence(e)})") from e
    if not isinstance(saved, dict) or not TRAINER_KEYS <= set(saved):
        raise CheckpointError(f"{path} is not a trainer state written by reuse.train (it needs "
                              f"{', '.join(sorted(TRAINER_KEYS))})")
    return saved


def first_sentence(error: Exception) -> str:
    """Library errors run to paragraphs; ours are one line."""
    return str(error).splitlines()[0].split(". ")[0] if str(error) else type(error).__name__


def load_weights(model, folder: Path) -> None:
    """Weights saved by save_pretrained into an existing model; the tied decoder is saved once and re-tied."""
    state = read_weights(folder)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied tensors (the decoder's weight and bias) are saved once, under the name they are tied to.
    own = model.state_dict()
    loaded = {own[k].data_ptr() for k in state if k in own}
    tied = {k for k in missing if own[k].data_ptr() in loaded}
    if set(missing) - tied or unexpected:
        raise CheckpointError(f"{folder} does not match the model: missing {sorted(set(missing) - tied)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}")
    model.tie_weights()


def load_trainer_state(folder: Path, model, optimizer, scheduler, mask_gen) -> TrainState:
    load_weights(model, folder)
    saved = read_trainer_state(folder)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    mask_gen.set_state(saved["mask_generator"])
    torch.set_rng_state(saved["torch_rng"])
    if saved["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    known = {f.name for f in dataclasses.fields(TrainState)}
    return TrainState(**{k: v for k, v in saved["state"].items() if k in known})
