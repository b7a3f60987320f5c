"""Where one method's training step spends its time: torch.profiler over a few steps of bench_train's step
functions, the operators with the largest self time and their share of the total.

    python benchmarks/profile_step.py [--config configs/bert-12L-64H.json] [--method ours] [--steps 5] [--shapes]

`--shapes` splits each operator by its input shapes (which matmul, which dropout). Shares under the profiler are a
little off the unprofiled step (each operator call pays its recording); the step itself is timed by bench_train.py.
"""

import argparse

import torch

from bench_train import METHODS, make_steps, row_inputs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/bert-12L-64H.json", help="CONFIG or CONFIG:BLOCK_SIZE")
    parser.add_argument("--method", default="ours", choices=METHODS)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="profiled steps, after 2 untimed ones")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--shapes", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    _, config, tokenizer, ids, _ = row_inputs(args.config, args.batch_size)
    step = make_steps(config, tokenizer, ids, args.batch_size, device, [args.method])[args.method][0]
    for _ in range(2):  # optimizer state, and for ours-compile the compile and its one recompile
        step()
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA]
                                                          if device.type == "cuda" else [])
    with torch.profiler.profile(activities=activities, record_shapes=args.shapes) as prof:
        for _ in range(args.steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    # On CUDA the device time is what the step waits for; on CPU the operators' own (self) time.
    own = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages(group_by_input_shape=args.shapes) if getattr(e, own) > 0]
    total = sum(getattr(e, own) for e in events)
    print(f"{args.config} {args.method}, batch {args.batch_size}, {device}, {torch.get_num_threads()} threads: "
          f"{total / 1e3 / args.steps:.1f} ms of {'device' if device.type == 'cuda' else 'CPU'} time per step")
    for e in sorted(events, key=lambda e: -getattr(e, own))[:args.top]:
        shapes = f"  {e.input_shapes}"[:100] if args.shapes else ""
        print(f"{e.key[:48]:48s} {getattr(e, own) / total:6.1%} {getattr(e, own) / 1e3 / args.steps:8.1f} ms/step "
              f"{e.count / args.steps:6.0f} calls/step{shapes}")


if __name__ == "__main__":
    main()
