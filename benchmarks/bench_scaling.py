"""Time of the whole 92-task extrapolation benchmark for M1-M4 (and BNSL), and the per-domain summary.

    python benchmarks/bench_scaling.py [--methods M1 M2 M3 M4 BNSL]

Peer, measured in the same run: the same fits in one process (run_benchmark spreads tasks over every core). The
original implementation (google-research/revisiting_neural_scaling_laws) is not run here; the issue quotes about
30 minutes for it on this machine.
"""

import argparse
import time
import warnings

from reuse.scaling.benchmark import evaluate_task, load_tasks, run_benchmark, summarize


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", nargs="+", default=["M1", "M2", "M3", "M4"])
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    start = time.perf_counter()
    rows = run_benchmark(args.methods)
    parallel = time.perf_counter() - start
    start = time.perf_counter()
    single = [evaluate_task((task, m)) for task in load_tasks() for m in args.methods]
    serial = time.perf_counter() - start
    assert [r["RMSE"] for r in rows] == [r["RMSE"] for r in single], "parallel and serial fits differ"
    print(f"{len(rows)} fits ({', '.join(args.methods)} on 92 tasks): {parallel:.1f} s on all cores, "
          f"{serial:.1f} s in one process ({serial / parallel:.2f}x)")
    print(f"{'domain':8s}{'method':8s}{'median RMSE':>12s}{'won':>8s}")
    for s in summarize(rows):
        print(f"{s['Domain']:8s}{s['Method']:8s}{s['median_RMSE']:12.4f}{s['win_fraction']:8.0%}")


if __name__ == "__main__":
    main()
