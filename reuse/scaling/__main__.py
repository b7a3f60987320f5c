"""python -m reuse.scaling benchmark [--methods M1 M2 M3 M4 BNSL] [--domains IC NMT LM BB] [--procedure grid] --out FILE.csv
python -m reuse.scaling fit results/demo/results.csv [--out fits.png]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from reuse.cli import Parser, output_file, positive_int
from reuse.scaling.benchmark import DOMAINS, plot_summary, run_benchmark, summarize, write_rows
from reuse.scaling.estimators import ESTIMATORS, PROCEDURES, ScalingError
from reuse.scaling.fit import fit_results, plot_fits, read_results


def print_table(rows: list[dict], columns: list[str]) -> None:
    print("  ".join(f"{c:>14s}" for c in columns))
    for r in rows:
        cells = [f"{r.get(c, ''):>14.4g}" if isinstance(r.get(c), float) else f"{str(r.get(c, '')):>14s}"
                 for c in columns]
        print("  ".join(cells))


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="python -m reuse.scaling", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)  # subparsers are Parsers too: one-line errors
    bench = sub.add_parser("benchmark", help="extrapolation benchmark of Alabdulmohsin et al. (2022)")
    bench.add_argument("--methods", nargs="+", default=["M1", "M2", "M3", "M4"], help=", ".join(ESTIMATORS))
    bench.add_argument("--domains", nargs="+", default=list(DOMAINS))
    bench.add_argument("--procedure", choices=PROCEDURES, default="reference",
                       help="M2-M4: the authors' alternating iteration (default) or the global grid-then-refine fit")
    bench.add_argument("--out", type=output_file, required=True,
                       help="per-task CSV; the summary and plot go beside it")
    fit = sub.add_parser("fit", help="fit the curves of a reuse.sweep results table")
    fit.add_argument("results", type=Path)
    fit.add_argument("--loss", default="final_log_ppl", choices=("final_log_ppl", "best_log_ppl"))
    fit.add_argument("--bootstrap", type=positive_int, default=200, help="resamples for the interval on c")
    fit.add_argument("--out", type=output_file, help="figure (default: fits.png beside the table)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=RuntimeWarning)  # out-of-domain trial points are scored as inf
    try:
        if args.command == "benchmark":
            start = time.perf_counter()
            rows = run_benchmark(args.methods, args.domains, procedure=args.procedure)
            seconds = time.perf_counter() - start
            write_rows(rows, args.out, ["Domain", "Task", "Model", "Method", "RMSE", "SE", "rounds", "note"])
            summary = summarize(rows)
            columns = ["Domain", "Method", "tasks", "median_RMSE", "wins", "win_fraction"]
            write_rows(summary, args.out.with_name(args.out.stem + "_summary.csv"), columns)
            plot_summary(summary, args.out.with_name(args.out.stem + "_summary.png"))
            print_table(summary, columns)
            print(f"{len(rows)} fits in {seconds:.1f} s -> {args.out}")
        else:
            rows = read_results(args.results, args.loss)
            table, joint = fit_results(rows, args.loss, n_boot=args.bootstrap)
            print_table(table, ["method", "fraction", "estimator", "points", "c", "c_low", "c_high",
                                "extrapolation_log_error", "note"])
            if joint:
                print("L(N, D) = E + A/N^alpha + B/D^beta over scratch runs (D = data fraction): " +
                      ", ".join(f"{k}={v:.4g}" for k, v in joint.items()))
            else:
                print("L(N, D): fewer than 5 distinct (N, D) scratch points, not fitted")
            out = args.out or args.results.with_name("fits.png")
            print(plot_fits(rows, table, out, args.loss))
    except ScalingError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
