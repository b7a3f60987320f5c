"""Time to grow bert-12L-576H into bert-12L-640H on the CPU: Net2Net, the exact MSG transition and LiGO, against
building the 640H model from scratch and against a plain training step of it.

    python benchmarks/bench_grow.py [--ligo-steps 3] [--batch 4] [--seq 64]

Figures: `reuse.grow.grow` on the state dict alone, and the whole `grow_checkpoint` (load the checkpoint, grow,
build the target, measure the function drift); `reuse.msg.start` (grow + build the masked model); one optimizer step
of the masked model during the ramp against one of the plain 640H model (the masks' overhead per step); LiGO's
operator steps (each builds the 640H weights from the operator and runs the 640H model forward and backward) against
the same plain training step, and the 100-step LiGO default extrapolated from the measured per-step time. The
peers: `build_model` of the target (random initialisation), which every from-scratch run pays too, and the plain
step, which every training step pays.
"""

import argparse
import tempfile
import time

import torch

from reuse import ligo, msg
from reuse.checkpoint import save_model
from reuse.grow import grow, grow_checkpoint
from reuse.model import build_model, load_config, masked_lm_loss
from reuse.tokenize import load_tokenizer


def best_of(fn, reps=3):
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def batch(config, size, length, seed=0):
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randint(1000, config.vocab_size, (size, length), generator=gen)
    labels = torch.full_like(inputs, -100)
    chosen = torch.rand(inputs.shape, generator=gen) < 0.15
    labels[chosen] = inputs[chosen]
    return inputs, labels


def train_step(model, optimizer, inputs, labels):
    masked_lm_loss(model, inputs, labels).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ligo-steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=64)
    args = parser.parse_args()
    src, dst = load_config("configs/bert-12L-576H.json"), load_config("configs/bert-12L-640H.json")
    torch.manual_seed(0)
    small = build_model(src)
    state = small.state_dict()
    with tempfile.TemporaryDirectory() as tmp:
        save_model(f"{tmp}/small", small, load_tokenizer("bert-base-uncased"))
        t_grow = best_of(lambda: grow(state, src, dst, "net2net"))
        t_full = best_of(lambda: grow_checkpoint(f"{tmp}/small", dst, "net2net"))
    t_fresh = best_of(lambda: build_model(dst))
    t_msg = best_of(lambda: msg.start(small, dst, ramp_steps=100))
    print(f"{torch.get_num_threads()} threads: 576H -> 640H net2net grow() {t_grow:.2f} s, "
          f"grow_checkpoint (load + grow + build + drift) {t_full:.2f} s; msg.start {t_msg:.2f} s; "
          f"fresh 640H build_model {t_fresh:.2f} s; grow()/fresh = {t_grow / t_fresh:.2f}, "
          f"msg.start/fresh = {t_msg / t_fresh:.2f}", flush=True)

    inputs, labels = batch(dst, args.batch, args.seq)
    plain = build_model(dst).train()
    opt = torch.optim.AdamW(plain.parameters(), lr=1e-4)
    train_step(plain, opt, inputs, labels)  # warm-up: allocations, optimizer state
    t_plain = best_of(lambda: train_step(plain, opt, inputs, labels))
    transition = msg.start(small, dst, ramp_steps=100)
    transition.step(50)
    masked_opt = torch.optim.AdamW(transition.model.train().parameters(), lr=1e-4)
    train_step(transition.model, masked_opt, inputs, labels)
    t_masked = best_of(lambda: train_step(transition.model, masked_opt, inputs, labels))
    print(f"one training step of 640H ({args.batch} x {args.seq} tokens): plain {t_plain:.2f} s, MSG-masked "
          f"{t_masked:.2f} s (x{t_masked / t_plain:.2f})", flush=True)

    batches = [batch(dst, args.batch, args.seq, seed) for seed in range(args.ligo_steps + 1)]
    ligo.grow(small, dst, batches[:1], steps=1)  # warm-up
    start = time.perf_counter()
    _, report = ligo.grow(small, dst, batches[1:], steps=args.ligo_steps)
    t_ligo = time.perf_counter() - start
    per_step = t_ligo / args.ligo_steps
    print(f"LiGO {args.ligo_steps} operator steps (operator set-up and materialising included) {t_ligo:.2f} s, "
          f"{per_step:.2f} s/step = x{per_step / t_plain:.2f} a plain 640H step; 100 steps (the default) "
          f"~{100 * per_step:.0f} s; counted FLOPs per step: model {report['ligo_model_flops'] / args.ligo_steps:.3g}, "
          f"operator {report['ligo_operator_flops'] / args.ligo_steps:.3g}", flush=True)


if __name__ == "__main__":
    main()
