"""Training tokens/s of reuse.train's step against the step a user would write with transformers, and MFU.

    python benchmarks/bench_train.py [--configs configs/bert-12L-64H.json configs/bert-12L-256H.json]

Baseline: BertForMaskedLM computing logits at every position + DataCollatorForLanguageModeling + torch.optim.AdamW.
Ours: reuse.train.train_step (MLM head on masked positions only, masks drawn on the device, blocks in memory; on
CPU the fused projection + cross-entropy and the cheaper dropout of reuse.dropout).
Same config, batch and sequence length, measured alternately in the same run (best of 3 rounds of 10 steps each). MFU is model FLOPs (reuse.model
.flops_per_step, which counts the head on masked tokens only; the baseline's extra head work is not "useful")
over the machine's matmul peak, measured here with a large fp32 (or bf16 on CUDA) matmul.
"""

import argparse
import time

import torch
from transformers import DataCollatorForLanguageModeling

from reuse.config import TrainConfig
from reuse.model import build_model, flops_per_step, load_config, matmul_peak
from reuse.tokenize import load_tokenizer
from reuse.objective import LossModule, objective_for
from reuse.train import lr_lambda, make_optimizer, train_step, use_speed_paths


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(step, steps, warmup, device):
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


DEFAULT_ROWS = ["configs/bert-12L-64H.json", "configs/bert-12L-256H.json", "configs/demo/bert-2L-64H.json:62",
                "configs/demo/bert-2L-128H.json:62", "configs/demo/bert-2L-192H.json:62"]


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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", nargs="+", default=DEFAULT_ROWS, help="CONFIG or CONFIG:BLOCK_SIZE (default 126)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="alternating measurements; the best of each is kept")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    amp = torch.bfloat16 if device.type == "cuda" else None
    peak = matmul_peak(device, amp or torch.float32, budget_s=float("inf"))  # all 10 products: a benchmark can wait
    print(f"device {device}, {torch.get_num_threads()} threads, matmul peak {peak / 1e12:.3f} TFLOP/s, "
          f"batch {args.batch_size}, {'bf16 autocast' if amp else 'fp32'}")
    for row in args.configs:
        path, _, block = row.partition(":")
        block_size = int(block or 126)
        config = load_config(path)
        tokenizer = load_tokenizer("bert-base-uncased") if config.vocab_size == 30522 else \
            stand_in_tokenizer(config.vocab_size)
        gen = torch.Generator().manual_seed(0)
        blocks = torch.randint(len(tokenizer.all_special_ids), config.vocab_size, (args.batch_size, block_size),
                               generator=gen)
        ids = torch.cat([torch.full((len(blocks), 1), tokenizer.cls_token_id), blocks,
                         torch.full((len(blocks), 1), tokenizer.sep_token_id)], dim=1)
        tokens = args.batch_size * (block_size + 2)

        baseline_model = build_model(config).to(device).train()
        baseline_opt = torch.optim.AdamW(baseline_model.parameters(), lr=1e-4)
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
        examples = [{"input_ids": row} for row in ids[:args.batch_size]]

        def baseline_step():
            batch = {k: v.to(device) for k, v in collator(examples).items()}
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss = baseline_model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(baseline_model.parameters(), 1.0)
            baseline_opt.step()
            baseline_opt.zero_grad(set_to_none=True)

        model = build_model(config)
        objective = objective_for(config, tokenizer)
        use_speed_paths(model, objective, device, amp)  # the trainer's own choice of kernels
        model.train()
        optimizer = make_optimizer(model, TrainConfig(lr=1e-4))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(10, 1000))
        loss_fn = LossModule(model, objective)
        mask_gen = torch.Generator(device=device).manual_seed(0)
        device_ids = ids[:args.batch_size].to(device)

        def our_step():
            train_step(loss_fn, optimizer, scheduler, device_ids, objective=objective, mask_gen=mask_gen,
                       grad_clip=1.0, autocast_dtype=amp)

        # Alternate the two, so a slow spell of the machine hits both, and keep each one's best round.
        t_base, t_ours = float("inf"), float("inf")
        for _ in range(args.rounds):
            t_base = min(t_base, timed(baseline_step, args.steps, 2, device))
            t_ours = min(t_ours, timed(our_step, args.steps, 2, device))
        useful = flops_per_step(config, args.batch_size, block_size + 2, 0.15 * args.batch_size * block_size)
        name = f"{path.split('/')[-1].removesuffix('.json')} x{block_size + 2}"
        print(f"{name:24s} baseline {tokens / t_base:9,.0f} tok/s (MFU {useful / t_base / peak:5.1%})   "
              f"reuse.train {tokens / t_ours:9,.0f} tok/s (MFU {useful / t_ours / peak:5.1%})   "
              f"speed-up {t_base / t_ours:.2f}x")


if __name__ == "__main__":
    main()
