"""The learning-curve benchmark of Alabdulmohsin et al. (2022): 92 tasks in four domains (data/SOURCE.md).

Protocol of the paper: for each task (domain, task, model), fit on the points with Training = 1 and extrapolate to
those with Training = 0; score by the RMSE of log predictions, with the standard error
sqrt(mu + std(e^2) / sqrt(n)) - sqrt(mu), e^2 the per-point squared log errors and mu their mean.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reuse.scaling.estimators import ESTIMATORS, ScalingError

DATA = Path(__file__).parent / "data"
DOMAINS = ("IC", "NMT", "LM", "BB")


@dataclass
class Task:
    domain: str
    task: str
    model: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def load_tasks(domains=DOMAINS, data_dir: Path = DATA) -> list[Task]:
    """Tasks sorted by (domain, task, model); points sorted by size. Repeated rows (same size and split) are
    averaged: some LM curves list a point several times. Model labels and BIG-Bench task tuples stay strings."""
    points = defaultdict(lambda: defaultdict(list))
    for name in ("benchmark.lang.csv", "benchmark.vision.csv"):
        with open(data_dir / name, newline="") as f:
            for row in csv.DictReader(f):
                if row["Domain"] in domains:
                    key = (row["Domain"], row["Task"], row["Model"])
                    points[key][(float(row["Seen Examples"]), int(row["Training"]))].append(float(row["Loss"]))
    tasks = []
    for (domain, task, model), by_x in sorted(points.items()):
        rows = sorted((x, t, float(np.mean(ys))) for (x, t), ys in by_x.items())
        train = np.array([(x, y) for x, t, y in rows if t == 1])
        test = np.array([(x, y) for x, t, y in rows if t == 0])
        if len(train) and len(test):
            tasks.append(Task(domain, task, model, train[:, 0], train[:, 1], test[:, 0], test[:, 1]))
    return tasks


def score(prediction: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(RMSE of log predictions, its standard error as the paper defines it)."""
    e2 = (np.log(prediction) - np.log(truth)) ** 2
    mu = float(np.mean(e2))
    return math.sqrt(mu), math.sqrt(mu + float(np.std(e2)) / math.sqrt(len(e2))) - math.sqrt(mu)


def estimator_for(method: str, domain: str, procedure: str = "reference"):
    """The estimator as the paper's notebook sets it up per domain: M4 starts e_0 at 1.0 (1.001 on BIG-Bench) and
    bounds it by 1 (+ the margin) where losses are error rates (IC, BB), not where they are log-perplexities. The
    grid procedure searches e_0 itself, with no set-up."""
    if method in ("M2", "M3", "M4") and procedure == "grid":
        return ESTIMATORS[method]("grid")
    if method == "M4":
        return ESTIMATORS["M4"](procedure, e_0=1.001 if domain == "BB" else 1.0,
                                loss_bound=1.0 if domain in ("IC", "BB") else None)
    if method in ("M2", "M3"):
        return ESTIMATORS[method](procedure)
    return ESTIMATORS[method]()


def evaluate_group(args: tuple[str, str, list[Task], str]) -> list[dict]:
    """One method on the tasks of one domain; M2-M4 fit them as one batch (`fit_many`)."""
    domain, method, tasks, procedure = args
    rows = [{"Domain": t.domain, "Task": t.task, "Model": t.model, "Method": method} for t in tasks]
    estimator = estimator_for(method, domain, procedure)
    try:
        if hasattr(estimator, "fit_many"):
            fitted = estimator.fit_many([t.train_x for t in tasks], [t.train_y for t in tasks])
        else:
            fitted = [estimator_for(method, domain, procedure).fit(t.train_x, t.train_y) for t in tasks]
    except ScalingError as e:  # not fittable as the paper sets it up: reported, never a NaN
        return [{**r, "RMSE": "", "SE": "", "note": str(e)} for r in rows]
    for r, t, est in zip(rows, tasks, fitted):
        r["RMSE"], r["SE"] = score(est.predict(t.test_x), t.test_y)
        r["rounds"] = getattr(est, "rounds", "")
        r["note"] = ""
    return rows


def run_benchmark(methods=("M1", "M2", "M3", "M4"), domains=DOMAINS, workers: int | None = None,
                  procedure: str = "reference") -> list[dict]:
    unknown = set(methods) - set(ESTIMATORS)
    if unknown:
        raise ScalingError(f"unknown methods {sorted(unknown)}; choose from {', '.join(ESTIMATORS)}")
    unknown = set(domains) - set(DOMAINS)
    if unknown:
        raise ScalingError(f"unknown domains {sorted(unknown)}; choose from {', '.join(DOMAINS)}")
    estimator_for("M2", "IC", procedure)  # an unknown procedure fails here, before any work
    tasks = load_tasks(domains)
    groups = [(d, m, [t for t in tasks if t.domain == d], procedure) for d in domains for m in methods]
    groups = [g for g in groups if g[2]]
    # the longest groups first (the reference iteration runs longest on the long LM curves), so no worker waits
    groups.sort(key=lambda g: -max(len(t.train_x) for t in g[2]) * (g[1] in ("M2", "M4")))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        done = {(g[0], g[1]): rows for g, rows in zip(groups, pool.map(evaluate_group, groups))}
    rows = [r for d in domains for m in methods for r in done.get((d, m), [])]
    return sorted(rows, key=lambda r: (DOMAINS.index(r["Domain"]), r["Task"], r["Model"], methods.index(r["Method"])))


def summarize(rows: list[dict]) -> list[dict]:
    """Per domain and method: median RMSE, and the tasks (count, fraction) on which the method has the lowest RMSE
    among the methods run. Equal RMSEs (to 1e-9, as M2 and M4 are where M4's a is 0) are a win for each."""
    by_task = defaultdict(dict)
    for r in rows:
        if r["RMSE"] != "":
            by_task[(r["Domain"], r["Task"], r["Model"])][r["Method"]] = r["RMSE"]
    out = []
    for domain in DOMAINS:
        tasks = {k: v for k, v in by_task.items() if k[0] == domain}
        if not tasks:
            continue
        methods = sorted({m for v in tasks.values() for m in v})
        winners = [m for v in tasks.values() for m in v if v[m] <= min(v.values()) * (1 + 1e-9)]
        for m in methods:
            values = [v[m] for v in tasks.values() if m in v]
            out.append({"Domain": domain, "Method": m, "tasks": len(values), "median_RMSE": float(np.median(values)),
                        "wins": winners.count(m), "win_fraction": winners.count(m) / len(tasks)})
    return out


def write_rows(rows: list[dict], path: Path, columns: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def plot_summary(summary: list[dict], out: Path) -> Path:
    from reuse.plot import save  # selects the headless backend before pyplot loads

    import matplotlib.pyplot as plt

    domains = [d for d in DOMAINS if any(s["Domain"] == d for s in summary)]
    methods = sorted({s["Method"] for s in summary})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        values = {s["Domain"]: s for s in summary if s["Method"] == m}
        xs = np.arange(len(domains)) + i * width
        axes[0].bar(xs, [values.get(d, {}).get("median_RMSE", 0) for d in domains], width, label=m)
        axes[1].bar(xs, [values.get(d, {}).get("win_fraction", 0) for d in domains], width, label=m)
    for ax, title in zip(axes, ("median RMSE of log predictions (lower is better)", "fraction of tasks won")):
        ax.set_xticks(np.arange(len(domains)) + 0.4 - width / 2, domains)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[1].legend(fontsize=8)
    return save(fig, out)
