"""Comparisons over seeds, shared by the report and the protocol analysis: runs grouped per (fraction, width,
method), the reuse gain paired by seed with its interval, and a loss curve over width in words."""

from __future__ import annotations

from collections import defaultdict

from reuse.stats import t_interval

LOSS = "best_log_ppl"  # the periodic valid loss that chose best/ (the early-stopping run's kept model)


def groups(rows: list[dict]) -> dict[tuple, list[dict]]:
    """(fraction, parameters, method) -> its runs, one per seed."""
    out = defaultdict(list)
    for r in rows:
        out[(r["fraction"], r["parameters"], r["method"])].append(r)
    return dict(sorted(out.items()))


def is_reuse(method: str) -> bool:
    """`reuse`, or one operator's runs in an operator study (`reuse msg`, reuse.results.by_operator)."""
    return method == "reuse" or method.startswith("reuse ")


def paired_gains(rows: list[dict], loss: str = LOSS) -> list[dict]:
    """Per fraction, reused width and reuse method (one per operator in an operator study): the gain
    scratch - reuse over the seeds that have both, with its interval."""
    by_key = {(r["fraction"], r["parameters"], r["method"], r["seed"]): r[loss] for r in rows}
    out = []
    for fraction, parameters, method in sorted({(r["fraction"], r["parameters"], r["method"]) for r in rows}):
        if not is_reuse(method):
            continue
        seeds = sorted(s for (f, p, m, s) in by_key if (f, p, m) == (fraction, parameters, method)
                       and (fraction, parameters, "scratch", s) in by_key)
        if not seeds:
            continue
        gains = [by_key[(fraction, parameters, "scratch", s)] - by_key[(fraction, parameters, method, s)]
                 for s in seeds]
        mean, half = t_interval(gains)
        if half is None:
            verdict = "one seed: no interval, not evidence"
        elif mean - half > 0:
            verdict = "yes: reuse is lower"
        elif mean + half < 0:
            verdict = "yes: scratch is lower"
        else:
            verdict = "no: the interval contains 0"
        out.append({"fraction": fraction, "parameters": parameters, "method": method, "seeds": seeds,
                    "gain": (mean, half),
                    "scratch": t_interval([by_key[(fraction, parameters, "scratch", s)] for s in seeds]),
                    "reuse": t_interval([by_key[(fraction, parameters, method, s)] for s in seeds]),
                    "verdict": verdict})
    return out


def curve_shape(points: list[tuple[float, float]]) -> str:
    """Words for a loss curve over model size [(parameters, mean loss)]."""
    points = sorted(points)
    if len(points) < 2:
        return "a single width"
    rises = [f"{points[i][0] / 1e6:.2f}M -> {points[i + 1][0] / 1e6:.2f}M (+{points[i + 1][1] - points[i][1]:.3f})"
             for i in range(len(points) - 1) if points[i + 1][1] > points[i][1]]
    if not rises:
        return "falls monotonically with width"
    return "does not fall monotonically: it rises at " + ", ".join(rises)
