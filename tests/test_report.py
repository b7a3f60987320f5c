"""Seeds, run names, regimes, intervals and the report built from them."""

import json
import math

import pytest
import yaml

from reuse.compare import curve_shape, paired_gains
from reuse.report import summarise, write_report
from reuse.results import classify_regime, read_results, run_regime, write_results
from reuse.runs import parse_run_name, run_name
from reuse.stats import t_interval
from reuse.sweep import SweepError, load_grid, plan

LADDER = ["configs/bert-2L-64H.json", "configs/bert-2L-128H.json", "configs/bert-2L-192H.json"]


def grid_file(tmp_path, embedded_dir, **changes):
    grid = {"name": "seeded", "protocol": "early-stop", "family": "bert", "models": LADDER[:2], "fractions": [0.2, 0.5],
            "train_data": str(embedded_dir / "en.train.raw.bert-base-uncased.hdf5"),
            "valid_data": str(embedded_dir / "en.valid.raw.bert-base-uncased.hdf5"),
            "train": {"batch_size": 8, "max_steps": 4, "patience": 10}, "methods": {"scratch": {}, "reuse": {}}}
    grid.update(changes)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_seeds_expand_into_named_runs_with_chains_inside_one_seed(tmp_path, embedded_dir):
    runs = plan(load_grid(grid_file(tmp_path, embedded_dir, models=LADDER, seeds={0.2: [0, 1, 2], 0.5: [0]})))
    ids = {r.run_id: r for r in runs}
    assert len(runs) == 3 * 5 + 5
    assert "bert-2L-64H-0.2D" in ids and "bert-2L-64H-0.2D-s0" not in ids  # seed 0 keeps the released names
    grown = ids["bert-n2n-2L-192H-0.2D-s2"]
    assert grown.seed == 2 and grown.args["seed"] == 2 and grown.parent == "bert-n2n-2L-128H-0.2D-s2"
    assert ids["bert-n2n-2L-128H-0.2D-s2"].parent == "bert-2L-64H-0.2D-s2"
    assert ids["bert-2L-128H-0.2D-s1"].args["seed"] == 1 and ids["bert-2L-128H-0.2D-s1"].method == "scratch"
    assert not any(r.run_id.endswith("-s1") for r in runs if r.fraction == 0.5)
    same = plan(load_grid(grid_file(tmp_path, embedded_dir, seeds=[0, 3])))
    assert {r.seed for r in same if r.fraction == 0.5} == {0, 3}


def test_run_names_round_trip_for_every_kind_of_run():
    cases = [(run_name("bert", "12L-64H", 0.001), dict(method="scratch", fraction=0.001, seed=0, layers=12)),
             (run_name("bert", "12L-128H", 0.001, grow_method="net2net"), dict(method="reuse", grow="n2n")),
             (run_name("roberta", "12L-128H", 0.009, 2, grow_method="aki"), dict(method="reuse", seed=2, grow="aki")),
             (run_name("gpt2", "4L-64H", 0.1, 1), dict(family="gpt2", method="scratch", seed=1, hidden=64)),
             (run_name("gpt2", "4L-128H", language="en"), dict(method="pretrain", language="en")),
             (run_name("gpt2", "4L-128H", 0.01, language="fr"), dict(method="scratch", language="fr")),
             (run_name("gpt2", "4L-128H", 0.01, language="fr", source="en"), dict(method="finetune", language="fr"))]
    assert [c[0] for c in cases] == ["bert-12L-64H-0.001D", "bert-n2n-12L-128H-0.001D", "roberta-aki-12L-128H-0.009D-s2",
                                     "gpt2-4L-64H-0.1D-s1", "gpt2-4L-128H-en", "gpt2-4L-128H-fr-0.01D",
                                     "gpt2-en2fr-4L-128H-0.01D"]
    for name, fields in cases:
        parsed = parse_run_name(name)
        assert {k: parsed[k] for k in fields} == fields, name
    assert parse_run_name("bert-12L-64H-1e-05D")["fraction"] == 1e-5
    for other in ("checkpoints", "logs", "bert-12L-64H", "bert-12L-64H-0.1D-sx"):
        assert parse_run_name(other) is None


@pytest.mark.parametrize("seeds,message", [([], "non-empty list"), ([0, "one"], "list of integers"),
                                           ([0, 1.5], "list of integers"), ([0, -1], "integers >= 0"),
                                           ([1, 1], "repeat a seed"), ({0.3: [0]}, "does not train")])
def test_bad_seeds_are_refused(tmp_path, embedded_dir, seeds, message):
    with pytest.raises(SweepError, match=message):
        plan(load_grid(grid_file(tmp_path, embedded_dir, seeds=seeds)))


def test_colliding_run_ids_and_fractions_too_small_for_a_batch_are_refused(tmp_path, embedded_dir):
    with pytest.raises(SweepError, match="share the folder bert-2L-64H-0.2D"):
        plan(load_grid(grid_file(tmp_path, embedded_dir, fractions=[0.2, 0.2000001])))
    with pytest.raises(SweepError, match="share the folder"):
        plan(load_grid(grid_file(tmp_path, embedded_dir, models=[LADDER[0], LADDER[0]], methods={"scratch": {}})))
    with pytest.raises(SweepError, match=r"fraction 0.0002 of .* is 1 blocks of 126 tokens, fewer than one batch of 8"):
        plan(load_grid(grid_file(tmp_path, embedded_dir, fractions=[0.0002, 0.5])))


def test_patience_without_valid_data_is_refused(tmp_path, embedded_dir):
    with pytest.raises(SweepError, match="patience but no valid_data"):
        load_grid(grid_file(tmp_path, embedded_dir, valid_data="", train={"batch_size": 8, "patience": 2}))


def write_run(folder, valid, stopped_early):
    folder.mkdir(parents=True)
    records = [{"step": s, "loss": 9.0} for s, _ in valid] + [{"step": s, "valid_log_ppl": v} for s, v in valid]
    (folder / "log.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    (folder / "summary.json").write_text(json.dumps({"stopped_early": stopped_early}))


def test_regime_is_read_from_the_logged_valid_curve(tmp_path):
    write_run(tmp_path / "stopped", [(100, 6.5), (200, 6.2), (300, 6.3), (400, 6.4)], True)
    write_run(tmp_path / "improving", [(100, 6.5), (200, 6.2), (300, 6.1)], False)
    write_run(tmp_path / "flat", [(100, 6.5), (200, 6.2), (300, 6.3)], False)
    assert run_regime(tmp_path / "stopped") == "data-limited"
    assert run_regime(tmp_path / "improving") == "compute-limited"
    assert run_regime(tmp_path / "flat") == "unsettled"
    # A resumed run re-logs repeated steps (the last record wins) and a killed write leaves a cut line.
    with open(tmp_path / "improving" / "log.jsonl", "a") as f:
        f.write(json.dumps({"step": 300, "valid_log_ppl": 6.9}) + "\n" + '{"step": 40')
    assert run_regime(tmp_path / "improving") == "unsettled"
    assert classify_regime([], False) == "unevaluated"
    assert classify_regime([(100, math.nan), (200, 6.0)], False) == "compute-limited"


def test_t_interval_matches_the_table_value():
    mean, half = t_interval([1.0, 2.0, 3.0])
    # s = 1, n = 3, t(0.975, 2) = 4.303 (Student t table): 4.303 / sqrt(3) = 2.484
    assert mean == 2.0 and half == pytest.approx(2.484, abs=1e-3)
    mean, half = t_interval([0.10, 0.06, 0.08, 0.12])
    # mean 0.09, s = sqrt(0.002 / 3) = 0.02582, t(0.975, 3) = 3.182: 3.182 * 0.02582 / 2 = 0.04108
    assert mean == pytest.approx(0.09) and half == pytest.approx(0.04108, abs=1e-4)
    assert t_interval([5.0]) == (5.0, None)


def results_rows():
    """Two widths at fraction 0.1 with 3 seeds, one seed at 0.5; losses chosen so the gains are easy by hand."""
    rows = []
    def add(run_id, params, fraction, method, seed, best, parent="", flops=1e12, regime="data-limited"):
        rows.append({"run_id": run_id, "model": f"m{params:.0f}", "parameters": params, "fraction": fraction,
                     "seed": seed, "data_tokens": 1000 * fraction, "training_tokens": 5000, "steps": 400,
                     "epochs": 12.5, "method": method, "parent": parent, "target": "", "final_log_ppl": best + 0.1,
                     "best_log_ppl": best, "best_step": 200, "regime": regime, "train_flops": flops,
                     "chain_flops": flops * (2 if parent else 1), "wall_time_s": 10.0})
    for seed, (small, big, grown) in enumerate([(6.0, 6.3, 6.1), (6.1, 6.2, 6.0), (6.2, 6.4, 6.3)]):
        add(f"s-{seed}", 1e6, 0.1, "scratch", seed, small)
        add(f"b-{seed}", 2e6, 0.1, "scratch", seed, big)
        add(f"r-{seed}", 2e6, 0.1, "reuse", seed, grown, parent=f"s-{seed}")
    add("s5", 1e6, 0.5, "scratch", 0, 5.5)
    add("b5", 2e6, 0.5, "scratch", 0, 5.3, regime="compute-limited")
    add("r5", 2e6, 0.5, "reuse", 0, 5.2, parent="s5")
    return rows


def test_gains_are_paired_by_seed_with_intervals():
    gains = {g["fraction"]: g for g in paired_gains(results_rows())}
    # gains 0.2, 0.2, 0.1: mean 0.1667, s = 0.05774, t(0.975, 2) = 4.303: half 0.1434
    mean, half = gains[0.1]["gain"]
    assert mean == pytest.approx(0.16667, abs=1e-4) and half == pytest.approx(0.1434, abs=1e-3)
    assert gains[0.1]["verdict"] == "yes: reuse is lower" and gains[0.1]["seeds"] == [0, 1, 2]
    assert gains[0.5]["gain"][1] is None and gains[0.5]["verdict"].startswith("one seed")
    summary = {(s["fraction"], s["parameters"], s["method"]): s for s in summarise(results_rows())}
    assert summary[(0.1, 2e6, "scratch")]["loss"][0] == pytest.approx(6.3)
    assert summary[(0.1, 2e6, "reuse")]["chain_flops"] == 2e12


def test_curve_shape_in_words():
    assert curve_shape([(1e6, 6.0), (2e6, 5.9), (3e6, 5.8)]) == "falls monotonically with width"
    assert "rises at 1.00M -> 2.00M (+0.300)" in curve_shape([(2e6, 6.3), (1e6, 6.0)])


def test_report_from_a_results_table(tmp_path):
    write_results(results_rows(), tmp_path / "results.csv")
    rows = read_results(tmp_path / "results.csv")
    assert rows[0]["seed"] == 0 and rows[0]["best_step"] == 200 and rows[0]["best_log_ppl"] == 6.0
    grid = {"name": "t", "models": ["m1", "m2"], "fractions": [0.1, 0.5], "methods": {"scratch": {}, "reuse": {}},
            "train_data": "x.hdf5"}
    report = write_report(grid, rows, tmp_path, tmp_path / "curves.png", 6.5, 60.0).read_text()
    assert "11 of 12 runs are data-limited" in report and "- b5: compute-limited" in report
    assert "| 0.1 | 2.00 | 3 | 6.300 ± 0.248 | 6.133 ± 0.379 | 0.167 ± 0.143 | yes: reuse is lower |" in report
    assert "fraction 0.1: from scratch the mean loss does not fall monotonically: it rises at 1.00M -> 2.00M " \
           "(+0.200); with reuse it does not fall monotonically" in report
    assert "fraction 0.5: from scratch the mean loss falls monotonically with width; with reuse it falls " \
           "monotonically with width." in report
    assert "one seed: no interval, not evidence" in report
    assert "1.00e+12 (2.00e+12)" in report  # the reuse chain's compute, parent included


def test_figure_points_are_seed_means_with_intervals(tmp_path):
    from reuse.plot import curves, figure_4a

    rows = results_rows() + [{**results_rows()[0], "run_id": "nan", "seed": 7, "best_log_ppl": math.nan}]
    groups = curves(rows, "parameters", "best_log_ppl")
    (x, mean, half), = [p for p in groups[("scratch", 0.1)] if p[0] == 1e6]
    assert mean == pytest.approx(6.1) and half == pytest.approx(0.248, abs=1e-3)  # the NaN run is left out
    assert groups[("reuse", 0.1)][0] == groups[("scratch", 0.1)][0]  # reuse starts at the shared smallest model
    assert figure_4a(rows, tmp_path / "fig.png", loss="best_log_ppl").stat().st_size > 10_000
