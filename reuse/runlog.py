"""What a training run reports while it runs: a progress bar, `log.jsonl` (one JSON record per logged step and per
evaluation) and TensorBoard scalars under `tb/`. Only rank 0 reports; the other ranks get a log that does nothing.

Throughput is measured over the window since the last record, so an evaluation or a save inside a window lowers
that window's figure. MFU is the window's model FLOPs over its time and over the matmul peak measured at start
(reuse.model.matmul_peak, one peer per process).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from reuse.model import matmul_peak


class RunLog:
    def __init__(self, out: Path, max_steps: int, start_step: int, device: torch.device,
                 autocast_dtype: torch.dtype | None, world: int, log_every: int, enabled: bool = True):
        self.enabled, self.log_every = enabled, log_every
        if not enabled:
            return
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(out / "tb"))
        self.file = open(out / "log.jsonl", "a")
        self.peak = matmul_peak(device, autocast_dtype or torch.float32) * world
        self.bar = tqdm(total=max_steps, initial=start_step, desc=out.name, disable=None)
        self._new_window()

    def _new_window(self) -> None:
        self.window_start, self.window_tokens, self.window_flops = time.perf_counter(), 0, 0.0

    def _write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()  # a killed run keeps every line it logged

    def train(self, step: int, loss: float, grad_norm: float, lr: float, tokens: int, flops: float,
              force: bool = False) -> None:
        """One training step's figures; written every log_every steps (and when `force`, the last step)."""
        if not self.enabled:
            return
        self.window_tokens += tokens
        self.window_flops += flops
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.3f}")
        if step % self.log_every and not force:
            return
        elapsed = time.perf_counter() - self.window_start
        record = {"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                  "tokens_per_s": self.window_tokens / elapsed, "mfu": self.window_flops / elapsed / self.peak}
        self._write(record)
        for key, value in record.items():
            if key != "step":
                self.writer.add_scalar(f"train/{key}", value, step)
        self._new_window()

    def valid(self, step: int, log_ppl: float) -> None:
        if not self.enabled:
            return
        self.writer.add_scalar("valid/log_ppl", log_ppl, step)
        self._write({"step": step, "valid_log_ppl": log_ppl})

    def close(self) -> None:
        if self.enabled:
            self.bar.close()
            self.writer.close()
            self.file.close()
