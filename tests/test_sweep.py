import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ROOT, run_main
from reuse.plot import curves, figure_4a
from reuse.results import read_results as read_rows
from reuse.runs import parse_run_name
from reuse.sweep import load_grid, plan


def tiny_grid(tmp_path, embedded_dir, **changes):
    grid = {"name": "tiny", "protocol": "early-stop", "family": "bert", "models": ["configs/bert-2L-64H.json", "configs/bert-2L-128H.json"],
            "fractions": [0.5], "train_data": str(embedded_dir / "en.train.raw.bert-base-uncased.hdf5"),
            "valid_data": str(embedded_dir / "en.valid.raw.bert-base-uncased.hdf5"),
            # heldout_batches: the end-of-run scores on 2 batches a split, not whole splits (seconds per run)
            "train": {"batch_size": 8, "max_steps": 4, "eval_every": 2, "eval_batches": 1, "save_every": 2,
                      "patience": 10, "heldout_batches": 2},
            "methods": {"scratch": {"lr": 1e-3}, "reuse": {"grow_method": "net2net", "lr": 5e-4}}}
    grid.update(changes)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def sweep(grid, tmp_path, *extra, check=True):
    """reuse.sweep in this process (its runs are still processes of their own)."""
    from reuse.sweep import main

    return run_main(main, [grid, "--snap", tmp_path / "snap", "--results", tmp_path / "results", *extra],
                    "reuse.sweep", check=check)


def test_demo_grid_plans_scratch_and_reuse_ladders_with_seeds():
    runs = plan(load_grid("configs/demo.yaml"))
    ids = {r.run_id: r for r in runs}
    assert len(runs) == 3 * 5 + 5  # 3 seeds at 0.5%, one at 5%; per seed 3 scratch + 2 reuse
    assert ids["bert-n2n-2L-128H-0.005D"].parent == "bert-2L-64H-0.005D"
    assert ids["bert-n2n-2L-192H-0.005D-s2"].parent == "bert-n2n-2L-128H-0.005D-s2"
    assert ids["bert-n2n-2L-192H-0.05D"].parent == "bert-n2n-2L-128H-0.05D"
    scratch, reuse = ids["bert-2L-192H-0.005D"].args, ids["bert-n2n-2L-192H-0.005D"].args
    # the same recipe (the search chose lr 1e-3 for both) but for the growth settings
    differ = {k for k in set(scratch) | set(reuse) if scratch.get(k) != reuse.get(k)}
    assert differ == {"grow_method", "grow_noise"} and scratch["lr"] == reuse["lr"] == 1e-3
    assert ids["bert-n2n-2L-192H-0.005D"].parent_checkpoint == "best"
    # the paper's protocol: one fixed budget for every run, no patience
    assert {r.args["max_steps"] for r in runs} == {800} and not any("patience" in r.args for r in runs)
    order = [r.run_id for r in runs]
    assert order.index("bert-2L-64H-0.005D-s1") < order.index("bert-n2n-2L-128H-0.005D-s1")
    assert len(plan(load_grid("configs/paper.yaml"))) == 6 * (10 + 9)


def test_run_names_parse_like_the_released_checkpoints():
    assert parse_run_name("bert-12L-64H-0.001D") == {"family": "bert", "method": "scratch", "fraction": 0.001,
                                                     "layers": 12, "hidden": 64, "seed": 0, "grow": "",
                                                     "language": ""}
    assert parse_run_name("bert-n2n-12L-640H-0.009D")["method"] == "reuse"
    assert parse_run_name("checkpoints") is None


@pytest.mark.parametrize("change,message", [
    (dict(models=["configs/bert-2L-64H.json", "configs/missing.json"]), "configs/missing.json, which does not exist"),
    (dict(fractions=[0.5, 1.5]), "fraction 1.5 is outside"),
    (dict(models=["configs/bert-2L-128H.json", "configs/bert-2L-64H.json"]), "cannot form a reuse chain"),
    (dict(valid_data=""), "sets patience but no valid_data"),
    (dict(fractions=0.5), "'fractions' must be a non-empty list"),
    (dict(methods={"scratch": {}, "grown": {}}), "unknown methods ['grown']"),
    (dict(seeds=[0, "x"]), "list of integers"),
])
def test_bad_grids_are_refused(tmp_path, embedded_dir, change, message):
    done = sweep(tiny_grid(tmp_path, embedded_dir, **change), tmp_path, check=False)
    assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "snap").exists()


@pytest.mark.slow  # runs a 3-run sweep twice, about 40 s
def test_a_grid_that_is_not_yaml_is_refused_in_one_line(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: [unclosed\n")
    done = sweep(grid, tmp_path, check=False)
    assert done.returncode != 0 and "is not valid YAML" in done.stderr and "Traceback" not in done.stderr
    grid.write_bytes(b"\xff\xfe\x00name")
    done = sweep(grid, tmp_path, check=False)
    assert done.returncode != 0 and done.stderr.startswith("error:") and "Traceback" not in done.stderr


@pytest.mark.slow  # runs a 3-run sweep twice, about 40 s
def test_killed_sweep_resumes_without_redoing_finished_runs(tmp_path, embedded_dir):
    grid = tiny_grid(tmp_path, embedded_dir)
    cmd = [sys.executable, "-m", "reuse.sweep", str(grid), "--snap", str(tmp_path / "snap"), "--results",
           str(tmp_path / "results")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    first = tmp_path / "snap" / "bert-2L-64H-0.5D" / "summary.json"
    deadline = time.time() + 180
    while not first.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_at = first.stat().st_mtime
    assert not (tmp_path / "results" / "results.csv").exists()
    done = sweep(grid, tmp_path)
    assert "1/3 runs already done" in done.stdout
    assert first.stat().st_mtime == finished_at
    rows = read_rows(tmp_path / "results" / "results.csv")
    assert sorted(r["run_id"] for r in rows) == ["bert-2L-128H-0.5D", "bert-2L-64H-0.5D", "bert-n2n-2L-128H-0.5D"]
    reused = next(r for r in rows if r["method"] == "reuse")
    assert reused["parent"] == "bert-2L-64H-0.5D" and reused["steps"] == 4
    assert (tmp_path / "results" / "curves.png").stat().st_size > 10_000
    report = (tmp_path / "results" / "report.md").read_text()
    assert "Unigram baseline" in report and "bert-n2n-2L-128H-0.5D" in report
    assert "Data the reuse was worth" in report
    from reuse.data import inspect_tokens
    blocks = inspect_tokens(embedded_dir / "en.train.raw.bert-base-uncased.hdf5").num_tokens // 126
    assert all(int(r["data_tokens"]) == (blocks // 2) * 126 for r in rows)  # unique tokens of the 50% fraction
    growth = json.loads((tmp_path / "snap" / "bert-n2n-2L-128H-0.5D" / "growth.json").read_text())
    assert growth["method"] == "net2net"
    again = sweep(grid, tmp_path)
    assert "3/3 runs already done" in again.stdout


def test_failed_run_skips_only_its_dependants(tmp_path, embedded_dir):
    # The smallest model's runs read a training file that is not there: they fail at start, the rest do not.
    grid = tiny_grid(tmp_path, embedded_dir, model_args={"configs/bert-2L-64H.json": {
        "train_data": str(tmp_path / "missing.hdf5")}})
    fields = yaml.safe_load(grid.read_text())
    fields["train"]["max_steps"] = 2
    grid.write_text(yaml.safe_dump(fields))
    done = sweep(grid, tmp_path, check=False)
    assert done.returncode == 1
    assert "bert-2L-64H-0.5D failed" in done.stdout and "skipped bert-n2n-2L-128H-0.5D" in done.stdout
    assert (tmp_path / "snap" / "bert-2L-128H-0.5D" / "summary.json").exists()  # the independent run finished
    assert "missing.hdf5 does not exist" in (tmp_path / "snap" / "logs" / "bert-2L-64H-0.5D.log").read_text()
    assert len(read_rows(tmp_path / "results" / "results.csv")) == 1


def test_results_folder_of_another_grid_is_refused(tmp_path, embedded_dir):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "grid.yaml").write_text(yaml.safe_dump({"name": "other"}))
    done = sweep(tiny_grid(tmp_path, embedded_dir), tmp_path, check=False)
    assert done.returncode != 0 and "results of a different grid" in done.stderr


def test_submitit_local_executor_runs_a_grid(tmp_path, embedded_dir):
    grid = tiny_grid(tmp_path, embedded_dir, models=["configs/bert-2L-64H.json"], methods={"scratch": {}})
    sweep(grid, tmp_path, "--executor", "local")
    rows = read_rows(tmp_path / "results" / "results.csv")
    assert [r["run_id"] for r in rows] == ["bert-2L-64H-0.5D"]


def test_figure_4a_draws_one_curve_per_method_and_fraction(tmp_path):
    table = tmp_path / "results.csv"
    table.write_text("run_id,parameters,fraction,method,final_log_ppl\n"
                     "a,1e6,0.1,scratch,6.0\nb,2e6,0.1,scratch,6.2\nc,2e6,0.1,reuse,5.8\n"
                     "d,1e6,0.5,scratch,5.5\ne,2e6,0.5,scratch,5.2\nf,2e6,0.5,reuse,5.1\n")
    rows = read_rows(table)
    groups = curves(rows, "parameters", "final_log_ppl")
    # the reuse curve starts at the shared smallest model; one seed: no interval
    assert groups[("reuse", 0.1)] == [(1e6, 6.0, None), (2e6, 5.8, None)]
    assert groups[("scratch", 0.5)] == [(1e6, 5.5, None), (2e6, 5.2, None)]
    png = figure_4a(rows, tmp_path / "fig.png", baseline=7.0)
    assert png.stat().st_size > 10_000 and (tmp_path / "fig.pdf").stat().st_size > 1_000


@pytest.mark.slow  # starts a Jupyter kernel, about 20 s
def test_notebook_runs_headless_on_tiny_checkpoints(tmp_path, embedded_dir, bert_tokenizer):
    import nbformat
    from nbclient import NotebookClient
    import torch
    from reuse.checkpoint import save_model
    from reuse.model import build_model, load_config

    root = tmp_path / "ckpts"
    for name, config in [("bert-2L-64H-0.1D", "bert-2L-64H"), ("bert-2L-128H-0.1D", "bert-2L-128H"),
                         ("bert-n2n-2L-128H-0.1D", "bert-2L-128H")]:
        torch.manual_seed(len(name))
        save_model(root / name, build_model(load_config(f"configs/{config}.json")), bert_tokenizer)
    env = {"CHECKPOINTS": str(root), "EVAL_FILE": str(embedded_dir / "en.valid.raw.bert-base-uncased.hdf5"),
           "BATCH_SIZE": "64", "DEVICE": "cpu", "CACHE": str(tmp_path / "eval.csv"),
           "FIGURE": str(tmp_path / "curves.png")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        nb = nbformat.read(ROOT / "plot_curves.ipynb", as_version=4)
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    cached = (tmp_path / "eval.csv").read_text().splitlines()
    assert len(cached) == 4
    values = [float(line.split(",")[2]) for line in cached[1:]]
    assert all(9 < v < 11 for v in values)  # untrained models sit near log(30522) = 10.3
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)


def test_transfer_demo_grid_plans_pretraining_then_scratch_and_finetune_per_target(tmp_path):
    runs = plan(load_grid("configs/transfer_demo.yaml"))
    ids = {r.run_id: r for r in runs}
    assert len(runs) == 2 * (1 + 2 * 3 * 2)
    pre = ids["gpt2-4L-128H-en"]
    assert pre.method == "pretrain" and pre.train_data.endswith("en.train.raw.roberta-bpe-8192.hdf5")
    tuned = ids["gpt2-en2es-4L-128H-0.1D"]
    assert tuned.parent == "gpt2-4L-128H-en" and tuned.target == "es" and tuned.args["lr"] == 5e-4
    assert tuned.train_data.endswith("es.train.raw.roberta-bpe-8192.hdf5") and tuned.args["patience"] == 3
    scratch = ids["gpt2-4L-128H-fr-0.01D"]
    assert scratch.parent == "" and scratch.target == "fr" and scratch.fraction == 0.01
    order = [r.run_id for r in runs]
    assert order.index("gpt2-4L-128H-en") < order.index("gpt2-en2fr-4L-128H-0.01D")
    from reuse.sweep import train_command
    train_command(tuned, load_grid("configs/transfer_demo.yaml"), tmp_path)
    args = json.loads((tmp_path / "args" / "gpt2-en2es-4L-128H-0.1D.json").read_text())
    assert args["init_from"] == str(tmp_path / "gpt2-4L-128H-en") and args["grow_method"] == ""
    assert args["patience"] == 3 and args["config"] == ""  # fine-tuned as it is: the checkpoint's own config


def test_every_growth_option_of_a_grid_reaches_the_trained_runs_config(tmp_path, embedded_dir):
    growth = {"grow_method": "net2net", "grow_depth_method": "interleave", "grow_mapping": "random",
              "grow_noise": 0.001}
    grid = tiny_grid(tmp_path, embedded_dir, models=["configs/bert-2L-64H.json", "configs/bert-2L-128H.json"],
                     methods={"reuse": {**growth, "lr": 5e-4}},
                     train={"batch_size": 8, "max_steps": 2, "eval_every": 2, "eval_batches": 1, "save_every": 2,
                            "patience": 10, "heldout_batches": 2})
    sweep(grid, tmp_path)
    reused = tmp_path / "snap" / "bert-n2n-2L-128H-0.5D"
    config = json.loads((reused / "run_config.json").read_text())
    assert {k: config[k] for k in growth} == growth
    report = json.loads((reused / "growth.json").read_text())
    assert (report["depth_method"], report["mapping"], report["noise"]) == ("interleave", "random", 0.001)
    # the child starts from the parent's best checkpoint
    assert config["init_from"] == str(tmp_path / "snap" / "bert-2L-64H-0.5D" / "best")
    scratch = json.loads((tmp_path / "snap" / "bert-2L-64H-0.5D" / "run_config.json").read_text())
    assert scratch["grow_noise"] == 0.0  # growth options stay off the runs that do not grow


def test_sweep_hands_the_trainer_one_typed_settings_file(tmp_path):
    from reuse.sweep import Run, train_command

    run = Run(run_id="bert-2L-64H-0.5D", model="configs/bert-2L-64H.json", method="scratch", fraction=0.5,
              args={"lr": "1e-3", "max_steps": 3, "grow_noise": 0.5, "compile": False})
    cmd = train_command(run, {"train_data": "t.hdf5", "valid_data": "v.hdf5"}, tmp_path, threads=2)
    assert cmd[-2:] == ["--args-file", str(tmp_path / "args" / "bert-2L-64H-0.5D.json")] and "--lr" not in cmd
    args = json.loads((tmp_path / "args" / "bert-2L-64H-0.5D.json").read_text())
    assert args["lr"] == 1e-3 and args["max_steps"] == 3 and args["threads"] == 2 and args["compile"] is False
    assert args["grow_noise"] == 0.0  # a scratch run grows nothing: the grid's growth options are not passed
    assert args["output_dir"] == str(tmp_path / "bert-2L-64H-0.5D") and args["fraction"] == 0.5


def test_folder_evaluation_includes_gpt2_and_seeded_runs(tmp_path, embedded_dir, bert_tokenizer):
    import math

    import torch
    from reuse.checkpoint import save_model
    from reuse.evaluate import evaluate_folder
    from reuse.model import build_model, load_config

    root = tmp_path / "ckpts"
    gpt2 = load_config("configs/gpt2-2L-64H.json")
    gpt2.vocab_size = len(bert_tokenizer)  # one data file for every run: the same vocabulary
    for name, config in [("bert-2L-64H-0.1D", load_config("configs/bert-2L-64H.json")), ("gpt2-2L-64H-0.1D", gpt2),
                         ("gpt2-2L-64H-0.1D-s2", gpt2)]:
        torch.manual_seed(len(name))
        save_model(root / name, build_model(config), bert_tokenizer)
    (root / "logs").mkdir()  # not a run: left out
    rows = {r["run_id"]: r for r in evaluate_folder(root, embedded_dir / "en.valid.raw.bert-base-uncased.hdf5")}
    assert sorted(rows) == ["bert-2L-64H-0.1D", "gpt2-2L-64H-0.1D", "gpt2-2L-64H-0.1D-s2"]
    assert rows["gpt2-2L-64H-0.1D-s2"]["seed"] == 2 and rows["gpt2-2L-64H-0.1D"]["method"] == "scratch"
    for row in rows.values():  # untrained models sit near the uniform loss log(30522) = 10.33
        assert abs(row["final_log_ppl"] - math.log(30522)) < 0.5
    assert rows["gpt2-2L-64H-0.1D"]["final_log_ppl"] != rows["gpt2-2L-64H-0.1D-s2"]["final_log_ppl"]
