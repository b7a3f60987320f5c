"""Figures from a results table (`results.csv` of reuse.sweep, or rows from reuse.evaluate).

    python -m reuse.plot results/demo/results.csv --out results/demo/curves.png [--loss best_log_ppl]

Figure 4a of the paper: log-perplexity against parameters (millions), one curve per data fraction; from scratch as
dotted lines with stars on a GnBu ramp, reused as solid lines with dots on a YlOrBr ramp, legend "Data Frac." in
percent. Also loss against training FLOPs and loss against fraction. Each figure is written as PNG and PDF.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

from reuse.results import ResultsError, by_operator, read_results  # noqa: E402
from reuse.stats import t_interval  # noqa: E402

STYLE = {"scratch": ("GnBu", ":", "*", "scratch"), "reuse": ("YlOrBr", "-", "o", "reuse")}


def curves(rows: list[dict], x: str, loss: str) -> dict:
    """(method, fraction) -> sorted [(x, mean loss over seeds, 95% half-width or None)]. At the smallest model
    reuse coincides with scratch, so the reuse curve (each operator's, in an operator study) starts from that
    scratch point, as in the paper. Rows without
    a finite loss are left out, and counted in the figure's caption by the caller."""
    seeds = defaultdict(list)
    for row in rows:
        if isinstance(row.get(loss), float) and math.isfinite(row[loss]):
            seeds[(row["method"], row["fraction"], row[x])].append(row[loss])
    groups = defaultdict(list)
    for (method, fraction, at), values in seeds.items():
        groups[(method, fraction)].append((at, *t_interval(values)))
    for (method, fraction), points in list(groups.items()):
        if method.startswith("reuse") and x == "parameters" and ("scratch", fraction) in groups:
            first = min(groups[("scratch", fraction)])
            if first[0] < min(points)[0]:
                points.append(first)
    return {k: sorted(v) for k, v in groups.items()}


def dropped(rows: list[dict], loss: str) -> list[str]:
    """Runs without a finite loss: a plot must say it left them out."""
    return [str(r.get("run_id", "?")) for r in rows
            if not (isinstance(r.get(loss), float) and math.isfinite(r[loss]))]


def ramp(method: str, fractions: list[float], fraction: float):
    cmap = plt.get_cmap(STYLE[method][0])
    i = sorted(fractions).index(fraction)
    return cmap(0.45 + 0.5 * i / max(1, len(fractions) - 1))


def draw(ax, rows: list[dict], x: str, loss: str, xscale_millions: bool) -> None:
    groups = curves(rows, x, loss)
    fractions = sorted({f for _, f in groups})
    for (method, fraction), points in sorted(groups.items()):
        # Methods without a style (the operators of an operator study, `reuse msg`) get the colour cycle's next.
        colour_map, line, marker, label = STYLE.get(method, ("Greys", "--", "s", method))
        xs = [p[0] / 1e6 if xscale_millions else p[0] for p in points]
        errors = [p[2] or 0.0 for p in points]  # 95% t interval over seeds; none for a single seed
        ax.errorbar(xs, [p[1] for p in points], yerr=errors if any(errors) else None, linestyle=line,
                    marker=marker, markersize=7, capsize=3,
                    color=ramp(method, fractions, fraction) if method in STYLE else None,
                    label=f"{fraction * 100:g}% ({label})")
    missing = dropped(rows, loss)
    if missing:
        ax.annotate(f"{len(missing)} run(s) without a finite {loss} left out: {', '.join(missing[:3])}",
                    (0.01, 0.01), xycoords="axes fraction", fontsize=7, color="crimson")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(title="Data Frac.", fontsize=8)
    else:  # nothing to draw (a grid without test_data has no test scores): say so, not an empty frame
        ax.annotate(f"no run has {loss}", (0.5, 0.5), xycoords="axes fraction", ha="center", color="crimson")


def figure_4a(rows: list[dict], out: str | Path, loss: str = "final_log_ppl", baseline: float | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    draw(ax, rows, "parameters", loss, xscale_millions=True)
    if baseline is not None:
        ax.axhline(baseline, color="grey", linewidth=1, linestyle="--")
        ax.annotate("unigram baseline", (ax.get_xlim()[0], baseline), fontsize=8, color="grey",
                    xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel("Parameters (M)")
    ax.set_ylabel("Log-perplexity" + (" (best valid)" if loss.startswith("best") else ""))
    ax.set_title("Scaling with model reuse (Figure 4a)")
    return save(fig, out)


def figure_protocols(rows: list[dict], out: str | Path, baseline: float | None = None) -> Path:
    """Figure 4a under both protocols, from the same runs: the last checkpoint on valid (the paper's) beside the
    best checkpoint on test (early stopping), parameters on a log axis as in the paper."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, (loss, title) in zip(axes, [("valid_last", "Paper protocol: last checkpoint, valid"),
                                        ("test_best", "Early stopping: best checkpoint, test")]):
        draw(ax, rows, "parameters", loss, xscale_millions=True)
        ax.set_xscale("log")
        for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):  # 0.5, not 5 x 10^-1
            axis(matplotlib.ticker.FormatStrFormatter("%g"))
        if baseline is not None:
            ax.axhline(baseline, color="grey", linewidth=1, linestyle="--")
            ax.annotate("unigram baseline", (ax.get_xlim()[0], baseline), fontsize=8, color="grey",
                        xytext=(4, 3), textcoords="offset points")
        ax.set_xlabel("Parameters (M)")
        ax.set_title(title)
    axes[0].set_ylabel("Log-perplexity (mean over seeds, 95% interval)")
    return save(fig, out)


def figure_flops(rows: list[dict], out: str | Path, loss: str = "final_log_ppl") -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    # chain_flops (sweeps since seeds were added) counts the parents a reused model was grown from as well.
    chain = all(isinstance(r.get("chain_flops"), float) for r in rows)
    draw(ax, rows, "chain_flops" if chain else "train_flops", loss, xscale_millions=False)
    ax.set_xscale("log")
    ax.set_xlabel("Training FLOPs, the reused model's whole chain included" if chain else
                  "Training FLOPs (this run only; a reused model's parent runs not included)")
    ax.set_ylabel("Log-perplexity")
    return save(fig, out)


def figure_fraction(rows: list[dict], out: str | Path, loss: str = "final_log_ppl") -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    seeds = defaultdict(list)
    for row in rows:
        if isinstance(row.get(loss), float) and math.isfinite(row[loss]):
            seeds[(row["method"], row["parameters"], row["fraction"])].append(row[loss])
    by_model = defaultdict(list)
    for (method, params, fraction), values in seeds.items():
        by_model[(method, params)].append((fraction, *t_interval(values)))
    for (method, params), points in sorted(by_model.items()):
        _, line, marker, _ = STYLE.get(method, ("Greys", "--", "s", method))
        points.sort()
        errors = [p[2] or 0.0 for p in points]
        ax.errorbar([p[0] * 100 for p in points], [p[1] for p in points], yerr=errors if any(errors) else None,
                    linestyle=line, marker=marker, capsize=3, label=f"{params / 1e6:.2f}M {method}")
    ax.set_xscale("log")
    ax.set_xlabel("Data fraction (%)")
    ax.set_ylabel("Log-perplexity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, out)


def save(fig, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=150)
    fig.savefig(out.with_suffix(".pdf"))
    plt.close(fig)
    return out.with_suffix(".png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m reuse.plot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, help="Figure 4a path (default: curves.png beside the table)")
    parser.add_argument("--loss", default="final_log_ppl", choices=("final_log_ppl", "best_log_ppl"))
    parser.add_argument("--baseline", type=float, help="draw this loss (e.g. the unigram baseline) as a line")
    args = parser.parse_args(argv)
    try:
        rows = by_operator(read_results(args.results))  # an operator study: one curve per operator
    except ResultsError as e:
        sys.exit(f"error: {e}")
    if args.loss not in rows[0]:
        sys.exit(f"error: {args.results} has no column {args.loss}")
    out = args.out or args.results.with_name("curves.png")
    written = [figure_4a(rows, out, args.loss, args.baseline),
               figure_flops(rows, out.with_name(out.stem + "_flops.png"), args.loss),
               figure_fraction(rows, out.with_name(out.stem + "_fraction.png"), args.loss)]
    print("\n".join(str(p) for p in written))


if __name__ == "__main__":
    main()
