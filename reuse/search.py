"""A recipe search (a grid with `search:` variants, e.g. configs/protocol_search.yaml): the whole search as a table,
each method's recipe chosen by one rule declared before running, and the comparison of the methods both at matched
recipes (within a variant) and at each method's chosen recipe.

The rule, the same for both methods: under each protocol, among the *eligible* variants, the one whose mean valid
score over the widths above the smallest (the ones both methods train; the smallest is the shared scratch root) is
lowest. The paper protocol scores the last checkpoint on the whole valid split (valid_last), early stopping the best
checkpoint on it (valid_best). Test scores are listed but never used to choose. Eligible: every one of the method's
runs in the variant reached its best periodic valid loss by half its budget, so it trained at least as long again
past its data limit (the paper's regime; a recipe still improving at the end of the budget does not run the
paper's protocol). When no variant of a method is eligible, the lowest score is taken and flagged.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from reuse.protocols import has_scores
from reuse.results import far_past_best

CRITERIA = {"paper": "valid_last", "early-stop": "valid_best"}
SHOWN = ("valid_last", "valid_best", "test_last", "test_best")


def eligible(rows: list[dict], method: str, variant: str) -> bool:
    runs = [r for r in rows if (r["method"], r["variant"]) == (method, variant)]
    return all(map(far_past_best, runs))


def candidates(rows: list[dict], column: str) -> dict[tuple[str, str], float]:
    """(method, variant) -> the mean of `column` over seeds and the widths above the smallest; only variants that
    trained the method at every one of those widths."""
    scored = has_scores(rows, column)
    widths = sorted({r["parameters"] for r in rows})[1:]
    values = defaultdict(list)
    for r in scored:
        if r["parameters"] in widths:
            values[(r["method"], r["variant"], r["parameters"])].append(r[column])
    out = {}
    for method, variant in {(m, v) for m, v, _ in values}:
        if all((method, variant, w) in values for w in widths):
            out[(method, variant)] = float(np.mean([np.mean(values[(method, variant, w)]) for w in widths]))
    return out


def choose(rows: list[dict]) -> dict[str, dict[str, str]]:
    """protocol -> method -> the chosen variant."""
    chosen = {}
    for protocol, column in CRITERIA.items():
        scores = candidates(rows, column)
        chosen[protocol] = {}
        for method in sorted({m for m, _ in scores}):
            variants = [v for m, v in scores if m == method]
            pool = [v for v in variants if eligible(rows, method, v)] or variants
            chosen[protocol][method] = min(pool, key=lambda v: scores[(method, v)])
    return chosen


def mean_at(rows: list[dict], method: str, variant: str, width: float, column: str) -> float | None:
    values = [r[column] for r in has_scores(rows, column)
              if (r["method"], r["variant"], r["parameters"]) == (method, variant, width)]
    return float(np.mean(values)) if values else None


def search_lines(grid: dict, rows: list[dict]) -> list[str]:
    variants = list(grid["search"])
    lines = [f"# Recipe search `{grid['name']}`", "",
             f"Protocol {grid.get('protocol')}; {len(rows)} runs in {len(variants)} variants "
             f"({', '.join(variants)}), declared in the grid before running and reported in full. The rule, the same "
             f"for both methods: per protocol, the variant with the lowest mean valid score over the widths above "
             f"the smallest (paper: last checkpoint, `valid_last`; early stopping: best checkpoint, `valid_best`). "
             f"Test scores are shown but not used to choose.", "",
             "| variant | method | lr | parent checkpoint | model | seeds | best step / steps | "
             + " | ".join(SHOWN) + " |", "| --- | --- | ---: | --- | --- | ---: | ---: |" + " ---: |" * len(SHOWN)]
    groups = defaultdict(list)
    for r in rows:
        groups[(variants.index(r["variant"]), r["method"], r["parameters"])].append(r)
    for (_, method, _), runs in sorted(groups.items()):
        r = runs[0]
        cells = []
        for column in SHOWN:
            values = [x[column] for x in has_scores(runs, column)]
            cells.append(f"{np.mean(values):.3f}" if values else "")
        lines.append(f"| {r['variant']} | {method} | {r['lr']:g} | {r.get('parent_checkpoint') or '-'} | "
                     f"{r['model']} | {len(runs)} | {', '.join(str(x['best_step']) for x in runs)} / {r['steps']} | "
                     + " | ".join(cells) + " |")
    chosen = choose(rows)
    widths = sorted({r["parameters"] for r in rows})[1:]
    for protocol, column in CRITERIA.items():
        scores = candidates(rows, column)
        lines += ["", f"## {protocol} protocol: chosen by `{column}`", ""]
        for method in sorted({m for m, _ in scores}):
            ranked = sorted((v for m, v in scores if m == method), key=lambda v: scores[(method, v)])
            flag = "" if eligible(rows, method, chosen[protocol][method]) else \
                " (flagged: no variant of this method was eligible)"
            lines.append(f"- {method}: **{chosen[protocol][method]}**{flag} (mean {column} over the larger widths: "
                         + ", ".join(f"{v} {scores[(method, v)]:.3f}"
                                     + ("" if eligible(rows, method, v) else " (not eligible)") for v in ranked)
                         + ")")
        pick = chosen[protocol]
        if "scratch" not in pick or "reuse" not in pick:
            continue
        lines += ["", f"Gain scratch - reuse in `{column}` (above 0: reuse is lower), at matched recipes (both "
                  f"methods from one variant) and at each method's chosen recipe:", "",
                  "| model (M params) | " + " | ".join(f"matched {v}" for v in variants) + " | chosen |",
                  "| ---: |" + " ---: |" * (len(variants) + 1)]
        signs = set()
        for width in widths:
            cells = []
            for v in variants:
                s, u = mean_at(rows, "scratch", v, width, column), mean_at(rows, "reuse", v, width, column)
                cells.append(f"{s - u:+.3f}" if s is not None and u is not None else "")
                if cells[-1]:
                    signs.add(("matched", s > u))
            s = mean_at(rows, "scratch", pick["scratch"], width, column)
            u = mean_at(rows, "reuse", pick["reuse"], width, column)
            cells.append(f"{s - u:+.3f}" if s is not None and u is not None else "")
            if cells[-1]:
                signs.add(("chosen", s > u))
            lines.append(f"| {width / 1e6:.2f} | " + " | ".join(cells) + " |")
        agree = len({won for _, won in signs}) == 1
        lines += ["", "The matched and the chosen comparisons " + ("agree in sign at every width." if agree else
                  "**disagree** in sign somewhere: read both rows, not one.")]
    return lines


def write_search_report(grid: dict, rows: list[dict], results: Path) -> Path:
    path = results / "search.md"
    path.write_text("\n".join(search_lines(grid, rows)) + "\n")
    return path
