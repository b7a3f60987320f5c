"""The end-of-run evaluation: a run's last and best checkpoints, each scored once with the original protocol
(reuse.evaluate) on the whole valid split, the whole test split and a fixed sample of the run's own training blocks.

Why all six numbers:
- the last checkpoint on valid is what the paper reported (a fixed budget, the released checkpoint);
- the best checkpoint was chosen on the periodic valid estimate, so its valid figure is biased low: its test figure,
  on a split that took no part in choosing it, is the early-stopping protocol's number;
- the training sample beside valid tells memorisation (train far below valid) from a model that never trained.
"""

from __future__ import annotations

from pathlib import Path

import torch

from reuse.evaluate import evaluate_blocks, evaluate_checkpoint, evaluate_dataset
from reuse.model import is_causal, is_checkpoint, load_model

SPLITS = ("valid", "test", "train")
CHECKPOINTS = ("last", "best")
# The columns these scores fill in results.csv: valid_last, test_last, train_last, valid_best, ...
COLUMNS = [f"{split}_{checkpoint}" for checkpoint in CHECKPOINTS for split in SPLITS]


def training_sample(blocks: torch.Tensor, size: int) -> torch.Tensor:
    """A fixed sample of a run's training blocks: the first `size` of a permutation seeded 0, in data order."""
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(0))[:size]
    return blocks[order.sort().values]


def score_sample(model, tokenizer, blocks: torch.Tensor, device: torch.device, objective,
                 max_batches: int | None) -> float:
    """In-memory blocks scored as reuse.evaluate scores a file: an MLM by the original procedure, a causal LM on
    every next token."""
    if max_batches:
        blocks = blocks[:max_batches * 64]
    if is_causal(model.config):
        return evaluate_blocks(model, blocks, tokenizer, device)["log_ppl"]
    rows = list(objective.input_ids(blocks))  # a list is a map-style dataset: the DataLoader stacks its rows
    return evaluate_dataset(model, tokenizer, rows, device, max_batches=max_batches)["log_ppl"]


def heldout_scores(last_model, run_dir: Path, tokenizer, device: torch.device, objective, *, valid_data: str,
                   test_data: str, train_sample: torch.Tensor, block_size: int,
                   max_batches: int | None = None) -> dict[str, float]:
    """{'valid_last': ..., 'test_best': ...}: each checkpoint (the in-memory last model, best/ when the run kept one)
    on each split it has data for."""
    models = {"last": last_model}
    if is_checkpoint(Path(run_dir) / "best"):
        models["best"] = load_model(Path(run_dir) / "best").to(device)
    scores = {}
    for name, model in models.items():
        for split, data in (("valid", valid_data), ("test", test_data)):
            if data:
                scores[f"{split}_{name}"] = evaluate_checkpoint(model, tokenizer, data, device,
                                                                block_size=block_size,
                                                                max_batches=max_batches)["log_ppl"]
        if len(train_sample):
            scores[f"train_{name}"] = score_sample(model, tokenizer, train_sample, device, objective, max_batches)
    return scores
