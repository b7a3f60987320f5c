"""Inputs as they come in real use: a full-size Wikipedia dump, checkpoints that are subfolders of a Hub repository,
token files left over from another vocabulary, and a model evaluated on data of another tokenizer."""

import bz2
import json
import random
import shutil
import string
import sys

import h5py
import numpy as np
import pytest
import torch

from conftest import run
from reuse import corpus, tokenize
from reuse.checkpoint import save_model
from reuse.model import build_model, load_config
from reuse.tokenize import fingerprint, load_tokenizer, tokenize_file
from test_data import ARTICLES, write_dump

HUB_REPO = "peihaowang/data-efficient-scaling"
HUB_SUBFOLDER = "bert-2L-64H-0.001D"


# ---------------------------------------------------------------------------------------------------- the dump
def write_large_dump(path, talk_bytes=3_600_000, random_sentences=1500):
    """A dump whose .bz2 is larger than any pipe buffer: the articles of the small dump after a few hundred random
    sentences, then talk pages (namespace 1, as most pages of a real dump are not articles) of random words that
    bzip2 cannot shrink much. Returns the random article sentences, which must come out first and in order."""
    rng = random.Random(0)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(2000)]
    # Every sentence ends in "done.": a random word there could be one of spaCy's abbreviations ("inc.").
    sentences = [" ".join([rng.choice(words).capitalize(), *rng.choices(words, k=10), "done."])
                 for _ in range(random_sentences)]
    articles = {f"Random {i}": " ".join(sentences[i:i + 10]) for i in range(0, random_sentences, 10)}
    write_dump(path, {**articles, **ARTICLES})
    # Letters, digits and spaces drawn uniformly: about 6 bits per byte, so bzip2 keeps ~3/4 of the size.
    noise = rng.randbytes(talk_bytes).translate(((string.ascii_letters + string.digits) * 4 + " " * 8).encode())
    talk = "".join(f"""  <page>
    <title>Talk:Page {i}</title>
    <ns>1</ns>
    <id>{10_000 + i}</id>
    <revision>
      <id>{20_000 + i}</id>
      <text xml:space="preserve">talkpagemarker {chunk.decode()}</text>
    </revision>
  </page>
""" for i, chunk in enumerate(noise[j:j + 100_000] for j in range(0, len(noise), 100_000)))
    xml = bz2.decompress(path.read_bytes()).decode().replace("</mediawiki>", talk + "</mediawiki>")
    path.write_bytes(bz2.compress(xml.encode()))
    return sentences


def test_dump_larger_than_a_pipe_buffer_goes_through_the_whole_pipeline(tmp_path):
    dump = tmp_path / "enwiki-latest-pages-articles.xml.bz2"
    sentences = write_large_dump(dump)
    # The format check reads 4 KB and closes the pipe: with more than a pipe buffer behind them, bzcat gets SIGPIPE.
    assert dump.stat().st_size > 2_000_000
    out = tmp_path / "out"
    run(["bash", "data/wiki/get_data_cased.bash", "en"],
        env={"WIKI_DUMP": str(dump), "OUT_DIR": str(out), "VALID_LINES": "2", "TEST_LINES": "3"})
    lines = {s: (out / f"en.{s}.raw").read_text().splitlines() for s in corpus.SPLITS}
    assert len(lines["valid"]) == 2 and len(lines["test"]) == 3
    assert lines["train"][:len(sentences)] == sentences  # every article sentence, once, in dump order
    assert "Dr. Smith studied it in 1990." in lines["train"]
    assert lines["test"][-1] == "It is shaped like a triangle."
    assert not any("talkpagemarker" in line for split in lines.values() for line in split), "only articles"
    assert not list(out.glob(".extracted*"))


# ---------------------------------------------------------------------------------------------------- Hub ids
@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A tiny checkpoint twice: as a local folder, and planted in a Hugging Face cache as the subfolder of a Hub
    repository, laid out as huggingface_hub writes it (refs/main names the snapshot)."""
    root = tmp_path_factory.mktemp("hub")
    torch.manual_seed(0)
    local = root / "local"
    save_model(local, build_model(load_config("configs/bert-2L-64H.json")), load_tokenizer("bert-base-uncased"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / "cache" / f"models--{HUB_REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(local, repo / "snapshots" / commit / HUB_SUBFOLDER)
    text = root / "v.raw"
    text.write_text("the quick brown fox jumps over the lazy dog near the river bank today\n" * 40)
    tokenize_file(text, load_tokenizer("bert-base-uncased"), "bert-base-uncased")
    return {"local": local, "data": root / "v.raw.bert-base-uncased.hdf5", "root": root,
            "env": {"HF_HOME": str(root / "home"), "HF_HUB_CACHE": str(root / "cache"), "HF_HUB_OFFLINE": "1"}}


# huggingface_hub reads HF_HUB_OFFLINE and HF_HUB_CACHE when it is imported: a fresh interpreter sees them.
HUB_SCRIPT = """
import json, sys, torch
from safetensors.torch import load_file
from reuse import evaluate, grow
from reuse.model import load_model
from reuse.tokenize import load_tokenizer

local, hub, data, out = sys.argv[1:]
def same(a, b):
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
result = {"load_model": same(load_model(local).state_dict(), load_model(hub).state_dict()),
          "tokenizer": load_tokenizer(hub).get_vocab() == load_tokenizer(local).get_vocab()}
for name, source in (("local", local), ("hub", hub)):
    grow.main(["--from", source, "--config", "configs/bert-2L-128H.json", "--out", f"{out}/grown-{name}"])
result["grow"] = same(*(load_file(f"{out}/grown-{n}/model.safetensors") for n in ("local", "hub")))
evaluate.main([hub, local, "--data", data, "--batch-size", "1", "--max-batches", "2", "--out", f"{out}/eval.json"])
print(json.dumps(result))
"""


def test_hub_subfolder_ids_load_like_the_local_folder(hub_cache, tmp_path):
    hub_id = f"{HUB_REPO}/{HUB_SUBFOLDER}"
    done = run([sys.executable, "-c", HUB_SCRIPT, str(hub_cache["local"]), hub_id, str(hub_cache["data"]),
                str(tmp_path)], env=hub_cache["env"])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"load_model": True, "tokenizer": True, "grow": True}
    assert (tmp_path / "grown-hub" / "tokenizer.json").is_file()  # reuse.grow took the tokenizer from the Hub too
    rows = json.loads((tmp_path / "eval.json").read_text())
    assert [r["checkpoint"] for r in rows] == [hub_id, str(hub_cache["local"])]
    assert rows[0]["log_ppl"] == rows[1]["log_ppl"] and rows[0]["batches"] == 2


def test_missing_hub_subfolder_is_a_one_line_error(hub_cache):
    done = run([sys.executable, "-m", "reuse.evaluate", f"{HUB_REPO}/bert-no-such-run", "--data",
                str(hub_cache["data"])], env=hub_cache["env"], check=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("error:") and len(done.stderr.strip().splitlines()) == 1
    assert "bert-no-such-run" in done.stderr


def test_hub_id_split_leaves_local_paths_alone(tmp_path, monkeypatch):
    from reuse.hub import from_pretrained_args, is_hub_id

    safe = {"trust_remote_code": False}  # every load refuses a checkpoint's own code
    assert from_pretrained_args("a/b/c/d") == ("a/b", {"subfolder": "c/d", **safe})
    assert from_pretrained_args("bert-base-uncased") == ("bert-base-uncased", safe)
    assert from_pretrained_args("owner/repo") == ("owner/repo", safe)
    assert from_pretrained_args("/abs/missing/folder") == ("/abs/missing/folder", safe)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "snap" / "run" / "best").mkdir(parents=True)
    assert from_pretrained_args("snap/run/best") == ("snap/run/best", safe)  # an existing folder wins
    assert not is_hub_id("snap/run/best") and is_hub_id("snap/run/other") and not is_hub_id("plain")


# ---------------------------------------------------------------------------------------------------- stale tokens
def test_retrained_vocabulary_retokenizes_files_that_look_up_to_date(tmp_path, capsys):
    rng = random.Random(1)
    train, valid = tmp_path / "en.train.raw", tmp_path / "en.valid.raw"

    def write_text(path, alphabet):
        words = ["".join(rng.choices(alphabet, k=rng.randint(2, 7))) for _ in range(300)]
        path.write_text("".join(" ".join(rng.choices(words, k=12)) + "\n" for _ in range(400)))

    write_text(train, "abcdefghijklm")
    write_text(valid, "abcdefghijklmnopqrstuvwxyz")
    args = [str(train), str(valid), "--train-vocab", "300"]
    tokenize.main(args)
    h5_valid = tmp_path / "en.valid.raw.bert-wordpiece-300.hdf5"
    with h5py.File(h5_valid) as h5:
        old_ids = h5["tokens"][:]
    # Another training text, the same vocabulary size and name: valid's token file is newer than valid's text.
    write_text(train, "nopqrstuvwxyz")
    capsys.readouterr()
    tokenize.main(args)
    assert "skipped" not in capsys.readouterr().out
    tok = load_tokenizer(str(tmp_path / "bert-wordpiece-300"))
    with h5py.File(h5_valid) as h5:
        assert h5.attrs["tokenizer_sha256"] == fingerprint(tok)
        new_ids = h5["tokens"][:]
    first = valid.read_text().splitlines()[0]
    assert new_ids[:len(tok(first, add_special_tokens=False)["input_ids"])].tolist() == \
        tok(first, add_special_tokens=False)["input_ids"]
    assert not np.array_equal(old_ids[:50], new_ids[:50])
    # With the same tokenizer the files are up to date and skipped, as before.
    tokenize.main([str(train), str(valid), "--tokenizer", str(tmp_path / "bert-wordpiece-300")])
    assert capsys.readouterr().out.count("(up to date, skipped)") == 2


# ---------------------------------------------------------------------------------------------------- vocabularies
def test_evaluating_a_model_of_another_vocabulary_fails_before_any_work(hub_cache, tmp_path):
    roberta = tmp_path / "roberta"
    save_model(roberta, build_model(load_config("configs/roberta-2L-64H.json")), load_tokenizer("roberta-bpe"))
    done = run([sys.executable, "-m", "reuse.evaluate", str(hub_cache["local"]), str(roberta), "--data",
                str(hub_cache["data"]), "--out", str(tmp_path / "eval.csv")], env=hub_cache["env"], check=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and done.stderr.startswith("error:")
    assert "vocab_size 50262" in done.stderr and "'bert-base-uncased' (30522 tokens)" in done.stderr
    assert done.stdout == "" and not (tmp_path / "eval.csv").exists()  # not even the matching first one ran

