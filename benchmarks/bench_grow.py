"""Time to grow bert-12L-576H into bert-12L-640H on the CPU, against building the 640H model from scratch.

    python benchmarks/bench_grow.py

Figures: `reuse.grow.grow` on the state dict alone, and the whole `grow_checkpoint` (load the checkpoint, grow,
build the target, measure the function drift); the peer is `build_model` of the target (random initialisation),
which every from-scratch run pays too.
"""

import tempfile
import time

import torch

from reuse.checkpoint import save_model
from reuse.grow import grow, grow_checkpoint
from reuse.model import build_model, load_config
from reuse.tokenize import load_tokenizer


def best_of(fn, reps=3):
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    src, dst = load_config("configs/bert-12L-576H.json"), load_config("configs/bert-12L-640H.json")
    torch.manual_seed(0)
    small = build_model(src)
    state = small.state_dict()
    with tempfile.TemporaryDirectory() as tmp:
        save_model(f"{tmp}/small", small, load_tokenizer("bert-base-uncased"))
        t_grow = best_of(lambda: grow(state, src, dst, "net2net"))
        t_full = best_of(lambda: grow_checkpoint(f"{tmp}/small", dst, "net2net"))
    t_fresh = best_of(lambda: build_model(dst))
    print(f"{torch.get_num_threads()} threads: 576H -> 640H net2net grow() {t_grow:.2f} s, "
          f"grow_checkpoint (load + grow + build + drift) {t_full:.2f} s; fresh 640H build_model {t_fresh:.2f} s; "
          f"grow()/fresh = {t_grow / t_fresh:.2f}")


if __name__ == "__main__":
    main()
