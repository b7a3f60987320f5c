"""Scaling-law fits of this project's own results (`results.csv` of reuse.sweep).

Per (method, data fraction): log-perplexity against parameters with each estimator that the number of points can
determine (others are marked, never fitted on too few points), with a bootstrap interval on the exponent c; an
extrapolation check (fit without the largest model, predict it); and the joint L(N, D) fit over the scratch runs,
with D the data fraction (the law's B absorbs the corpus size).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reuse.results import ResultsError
from reuse.results import read_results as read_results_table
from reuse.scaling.estimators import ESTIMATORS, ScalingError
from reuse.scaling.laws import chinchilla_fit

NEEDED = ("parameters", "fraction", "method", "final_log_ppl")


def read_results(path: str | Path, loss: str = "final_log_ppl") -> list[dict]:
    """A sweep's results table (reuse.results: one schema for every reader), with the fitted columns numeric."""
    try:
        rows = read_results_table(path, needed=tuple(dict.fromkeys(NEEDED + (loss,))))
    except ResultsError as e:
        raise ScalingError(f"{e}: is it a reuse.sweep table?") from None
    for r in rows:
        try:
            r["parameters"], r["fraction"], r[loss] = float(r["parameters"]), float(r["fraction"]), float(r[loss])
        except ValueError as e:
            raise ScalingError(f"{path}: run {r.get('run_id', '?')} has a non-numeric value ({e})") from e
    return rows


def bootstrap_exponent(estimator_cls, x, y, n_boot: int, seed: int) -> tuple[float, float] | None:
    """95% percentile interval of c over resamples of the points; None when most resamples cannot be fitted
    (too few distinct points, as with 3 models and a 3-parameter estimator). Resamples are fitted as one batch
    where the estimator has one (`fit_many`: the reference iteration of M2-M4)."""
    rng = np.random.default_rng(seed)
    n_params = estimator_cls().n_params
    resamples = [rng.integers(0, len(x), len(x)) for _ in range(n_boot)]
    resamples = [i for i in resamples if len(np.unique(x[i])) >= n_params]  # the others cannot be fitted
    if len(resamples) < n_boot // 2 or not resamples:
        return None
    estimator = estimator_cls()
    if hasattr(estimator, "fit_many"):
        fitted = estimator.fit_many([x[i] for i in resamples], [y[i] for i in resamples])
    else:
        fitted = [estimator_cls().fit(x[i], y[i]) for i in resamples]
    values = [f.params["c"] for f in fitted]
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def fit_results(rows: list[dict], loss: str = "final_log_ppl", methods=("M1", "M2", "M3", "M4"),
                n_boot: int = 200, seed: int = 0) -> tuple[list[dict], dict | None]:
    from reuse.plot import curves

    if n_boot < 1:
        raise ScalingError(f"{n_boot} bootstrap resamples: at least 1 is needed for an interval")
    table = []
    # A reuse chain starts from the shared smallest scratch model: curves() puts that point on the reuse curve too.
    for (method, fraction), points in sorted(curves(rows, "parameters", loss).items()):
        x, y = np.array([p[0] for p in points]), np.array([p[1] for p in points])
        for name in methods:
            cls = ESTIMATORS[name]
            row = {"method": method, "fraction": fraction, "estimator": name, "points": len(x)}
            if len(x) < cls().n_params:
                table.append({**row, "note": f"{len(x)} points < {cls().n_params} parameters: not fitted"})
                continue
            est = cls().fit(x, y)
            interval = bootstrap_exponent(cls, x, y, n_boot, seed)
            row.update({"c": est.params["c"], "params": " ".join(f"{k}={v:.4g}" for k, v in est.params.items()),
                        "note": "" if interval else "no bootstrap interval: too few distinct points"})
            if interval:
                row["c_low"], row["c_high"] = interval
            if len(x) > cls().n_params:  # extrapolation: fit without the largest model, predict it
                held = cls().fit(x[:-1], y[:-1]).predict(x[-1:])[0]
                row["extrapolation_log_error"] = float(np.log(held) - np.log(y[-1]))
            table.append(row)
    scratch = [r for r in rows if r["method"] == "scratch"]
    joint = None
    if len({(r["parameters"], r["fraction"]) for r in scratch}) >= 5:
        joint = chinchilla_fit([r["parameters"] for r in scratch], [r["fraction"] for r in scratch],
                               [r[loss] for r in scratch])
    return table, joint


def plot_fits(rows: list[dict], table: list[dict], out: Path, loss: str = "final_log_ppl") -> Path:
    from reuse.plot import curves, save  # reuse.plot selects the headless backend before pyplot loads

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for i, ((method, fraction), points) in enumerate(sorted(curves(rows, "parameters", loss).items())):
        x, y = np.array([p[0] for p in points]), np.array([p[1] for p in points])
        colour = f"C{i}"
        ax.plot(x / 1e6, y, "*" if method == "scratch" else "o", color=colour, label=f"{fraction * 100:g}% {method}")
        grid = np.logspace(np.log10(x.min()), np.log10(x.max() * 4), 50)
        for name, style in (("M1", ":"), ("M2", "--"), ("M3", "-.")):
            if len(x) >= ESTIMATORS[name]().n_params:
                try:
                    ax.plot(grid / 1e6, ESTIMATORS[name]().fit(x, y).predict(grid), style, color=colour, lw=1)
                except ScalingError:
                    pass
    ax.set_xscale("log")
    ax.set_xlabel("Parameters (M)")
    ax.set_ylabel("Log-perplexity")
    ax.set_title("Fits per fraction (M1 dotted, M2 dashed, M3 dash-dot), extrapolated 4x")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save(fig, out)
