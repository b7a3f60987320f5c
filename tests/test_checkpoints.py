"""Checkpoints that are not what save_checkpoint wrote: planted pickles, leftovers of killed saves, damaged files."""

import dataclasses
import json
import sys

import pytest
import torch

from conftest import run
from reuse import checkpoint as ckpt
from reuse.model import build_model, load_config
from reuse.tokenize import load_tokenizer, tokenize_file
from reuse.config import TrainConfig
from reuse.train import lr_lambda, make_optimizer

STATE = ckpt.TrainState(wall_time=1.5, flops=2e9, valid=6.5, best_valid=6.25, best_step=1, stale_evals=1)


def trainer_parts(seed=0):
    torch.manual_seed(seed)
    model = build_model(load_config("configs/bert-2L-64H.json"))
    optimizer = make_optimizer(model, TrainConfig())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(2, 10))
    return model, optimizer, scheduler, torch.Generator().manual_seed(seed + 1)


@pytest.fixture(scope="module")
def bert_tok():
    return load_tokenizer("bert-base-uncased")


@pytest.fixture
def run_dir(tmp_path, bert_tok):
    """A run folder with checkpoints at steps 1 and 2, as save_checkpoint writes them."""
    model, optimizer, scheduler, gen = trainer_parts()
    for step in (1, 2):
        with torch.no_grad():
            model.bert.embeddings.word_embeddings.weight[0, 0] = step  # tell the checkpoints apart
        ckpt.save_checkpoint(tmp_path, dataclasses.replace(STATE, step=step), model, bert_tok, optimizer, scheduler, gen,
                             keep_last=2)
    return tmp_path


def test_real_trainer_state_loads_with_weights_only(run_dir):
    model, optimizer, scheduler, gen = trainer_parts(seed=5)
    state = ckpt.load_trainer_state(run_dir / "checkpoints" / "step-0000002", model, optimizer, scheduler, gen)
    assert state == dataclasses.replace(STATE, step=2)
    assert model.bert.embeddings.word_embeddings.weight[0, 0].item() == 2
    assert torch.equal(gen.get_state(), torch.Generator().manual_seed(1).get_state())


class Payload:
    """Unpickling this runs code: it writes the file named in `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def test_planted_pickle_is_refused_and_its_code_never_runs(run_dir, tmp_path_factory):
    folder = run_dir / "checkpoints" / "step-0000002"
    marker = tmp_path_factory.mktemp("marker") / "ran"
    torch.save({"state": Payload(marker)}, folder / ckpt.STATE)
    # The file is a real attack: a plain unpickling runs it.
    torch.load(folder / ckpt.STATE, weights_only=False)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ckpt.CheckpointError) as refused:
        ckpt.load_trainer_state(folder, *trainer_parts())
    assert not marker.exists()
    message = str(refused.value)
    assert "\n" not in message and "refused" in message and str(folder / ckpt.STATE) in message


def test_leftovers_of_killed_saves_are_removed_and_nothing_else(run_dir):
    checkpoints = run_dir / "checkpoints"
    leftovers = [checkpoints / ".tmp-step-0000003-0a1b2c3d", run_dir / ".tmp-best-deadbeef",
                 checkpoints / ".old-step-0000002-12345678"]
    kept = [run_dir / ".tmp-notes", checkpoints / ".tmp-step-0000003-notours", run_dir / ".tmp-other-deadbeef"]
    for path in leftovers + kept:
        path.mkdir()
        (path / "config.json").write_text("{}")
    # Killed between the two renames of a replacement: the previous best is only under its .old- name.
    (run_dir / ".old-best-abcdef01").mkdir()
    (run_dir / ".old-best-abcdef01" / "checkpoint.json").write_text('{"step": 1}')
    assert ckpt.latest(run_dir) == checkpoints / "step-0000002"
    assert not any(p.exists() for p in leftovers)
    assert all(p.exists() for p in kept)
    assert json.loads((run_dir / "best" / "checkpoint.json").read_text()) == {"step": 1}
    # A save cleans up too, for a run that is started again rather than resumed.
    leftovers[0].mkdir()
    model, optimizer, scheduler, gen = trainer_parts()
    ckpt.save_checkpoint(run_dir, dataclasses.replace(STATE, step=3), model, load_tokenizer("bert-base-uncased"), optimizer,
                         scheduler, gen, keep_last=2)
    assert not leftovers[0].exists()
    assert sorted(p.name for p in checkpoints.iterdir() if not p.name.startswith(".tmp-step-0000003-notours")) == \
        ["step-0000002", "step-0000003"]


@pytest.mark.parametrize("damaged", [ckpt.STATE, "model.safetensors"])
def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(run_dir, damaged, capsys):
    path = run_dir / "checkpoints" / "step-0000002" / damaged
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    assert ckpt.latest(run_dir) == run_dir / "checkpoints" / "step-0000001"
    out = capsys.readouterr().out
    assert f"skipping checkpoint step-0000002: {path} is truncated or corrupt" in out
    assert "resuming from the previous complete checkpoint, step-0000001" in out
    # When nothing loads, the run stops with one line instead of silently starting over.
    first = run_dir / "checkpoints" / "step-0000001" / damaged
    first.write_bytes(b"")
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint in .* loads .* --overwrite") as e:
        ckpt.latest(run_dir)
    assert "\n" not in str(e.value)


@pytest.mark.slow  # two launches of reuse.train, about 20 s on two busy cores
def test_resume_skips_a_damaged_checkpoint_and_still_ends_bitwise(tmp_path, bert_tok):
    """reuse.train as it is: its resume takes whatever checkpoint.latest returns."""
    rng = torch.Generator().manual_seed(0)
    words = [bert_tok.convert_ids_to_tokens(i) for i in torch.randint(2000, 20000, (300,), generator=rng).tolist()]
    text = tmp_path / "t.raw"
    text.write_text("".join(" ".join(words[i:i + 40]) + "\n" for i in range(0, 300, 3)))
    tokenize_file(text, bert_tok, "bert-base-uncased")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "reuse.train", "--config", "configs/bert-2L-64H.json", "--train-data",
           str(tmp_path / "t.raw.bert-base-uncased.hdf5"), "--output-dir", str(out), "--batch-size", "4",
           "--max-steps", "4", "--save-every", "2", "--keep-last", "2", "--threads", "1"]
    run(cmd)
    finished = (out / "model.safetensors").read_bytes()
    weights = out / "checkpoints" / "step-0000004" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    (out / "checkpoints" / ".tmp-step-0000006-0123abcd").mkdir()
    done = run(cmd)
    assert "skipping checkpoint step-0000004" in done.stdout and "resuming from" in done.stdout
    assert "at step 2" in done.stdout
    assert (out / "model.safetensors").read_bytes() == finished
    assert not (out / "checkpoints" / ".tmp-step-0000006-0123abcd").exists()


def test_a_run_folder_takes_one_trainer_and_a_dead_ones_hold_is_taken_over(tmp_path, bert_tok):
    """A sweep killed with -9 leaves its child training; a re-run must not start a second writer in its folder."""
    import os
    import signal
    import subprocess
    import time

    from conftest import ROOT, run_main
    from reuse.train import main

    text = tmp_path / "t.raw"
    text.write_text("the quick brown fox jumps over the lazy dog near the river bank today\n" * 400)
    tokenize_file(text, bert_tok, "bert-base-uncased")
    out = tmp_path / "run"
    args = ["--config", "configs/bert-2L-64H.json", "--train-data", str(tmp_path / "t.raw.bert-base-uncased.hdf5"),
            "--output-dir", str(out), "--batch-size", "4", "--max-steps", "100000", "--save-every", "1",
            "--threads", "1"]
    first = subprocess.Popen([sys.executable, "-m", "reuse.train", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not list(out.glob("checkpoints/step-*")) and time.time() < deadline:
            time.sleep(0.1)
        assert first.poll() is None, "the first trainer ended before the test could race it"
        second = run_main(main, args, "reuse.train", check=False)
        assert second.returncode == 1
        assert f"is being trained by process {first.pid}" in second.stderr and "\n" not in second.stderr.strip()
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    third = run_main(main, [*args[:-6], "--max-steps", "1", "--resume", "--threads", "1"], "reuse.train")
    assert f"took over {out} from process {first.pid}" in third.stdout
    assert not (out / ".owner").exists()  # a finished run leaves the folder free
