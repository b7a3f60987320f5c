"""Growth of GPT-2 (pre-LN decoder) checkpoints in width and depth.

    state, report, config = grow(state_dict, src_config, dst_config, method="lemon", depth_method="stack")

`lemon` (LEMON, "Lossless model expansion", ICLR 2024: average expansion of the residual stream) is exact at any
width ratio and any depth: in eval mode the grown model's logits equal the small model's to float rounding.
- The residual stream of D units holds the small one's d units and, in each new unit, their mean (the new columns
  of the token and position embeddings are the mean of the old ones; every projection writing the residual writes
  the mean of its old outputs into the new units). Mean and variance over D units are then the mean and d/D times
  the variance over d, so each LayerNorm's gain on the old units is scaled by sqrt(d/D) and the config's
  `layer_norm_epsilon` by d/D (one value for every LayerNorm, all of width D): the old units' output is the small
  model's, the new units' output is 0 (gain sqrt(d/D), bias 0).
- New attention heads and FFN units read anything (random weights, as the small model's initialiser draws them)
  and write nothing: their rows of the output projections are 0. The tied LM head reads the final LayerNorm, whose
  new units are 0.
- New layers (depth, `stack` or `interleave` copies) have zero output projections, so each is the identity; the
  first copy of every small layer, in order, is the small layer itself.
Preserved at growth only: the zero output projections get gradients at the first step, so the function moves at
once; the weights behind them (new heads, FFN units and layers) get gradients from the second step on. With
dropout on, the old units see dropout of the same rate, so the output has the small model's distribution, not the
same sample. The grown config differs from the target's in `layer_norm_epsilon` (scaled by d/D); `grow_model`
builds the model from it, so a saved checkpoint carries it.
`random`: the old weights top-left, every new entry fresh (normal(0, initializer_range), zero biases, unit
LayerNorms), new layers as plain copies: the baseline, not exact.
"""

from __future__ import annotations

import copy
import math
import re

import torch
from transformers import PretrainedConfig

from reuse.grow import DEPTH_METHODS, HEAD_SIZE, GrowthError

METHODS = ("lemon", "random")
BLOCK = re.compile(r"^transformer\.h\.(\d+)\.(.*)$")


def check_growable(src: PretrainedConfig, dst: PretrainedConfig, method: str, depth_method: str) -> None:
    if src.model_type != "gpt2" or dst.model_type != "gpt2":
        raise GrowthError(f"reuse.grow_gpt2 grows gpt2 into gpt2, not {src.model_type} into {dst.model_type}")
    if method not in METHODS:
        raise GrowthError(f"unknown GPT-2 growth method {method!r}; choose one of {', '.join(METHODS)}")
    if depth_method not in DEPTH_METHODS:
        raise GrowthError(f"unknown depth method {depth_method!r}; choose one of {', '.join(DEPTH_METHODS)}")
    for name in ("n_embd", "n_layer", "n_head"):
        if getattr(dst, name) < getattr(src, name):
            raise GrowthError(f"growth cannot shrink {name}: {getattr(src, name)} -> {getattr(dst, name)}")
    if inner(dst) < inner(src):
        raise GrowthError(f"growth cannot shrink n_inner: {inner(src)} -> {inner(dst)}")
    for cfg in (src, dst):
        if cfg.n_embd != cfg.n_head * HEAD_SIZE:
            raise GrowthError(f"head size must be {HEAD_SIZE} (n_embd {cfg.n_embd}, {cfg.n_head} heads): heads "
                              f"are grown whole")
    for name in ("vocab_size", "n_positions"):
        if getattr(src, name) != getattr(dst, name):
            raise GrowthError(f"{name} differs ({getattr(src, name)} vs {getattr(dst, name)}): growth keeps the "
                              f"vocabulary and positions")
    if src.scale_attn_by_inverse_layer_idx or dst.scale_attn_by_inverse_layer_idx:
        raise GrowthError("scale_attn_by_inverse_layer_idx makes a layer's function depend on its index: not grown")


def inner(cfg: PretrainedConfig) -> int:
    return cfg.n_inner or 4 * cfg.n_embd


class Grower:
    """Width growth of one state dict; `fresh` draws new entries from one seeded generator."""

    def __init__(self, src, dst, method, seed):
        self.d, self.D = src.n_embd, dst.n_embd
        self.f, self.F = inner(src), inner(dst)
        self.exact = method == "lemon"
        self.std = dst.initializer_range
        self.gen = torch.Generator().manual_seed(seed)
        self.gain = math.sqrt(self.d / self.D) if self.exact else 1.0

    def fresh(self, *shape) -> torch.Tensor:
        return torch.randn(shape, generator=self.gen) * self.std

    def block(self, w: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """w top-left in a rows x cols matrix of fresh entries."""
        out = self.fresh(rows, cols)
        out[:w.shape[0], :w.shape[1]] = w
        return out

    def writes_residual(self, w: torch.Tensor, rows: int) -> torch.Tensor:
        """A projection [in, d] writing the residual -> [rows, D]: new inputs write nothing (exact), the new
        residual units get the mean of the old outputs."""
        if not self.exact:
            return self.block(w, rows, self.D)
        out = torch.zeros(rows, self.D)
        out[:w.shape[0], :self.d] = w
        out[:w.shape[0], self.d:] = w.mean(1, keepdim=True)
        return out

    def residual_vector(self, b: torch.Tensor) -> torch.Tensor:
        fill = b.mean() if self.exact else 0.0
        return torch.cat([b, torch.full((self.D - self.d,), float(fill))])

    def width(self, key: str, t: torch.Tensor) -> torch.Tensor:
        t = t.float()
        d, D, f, F = self.d, self.D, self.f, self.F
        if key in ("transformer.wte.weight", "transformer.wpe.weight"):
            new = t.mean(1, keepdim=True).expand(-1, D - d) if self.exact else self.fresh(t.shape[0], D - d)
            return torch.cat([t, new], 1)
        if re.search(r"ln_(1|2|f)\.weight$", key):
            return torch.cat([t * self.gain, torch.full((D - d,), self.gain)])
        if re.search(r"ln_(1|2|f)\.bias$", key):
            return torch.cat([t, torch.zeros(D - d)])
        if key.endswith("attn.c_attn.weight"):  # [d, 3d]: q, k, v, each reading the residual, writing heads
            return torch.cat([self.block(part, D, D) for part in t.split(d, 1)], 1)
        if key.endswith("attn.c_attn.bias"):
            return torch.cat([torch.cat([part, torch.zeros(D - d)]) for part in t.split(d)])
        if key.endswith("attn.c_proj.weight"):
            return self.writes_residual(t, D)
        if key.endswith("mlp.c_fc.weight"):
            return self.block(t, D, F)
        if key.endswith("mlp.c_fc.bias"):
            return torch.cat([t, torch.zeros(F - f)])
        if key.endswith("mlp.c_proj.weight"):
            return self.writes_residual(t, F)
        if key.endswith("c_proj.bias"):
            return self.residual_vector(t)
        raise GrowthError(f"no GPT-2 growth rule for parameter {key!r}")


def layer_map(src_layers: int, dst_layers: int, depth_method: str) -> list[int]:
    if depth_method == "stack":
        return [i % src_layers for i in range(dst_layers)]
    return [i * src_layers // dst_layers for i in range(dst_layers)]


def grow(state_dict: dict, src: PretrainedConfig, dst: PretrainedConfig, method: str = "lemon",
         depth_method: str = "stack", seed: int = 0) -> tuple[dict, dict, PretrainedConfig]:
    """Pure function: a GPT-2 state dict of `src` -> one of `dst`, a report, and the grown model's config (the
    target's, with `layer_norm_epsilon` scaled by d/D for lemon)."""
    check_growable(src, dst, method, depth_method)
    grower = Grower(src, dst, method, seed)
    state = {k: grower.width(k, v).to(v.dtype) for k, v in state_dict.items()
             if k != "lm_head.weight" and not k.endswith((".attn.bias", ".attn.masked_bias"))}
    mapping = layer_map(src.n_layer, dst.n_layer, depth_method)
    grown = {k: v for k, v in state.items() if not BLOCK.match(k)}
    seen = set()
    for new, old in enumerate(mapping):
        for key, value in state.items():
            m = BLOCK.match(key)
            if m and int(m.group(1)) == old:
                value = value.clone()
                if old in seen and method == "lemon" and m.group(2).split(".")[-2] == "c_proj":
                    value.zero_()  # a new layer: zero output projections make the block the identity
                grown[f"transformer.h.{new}.{m.group(2)}"] = value
        seen.add(old)
    config = copy.deepcopy(dst)
    if method == "lemon":
        config.layer_norm_epsilon = src.layer_norm_epsilon * src.n_embd / dst.n_embd
    report = {"method": method, "depth_method": depth_method, "seed": seed, "layers": mapping,
              "from_hidden": src.n_embd, "to_hidden": dst.n_embd, "from_layers": src.n_layer,
              "to_layers": dst.n_layer, "layer_norm_epsilon": config.layer_norm_epsilon}
    return grown, report, config


def grow_model(small, dst: PretrainedConfig, method: str = "lemon", depth_method: str = "stack", seed: int = 0):
    """A grown GPT2LMHeadModel from a small one; returns (model, report)."""
    from reuse.model import build_model

    state, report, config = grow(small.state_dict(), small.config, dst, method, depth_method, seed)
    model = build_model(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if [k for k in missing if k != "lm_head.weight"] or unexpected:
        raise GrowthError(f"grown weights do not fit gpt2: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    return model, report
