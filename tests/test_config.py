"""Training settings are checked before any work: the trainer's CLI and every run a grid plans."""

import math
import sys

import pytest
import yaml

from conftest import run
from reuse.config import ConfigError, TrainConfig, check_config, config_from_dict
from reuse.sweep import SweepError, load_grid, plan

GOOD = dict(train_data="d.hdf5", output_dir="out", config="c.json")


@pytest.mark.parametrize("change,message", [
    (dict(max_steps=-5), "--max-steps must be > 0, not -5"),
    (dict(batch_size=0), "--batch-size must be > 0"),
    (dict(lr=0.0), "--lr 0.0 is outside"),
    (dict(lr=math.nan), "--lr nan is outside"),
    (dict(mlm_probability=1.5), "--mlm-probability 1.5 is outside (0, 1)"),
    (dict(fraction=0.0), "--fraction 0.0 is outside (0, 1]"),
    (dict(dropout=1.0), "--dropout 1.0 must be in [0, 1)"),
    (dict(warmup_fraction=-0.1), "--warmup-fraction -0.1 is outside [0, 1)"),
    (dict(grow_noise=-0.5), "--grow-noise must be >= 0"),
    (dict(patience=3), "--patience 3 needs --valid-data"),
    (dict(init_from="small"), "but no --grow-method"),
    (dict(grow_method="net2net"), "needs --init-from"),
    (dict(output_dir=""), "are required"),
])
def test_bad_settings_are_refused(change, message):
    with pytest.raises(ConfigError) as e:
        check_config(TrainConfig(**{**GOOD, **change}))
    assert message in str(e.value)
    check_config(TrainConfig(**GOOD))  # the unchanged settings pass


def test_the_cli_refuses_before_any_work(tmp_path):
    done = run([sys.executable, "-m", "reuse.train", "--config", "configs/bert-2L-64H.json", "--train-data",
                str(tmp_path / "missing.hdf5"), "--output-dir", str(tmp_path / "r"), "--max-steps", "-5"], check=False)
    assert done.returncode != 0 and done.stderr.strip() == "error: --max-steps must be > 0, not -5"
    assert not (tmp_path / "r").exists()  # refused before the missing data file was even looked at


def test_recipes_convert_by_field_type_and_unknown_keys_are_named():
    cfg = config_from_dict({**GOOD, "lr": "1e-3", "max_steps": 10, "compile": False})
    assert cfg.lr == 1e-3 and cfg.max_steps == 10
    with pytest.raises(ConfigError, match="unknown training option"):
        config_from_dict({**GOOD, "lrr": 1e-3})
    with pytest.raises(ConfigError, match="is not an integer"):
        config_from_dict({**GOOD, "max_steps": 1.5})
    with pytest.raises(ConfigError, match="is not a number"):
        config_from_dict({**GOOD, "lr": "fast"})


def test_a_grid_with_a_bad_recipe_is_refused_before_any_run(tmp_path, embedded_dir):
    grid = {"name": "bad", "protocol": "paper", "models": ["configs/bert-2L-64H.json"], "fractions": [0.5],
            "train_data": str(embedded_dir / "en.train.raw.bert-base-uncased.hdf5"),
            "valid_data": str(embedded_dir / "en.valid.raw.bert-base-uncased.hdf5"),
            "train": {"batch_size": 8, "max_steps": -1}, "methods": {"scratch": {}}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    with pytest.raises(SweepError, match="run bert-2L-64H-0.5D: --max-steps must be > 0"):
        plan(load_grid(path))
    grid["train"] = {"batch_size": 8, "learning_rate": 1e-3}
    path.write_text(yaml.safe_dump(grid))
    with pytest.raises(SweepError, match="unknown training option.*learning_rate"):
        plan(load_grid(path))


@pytest.mark.parametrize("text, message", [
    ("lr: abc\n", "error: lr: 'abc' is not a number"),
    ("lr: [1,\n", "is not valid YAML"),
    ("learning_rate: 1\n", "has unknown fields ['learning_rate']"),
])
def test_a_bad_args_file_is_one_line_before_any_work(tmp_path, text, message):
    from reuse.train import main

    path = tmp_path / "args.yaml"
    path.write_text(text)
    with pytest.raises(SystemExit) as stop:
        main(["--args-file", str(path), "--output-dir", str(tmp_path / "r"), "--train-data", "x.hdf5"])
    assert message in str(stop.value) and "\n" not in str(stop.value)
    assert not (tmp_path / "r").exists()


def test_an_args_file_with_numbers_as_strings_trains_as_numbers(tmp_path):
    from reuse.cli import Parser, add_dataclass_arguments, dataclass_values

    path = tmp_path / "args.yaml"
    path.write_text('lr: "1e-3"\nmax_steps: 7\n')
    parser = Parser()
    add_dataclass_arguments(parser, TrainConfig)
    cfg = config_from_dict(dataclass_values(TrainConfig, parser.parse_args(["--args-file", str(path), "--seed", "3"])))
    assert (cfg.lr, cfg.max_steps, cfg.seed) == (1e-3, 7, 3)
