"""Downstream evaluation inside a sweep: every finished checkpoint fine-tuned on the grid's downstream tasks.

A ladder grid may say

    downstream:
      tasks: [next]             # any of reuse.glue.TASKS
      glue_dir: data/glue
      args: {max_steps: 300, lr: 3.0e-4}   # reuse.finetune options, on top of its defaults

After the runs, each finished run's kept model (under protocol paper its last checkpoint, the run folder; else
its best/ when it has one) is fine-tuned with
`python -m reuse.finetune` in its own process, with the run's seed (so scratch and reuse of one seed stay paired),
into `<run>/downstream-<task>/`. Its finetune.json, which records the checkpoint's and the data's sha256 and the
recipe, is the cache: a re-run redoes only what is missing or changed. Rows get `downstream_<task>` (the best dev
score), `downstream_<task>_final` and `downstream_<task>_majority` (the majority-class score on the same dev set).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

from reuse.finetune import FinetuneConfig, FinetuneError, cached, check, identity
from reuse.glue import GlueError, get_task, load_task
from reuse.model import is_causal, is_checkpoint, load_config

KEYS = {"tasks", "glue_dir", "args"}
# Set per run by the sweep, never by the grid.
PER_RUN = {"task", "glue_dir", "output_dir", "out", "seed", "threads", "overwrite"}


class DownstreamError(Exception):
    """A grid's downstream section that cannot be used; the message says what to do."""


def typed_args(args: dict) -> dict:
    """The grid's fine-tuning options with the types of FinetuneConfig (YAML reads 1e-4, without a dot, as text)."""
    fields = {f.name: f for f in dataclasses.fields(FinetuneConfig)}
    unknown = set(args) - set(fields) | set(args) & PER_RUN
    if unknown:
        raise DownstreamError(f"downstream args {sorted(unknown)} are not reuse.finetune options the grid may set "
                              f"(the sweep sets {', '.join(sorted(PER_RUN))})")
    out = {}
    for name, value in args.items():
        kind = type(fields[name].default)
        if kind is bool and not isinstance(value, bool) or kind is not bool and isinstance(value, bool):
            raise DownstreamError(f"downstream args: {name} = {value!r} is not a {kind.__name__}")
        try:
            out[name] = kind(value)
        except (TypeError, ValueError):
            raise DownstreamError(f"downstream args: {name} = {value!r} is not a {kind.__name__}") from None
    return out


def check_downstream(grid: dict) -> None:
    """Everything a downstream section can get wrong, found before any training: its keys, the tasks, their files
    (columns and labels), the recipe, and that the models are encoders."""
    section = grid.get("downstream")
    if section is None:
        return
    if not isinstance(section, dict) or not isinstance(section.get("tasks"), list) or not section["tasks"]:
        raise DownstreamError("'downstream' must be a mapping with a non-empty list 'tasks' (and glue_dir, args)")
    if set(section) - KEYS:
        raise DownstreamError(f"'downstream' has unknown keys {sorted(set(section) - KEYS)}; use {sorted(KEYS)}")
    if "targets" in grid:
        raise DownstreamError("'downstream' is for ladder grids of encoders, not transfer grids")
    for model in grid["models"]:
        if is_causal(load_config(model)):
            raise DownstreamError(f"{model} is a decoder (model_type gpt2): downstream fine-tuning needs encoders")
    if len(set(section["tasks"])) != len(section["tasks"]):
        raise DownstreamError(f"downstream tasks {section['tasks']} repeat a task")
    args = typed_args(section.get("args") or {})
    try:
        for task in section["tasks"]:
            check(FinetuneConfig(task=get_task(str(task)).name, **args))
            load_task(section.get("glue_dir", "data/glue"), task)
    except (GlueError, FinetuneError) as e:
        raise DownstreamError(str(e)) from e


def kept_model(snap: Path, run_id: str, protocol: str | None = None) -> Path:
    """The protocol's model: the last checkpoint under protocol paper, else best/ when the run kept one."""
    folder = snap / run_id
    return folder / "best" if protocol != "paper" and is_checkpoint(folder / "best") else folder


def command(checkpoint: Path, cfg: FinetuneConfig, args: dict) -> list[str]:
    cmd = [sys.executable, "-m", "reuse.finetune", str(checkpoint)]
    given = {"task": cfg.task, "glue_dir": cfg.glue_dir, "output_dir": cfg.output_dir, "seed": cfg.seed,
             "threads": cfg.threads, **args}
    for key, value in given.items():
        flag = "--" + key.replace("_", "-")
        cmd += ([flag] if value else ["--no-" + flag[2:]]) if isinstance(value, bool) else [flag, str(value)]
    return cmd


def run_downstream(runs, grid: dict, snap: Path, status: dict[str, str], workers: int = 1, threads: int = 0,
                   progress=print) -> tuple[dict, list[str]]:
    """Fine-tune every finished run on every task, `workers` at a time; returns ({(run_id, task): result},
    the fine-tunes that failed)."""
    import json

    section = grid["downstream"]
    args = typed_args(section.get("args") or {})
    results, todo = {}, []
    for run in runs:
        if status.get(run.run_id) != "done":
            continue
        checkpoint = kept_model(snap, run.run_id, grid.get("protocol"))
        for task in section["tasks"]:
            out = snap / run.run_id / f"downstream-{task}"
            cfg = FinetuneConfig(task=task, glue_dir=section.get("glue_dir", "data/glue"), output_dir=str(out),
                                 seed=run.seed, threads=threads, **args)
            done = cached(out, identity(str(checkpoint), cfg))
            if done is not None:
                results[(run.run_id, task)] = done
            else:
                todo.append((run.run_id, task, out, command(checkpoint, cfg, args)))
    progress(f"downstream: {len(results)} fine-tunes already done, {len(todo)} to run")
    running, failed, total = {}, [], len(todo)
    (snap / "logs").mkdir(parents=True, exist_ok=True)
    while todo or running:
        while todo and len(running) < max(1, workers):
            run_id, task, out, cmd = todo.pop(0)
            log = open(snap / "logs" / f"{run_id}-downstream-{task}.log", "a")
            running[(run_id, task)] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log, out,
                                       time.time())
        for key, (proc, log, out, started) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[key]
            log.close()
            if proc.returncode == 0 and (out / "finetune.json").is_file():
                results[key] = json.loads((out / "finetune.json").read_text())
                note = f"{results[key]['metric']} {results[key]['best_score']:.4f}"
            else:
                failed.append(f"{key[0]} {key[1]}")
                note = f"failed (exit code {proc.returncode}; see {log.name})"
            progress(f"[{total - len(todo) - len(running)}/{total}] downstream {key[1]} of {key[0]}: {note} in "
                     f"{time.time() - started:.0f} s")
        time.sleep(0.2)
    return results, failed


def add_columns(rows: list[dict], results: dict) -> None:
    """downstream_<task> (best dev score), _final and _majority on each row that has a result."""
    for row in rows:
        for (run_id, task), result in results.items():
            if run_id == row["run_id"]:
                row[f"downstream_{task}"] = result["best_score"]
                row[f"downstream_{task}_final"] = result["final_score"]
                row[f"downstream_{task}_majority"] = result["majority_score"]
