"""WikiText-103 (Merity et al. 2016), the raw release: OUT_DIR/wiki.{train,valid,test}.raw, byte for byte the files
`wikitext-103-raw/wiki.*.raw` of wikitext-103-raw-v1.zip, from one of two sources:

- that archive, given as a local file (`--zip`). It was published at
  https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-raw-v1.zip (the address vokenization's
  data/wiki103/get_data_cased.sh fetched; reported to serve it no longer);
- by default, the Hugging Face Hub dataset Salesforce/wikitext, config wikitext-103-raw-v1 (parquet, column `text`),
  through huggingface_hub's cache (HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE apply).

How Hub rows map back to lines: the rows were made by the `datasets` loading script (huggingface/datasets,
datasets/wikitext/wikitext.py), which read each raw file as UTF-8 text and gave one row per line, the line with its
"\n" when it held anything but whitespace, and "" when it did not. The release's blank lines are " \n" (one space;
the files open with " \n = Valkyria Chronicles III = \n \n"), so a row "" is written back as " \n" and any other
row as it is. The rows cannot show the blank lines' spaces: that one fact is taken from the release, not checked.
What the rest of the rule needs (one "\n", at the end; no "\r", which text mode would have read as a line break;
not whitespace only) is checked on every row.

    python -m reuse.wikitext --out-dir data/wiki103-cased [--zip wikitext-103-raw-v1.zip]

All three splits are written under temporary names and renamed only once all are complete: a bad input or a failed
download leaves no file under a final name.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

SPLITS = ("train", "valid", "test")
ARCHIVE_DIR = "wikitext-103-raw"
HUB_REPO = "Salesforce/wikitext"
HUB_CONFIG = "wikitext-103-raw-v1"
# The commit that converted the dataset to parquet ("Convert dataset to Parquet (#8)"): pinned, so the files read
# are the ones these names and the row rule above were checked against. WIKITEXT_REVISION=main takes the newest.
HUB_REVISION = "b08601e04326c79dfdd32d625aee71d232d685c3"
HUB_FILES = {
    "train": ("train-00000-of-00002.parquet", "train-00001-of-00002.parquet"),
    "valid": ("validation-00000-of-00001.parquet",),
    "test": ("test-00000-of-00001.parquet",),
}
BLANK_LINE = " \n"
COPY_CHUNK = 1 << 20


class WikitextError(Exception):
    """Bad input or a failed download; the message says what to do."""


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# ---------------------------------------------------------------------------------------------------- archive
def from_archive(archive: Path, temps: dict[str, Path]) -> None:
    """Copy wikitext-103-raw/wiki.<split>.raw of the release archive to each split's temporary file."""
    if not archive.is_file():
        raise WikitextError(f"{archive} is missing or not a file; set WIKITEXT_ZIP to wikitext-103-raw-v1.zip")
    try:
        with zipfile.ZipFile(archive) as z:
            members = {info.filename: info for info in z.infolist()}
            if not any(name.startswith(ARCHIVE_DIR + "/") for name in members):
                raise WikitextError(f"{archive} has no folder {ARCHIVE_DIR}/: it is not wikitext-103-raw-v1.zip "
                                    f"(the word-level wikitext-103-v1.zip holds wikitext-103/wiki.*.tokens)")
            for split in SPLITS:  # every split checked before any is copied
                name = f"{ARCHIVE_DIR}/wiki.{split}.raw"
                if name not in members or members[name].file_size == 0:
                    raise WikitextError(f"{archive} has {'an empty' if name in members else 'no'} {name}")
            for split in SPLITS:
                with z.open(f"{ARCHIVE_DIR}/wiki.{split}.raw") as src, open(temps[split], "wb") as dst:
                    shutil.copyfileobj(src, dst, COPY_CHUNK)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:  # not a zip, or a corrupt member (CRC)
        raise WikitextError(f"{archive} is not a readable zip archive ({first_line(e)})") from e


# ---------------------------------------------------------------------------------------------------- Hub
def download(filename: str, revision: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()  # its retry warnings would bury the one line below; the cause is in it
    try:
        return Path(hf_hub_download(HUB_REPO, f"{HUB_CONFIG}/{filename}", repo_type="dataset", revision=revision))
    except Exception as e:  # offline without a cached copy, no network, an HTTP error: the first cause says which
        root = e
        while root.__cause__ or root.__context__:
            root = root.__cause__ or root.__context__
        raise WikitextError(f"could not get {HUB_CONFIG}/{filename} of the Hub dataset {HUB_REPO} at {revision} "
                            f"({first_line(root)}); set WIKITEXT_ZIP to a local wikitext-103-raw-v1.zip to work without the "
                            f"Hub") from e


def line_of(row: str | None, where: str) -> str:
    """The raw file's line for one Hub row (see the module's docstring)."""
    if row == "":
        return BLANK_LINE
    if row is None or not row.endswith("\n") or "\n" in row[:-1] or "\r" in row or not row.strip():
        shown = None if row is None else row[:60]
        raise WikitextError(f"{where} is {shown!r}: not a line of the raw release as the datasets script made "
                            f"rows (one '\\n', at the end, not whitespace only); the upload changed, so use "
                            f"WIKITEXT_ZIP")
    return row


def rows_to_lines(parquet: Path, out, split: str) -> int:
    """Append the lines of one parquet file's `text` column to `out`; the number of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(parquet)
        batches = f.iter_batches(columns=["text"], batch_size=65536) if "text" in f.schema_arrow.names else None
        if batches is None:
            raise WikitextError(f"{parquet} has no column 'text' (it has {', '.join(f.schema_arrow.names)}): not "
                                f"a file of the {HUB_CONFIG} config")
        n = 0
        for batch in batches:
            rows = batch.column(0).to_pylist()
            out.write("".join(line_of(row, f"{split} row {n + i}") for i, row in enumerate(rows)))
            n += len(rows)
        return n
    except (pa.ArrowException, OSError) as e:  # not parquet, truncated, unreadable (a disk-full write says so too)
        raise WikitextError(f"{parquet} could not be read into {out.name} ({first_line(e)})") from e


def from_hub(revision: str, temps: dict[str, Path]) -> None:
    paths = {split: [download(name, revision) for name in names] for split, names in HUB_FILES.items()}
    for split in SPLITS:  # all downloads done before any conversion: a network error costs no work
        with open(temps[split], "w", encoding="utf-8", newline="") as out:
            rows = sum(rows_to_lines(p, out, split) for p in paths[split])
        if rows == 0:
            raise WikitextError(f"the Hub's {split} split of {HUB_CONFIG} has no row")


# ---------------------------------------------------------------------------------------------------- main
def prepare(out_dir: Path, archive: Path | None, revision: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    final = {split: out_dir / f"wiki.{split}.raw" for split in SPLITS}
    temps = {}
    try:
        for split in SPLITS:
            fd, name = tempfile.mkstemp(dir=out_dir, prefix=f".wiki.{split}.raw.", suffix=".tmp")
            os.close(fd)
            temps[split] = Path(name)
        if archive is not None:
            from_archive(archive, temps)
        else:
            from_hub(revision, temps)
        for split in SPLITS:
            os.replace(temps[split], final[split])
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
    return final


def main(argv: list[str] | None = None) -> None:
    from reuse.cli import Parser

    parser = Parser(prog="python -m reuse.wikitext", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=Path("data/wiki103-cased"))
    parser.add_argument("--zip", type=Path, help="a local wikitext-103-raw-v1.zip (default: the Hugging Face Hub)")
    parser.add_argument("--revision", default=HUB_REVISION, help=f"Hub revision of {HUB_REPO} (default: pinned)")
    args = parser.parse_args(argv)
    try:
        if args.out_dir.exists() and not args.out_dir.is_dir():
            raise WikitextError(f"--out-dir {args.out_dir} is a file, not a folder")
        written = prepare(args.out_dir, args.zip, args.revision)
    except WikitextError as e:
        sys.exit(f"error: {e}")
    except OSError as e:  # an output folder that cannot be made or written
        sys.exit(f"error: {e}")
    for path in written.values():
        with open(path, "rb") as f:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(COPY_CHUNK), b""))
        print(f"{path}: {lines} lines, {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
