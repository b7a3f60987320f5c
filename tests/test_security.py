"""Inputs that must never run code, write outside their folders, or replace what another tool wrote. Each case
plants what an attacker or a slip would, and asserts one line `error: ...`, a non-zero exit, and that the planted
marker or the earlier file is untouched."""

import hashlib
import json
import sys

import pytest
import torch
import yaml

from conftest import run, run_main
from reuse.checkpoint import save_model
from reuse.model import build_model, load_config
from reuse.tokenize import load_tokenizer


def one_line_error(done) -> str:
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    return lines[0]


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def plant_remote_code(folder, marker):
    """A checkpoint folder whose config asks transformers to import its own evil.py, which writes `marker`."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil", "architectures": ["EvilForMaskedLM"],
        "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModelForMaskedLM": "evil.EvilForMaskedLM"}}))
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                   "from transformers import PretrainedConfig\n"
                                   "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n")


# ---------------------------------------------------------------------------------------------------- code
def test_a_checkpoint_that_ships_code_is_refused_and_its_code_never_runs(tmp_path, embedded_dir):
    marker = tmp_path / "pwned"
    plant_remote_code(tmp_path / "evil", marker)
    data = embedded_dir / "en.valid.raw.bert-base-uncased.hdf5"
    # "y" on stdin: the answer transformers' prompt would take if it asked
    done = run([sys.executable, "-m", "reuse.evaluate", str(tmp_path / "evil"), "--data", str(data)], check=False,
               input="y\n")
    one_line_error(done)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------- escapes
@pytest.mark.parametrize("name", ["../victim", "/tmp/reuse-victim-{}", "a/../../victim"])
def test_a_grid_name_cannot_write_outside_snap_and_results(tmp_path, name):
    from reuse.sweep import main

    grid = yaml.safe_load(open("configs/demo.yaml"))
    grid["name"] = name.format(tmp_path.name)
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "report.md").write_text("someone's report")
    done = run_main(main, [tmp_path / "grid.yaml"], "reuse.sweep", check=False)
    assert "must be a plain name" in one_line_error(done)
    assert (victim / "report.md").read_text() == "someone's report" and sorted(victim.iterdir()) == [
        victim / "report.md"]


# ---------------------------------------------------------------------------------------------------- overwrites
@pytest.fixture()
def trained_folders(tmp_path):
    """A fine-tune's folder with its result, and a grown model (reuse.grow's layout: no run_config.json)."""
    finetuned = tmp_path / "ft"
    finetuned.mkdir()
    (finetuned / "finetune.json").write_text('{"best_score": 0.7}')
    torch.manual_seed(0)
    grown = tmp_path / "grown"
    save_model(grown, build_model(load_config("configs/bert-2L-64H.json")), load_tokenizer("bert-base-uncased"))
    (grown / "growth.json").write_text("{}")
    return finetuned, grown


def test_a_fine_tune_args_file_with_a_string_for_a_flag_is_refused(tmp_path, trained_folders):
    from reuse.finetune import main

    finetuned, grown = trained_folders
    before = digest(finetuned / "finetune.json")
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"task": "next", "output_dir": str(finetuned), "overwrite": "no"}))
    done = run_main(main, [str(grown), "--args-file", str(args)], "reuse.finetune", check=False)
    assert "overwrite: 'no' is not true or false" in one_line_error(done)
    assert digest(finetuned / "finetune.json") == before


@pytest.mark.parametrize("value,message", [(None, "output_dir: None is not a string"),
                                           (["a"], "output_dir: ['a'] is not a string"),
                                           (True, "seed: True is not an integer")])
def test_a_train_args_file_with_the_wrong_type_is_refused_before_any_folder(tmp_path, value, message):
    from reuse.train import main

    args = tmp_path / "args.json"
    key = "seed" if value is True else "output_dir"
    args.write_text(json.dumps({"config": "configs/bert-2L-64H.json", "train_data": "x.hdf5",
                                "output_dir": str(tmp_path / "run"), key: value}))
    done = run_main(main, ["--args-file", str(args)], "reuse.train", check=False)
    assert message in one_line_error(done)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["args.json"]  # no ./None, no run folder


def test_training_into_a_grown_model_folder_is_refused(tmp_path, trained_folders, embedded_dir):
    from reuse.train import main

    _, grown = trained_folders
    before = {p.name: digest(p) for p in grown.iterdir() if p.is_file()}
    done = run_main(main, ["--config", "configs/bert-2L-64H.json", "--output-dir", str(grown), "--train-data",
                           str(embedded_dir / "en.train.raw.bert-base-uncased.hdf5"), "--batch-size", "8",
                           "--max-steps", "1"], "reuse.train", check=False)
    assert "holds files but no run_config.json" in one_line_error(done)
    assert {p.name: digest(p) for p in grown.iterdir() if p.is_file()} == before


def test_evaluate_never_writes_its_table_over_the_data(tmp_path, trained_folders, embedded_dir):
    import shutil

    from reuse.evaluate import main

    _, grown = trained_folders
    data = tmp_path / "en.valid.raw.bert-base-uncased.hdf5"
    shutil.copy(embedded_dir / data.name, data)
    shutil.copy(embedded_dir / "en.valid.raw.bert-base-uncased.line", tmp_path)
    before = digest(data)
    done = run_main(main, [str(grown), "--data", str(data), "--out", str(data)], "reuse.evaluate", check=False)
    assert "give a new .csv or .json file" in one_line_error(done)
    assert digest(data) == before


@pytest.mark.parametrize("section", ["train", "methods"])
def test_a_grid_recipe_cannot_send_every_run_into_one_folder(tmp_path, section):
    from reuse.sweep import main

    grid = yaml.safe_load(open("configs/demo.yaml"))
    if section == "train":
        grid["train"]["output_dir"] = str(tmp_path / "X")
    else:
        grid["methods"]["scratch"]["output_dir"] = str(tmp_path / "X")
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    done = run_main(main, [tmp_path / "grid.yaml", "--plan"], "reuse.sweep", check=False)
    assert "its recipe sets output_dir, which the sweep sets for each run" in one_line_error(done)
    assert not (tmp_path / "X").exists()


# ---------------------------------------------------------------------------------------------------- two at once
def test_a_second_sweep_of_the_same_grid_is_refused_naming_the_first(tmp_path, embedded_dir):
    import subprocess

    from test_sweep import tiny_grid

    from reuse.sweep import main

    snap = tmp_path / "snap"
    holder = subprocess.Popen([sys.executable, "-c", "import time; from reuse.checkpoint import RunLock; "
                               f"lock = RunLock({str(snap)!r}); lock.acquire(); print('held', flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        done = run_main(main, [tiny_grid(tmp_path, embedded_dir), "--snap", snap, "--results",
                               tmp_path / "results"], "reuse.sweep", check=False)
        message = one_line_error(done)
        assert "another sweep of grid tiny is running" in message and f"process {holder.pid}" in message
        assert not (tmp_path / "results").exists()
    finally:
        holder.kill()


# ---------------------------------------------------------------------------------------------------- model configs
@pytest.mark.parametrize("change,message", [
    ({"num_hidden_layers": -1}, "num_hidden_layers must be a positive integer, not -1"),
    ({"num_attention_heads": 3}, "hidden_size 64 is not divisible by num_attention_heads 3"),
    ({"hidden_size": "64"}, "Field 'hidden_size' expected int, got str (value: '64')"),
    ({"intermediate_size": 2.5}, "Field 'intermediate_size' expected int, got float (value: 2.5)"),
    ({"vocab_size": 0}, "vocab_size must be a positive integer, not 0"),
    ({"hidden_act": "swishy"}, "unknown activation 'swishy'"),
    ({"max_position_embeddings": 64}, "--block-size 126 needs 128 positions but the model has "
                                      "max_position_embeddings 64"),
])
def test_a_model_config_that_cannot_train_is_one_line_before_any_work(tmp_path, embedded_dir, change, message):
    from reuse.train import main

    config = {**json.load(open("configs/bert-2L-64H.json")), **change}
    (tmp_path / "bad.json").write_text(json.dumps(config))
    done = run_main(main, ["--config", str(tmp_path / "bad.json"), "--output-dir", str(tmp_path / "run"),
                           "--train-data", str(embedded_dir / "en.train.raw.bert-base-uncased.hdf5"),
                           "--batch-size", "8", "--max-steps", "1"], "reuse.train", check=False)
    assert message in one_line_error(done)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------------- token files
def token_file(folder, tokens, as_group=False):
    """A token file in this project's layout (HDF5 `tokens` + `.line` offsets) holding `tokens` as given."""
    import h5py
    import numpy as np

    path = folder / "bad.raw.bert-base-uncased.hdf5"
    with h5py.File(path, "w") as h5:
        if as_group:
            h5.create_group("tokens")
        else:
            h5.create_dataset("tokens", data=np.asarray(tokens))
        h5.attrs["tokenizer"] = "bert-base-uncased"
    path.with_suffix(".line").write_text(f"0\n{len(tokens)}\n")
    return path


@pytest.mark.parametrize("tokens,as_group,message", [
    ([5000.5] * 4000, False, "holds float64 tokens, not integer ids"),
    ([40000] + [1] * 3999, False, "holds token ids from 1 to 40000, outside the vocabulary's 0..30521"),
    ([-3] + [1] * 3999, False, "holds token ids from -3 to 1"),
    ([1] * 4000, True, "has no 1-D dataset 'tokens'"),
])
def test_a_token_file_the_model_cannot_read_is_one_line(tmp_path, tokens, as_group, message):
    from reuse.evaluate import main as evaluate
    from reuse.train import main as train

    data = token_file(tmp_path, tokens, as_group)
    done = run_main(train, ["--config", "configs/bert-2L-64H.json", "--output-dir", str(tmp_path / "run"),
                            "--train-data", str(data), "--batch-size", "8", "--max-steps", "1"], "reuse.train",
                    check=False)
    assert message in one_line_error(done) and not (tmp_path / "run").exists()
    torch.manual_seed(0)
    save_model(tmp_path / "ck", build_model(load_config("configs/bert-2L-64H.json")),
               load_tokenizer("bert-base-uncased"))
    done = run_main(evaluate, [str(tmp_path / "ck"), "--data", str(data)], "reuse.evaluate", check=False)
    assert message in one_line_error(done)
