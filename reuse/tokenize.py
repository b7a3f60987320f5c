"""Text file -> `<file>.<tokenizer>.hdf5` (dataset `tokens`) and `<file>.<tokenizer>.line` (token offsets).

The layout is the one the original project (after vokenization) used: empty lines are dropped, the tokens of all
kept lines are concatenated without special tokens, and the `.line` file holds the token offset where each kept line
starts followed by the total token count (so it has one more entry than there are lines). `--line-filter wiki103`
also drops what the original dropped from WikiText-103 (see `wiki103_keeps`).

    python -m reuse.tokenize data/wiki-embedded/en.train.raw --tokenizer bert-base-uncased
    python -m reuse.tokenize data/wiki-embedded/en.*.raw --train-vocab 8192 --kind wordpiece
    python -m reuse.tokenize data/wiki103-cased/wiki.train.raw --line-filter wiki103

Streaming: lines are read and encoded in batches, so memory does not grow with the corpus. The Rust tokenizer
encodes each batch on every core. Outputs appear under their final names only when complete.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Iterator, Sequence

import h5py
import numpy as np
from tqdm import tqdm

ASSETS = Path(__file__).parent / "assets" / "tokenizers"
VENDORED = ("bert-base-uncased", "roberta-bpe")
BATCH_LINES = 4096
H5_CHUNK = 1 << 20


class TokenizeError(Exception):
    """Bad input to tokenization; the message says what to do."""


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds every id."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def load_tokenizer(name_or_path: str, search_dirs: Sequence[Path] = ()):
    """A vendored name, a tokenizer folder (also looked for in search_dirs), a Hub id, or a subfolder of a Hub
    repository (`owner/repo/subfolder`, as the released checkpoints)."""
    from transformers import AutoTokenizer

    from reuse.hub import from_pretrained_args

    candidates = [ASSETS / name_or_path] if name_or_path in VENDORED else []
    candidates += [Path(name_or_path)] + [Path(d) / name_or_path for d in search_dirs]
    for folder in candidates:
        if folder.is_dir():
            try:
                return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)  # never run a folder's code
            except (OSError, ValueError) as e:  # no tokenizer files (a bare checkpoint), or corrupt ones
                raise TokenizeError(f"{folder} holds no usable tokenizer ({str(e).splitlines()[0]}); "
                                    f"save one there with save_pretrained or name another") from e
    where, kwargs = from_pretrained_args(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as e:
        raise TokenizeError(
            f"tokenizer {name_or_path!r} is neither vendored ({', '.join(VENDORED)}), nor a local folder, nor "
            f"reachable on the Hugging Face Hub ({str(e).splitlines()[0]}); use a vendored name or a folder") from e


def fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's serialization (vocabulary, merges, normalizer, pre-tokenizer): token files record
    it, so a file tokenized with another vocabulary under the same name is never taken as up to date."""
    import hashlib

    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode("utf-8")).hexdigest()


def tokenizer_name(name_or_path: str) -> str:
    """The name used in output file names: the folder's base name for a path, the Hub id's last part otherwise."""
    return Path(name_or_path.rstrip("/")).name


def wiki103_keeps(line: str) -> bool:
    """The rule of vokenization's tokenization/tokenize_dataset.py (airsplay/vokenization) for a folder named
    `wiki103`, applied to the line as read (with its "\n"): drop titles and section headings (lines starting with
    " = "), then lines of fewer than 5 words counted as `len(line.strip().split(" "))`, which drops empty lines too.
    It is not the rule for full-Wikipedia dumps. Kept lines are encoded stripped, as every line here: the same ids
    as the original's for WordPiece; byte-level BPE would differ at the line ends, where the original encoded the
    leading space and the trailing " \n"."""
    return not line.startswith(" = ") and len(line.strip().split(" ")) >= 5


LINE_FILTERS: dict[str, Callable[[str], bool] | None] = {"none": None, "wiki103": wiki103_keeps}


def read_batches(path: Path, batch_lines: int, keep: Callable[[str], bool] | None = None) -> Iterator[list[str]]:
    batch = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if keep is not None and not keep(line):
                continue
            line = line.strip()
            if line:
                batch.append(line)
                if len(batch) == batch_lines:
                    yield batch
                    batch = []
    if batch:
        yield batch


def encode_batch(tokenizer, lines: list[str]) -> list[list[int]]:
    # The backend's batch call runs on all cores (Rust threads) and skips building Python offset objects.
    return [e.ids for e in tokenizer.backend_tokenizer.encode_batch_fast(lines, add_special_tokens=False)]


def output_paths(path: Path, name: str) -> tuple[Path, Path]:
    return Path(f"{path}.{name}.hdf5"), Path(f"{path}.{name}.line")


def tokenize_file(path: Path, tokenizer, name: str, batch_lines: int = BATCH_LINES, force: bool = False,
                  line_filter: str = "none") -> dict:
    """Tokenize one text file; returns counts. Skips a file whose outputs are newer than it, unless force."""
    if line_filter not in LINE_FILTERS:
        raise TokenizeError(f"unknown line filter {line_filter!r}: use one of {', '.join(LINE_FILTERS)}")
    path = Path(path)
    if not path.is_file() or not os.access(path, os.R_OK):
        raise TokenizeError(f"{path} is missing or unreadable")
    h5_path, line_path = output_paths(path, name)
    digest = fingerprint(tokenizer)
    if not force and h5_path.exists() and line_path.exists() and h5_path.stat().st_mtime >= path.stat().st_mtime:
        with h5py.File(h5_path, "r") as h5:
            # Newer than the text is not enough: `--train-vocab` replaces the tokenizer under the same name.
            if h5.attrs.get("tokenizer_sha256") == digest and h5.attrs.get("line_filter", "none") == line_filter:
                return {"file": str(path), "lines": int(h5.attrs["num_lines"]), "tokens": len(h5["tokens"]),
                        "skipped": True}
    dtype = token_dtype(len(tokenizer))
    h5_tmp, line_tmp = Path(f"{h5_path}.tmp"), Path(f"{line_path}.tmp")
    n_tokens = n_lines = 0
    bar = tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"tokenize {path.name}", disable=None)
    try:
        with h5py.File(h5_tmp, "w") as h5, open(line_tmp, "w") as line_file:
            tokens = h5.create_dataset("tokens", shape=(0,), maxshape=(None,), dtype=dtype, chunks=(H5_CHUNK,))
            for lines in read_batches(path, batch_lines, LINE_FILTERS[line_filter]):
                ids = [x for x in encode_batch(tokenizer, lines) if x]
                lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
                starts = n_tokens + np.concatenate(([0], np.cumsum(lengths)[:-1])) if len(ids) else []
                line_file.write("".join(f"{s}\n" for s in starts))
                flat = np.fromiter((t for x in ids for t in x), dtype=dtype, count=int(lengths.sum()))
                tokens.resize((n_tokens + len(flat),))
                tokens[n_tokens:] = flat
                n_tokens += len(flat)
                n_lines += len(ids)
                bar.update(sum(len(s.encode("utf-8")) + 1 for s in lines))
            line_file.write(f"{n_tokens}\n")
            if n_tokens == 0:
                raise TokenizeError(f"{path} holds no text{'' if line_filter == 'none' else ' the filter keeps'}: "
                                    f"nothing to tokenize")
            h5.attrs.update({"tokenizer": name, "vocab_size": len(tokenizer), "num_lines": n_lines,
                             "source": path.name, "tokenizer_sha256": digest, "line_filter": line_filter})
    except BaseException as e:
        h5_tmp.unlink(missing_ok=True)
        line_tmp.unlink(missing_ok=True)
        if isinstance(e, UnicodeDecodeError):
            raise TokenizeError(f"{path} is not UTF-8 text ({e}): convert it to UTF-8 first") from e
        raise
    finally:
        bar.close()
    os.replace(h5_tmp, h5_path)
    os.replace(line_tmp, line_path)
    return {"file": str(path), "lines": n_lines, "tokens": n_tokens, "skipped": False}


def train_vocab(files: Sequence[Path], kind: str, size: int, out_dir: Path) -> Path:
    """Train a WordPiece (BERT) or byte-level BPE (RoBERTa) vocabulary with `tokenizers`; save a tokenizer folder."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.implementations import BertWordPieceTokenizer
    from transformers import BertTokenizerFast, RobertaTokenizerFast

    if size <= 0:
        raise TokenizeError(f"vocabulary size {size} must be positive")
    files = [str(f) for f in files]
    folder = out_dir / f"{'bert-wordpiece' if kind == 'wordpiece' else 'roberta-bpe'}-{size}"
    if kind == "wordpiece":
        trainer = BertWordPieceTokenizer(lowercase=True)
        trainer.train(files, vocab_size=size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
        tok = BertTokenizerFast(tokenizer_object=trainer._tokenizer, do_lower_case=True, unk_token="[UNK]",
                                sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]")
    elif kind == "bpe":
        trainer = ByteLevelBPETokenizer()
        # Same special-token order as roberta-base: pad at 1, because RoBERTa offsets positions by the pad id.
        trainer.train(files, vocab_size=size, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        tok = RobertaTokenizerFast(tokenizer_object=trainer._tokenizer, bos_token="<s>", eos_token="</s>",
                                   sep_token="</s>", cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                                   mask_token="<mask>")
    else:
        raise TokenizeError(f"unknown vocabulary kind {kind!r}: use wordpiece or bpe")
    tok.model_max_length = 512
    tmp = folder.with_name(folder.name + ".tmp")
    tok.save_pretrained(str(tmp))
    if folder.exists():
        import shutil
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def main(argv: list[str] | None = None) -> None:
    from reuse.cli import Parser, positive_int

    parser = Parser(prog="python -m reuse.tokenize", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="text files, one sentence or paragraph per line")
    parser.add_argument("--tokenizer", default="bert-base-uncased",
                        help="vendored name (bert-base-uncased, roberta-bpe), tokenizer folder, or Hub id")
    parser.add_argument("--train-vocab", type=positive_int, metavar="SIZE",
                        help="train a vocabulary of SIZE on the training splits among the files (names with "
                             "'.train.'; else the first file) and use it for all of them")
    parser.add_argument("--kind", choices=("wordpiece", "bpe"), default="wordpiece", help="with --train-vocab")
    parser.add_argument("--force", action="store_true", help="re-tokenize files whose outputs are up to date")
    parser.add_argument("--line-filter", choices=tuple(LINE_FILTERS), default="none",
                        help="wiki103: also drop headings and lines of fewer than 5 words, as the original did for "
                             "WikiText-103")
    args = parser.parse_args(argv)
    try:
        for f in args.files:  # all of them before any work: a typo in the last name should not cost a vocabulary
            if not f.is_file() or not os.access(f, os.R_OK):
                raise TokenizeError(f"{f} is missing or unreadable")
        spec = args.tokenizer
        if args.train_vocab:
            sources = [f for f in args.files if ".train." in f.name] or args.files[:1]
            spec = str(train_vocab(sources, args.kind, args.train_vocab, sources[0].parent))
            print(f"trained {args.kind} vocabulary of {args.train_vocab} -> {spec}")
        tokenizer = load_tokenizer(spec, search_dirs=[f.parent for f in args.files])
        name = tokenizer_name(spec)
        for path in args.files:
            stats = tokenize_file(path, tokenizer, name, force=args.force, line_filter=args.line_filter)
            h5_path, _ = output_paths(path, name)
            note = " (up to date, skipped)" if stats["skipped"] else ""
            print(f"{h5_path}: {stats['lines']} lines, {stats['tokens']} tokens{note}")
    except TokenizeError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
