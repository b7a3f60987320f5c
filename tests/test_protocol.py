"""The paper's protocol beside early stopping: planning checks, a fixed-budget sweep whose results are its last
checkpoints, the end-of-run scores against reuse.evaluate run by hand, the report's verdicts and figure, and the
recipe search's rule."""

import json

import pytest
import yaml

from conftest import run_main
from reuse.protocols import analyse, protocol_lines
from reuse.results import classify_regime, read_results
from reuse.search import choose, search_lines

LADDER = ["configs/bert-2L-64H.json", "configs/bert-2L-128H.json"]


def paper_grid(tmp_path, embedded_dir, **changes):
    """A fixed budget of 16 steps on 0.2% of the embedded corpus in 30-token blocks: 60 blocks, 7 batches of 8 an
    epoch, so the budget is more than two epochs."""
    grid = {"name": "fixed", "protocol": "paper", "family": "bert", "models": LADDER, "fractions": [0.002],
            "train_data": str(embedded_dir / "en.train.raw.bert-base-uncased.hdf5"),
            "valid_data": str(embedded_dir / "en.valid.raw.bert-base-uncased.hdf5"),
            "test_data": str(embedded_dir / "en.test.raw.bert-base-uncased.hdf5"),
            "train": {"block_size": 30, "batch_size": 8, "max_steps": 16, "eval_every": 2, "eval_batches": 1,
                      "save_every": 8, "heldout_batches": 3},
            "methods": {"scratch": {"lr": 3e-3}, "reuse": {"lr": 3e-3}}}
    grid.update(changes)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def plan_error(path) -> str:
    from reuse.sweep import main

    done = run_main(main, [path, "--plan"], "reuse.sweep", check=False)
    assert done.returncode != 0 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


@pytest.mark.parametrize("change,message", [
    (dict(protocol="best-of-both"), "protocol 'best-of-both' is unknown: give 'protocol: paper'"),
    (dict(protocol=None), "protocol None is unknown"),
    (dict(train={"block_size": 30, "batch_size": 8, "max_steps": 16, "patience": 3}),
     "protocol paper trains every run to its fixed budget, but its recipe sets patience 3"),
    (dict(methods={"scratch": {"patience": 2}, "reuse": {}}), "sets patience 2"),
    (dict(protocol="early-stop"), "protocol early-stop needs patience > 0"),
    (dict(train={"block_size": 30, "batch_size": 8, "max_steps": 5}),
     "max_steps 5 is less than one epoch of fraction 0.002 (7 steps of 8 blocks)"),
    (dict(methods={"scratch": {}, "reuse": {"parent_checkpoint": "middle"}}),
     "parent_checkpoint 'middle' is neither last nor best"),
    (dict(search={"../up": {"methods": {"scratch": {}}}}), "search variant name '../up' must be a plain name"),
    (dict(search={"a": {"train_data": "other.hdf5"}}), "search variant a may change only train, methods"),
    (dict(name="../../victim"), "name '../../victim' must be a plain name"),
    (dict(name="/tmp/victim"), "name '/tmp/victim' must be a plain name"),
])
def test_a_protocol_the_grid_cannot_run_is_one_line_at_planning(tmp_path, embedded_dir, change, message):
    assert message in plan_error(paper_grid(tmp_path, embedded_dir, **change))
    assert not (tmp_path / "snap").exists() and not (tmp_path / "results").exists()


def test_a_parent_checkpoint_the_parent_does_not_keep_is_refused(tmp_path):
    grid = yaml.safe_load(open("configs/transfer_demo.yaml"))
    grid["pretrain"].pop("valid_data")
    grid["methods"]["finetune"]["parent_checkpoint"] = "best"
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    assert "parent_checkpoint best, but its parent gpt2-4L-64H-en has no valid data" in plan_error(path)


def test_protocols_choose_which_parent_checkpoint_a_reused_model_grows_from(tmp_path, embedded_dir):
    from reuse.sweep import load_grid, plan, train_args

    def init_from(**changes):
        runs = plan(load_grid(paper_grid(tmp_path, embedded_dir, **changes)))
        (grown,) = [r for r in runs if r.method == "reuse"]
        return train_args(grown, load_grid(tmp_path / "grid.yaml"), tmp_path)["init_from"]

    assert init_from() == str(tmp_path / "bert-2L-64H-0.002D")  # paper: the parent's last checkpoint
    assert init_from(methods={"scratch": {}, "reuse": {"parent_checkpoint": "best"}}) == \
        str(tmp_path / "bert-2L-64H-0.002D" / "best")
    early = dict(protocol="early-stop", train={"block_size": 30, "batch_size": 8, "max_steps": 16, "patience": 2})
    assert init_from(**early).endswith("bert-2L-64H-0.002D/best")


@pytest.mark.slow  # a 3-run fixed-budget sweep and two reuse.evaluate calls: ~40 s on 2 cores
def test_a_paper_run_trains_its_whole_budget_and_reports_its_last_checkpoint(tmp_path, embedded_dir):
    from reuse.evaluate import main as evaluate
    from reuse.sweep import main

    run_main(main, [paper_grid(tmp_path, embedded_dir), "--snap", tmp_path / "snap", "--results",
                    tmp_path / "results", "--workers", "2"], "reuse.sweep")
    rows = {r["run_id"]: r for r in read_results(tmp_path / "results" / "results.csv")}
    assert sorted(rows) == ["bert-2L-128H-0.002D", "bert-2L-64H-0.002D", "bert-n2n-2L-128H-0.002D"]
    for run_id, row in rows.items():
        summary = json.loads((tmp_path / "snap" / run_id / "summary.json").read_text())
        assert summary["steps"] == 16 and not summary["stopped_early"]  # never stops early
        assert row["epochs_past_best"] == pytest.approx((16 - row["best_step"]) * 8 / 60)
        assert row["regime"] == ("compute-limited" if row["best_step"] == 16 else "past-best")
        assert all(0 < row[c] < 20 for c in ("train_last", "train_best", "valid_best", "test_last"))
    grown = json.loads((tmp_path / "snap" / "bert-n2n-2L-128H-0.002D" / "run_config.json").read_text())
    assert grown["init_from"] == str(tmp_path / "snap" / "bert-2L-64H-0.002D")  # grown from the parent's last
    # The end-of-run figures are reuse.evaluate's, run by hand on the same checkpoints.
    run = tmp_path / "snap" / "bert-2L-128H-0.002D"
    by_hand = tmp_path / "by_hand.json"
    for checkpoint, split, column in [(run, "valid", "valid_last"), (run / "best", "test", "test_best")]:
        run_main(evaluate, [str(checkpoint), "--data", str(embedded_dir / f"en.{split}.raw.bert-base-uncased.hdf5"),
                            "--block-size", "30", "--max-batches", "3", "--out", str(by_hand)], "reuse.evaluate")
        assert rows[run.name][column] == pytest.approx(json.loads(by_hand.read_text())[0]["log_ppl"], abs=1e-9)
    report = (tmp_path / "results" / "report.md").read_text()
    assert "Protocol: **paper** (a fixed budget, the last checkpoint)" in report
    assert "## Both protocols from the same runs" in report and "![Both protocols](protocols.png)" in report
    assert (tmp_path / "results" / "protocols.png").stat().st_size > 10_000


def test_fixed_budget_runs_past_their_best_are_labelled_so():
    curve = [(100, 6.5), (200, 6.2), (300, 6.3)]
    assert classify_regime(curve, stopped_early=False, fixed_budget=True) == "past-best"
    assert classify_regime(curve, stopped_early=False) == "unsettled"
    assert classify_regime(curve + [(400, 6.0)], stopped_early=False, fixed_budget=True) == "compute-limited"


def protocol_rows():
    """3 seeds, widths 1M/2M/3M. Paper (valid_last): scratch rises at 3M by 0.3 +- small, reuse keeps falling and
    is lower there. Early stop (test_best): both fall monotonically."""
    rows = []
    scratch_last = {1e6: 6.0, 2e6: 5.9, 3e6: 6.2}
    reuse_last = {2e6: 5.95, 3e6: 5.8}
    best = {("scratch", 1e6): 6.0, ("scratch", 2e6): 5.8, ("scratch", 3e6): 5.7, ("reuse", 2e6): 5.85,
            ("reuse", 3e6): 5.75}
    for seed, jitter in enumerate([0.0, 0.01, -0.01]):
        for method, curve in (("scratch", scratch_last), ("reuse", reuse_last)):
            for params, last in curve.items():
                rows.append({"run_id": f"{method}-{params:.0f}-{seed}", "model": f"m{params:.0f}", "variant": "",
                             "parameters": params, "fraction": 0.01, "seed": seed, "method": method,
                             "valid_last": last + jitter, "test_last": last + jitter + 0.01,
                             "test_best": best[(method, params)] + jitter, "valid_best": best[(method, params)],
                             "train_last": last - 1.0, "train_best": best[(method, params)] - 0.5,
                             "epochs_past_best": 40.0, "best_step": 300, "steps": 1000})
    return rows


def test_the_report_answers_per_protocol_whether_scratch_turns_up_and_reuse_removes_it():
    by = {(e["protocol"], e["method"]): e for e in analyse(protocol_rows())}
    paper, early = by[("paper", "reuse")], by[("early-stop", "reuse")]
    assert paper["turns_upward"] and not early["turns_upward"]
    (up,) = [s for s in paper["scratch_steps"] if s["from"] == 2e6]
    assert up["change"][0] == pytest.approx(0.3) and up["change"][1] == pytest.approx(0.0, abs=1e-9)
    assert paper["removal"] == "yes: reuse does not rise, and it is lower than scratch where scratch rises"
    assert early["removal"] == "nothing to remove: scratch does not turn upward"
    gain = {g["parameters"]: g["gain"][0] for g in paper["gains"]}
    assert gain[3e6] == pytest.approx(0.4) and gain[2e6] == pytest.approx(-0.05)
    text = "\n".join(protocol_lines(protocol_rows()))
    assert "**Fraction 0.01, paper protocol (last checkpoint, valid), reuse:**" in text
    assert "- scratch turns upward with width: **yes** (paired steps: 1.00M -> 2.00M -0.100 ± 0.000 (falls); " \
           "2.00M -> 3.00M 0.300 ± 0.000 (rises))" in text
    # The gaps of scratch's 9 runs: last 1 + jitter (0, 0.01, -0.01 three times each): s = sqrt(6e-4 / 8) = 0.00866,
    # t(0.975, 8) = 2.306, half = 2.306 * 0.00866 / 3 = 0.0067; best 0.5 exactly.
    assert "| 0.01 | scratch | 1.000 ± 0.007 | 0.500 ± 0.000 |" in text


def test_the_protocols_figure_has_two_panels_on_a_log_axis(tmp_path):
    import matplotlib.image

    from reuse.plot import figure_protocols

    path = figure_protocols(protocol_rows(), tmp_path / "protocols.png", baseline=6.3)
    assert matplotlib.image.imread(path).shape[:2] == (720, 1800)  # 12 x 4.8 inches at 150 dpi: two panels


def search_rows():
    """Two variants: 'slow' scores lower on valid but is still improving at its end (not eligible); 'fast' reached
    its best by half the budget. 'slow' is lower on test too, which must not matter."""
    rows = []
    for variant, best_step, valid, test in (("slow", 1000, 5.9, 5.0), ("fast", 300, 6.0, 6.5)):
        for method in ("scratch", "reuse"):
            for params in (1e6, 2e6, 3e6):
                if method == "reuse" and params == 1e6:
                    continue
                rows.append({"variant": variant, "method": method, "parameters": params, "seed": 0, "lr": 1e-3,
                             "model": f"m{params:.0f}", "fraction": 0.01, "parent_checkpoint": "",
                             "best_step": best_step, "steps": 1000, "valid_last": valid, "valid_best": valid - 0.1,
                             "test_last": test, "test_best": test})
    return rows


def test_the_search_chooses_by_one_declared_rule_on_valid_never_test():
    assert choose(search_rows()) == {"paper": {"reuse": "fast", "scratch": "fast"},
                                     "early-stop": {"reuse": "fast", "scratch": "fast"}}
    eligible_slow = [{**r, "best_step": 400} if r["variant"] == "slow" else r for r in search_rows()]
    assert choose(eligible_slow)["paper"] == {"reuse": "slow", "scratch": "slow"}
    text = "\n".join(search_lines({"name": "s", "protocol": "paper", "search": {"slow": {}, "fast": {}}},
                                  search_rows()))
    assert "- scratch: **fast** (mean valid_last over the larger widths: slow 5.900 (not eligible), fast 6.000)" \
        in text
