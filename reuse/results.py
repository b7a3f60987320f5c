"""The results table (`results.csv`): its columns, how a run's regime is judged, and reading and writing it.

A run is *data-limited* when its valid loss reached its best before the step cap and then stopped improving for
`patience` evaluations (the run stopped early): it learned what its data allows. It is *compute-limited* when its
last evaluation is its best: it was still improving when the cap ended it, so it says nothing about data scarcity.
A run whose best came earlier but that reached the cap before its patience ran out is *unsettled*. A run with a fixed
budget (no patience, protocol paper) whose best came before its end is *past-best*: it trained `epochs_past_best`
epochs beyond its best valid loss, the regime the paper's scratch models were in.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

from reuse.config import TrainConfig
from reuse.heldout import COLUMNS as HELDOUT

DEFAULT_LR = TrainConfig.lr  # a recipe without lr trains at the trainer's default

# data_tokens: unique tokens of the training fraction; training_tokens: tokens seen (steps x batch x sequence);
# epochs: training_tokens / data_tokens; grow_method: a reused run's growth operator (empty for any other run);
# post_growth_log_ppl: a warm-started run's valid loss before its first step
# (what growth kept of the parent); chain_flops: this run's training FLOPs plus those of every run it was
# grown or fine-tuned from (what the whole method cost). final_log_ppl and best_log_ppl are the periodic in-training
# estimates (eval_batches of valid; best_log_ppl is the one that chose best/, so it is biased low);
# valid_last ... train_best (reuse.heldout) score the last and best checkpoints once, with the original protocol, on
# the whole valid and test splits and a sample of the run's training blocks. variant: a search grid's variant;
# parent_checkpoint: which of its parent's checkpoints a warm start grew from; epochs_past_best: epochs trained
# after the best periodic valid loss.
COLUMNS = ["run_id", "variant", "model", "parameters", "fraction", "seed", "data_tokens", "training_tokens", "steps",
           "epochs", "method", "grow_method", "parent", "parent_checkpoint", "lr", "target", "post_growth_log_ppl",
           "final_log_ppl", "best_log_ppl", "best_step", "epochs_past_best", "regime", *HELDOUT, "train_flops",
           "chain_flops", "wall_time_s"]
NUMERIC = {"parameters", "fraction", "data_tokens", "training_tokens", "epochs", "post_growth_log_ppl", "lr",
           "final_log_ppl", "best_log_ppl", "epochs_past_best", *HELDOUT, "train_flops", "chain_flops",
           "wall_time_s"}
INTEGER = {"seed", "steps", "best_step"}
REGIMES = ("data-limited", "compute-limited", "past-best", "unsettled", "unevaluated")
# A grid with a downstream section adds downstream_<task>, _final and _majority (reuse.downstream) after COLUMNS.
DOWNSTREAM = "downstream_"


class ResultsError(Exception):
    """A results table that cannot be read; the message names the file and what is wrong."""


def classify_regime(valid: list[tuple[int, float]], stopped_early: bool, fixed_budget: bool = False) -> str:
    """The regime of a run from its periodic valid losses [(step, loss)] in step order (see the module docstring).
    A loss that is not finite never counts as a best."""
    finite = [(step, loss) for step, loss in valid if math.isfinite(loss)]
    if not finite:
        return "unevaluated"
    best_step = min(finite, key=lambda p: (p[1], p[0]))[0]
    if best_step == valid[-1][0]:
        return "compute-limited"
    if fixed_budget:
        return "past-best"
    return "data-limited" if stopped_early else "unsettled"


def valid_curve(run_dir: str | Path) -> list[tuple[int, float]]:
    """The periodic valid losses in a run's log.jsonl; a resumed run re-logs the steps it repeats, and the last
    record of a step wins."""
    by_step = {}
    path = Path(run_dir) / "log.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            if "valid_log_ppl" in record:
                by_step[int(record["step"])] = float(record["valid_log_ppl"])
    return sorted(by_step.items())


def far_past_best(row: dict) -> bool:
    """A run whose budget is at least twice its best step: it trained at least as long again after its best as
    before it (the paper's regime; the recipe search's eligibility and the report's count)."""
    return 0 <= row["best_step"] <= row["steps"] / 2


def run_regime(run_dir: str | Path, fixed_budget: bool = False) -> str:
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    return classify_regime(valid_curve(run_dir), bool(summary.get("stopped_early")), fixed_budget)


def collect(runs: list, snap: Path) -> list[dict]:
    """One row per finished run of a sweep (reuse.sweep.Run), in plan order."""
    rows, by_id = [], {}
    for run in runs:
        folder = snap / run.run_id
        if not (folder / "summary.json").is_file():
            continue
        s = json.loads((folder / "summary.json").read_text())
        block_size = json.loads((folder / "run_config.json").read_text())["block_size"]
        data_tokens = s["training_blocks"] * block_size
        parent = by_id.get(run.parent)
        row = {"run_id": run.run_id, "variant": run.variant, "model": Path(run.model).stem,
               "parameters": s["parameters"], "fraction": run.fraction, "seed": run.seed, "data_tokens": data_tokens,
               "training_tokens": s["tokens_seen"], "steps": s["steps"],
               "epochs": s["epochs"],
               "method": run.method, "grow_method": run.args.get("grow_method", "") if run.method == "reuse" else "",
               "parent": run.parent, "parent_checkpoint": run.parent_checkpoint, "lr": run.args.get("lr", DEFAULT_LR),
               "target": run.target,
               "post_growth_log_ppl": s.get("start_valid_log_ppl") if run.parent else "",
               "final_log_ppl": s["final_valid_log_ppl"], "best_log_ppl": s["best_valid_log_ppl"],
               "best_step": s["best_step"], "epochs_past_best": s.get("epochs_past_best", ""),
               "regime": run_regime(folder, fixed_budget=not run.args.get("patience")),
               "train_flops": s["train_flops"],
               "chain_flops": s["train_flops"] + (parent["chain_flops"] if parent else 0.0),
               "wall_time_s": s["wall_time_s"], **s.get("heldout", {})}
        by_id[run.run_id] = row
        rows.append(row)
    return rows


def by_operator(rows: list[dict]) -> list[dict]:
    """The rows with each reused run's method named by its growth operator (`reuse msg`) when the table holds more
    than one operator (an operator study), so that summaries, gains and figures keep the operators apart; a table
    with one operator (or none) comes back unchanged."""
    operators = {r.get("grow_method", "") for r in rows if r["method"] == "reuse"}
    if len(operators) < 2:
        return rows
    return [{**r, "method": f"reuse {r['grow_method']}"} if r["method"] == "reuse" else r for r in rows]


def write_results(rows: list[dict], path: str | Path) -> None:
    """Atomically: a killed sweep leaves the previous table, never half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        extra = sorted({k for r in rows for k in r if k.startswith(DOWNSTREAM)})
        writer = csv.DictWriter(f, fieldnames=COLUMNS + extra, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def read_results(path: str | Path, needed: tuple[str, ...] = ("parameters", "fraction", "method",
                                                                  "final_log_ppl")) -> list[dict]:
    """Rows with numbers as numbers; empty cells stay ''. Tables from before the seed column read as seed 0."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path} does not exist: run the sweep first (python -m reuse.sweep GRID)")
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise ResultsError(f"{path} is not a readable CSV table ({e})") from e
    missing = set(needed) - set(rows[0] if rows else ())
    if not rows or missing:
        raise ResultsError(f"{path} lacks the columns {sorted(missing or needed)} (or has no rows)")
    for number, row in enumerate(rows, start=2):
        row.setdefault("seed", "0")
        row.setdefault("grow_method", "")  # tables from before the operator study
        row.setdefault("variant", "")  # and before search grids
        for key in NUMERIC | INTEGER | {k for k in row if k.startswith(DOWNSTREAM)}:
            if row.get(key) not in (None, ""):
                try:
                    row[key] = int(row[key]) if key in INTEGER else float(row[key])
                except ValueError:
                    raise ResultsError(f"{path} line {number}: {key} = {row[key]!r} is not a number") from None
    return rows
