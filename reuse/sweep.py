"""Resumable sweeps over model widths x data fractions x {scratch, reuse}: `python -m reuse.sweep configs/demo.yaml`.

A grid (YAML) names a model ladder, data fractions, the data files, a training recipe per method, and optional
per-model overrides (`model_args`). For every fraction it plans one from-scratch run per model and one reuse chain:
the reused model at width i is grown from the reused model at width i-1 (at the smallest width scratch and reuse
coincide, so the chain starts from that scratch run). A grid with `pretrain` and `targets` plans a transfer study
instead (see configs/transfer_demo.yaml). Run folders are named like the released checkpoints
(`bert-4L-64H-0.1D`, `bert-n2n-4L-128H-0.1D`).

Each run is `python -m reuse.train` in its own process (so a crash stays in its run), launched when its parent is
done, several at once (`--workers N`, one GPU each when GPUs are given with `--gpus 0,1`), or submitted through
submitit (`--executor slurm`, or `local` to try it on this machine). Re-running skips finished runs (they have a
`summary.json`) and resumes unfinished ones from their last checkpoint; a failed run is reported and only its
dependants are skipped. Results are gathered into one table, `results.csv`, in the grid's results folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from reuse.checkpoint import CheckpointError, RunLock
from reuse.cli import Parser, positive_int
from reuse.config import ConfigError, check_config, config_from_dict
from reuse.data import DataError, inspect_tokens
from reuse.grid import (SweepError, check_batches, check_growth_options, check_operators,  # noqa: F401
                        check_protocol_runs, default_parent_checkpoint, grid_seeds, load_grid,
                        search_variants)  # SweepError, load_grid: public here
from reuse.grow import GrowthError
from reuse.growing import plan_chain
from reuse.model import ModelError, is_checkpoint
from reuse.report import write_report
from reuse.results import by_operator, collect, write_results
from reuse.runs import model_tag, run_name
from reuse.transfer import TransferError


@dataclass
class Run:
    run_id: str
    model: str          # model config path
    fraction: float
    method: str         # "scratch", "reuse", "pretrain" or "finetune"
    parent: str = ""    # run_id this run starts from (grown for reuse, as is for finetune)
    args: dict = field(default_factory=dict)  # reuse.train arguments (recipe)
    target: str = ""    # target language of a transfer study
    train_data: str = ""  # overrides the grid's data
    valid_data: str = ""
    seed: int = 0       # initialisation, data subset, masks and dropout; a reuse chain stays within one seed
    parent_checkpoint: str = ""  # last or best: which of the parent's checkpoints this run starts from
    variant: str = ""   # a search grid's variant (its runs live in <snap>/<variant>/)


# What the sweep decides per run (train_args), never a recipe (a recipe may still name other data for a model).
SWEEP_SETS = {"output_dir", "init_from", "config", "fraction"}


def plan_transfer(grid: dict) -> list[Run]:
    """Per model: one pre-training run on the source data; then per target language and fraction, the model
    trained from scratch on the target data and the pre-trained model fine-tuned on the same data."""
    family, common = grid.get("family", "gpt2"), dict(grid.get("train", {}))
    source = grid["pretrain"]
    lang = source.get("language", "en")
    runs = []
    for model in grid["models"]:
        pre_id = run_name(family, model_tag(model), language=lang)
        runs.append(Run(pre_id, model, float(source.get("fraction", 1.0)), "pretrain", "",
                        {**common, **source.get("args", {})}, lang, source["train_data"], source.get("valid_data", "")))
        for target, files in grid["targets"].items():
            for fraction in map(float, grid["fractions"]):
                data = (files["train_data"], files.get("valid_data", ""))
                if "scratch" in grid["methods"]:
                    runs.append(Run(run_name(family, model_tag(model), fraction, language=target), model, fraction,
                                    "scratch", "", {**common, **(grid["methods"]["scratch"] or {})}, target, *data))
                if "finetune" in grid["methods"]:
                    runs.append(Run(run_name(family, model_tag(model), fraction, language=target, source=lang),
                                    model, fraction, "finetune", pre_id,
                                    {**common, **(grid["methods"]["finetune"] or {})}, target, *data))
    return runs


def plan(grid: dict) -> list[Run]:
    """All runs of a grid (of every variant of a search grid), parents before children; two runs with one name are
    refused, and so is a run the grid's protocol forbids."""
    runs = []
    for name, variant in search_variants(grid).items():
        planned = plan_transfer(variant) if "targets" in variant else plan_ladder(variant)
        for run in planned:
            run.parent_checkpoint = run.args.pop("parent_checkpoint", "") or (
                default_parent_checkpoint(variant) if run.parent and "protocol" in variant else "")
            if name:
                run.variant, run.run_id = name, f"{name}/{run.run_id}"
                run.parent = f"{name}/{run.parent}" if run.parent else ""
        runs += planned
    seen = {}
    for run in runs:
        taken = sorted(set(run.args) & SWEEP_SETS)
        if taken:  # a recipe's output_dir would send every run into one folder, each replacing the last
            raise SweepError(f"grid {grid['name']}, run {run.run_id}: its recipe sets {', '.join(taken)}, which "
                             f"the sweep sets for each run; remove it from the grid")
        if run.run_id in seen:
            raise SweepError(f"grid {grid['name']}: two runs would share the folder {run.run_id} (a model listed "
                             f"twice, or fractions that print alike: {seen[run.run_id]:g} and {run.fraction:g}); "
                             f"make them distinct")
        seen[run.run_id] = run.fraction
        try:  # every run's settings pass the trainer's own checks before anything starts
            check_config(config_from_dict({k: v for k, v in train_args(run, grid, Path("snap")).items()
                                           if v not in ("", None)}))
        except ConfigError as e:
            raise SweepError(f"grid {grid['name']}, run {run.run_id}: {e}") from e
    check_protocol_runs(grid, runs)
    check_growth_options(grid, runs)
    check_batches(grid, runs)
    return runs


def plan_ladder(grid: dict) -> list[Run]:
    try:
        plan_chain(grid["models"]) if "reuse" in grid["methods"] else None
    except (GrowthError, ModelError) as e:
        raise SweepError(f"grid {grid['name']}: the model ladder cannot form a reuse chain: {e}") from e
    family = grid.get("family", "bert")
    per_model = grid.get("model_args", {})  # a width may want its own learning rate: overrides every method's
    # A fraction may want its own step cap (more data takes more steps to use up): on top of `train`, under the
    # method recipes and model_args.
    per_fraction = {float(k): v for k, v in (grid.get("fraction_args") or {}).items()}
    check_operators(grid)
    # Without `operators` there is one chain, on the reuse recipe alone; with it, one per operator, whose own
    # settings override the reuse recipe's.
    chains = [{**(o or {}), "grow_method": op} for op, o in grid["operators"].items()] if "operators" in grid \
        else [{}]
    runs = []
    for fraction, seeds in grid_seeds(grid).items():
        common = {**dict(grid.get("train", {})), **per_fraction.get(fraction, {})}
        for seed in seeds:
            scratch_ids = []
            for model in grid["models"]:
                run_id = run_name(family, model_tag(model), fraction, seed)
                scratch_ids.append(run_id)
                if "scratch" in grid["methods"] or model == grid["models"][0]:
                    recipe = {**common, **(grid["methods"].get("scratch") or {}), **per_model.get(model, {}),
                              "seed": seed}
                    runs.append(Run(run_id, model, fraction, "scratch", "", recipe, seed=seed))
            if "reuse" not in grid["methods"]:
                continue
            for overrides in chains:  # one reuse chain per operator, all grown from the one scratch ladder
                parent = scratch_ids[0]
                for model in grid["models"][1:]:
                    recipe = {**common, **(grid["methods"]["reuse"] or {}), **overrides, **per_model.get(model, {}),
                              "seed": seed}
                    recipe.setdefault("grow_method", "net2net")
                    run_id = run_name(family, model_tag(model), fraction, seed, grow_method=recipe["grow_method"])
                    runs.append(Run(run_id, model, fraction, "reuse", parent, recipe, seed=seed))
                    parent = run_id
    return runs


def train_command(run: Run, grid: dict, snap: Path, threads: int | None = None) -> list[str]:
    """`python -m reuse.train --args-file <snap>/args/<run>.json`: the run's settings handed over as one file, not
    re-spelled as flags, so every TrainConfig field (growth options included) reaches the trainer as the grid wrote
    it; run_config.json in the run folder then records them resolved."""
    args = {k: v for k, v in train_args(run, grid, snap).items() if v not in ("", None)}
    if threads:
        args["threads"] = threads
    path = snap / "args" / f"{run.run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(config_from_dict(args)), indent=2))  # typed: 1e-3, not "1e-3"
    return [sys.executable, "-m", "reuse.train", "--args-file", str(path)]


def train_args(run: Run, grid: dict, snap: Path) -> dict:
    """The reuse.train options of a run: the grid's data, the run's folder and parent, its recipe."""
    args = {"config": run.model, "train_data": run.train_data or grid["train_data"],
            "valid_data": run.valid_data or grid.get("valid_data", ""), "output_dir": str(snap / run.run_id),
            "fraction": run.fraction, **run.args}
    if "targets" not in grid and args["valid_data"]:
        args = {"heldout": True, "test_data": grid.get("test_data", ""), **args}
    if run.parent:
        parent = snap / run.parent
        if run.parent_checkpoint:  # the grid's choice (its protocol's default, or the recipe's parent_checkpoint)
            args["init_from"] = str(parent / "best" if run.parent_checkpoint == "best" else parent)
        else:  # a transfer study that names none: the kept best model when the parent has one
            args["init_from"] = str(parent / "best" if is_checkpoint(parent / "best") else parent)
    if run.method != "reuse":
        for key in [k for k in args if k.startswith("grow_")]:
            args.pop(key)
        if run.parent:  # fine-tuned as it is: the checkpoint brings its own config
            args.pop("config")
    return args


def is_done(snap: Path, run: Run) -> bool:
    return (snap / run.run_id / "summary.json").is_file()


def launch(run: Run, cmd: list[str], env: dict, executor, log_dir: Path):
    """Start a run; returns an object with poll() -> None while running, else the exit code."""
    log_dir.mkdir(parents=True, exist_ok=True)
    if executor is None:
        (log_dir / run.run_id).parent.mkdir(parents=True, exist_ok=True)  # a search variant's subfolder
        log = open(log_dir / f"{run.run_id}.log", "a")
        return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    import submitit

    job = executor.submit(submitit.helpers.CommandFunction(cmd, env={**os.environ, **env}, verbose=False))

    class Job:
        def poll(self):
            if not job.done():
                return None
            try:
                job.result()
                return 0
            except Exception as e:  # the command's failure, reported by submitit
                (log_dir / f"{run.run_id}.log").write_text(str(e))
                return 1
    return Job()


def execute(runs: list[Run], grid: dict, snap: Path, workers: int = 1, gpus: list[str] | None = None,
            executor=None, threads: int = 0, progress=print) -> dict[str, str]:
    """Run everything not yet done, parents first; returns run_id -> done/failed/skipped. Runs with the longest
    chain of dependants start first, so a reuse chain does not end the sweep alone on one worker."""
    status = {r.run_id: "done" for r in runs if is_done(snap, r)}
    below = {r.run_id: 0 for r in runs}
    for r in reversed(runs):  # parents come before children: one pass from the end sees every chain
        if r.parent in below:
            below[r.parent] = max(below[r.parent], below[r.run_id] + 1)
    pending = sorted((r for r in runs if r.run_id not in status), key=lambda r: -below[r.run_id])
    running: dict[str, tuple] = {}
    free_slots = list(gpus) if gpus else [str(i) for i in range(workers)]
    total = len(runs)
    progress(f"{len(status)}/{total} runs already done, {len(pending)} to run")
    while pending or running:
        for run in list(pending):
            parent_state = status.get(run.parent) if run.parent else "done"
            if parent_state in ("failed", "skipped"):
                status[run.run_id] = "skipped"
                pending.remove(run)
                progress(f"skipped {run.run_id}: its parent {run.parent} did not finish")
            elif parent_state == "done" and free_slots:
                slot = free_slots.pop(0)
                env = {"CUDA_VISIBLE_DEVICES": slot} if gpus else {}
                cmd = train_command(run, grid, snap, threads if not gpus else None)
                running[run.run_id] = (launch(run, cmd, env, executor, snap / "logs"), slot, time.time())
                pending.remove(run)
                progress(f"started {run.run_id}")
        for run_id, (handle, slot, started) in list(running.items()):
            code = handle.poll()
            if code is None:
                continue
            del running[run_id]
            free_slots.append(slot)
            ok = code == 0 and (snap / run_id / "summary.json").is_file()
            status[run_id] = "done" if ok else "failed"
            done = sum(s == "done" for s in status.values())
            note = "" if ok else f" (exit code {code}; see {snap / 'logs' / (run_id + '.log')})"
            progress(f"[{done}/{total}] {run_id} {status[run_id]} in {time.time() - started:.0f} s{note}")
        time.sleep(0.2)
    return status


def hold_sweep(snap: Path, grid: dict) -> RunLock:
    """One sweep per run folder at a time: two would each launch the same runs, report the other's as failed and
    overwrite each other's results.csv. Held until this process ends."""
    lock = RunLock(snap)
    try:
        lock.acquire()
    except CheckpointError:
        holder = (snap / ".owner").read_text().strip() if (snap / ".owner").exists() else "another process"
        raise SweepError(f"another sweep of grid {grid['name']} is running on {snap} ({holder}): wait for it or "
                         f"stop it") from None
    return lock


def claim_results_dir(results: Path, grid_path: Path, grid: dict) -> None:
    """A results folder belongs to one grid: refuse one written by another."""
    results.mkdir(parents=True, exist_ok=True)
    saved = results / "grid.yaml"
    if saved.exists() and yaml.safe_load(saved.read_text()) != grid:
        raise SweepError(f"{results} holds results of a different grid (its grid.yaml differs from {grid_path}); "
                         f"use another --results folder or delete that one")
    saved.write_text(yaml.safe_dump(grid, sort_keys=False))


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="python -m reuse.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid", type=Path)
    parser.add_argument("--snap", type=Path, help="folder of the run folders (default snap/<grid name>)")
    parser.add_argument("--results", type=Path, help="results folder (default results/<grid name>)")
    parser.add_argument("--workers", type=positive_int, default=1, help="runs at once on this machine")
    parser.add_argument("--gpus", help="GPU ids, one run per GPU: 0,1,2,3")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per run (default: cores / workers)")
    parser.add_argument("--executor", choices=("local", "slurm"), help="submit runs through submitit")
    parser.add_argument("--slurm-partition", default="")
    parser.add_argument("--plan", action="store_true", help="print the planned runs and exit")
    args = parser.parse_args(argv)
    try:
        grid = load_grid(args.grid)
        runs = plan(grid)
        if args.plan:
            for run in runs:
                print(f"{run.run_id}\t{run.method}\t{run.parent or '-'}")
            return
        snap = args.snap or Path("snap") / grid["name"]
        results = args.results or Path("results") / grid["name"]
        lock = hold_sweep(snap, grid)  # held while this reference lives: a dropped lock object releases itself
        claim_results_dir(results, args.grid, grid)
        executor = None
        if args.executor:
            import submitit
            executor = submitit.AutoExecutor(folder=str(snap / "submitit"), cluster=args.executor)
            if args.executor == "slurm":
                executor.update_parameters(slurm_partition=args.slurm_partition, gpus_per_node=1, timeout_min=24 * 60)
        gpus = args.gpus.split(",") if args.gpus else None
        workers = len(gpus) if gpus else args.workers
        threads = args.threads or max(1, (os.cpu_count() or 1) // workers)
        start = time.time()
        status = execute(runs, grid, snap, workers, gpus, executor, threads)
        rows = collect(runs, snap)
        if grid.get("downstream"):  # every finished checkpoint fine-tuned on the grid's tasks (cached per run)
            from reuse.downstream import add_columns, run_downstream
            downstream, failed_downstream = run_downstream(runs, grid, snap, status, workers, threads)
            add_columns(rows, downstream)
            status.update({f"downstream {f}": "failed" for f in failed_downstream})
        write_results(rows, results / "results.csv")
        if rows and "targets" in grid:
            from reuse.transfer import write_transfer
            write_transfer(results / "results.csv")
        elif rows:
            from reuse.evaluate import unigram_baseline
            from reuse.plot import figure_4a, figure_protocols
            from reuse.search import write_search_report

            baseline = unigram_baseline(grid["train_data"], grid["valid_data"],
                                        inspect_tokens(grid["train_data"]).vocab_size) if grid.get("valid_data") else None
            if "search" in grid:  # variants are recipes, not methods: one table of them all, and the choice
                print(f"search: {write_search_report(grid, rows, results)}")
            else:
                figure = figure_4a(by_operator(rows), results / "curves.png", loss="best_log_ppl", baseline=baseline)
                both = figure_protocols(rows, results / "protocols.png", baseline) \
                    if any(isinstance(r.get("valid_last"), float) for r in rows) else None
                write_report(grid, rows, results, figure, baseline, time.time() - start, both)
    except (SweepError, DataError, ModelError, TransferError) as e:
        sys.exit(f"error: {e}")
    lock.release()
    failed = [r for r, s in status.items() if s != "done"]
    print(f"{len(rows)} runs in {results / 'results.csv'}" + (f"; not done: {', '.join(failed)}" if failed else ""))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
