"""Growth operators: a trained small BERT/RoBERTa checkpoint -> a larger one (wider, deeper, or both).

    python -m reuse.grow --from snap/bert-12L-64H-0.001D --config configs/bert-12L-128H.json --method net2net \
        --out snap/grown-128H

Width, for post-LN BERT/RoBERTa with a tied MLM decoder and head size 64 (each +64 of width is one more head). Every
weight axis lives in one of three unit spaces: the residual stream (d), the attention heads (whole heads of 64), and
the FFN (intermediate size). Growing a space is an index map g from new units to old ones.
- `net2net` (Net2WiderNet / bert2BERT FPI): new unit j copies old unit g(j); weights *reading* a copied unit are
  divided by its copy count, so each sum is unchanged. The map is cyclic (g(j) = j mod d), which copies every unit
  equally often for an integer ratio: LayerNorm statistics are then unchanged and, with the head's LayerNorm scaled
  by 1/count (the decoder is tied to the copied embeddings, so it cannot be divided itself), eval-mode logits equal
  the small model's. For a non-integer ratio some units are copied more often, LayerNorm sees other statistics and
  the function drifts: `growth.json` reports the measured drift. `--mapping random` draws g as Net2Net does.
  `--noise STD` adds Gaussian noise to the copies' weights to break their symmetry (off by default).
- `aki` (bert2BERT advanced knowledge initialisation): as net2net, but the new units of layer l take their weights
  from layer l+1 (the last layer from itself). Not function-preserving by design.
- `random`: the old weights in the top-left block, every new entry freshly initialised (normal(0, 0.02), zero biases,
  unit LayerNorm): the baseline.
Depth: `stack` (StackBERT: layer i copies layer i mod L) or `interleave` (layer i copies layer floor(i L / L'),
so each layer is followed by its copy when doubling), to any larger depth; applied after width growth.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import PretrainedConfig

HEAD_SIZE = 64
WIDTH_METHODS = ("net2net", "aki", "random")
DEPTH_METHODS = ("stack", "interleave")

# (pattern on the key without the "bert."/"roberta." prefix, axis spaces): "r" residual, "a" attention, "f" FFN,
# "-" kept; an upper-case letter marks an axis that *reads* units (divided by copy counts).
RULES = [
    (r"embeddings\.(word|position|token_type)_embeddings\.weight", "-r"),
    (r".*LayerNorm\.(weight|bias)|lm_head\.layer_norm\.(weight|bias)", "r"),
    (r".*attention\.self\.(query|key|value)\.weight", "aR"),
    (r".*attention\.self\.(query|key|value)\.bias", "a"),
    (r".*attention\.output\.dense\.weight", "rA"),
    (r".*intermediate\.dense\.weight", "fR"),
    (r".*intermediate\.dense\.bias", "f"),
    (r".*output\.dense\.weight", "rF"),
    (r".*(output\.dense|transform\.dense|lm_head\.dense)\.bias", "r"),
    (r".*(transform\.dense|lm_head\.dense)\.weight", "rR"),
    (r"(cls\.predictions|lm_head)\.bias", "-"),
]
HEAD_NORM = re.compile(r"cls\.predictions\.transform\.LayerNorm\.(weight|bias)|lm_head\.layer_norm\.(weight|bias)")
TIED = re.compile(r".*decoder\.(weight|bias)$")
LAYER = re.compile(r"^(.*encoder\.layer\.)(\d+)(\..*)$")


class GrowthError(Exception):
    """A growth that cannot be done; the message says what to change."""


def rule_for(key: str) -> str:
    for pattern, spaces in RULES:
        if re.fullmatch(pattern, key):
            return spaces
    raise GrowthError(f"no growth rule for parameter {key!r}: is this a BERT/RoBERTa masked-LM state dict?")


def check_options(width: str, depth: str, mapping: str = "cyclic", noise: float = 0.0) -> None:
    if width not in WIDTH_METHODS:
        raise GrowthError(f"unknown width method {width!r}; choose one of {', '.join(WIDTH_METHODS)}")
    if depth not in DEPTH_METHODS:
        raise GrowthError(f"unknown depth method {depth!r}; choose one of {', '.join(DEPTH_METHODS)}")
    if mapping not in ("cyclic", "random"):
        raise GrowthError(f"unknown mapping {mapping!r}: cyclic or random")
    if not (math.isfinite(noise) and noise >= 0):
        raise GrowthError(f"noise {noise} must be a standard deviation, a finite number >= 0 (0: no noise)")


def check_growable(src: PretrainedConfig, dst: PretrainedConfig, width: str, depth: str) -> None:
    check_options(width, depth)
    if src.model_type not in ("bert", "roberta"):
        hint = " (GPT-2 grows with lemon or random: reuse.grow_gpt2)" if src.model_type == "gpt2" else ""
        raise GrowthError(f"{width} has growth rules for bert and roberta, not for model family "
                          f"{src.model_type!r}{hint}")
    if src.model_type != dst.model_type:
        raise GrowthError(f"cannot grow a {src.model_type} into a {dst.model_type}")
    for name in ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads"):
        if getattr(dst, name) < getattr(src, name):
            raise GrowthError(f"growth cannot shrink {name}: {getattr(src, name)} -> {getattr(dst, name)}")
    for cfg in (src, dst):
        if cfg.hidden_size != cfg.num_attention_heads * HEAD_SIZE:
            raise GrowthError(f"head size must be {HEAD_SIZE} (hidden_size {cfg.hidden_size}, "
                              f"{cfg.num_attention_heads} heads): heads are grown whole")
    for name in ("vocab_size", "max_position_embeddings", "type_vocab_size"):
        if getattr(src, name) != getattr(dst, name):
            raise GrowthError(f"{name} differs ({getattr(src, name)} vs {getattr(dst, name)}): growth keeps the "
                              f"vocabulary and positions; use a target config with the source's {name}")


def index_map(old: int, new: int, mapping: str, rng: np.random.Generator) -> np.ndarray:
    if mapping == "cyclic":
        return np.arange(new) % old
    extra = rng.integers(0, old, new - old) if new > old else np.empty(0, dtype=np.int64)
    return np.concatenate([np.arange(old), extra])


def head_units(head_map: np.ndarray) -> np.ndarray:
    """Unit map of the attention space from a map of whole heads."""
    return (head_map[:, None] * HEAD_SIZE + np.arange(HEAD_SIZE)[None, :]).reshape(-1)


def grow_width(state: dict, src: PretrainedConfig, dst: PretrainedConfig, method: str, mapping: str, noise: float,
               rng: np.random.Generator, torch_gen: torch.Generator) -> tuple[dict, dict]:
    maps = {"r": index_map(src.hidden_size, dst.hidden_size, mapping, rng)}
    maps["a"] = head_units(index_map(src.num_attention_heads, dst.num_attention_heads, mapping, rng))
    maps["f"] = index_map(src.intermediate_size, dst.intermediate_size, mapping, rng)
    counts = {s: np.bincount(m, minlength=m.max() + 1).astype(np.float64) for s, m in maps.items()}
    sizes = {"r": dst.hidden_size, "a": dst.hidden_size, "f": dst.intermediate_size}
    old_sizes = {"r": src.hidden_size, "a": src.hidden_size, "f": src.intermediate_size}
    grown = {}
    for key, tensor in state.items():
        prefixless = key.split(".", 1)[1] if key.startswith(("bert.", "roberta.")) else key
        spaces = rule_for(prefixless)
        if method == "random":
            grown[key] = pad_randomly(tensor, spaces, sizes, key, torch_gen)
            continue
        source = aki_source(state, key) if method == "aki" else tensor
        out = tensor.float()
        for axis, space in enumerate(spaces):
            if space == "-":
                continue
            index = torch.from_numpy(maps[space.lower()])
            copy = torch.index_select(out, axis, index)
            if method == "aki" and space.islower():
                # New units (beyond the old size) come from the next layer's weights.
                alt = torch.index_select(source.float(), axis, index)
                new = torch.arange(len(index)) >= old_sizes[space]
                shape = [1] * copy.ndim
                shape[axis] = -1
                copy = torch.where(new.view(shape), alt, copy)
            if space.isupper():
                scale = torch.from_numpy(1.0 / counts[space.lower()][maps[space.lower()]]).float()
                shape = [1] * copy.ndim
                shape[axis] = -1
                copy = copy * scale.view(shape)
            out = copy
        if HEAD_NORM.fullmatch(prefixless) and method != "random":
            # The tied decoder reads the head's LayerNorm output: scale it by 1/count instead of the decoder.
            out = out / torch.from_numpy(counts["r"][maps["r"]]).float()
        if noise > 0 and spaces != "-":
            out = out + noise * torch.randn(out.shape, generator=torch_gen) * new_unit_mask(out, spaces, old_sizes)
        grown[key] = out.to(tensor.dtype)
    report = {"maps": {"residual": maps["r"].tolist(),
                       "heads": (maps["a"][::HEAD_SIZE] // HEAD_SIZE).tolist(), "ffn": maps["f"].tolist()}}
    return grown, report


def new_unit_mask(tensor: torch.Tensor, spaces: str, old_sizes: dict) -> torch.Tensor:
    """1 where any axis indexes a unit beyond the old size (a copy), else 0."""
    mask = torch.zeros(tensor.shape, dtype=torch.bool)
    for axis, space in enumerate(spaces):
        if space != "-":
            shape = [1] * tensor.ndim
            shape[axis] = -1
            mask |= (torch.arange(tensor.shape[axis]) >= old_sizes[space.lower()]).view(shape)
    return mask.float()


def aki_source(state: dict, key: str) -> torch.Tensor:
    m = LAYER.match(key)
    if not m:
        return state[key]
    following = f"{m.group(1)}{int(m.group(2)) + 1}{m.group(3)}"
    return state.get(following, state[key])


def pad_randomly(tensor: torch.Tensor, spaces: str, sizes: dict, key: str, gen: torch.Generator) -> torch.Tensor:
    shape = [tensor.shape[i] if s == "-" else sizes[s.lower()] for i, s in enumerate(spaces)]
    if key.endswith("LayerNorm.weight") or key.endswith("layer_norm.weight"):
        out = torch.ones(shape, dtype=tensor.dtype)
    elif key.endswith("bias"):
        out = torch.zeros(shape, dtype=tensor.dtype)
    else:
        out = (torch.randn(shape, generator=gen) * 0.02).to(tensor.dtype)
    out[tuple(slice(0, n) for n in tensor.shape)] = tensor
    return out


def grow_depth(state: dict, src_layers: int, dst_layers: int, method: str) -> tuple[dict, list[int]]:
    if method == "stack":
        layer_map = [i % src_layers for i in range(dst_layers)]
    else:
        layer_map = [i * src_layers // dst_layers for i in range(dst_layers)]
    grown = {k: v for k, v in state.items() if not LAYER.match(k)}
    for new, old in enumerate(layer_map):
        for key, value in state.items():
            m = LAYER.match(key)
            if m and int(m.group(2)) == old:
                grown[f"{m.group(1)}{new}{m.group(3)}"] = value.clone()
    return grown, layer_map


def grow(state_dict: dict, src_config: PretrainedConfig, dst_config: PretrainedConfig, method: str = "net2net",
         seed: int = 0, depth_method: str = "stack", mapping: str = "cyclic", noise: float = 0.0) -> tuple[dict, dict]:
    """Pure function: a masked-LM state dict of src_config -> one of dst_config, and a report of what was done."""
    check_options(method, depth_method, mapping, noise)
    check_growable(src_config, dst_config, method, depth_method)
    state = {k: v for k, v in state_dict.items() if not TIED.match(k)}  # re-tied by the model on load
    rng = np.random.default_rng(seed)
    torch_gen = torch.Generator().manual_seed(seed)
    state, report = grow_width(state, src_config, dst_config, method, mapping, noise, rng, torch_gen)
    state, layer_map = grow_depth(state, src_config.num_hidden_layers, dst_config.num_hidden_layers, depth_method)
    report.update({"method": method, "depth_method": depth_method, "mapping": mapping, "noise": noise, "seed": seed,
                   "layers": layer_map, "from_hidden": src_config.hidden_size, "to_hidden": dst_config.hidden_size,
                   "from_layers": src_config.num_hidden_layers, "to_layers": dst_config.num_hidden_layers})
    return state, report


@torch.no_grad()
def function_drift(small, large, vocab_size: int, seed: int = 0, tokens: torch.Tensor | None = None) -> dict:
    """Max and mean absolute difference of eval-mode MLM logits, on given tokens or seeded random ones."""
    if tokens is None:
        tokens = torch.randint(1000, vocab_size, (4, 64), generator=torch.Generator().manual_seed(seed))
    small.eval()
    large.eval()
    a, b = small(input_ids=tokens).logits, large(input_ids=tokens).logits
    return {"max_abs_logit_diff": (a - b).abs().max().item(), "mean_abs_logit_diff": (a - b).abs().mean().item(),
            "mean_abs_logit": a.abs().mean().item()}


def grow_checkpoint(source: str | Path, dst_config: PretrainedConfig, method: str = "net2net", seed: int = 0,
                    depth_method: str = "stack", mapping: str = "cyclic", noise: float = 0.0):
    """Load a checkpoint, grow it, build the target model with the grown weights; returns (model, report)."""
    from reuse.model import build_model, load_model

    start = time.perf_counter()
    small = load_model(source)
    state, report = grow(small.state_dict(), small.config, dst_config, method, seed, depth_method, mapping, noise)
    large = build_model(dst_config)
    missing, unexpected = large.load_state_dict(state, strict=False)
    if [k for k in missing if not TIED.match(k)] or unexpected:
        raise GrowthError(f"grown weights do not fit {dst_config.model_type}: missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]}")
    large.tie_weights()
    report["grow_seconds"] = time.perf_counter() - start
    report["drift"] = function_drift(small, large, dst_config.vocab_size, seed)
    report["source"] = str(source)
    return large, report


def plan_chain(configs: list[str | Path]) -> list[tuple[Path, Path]]:
    """(source config, target config) pairs for progressive growth, checked to grow strictly at every link."""
    from reuse.model import load_config

    loaded = [load_config(c) for c in configs]
    pairs = []
    for (a, ca), (b, cb) in zip(zip(configs, loaded), zip(configs[1:], loaded[1:])):
        check_growable(ca, cb, "net2net", "stack")  # nothing shrinks
        if (cb.hidden_size, cb.num_hidden_layers) == (ca.hidden_size, ca.num_hidden_layers):
            raise GrowthError(f"a reuse chain must grow at every link: {a} -> {b} does not")
        pairs.append((Path(a), Path(b)))
    return pairs


def main(argv: list[str] | None = None) -> None:
    from reuse.checkpoint import save_model
    from reuse.cli import Parser, nonnegative_float, nonnegative_int, output_folder
    from reuse.hub import is_hub_id
    from reuse.model import ModelError, checkpoint_config, is_checkpoint, load_config
    from reuse.tokenize import TokenizeError, load_tokenizer

    parser = Parser(prog="python -m reuse.grow", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", required=True,
                        help="checkpoint of the small model: a folder, a Hub id, or owner/repo/subfolder")
    parser.add_argument("--config", required=True, help="model config of the larger target")
    parser.add_argument("--method", default="net2net", help=f"width: {', '.join(WIDTH_METHODS)}")
    parser.add_argument("--depth-method", default="stack", help=f"depth: {', '.join(DEPTH_METHODS)}")
    parser.add_argument("--mapping", default="cyclic", choices=("cyclic", "random"))
    parser.add_argument("--noise", type=nonnegative_float, default=0.0, help="std of noise added to copied units")
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--out", required=True, type=output_folder)
    args = parser.parse_args(argv)
    try:
        check_options(args.method, args.depth_method, args.mapping, args.noise)
        if not is_checkpoint(args.source) and not is_hub_id(args.source):
            raise GrowthError(f"{args.source} is not a checkpoint folder (config.json + model.safetensors)")
        if args.out.exists() and any(args.out.iterdir()):
            raise GrowthError(f"{args.out} exists and is not empty; choose another --out")
        # Everything that can be refused is refused before the weights are loaded and grown.
        target = load_config(args.config)
        check_growable(checkpoint_config(args.source), target, args.method, args.depth_method)
        tokenizer = load_tokenizer(args.source)
        model, report = grow_checkpoint(args.source, target, args.method, args.seed, args.depth_method,
                                        args.mapping, args.noise)
        save_model(args.out, model, tokenizer, extra=lambda tmp: (tmp / "growth.json").write_text(json.dumps(report)))
    except (GrowthError, ModelError, TokenizeError) as e:
        sys.exit(f"error: {e}")
    drift = report["drift"]
    print(f"grew {args.source} -> {args.out} ({args.method}, {args.depth_method}) in {report['grow_seconds']:.2f} s; "
          f"max |logit drift| {drift['max_abs_logit_diff']:.3g} (mean |logit| {drift['mean_abs_logit']:.3g})")


if __name__ == "__main__":
    main()
