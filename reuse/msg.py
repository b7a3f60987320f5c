"""Masked structural growth (MSG, Yao et al. 2023): growth of a post-LN BERT/RoBERTa that is exact at the moment of
growth at any width ratio, followed by a ramp back to a plain checkpoint.

    transition = start(small_model, big_config, ramp_steps=K)   # transition.model is the big model to train
    transition.step(global_step)                                 # before each step: mask = min(1, step / K)
    model = transition.finish()                                  # at mask 1: the same object, a plain HF model

Why a transition and not a closed form: a plain post-LN model cannot hold a non-integer widening exactly. If the big
residual stream is a fixed linear map M of the small one (what any weight-space operator gives), LayerNorm over D
units reproduces LayerNorm over d only if M maps constants to constants and is a scaled isometry on centred vectors;
with k = D - d < d - 1 new units that forces the new units to be the mean of the old ones (LEMON's average
expansion), whose normalised value is then 0, so the LayerNorm's output on the new units is the constant bias, while
the next layer's LayerNorm needs them to track the (input-dependent) mean of gamma * x over the old units. Only
integer ratios (net2net) escape this; LEMON supports only divisible widths for post-LN for the same reason.

The grown weights: the small model's weights in the top-left block, every new entry as the `random` operator draws
it (exactness does not depend on them), new layers as copies chosen by `depth_method` (stack or interleave). One
mask value c ramps linearly from 0 (step 0) to 1 (step K) and multiplies
- every new residual unit, at the output of each LayerNorm of the residual stream (embeddings, both per layer,
  the MLM head's); those LayerNorms take mean and variance weighted by the mask, i.e. over the active units;
- every new attention head's output and every new FFN unit's activation, before the projection that reads them;
- every new layer's update: its output is c * layer(x) + (1 - c) * x.

What is preserved, and when:
- at c = 0 (growth, step 0): in eval mode (dropout off) the big model computes the small model's logits, to float
  rounding, for any weights of the new entries: new units are 0 and never enter a LayerNorm's statistics, new
  heads/FFN units are multiplied by 0, new layers are the identity. Tested at every ratio of the paper's ladder.
- with dropout on at c = 0: the old units see independent dropout masks of the same rate as in the small model, so
  the big model's output has the small model's *distribution*, not the same sample (the random draws differ).
- during the ramp (0 < c < 1) nothing is preserved: the function moves continuously from the small model's (c = 0)
  to the plain big model with the trained weights (c = 1). At c = 0 the new weights get zero gradient; they learn as
  c grows. A checkpoint saved during the ramp holds weights that mean the masked model only: resuming recreates the
  masks from the step; loaded plainly it is another function.
- at c = 1 the masks are the identity: `finish()` removes them and the model is a plain `*ForMaskedLM`, which saves
  and loads with AutoModelForMaskedLM to the same logits (float rounding; tested).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from reuse.grow import DEPTH_METHODS, GrowthError, grow

FAMILIES = ("bert", "roberta")


class Masks(nn.Module):
    """The mask value c and which units are new, as buffers so that `model.to(device)` moves them."""

    def __init__(self, new_residual: torch.Tensor, new_attention: torch.Tensor, new_ffn: torch.Tensor):
        super().__init__()
        self.register_buffer("c", torch.zeros(()), persistent=False)
        self.register_buffer("new_r", new_residual.float(), persistent=False)
        self.register_buffer("new_a", new_attention.float(), persistent=False)
        self.register_buffer("new_f", new_ffn.float(), persistent=False)

    def mask(self, new: torch.Tensor) -> torch.Tensor:
        return 1 - new * (1 - self.c)


class MaskedLayerNorm(nn.LayerNorm):
    """A LayerNorm of the residual stream whose statistics are weighted by the residual mask and whose output is
    multiplied by it; its class is swapped in and out of an existing nn.LayerNorm, so parameters and state-dict keys
    stay those of the plain model."""

    msg_masks: Masks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.msg_masks.mask(self.msg_masks.new_r)
        w = m / m.sum()
        h = x.float()
        mean = (h * w).sum(-1, keepdim=True)
        var = ((h - mean).square() * w).sum(-1, keepdim=True)
        out = (h - mean) * torch.rsqrt(var + self.eps) * self.weight.float() + self.bias.float()
        return (out * m).to(x.dtype)


def residual_norms(model: PreTrainedModel) -> list[nn.LayerNorm]:
    base = model.base_model
    norms = [base.embeddings.LayerNorm]
    for layer in base.encoder.layer:
        norms += [layer.attention.output.LayerNorm, layer.output.LayerNorm]
    norms.append(model.cls.predictions.transform.LayerNorm if hasattr(model, "cls") else model.lm_head.layer_norm)
    return norms


class Transition:
    """The masked big model during the ramp; see the module docstring for what it preserves."""

    def __init__(self, model: PreTrainedModel, masks: Masks, new_layers: list[int], ramp_steps: int, report: dict):
        self.model, self.masks, self.ramp_steps, self.report = model, masks, ramp_steps, report
        self.active = True
        model.add_module("msg_masks", masks)
        self.norms = residual_norms(model)
        for norm in self.norms:
            norm.__class__ = MaskedLayerNorm
            object.__setattr__(norm, "msg_masks", masks)  # a reference, not a submodule of every LayerNorm
        self.hooks = []
        for layer in model.base_model.encoder.layer:
            self.hooks.append(layer.attention.output.dense.register_forward_pre_hook(self._mask_input("new_a")))
            self.hooks.append(layer.output.dense.register_forward_pre_hook(self._mask_input("new_f")))
        for index in new_layers:
            self.hooks.append(model.base_model.encoder.layer[index].register_forward_hook(self._mix_layer,
                                                                                         with_kwargs=True))

    def _mask_input(self, name: str):
        def hook(module, args):
            return (args[0] * self.masks.mask(getattr(self.masks, name)).to(args[0].dtype),) + args[1:]
        return hook

    def _mix_layer(self, module, args, kwargs, output):
        x = args[0] if args else kwargs["hidden_states"]
        c = self.masks.c.to(output.dtype)
        return c * output + (1 - c) * x

    @property
    def mask_value(self) -> float:
        return float(self.masks.c)

    def step(self, global_step: int) -> float:
        """Set the masks for the step about to be taken (global_step steps done): c = min(1, global_step / K)."""
        if not self.active:
            raise GrowthError("the MSG transition has finished; the model is plain")
        c = 1.0 if self.ramp_steps == 0 else min(1.0, global_step / self.ramp_steps)
        self.masks.c.fill_(c)
        return c

    def finish(self) -> PreTrainedModel:
        """At c = 1: remove the masks; returns the same model object (same parameters), now a plain HF model."""
        if self.active and float(self.masks.c) != 1.0:
            raise GrowthError(f"the MSG ramp is at mask {float(self.masks.c):.3g}, not 1: finish it after "
                              f"{self.ramp_steps} steps, not before (the plain model is another function until then)")
        if self.active:
            for hook in self.hooks:
                hook.remove()
            for norm in self.norms:
                norm.__class__ = nn.LayerNorm
                object.__delattr__(norm, "msg_masks")
            del self.model.msg_masks
            self.active = False
        return self.model


def new_layer_indices(layer_map: list[int]) -> list[int]:
    """Layers that copy an old layer already placed earlier: the identity at c = 0, so the first copies, in order,
    are the small model's layers."""
    seen, new = set(), []
    for index, old in enumerate(layer_map):
        if old in seen:
            new.append(index)
        seen.add(old)
    return new


def start(small: PreTrainedModel, big_config: PretrainedConfig, ramp_steps: int, seed: int = 0,
          depth_method: str = "stack") -> Transition:
    """Grow `small` into a masked model of `big_config`, exact at c = 0; ramp over `ramp_steps` steps (0: none)."""
    from reuse.model import build_model

    src = small.config
    if src.model_type not in FAMILIES:
        raise GrowthError(f"MSG has growth rules for {', '.join(FAMILIES)}, not for model family {src.model_type!r}")
    if not (isinstance(ramp_steps, int) and ramp_steps >= 0):
        raise GrowthError(f"the MSG ramp must be a number of steps >= 0, not {ramp_steps!r}")
    if depth_method not in DEPTH_METHODS:
        raise GrowthError(f"unknown depth method {depth_method!r}; choose one of {', '.join(DEPTH_METHODS)}")
    state, report = grow(small.state_dict(), src, big_config, "random", seed, depth_method)
    model = build_model(big_config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if [k for k in missing if not k.endswith(("decoder.weight", "decoder.bias"))] or unexpected:
        raise GrowthError(f"grown weights do not fit {big_config.model_type}: missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]}")
    model.tie_weights()
    D, d = big_config.hidden_size, src.hidden_size
    masks = Masks(torch.arange(D) >= d, torch.arange(D) >= d,
                  torch.arange(big_config.intermediate_size) >= src.intermediate_size)
    new_layers = new_layer_indices(report["layers"])
    report.update({"method": "msg", "ramp_steps": ramp_steps, "new_layers": new_layers})
    del report["maps"]  # random padding: old units keep their indices, every other unit is new
    transition = Transition(model, masks, new_layers, ramp_steps, report)
    transition.step(0)
    return transition
