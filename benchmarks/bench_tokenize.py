"""Tokens/s and peak memory of reuse.tokenize against a plain line-by-line loop, on the embedded corpus.

    python benchmarks/bench_tokenize.py [--data data/wiki-embedded/en.train.raw]

Each measurement runs in a fresh child process, so its peak resident memory (ru_maxrss) is its own. The corpus is
also repeated 4x to show that reuse.tokenize's peak memory does not grow with corpus size.
"""

import argparse
import multiprocessing as mp
import resource
import time
from pathlib import Path

import h5py
import numpy as np


def plain_loop(path, out):
    """What a user would write: one tokenizer call per line, tokens collected in a list, saved at the end."""
    from reuse.tokenize import load_tokenizer

    tok = load_tokenizer("bert-base-uncased")
    start = time.perf_counter()
    ids, offsets = [], [0]
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                x = tok(line.strip(), add_special_tokens=False)["input_ids"]
                ids.extend(x)
                offsets.append(len(ids))
    with h5py.File(out, "w") as h5:
        h5["tokens"] = np.asarray(ids, dtype=np.uint16)
    np.savetxt(f"{out}.line", offsets, fmt="%d")
    return len(ids), time.perf_counter() - start


def ours(path, out):
    from reuse.tokenize import load_tokenizer, tokenize_file

    tok = load_tokenizer("bert-base-uncased")
    start = time.perf_counter()
    stats = tokenize_file(Path(path), tok, "bert-base-uncased", force=True)
    return stats["tokens"], time.perf_counter() - start


def child(fn, path, out, queue):
    n, seconds = fn(path, out)
    queue.put((n, seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def measure(fn, path, out):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=child, args=(fn, str(path), str(out), queue))
    p.start()
    p.join()
    if p.exitcode != 0:
        raise SystemExit(f"{fn.__name__} failed in its child process (exit code {p.exitcode})")
    return queue.get()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("data/wiki-embedded/en.train.raw"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_tokenize"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    text = args.work / "corpus.raw"
    text.write_text(args.data.read_text())
    big = args.work / "corpus4x.raw"
    big.write_text(args.data.read_text() * 4)

    n0, t0, m0 = measure(plain_loop, text, args.work / "plain.hdf5")
    n1, t1, m1 = measure(ours, text, None)
    n4, t4, m4 = measure(ours, big, None)
    assert n0 == n1, f"token counts differ: plain {n0}, reuse.tokenize {n1}"
    print(f"corpus: {args.data} ({n1:,} tokens), {mp.cpu_count()} cores")
    print(f"plain line loop   : {n0 / t0:12,.0f} tokens/s  peak RSS {m0:7.1f} MiB")
    print(f"reuse.tokenize    : {n1 / t1:12,.0f} tokens/s  peak RSS {m1:7.1f} MiB")
    print(f"reuse.tokenize 4x : {n4 / t4:12,.0f} tokens/s  peak RSS {m4:7.1f} MiB  ({n4:,} tokens)")
    print(f"speed-up: {t0 / t1:.2f}x   peak memory 4x corpus / 1x corpus: {m4 / m1:.2f}")


if __name__ == "__main__":
    main()
