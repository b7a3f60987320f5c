"""WikiText-103: data/wiki103/get_data_cased*.bash (archive and Hub sources) and tokenization/tokenize_wiki103_*.bash.

The archives and Hub caches here are written by the tests in the release's layout, from text generated in the
release's format; expected token ids come from the original rule written out below and a tokenizer built directly
from the vendored vocabulary, never from the code under test.
"""

import io
import os
import random
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from reuse.wikitext import HUB_REVISION

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "valid", "test")
HUB_SPLITS = {"train": ("train-00000-of-00002", "train-00001-of-00002"), "valid": ("validation-00000-of-00001",),
              "test": ("test-00000-of-00001",)}
WORDS = ("the of and in to a was is for on as by with at from his that it an were which are this be or first also "
         "after their had one has its new but who not they two have been Valkyria Chronicles Senjō 戦場 café Ireland "
         "<unk> U.S. Mr. Boulter December battalion réseau Zürich").split()
PUNCT = (",", ".", ";", ":", "(", ")", '"', "'s", "–")
# Lines the release does not have but the rule must handle; only in the tokenization test's archive.
ODD_LINES = ("\n", "   \n", "= no leading space , so not a heading\n", " =glued is not a heading either\n",
             " two  spaces count as words\n", " exactly four words here \n", " exactly five words are here \n")


def bash(script, *args, env=None):
    return subprocess.run(["bash", script, *map(str, args)], cwd=ROOT, env={**os.environ, **(env or {})},
                          capture_output=True, text=True)


def ok(done):
    assert done.returncode == 0, f"{done.args} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


def sentence(rng):
    toks = []
    for _ in range(rng.randint(3, 24)):
        r = rng.random()
        if r < 0.06:
            toks += [str(rng.randint(1, 999)), rng.choice(("@-@", "@,@", "@.@")), str(rng.randint(0, 999))]
        elif r < 0.09:
            toks += [rng.choice(WORDS), "@-@", rng.choice(WORDS)]
        elif r < 0.2:
            toks.append(rng.choice(PUNCT))
        else:
            toks.append(rng.choice(WORDS))
    return toks + ["."]


def release_text(seed, n_bytes, odd=False):
    """One split in WikiText's raw format: ' = Title = ' and ' = = Section = = ' headings, blank lines ' ', paragraphs
    of spaced tokens with a leading space and a trailing ' ', some lines of 1 to 6 words."""
    rng = random.Random(seed)
    out, size = [" \n"], 2
    while size < n_bytes:
        title = " ".join(rng.choice(WORDS).capitalize() for _ in range(rng.randint(1, 4)))
        block = [f" = {title} = \n", " \n"]
        for section in range(rng.randint(1, 4)):
            if section:
                marks = "= " * rng.randint(2, 3)
                block += [f" {marks}{rng.choice(WORDS).capitalize()} {marks}\n", " \n"]
            for _ in range(rng.randint(1, 4)):
                if rng.random() < 0.2:
                    words = [rng.choice(WORDS) for _ in range(rng.randint(1, 6))]
                else:
                    words = [t for _ in range(rng.randint(1, 8)) for t in sentence(rng)]
                block += [" " + " ".join(words) + " \n", " \n"]
                if odd and rng.random() < 0.05:
                    block.append(rng.choice(ODD_LINES))
        out += block
        size += sum(len(line.encode()) for line in block)
    return "".join(out)


def write_release_zip(path, texts, prefix="wikitext-103-raw/", skip=(), empty=()):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr(prefix, "")  # the folder entry, as `zip -r` writes it
        for split, text in texts.items():
            if split not in skip:
                z.writestr(f"{prefix}wiki.{split}.raw", "" if split in empty else text.encode("utf-8"))
    return path


def hub_rows(text):
    """Rows as the `datasets` loading script made them: lines of the file read as UTF-8 text (universal newlines),
    kept with their '\\n' unless only whitespace, which became ''."""
    return [line if line.strip() else "" for line in io.StringIO(text, newline=None)]


def plant_hub_cache(cache, rows_by_split, column="text"):
    """huggingface_hub's cache layout: blobs/<sha256>, snapshots/<commit>/<path> -> blob, refs/main -> commit."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = cache / "datasets--Salesforce--wikitext"
    snapshot = repo / "snapshots" / HUB_REVISION / "wikitext-103-raw-v1"
    for d in (repo / "blobs", repo / "refs", snapshot):
        d.mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(HUB_REVISION)
    for split, names in HUB_SPLITS.items():
        rows = rows_by_split[split]
        cut = len(rows) // 2 if len(names) == 2 else len(rows)
        for name, part in zip(names, (rows[:cut], rows[cut:])):
            tmp = repo / "blobs" / "incoming"
            pq.write_table(pa.table({column: pa.array(part, pa.string())}), tmp, row_group_size=5000)
            blob = repo / "blobs" / hashlib.sha256(tmp.read_bytes()).hexdigest()
            tmp.replace(blob)
            (snapshot / f"{name}.parquet").symlink_to(os.path.relpath(blob, snapshot))
    return cache


def keeps(line):
    """vokenization's tokenization/tokenize_dataset.py for a `wiki103` folder, written out: skip lines starting
    with ' = ', then lines whose stripped text split on single spaces has fewer than 5 parts (empty lines too)."""
    if line[:3] == " = ":
        return False
    parts = line.strip().split(" ")
    return len(parts) >= 5 and line.strip() != ""


@pytest.fixture(scope="module")
def texts():
    # ~3 MB of training text; valid and test smaller, different seeds so no split equals another.
    return {"train": release_text(1, 3_000_000, odd=True), "valid": release_text(2, 200_000, odd=True),
            "test": release_text(3, 200_000, odd=True)}


def test_archive_to_tokens_follows_the_original_rule(tmp_path, texts):
    from tokenizers import BertWordPieceTokenizer

    archive = write_release_zip(tmp_path / "wikitext-103-raw-v1.zip", texts)
    out = tmp_path / "wiki103-cased"
    ok(bash("data/wiki103/get_data_cased.bash", env={"WIKITEXT_ZIP": str(archive), "OUT_DIR": str(out)}))
    twin = tmp_path / "wiki103-cased-untokenized"
    ok(bash("data/wiki103/get_data_cased_untokenized.bash", env={"WIKITEXT_ZIP": str(archive), "OUT_DIR": str(twin)}))
    for split in SPLITS:
        assert (out / f"wiki.{split}.raw").read_bytes() == texts[split].encode("utf-8"), split
        assert (twin / f"wiki.{split}.raw").read_bytes() == texts[split].encode("utf-8"), split
    assert sorted(p.name for p in out.iterdir()) == [f"wiki.{s}.raw" for s in sorted(SPLITS)]  # no leftovers

    ok(bash("tokenization/tokenize_wiki103_bert.bash", out))
    vocab = ROOT / "reuse" / "assets" / "tokenizers" / "bert-base-uncased" / "vocab.txt"
    reference = BertWordPieceTokenizer(str(vocab), lowercase=True)
    for split in SPLITS:
        kept = [line for line in io.StringIO(texts[split], newline=None) if keeps(line)]
        # The original encoded each kept line as read, "\n" included.
        ids = [e.ids for e in reference.encode_batch(kept, add_special_tokens=False)]
        ids = [x for x in ids if x]
        with h5py.File(out / f"wiki.{split}.raw.bert-base-uncased.hdf5", "r") as h5:
            tokens = h5["tokens"][:]
            assert h5.attrs["line_filter"] == "wiki103"
        assert np.array_equal(tokens, np.concatenate([np.array(x) for x in ids])), split
        offsets = np.loadtxt(out / f"wiki.{split}.raw.bert-base-uncased.line", dtype=np.int64)
        assert np.array_equal(offsets, np.cumsum([0] + [len(x) for x in ids])), split
    # The rule dropped what it should: every heading, and the short and blank lines.
    train = list(io.StringIO(texts["train"], newline=None))
    headings = sum(line.startswith(" = ") for line in train)
    kept = sum(map(keeps, train))
    assert headings > 100 and " \n" in train and 0 < kept < len(train) - headings


def test_hub_cache_gives_the_archive_bytes(tmp_path, texts):
    clean = {split: release_text(10 + i, 400_000) for i, split in enumerate(SPLITS)}  # the release's blank lines
    archive = write_release_zip(tmp_path / "wikitext-103-raw-v1.zip", clean)
    from_zip = tmp_path / "from-zip"
    ok(bash("data/wiki103/get_data_cased.bash", env={"WIKITEXT_ZIP": str(archive), "OUT_DIR": str(from_zip)}))
    cache = plant_hub_cache(tmp_path / "hf" / "hub", {s: hub_rows(t) for s, t in clean.items()})
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    assert "" in hub_rows(clean["train"]) and " \n" not in hub_rows(clean["train"])  # the rows lost the blanks' space
    for name, extra in (("from-hub", {}), ("from-hub-main", {"WIKITEXT_REVISION": "main"})):
        ok(bash("data/wiki103/get_data_cased.bash", env={**env, **extra, "OUT_DIR": str(tmp_path / name)}))
        for split in SPLITS:
            got = (tmp_path / name / f"wiki.{split}.raw").read_bytes()
            assert got == (from_zip / f"wiki.{split}.raw").read_bytes() == clean[split].encode("utf-8"), (name, split)


def bad_zip(tmp, texts):
    return {"WIKITEXT_ZIP": str(write_release_zip(tmp / "w.zip", texts, prefix="wikitext-103/"))}


def zip_without_test(tmp, texts):
    return {"WIKITEXT_ZIP": str(write_release_zip(tmp / "w.zip", texts, skip=("test",)))}


def zip_with_empty_valid(tmp, texts):
    return {"WIKITEXT_ZIP": str(write_release_zip(tmp / "w.zip", texts, empty=("valid",)))}


def not_a_zip(tmp, texts):
    (tmp / "w.zip").write_text(texts["test"])
    return {"WIKITEXT_ZIP": str(tmp / "w.zip")}


def missing_zip(tmp, texts):
    return {"WIKITEXT_ZIP": str(tmp / "nowhere.zip")}


def hub_env(tmp, rows, column="text"):
    cache = plant_hub_cache(tmp / "hf" / "hub", rows, column)
    return {"HF_HOME": str(tmp / "hf"), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}


def parquet_without_text(tmp, texts):
    return hub_env(tmp, {s: hub_rows(t) for s, t in texts.items()}, column="content")


def hub_empty_test_split(tmp, texts):
    return hub_env(tmp, {**{s: hub_rows(t) for s, t in texts.items()}, "test": []})


def hub_row_without_newline(tmp, texts):
    rows = {s: hub_rows(t) for s, t in texts.items()}
    first = next(i for i, row in enumerate(rows["valid"]) if row)
    rows["valid"][first] = rows["valid"][first].rstrip("\n")
    return hub_env(tmp, rows)


def offline_without_cache(tmp, texts):
    return {"HF_HOME": str(tmp / "hf"), "HF_HUB_CACHE": str(tmp / "hf" / "hub"), "HF_HUB_OFFLINE": "1"}


def refused_connection(tmp, texts):
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {"HF_HOME": str(tmp / "hf"), "HF_HUB_CACHE": str(tmp / "hf" / "hub"), "HF_HUB_OFFLINE": "0",
            "HF_ENDPOINT": f"http://127.0.0.1:{port}"}


@pytest.mark.parametrize("make", [
    bad_zip, zip_without_test, zip_with_empty_valid, not_a_zip, missing_zip, parquet_without_text,
    hub_empty_test_split, hub_row_without_newline, offline_without_cache,
    # huggingface_hub retries a refused connection 5 times, sleeping 1+2+4+8+8 s: ~23 s.
    pytest.param(refused_connection, marks=pytest.mark.slow),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, make):
    small = {split: release_text(20 + i, 20_000) for i, split in enumerate(SPLITS)}
    out = tmp_path / "out"
    out.mkdir()
    (out / "wiki.train.raw").write_text("an earlier run's file\n")  # a failed run must leave it as it was
    done = bash("data/wiki103/get_data_cased.bash", env={**make(tmp_path, small), "OUT_DIR": str(out)})
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["wiki.train.raw"]
    assert (out / "wiki.train.raw").read_text() == "an earlier run's file\n"


def test_filter_change_is_not_taken_for_up_to_date(tmp_path):
    text = tmp_path / "wiki.valid.raw"
    text.write_text(" \n = Heading = \n \n one two three four five six \n short line \n")
    cmd = [sys.executable, "-m", "reuse.tokenize", str(text), "--tokenizer", "bert-base-uncased"]
    counts = []
    for extra in ([], ["--line-filter", "wiki103"]):
        ok(subprocess.run(cmd + extra, cwd=ROOT, capture_output=True, text=True))
        with h5py.File(f"{text}.bert-base-uncased.hdf5", "r") as h5:
            counts.append(int(h5.attrs["num_lines"]))
    assert counts == [3, 1]  # heading, long and short line; then only the long one
