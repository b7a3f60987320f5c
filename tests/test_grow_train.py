"""The new growth operators inside reuse.train: msg's ramp, LiGO's counted steps, optimizer carry-over, refusals."""

import json
import shutil

import pytest
import torch
from transformers import AutoModelForMaskedLM

from conftest import run_main
from reuse.config import config_from_dict
from reuse.train import main


@pytest.fixture(scope="module")
def small_run(embedded_dir, tmp_path_factory):
    """A 2-layer 128H BERT trained briefly (its last checkpoint keeps the trainer state)."""
    out = tmp_path_factory.mktemp("small") / "run"
    run_main(main, ["--config", "configs/bert-2L-128H.json", "--train-data",
                    str(embedded_dir / "en.train.raw.bert-base-uncased.hdf5"), "--output-dir", str(out),
                    "--batch-size", "8", "--max-steps", "6", "--lr", "2e-3"], "reuse.train")
    return out


def train(embedded_dir, out, *args, check=True):
    """reuse.train in this process (conftest.run_main)."""
    return run_main(main, ["--train-data", str(embedded_dir / "en.train.raw.bert-base-uncased.hdf5"), "--output-dir",
                           str(out), "--batch-size", "8", *args], "reuse.train", check=check)


def records(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_msg_run_starts_at_the_small_models_loss_and_ends_a_plain_checkpoint(small_run, embedded_dir, tmp_path):
    from reuse.data import load_blocks
    from reuse.evaluate import evaluate_blocks
    from reuse.tokenize import load_tokenizer

    valid = embedded_dir / "en.valid.raw.bert-base-uncased.hdf5"
    out = tmp_path / "msg"
    train(embedded_dir, out, "--init-from", str(small_run), "--config", "configs/bert-2L-192H.json",
          "--grow-method", "msg", "--grow-ramp-steps", "2", "--max-steps", "3", "--valid-data", str(valid),
          "--eval-every", "1", "--eval-batches", "2")
    growth = json.loads((out / "growth.json").read_text())
    assert growth["method"] == "msg" and growth["drift"]["max_abs_logit_diff"] < 1e-4
    evals = [r for r in records(out) if "valid_log_ppl" in r]
    small = AutoModelForMaskedLM.from_pretrained(str(small_run))
    own = evaluate_blocks(small, load_blocks(valid, 126)[:2 * 64], load_tokenizer("bert-base-uncased"),
                          torch.device("cpu"))["log_ppl"]
    # 128 -> 192 (1.5x): where net2net drifts, the masked model at mask 0 is the small model on real data.
    assert evals[0]["step"] == 0 and abs(evals[0]["valid_log_ppl"] - own) < 1e-4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_step"] >= 2  # masked models during the ramp are logged, never kept as best/
    plain = AutoModelForMaskedLM.from_pretrained(str(out))
    assert plain.config.hidden_size == 192 and not any("msg" in n for n, _ in plain.named_modules())


def test_a_run_resumed_in_the_middle_of_the_ramp_ends_where_the_uninterrupted_one_does(small_run, embedded_dir,
                                                                                          tmp_path):
    from safetensors.torch import load_file

    args = ["--init-from", str(small_run), "--config", "configs/bert-2L-192H.json", "--grow-method", "msg",
            "--grow-ramp-steps", "3", "--max-steps", "4", "--save-every", "1", "--keep-last", "5"]
    train(embedded_dir, tmp_path / "full", *args)
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "full", cut)
    for name in ("checkpoints/step-0000003", "checkpoints/step-0000004"):
        shutil.rmtree(cut / name)
    (cut / "model.safetensors").unlink()
    done = train(embedded_dir, cut, *args, "--resume")
    assert "resuming from" in done.stdout + done.stderr and "step-0000002" in done.stdout + done.stderr
    full, resumed = load_file(tmp_path / "full" / "model.safetensors"), load_file(cut / "model.safetensors")
    assert all(torch.equal(full[k], resumed[k]) for k in full)  # the masks of step 2 were restored


def test_ligo_run_counts_the_operator_steps_in_its_compute(small_run, embedded_dir, tmp_path):
    out = tmp_path / "ligo"
    train(embedded_dir, out, "--init-from", str(small_run), "--config", "configs/bert-2L-192H.json",
          "--grow-method", "ligo", "--grow-ligo-steps", "2", "--max-steps", "1")
    growth = json.loads((out / "growth.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert len(growth["ligo_losses"]) == 2 and growth["ligo_flops"] > 0
    assert summary["train_flops"] > growth["ligo_flops"]  # one normal step on top of the operator's two
    assert AutoModelForMaskedLM.from_pretrained(str(out)).config.hidden_size == 192


def test_optimizer_carry_over_runs_from_a_run_folder(small_run, embedded_dir, tmp_path):
    out = tmp_path / "carry"
    train(embedded_dir, out, "--init-from", str(small_run), "--config", "configs/bert-2L-192H.json",
          "--grow-method", "net2net", "--grow-optimizer", "--max-steps", "1")
    assert json.loads((out / "summary.json").read_text())["steps"] == 1


def test_bad_growth_options_are_refused_before_anything_is_written(small_run, embedded_dir, tmp_path):
    bare = tmp_path / "bare"  # the small model's weights without its run folder's checkpoints
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        if (small_run / name).exists():
            shutil.copy(small_run / name, bare / name)
    cases = [
        (["--init-from", str(bare), "--grow-method", "net2net", "--grow-optimizer"],
         "bare/trainer_state.pt is missing"),
        (["--init-from", str(small_run), "--grow-method", "msg", "--grow-ramp-steps", "10"], "longer than the run"),
        (["--init-from", str(small_run), "--grow-method", "lemon"], "bert grows with net2net"),
        (["--init-from", str(small_run), "--grow-method", "ligo", "--grow-optimizer"], "follows index maps"),
    ]
    for i, (args, message) in enumerate(cases):
        out = tmp_path / f"out{i}"
        done = train(embedded_dir, out, "--config", "configs/bert-2L-192H.json", "--max-steps", "3", *args,
                     check=False)
        assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert not out.exists()
    out = tmp_path / "shrink"
    done = train(embedded_dir, out, "--init-from", str(small_run), "--config", "configs/bert-2L-64H.json",
                 "--grow-method", "msg", "--max-steps", "3", check=False)
    assert "cannot shrink hidden_size" in done.stderr and not out.exists()


def test_every_growth_option_is_a_grid_key():
    cfg = config_from_dict({"grow_method": "msg", "grow_ramp_steps": 50, "grow_ligo_steps": 20,
                            "grow_ligo_lr": 0.01, "grow_optimizer": True, "grow_depth_method": "interleave",
                            "grow_mapping": "random", "grow_noise": 0.01})
    assert (cfg.grow_ramp_steps, cfg.grow_ligo_steps, cfg.grow_optimizer) == (50, 20, True)
