import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, run, run_main
from reuse.data import IGNORE_INDEX, mask_tokens, special_ids
from reuse.evaluate import evaluate_original
from reuse.model import build_model, load_config, masked_lm_loss

TINY = ["--config", "configs/bert-2L-64H.json", "--batch-size", "8", "--eval-batches", "2", "--log-every", "1"]


def data_args(embedded_dir, valid=True):
    args = ["--train-data", str(embedded_dir / "en.train.raw.bert-base-uncased.hdf5")]
    if valid:
        args += ["--valid-data", str(embedded_dir / "en.valid.raw.bert-base-uncased.hdf5")]
    return args


def train(args, check=True):
    """reuse.train in this process (conftest.run_main); the tests that kill a run or compare bitwise across runs
    start real processes (train_process)."""
    from reuse.train import main

    return run_main(main, args, "reuse.train", check=check)


def train_process(args, **kw):
    return run([sys.executable, "-m", "reuse.train", *args], **kw)


def losses(run_dir):
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


def test_masked_only_head_equals_full_logits_loss(bert_tokenizer):
    torch.manual_seed(0)
    model = build_model(load_config("configs/bert-2L-64H.json")).eval()
    ids = torch.randint(1000, 5000, (4, 20))
    inputs, labels = mask_tokens(ids, special_ids(bert_tokenizer), 103, 30522, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = masked_lm_loss(model, inputs, labels, reduction="mean")
        reference = model(input_ids=inputs, labels=labels).loss
    assert torch.allclose(ours, reference, atol=1e-5)


def test_loss_falls_and_checkpoints_load_without_project_code(embedded_dir, tmp_path):
    out = tmp_path / "run"
    train([*TINY, *data_args(embedded_dir), "--output-dir", str(out), "--max-steps", "60", "--lr", "2e-3",
           "--eval-every", "20", "--save-every", "20", "--batch-size", "16"])
    summary = json.loads((out / "summary.json").read_text())
    valid = [json.loads(line)["valid_log_ppl"] for line in (out / "log.jsonl").read_text().splitlines()
             if "valid_log_ppl" in line]
    assert len(valid) == 3 and valid[-1] < valid[0] - 0.5
    assert summary["final_valid_log_ppl"] == pytest.approx(valid[-1])
    assert summary["best_valid_log_ppl"] == pytest.approx(min(valid))
    assert summary["steps"] == 60 and summary["tokens_seen"] == 60 * 16 * 128
    assert summary["train_flops"] > 0 and summary["parameters"] > 2_000_000
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000040", "step-0000060"]
    config = json.loads((out / "run_config.json").read_text())
    # Resolved: every derived value filled in, and the model's own config recorded beside the options.
    assert (config["max_steps"], config["warmup_steps"], config["micro_batch_size"]) == (60, 3, 16)
    assert (config["dropout"], config["device"], config["world_size"]) == (0.1, "cpu", 1)
    assert config["model"]["hidden_size"] == 64 and config["model"]["num_hidden_layers"] == 2
    assert config["tokenizer"] == "bert-base-uncased"
    # Loading needs nothing from this project: a fresh interpreter with transformers only.
    code = ("import sys; from transformers import AutoModelForMaskedLM, AutoTokenizer\n"
            "for d in sys.argv[1:]:\n"
            "    m = AutoModelForMaskedLM.from_pretrained(d); t = AutoTokenizer.from_pretrained(d)\n"
            "    assert type(m).__name__ == 'BertForMaskedLM' and len(t) == 30522\n"
            "    assert m.cls.predictions.decoder.weight.data_ptr() == m.bert.embeddings.word_embeddings.weight.data_ptr()\n"
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code, str(out), str(out / "best"), str(out / "checkpoints" / "step-0000060")],
                          capture_output=True, text=True, cwd="/")
    assert done.stdout.strip() == "ok", done.stderr


@pytest.mark.slow  # two torchrun launches of gloo processes, about 30 s
def test_two_processes_give_the_losses_of_one(embedded_dir, tmp_path):
    common = [*TINY, *data_args(embedded_dir, valid=False), "--max-steps", "4", "--dropout", "0", "--device", "cpu",
              "--threads", "1"]
    train_process([*common, "--output-dir", str(tmp_path / "one"), "--micro-batch-size", "2"])
    run(["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "reuse.train", *common,
         "--output-dir", str(tmp_path / "two")])
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == 4
    np.testing.assert_allclose(one, two, rtol=1e-5)
    assert one[0] != one[-1]


def test_killed_run_resumes_bitwise(embedded_dir, tmp_path):
    common = [*TINY, *data_args(embedded_dir), "--max-steps", "40", "--save-every", "10", "--eval-every", "10",
              "--keep-last", "1"]
    train_process([*common, "--output-dir", str(tmp_path / "straight")])
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "reuse.train", *common, "--output-dir", str(killed)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "step-0000010").exists() and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists()
    assert all(p.name.startswith("step-") for p in (killed / "checkpoints").iterdir())
    # Re-running the same command continues from the last checkpoint.
    done = train_process([*common, "--output-dir", str(killed)])
    assert "resuming from" in done.stdout + done.stderr
    a = json.loads((tmp_path / "straight" / "summary.json").read_text())
    b = json.loads((killed / "summary.json").read_text())
    assert a["final_valid_log_ppl"] == b["final_valid_log_ppl"]
    assert losses(tmp_path / "straight")[-1] == losses(killed)[-1]
    assert (tmp_path / "straight" / "model.safetensors").read_bytes() == (killed / "model.safetensors").read_bytes()


def test_evaluation_reproduces_hand_computed_value(tmp_path, bert_tokenizer):
    """The original protocol written out longhand: seeds, the DataLoader's draw, masks, full logits, batch means."""
    import h5py
    from reuse.tokenize import tokenize_file

    text = tmp_path / "v.raw"
    text.write_text("the quick brown fox jumps over the lazy dog near the river bank today\n" * 30)
    tokenize_file(text, bert_tokenizer, "bert-base-uncased")
    data = tmp_path / "v.raw.bert-base-uncased.hdf5"
    torch.manual_seed(3)
    model = build_model(load_config("configs/bert-2L-64H.json")).eval()
    block, batch = 10, 3
    got = evaluate_original(model, bert_tokenizer, data, torch.device("cpu"), batch_size=batch, block_size=block)

    with h5py.File(data) as h5:
        tokens = torch.from_numpy(h5["tokens"][:].astype(np.int64))
    n_blocks = len(tokens) // block - 1
    rows = torch.stack([torch.cat([torch.tensor([101]), tokens[i * block:(i + 1) * block], torch.tensor([102])])
                        for i in range(n_blocks)])
    torch.manual_seed(0)
    torch.empty((), dtype=torch.int64).random_()  # the DataLoader iterator's base-seed draw
    batch_losses = []
    for start in range(0, n_blocks, batch):
        ids = rows[start:start + batch]
        p = torch.full(ids.shape, 0.15)
        p[:, 0] = p[:, -1] = 0.0
        masked = torch.bernoulli(p).bool()
        replaced = torch.bernoulli(torch.full(ids.shape, 0.8)).bool() & masked
        randomized = torch.bernoulli(torch.full(ids.shape, 0.5)).bool() & masked & ~replaced
        random_ids = torch.randint(30522, ids.shape)
        inputs = ids.clone()
        inputs[replaced] = 103
        inputs[randomized] = random_ids[randomized]
        with torch.no_grad():
            logits = model(input_ids=inputs).logits
        if masked.any():
            batch_losses.append(F.cross_entropy(logits[masked], ids[masked]).item())
    assert got["batches"] == len(batch_losses) == -(-n_blocks // batch)
    assert got["log_ppl"] == pytest.approx(sum(batch_losses) / len(batch_losses), rel=1e-5)


def test_evaluate_cli_writes_one_row_per_checkpoint(embedded_dir, tmp_path):
    out = tmp_path / "run"
    train([*TINY, *data_args(embedded_dir, valid=False), "--output-dir", str(out), "--max-steps", "2"])
    table = tmp_path / "eval.csv"
    done = run([sys.executable, "-m", "reuse.evaluate", str(out), str(out / "checkpoints" / "step-0000002"),
                "--data", str(embedded_dir / "en.valid.raw.bert-base-uncased.hdf5"), "--max-batches", "2",
                "--out", str(table)])
    lines = table.read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("checkpoint,parameters,log_ppl")
    values = [float(line.split(",")[2]) for line in lines[1:]]
    assert values[0] == values[1] and 9 < values[0] < 11  # the same weights, near log(30522) = 10.3 untrained
    assert f"{values[0]:.4f}" in done.stdout


# ---------------------------------------------------------------------------------------------------- bad input
def test_vocabulary_mismatch_is_refused(embedded_dir, tmp_path):
    done = train(["--config", "configs/roberta-2L-64H.json", *data_args(embedded_dir), "--output-dir",
                  str(tmp_path / "r"), "--max-steps", "1"], check=False)
    assert done.returncode != 0 and "vocab_size 50262 but tokenizer 'bert-base-uncased' has 30522" in done.stderr


def test_missing_or_foreign_data_is_refused(tmp_path):
    done = train([*TINY, "--train-data", str(tmp_path / "nope.hdf5"), "--output-dir", str(tmp_path / "r")],
                 check=False)
    assert done.returncode != 0 and "nope.hdf5 does not exist" in done.stderr
    (tmp_path / "x.hdf5").write_text("text")
    done = train([*TINY, "--train-data", str(tmp_path / "x.hdf5"), "--output-dir", str(tmp_path / "r")], check=False)
    assert done.returncode != 0 and "not a readable HDF5" in done.stderr and "Traceback" not in done.stderr


def test_init_from_a_folder_that_is_not_a_checkpoint_is_refused(embedded_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    done = train([*data_args(embedded_dir), "--init-from", str(tmp_path / "empty"), "--output-dir",
                  str(tmp_path / "r")], check=False)
    assert done.returncode != 0 and "is not a checkpoint folder" in done.stderr


def test_fraction_too_small_for_one_batch_is_refused(embedded_dir, tmp_path):
    done = train([*TINY, *data_args(embedded_dir), "--fraction", "0.0005", "--batch-size", "256",
                  "--output-dir", str(tmp_path / "r")], check=False)
    assert done.returncode != 0 and "fewer than one batch of 256" in done.stderr
    assert not (tmp_path / "r").exists()


def test_patience_without_valid_data_is_refused_before_any_work(embedded_dir, tmp_path):
    done = train([*TINY, *data_args(embedded_dir, valid=False), "--patience", "3", "--output-dir",
                  str(tmp_path / "r")], check=False)
    assert done.returncode != 0 and "--patience 3 needs --valid-data" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "r").exists()


def test_resume_with_changed_arguments_is_recorded_and_configs_travel_with_checkpoints(embedded_dir, tmp_path):
    out = tmp_path / "r"
    train([*TINY, *data_args(embedded_dir), "--output-dir", str(out), "--max-steps", "2", "--eval-every", "2",
           "--save-every", "2"])
    first = json.loads((out / "run_config.json").read_text())
    for folder in (out / "best", *(out / "checkpoints").iterdir()):
        assert json.loads((folder / "run_config.json").read_text()) == first
    train([*TINY, *data_args(embedded_dir), "--output-dir", str(out), "--max-steps", "4", "--eval-every", "2",
           "--save-every", "2", "--lr", "1e-3", "--resume"])
    history = [json.loads(line) for line in (out / "run_history.jsonl").read_text().splitlines()]
    assert len(history) == 1 and history[0]["changed"]["lr"] == [first["lr"], 1e-3]
    assert history[0]["changed"]["max_steps"] == [2, 4] and "--resume" in history[0]["command"]
    assert json.loads((out / "run_config.json").read_text())["lr"] == 1e-3
    assert json.loads((out / "checkpoints" / "step-0000004" / "run_config.json").read_text())["lr"] == 1e-3
    assert json.loads((out / "summary.json").read_text())["steps"] == 4


def test_output_folder_of_another_run_is_refused_unless_overwrite(embedded_dir, tmp_path):
    out = tmp_path / "r"
    train([*TINY, *data_args(embedded_dir, valid=False), "--output-dir", str(out), "--max-steps", "2"])
    before = (out / "model.safetensors").read_bytes()
    done = train([*TINY, *data_args(embedded_dir, valid=False), "--output-dir", str(out), "--max-steps", "2",
                  "--lr", "1e-3"], check=False)
    assert done.returncode != 0 and "holds another run" in done.stderr
    assert (out / "model.safetensors").read_bytes() == before
    train([*TINY, *data_args(embedded_dir, valid=False), "--output-dir", str(out), "--max-steps", "2",
           "--lr", "1e-3", "--overwrite"])
    assert json.loads((out / "run_config.json").read_text())["lr"] == 1e-3


def test_non_finite_loss_stops_with_a_clear_message(embedded_dir, tmp_path):
    out = tmp_path / "r"
    done = train([*TINY, *data_args(embedded_dir, valid=False), "--output-dir", str(out), "--max-steps", "20",
                  "--lr", "1e30", "--warmup-steps", "0", "--grad-clip", "1e30", "--save-every", "1"], check=False)
    assert done.returncode != 0 and "the loss became" in done.stderr and "last good checkpoint" in done.stderr
    assert list((out / "checkpoints").iterdir()), "the checkpoints before the failure are kept"


@pytest.mark.slow  # two training runs of a 50k-vocabulary decoder, about 30 s
def test_tiny_causal_lm_trains_stops_early_and_loads_with_auto_causal(embedded_dir, tmp_path):
    from reuse.tokenize import tokenize_file, load_tokenizer

    tok = load_tokenizer("roberta-bpe")
    data = {}
    for split, lines in (("train", 2000), ("valid", 300)):  # a slice: tokenizing all 1.4M tokens took most of the test
        text = tmp_path / f"en.{split}.raw"
        text.write_text("".join((embedded_dir / f"en.{split}.raw").read_text().splitlines(keepends=True)[:lines]))
        tokenize_file(text, tok, "roberta-bpe")
        data[split] = str(tmp_path / f"en.{split}.raw.roberta-bpe.hdf5")
    out = tmp_path / "gpt"
    train(["--config", "configs/gpt2-2L-64H.json", "--train-data", data["train"],
           "--valid-data", data["valid"], "--output-dir", str(out),
           "--batch-size", "8", "--max-steps", "30", "--eval-every", "5", "--eval-batches", "1", "--lr", "3e-3",
           "--block-size", "32", "--log-every", "1"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tokens_seen"] == summary["steps"] * 8 * 32  # no [CLS]/[SEP] for a decoder
    valid = [json.loads(line)["valid_log_ppl"] for line in (out / "log.jsonl").read_text().splitlines()
             if "valid_log_ppl" in line]
    assert valid[-1] < valid[0] - 0.5 and valid[0] < np.log(50262) + 0.5  # next-token loss, from ~log V down
    code = ("import sys; from transformers import AutoModelForCausalLM\n"
            "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); print(type(m).__name__)")
    done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, cwd="/")
    assert done.stdout.strip() == "GPT2LMHeadModel", done.stderr
    # Patience: with a learning rate that only makes things worse, the run stops after 2 stale evaluations.
    stop = tmp_path / "stop"
    done = train(["--init-from", str(out), "--train-data", data["train"], "--valid-data", data["valid"],
                  "--output-dir", str(stop),
                  "--batch-size", "8", "--max-steps", "100", "--eval-every", "2", "--eval-batches", "1",
                  "--lr", "1.0", "--warmup-steps", "0", "--block-size", "32", "--patience", "2"])
    summary = json.loads((stop / "summary.json").read_text())
    assert summary["stopped_early"] and summary["steps"] < 100 and "early stop" in done.stdout
    assert summary["best_valid_log_ppl"] <= summary["final_valid_log_ppl"]


def test_evaluation_scores_each_batch_as_the_library_loss_does(bert_tokenizer):
    """The evaluation loop keeps each batch's loss on the device until the end; the figures must not change."""
    from reuse.data import add_special_tokens
    from reuse.evaluate import evaluate_blocks

    torch.manual_seed(0)
    model = build_model(load_config("configs/bert-2L-64H.json")).eval()
    blocks = torch.randint(1000, 5000, (10, 20))
    result = evaluate_blocks(model, blocks, bert_tokenizer, torch.device("cpu"), batch_size=4, seed=3)
    generator, means, total, count = torch.Generator().manual_seed(3), [], 0.0, 0
    for i in range(0, 10, 4):  # by hand: the same masks, each batch's mean from the library's own loss
        ids = add_special_tokens(blocks[i:i + 4], bert_tokenizer.cls_token_id, bert_tokenizer.sep_token_id)
        inputs, labels = mask_tokens(ids, special_ids(bert_tokenizer), bert_tokenizer.mask_token_id,
                                     len(bert_tokenizer), generator=generator)
        with torch.no_grad():
            mean = model(input_ids=inputs, labels=labels).loss.item()
        n = int((labels != IGNORE_INDEX).sum())
        means.append(mean)
        total, count = total + mean * n, count + n
    assert result["batches"] == 3 and result["masked_tokens"] == count
    assert result["log_ppl"] == pytest.approx(sum(means) / 3, rel=1e-5)
    assert result["log_ppl_token"] == pytest.approx(total / count, rel=1e-5)
