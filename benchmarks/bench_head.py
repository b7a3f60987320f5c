"""The MLM head's vocabulary projection + cross-entropy, forward and backward, on CPU: reuse.model.LinearCrossEntropy
(the trainer's fused path) against the library path (F.linear + F.cross_entropy + autograd), for the masked rows of
one batch-32 x 128 step (614 rows, BERT's 30522 words) at each width.

    python benchmarks/bench_head.py [--widths 64 256 640] [--chunks 32 128]

Methods are measured alternately in the same run, best of `--rounds` kept. `--chunks` times the fused path at
several chunk sizes (rows per chunk), to choose LinearCrossEntropy.chunk_rows; "fused" alone is its choice.
"""

import argparse
import time

import torch
import torch.nn.functional as F

from reuse.model import LinearCrossEntropy


def library(x, w, b, y):
    F.cross_entropy(F.linear(x, w, b), y, reduction="sum").backward()


def fused(x, w, b, y):
    LinearCrossEntropy.apply(x, w, b, y).backward()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 256, 640])
    parser.add_argument("--rows", type=int, default=614, help="masked tokens: 15%% of 32 x 128")
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--chunks", type=int, nargs="*", default=[])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} threads, {args.rows} rows, vocabulary {args.vocab}; ms per forward + backward")
    default_rows = LinearCrossEntropy.chunk_rows
    for d in args.widths:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(args.rows, d, generator=gen).requires_grad_()
        w = (torch.randn(args.vocab, d, generator=gen) * 0.5).requires_grad_()
        b = (torch.randn(args.vocab, generator=gen) * 0.1).requires_grad_()
        y = torch.randint(0, args.vocab, (args.rows,), generator=gen)
        methods = {"library": (library, None), "fused": (fused, None)} | {f"fused/{c}": (fused, c) for c in args.chunks}
        best = dict.fromkeys(methods, float("inf"))
        for _ in range(args.rounds + 1):  # the first round is a warm-up
            for name, (fn, chunk) in methods.items():
                LinearCrossEntropy.chunk_rows = staticmethod(lambda width, chunk=chunk: chunk or default_rows(width))
                start = time.perf_counter()
                fn(x, w, b, y)
                elapsed = time.perf_counter() - start
                x.grad = w.grad = b.grad = None
                if _:
                    best[name] = min(best[name], elapsed)
        LinearCrossEntropy.chunk_rows = staticmethod(default_rows)
        row = "   ".join(f"{name} {t * 1e3:7.1f}" + ("" if name == "library" else f" ({best['library'] / t:.2f}x)")
                       for name, t in best.items())
        print(f"d={d:4d}   {row}", flush=True)


if __name__ == "__main__":
    main()
