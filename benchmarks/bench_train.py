"""Training tokens/s of reuse.train's step against the step a user would write with transformers, and MFU.

    python benchmarks/bench_train.py [--configs configs/bert-12L-64H.json configs/bert-12L-640H.json] [--json F]

Baseline: BertForMaskedLM computing logits at every position + DataCollatorForLanguageModeling + torch.optim.AdamW,
in the same precision as ours (bf16 autocast on CUDA, fp32 on CPU); `--methods ... baseline-tf32` adds it in fp32
with TF32 matmuls (CUDA). Ours: reuse.train.train_step (MLM head on masked positions only, masks drawn on the
device, blocks in memory; on CPU the fused projection + cross-entropy and the cheaper dropout of reuse.dropout);
`ours-compile` is the same step with the loss module under torch.compile.
Same config, batch and sequence length, measured alternately in the same run, each method's best round kept.
Steps and rounds per row default to a count that follows the row's FLOPs (`steps_for`), so the wide rows stay
short on 2 CPU cores. MFU is model FLOPs (reuse.model.flops_per_step, which counts the head on masked tokens only;
the baseline's extra head work is not "useful") over the machine's matmul peak, measured here with a large fp32
(or bf16 on CUDA) matmul. Peak memory (CUDA only): a method's parameters and optimizer state plus its step's peak
above what was allocated before it.
"""

import argparse
import json
import math
import time

import torch
from transformers import DataCollatorForLanguageModeling

from reuse.config import TrainConfig
from reuse.model import build_model, flops_per_step, load_config, matmul_peak
from reuse.tokenize import load_tokenizer
from reuse.objective import LossModule, objective_for
from reuse.train import lr_lambda, make_optimizer, train_step, use_speed_paths

METHODS = ("baseline", "baseline-tf32", "ours", "ours-compile")
DEFAULT_ROWS = ["configs/bert-12L-64H.json", "configs/bert-12L-256H.json", "configs/bert-12L-640H.json",
                "configs/demo/bert-2L-64H.json:62", "configs/demo/bert-2L-128H.json:62",
                "configs/demo/bert-2L-192H.json:62"]
STEP_BUDGET = 1.2e12  # FLOPs per timed measurement: 10 steps at 12L-64H, 4 at 256H (batch 32 x 128)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


CLOCK = time.perf_counter  # --clock process: CPU seconds of this process, for a machine shared with other jobs


def timed(step, steps, warmup, device):
    for _ in range(warmup):
        step()
    sync(device)
    start = CLOCK()
    for _ in range(steps):
        step()
    sync(device)
    return (CLOCK() - start) / steps


def steps_for(flops: float) -> tuple[int, int, int]:
    """(steps, warm-up steps per round, rounds) for a step of `flops`: a 640H step takes ~15-20 s on 2 CPU cores, so
    3 rounds of 10 would alone take 40 minutes. Every method has had one untimed step before the rounds. The widest
    rows get 4 rounds of 1 step rather than 2 of 2 (the same time): a slow spell of the machine then spoils fewer of
    a method's samples (2 x 2 steps at 640H gave 1.64x and 1.36x in two runs on one machine)."""
    if flops >= 1e12:
        return 1, 0, 4
    steps = max(2, min(10, round(STEP_BUDGET / flops)))
    return steps, 1 if steps >= 5 else 0, 3


def stand_in_tokenizer(vocab_size: int):
    """A WordPiece-layout tokenizer with `vocab_size` entries ([PAD] [UNK] [CLS] [SEP] [MASK] first): the demo's
    models have a 2048-token vocabulary, and only the special ids and the length matter to either step."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + [f"t{i}" for i in range(vocab_size - len(specials))])}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="[UNK]")),
                                   pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                   mask_token="[MASK]")


def resident_bytes(model, optimizer) -> int:
    tensors = list(model.parameters()) + [t for s in optimizer.state.values() for t in s.values()
                                          if torch.is_tensor(t)]
    return sum(t.numel() * t.element_size() for t in tensors)


def make_steps(config, tokenizer, ids, batch_size, device, methods):
    """One zero-argument step function per method, with the objects whose memory it holds."""
    amp = torch.bfloat16 if device.type == "cuda" else None
    steps = {}
    for method in methods:
        if method.startswith("baseline"):
            tf32 = method == "baseline-tf32"
            model = build_model(config).to(device).train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
            collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
            examples = [{"input_ids": row} for row in ids]

            def step(model=model, optimizer=optimizer, collator=collator, examples=examples, tf32=tf32):
                dtype = None if tf32 else amp
                batch = {k: v.to(device) for k, v in collator(examples).items()}
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    loss = model(**batch).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        else:
            model = build_model(config)
            objective = objective_for(config, tokenizer)
            use_speed_paths(model, objective, device, amp, compiled=method == "ours-compile")  # the trainer's choice
            model.train()
            optimizer = make_optimizer(model, TrainConfig(lr=1e-4))
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(10, 1000))
            loss_fn = LossModule(model, objective)
            if method == "ours-compile":
                loss_fn = torch.compile(loss_fn)
            mask_gen = torch.Generator(device=device).manual_seed(0)
            device_ids = ids.to(device)

            def step(loss_fn=loss_fn, optimizer=optimizer, scheduler=scheduler, objective=objective,
                     mask_gen=mask_gen, device_ids=device_ids):
                train_step(loss_fn, optimizer, scheduler, device_ids, objective=objective, mask_gen=mask_gen,
                           grad_clip=1.0, autocast_dtype=amp)
        steps[method] = (step, model, optimizer)
    return steps


def row_inputs(row: str, batch_size: int):
    """(config path, config, tokenizer, input ids, block size) of a row `CONFIG[:BLOCK_SIZE]`: one fixed batch of
    random tokens between [CLS] and [SEP]."""
    path, _, block = row.partition(":")
    block_size = int(block or 126)
    config = load_config(path)
    tokenizer = load_tokenizer("bert-base-uncased") if config.vocab_size == 30522 else \
        stand_in_tokenizer(config.vocab_size)
    gen = torch.Generator().manual_seed(0)
    blocks = torch.randint(len(tokenizer.all_special_ids), config.vocab_size, (batch_size, block_size), generator=gen)
    ids = torch.cat([torch.full((batch_size, 1), tokenizer.cls_token_id), blocks,
                     torch.full((batch_size, 1), tokenizer.sep_token_id)], dim=1)
    return path, config, tokenizer, ids, block_size


def measure_row(row: str, batch_size: int, device: torch.device, peak: float, methods=("baseline", "ours"),
                steps: int | None = None, rounds: int | None = None) -> dict:
    """Tokens/s, MFU and (CUDA) peak memory of each method on one row `CONFIG[:BLOCK_SIZE]`."""
    path, config, tokenizer, ids, block_size = row_inputs(row, batch_size)
    tokens = batch_size * (block_size + 2)
    useful = flops_per_step(config, batch_size, block_size + 2, 0.15 * batch_size * block_size)
    auto_steps, warmup, auto_rounds = steps_for(useful)
    steps, rounds = steps or auto_steps, rounds or auto_rounds
    fns = make_steps(config, tokenizer, ids, batch_size, device, methods)
    best = {m: math.inf for m in methods}
    memory, first_call = {}, {}
    for method, (step, model, optimizer) in fns.items():
        # One untimed step each first: it creates the optimizer state and, for ours-compile, compiles. The masked
        # count differs from batch to batch, so dynamo recompiles the head's graph once more, with that size symbolic,
        # on the second step, and never again (torch._dynamo counters: 5 graphs over 8 batches, none after the
        # second): without a second untimed step that recompile falls into the timed steps.
        start = time.perf_counter()
        with tf32_matmuls(method == "baseline-tf32"):
            for _ in range(2 if method == "ours-compile" else 1):
                step()
        sync(device)
        first_call[method] = time.perf_counter() - start
    # Alternate the methods, so a slow spell of the machine hits all of them, and keep each one's best round.
    for _ in range(rounds):
        for method, (step, model, optimizer) in fns.items():
            if device.type == "cuda":
                torch.cuda.empty_cache()
                before = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            with tf32_matmuls(method == "baseline-tf32"):
                best[method] = min(best[method], timed(step, steps, warmup, device))
            if device.type == "cuda":
                used = resident_bytes(model, optimizer) + torch.cuda.max_memory_allocated() - before
                memory[method] = max(memory.get(method, 0), used / 2 ** 20)
    name = f"{path.split('/')[-1].removesuffix('.json')} x{block_size + 2}"
    result = {"row": name, "config": path, "batch_size": batch_size, "seq_len": block_size + 2, "steps": steps,
              "warmup": warmup, "rounds": rounds, "flops_per_step": useful, "device": str(device), "methods": {}}
    for method in methods:
        result["methods"][method] = {"tokens_per_s": tokens / best[method], "step_s": best[method],
                                     "mfu": useful / best[method] / peak, "peak_memory_mib": memory.get(method),
                                     "first_call_s": first_call[method]}
    return result


class tf32_matmuls:
    """fp32 matmuls on TF32 tensor cores within the block (the usual fp32 setting of a GPU user)."""

    def __init__(self, on: bool):
        self.on = on

    def __enter__(self):
        if self.on:
            self.saved = torch.get_float32_matmul_precision()
            torch.set_float32_matmul_precision("high")

    def __exit__(self, *exc):
        if self.on:
            torch.set_float32_matmul_precision(self.saved)


def describe(result: dict) -> str:
    """One line per row: every method's tokens/s and MFU, and each one's ratio against its peer."""
    m = result["methods"]
    peer = {"baseline": "ours", "baseline-tf32": "ours", "ours-compile": "ours", "ours": "baseline"}
    parts = []
    for method, r in m.items():
        text = f"{method} {r['tokens_per_s']:9,.0f} tok/s (MFU {r['mfu']:5.1%}"
        if r["peak_memory_mib"] is not None:
            text += f", {r['peak_memory_mib']:,.0f} MiB"
        text += ")"
        other = peer[method]
        if other in m and other != method:
            # ratio of the other's step time to this one's: > 1 means this method is faster
            text += f" {m[other]['step_s'] / r['step_s']:.2f}x vs {other}"
        parts.append(text)
    peak = result.get("matmul_peak_flops")
    return f"{result['row']:24s} " + "   ".join(parts) + (f"   [peak {peak / 1e12:.3f} TFLOP/s]" if peak else "")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", nargs="+", default=DEFAULT_ROWS, help="CONFIG or CONFIG:BLOCK_SIZE (default 126)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, help="timed steps per round (default: by the row's FLOPs)")
    parser.add_argument("--rounds", type=int, help="alternating measurements; the best of each is kept (default: "
                                                   "3, or 2 for a step over 1 TFLOP)")
    parser.add_argument("--methods", nargs="+", default=["baseline", "ours"], choices=METHODS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--clock", choices=("wall", "process"), default="wall",
                        help="process: time steps and the matmul peak in this process's CPU seconds, which other jobs "
                             "on a shared machine disturb far less than wall time (CPU only; best with one thread, "
                             "as idle OpenMP threads spin)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.clock == "process":
        if device.type == "cuda":
            parser.error("--clock process times CPU work only; on CUDA use the default wall clock")
        global CLOCK
        CLOCK = time.process_time
    if device.type != "cuda" and "baseline-tf32" in args.methods:
        parser.error("baseline-tf32 needs CUDA (TF32 is a GPU tensor-core format)")
    amp = torch.bfloat16 if device.type == "cuda" else None

    def measure_peak():
        # On a GPU a 2048-wide matmul lasts tens of microseconds, too short to time against launch overhead.
        # __wrapped__: matmul_peak caches its answer for the training runs of one process; here it must measure.
        return matmul_peak.__wrapped__(device, amp or torch.float32, clock=CLOCK, budget_s=math.inf,  # it can wait
                                       **({"n": 8192, "reps": 20} if amp else {}))

    peak = measure_peak()
    print(f"device {device}, {torch.get_num_threads()} threads, {args.clock} clock, "
          f"matmul peak {peak / 1e12:.3f} TFLOP/s, "
          f"batch {args.batch_size}, {'bf16 autocast' if amp else 'fp32'}", flush=True)
    results = []
    for row in args.configs:
        # Measured again before every row, the best so far kept: a peak from a slow spell alone inflates MFUs.
        if results:
            peak = max(peak, measure_peak())
        result = measure_row(row, args.batch_size, device, peak, args.methods, args.steps, args.rounds)
        result["matmul_peak_flops"], result["clock"] = peak, args.clock
        results.append(result)
        print(describe(result), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
