"""AdamW moments carried across growth (off by default, as in the paper): the small model's first and second moments
are mapped through the same index maps as its weights, scaled so that the first update after growth is the one the
grown model's own AdamW would take had it seen the grown model's gradients all along.

    moments = carry_optimizer_state(saved_optimizer_state, small_names, growth_report, src_config, dst_config)
    load_moments(new_optimizer, big_model, moments)

The scaling (Staged Training, Shen et al. 2022, halves m and quarters v when doubling): in a Net2Net growth a copied
unit's readers are divided by its copy count c, so the gradient of a weight *writing* that unit is the small one's
divided by c, and the gradient of a weight *reading* it is the small one's, unchanged. So along every axis that
writes a grown space, m is divided by c and v by c^2; along reading axes both are copied. (The MLM head's LayerNorm,
read by the tied decoder and divided by c, counts as reading.) For an integer ratio the grown model's gradients are
exactly those mapped gradients, so with weight decay off and a negligible eps the first AdamW update of every big
weight equals the small model's update of the weight it copies (tested). AdamW's step count is kept.
For `random` and `msg` growth the old entries keep their indices and moments, and every new entry (new units, and
for MSG the new layers) starts at zero; at MSG's mask 0 the old entries' gradients are the small model's exactly.
LiGO's operator is dense, not an index map: carrying moments through it is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from reuse.grow import HEAD_NORM, HEAD_SIZE, LAYER, TIED, GrowthError, rule_for

from reuse.checkpoint import STATE, read_trainer_state


def trainer_state_file(folder: str | Path) -> Path:
    """The trainer state holding the small model's moments: the folder's own, or for a run's `best/` (or the run
    folder) the run's checkpoint of the same step. Raises naming the missing file."""
    folder = Path(folder)
    if (folder / STATE).is_file():
        return folder / STATE
    candidate = None
    if (folder / "checkpoint.json").is_file():  # a best/ folder: its step is recorded beside it
        step = json.loads((folder / "checkpoint.json").read_text()).get("step")
        candidate = folder.parent / "checkpoints" / f"step-{step:07d}" / STATE if isinstance(step, int) else None
    elif (folder / "summary.json").is_file():  # a run folder: its final model is its last checkpoint's
        step = json.loads((folder / "summary.json").read_text()).get("steps")
        candidate = folder / "checkpoints" / f"step-{step:07d}" / STATE if isinstance(step, int) else None
    if candidate is not None and candidate.is_file():
        return candidate
    also = f" (nor {candidate})" if candidate is not None else ""
    raise GrowthError(f"optimizer carry-over needs the small model's AdamW moments, but {folder / STATE} is "
                      f"missing{also}: grow from a checkpoint written by reuse.train, or turn the carry-over off")


def optimizer_names(model, optimizer) -> list[str]:
    """Parameter names in the optimizer's order (its state dict numbers parameters in this order)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def named_moments(optimizer_state: dict, names: list[str]) -> dict:
    """{parameter name: {"exp_avg", "exp_avg_sq", "step"}} from an AdamW state dict and its parameter order."""
    order = [i for group in optimizer_state["param_groups"] for i in group["params"]]
    if len(order) != len(names):
        raise GrowthError(f"the saved optimizer holds {len(order)} parameters, the small model {len(names)}: "
                          f"the trainer state is not this model's")
    return {names[pos]: optimizer_state["state"][i] for pos, i in enumerate(order) if i in optimizer_state["state"]}


def _map_axis(tensor: torch.Tensor, axis: int, index: np.ndarray, scale: np.ndarray | None) -> torch.Tensor:
    out = torch.index_select(tensor, axis, torch.from_numpy(index))
    if scale is not None:
        shape = [1] * out.ndim
        shape[axis] = -1
        out = out * torch.from_numpy(scale).to(out.dtype).view(shape)
    return out


def _pad_axis(tensor: torch.Tensor, axis: int, size: int) -> torch.Tensor:
    shape = list(tensor.shape)
    shape[axis] = size - shape[axis]
    return torch.cat([tensor, tensor.new_zeros(shape)], axis)


def map_moment(tensor: torch.Tensor, key: str, report: dict, sizes: dict, power: int) -> torch.Tensor:
    """One moment (power 1: m, 2: v) of one small parameter, grown in width as its weight was."""
    prefixless = key.split(".", 1)[1] if key.startswith(("bert.", "roberta.")) else key
    spaces = "R" if HEAD_NORM.fullmatch(prefixless) else rule_for(prefixless)
    maps = report.get("maps")
    out = tensor
    for axis, space in enumerate(spaces):
        if space == "-":
            continue
        s = space.lower()
        if report["method"] in ("random", "msg"):
            out = _pad_axis(out, axis, sizes[s])
            continue
        index = np.asarray(maps["residual"] if s == "r" else maps["ffn"] if s == "f" else
                           (np.asarray(maps["heads"])[:, None] * HEAD_SIZE + np.arange(HEAD_SIZE)).reshape(-1))
        counts = np.bincount(index).astype(np.float64)
        out = _map_axis(out, axis, index, None if space.isupper() else counts[index] ** -power)
    return out.clone() if out is tensor else out  # never the small optimizer's own tensor


def carry_optimizer_state(optimizer_state: dict, names: list[str], report: dict, src, dst) -> dict:
    """The grown model's moments, by parameter name (see the module docstring for the rules)."""
    if report.get("method") == "ligo":
        raise GrowthError("optimizer carry-over follows index maps, and LiGO's operator is dense: turn the "
                          "carry-over off for ligo")
    if report.get("method") not in ("net2net", "aki", "random", "msg"):
        raise GrowthError(f"no optimizer carry-over rules for growth method {report.get('method')!r}")
    small = named_moments(optimizer_state, names)
    sizes = {"r": dst.hidden_size, "a": dst.hidden_size, "f": dst.intermediate_size}
    widened = {}
    for key, state in small.items():
        if TIED.match(key):
            continue
        widened[key] = {"step": state["step"].clone() if torch.is_tensor(state["step"]) else state["step"],
                        "exp_avg": map_moment(state["exp_avg"], key, report, sizes, 1),
                        "exp_avg_sq": map_moment(state["exp_avg_sq"], key, report, sizes, 2)}
    new_layers = set(report.get("new_layers", []))
    grown = {k: v for k, v in widened.items() if not LAYER.match(k)}
    for new, old in enumerate(report["layers"]):
        for key, state in widened.items():
            m = LAYER.match(key)
            if m and int(m.group(2)) == old:
                copy = {k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()}
                if new in new_layers:  # an MSG layer entering at mask 0: no history
                    copy["exp_avg"].zero_()
                    copy["exp_avg_sq"].zero_()
                grown[f"{m.group(1)}{new}{m.group(3)}"] = copy
    return grown


def load_moments(optimizer, model, moments: dict) -> None:
    """Put moments (by name) into a fresh optimizer of `model`, keeping its hyper-parameters and groups."""
    state = optimizer.state_dict()
    own = dict(model.named_parameters())
    for position, name in enumerate(optimizer_names(model, optimizer)):
        if name not in moments:
            raise GrowthError(f"no carried moments for parameter {name}: the growth report does not match the model")
        if moments[name]["exp_avg"].shape != own[name].shape:
            raise GrowthError(f"carried moments of {name} have shape {tuple(moments[name]['exp_avg'].shape)}, the "
                              f"parameter {tuple(own[name].shape)}")
        index = [i for group in state["param_groups"] for i in group["params"]][position]
        state["state"][index] = {k: v.clone() if torch.is_tensor(v) else v for k, v in moments[name].items()}
    optimizer.load_state_dict(state)


def carry_from_checkpoint(source: str | Path, optimizer, model, growth: dict, make_optimizer) -> None:
    """For the trainer: the moments of checkpoint `source`'s trainer state, mapped by the growth report into the
    grown `model`'s fresh `optimizer`. `make_optimizer(small_model)` must build the optimizer as the small model's
    run did, so that its saved parameter numbering can be read back as names."""
    from reuse.model import load_model

    small = load_model(source)
    saved = read_trainer_state(trainer_state_file(source).parent)
    names = optimizer_names(small, make_optimizer(small))
    load_moments(optimizer, model, carry_optimizer_state(saved["optimizer"], names, growth, small.config, model.config))
