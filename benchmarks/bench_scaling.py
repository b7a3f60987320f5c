"""Time of the whole 92-task extrapolation benchmark for M1-M4 (and BNSL), and the per-domain summary.

    python benchmarks/bench_scaling.py [--methods M1 M2 M3 M4 BNSL] [--procedure reference|grid]

Peer, measured in the same run: the same fits in one process, one (domain, method) batch after another
(run_benchmark spreads the batches over every core). The authors' own code (google-research,
revisiting_neural_scaling_laws) is not run here: it steps one curve at a time, 1-35 s per M2/M4 fit on this machine.
"""

import argparse
import time
import warnings

from reuse.scaling.benchmark import DOMAINS, evaluate_group, load_tasks, run_benchmark, summarize


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", nargs="+", default=["M1", "M2", "M3", "M4"])
    parser.add_argument("--procedure", default="reference", choices=("reference", "grid"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    start = time.perf_counter()
    rows = run_benchmark(args.methods, procedure=args.procedure)
    parallel = time.perf_counter() - start
    start = time.perf_counter()
    tasks = load_tasks()
    single = [r for d in DOMAINS for m in args.methods
              for r in evaluate_group((d, m, [t for t in tasks if t.domain == d], args.procedure))]
    serial = time.perf_counter() - start
    key = lambda r: (r["Domain"], r["Task"], r["Model"], r["Method"])  # noqa: E731
    assert {key(r): r["RMSE"] for r in rows} == {key(r): r["RMSE"] for r in single}, "parallel and serial differ"
    print(f"{len(rows)} fits ({', '.join(args.methods)} on 92 tasks, {args.procedure}): {parallel:.1f} s on all "
          f"cores, {serial:.1f} s in one process ({serial / parallel:.2f}x)")
    print(f"{'domain':8s}{'method':8s}{'median RMSE':>12s}{'won':>10s}")
    for s in summarize(rows):
        print(f"{s['Domain']:8s}{s['Method']:8s}{s['median_RMSE']:12.4f}{s['wins']:>5d}/{s['tasks']:<4d}")


if __name__ == "__main__":
    main()
