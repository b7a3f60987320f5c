"""Checkpoint folders: a save_pretrained model + tokenizer, and for resumable ones a `trainer_state.pt`.

Layout of a run folder:
    run_config.json, command.txt, log.jsonl, tb/, summary.json
    config.json, model.safetensors, tokenizer files       (the final model: the run folder loads with from_pretrained)
    checkpoints/step-0000200/ ...                          (the last K, each with trainer_state.pt)
    best/                                                  (the best model by valid log-perplexity)

Every folder is written under a temporary name and renamed into place, so a run killed at any moment leaves only
complete checkpoints under final names.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers.utils import logging as hf_logging

# A progress bar per save would bury the training bar; saves of these model sizes take milliseconds.
hf_logging.disable_progress_bar()

STATE = "trainer_state.pt"


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message says what to do."""


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


def save_model(folder: Path, model, tokenizer, info: dict | None = None, extra=None) -> None:
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}"
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    if info is not None:
        (tmp / "checkpoint.json").write_text(json.dumps(info, indent=2))
    if extra is not None:
        extra(tmp)
    _move_into(tmp, folder)


def save_checkpoint(run_dir: Path, state: dict, model, tokenizer, optimizer, scheduler, mask_gen,
                    keep_last: int) -> Path:
    folder = Path(run_dir) / "checkpoints" / f"step-{state['step']:07d}"
    trainer_state = {"state": dict(state), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "mask_generator": mask_gen.get_state(), "torch_rng": torch.get_rng_state(),
                     "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    save_model(folder, model, tokenizer, extra=lambda tmp: torch.save(trainer_state, tmp / STATE))
    done = sorted((Path(run_dir) / "checkpoints").glob("step-*"))
    for old in done[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old)
    return folder


def latest(run_dir: Path) -> Path | None:
    done = sorted(p for p in (Path(run_dir) / "checkpoints").glob("step-*") if (p / STATE).exists())
    return done[-1] if done else None


def load_weights(model, folder: Path) -> None:
    """Weights saved by save_pretrained into an existing model; the tied decoder is saved once and re-tied."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder} has no .safetensors weights")
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied tensors (the decoder's weight and bias) are saved once, under the name they are tied to.
    own = model.state_dict()
    loaded = {own[k].data_ptr() for k in state if k in own}
    tied = {k for k in missing if own[k].data_ptr() in loaded}
    if set(missing) - tied or unexpected:
        raise CheckpointError(f"{folder} does not match the model: missing {sorted(set(missing) - tied)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}")
    model.tie_weights()


def load_trainer_state(folder: Path, model, optimizer, scheduler, mask_gen) -> dict:
    load_weights(model, folder)
    saved = torch.load(Path(folder) / STATE, map_location="cpu", weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    mask_gen.set_state(saved["mask_generator"])
    torch.set_rng_state(saved["torch_rng"])
    if saved["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    return saved["state"]
