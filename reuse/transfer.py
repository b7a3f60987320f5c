"""Effective data transferred (Hernandez et al. 2021, "Scaling Laws for Transfer"; Kim 2021 for languages).

For a run that starts from something (a pre-trained checkpoint, or a smaller model grown into this one) and trains
on D_F target tokens to loss L, the effective data D_E is how many tokens the same model size needs from scratch to
reach L, and D_T = D_E - D_F is the data the start was worth. D_E comes from inverting the from-scratch
loss-vs-data curve of the same size by monotone interpolation in log-log space: with a handful of scratch points a
fitted law would extrapolate its own shape, while interpolation claims nothing outside the measured range. A loss
below every scratch point has no data-equivalent inside that range: D_E is reported as a lower bound (marker `>=`),
never extrapolated; a loss above every scratch point gives an upper bound (`<=`).

    python -m reuse.transfer results.csv [--data-column data_tokens] [--loss best_log_ppl] [--out transfer.csv]

The table needs `parameters`, `method` (`scratch` and any other), the data column (target tokens D) and a loss.
Rows with an exact D_T > 0 are fitted to D_T = k D_F^alpha N^beta by least squares in log space, with 95% intervals.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from reuse.results import ResultsError, read_results


class TransferError(ValueError):
    """A table that cannot be analysed; the message says what is missing."""


def effective_data(scratch_d, scratch_loss, loss: float) -> tuple[float, str]:
    """(D_E, marker): marker '' for an interpolated value, '>=' or '<=' for a bound at the measured range's edge."""
    d, l = np.asarray(scratch_d, dtype=np.float64), np.asarray(scratch_loss, dtype=np.float64)
    if len(np.unique(d)) < 2:
        raise TransferError(f"{len(np.unique(d))} scratch data size(s): at least 2 are needed to invert the curve")
    order = np.argsort(d)
    d, l = d[order], l[order]
    # More data never hurts the best achievable loss: a noisy rise is flattened (running minimum) so the curve
    # is monotone and the inversion unique.
    l = np.minimum.accumulate(l)
    if loss < l[-1]:
        return float(d[-1]), ">="
    if loss > l[0]:
        return float(d[0]), "<="
    log_l, log_d = np.log(l), np.log(d)
    # np.interp needs increasing x: the loss falls with data, so reverse. Flat stretches take their smallest D.
    keep = np.concatenate([[True], np.diff(log_l) < 0])
    return float(np.exp(np.interp(np.log(loss), log_l[keep][::-1], log_d[keep][::-1]))), ""


def analyse(rows: list[dict], data_column: str = "training_tokens", loss: str = "final_log_ppl") -> list[dict]:
    """One output row per transferred run (any method but scratch and pretrain): D_F, D_E (with its marker), D_T,
    D_F / D_E. Runs are compared with scratch runs of the same size and the same `target` (language), if given."""
    for r in rows:
        if r["method"] != "pretrain" and not (np.isfinite(r[data_column]) and np.isfinite(r[loss])):
            # A diverged run's NaN would make the scratch curve's running minimum NaN and its D_T a silent 0.
            raise TransferError(f"run {r.get('run_id') or '?'} ({r['method']}) has {data_column} {r[data_column]} "
                                f"and {loss} {r[loss]}: not finite; re-run it or drop its row")
    scratch = defaultdict(list)
    for r in rows:
        if r["method"] == "scratch":
            scratch[(r.get("target", ""), r["parameters"])].append((r[data_column], r[loss]))
    out = []
    for r in rows:
        if r["method"] in ("scratch", "pretrain"):
            continue
        key = (r.get("target", ""), r["parameters"])
        base = {"run_id": r.get("run_id", ""), "method": r["method"], "target": key[0], "parameters": r["parameters"],
                "D_F": r[data_column], "loss": r[loss]}
        if key not in scratch:
            out.append({**base, "marker": "no-scratch",
                        "note": f"no scratch run of {r['parameters']:.0f} parameters on {key[0] or 'this data'}"})
            continue
        points = scratch[key]
        try:
            d_e, marker = effective_data([p[0] for p in points], [p[1] for p in points], r[loss])
        except TransferError as e:
            out.append({**base, "marker": "too-few", "note": str(e)})
            continue
        out.append({**base, "D_E": d_e, "marker": marker, "D_T": d_e - r[data_column],
                    "D_F_over_D_E": r[data_column] / d_e, "note": ""})
    return out


def fit_transfer_law(table: list[dict]) -> dict:
    """D_T = k D_F^alpha N^beta on rows with an exact, positive D_T; estimates with 95% intervals."""
    rows = [r for r in table if r.get("marker") == "" and r.get("D_T", 0) > 0]
    if len(rows) < 4:
        raise TransferError(f"{len(rows)} runs with an exact positive D_T: at least 4 are needed to fit k, alpha, beta")
    d_f = np.array([r["D_F"] for r in rows])
    n = np.array([r["parameters"] for r in rows])
    y = np.log([r["D_T"] for r in rows])
    design = np.stack([np.ones_like(y), np.log(d_f), np.log(n)], axis=1)
    if np.linalg.matrix_rank(design) < 3:
        raise TransferError("D_F and N must each take at least two values, not in lockstep, to separate alpha and beta")
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    dof = max(len(y) - 3, 1)
    sigma2 = float(np.sum((design @ coef - y) ** 2)) / dof
    se = np.sqrt(np.diag(sigma2 * np.linalg.inv(design.T @ design)))
    from scipy.stats import t

    q = t.ppf(0.975, dof)
    log_k, alpha, beta = coef
    return {"k": float(np.exp(log_k)), "k_low": float(np.exp(log_k - q * se[0])),
            "k_high": float(np.exp(log_k + q * se[0])), "alpha": float(alpha), "alpha_low": float(alpha - q * se[1]),
            "alpha_high": float(alpha + q * se[1]), "beta": float(beta), "beta_low": float(beta - q * se[2]),
            "beta_high": float(beta + q * se[2]), "runs": len(rows)}


def plot_transfer(rows: list[dict], table: list[dict], out: Path, data_column: str, loss: str) -> Path:
    """Loss against D for scratch and non-scratch runs per model size, D_T drawn as an arrow to the scratch curve;
    D_F / D_E against parameters per D_F; and, when the table has `train_flops`, loss against training compute."""
    from reuse.plot import save  # selects the headless backend before pyplot loads

    import matplotlib.pyplot as plt

    with_compute = all(r.get("train_flops") not in (None, "") for r in rows)
    fig, axes = plt.subplots(1, 3 if with_compute else 2, figsize=(16 if with_compute else 11, 4.5))
    ax, ax2 = axes[0], axes[1]
    sizes = sorted({r["parameters"] for r in rows})
    targets = sorted({r.get("target", "") for r in rows})
    for i, n in enumerate(sizes):
        colour = f"C{i}"
        for j, target in enumerate(targets):
            pts = sorted((r[data_column], r[loss]) for r in rows if r["parameters"] == n
                         and r["method"] == "scratch" and r.get("target", "") == target)
            if pts:
                ax.plot(*zip(*pts), (":", "--", "-.")[j % 3] + "*", color=colour,
                        label=f"{n / 1e6:.2f}M {target} scratch".replace("  ", " "))
        for t in table:
            if t["parameters"] == n and "D_E" in t:
                exact = t["marker"] == ""  # bounds are drawn hollow
                ax.plot(t["D_F"], t["loss"], "o", color=colour, markerfacecolor=colour if exact else "none")
                ax.annotate("", (t["D_E"], t["loss"]), (t["D_F"], t["loss"]),
                            arrowprops={"arrowstyle": "->", "color": colour, "lw": 0.8,
                                        "linestyle": "-" if exact else "--"})
    ax.set_xscale("log")
    ax.set_xlabel("target data D (tokens)")
    ax.set_ylabel("loss")
    ax.set_title("dots: transferred/reused runs (hollow: D_E only bounded); arrows: D_T", fontsize=9)
    ax.legend(fontsize=7)
    for j, (d_f, target) in enumerate(sorted({(t["D_F"], t.get("target", "")) for t in table if "D_E" in t})):
        pts = sorted((t["parameters"], t["D_F_over_D_E"], t["marker"]) for t in table
                     if t["D_F"] == d_f and t.get("target", "") == target and "D_E" in t)
        colour = f"C{j}"
        ax2.plot([p[0] / 1e6 for p in pts], [p[1] for p in pts], "-", color=colour,
                 label=f"{target} D_F = {d_f:.3g}".strip())
        for n, ratio, marker in pts:  # D_E >= x means D_F / D_E <= y: a downward triangle, and vice versa
            ax2.plot(n / 1e6, ratio, {"": "o", ">=": "v", "<=": "^"}[marker], color=colour,
                     markerfacecolor=colour if marker == "" else "none")
    ax2.set_xscale("log")
    ax2.set_xlabel("parameters (M)")
    ax2.set_ylabel("D_F / D_E (fraction of effective data from the target)")
    ax2.set_title("hollow triangles: bounds (v: at most, ^: at least)", fontsize=9)
    ax2.legend(fontsize=7)
    if with_compute:
        ax3 = axes[2]
        for method, marker in (("scratch", "*"), ("finetune", "o"), ("reuse", "o")):
            pts = [(float(r["train_flops"]), r[loss]) for r in rows if r["method"] == method]
            if pts:
                ax3.plot(*zip(*pts), marker, linestyle="none", label=method, alpha=0.8)
        ax3.set_xscale("log")
        ax3.set_xlabel("training FLOPs of the run (pre-training not included)")
        ax3.set_ylabel("loss")
        ax3.legend(fontsize=7)
    for a in axes:
        a.grid(alpha=0.3)
    return save(fig, out)


def read_table(path: Path, data_column: str, loss: str) -> list[dict]:
    """A sweep's results table (reuse.results: one schema for every reader), with the columns used here numeric."""
    try:
        rows = read_results(path, needed=("parameters", "method", data_column, loss))
    except ResultsError as e:
        raise TransferError(str(e)) from None
    for n, r in enumerate(rows, 2):
        for key in ("parameters", data_column, loss):
            try:
                r[key] = float(r[key])  # also a column the schema does not know as a number
            except (TypeError, ValueError):
                raise TransferError(f"{path}:{n}: {key} is {r[key]!r}, not a number") from None
    return rows


def write_transfer(results: Path, data_column: str = "data_tokens", loss: str = "best_log_ppl",
                   out: Path | None = None) -> Path:
    """transfer.csv (and its figure) beside a results table, printing each run's D_T; raises TransferError."""
    rows = read_table(results, data_column, loss)
    table = analyse(rows, data_column, loss)
    out = out or results.with_name("transfer.csv")
    columns = ["run_id", "method", "target", "parameters", "D_F", "loss", "D_E", "marker", "D_T", "D_F_over_D_E",
               "note"]
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(table)
    for t in table:
        if "D_E" in t:
            print(f"{t['run_id']:28s} N={t['parameters']:.3g} D_F={t['D_F']:.3g} D_E={t['marker']}{t['D_E']:.4g} "
                  f"D_T={t['marker']}{t['D_T']:.3g}")
        else:
            print(f"{t['run_id']:28s} N={t['parameters']:.3g} D_F={t['D_F']:.3g} {t['marker']}: {t['note']}")
    try:
        law = fit_transfer_law(table)
        print("D_T = k D_F^alpha N^beta: " + ", ".join(f"{k}={v:.3g}" for k, v in law.items()))
    except TransferError as e:
        print(f"transfer law not fitted: {e}")
    print(plot_transfer(rows, table, out.with_suffix(".png"), data_column, loss))
    return out


def main(argv: list[str] | None = None) -> None:
    from reuse.cli import Parser, output_file

    parser = Parser(prog="python -m reuse.transfer", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("--data-column", default="data_tokens",
                        help="column with the target data size D in tokens (a sweep's data_tokens: unique tokens)")
    parser.add_argument("--loss", default="best_log_ppl", help="best_log_ppl: every run at its best, as Kim (2021)")
    parser.add_argument("--out", type=output_file, help="output table (default transfer.csv beside the input)")
    args = parser.parse_args(argv)
    try:
        write_transfer(args.results, args.data_column, args.loss, args.out)
    except TransferError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
