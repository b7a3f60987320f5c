"""The operator study: grids with `operators`, the grow_method column, and the report's "Growth operators" section."""

import json
import math

import pytest
import yaml

from conftest import run_main
from reuse.report import operator_lines, write_report
from reuse.results import by_operator, read_results, write_results
from reuse.sweep import Run, SweepError, collect, load_grid, plan

T95_2 = 4.302652729911275  # Student t, 0.975 quantile, 2 degrees of freedom (3 seeds), from a table


def test_an_operator_grid_plans_one_chain_per_operator_on_one_scratch_ladder():
    runs = plan(load_grid("configs/operators_demo.yaml"))
    ids = {r.run_id: r for r in runs}
    assert len(runs) == 3 * (3 + 5 * 2)  # per seed: 3 scratch widths, 5 operators x 2 grown widths
    assert sorted(r.run_id for r in runs if r.method == "scratch" and r.seed == 1) == \
        ["bert-2L-128H-0.02D-s1", "bert-2L-192H-0.02D-s1", "bert-2L-64H-0.02D-s1"]
    for tag in ("n2n", "aki", "random", "msg", "ligo"):
        assert ids[f"bert-{tag}-2L-128H-0.02D-s2"].parent == "bert-2L-64H-0.02D-s2"  # the shared scratch run
        assert ids[f"bert-{tag}-2L-192H-0.02D-s2"].parent == f"bert-{tag}-2L-128H-0.02D-s2"  # its own chain
    msg, n2n = ids["bert-msg-2L-192H-0.02D"].args, ids["bert-n2n-2L-192H-0.02D"].args
    assert msg["grow_method"] == "msg" and msg["grow_ramp_steps"] == 50 and msg["grow_noise"] == 0.0
    assert n2n["grow_method"] == "net2net" and n2n["grow_noise"] == 0.01 and "grow_ramp_steps" not in n2n
    assert ids["bert-ligo-2L-128H-0.02D-s1"].args["grow_ligo_steps"] == 50
    for r in runs:  # the reuse recipe under every operator; the demo's train settings under every run
        assert r.args["patience"] == 4 and r.args["max_steps"] == 3000 and r.args["seed"] == r.seed
        assert r.args["lr"] == (1e-3 if r.method == "scratch" else 2e-4)
    assert ids["bert-aki-2L-128H-0.02D"].args == {**n2n, "grow_method": "aki"}


def test_one_operator_plans_exactly_as_the_reuse_recipe_alone():
    grid = load_grid("configs/demo.yaml")
    alone = [(r.run_id, r.parent, r.args) for r in plan(grid)]
    with_operator = [(r.run_id, r.parent, r.args) for r in plan({**grid, "operators": {"net2net": {}}})]
    assert with_operator == alone


@pytest.mark.parametrize("change,message", [
    ({"operators": {"net2net": {}, "lemon": {}}}, "unknown operators ['lemon'] for bert; use net2net, aki, "
                                                    "random, msg, ligo"),
    ({"operators": {"aki": {}}, "methods": {"scratch": {"lr": 1e-3}}}, "'operators' grows on top of the reuse "
                                                                        "recipe"),
    ({"operators": ["net2net", "aki"]}, "'operators' must map operator names"),
    ({"operators": {"net2net": {}, "random": {}}}, "run bert-random-2L-128H-0.02D: --grow-mapping and --grow-noise"),
    ({"operators": {"msg": {"grow_noise": 0.0, "grow_ramp_steps": 0}}}, "msg needs a ramp of >= 1 steps"),
])
def test_bad_operator_grids_are_refused_in_one_line_at_planning(tmp_path, change, message):
    from reuse.sweep import main

    grid = {**yaml.safe_load(open("configs/operators_demo.yaml")), **change}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    done = run_main(main, [path, "--plan", "--snap", tmp_path / "snap"], "reuse.sweep", check=False)
    assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "snap").exists()
    with pytest.raises(SweepError, match="grid operators_demo"):
        plan(grid)


def test_results_rows_name_each_runs_operator(tmp_path):
    runs = [Run("bert-2L-64H-0.02D", "configs/bert-2L-64H.json", 0.02, "scratch", "", {"lr": 1e-3}),
            Run("bert-msg-2L-128H-0.02D", "configs/bert-2L-128H.json", 0.02, "reuse", "bert-2L-64H-0.02D",
                {"grow_method": "msg", "grow_ramp_steps": 50})]
    for run, start in zip(runs, (None, 6.25)):
        folder = tmp_path / run.run_id
        folder.mkdir()
        (folder / "run_config.json").write_text(json.dumps({"block_size": 62}))
        (folder / "log.jsonl").write_text(json.dumps({"step": 50, "valid_log_ppl": 6.2}) + "\n")
        (folder / "summary.json").write_text(json.dumps({
            "parameters": 1000, "training_blocks": 10, "tokens_seen": 6200, "steps": 100, "epochs": 10.0,
            "final_valid_log_ppl": 6.3, "best_valid_log_ppl": 6.2, "best_step": 50, "stopped_early": True,
            "train_flops": 1e9, "wall_time_s": 1.0, **({"start_valid_log_ppl": start} if start else {})}))
    write_results(collect(runs, tmp_path), tmp_path / "results.csv")
    rows = {r["run_id"]: r for r in read_results(tmp_path / "results.csv")}
    assert rows["bert-msg-2L-128H-0.02D"]["grow_method"] == "msg"
    assert rows["bert-msg-2L-128H-0.02D"]["post_growth_log_ppl"] == 6.25
    assert rows["bert-2L-64H-0.02D"]["grow_method"] == "" and rows["bert-2L-64H-0.02D"]["post_growth_log_ppl"] == ""


def row(run_id, method, parameters, seed, best, fraction=0.02, data_tokens=1000, post="", parent="", grow="",
        final=None):
    return {"run_id": run_id, "model": f"m{parameters:.0e}", "parameters": parameters, "fraction": fraction,
            "seed": seed, "data_tokens": data_tokens, "training_tokens": 10 * data_tokens, "steps": 300,
            "epochs": 10.0, "method": method, "grow_method": grow, "parent": parent, "target": "",
            "post_growth_log_ppl": post, "final_log_ppl": best if final is None else final, "best_log_ppl": best,
            "best_step": 100, "regime": "data-limited", "train_flops": 1e12, "chain_flops": 2e12, "wall_time_s": 1.0}


def study_rows():
    """Scratch at 1M and 2M parameters over 3 seeds at 2% (and one seed at 20%, for D_T); msg (preserving: its
    start is its parent's loss) and net2net (0.4 worse at the start) at 2M, each grown from the 1M scratch run."""
    rows = []
    for s, (small, large) in enumerate([(6.1, 6.0), (6.2, 6.1), (6.3, 6.2)]):
        rows += [row(f"s1-{s}", "scratch", 1e6, s, small), row(f"s2-{s}", "scratch", 2e6, s, large)]
    rows += [row("s1-big", "scratch", 1e6, 0, 5.5, 0.2, 10000), row("s2-big", "scratch", 2e6, 0, 5.0, 0.2, 10000)]
    for s, (post, best) in enumerate([(6.1, 5.9), (6.2, 6.0), (6.3, 6.1)]):
        rows.append(row(f"msg-{s}", "reuse", 2e6, s, best, post=post, parent=f"s1-{s}", grow="msg",
                        final=best + 0.1))
    for s, (post, best) in enumerate([(6.5, 6.1), (6.6, 6.1), (6.7, 6.4)]):
        rows.append(row(f"n2n-{s}", "reuse", 2e6, s, best, post=post, parent=f"s1-{s}", grow="net2net"))
    return rows


def test_the_growth_operators_section_by_hand(tmp_path):
    write_results(study_rows(), tmp_path / "results.csv")
    rows = read_results(tmp_path / "results.csv")
    lines = {line.split(" | ")[2]: line for line in operator_lines(rows) if line.startswith("| 0.02 | 2.00 |")}
    assert set(lines) == {"msg", "net2net"}
    half = T95_2 * 0.1 / math.sqrt(3)  # sample sd 0.1 over 3 seeds
    # msg: start 6.2 (mean) beside the parents' 6.2, nothing lost; best 6.0, final 6.1; scratch - msg = 0.1 at
    # every seed; D_T: each seed's best inverted on the 2M scratch curve, log-log between (1000, 6.1) and
    # (10000, 5.0), minus its 1000 tokens.
    saved = sum(10 ** (3 + math.log(6.1 / b) / math.log(6.1 / 5.0)) - 1000 for b in (5.9, 6.0, 6.1)) / 3
    assert lines["msg"] == (f"| 0.02 | 2.00 | msg | 3 | 6.200 ± {half:.3f} | 6.200 ± {half:.3f} | 0.000 ± 0.000 | "
                            f"6.000 ± {half:.3f} | 6.100 ± {half:.3f} | 0.100 ± 0.000 | yes: reuse is lower | "
                            f"{saved:,.0f} |")
    # net2net: 0.4 lost at growth; best 6.1, 6.1, 6.4 (sd sqrt(0.03)); gains -0.1, 0, -0.2 (sd 0.1); 6.4 is above
    # every 2M scratch point, so its D_E is a bound, and the others reach the 2% scratch mean exactly (D_T 0).
    spread = T95_2 * math.sqrt(0.03) / math.sqrt(3)
    assert lines["net2net"] == (f"| 0.02 | 2.00 | net2net | 3 | 6.600 ± {half:.3f} | 6.200 ± {half:.3f} | "
                                f"0.400 ± 0.000 | 6.200 ± {spread:.3f} | 6.200 ± {spread:.3f} | "
                                f"-0.100 ± {half:.3f} | no: the interval contains 0 | "
                                f"0 (1 of 3 seeds are bounds at the scratch range's edge) |")
    one_fraction = [r for r in rows if r["fraction"] == 0.02]
    assert all(line.endswith("| not computed: 1 scratch data size(s): at least 2 are needed to invert the curve |")
               for line in operator_lines(one_fraction) if line.startswith("| 0.02 | 2.00 |"))


def test_the_report_keeps_operators_apart_and_a_single_operator_report_unchanged(tmp_path):
    from reuse.plot import curves, figure_4a

    rows = study_rows()
    grid = {"name": "ops", "models": ["m1", "m2"], "fractions": [0.02, 0.2], "methods": {"scratch": {}, "reuse": {}},
            "operators": {"net2net": {}, "msg": {}}, "train_data": "x.hdf5"}
    report = write_report(grid, rows, tmp_path, tmp_path / "curves.png", 6.5, 60.0).read_text()
    assert "## Growth operators" in report and "growth operators net2net, msg;" in report
    assert "| 0.02 | 2.00 (reuse msg) | 3 |" in report and "| 0.02 | 2.00 (reuse net2net) | 3 |" in report
    assert "with reuse msg it falls monotonically with width; with reuse net2net it falls monotonically" in report
    groups = curves(by_operator(rows), "parameters", "best_log_ppl")
    assert groups[("reuse msg", 0.02)][0] == groups[("scratch", 0.02)][0]  # each operator from the smallest model
    assert figure_4a(by_operator(rows), tmp_path / "fig.png", loss="best_log_ppl").stat().st_size > 10_000
    # One operator: no section, and the same report as a table from before the grow_method column.
    single = [r for r in rows if r["grow_method"] != "msg"]
    old = [{k: v for k, v in r.items() if k != "grow_method"} for r in single]
    grid = {**grid, "operators": None}
    one = write_report(grid, single, tmp_path, tmp_path / "curves.png", 6.5, 60.0).read_text()
    assert "Growth operators" not in one and "(reuse" not in one and "with reuse it" in one
    assert one == write_report(grid, old, tmp_path, tmp_path / "curves.png", 6.5, 60.0).read_text()


@pytest.mark.slow  # a 4-run sweep (two scratch runs, two grown ones), about 30 s on 2 cores
def test_a_tiny_operator_sweep_reports_its_operators(tmp_path, embedded_dir):
    from reuse.sweep import main

    grid = {"name": "tiny-ops", "protocol": "early-stop", "family": "bert", "models": ["configs/bert-2L-64H.json", "configs/bert-2L-128H.json"],
            "fractions": [0.5], "train_data": str(embedded_dir / "en.train.raw.bert-base-uncased.hdf5"),
            "valid_data": str(embedded_dir / "en.valid.raw.bert-base-uncased.hdf5"),
            "train": {"batch_size": 8, "max_steps": 4, "eval_every": 2, "eval_batches": 1, "save_every": 2,
                      "patience": 10, "heldout_batches": 2},
            "methods": {"scratch": {"lr": 1e-3}, "reuse": {"lr": 5e-4}},
            "operators": {"net2net": {}, "msg": {"grow_ramp_steps": 2}}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    run_main(main, [path, "--snap", tmp_path / "snap", "--results", tmp_path / "results", "--workers", "2"],
             "reuse.sweep")
    rows = {r["run_id"]: r for r in read_results(tmp_path / "results" / "results.csv")}
    assert sorted(rows) == ["bert-2L-128H-0.5D", "bert-2L-64H-0.5D", "bert-msg-2L-128H-0.5D", "bert-n2n-2L-128H-0.5D"]
    assert rows["bert-msg-2L-128H-0.5D"]["grow_method"] == "msg" and rows["bert-2L-64H-0.5D"]["grow_method"] == ""
    for grown in ("bert-msg-2L-128H-0.5D", "bert-n2n-2L-128H-0.5D"):
        assert rows[grown]["parent"] == "bert-2L-64H-0.5D" and isinstance(rows[grown]["post_growth_log_ppl"], float)
    # msg is exact at growth: its start is its parent's best valid loss, on the same valid batches
    assert rows["bert-msg-2L-128H-0.5D"]["post_growth_log_ppl"] == pytest.approx(
        rows["bert-2L-64H-0.5D"]["best_log_ppl"], abs=1e-4)
    report = (tmp_path / "results" / "report.md").read_text()
    section = report.split("## Growth operators")[1].split("\n## ")[0]
    assert "| 0.5 |" in section and "| msg | 1 |" in section and "| net2net | 1 |" in section
    assert "one seed: no interval, not evidence" in section
    assert (tmp_path / "results" / "curves.png").stat().st_size > 10_000
