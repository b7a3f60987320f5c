"""Both protocols from the same runs, side by side: the paper's (the last checkpoint of a fixed budget, scored on
the whole valid split) and early stopping's (the checkpoint at the best periodic valid loss, scored on the whole
test split, which took no part in choosing it). The numbers are the end-of-run scores of reuse.heldout.

Per fraction and protocol it answers, with 95% t intervals over seeds:
- does the loss from scratch turn upward with width? Each step to the next width is paired by seed (a seed fixes
  the data subset); a step *rises* when its interval lies above 0;
- does reuse remove it? The reuse curve starts at the shared smallest scratch model, as in Figure 4a;
- the reuse gain per width (scratch - reuse, paired by seed);
- each method's train/valid gap: valid far above train is memorisation, both high is a model that never trained.
`analyse` computes; `protocol_lines` renders.
"""

from __future__ import annotations

import math

from reuse.compare import groups, is_reuse, paired_gains
from reuse.stats import fmt, t_interval

PROTOCOLS = {"paper": ("valid_last", "last checkpoint, valid"), "early-stop": ("test_best", "best checkpoint, test")}


def has_scores(rows: list[dict], column: str) -> list[dict]:
    return [r for r in rows if isinstance(r.get(column), float) and math.isfinite(r[column])]


def width_steps(rows: list[dict], column: str, method: str, fraction: float) -> list[dict]:
    """Consecutive widths of one method's curve at one fraction: the loss change to the next width, paired by
    seed. A reuse curve starts at the smallest scratch model of the same seed."""
    at = [r for r in has_scores(rows, column) if r["fraction"] == fraction]
    scratch = [r for r in at if r["method"] == "scratch"]
    curve = [r for r in at if r["method"] == method]
    if is_reuse(method) and scratch:
        smallest = min(r["parameters"] for r in scratch)
        curve += [r for r in scratch if r["parameters"] == smallest]
    by = {(r["parameters"], r["seed"]): r[column] for r in curve}
    widths = sorted({p for p, _ in by})
    steps = []
    for small, large in zip(widths, widths[1:]):
        seeds = sorted(s for p, s in by if p == small and (large, s) in by)
        if seeds:
            steps.append({"from": small, "to": large, "seeds": seeds,
                          "change": t_interval([by[(large, s)] - by[(small, s)] for s in seeds])})
    return steps


def rises(step: dict) -> bool:
    mean, half = step["change"]
    return mean > 0 and (half is None or mean - half > 0)


def removal(scratch_steps: list[dict], reuse_steps: list[dict], gains: list[dict]) -> str:
    """Words for whether reuse removes the upturn of the scratch curve."""
    up = [s for s in scratch_steps if rises(s)]
    if not up:
        return "nothing to remove: scratch does not turn upward"
    if any(rises(s) for s in reuse_steps):
        return "no: the reuse curve rises too"
    lower = {g["parameters"] for g in gains if g["verdict"] == "yes: reuse is lower"}
    if all(s["to"] in lower for s in up):
        return "yes: reuse does not rise, and it is lower than scratch where scratch rises"
    return "partly: reuse does not rise, but where scratch rises reuse is not distinguishably lower"


def analyse(rows: list[dict]) -> list[dict]:
    """One entry per (fraction, protocol, reuse method): the steps of both curves, the gains and the verdicts."""
    out = []
    methods = sorted({r["method"] for r in rows if is_reuse(r["method"])}) or ["reuse"]
    for fraction in sorted({r["fraction"] for r in rows}):
        for protocol, (column, label) in PROTOCOLS.items():
            scratch = width_steps(rows, column, "scratch", fraction)
            for method in methods:
                reuse = width_steps(rows, column, method, fraction)
                gains = [g for g in paired_gains(has_scores(rows, column), column)
                         if g["fraction"] == fraction and g["method"] == method]
                out.append({"fraction": fraction, "protocol": protocol, "label": label, "method": method,
                            "scratch_steps": scratch, "reuse_steps": reuse, "gains": gains,
                            "turns_upward": any(rises(s) for s in scratch),
                            "removal": removal(scratch, reuse, gains)})
    return out


def gaps(rows: list[dict], fraction: float, method: str, checkpoint: str) -> tuple[float, float | None] | None:
    """valid - train of one checkpoint, over a method's runs at a fraction (every width)."""
    values = [r[f"valid_{checkpoint}"] - r[f"train_{checkpoint}"]
              for r in has_scores(has_scores(rows, f"valid_{checkpoint}"), f"train_{checkpoint}")
              if r["fraction"] == fraction and r["method"] == method]
    return t_interval(values) if values else None


def describe_steps(steps: list[dict]) -> str:
    if not steps:
        return "no two widths to compare"
    words = []
    for s in steps:
        mean, half = s["change"]
        kind = "rises" if rises(s) else ("falls" if half is not None and mean + half < 0 else
                                          "one seed" if half is None else "flat within its interval")
        words.append(f"{s['from'] / 1e6:.2f}M -> {s['to'] / 1e6:.2f}M {fmt(mean, half)} ({kind})")
    return "; ".join(words)


def protocol_lines(rows: list[dict]) -> list[str]:
    """The report's section on both protocols; empty for a table without end-of-run scores."""
    if not has_scores(rows, "valid_last"):
        return []
    lines = ["", "## Both protocols from the same runs", "",
             "Each run trained its whole budget; at its end its last checkpoint and its best one (at the best "
             "periodic valid loss) were each scored once with the original protocol on the whole valid and test "
             "splits and on a fixed sample of its training blocks. **Paper protocol**: the last checkpoint on "
             "valid, as the paper reported. **Early stopping**: the best checkpoint on test (its valid figure is "
             "biased low: valid chose it). Means over seeds ± 95% t interval.", "",
             "| fraction | model | params (M) | method | seeds | paper: last, valid | last, test | "
             "early stop: best, test | best, valid (chose it) | train, last | train, best | epochs past best |",
             "| ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for (fraction, parameters, method), runs in groups(has_scores(rows, "valid_last")).items():
        cells = [fmt(*t_interval([r[c] for r in runs])) if all(isinstance(r.get(c), float) for r in runs) else ""
                 for c in ("valid_last", "test_last", "test_best", "valid_best", "train_last", "train_best")]
        past = [r["epochs_past_best"] for r in runs if isinstance(r.get("epochs_past_best"), float)]
        past_cell = f"{min(past):.0f}-{max(past):.0f}" if past else ""
        lines.append(f"| {fraction:g} | {runs[0]['model']} | {parameters / 1e6:.2f} | {method} | {len(runs)} | "
                     + " | ".join(cells) + f" | {past_cell} |")
    for entry in analyse(rows):
        fraction, method = entry["fraction"], entry["method"]
        if not has_scores(rows, PROTOCOLS[entry["protocol"]][0]):
            lines += ["", f"**Fraction {fraction:g}, {entry['protocol']} protocol:** no run has "
                          f"`{PROTOCOLS[entry['protocol']][0]}` (a grid without `test_data` has no test scores)."]
            continue
        lines += ["", f"**Fraction {fraction:g}, {entry['protocol']} protocol ({entry['label']}), {method}:**", "",
                  f"- scratch turns upward with width: **{'yes' if entry['turns_upward'] else 'no'}** "
                  f"(paired steps: {describe_steps(entry['scratch_steps'])});",
                  f"- {method} from the smallest scratch model: {describe_steps(entry['reuse_steps'])};",
                  f"- does reuse remove the upturn: **{entry['removal']}**;"]
        for g in entry["gains"]:
            lines.append(f"- gain at {g['parameters'] / 1e6:.2f}M (scratch - reuse, {len(g['seeds'])} seeds): "
                         f"{fmt(*g['gain'])} ({g['verdict']});")
    lines += ["", "Train/valid gap (valid - train of the same checkpoint, every width of a method, ± 95% t interval; "
              "far above 0: memorisation):", "", "| fraction | method | last checkpoint | best checkpoint |",
              "| ---: | --- | ---: | ---: |"]
    for fraction in sorted({r["fraction"] for r in rows}):
        for method in sorted({r["method"] for r in rows}):
            last, best = gaps(rows, fraction, method, "last"), gaps(rows, fraction, method, "best")
            if last or best:
                lines.append(f"| {fraction:g} | {method} | {fmt(*last) if last else ''} | "
                             f"{fmt(*best) if best else ''} |")
    return lines
