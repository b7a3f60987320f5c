"""Dropout that is cheap on CPU, for training there.

Why by hand: on CPU, `torch.nn.functional.dropout` draws one Bernoulli per element from the generator (~5 ns each)
and PyTorch's fused SDPA kernel has no dropout, so attention dropout falls back to its slower math path. At
bert-12L-64H on 2 cores these two were a fifth of the training step (profiled). Here the mask comes from 64-bit
random words cut into four 16-bit draws (four times fewer generator calls), the mask becomes one float multiplier
(0 or 1/keep) that the forward and the backward each apply in one pass (torch.where on a boolean mask plus the
scaling took two passes each way: up to 1.3x slower, benchmarks/bench_dropout.py), and attention with dropout is the
plain softmax(QK^T)V with that mask. Neither PyTorch nor transformers offers this.

The drop probability is rounded to a multiple of 2^-16 (0.1 becomes 0.100006) and kept units are scaled by the
inverse of the rounded keep probability, so the expectation is exact. Draws come from the global CPU generator,
whose state the trainer checkpoints, so a resumed run still repeats its masks. On GPUs nothing changes: the native
dropout there is already a fused kernel.

Use `use_cpu_dropout(model)` on a model that trains on CPU; its saved checkpoints are unchanged (dropout has no
weights, and the attention implementation is not written to config.json).
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION = "sdpa_cpu_dropout"
RESOLUTION = 1 << 16  # every 16-bit word of a full-range 64-bit draw is uniform over its 65536 values


def drop_mask(shape: torch.Size, p: float) -> tuple[torch.Tensor, float]:
    """A boolean mask (True = dropped) and the scale for kept elements."""
    n = shape.numel()
    threshold = round(p * RESOLUTION)
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2 ** 63, None).view(torch.int16)[:n]
    # int16 words run from -2^15: a word is among the `threshold` lowest values with probability threshold / 2^16.
    return words.view(shape) < threshold - (1 << 15), RESOLUTION / (RESOLUTION - threshold)


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p):
        dropped, scale = drop_mask(x.shape, p)
        multiplier = torch.where(dropped, 0.0, scale).to(x.dtype)
        ctx.save_for_backward(multiplier)
        return x * multiplier

    @staticmethod
    def backward(ctx, grad):
        (multiplier,) = ctx.saved_tensors
        return grad * multiplier, None


def cpu_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    if p >= 1.0:
        return x * 0.0
    return _Dropout.apply(x, p)


class CPUDropout(torch.nn.Dropout):
    """nn.Dropout, with the cheaper mask when training on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return super().forward(x)
        return cpu_dropout(x, self.p)


def attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """SDPA, except with dropout on CPU and no padding mask: softmax(QK^T)V with `cpu_dropout` on the weights."""
    if dropout == 0.0 or query.device.type != "cpu" or attention_mask is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", False)
    if causal and query.shape[2] > 1:
        future = torch.ones(query.shape[2], key.shape[2], dtype=torch.bool, device=query.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    weights = cpu_dropout(torch.softmax(scores, dim=-1), dropout)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # the same masks as SDPA: None when nothing is padded


def use_cpu_dropout(model: PreTrainedModel) -> PreTrainedModel:
    """Swap every nn.Dropout for CPUDropout (same p) and attention for `attention`, in place."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is torch.nn.Dropout:
                setattr(parent, name, CPUDropout(child.p))
    model.set_attn_implementation(ATTENTION)
    return model
