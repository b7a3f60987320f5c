"""One entry to every growth operator, for the trainer, grids and benchmarks: which family grows with which method,
every check before any work, and the grown model (with its MSG transition when there is one).

    check_growth(src_config, dst_config, "msg", ramp_steps=200)          # raises GrowthError, does nothing else
    grown = grow_model("snap/bert-2L-64H", dst_config, "ligo", batches=batches, ligo_steps=100)
    grown.model, grown.report, grown.transition                          # transition: msg only, else None

Methods: `net2net`, `aki`, `random` (reuse.grow), `msg` (reuse.msg: exact at growth at any width, then a ramp),
`ligo` (reuse.ligo: a learned operator fitted on the run's batches) for BERT/RoBERTa; `lemon` (exact) and `random`
(reuse.grow_gpt2) for GPT-2.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from transformers import PretrainedConfig, PreTrainedModel

from reuse import carry, grow, grow_gpt2, ligo, msg
from reuse.grow import GrowthError

RULES = {"bert": ("net2net", "aki", "random", "msg", "ligo"), "roberta": ("net2net", "aki", "random", "msg", "ligo"),
         "gpt2": grow_gpt2.METHODS}


def check_growth(src: PretrainedConfig, dst: PretrainedConfig, method: str, depth_method: str = "stack",
                 mapping: str = "cyclic", noise: float = 0.0, ramp_steps: int = 0, ligo_steps: int = 100,
                 ligo_lr: float = 1e-3, carry_from: str | Path | None = None) -> None:
    """Every reason this growth cannot be done, raised before any weight is loaded or anything written."""
    family = src.model_type
    if family not in RULES:
        raise GrowthError(f"no growth rules for model family {family!r}: growth knows {', '.join(RULES)}")
    if method not in RULES[family]:
        raise GrowthError(f"{family} grows with {', '.join(RULES[family])}, not {method!r}")
    if dst.model_type != family:
        raise GrowthError(f"cannot grow a {family} into a {dst.model_type}")
    if (mapping, noise) != ("cyclic", 0.0) and method not in ("net2net", "aki"):
        raise GrowthError(f"--grow-mapping and --grow-noise shape Net2Net's copies; {method} makes none")
    if family == "gpt2":
        grow_gpt2.check_growable(src, dst, method, depth_method)
    elif method == "ligo":
        ligo.check_ligo(src, dst, ligo_steps, ligo_lr, depth_method)
    else:
        grow.check_options("random" if method == "msg" else method, depth_method, mapping, noise)
        grow.check_growable(src, dst, "random" if method == "msg" else method, depth_method)
    if method == "msg" and not (isinstance(ramp_steps, int) and ramp_steps >= 1):
        raise GrowthError(f"msg needs a ramp of >= 1 steps (--grow-ramp-steps), not {ramp_steps!r}")
    if carry_from is not None:
        if method == "ligo" or family == "gpt2":
            raise GrowthError(f"optimizer carry-over follows index maps: {method} growth of {family} has none; "
                              f"turn --grow-optimizer off")
        carry.trainer_state_file(carry_from)


def plan_chain(configs: list[str | Path]) -> list[tuple[Path, Path]]:
    """(source, target) config pairs of a reuse ladder, each link checked to grow and to shrink nothing, for
    every family with growth rules."""
    from reuse.model import load_config

    loaded = [load_config(c) for c in configs]
    pairs = []
    for (a, ca), (b, cb) in zip(zip(configs, loaded), zip(configs[1:], loaded[1:])):
        if ca.model_type not in RULES:
            raise GrowthError(f"no growth rules for model family {ca.model_type!r}: growth knows {', '.join(RULES)}")
        if ca.model_type == "gpt2":
            grow_gpt2.check_growable(ca, cb, "lemon", "stack")
        else:
            grow.check_growable(ca, cb, "net2net", "stack")
        if (cb.hidden_size, cb.num_hidden_layers) == (ca.hidden_size, ca.num_hidden_layers):
            raise GrowthError(f"a reuse chain must grow at every link: {a} -> {b} does not")
        pairs.append((Path(a), Path(b)))
    return pairs


@dataclass
class Grown:
    model: PreTrainedModel
    report: dict
    transition: msg.Transition | None = None


def grow_model(source: str | Path, dst: PretrainedConfig, method: str, seed: int = 0, depth_method: str = "stack",
               mapping: str = "cyclic", noise: float = 0.0, ramp_steps: int = 0, ligo_steps: int = 100,
               ligo_lr: float = 1e-3, batches=None, seq_len: int | None = None, device=None) -> Grown:
    """Load the checkpoint `source`, grow it into `dst`; the report records the operator, its settings, the time it
    took and the measured logit drift (for msg: of the masked model at mask 0)."""
    from reuse.model import checkpoint_config, load_model

    check_growth(checkpoint_config(source), dst, method, depth_method, mapping, noise, ramp_steps, ligo_steps,
                 ligo_lr)
    if method == "ligo" and batches is None:
        raise GrowthError("LiGO needs training data to fit its operator: give the run's --train-data")
    if dst.model_type != "gpt2" and method in grow.WIDTH_METHODS:
        model, report = grow.grow_checkpoint(source, dst, method, seed, depth_method, mapping, noise)
        return Grown(model, report)
    start = time.perf_counter()
    small = load_model(source)
    transition = None
    if dst.model_type == "gpt2":
        model, report = grow_gpt2.grow_model(small, dst, method, depth_method, seed)
    elif method == "msg":
        transition = msg.start(small, dst, ramp_steps, seed, depth_method)
        model, report = transition.model, transition.report
    else:  # on the run's device: the operator steps are training steps
        model, report = ligo.grow(small.to(device or "cpu"), dst, batches, ligo_steps, ligo_lr, depth_method,
                                  seq_len)
        small, model = small.cpu(), model.cpu()
    report["grow_seconds"] = time.perf_counter() - start
    report["drift"] = grow.function_drift(small, model, dst.vocab_size, seed)
    report["source"] = str(source)
    if not math.isfinite(report["drift"]["max_abs_logit_diff"]):
        raise GrowthError(f"{method} growth gave non-finite logits: lower --grow-ligo-lr" if method == "ligo" else
                          f"{method} growth gave non-finite logits")
    return Grown(model, report, transition)


def grow_for_run(cfg, blocks, tokenizer, max_steps: int, device=None) -> Grown:
    """reuse.train's growth of cfg.init_from into cfg.config (a TrainConfig): every growth option checked before any
    weight is loaded or anything written, LiGO fitted on the run's own blocks."""
    from reuse.model import checkpoint_config, load_config

    dst = load_config(cfg.config)
    check_growth(checkpoint_config(cfg.init_from), dst, cfg.grow_method, cfg.grow_depth_method, cfg.grow_mapping,
                 cfg.grow_noise, cfg.grow_ramp_steps, cfg.grow_ligo_steps, cfg.grow_ligo_lr,
                 carry_from=cfg.init_from if cfg.grow_optimizer else None)
    if cfg.grow_method == "msg" and cfg.grow_ramp_steps > max_steps:
        raise GrowthError(f"--grow-ramp-steps {cfg.grow_ramp_steps} is longer than the run ({max_steps} steps): the "
                          f"run would end on a masked model, not a plain checkpoint; lower it")
    batches = None
    if cfg.grow_method == "ligo":  # on resume LiGO runs again and its weights are replaced by the checkpoint's
        batches = ligo.run_batches(blocks, tokenizer, dst, cfg.batch_size, cfg.mlm_probability, cfg.seed)
    return grow_model(cfg.init_from, dst, cfg.grow_method, seed=cfg.seed, depth_method=cfg.grow_depth_method,
                      mapping=cfg.grow_mapping, noise=cfg.grow_noise, ramp_steps=cfg.grow_ramp_steps,
                      ligo_steps=cfg.grow_ligo_steps, ligo_lr=cfg.grow_ligo_lr, batches=batches,
                      seq_len=cfg.block_size + 2, device=device)
