"""Dropout forward + backward on CPU at the shapes of a batch-32 x 128 step: reuse.dropout.cpu_dropout (the trainer's
CPU path) against torch.nn.functional.dropout (its peer), and against `where`, the same 16-bit mask applied with
torch.where and a separate scaling (two passes each way instead of one).

    python benchmarks/bench_dropout.py [--rounds 15]

Methods alternate within each round; each one's best round is kept.
"""

import argparse
import time

import torch
import torch.nn.functional as F

from reuse.dropout import cpu_dropout, drop_mask

SHAPES = {"hidden 64H": (32, 128, 64), "attention 1 head": (32, 1, 128, 128), "hidden 640H": (32, 128, 640),
          "attention 10 heads": (32, 10, 128, 128)}
P = 0.1


def where_dropout(x, p):
    dropped, scale = drop_mask(x.shape, p)
    return torch.where(dropped, 0.0, x * scale)


METHODS = {"native": lambda x: F.dropout(x, P), "where": lambda x: where_dropout(x, P),
           "ours": lambda x: cpu_dropout(x, P)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} threads, p={P}; ms per forward + backward, best of {args.rounds} rounds")
    for label, shape in SHAPES.items():
        x = torch.randn(shape, requires_grad=True)
        upstream = torch.randn(shape)
        best = dict.fromkeys(METHODS, float("inf"))
        for round_ in range(args.rounds + 1):  # round 0 warms up
            for name, fn in METHODS.items():
                start = time.perf_counter()
                fn(x).backward(upstream)
                elapsed = time.perf_counter() - start
                x.grad = None
                if round_:
                    best[name] = min(best[name], elapsed)
        ours = best["ours"]
        print(f"{label:20s} {str(shape):18s} " + "   ".join(
            f"{name} {t * 1e3:6.2f}" + ("" if name == "ours" else f" (ours {t / ours:.2f}x faster)")
            for name, t in best.items()), flush=True)


if __name__ == "__main__":
    main()
