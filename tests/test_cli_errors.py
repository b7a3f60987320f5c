"""Nonsense on the command line of reuse.grow, evaluate, tokenize, scaling and transfer: one line `error: ...`, a
non-zero exit status, no traceback, and nothing written.

The CLIs run in this process (a fresh interpreter per case would cost seconds of imports each), through
conftest.run_main, which reports an uncaught SystemExit as an interpreter does: a string goes to stderr, status 1.
"""

import sys

import pytest
import torch

from conftest import run, run_main
from reuse import evaluate, grow, tokenize, transfer
from reuse.checkpoint import save_model
from reuse.model import build_model, load_config
from reuse.scaling.__main__ import main as scaling_main
from reuse.tokenize import load_tokenizer, tokenize_file

MAINS = {"grow": grow.main, "evaluate": evaluate.main, "tokenize": tokenize.main, "scaling": scaling_main,
         "transfer": transfer.main}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Valid inputs to start from, and broken ones of every kind."""
    d = tmp_path_factory.mktemp("cli")
    tok = load_tokenizer("bert-base-uncased")
    torch.manual_seed(0)
    save_model(d / "ck", build_model(load_config("configs/bert-2L-64H.json")), tok)
    save_model(d / "broken-ck", build_model(load_config("configs/bert-2L-64H.json")), tok)
    weights = d / "broken-ck" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    (d / "text.raw").write_text("the quick brown fox jumps over the lazy dog near the river bank today\n" * 40)
    tokenize_file(d / "text.raw", tok, "bert-base-uncased")
    (d / "bad-lines.raw").write_text("hello world\nsecond line\n")
    tokenize_file(d / "bad-lines.raw", tok, "bert-base-uncased")
    (d / "bad-lines.raw.bert-base-uncased.line").write_text("zero\none\n")
    (d / "binary.bin").write_bytes(bytes(range(256)) * 8)
    (d / "list.json").write_text("[1, 2]")
    (d / "a-file").write_text("x")
    (d / "empty-dir").mkdir()
    (d / "bad-tok").mkdir()
    (d / "bad-tok" / "tokenizer.json").write_text("{not json")
    (d / "results.csv").write_text("run_id,parameters,fraction,method,final_log_ppl\nr,1e6,0.1,scratch,oops\n")
    rows = ["run_id,method,parameters,data_tokens,best_log_ppl", "s1,scratch,1e6,1e6,4.0", "s2,scratch,1e6,1e7,nan",
            "s3,scratch,1e6,1e8,3.0", "f1,finetune,1e6,1e6,3.5"]
    (d / "nan.csv").write_text("\n".join(rows) + "\n")
    (d / "words.csv").write_text("\n".join(rows[:2] + ["f1,finetune,1e6,lots,3.5"]) + "\n")
    return d


GROW = ["--from", "{d}/ck", "--config", "configs/bert-2L-128H.json", "--out", "{d}/grown"]
EVAL = ["{d}/ck", "--data", "{d}/text.raw.bert-base-uncased.hdf5"]
CASES = {
    "grow": [
        [*GROW, "--noise", "-0.5"], [*GROW, "--noise", "nan"], [*GROW, "--noise", "inf"], [*GROW, "--seed", "-1"],
        [*GROW, "--method", "magic"], [*GROW, "--depth-method", "zigzag"],
        ["--from", "{d}/missing", *GROW[2:]], ["--from", "{d}/empty-dir", *GROW[2:]],
        ["--from", "{d}/broken-ck", *GROW[2:]],
        [*GROW[:2], "--config", "{d}/missing.json", *GROW[4:]], [*GROW[:2], "--config", "{d}/binary.bin", *GROW[4:]],
        [*GROW[:2], "--config", "{d}/list.json", *GROW[4:]],
        [*GROW[:2], "--config", "configs/roberta-2L-64H.json", *GROW[4:]],  # another model type: no growth
        [*GROW[:4], "--out", "{d}/a-file"], [*GROW[:4], "--out", "{d}/a-file/grown"],
    ],
    "evaluate": [
        [*EVAL, "--batch-size", "0"], [*EVAL, "--block-size", "-1"], [*EVAL, "--max-batches", "0"],
        [*EVAL, "--batch-size", "many"], [*EVAL, "--device", "abacus"],
        ["{d}/ck", "--data", "{d}/missing.hdf5"], ["{d}/ck", "--data", "{d}/binary.bin"],
        ["{d}/ck", "--data", "{d}/bad-lines.raw.bert-base-uncased.hdf5"],
        ["{d}/missing", *EVAL[1:]], ["{d}/empty-dir", *EVAL[1:]], ["{d}/broken-ck", *EVAL[1:]],
        [*EVAL, "--out", "{d}/empty-dir"], [*EVAL, "--out", "{d}/a-file/eval.csv"],
    ],
    "tokenize": [
        ["{d}/text.raw", "--train-vocab", "0"], ["{d}/text.raw", "--train-vocab", "-5"],
        ["{d}/text.raw", "{d}/missing.raw"], ["{d}/binary.bin"], ["{d}/empty-dir"],
        ["{d}/text.raw", "--tokenizer", "{d}/empty-dir"], ["{d}/text.raw", "--tokenizer", "{d}/bad-tok"],
    ],
    "scaling": [
        [], ["fit", "{d}/missing.csv"], ["fit", "{d}/binary.bin"], ["fit", "{d}/results.csv"],
        ["fit", "{d}/results.csv", "--bootstrap", "0"], ["fit", "{d}/results.csv", "--bootstrap", "-3"],
        ["fit", "{d}/results.csv", "--out", "{d}/empty-dir"], ["benchmark", "--methods", "M9", "--out", "{d}/b.csv"],
        ["benchmark", "--domains", "XX", "--out", "{d}/b.csv"], ["benchmark", "--out", "{d}/empty-dir"],
    ],
    "transfer": [
        ["{d}/missing.csv"], ["{d}/binary.bin"], ["{d}/words.csv"], ["{d}/nan.csv"],
        ["{d}/nan.csv", "--out", "{d}/empty-dir"], ["{d}/nan.csv", "--loss", "final_log_ppl"],
    ],
}


def exit_of(main, argv) -> tuple[int, str]:
    """(exit status, stderr) of a CLI as an interpreter would report them (conftest.run_main)."""
    done = run_main(main, argv, main.__module__, check=False)
    return done.returncode, done.stderr


ALL = [(cli, argv) for cli, cases in CASES.items() for argv in cases]


@pytest.mark.parametrize("cli,argv", ALL, ids=[f"{cli}:{' '.join(argv).replace('{d}/', '')}" for cli, argv in ALL])
def test_nonsense_is_one_line_error_before_any_work(work, cli, argv):
    before = sorted(p.relative_to(work) for p in work.rglob("*"))
    status, err = exit_of(MAINS[cli], [a.format(d=work) for a in argv])
    assert status != 0
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert sorted(p.relative_to(work) for p in work.rglob("*")) == before, "something was written"


def test_error_messages_say_what_was_wrong(work):
    d = work
    cases = [
        (grow.main, [*GROW, "--noise", "-0.5"], "argument --noise: must be a finite number >= 0, not -0.5"),
        (tokenize.main, ["{d}/text.raw", "--train-vocab", "0"], "argument --train-vocab: must be a positive integer"),
        (tokenize.main, ["{d}/text.raw", "{d}/missing.raw"], "missing.raw is missing or unreadable"),
        (tokenize.main, ["{d}/binary.bin"], "binary.bin is not UTF-8 text"),
        (evaluate.main, ["{d}/broken-ck", *EVAL[1:]], "broken-ck"),
        (grow.main, [*GROW[:4], "--out", "{d}/a-file"], "a-file is an existing file; give a folder"),
        (transfer.main, ["{d}/nan.csv"], "run s2 (scratch) has data_tokens 10000000.0 and best_log_ppl nan"),
        (transfer.main, ["{d}/words.csv"], "words.csv line 3: data_tokens = 'lots' is not a number"),
    ]
    for main, argv, message in cases:
        _, err = exit_of(main, [a.format(d=d) for a in argv])
        assert message in err, (argv, err)


def test_a_real_process_prints_the_same_single_line(work):
    done = run([sys.executable, "-m", "reuse.grow", *[a.format(d=work) for a in GROW], "--noise", "-0.5"],
               check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: argument --noise:") and len(done.stderr.splitlines()) == 1
