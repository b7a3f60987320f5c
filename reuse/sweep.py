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
import csv
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from reuse.grow import GrowthError, plan_chain
from reuse.model import ModelError, load_config

# data_tokens: unique tokens of the training fraction; training_tokens: tokens seen (steps x batch x sequence).
COLUMNS = ["run_id", "model", "parameters", "fraction", "data_tokens", "training_tokens", "steps", "method",
           "parent", "target", "final_log_ppl", "best_log_ppl", "train_flops", "wall_time_s"]


class SweepError(Exception):
    """A grid or results folder that cannot be used; the message says what to do."""


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


def model_tag(config_path: str) -> str:
    config = load_config(config_path)
    return f"{config.num_hidden_layers}L-{config.hidden_size}H"


def load_grid(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"grid {path} does not exist (see configs/demo.yaml)")
    grid = yaml.safe_load(path.read_text())
    transfer = "targets" in grid
    for key in ("name", "models", "fractions", "methods") + (("pretrain",) if transfer else ("train_data",)):
        if key not in grid:
            raise SweepError(f"grid {path} lacks '{key}'")
    for fraction in grid["fractions"]:
        if not 0 < float(fraction) <= 1:
            raise SweepError(f"grid {path}: fraction {fraction} is outside (0, 1]")
    for model in grid["models"]:
        if not Path(model).is_file():
            raise SweepError(f"grid {path} names model config {model}, which does not exist")
    allowed = {"scratch", "finetune"} if transfer else {"scratch", "reuse"}
    unknown = set(grid["methods"]) - allowed
    if unknown:
        raise SweepError(f"grid {path}: unknown methods {sorted(unknown)}; use {' and '.join(sorted(allowed))}")
    return grid


def plan_transfer(grid: dict) -> list[Run]:
    """Per model: one pre-training run on the source data; then per target language and fraction, the model
    trained from scratch on the target data and the pre-trained model fine-tuned on the same data."""
    family, common = grid.get("family", "gpt2"), dict(grid.get("train", {}))
    source = grid["pretrain"]
    lang = source.get("language", "en")
    runs = []
    for model in grid["models"]:
        pre_id = f"{family}-{model_tag(model)}-{lang}"
        runs.append(Run(pre_id, model, float(source.get("fraction", 1.0)), "pretrain", "",
                        {**common, **source.get("args", {})}, lang, source["train_data"], source.get("valid_data", "")))
        for target, files in grid["targets"].items():
            for fraction in map(float, grid["fractions"]):
                data = (files["train_data"], files.get("valid_data", ""))
                if "scratch" in grid["methods"]:
                    runs.append(Run(f"{family}-{model_tag(model)}-{target}-{fraction:g}D", model, fraction, "scratch",
                                    "", {**common, **(grid["methods"]["scratch"] or {})}, target, *data))
                if "finetune" in grid["methods"]:
                    runs.append(Run(f"{family}-{lang}2{target}-{model_tag(model)}-{fraction:g}D", model, fraction,
                                    "finetune", pre_id, {**common, **(grid["methods"]["finetune"] or {})}, target,
                                    *data))
    return runs


def plan(grid: dict) -> list[Run]:
    """All runs of a grid, parents before children."""
    if "targets" in grid:
        return plan_transfer(grid)
    try:
        plan_chain(grid["models"]) if "reuse" in grid["methods"] else None
    except (GrowthError, ModelError) as e:
        raise SweepError(f"grid {grid['name']}: the model ladder cannot form a reuse chain: {e}") from e
    family = grid.get("family", "bert")
    common = dict(grid.get("train", {}))
    per_model = grid.get("model_args", {})  # a width may want its own learning rate: overrides every method's
    runs = []
    for fraction in grid["fractions"]:
        fraction = float(fraction)
        scratch_ids = []
        for model in grid["models"]:
            run_id = f"{family}-{model_tag(model)}-{fraction:g}D"
            scratch_ids.append(run_id)
            if "scratch" in grid["methods"] or model == grid["models"][0]:
                recipe = {**common, **(grid["methods"].get("scratch") or {}), **per_model.get(model, {})}
                runs.append(Run(run_id, model, fraction, "scratch", "", recipe))
        if "reuse" not in grid["methods"]:
            continue
        parent = scratch_ids[0]
        for model in grid["models"][1:]:
            recipe = {**common, **(grid["methods"]["reuse"] or {}), **per_model.get(model, {})}
            recipe.setdefault("grow_method", "net2net")
            tag = {"net2net": "n2n"}.get(recipe["grow_method"], recipe["grow_method"])
            run_id = f"{family}-{tag}-{model_tag(model)}-{fraction:g}D"
            runs.append(Run(run_id, model, fraction, "reuse", parent, recipe))
            parent = run_id
    return runs


def train_command(run: Run, grid: dict, snap: Path) -> list[str]:
    args = {"config": run.model, "train_data": run.train_data or grid["train_data"],
            "valid_data": run.valid_data or grid.get("valid_data", ""), "output_dir": str(snap / run.run_id),
            "fraction": run.fraction, **run.args}
    if run.parent:
        args["init_from"] = str(snap / run.parent)
    if run.method != "reuse":
        args.pop("grow_method", None)
    cmd = [sys.executable, "-m", "reuse.train"]
    for key, value in args.items():
        if value in ("", None):
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            cmd.append(flag if value else "--no-" + flag[2:])
        else:
            cmd += [flag, str(value)]
    return cmd


def is_done(snap: Path, run: Run) -> bool:
    return (snap / run.run_id / "summary.json").is_file()


def launch(run: Run, cmd: list[str], env: dict, executor, log_dir: Path):
    """Start a run; returns an object with poll() -> None while running, else the exit code."""
    log_dir.mkdir(parents=True, exist_ok=True)
    if executor is None:
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
    """Run everything not yet done, parents first; returns run_id -> done/failed/skipped."""
    status = {r.run_id: "done" for r in runs if is_done(snap, r)}
    pending = [r for r in runs if r.run_id not in status]
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
                cmd = train_command(run, grid, snap)
                if threads and not gpus:
                    cmd += ["--threads", str(threads)]
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


def collect(runs: list[Run], snap: Path) -> list[dict]:
    rows = []
    for run in runs:
        summary_path = snap / run.run_id / "summary.json"
        if not summary_path.is_file():
            continue
        s = json.loads(summary_path.read_text())
        block_size = json.loads((snap / run.run_id / "run_config.json").read_text())["block_size"]
        rows.append({"run_id": run.run_id, "model": Path(run.model).stem, "parameters": s["parameters"],
                     "fraction": run.fraction, "data_tokens": s["training_blocks"] * block_size,
                     "training_tokens": s["tokens_seen"], "steps": s["steps"],
                     "method": run.method, "parent": run.parent, "target": run.target,
                     "final_log_ppl": s["final_valid_log_ppl"],
                     "best_log_ppl": s["best_valid_log_ppl"], "train_flops": s["train_flops"],
                     "wall_time_s": s["wall_time_s"]})
    return rows


def write_results(rows: list[dict], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


RUN_NAME = re.compile(r"^(?P<family>[a-z]+)-(?:(?P<grow>[a-z0-9]+)-)?(?P<layers>\d+)L-(?P<hidden>\d+)H-"
                      r"(?P<fraction>[0-9.e-]+)D$")


def parse_run_name(name: str) -> dict | None:
    """`bert-12L-64H-0.001D` -> scratch at fraction 0.001; `bert-n2n-12L-128H-0.001D` -> reuse. None otherwise."""
    m = RUN_NAME.match(name)
    if not m:
        return None
    return {"method": "reuse" if m["grow"] else "scratch", "fraction": float(m["fraction"]),
            "layers": int(m["layers"]), "hidden": int(m["hidden"])}


def reuse_gain(rows: list[dict], loss: str = "final_log_ppl") -> list[tuple[float, str, float, float]]:
    """Per fraction, at the largest reused model: (fraction, model, scratch loss, reuse loss)."""
    gains = []
    for fraction in sorted({r["fraction"] for r in rows}):
        reused = [r for r in rows if r["fraction"] == fraction and r["method"] == "reuse"]
        if not reused:
            continue
        top = max(reused, key=lambda r: r["parameters"])
        scratch = [r for r in rows if r["fraction"] == fraction and r["method"] == "scratch"
                   and r["model"] == top["model"]]
        if scratch:
            gains.append((fraction, top["model"], scratch[0][loss], top[loss]))
    return gains


def write_report(grid: dict, rows: list[dict], results: Path, figure: Path, baseline: float | None,
                 seconds: float) -> Path:
    lines = [f"# Sweep `{grid['name']}`", "",
             f"{len(rows)} runs: models {', '.join(Path(m).stem for m in grid['models'])}; fractions "
             f"{', '.join(f'{float(f):g}' for f in grid['fractions'])}; methods {', '.join(grid['methods'])}. "
             f"Training data `{grid['train_data']}`; losses are valid log-perplexities (nats per masked token). "
             f"Training steps of all runs took {sum(r['wall_time_s'] for r in rows) / 60:.1f} min of run time "
             f"(runs in parallel overlap); this invocation took {seconds / 60:.1f} min.", ""]
    if baseline is not None:
        lines += [f"Unigram baseline (predicting training-token frequencies) on the valid split: **{baseline:.3f}**.",
                  ""]
    lines += ["| run | params (M) | fraction | method | steps | final | best | below unigram |",
              "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        below = f"{baseline - r['final_log_ppl']:.3f}" if baseline is not None else ""
        lines.append(f"| {r['run_id']} | {r['parameters'] / 1e6:.2f} | {r['fraction']:g} | {r['method']} | "
                     f"{r['steps']} | {r['final_log_ppl']:.3f} | {r['best_log_ppl']:.3f} | {below} |")
    lines += ["", f"![Figure 4a]({figure.name})", "", "## Reuse gain at the largest width", "",
              "| fraction | model | scratch | reuse | gain (scratch - reuse) |", "| ---: | --- | ---: | ---: | ---: |"]
    for fraction, model, scratch, reused in reuse_gain(rows):
        lines.append(f"| {fraction:g} | {model} | {scratch:.3f} | {reused:.3f} | {scratch - reused:+.3f} |")
    lines += ["", "A positive gain means the grown model ends lower than the same model trained from scratch with "
              "its own recipe and the same number of steps on the same data.", "",
              "## Data the reuse was worth (effective data transferred)", "",
              "D_E: unique tokens the same width needs from scratch to reach the reused model's loss (log-log "
              "interpolation of the scratch runs over fractions; `>=` marks a reused loss below every scratch point, "
              "a lower bound); D_T = D_E - D_F, the tokens saved.", "",
              "| run | D_F (tokens) | D_E | D_T (tokens saved) | D_F / D_E |", "| --- | ---: | ---: | ---: | ---: |"]
    from reuse.transfer import analyse
    for t in analyse([{**r, "target": ""} for r in rows], "data_tokens", "final_log_ppl"):
        if "D_E" in t:
            inverse = {">=": "<=", "<=": ">="}.get(t["marker"], "")
            lines.append(f"| {t['run_id']} | {t['D_F']:,.0f} | {t['marker']}{t['D_E']:,.0f} | "
                         f"{t['marker']}{t['D_T']:,.0f} | {inverse}{t['D_F_over_D_E']:.2f} |")
        else:
            lines.append(f"| {t['run_id']} | {t['D_F']:,.0f} | {t['marker']} | | |")
    path = results / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def claim_results_dir(results: Path, grid_path: Path, grid: dict) -> None:
    """A results folder belongs to one grid: refuse one written by another."""
    results.mkdir(parents=True, exist_ok=True)
    saved = results / "grid.yaml"
    if saved.exists() and yaml.safe_load(saved.read_text()) != grid:
        raise SweepError(f"{results} holds results of a different grid (its grid.yaml differs from {grid_path}); "
                         f"use another --results folder or delete that one")
    saved.write_text(yaml.safe_dump(grid, sort_keys=False))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m reuse.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid", type=Path)
    parser.add_argument("--snap", type=Path, help="folder of the run folders (default snap/<grid name>)")
    parser.add_argument("--results", type=Path, help="results folder (default results/<grid name>)")
    parser.add_argument("--workers", type=int, default=1, help="runs at once on this machine")
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
        write_results(rows, results / "results.csv")
        if rows and "targets" in grid:
            from reuse.transfer import main as transfer_main
            transfer_main([str(results / "results.csv")])
        elif rows:
            from reuse.evaluate import unigram_baseline
            from reuse.data import inspect_tokens
            from reuse.plot import figure_4a

            baseline = unigram_baseline(grid["train_data"], grid["valid_data"],
                                        inspect_tokens(grid["train_data"]).vocab_size) if grid.get("valid_data") else None
            figure = figure_4a(rows, results / "curves.png", baseline=baseline)
            write_report(grid, rows, results, figure, baseline, time.time() - start)
    except SweepError as e:
        sys.exit(f"error: {e}")
    failed = [r for r, s in status.items() if s != "done"]
    print(f"{len(rows)} runs in {results / 'results.csv'}" + (f"; not done: {', '.join(failed)}" if failed else ""))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
