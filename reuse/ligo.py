"""LiGO (Wang et al., "Learning to Grow Pretrained Models for Efficient Transformer Training", ICLR 2023): a learned
linear growth operator for BERT/RoBERTa, trained for a few steps on the run's own data; its result initialises
normal training.

    big_model, report = grow(small_model, big_config, batches, steps=100, lr=1e-3)

`batches` yields (inputs, labels) masked-LM batches (the trainer passes its own fraction, masked as in training);
`report["ligo_flops"]` counts the operator's training steps (forward and backward of the big model, as
`reuse.model.flops_per_step`, plus the matmuls that build the big weights from the operator, forward and backward)
so the run can add them to its compute, and `report["ligo_losses"]` their losses.

The operator, for each unit space of `reuse.grow.RULES` (the residual stream shared by the whole model, and per
small layer the attention and FFN spaces):
- width: an out-expansion B = [I; C] (D x d; the old units keep their values, C learned), applied on every axis
  that writes the space, and an in-expansion A (D x d, learned), applied on every axis that reads it; so a weight
  W (out x in) grows to B W A^T. C starts as Net2Net's cyclic copy map and A as its divided copies, so at the start
  the grown model is Net2Net's (exact for integer ratios). The MLM head's LayerNorm, read by the tied decoder, is
  grown by A (Net2Net's 1/count scaling at the start).
- depth: big layer l's weight for each parameter name is sum_j w[l, j, name] * (widened small layer j), w learned,
  starting one-hot at the stack/interleave map.
Only the operator is trained (Adam, the small model frozen); the grown weights are then materialised into a plain
`*ForMaskedLM`. Not function-preserving, by design: the operator is fitted to the data.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from reuse.grow import (DEPTH_METHODS, HEAD_NORM, HEAD_SIZE, LAYER, TIED, GrowthError, check_growable, index_map,
                        rule_for)

FAMILIES = ("bert", "roberta")


def copy_maps(old: int, new: int, heads: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Net2Net's cyclic map as matrices: C (new - old) x old selecting the copied unit, and A (new x old) reading
    each copy divided by its copy count. For heads, whole heads of HEAD_SIZE are copied."""
    if heads:
        head_map = index_map(old // HEAD_SIZE, new // HEAD_SIZE, "cyclic", None)
        g = (head_map[:, None] * HEAD_SIZE + np.arange(HEAD_SIZE)[None, :]).reshape(-1)
    else:
        g = index_map(old, new, "cyclic", None)
    select = torch.zeros(new, old)
    select[torch.arange(new), torch.from_numpy(g)] = 1.0
    return select[old:].clone(), select / select.sum(0, keepdim=True)


class Operator(nn.Module):
    def __init__(self, state: dict, src: PretrainedConfig, dst: PretrainedConfig, depth_method: str):
        super().__init__()
        self.src, self.dst = src, dst
        self.small = {k: v.detach().float() for k, v in state.items() if not TIED.match(k)}
        self.layer_keys = sorted({LAYER.match(k).group(3)[1:] for k in self.small if LAYER.match(k)})
        self.prefix = next(LAYER.match(k).group(1) for k in self.small if LAYER.match(k))
        d, D = src.hidden_size, dst.hidden_size
        f, F = src.intermediate_size, dst.intermediate_size
        L, L2 = src.num_hidden_layers, dst.num_hidden_layers
        c, a = copy_maps(d, D)
        self.C_r, self.A_r = nn.Parameter(c), nn.Parameter(a)
        c, a = copy_maps(d, D, heads=True)
        self.C_a = nn.Parameter(c[None].repeat(L, 1, 1))
        self.A_a = nn.Parameter(a[None].repeat(L, 1, 1))
        c, a = copy_maps(f, F)
        self.C_f = nn.Parameter(c[None].repeat(L, 1, 1))
        self.A_f = nn.Parameter(a[None].repeat(L, 1, 1))
        layer_map = [i % L for i in range(L2)] if depth_method == "stack" else [i * L // L2 for i in range(L2)]
        mix = torch.zeros(L2, L, len(self.layer_keys))
        mix[torch.arange(L2), torch.tensor(layer_map)] = 1.0
        self.mix = nn.Parameter(mix)
        self.layer_map = layer_map
        self.forward_flops = 0.0  # matmul FLOPs of one forward (building the big weights), counted by forward()

    def expansion(self, space: str, layer: int | None, reading: bool) -> torch.Tensor:
        s = space.lower()
        if reading:
            return self.A_r if s == "r" else getattr(self, f"A_{s}")[layer]
        C = self.C_r if s == "r" else getattr(self, f"C_{s}")[layer]
        return torch.cat([torch.eye(C.shape[1], dtype=C.dtype, device=C.device), C])

    def widen(self, tensor: torch.Tensor, key: str, layer: int | None) -> torch.Tensor:
        prefixless = key.split(".", 1)[1] if key.startswith(("bert.", "roberta.")) else key
        # The tied decoder reads the head's LayerNorm output through the out-expanded embeddings: the head norm is
        # grown by the in-expansion, which starts as Net2Net's 1/count scaling of it.
        spaces = "R" if HEAD_NORM.fullmatch(prefixless) else rule_for(prefixless)
        out = tensor
        for axis, space in enumerate(spaces):
            if space == "-":
                continue
            M = self.expansion(space, layer, space.isupper())
            self._flops += 2.0 * M.shape[0] * out.numel()
            out = torch.movedim(torch.tensordot(M, out, dims=([1], [axis])), 0, axis)
        return out

    def forward(self) -> dict:
        self._flops = 0.0
        grown = {k: self.widen(v, k, None) for k, v in self.small.items() if not LAYER.match(k)}
        for k_index, name in enumerate(self.layer_keys):
            widened = torch.stack([self.widen(self.small[f"{self.prefix}{j}.{name}"], name, j)
                                   for j in range(self.src.num_hidden_layers)])
            mixed = torch.tensordot(self.mix[:, :, k_index], widened, dims=([1], [0]))
            self._flops += 2.0 * self.dst.num_hidden_layers * widened.numel()
            for layer in range(self.dst.num_hidden_layers):
                grown[f"{self.prefix}{layer}.{name}"] = mixed[layer]
        self.forward_flops = self._flops
        return grown


class _Loss(nn.Module):
    """The summed masked-LM loss as a module, so torch.func.functional_call can run it with the grown weights."""

    def __init__(self, model: PreTrainedModel):
        super().__init__()
        self.model = model

    def forward(self, inputs, labels):
        from reuse.model import masked_lm_loss
        return masked_lm_loss(self.model, inputs, labels, reduction="mean")


def check_ligo(src: PretrainedConfig, dst: PretrainedConfig, steps: int, lr: float, depth_method: str) -> None:
    """Everything LiGO can refuse, before any work."""
    if src.model_type not in FAMILIES:
        raise GrowthError(f"LiGO has growth rules for {', '.join(FAMILIES)}, not for model family {src.model_type!r}")
    if depth_method not in DEPTH_METHODS:
        raise GrowthError(f"unknown depth method {depth_method!r}; choose one of {', '.join(DEPTH_METHODS)}")
    check_growable(src, dst, "net2net", depth_method)
    if not (isinstance(steps, int) and steps >= 1):
        raise GrowthError(f"LiGO needs >= 1 training steps for its operator, not {steps!r}")
    if not (np.isfinite(lr) and lr > 0):
        raise GrowthError(f"LiGO's learning rate must be > 0, not {lr}")


def grow(small: PreTrainedModel, big_config: PretrainedConfig, batches, steps: int = 100, lr: float = 1e-3,
         depth_method: str = "stack", seq_len: int | None = None) -> tuple[PreTrainedModel, dict]:
    """Train a LiGO operator for `steps` steps on `batches` (cycled if shorter), return the grown plain model and a
    report (losses, steps, FLOPs). The small model is not changed."""
    from reuse.model import build_model, flops_per_step

    check_ligo(small.config, big_config, steps, lr, depth_method)
    if batches is None:
        raise GrowthError("LiGO needs training data to fit its operator: give the run's --train-data")
    if hasattr(batches, "__len__"):  # a list of batches, cycled
        if len(batches) == 0:
            raise GrowthError("LiGO needs training data to fit its operator, and the list of batches is empty")
        stream = (batches[i % len(batches)] for i in itertools.count())
    else:  # an iterator: looked at before any work, so an empty one is refused like an empty list
        stream = iter(batches)
        first = list(itertools.islice(stream, 1))
        if not first:
            raise GrowthError("LiGO needs training data to fit its operator, and the batches given are empty")
        stream = itertools.chain(first, stream)
    device = next(small.parameters()).device
    operator = Operator(small.state_dict(), small.config, big_config, depth_method).to(device)
    big = build_model(big_config).to(device).train()
    loss_module = _Loss(big)
    optimizer = torch.optim.Adam(operator.parameters(), lr=lr)
    losses, model_flops, operator_flops = [], 0.0, 0.0
    for step in range(steps):
        batch = next(stream, None)
        if batch is None:
            raise GrowthError(f"LiGO's batches ran out after {step} of {steps} steps: give more batches or fewer "
                              f"LiGO steps")
        inputs, labels = batch
        inputs, labels = inputs.to(device), labels.to(device)
        params = {f"model.{k}": v for k, v in operator().items()}
        loss = torch.func.functional_call(loss_module, params, (inputs, labels), strict=False)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        masked = float((labels != -100).sum())
        model_flops += flops_per_step(big_config, inputs.shape[0], seq_len or inputs.shape[1], masked)
        operator_flops += 3.0 * operator.forward_flops  # forward + backward of building the weights
    with torch.no_grad():
        grown = operator()
    missing, unexpected = big.load_state_dict(grown, strict=False)
    if [k for k in missing if not TIED.match(k)] or unexpected:
        raise GrowthError(f"LiGO's weights do not fit {big_config.model_type}: missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]}")
    big.tie_weights()
    report = {"method": "ligo", "depth_method": depth_method, "layers": operator.layer_map, "ligo_steps": steps,
              "ligo_lr": lr, "ligo_losses": losses,
              "ligo_flops": model_flops + operator_flops, "ligo_model_flops": model_flops,
              "ligo_operator_flops": operator_flops,
              "from_hidden": small.config.hidden_size, "to_hidden": big_config.hidden_size,
              "from_layers": small.config.num_hidden_layers, "to_layers": big_config.num_hidden_layers}
    return big.eval(), report


def run_batches(blocks: torch.Tensor, tokenizer, config: PretrainedConfig, batch_size: int, mlm_probability: float,
                seed: int):
    """LiGO's batches for a run: its own blocks, masked as in training, drawn from their own generator (so the
    run's order and masks stay those of the same run without LiGO)."""
    from reuse.objective import MaskedLM

    objective = MaskedLM(tokenizer, mlm_probability)
    gen = torch.Generator().manual_seed(seed + 2)
    while True:
        index = torch.randint(len(blocks), (batch_size,), generator=gen)
        inputs, labels, _ = objective.targets(objective.input_ids(blocks[index]), gen)
        yield inputs, labels
