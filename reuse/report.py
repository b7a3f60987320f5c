"""The sweep's report (`report.md`): losses over seeds with 95% intervals, the reuse gain per width and fraction,
the regime of every run, and the compute each method spent.

Intervals are Student t intervals over seeds: mean +- t(0.975, n - 1) * s / sqrt(n), with s the sample standard
deviation. The reuse gain is paired by seed (a seed fixes the data subset, so scratch and reuse of one seed saw the
same blocks): gain_s = scratch_s - reuse_s, and the interval is over the gains. With one seed there is no interval,
and the report says so instead of printing a number that looks like evidence.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from reuse.compare import LOSS, curve_shape, groups, is_reuse, paired_gains
from reuse.grid import PROTOCOLS
from reuse.protocols import protocol_lines
from reuse.results import by_operator, far_past_best
from reuse.stats import fmt, t_interval



def summarise(rows: list[dict], loss: str = LOSS) -> list[dict]:
    """One row per (fraction, model, method): seeds, mean and interval of the best and final losses, and the
    mean epochs, steps and training FLOPs (the reuse chain's, parents included, in chain_flops)."""
    out = []
    for (fraction, parameters, method), runs in groups(rows).items():
        out.append({"fraction": fraction, "parameters": parameters, "method": method, "model": runs[0]["model"],
                    "seeds": sorted(r["seed"] for r in runs), "loss": t_interval([r[loss] for r in runs]),
                    "final": t_interval([r["final_log_ppl"] for r in runs]),
                    "best_step": float(np.mean([r["best_step"] for r in runs])),
                    "epochs": float(np.mean([r["epochs"] for r in runs])),
                    "train_flops": float(np.mean([r["train_flops"] for r in runs])),
                    "chain_flops": float(np.mean([r["chain_flops"] for r in runs])),
                    "regimes": sorted(r["regime"] for r in runs)})
    return out


def shapes(summary: list[dict]) -> list[str]:
    lines = []
    for fraction in sorted({s["fraction"] for s in summary}):
        at = [s for s in summary if s["fraction"] == fraction]
        scratch = [(s["parameters"], s["loss"][0]) for s in at if s["method"] == "scratch"]
        smallest = min(scratch)[0] if scratch else None
        # Each reuse curve (one per operator in an operator study) starts at the shared smallest model, as in
        # Figure 4a.
        reused = []
        for method in sorted({s["method"] for s in at if is_reuse(s["method"])}) or ["reuse"]:
            reuse = [(s["parameters"], s["loss"][0]) for s in at if s["method"] == method] + \
                    [p for p in scratch if p[0] == smallest]
            reused.append(f"with {method} it {curve_shape(reuse)}")
        lines.append(f"- fraction {fraction:g}: from scratch the mean loss {curve_shape(scratch)}"
                     + "".join(f"; {r}" for r in reused) + ".")
    return lines


# paired_gains judges a loss (lower is better); on the negated score its words are about scores.
SCORE_VERDICTS = {"yes: reuse is lower": "yes: reuse scores higher", "yes: scratch is lower": "yes: scratch scores higher"}


def downstream_tasks(rows: list[dict]) -> list[str]:
    """The tasks of the downstream_<task> columns (reuse.downstream), in the order first seen."""
    keys = dict.fromkeys(k for r in rows for k in r if k.startswith("downstream_"))
    return [k[len("downstream_"):] for k in keys if not k.endswith(("_final", "_majority"))]


def downstream_gains(rows: list[dict], task: str) -> list[dict]:
    """Per fraction and reused width: reuse - scratch of the task's score (higher is better), paired by seed, with
    its interval: paired_gains on the negated score, whose gain scratch - reuse is then reuse - scratch."""
    column = f"downstream_{task}"
    negated = [{**r, column: -r[column]} for r in rows if isinstance(r.get(column), float)]
    out = []
    for g in paired_gains(negated, column):
        flip = [(-mean, half) for mean, half in (g["scratch"], g["reuse"])]
        out.append({**g, "scratch": flip[0], "reuse": flip[1], "verdict": SCORE_VERDICTS.get(g["verdict"],
                                                                                            g["verdict"])})
    return out


def downstream_lines(rows: list[dict]) -> list[str]:
    """Per task: its dev score per fraction, width and method over seeds, beside the valid log-perplexity, and the
    paired reuse gain in that score."""
    from reuse.glue import TASKS

    lines = []
    for task in downstream_tasks(rows):
        column = f"downstream_{task}"
        scored = [r for r in rows if isinstance(r.get(column), float)]
        metric = TASKS[task].metric if task in TASKS else "score"
        majority = sorted({round(r[f"{column}_majority"], 4) for r in scored if f"{column}_majority" in r})
        lines += ["", f"## Downstream: {task} ({metric} on its dev set)", "",
                  f"Each run's kept model fine-tuned on `{task}` with a fresh head (`reuse.finetune`, the run's seed); "
                  f"score: the best dev {metric} over the fine-tune's evaluations (final: at its last step). "
                  f"Majority-class baseline on the same dev set: "
                  f"{', '.join(f'{m:.4f}' for m in majority) or 'not recorded'}. {len(scored)} of {len(rows)} runs "
                  f"have a score.", "",
                  "| fraction | model | params (M) | method | seeds | best valid log-ppl | score (best) | final |",
                  "| ---: | --- | ---: | --- | ---: | ---: | ---: | ---: |"]
        for (fraction, parameters, method), runs in groups(scored).items():
            lines.append(f"| {fraction:g} | {runs[0]['model']} | {parameters / 1e6:.2f} | {method} | {len(runs)} | "
                         f"{fmt(*t_interval([r[LOSS] for r in runs]))} | "
                         f"{fmt(*t_interval([r[column] for r in runs]), digits=4)} | "
                         f"{fmt(*t_interval([r[column + '_final'] for r in runs]), digits=4)} |")
        gains = downstream_gains(scored, task)
        if not gains:
            lines += ["", f"No reuse gain in {task}: no width has both a scratch and a reuse score at one seed."]
            continue
        lines += ["", f"Reuse gain in {task} (reuse - scratch, paired by seed; above 0: reuse fine-tunes better):", "",
                  "| fraction | model (M params) | seeds | scratch | reuse | gain (reuse - scratch) | "
                  "distinguishable from 0 |", "| ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for g in gains:
            lines.append(f"| {g['fraction']:g} | {g['parameters'] / 1e6:.2f} | {len(g['seeds'])} | "
                         f"{fmt(*g['scratch'], digits=4)} | {fmt(*g['reuse'], digits=4)} | "
                         f"{fmt(*g['gain'], digits=4)} | {g['verdict']} |")
    return lines


def tokens_saved(runs: list[dict], scratch: list[dict], loss: str = LOSS) -> str:
    """D_T of reused runs of one width (mean over seeds), each run's loss inverted on that width's scratch curve
    (scratch means over seeds per data size, reuse.transfer.effective_data); or why it cannot be computed."""
    from reuse.transfer import TransferError, effective_data

    by_d = defaultdict(list)
    for r in scratch:
        by_d[r["data_tokens"]].append(r[loss])
    if not by_d:
        return "not computed: no scratch run of this width"
    d = sorted(by_d)
    try:
        found = [effective_data(d, [float(np.mean(by_d[x])) for x in d], r[loss]) for r in runs]
    except TransferError as e:
        return f"not computed: {e}"
    markers = {m for _, m in found}
    saved = float(np.mean([d_e - r["data_tokens"] for (d_e, _), r in zip(found, runs)]))
    if len(markers) > 1:
        bounds = sum(m != "" for _, m in found)
        return f"{saved:,.0f} ({bounds} of {len(found)} seeds are bounds at the scratch range's edge)"
    return f"{markers.pop()}{saved:,.0f}"


def operator_lines(rows: list[dict]) -> list[str]:
    """The operator study: per fraction, reused width and growth operator, what growth kept (post-growth loss
    beside the parent's), the losses, the paired gain over scratch and the tokens saved. Empty for a table with
    fewer than two operators."""
    labelled = by_operator(rows)
    if labelled is rows:
        return []
    by_id = {r["run_id"]: r for r in rows}
    gains = {(g["fraction"], g["parameters"], g["method"]): g for g in paired_gains(labelled)}
    lines = ["", "## Growth operators", "",
             "Per fraction, reused width and operator (each operator's chain grown from the one scratch ladder). "
             "After growth: the warm start's valid loss before any step; parent: the best valid loss of the model it "
             "was grown from (the checkpoint it starts from, on the same valid batches); their difference is what "
             "the growth lost (0: the function was preserved). Gain: scratch - reuse of the best valid loss, paired "
             "by seed. Tokens saved: D_T = D_E - D_F, D_E inverted on the same width's scratch runs over fractions "
             "(see the effective-data section). Means over seeds, ± a 95% t interval.", "",
             "| fraction | model (M params) | operator | seeds | after growth | parent | after growth - parent | "
             "best valid | final valid | gain over scratch | distinguishable from 0 | tokens saved (D_T) |",
             "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    for (fraction, parameters, method), runs in groups(labelled).items():
        if not is_reuse(method):
            continue
        started = [r for r in runs if isinstance(r.get("post_growth_log_ppl"), float) and r["parent"] in by_id]
        post = [r["post_growth_log_ppl"] for r in started]
        parent = [by_id[r["parent"]][LOSS] for r in started]
        kept = (f"{fmt(*t_interval(post))} | {fmt(*t_interval(parent))} | "
                f"{fmt(*t_interval([a - b for a, b in zip(post, parent)]))}") if started else "not recorded | | "
        g = gains.get((fraction, parameters, method))
        gain = f"{fmt(*g['gain'])} | {g['verdict']}" if g else "no scratch run at these seeds |"
        scratch = [r for r in rows if r["method"] == "scratch" and r["parameters"] == parameters]
        lines.append(f"| {fraction:g} | {parameters / 1e6:.2f} | {runs[0]['grow_method']} | {len(runs)} | {kept} | "
                     f"{fmt(*t_interval([r[LOSS] for r in runs]))} | "
                     f"{fmt(*t_interval([r['final_log_ppl'] for r in runs]))} | {gain} | "
                     f"{tokens_saved(runs, scratch)} |")
    return lines


def regime_lines_fixed_budget(rows: list[dict]) -> list[str]:
    """Protocol paper: how far past its best periodic valid loss each group of runs trained."""
    past = [r for r in rows if r["regime"] == "past-best"]
    far = [r for r in past if far_past_best(r)]
    lines = [f"Every run trained its fixed budget. {len(past)} of {len(rows)} trained past their best periodic valid "
             f"loss (past-best); {len(far)} of them at least as long again after it as before (budget >= 2x the best "
             f"step), the regime of the paper's scratch models. The others were still improving at the end "
             f"(compute-limited: about data scarcity they say nothing). A reused run whose best step is 0 never "
             f"improved on the model growth gave it.", "",
             "| fraction | method | runs | past-best | budget >= 2x best step | best steps | epochs in all | "
             "epochs past the best |", "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for (fraction, method) in sorted({(r["fraction"], r["method"]) for r in rows}):
        at = [r for r in rows if (r["fraction"], r["method"]) == (fraction, method)]
        epochs = [r["epochs_past_best"] for r in at if isinstance(r.get("epochs_past_best"), float)]
        span = f"{min(epochs):.0f}-{max(epochs):.0f}" if epochs else ""
        lines.append(f"| {fraction:g} | {method} | {len(at)} | {sum(r['regime'] == 'past-best' for r in at)} | "
                     f"{sum(map(far_past_best, at))} | "
                     f"{min(r['best_step'] for r in at)}-{max(r['best_step'] for r in at)} | "
                     f"{min(r['epochs'] for r in at):.0f}-{max(r['epochs'] for r in at):.0f} | {span} |")
    return lines


def write_report(grid: dict, rows: list[dict], results: Path, figure: Path, baseline: float | None,
                 seconds: float, protocols_figure: Path | None = None) -> Path:
    from reuse.transfer import analyse

    raw, rows = rows, by_operator(rows)  # an operator study keeps each operator's runs apart
    several = rows is not raw
    summary = summarise(rows)
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"# Sweep `{grid['name']}`", "",
             f"{len(rows)} runs: models {', '.join(Path(m).stem for m in grid['models'])}; fractions "
             f"{', '.join(f'{float(f):g}' for f in grid['fractions'])}; methods {', '.join(grid['methods'])}"
             f"{'; growth operators ' + ', '.join(grid['operators']) if grid.get('operators') else ''}; "
             f"seeds {', '.join(map(str, seeds))}. Training data `{grid['train_data']}`. Protocol: "
             f"**{grid.get('protocol', 'not named')}**{' (' + PROTOCOLS[grid['protocol']] + ')' if grid.get('protocol') in PROTOCOLS else ''}. "
             f"Losses are log-perplexities (nats per masked token); the tables after the section on both protocols "
             f"give the periodic in-training estimates on the first valid batches, where `best` is the minimum that "
             f"chose the kept checkpoint (biased low). ± is a 95% Student t interval over seeds. Training of all runs took "
             f"{sum(r['wall_time_s'] for r in rows) / 60:.1f} min of run time (runs in parallel overlap); this "
             f"invocation took {seconds / 60:.1f} min.", ""]
    if baseline is not None:
        lines += [f"Unigram baseline (predicting training-token frequencies) on the valid split: **{baseline:.3f}**.",
                  ""]
    lines += ["## Regime", ""]
    if grid.get("protocol") == "paper":
        lines += regime_lines_fixed_budget(rows)
    else:
        limited = [r for r in rows if r["regime"] != "data-limited"]
        lines.append(f"{len(rows) - len(limited)} of {len(rows)} runs are data-limited (best valid loss before the "
                     f"cap, then no improvement for the patience: stopped early).")
        if limited:
            lines += ["", "**Not data-limited** (a statement about data scarcity that rests on these is not "
                      "evidence):", ""]
            lines += [f"- {r['run_id']}: {r['regime']} (best at step {r['best_step']} of {r['steps']})"
                      for r in limited]
    lines += protocol_lines(rows)
    if protocols_figure is not None:
        lines += ["", f"![Both protocols]({protocols_figure.name})"]
    lines += ["", "## Losses over seeds (periodic in-training estimates)", "",
              "| fraction | model | params (M) | method | seeds | best valid | final valid | below unigram | "
              "best step | epochs | training FLOPs (method total) | regimes |",
              "| ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for s in summary:
        below = f"{baseline - s['loss'][0]:.3f}" if baseline is not None else ""
        counts = ", ".join(f"{s['regimes'].count(k)} {k}" for k in sorted(set(s["regimes"])))
        lines.append(f"| {s['fraction']:g} | {s['model']} | {s['parameters'] / 1e6:.2f} | {s['method']} | "
                     f"{len(s['seeds'])} | {fmt(*s['loss'])} | {fmt(*s['final'])} | {below} | {s['best_step']:.0f} | "
                     f"{s['epochs']:.1f} | {s['train_flops']:.2e} ({s['chain_flops']:.2e}) | {counts} |")
    lines += ["", "The method total counts a reused model's own training and that of every model in its chain, so a "
              "reader can see whether reuse won on data or on extra compute.", "",
              f"![Figure 4a]({figure.name})", "", "## Reuse gain per width and fraction", "",
              "| fraction | model (M params) | seeds | scratch | reuse | gain (scratch - reuse) | distinguishable from 0 |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for g in paired_gains(rows):
        method = f" ({g['method']})" if several else ""
        lines.append(f"| {g['fraction']:g} | {g['parameters'] / 1e6:.2f}{method} | {len(g['seeds'])} | "
                     f"{fmt(*g['scratch'])} | {fmt(*g['reuse'])} | {fmt(*g['gain'], digits=3)} | {g['verdict']} |")
    lines += ["", "Paired by seed: scratch and reuse of one seed trained on the same data blocks.", "",
              "## Shape of the curves", ""] + shapes(summary)
    lines += operator_lines(raw)
    lines += downstream_lines(rows)
    lines += ["", "## Every run", "", "After growth: a reused run's valid loss before its first step (its parent's "
              "best was its start).", "",
              "| run | seed | steps | best step | epochs | epochs past best | regime | after growth | final | best |",
              "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for r in rows:
        start = f"{r['post_growth_log_ppl']:.3f}" if isinstance(r.get("post_growth_log_ppl"), float) else ""
        past = f"{r['epochs_past_best']:.1f}" if isinstance(r.get("epochs_past_best"), float) else ""
        lines.append(f"| {r['run_id']} | {r['seed']} | {r['steps']} | {r['best_step']} | {r['epochs']:.1f} | {past} | "
                     f"{r['regime']} | {start} | {r['final_log_ppl']:.3f} | {r[LOSS]:.3f} |")
    lines += ["", "## Data the reuse was worth (effective data transferred)", "",
              "D_E: unique tokens the same width needs from scratch to reach the reused model's mean loss (log-log "
              "interpolation of the scratch means over fractions; `>=` marks a reused loss below every scratch point, "
              "a lower bound); D_T = D_E - D_F, the tokens saved.", "",
              "| model (M params) | fraction | D_F (tokens) | D_E | D_T (tokens saved) | D_F / D_E |",
              "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    means = [{"run_id": f"{s['fraction']:g}" + (f" ({s['method']})" if several and is_reuse(s["method"]) else ""),
              "method": s["method"], "parameters": s["parameters"], "target": "",
              "data_tokens": next(r["data_tokens"] for r in rows if r["fraction"] == s["fraction"]),
              LOSS: s["loss"][0]} for s in summary]
    for t in analyse(means, "data_tokens", LOSS):
        head = f"| {t['parameters'] / 1e6:.2f} | {t['run_id']} | {t['D_F']:,.0f} |"
        if "D_E" in t:
            inverse = {">=": "<=", "<=": ">="}.get(t["marker"], "")
            lines.append(f"{head} {t['marker']}{t['D_E']:,.0f} | {t['marker']}{t['D_T']:,.0f} | "
                         f"{inverse}{t['D_F_over_D_E']:.2f} |")
        else:
            lines.append(f"{head} {t['marker']} | | |")
    path = results / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
