"""The training run's settings (`TrainConfig`, one field per `reuse.train` option) and the checks they must pass
before any work starts: a bad value is one line naming the option and what to give instead, never a run that
trains nothing or a traceback from deep inside. Sweeps check every planned run's settings with the same function.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from reuse.data import BLOCK_SIZE


class ConfigError(ValueError):
    """A setting that cannot train; the message names the option and what to do."""


@dataclass
class TrainConfig:
    train_data: str = field(default="", metadata={"help": "tokenized training split, <file>.<tokenizer>.hdf5"})
    valid_data: str = field(default="", metadata={"help": "tokenized valid split for periodic evaluation"})
    test_data: str = field(default="", metadata={"help": "tokenized test split: the end-of-run evaluation "
                                                         "(--heldout) scores both kept checkpoints on it"})
    output_dir: str = field(default="", metadata={"help": "run folder: checkpoints, logs, final model"})
    config: str = field(default="", metadata={"help": "model config JSON (configs/*.json); with --init-from and "
                                                      "--grow-method, the larger target"})
    init_from: str = field(default="", metadata={"help": "warm-start from this checkpoint folder"})
    grow_method: str = field(default="", metadata={"help": "grow --init-from into --config with this operator: "
                                                           "net2net, aki, random, msg (exact, then a ramp), ligo "
                                                           "(learned) for BERT/RoBERTa; lemon (exact), random for "
                                                           "GPT-2"})
    grow_depth_method: str = field(default="stack", metadata={"help": "growth in depth: stack or interleave"})
    grow_mapping: str = field(default="cyclic", metadata={"help": "which small unit each new unit copies: cyclic "
                                                                 "or random"})
    grow_noise: float = field(default=0.0, metadata={"help": "std of Gaussian noise on the copied units' weights; "
                                                             "breaks their symmetry when nothing else does "
                                                             "(dropout 0)"})
    grow_ramp_steps: int = field(default=100, metadata={"help": "msg: steps over which the new units' masks ramp "
                                                                "from 0 to 1 (at most the run's steps)"})
    grow_ligo_steps: int = field(default=100, metadata={"help": "ligo: training steps of the growth operator on the "
                                                                "run's data (counted in the run's FLOPs)"})
    grow_ligo_lr: float = field(default=1e-3, metadata={"help": "ligo: Adam learning rate of the growth operator"})
    grow_optimizer: bool = field(default=False, metadata={"help": "carry the small model's AdamW moments across "
                                                                  "growth (needs its trainer_state.pt)"})
    tokenizer: str | None = field(default=None, metadata={"help": "default: the tokenizer named by the training "
                                                                  "data"})
    fraction: float = field(default=1.0, metadata={"help": "fraction of training blocks, nested across values"})
    block_size: int = field(default=BLOCK_SIZE, metadata={"help": "tokens per block (the model sees 2 more for "
                                                                  "an MLM: [CLS] and [SEP])"})
    batch_size: int = field(default=256, metadata={"help": "global batch, in sequences"})
    micro_batch_size: int | None = field(default=None, metadata={"help": "sequences per forward pass per process "
                                                                         "(gradient accumulation); default: the "
                                                                         "whole per-process share"})
    max_steps: int | None = field(default=None, metadata={"help": "optimizer steps; default: --epochs over the "
                                                                  "fraction's blocks"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the fraction's blocks, when --max-steps is "
                                                         "not given"})
    lr: float = 2e-4
    warmup_fraction: float = field(default=0.06, metadata={"help": "linear warm-up over this fraction of the "
                                                                   "steps"})
    warmup_steps: int | None = field(default=None, metadata={"help": "linear warm-up over this many steps "
                                                                     "(replaces --warmup-fraction)"})
    weight_decay: float = 0.01
    adam_beta2: float = 0.98
    adam_eps: float = 1e-6
    grad_clip: float = 1.0
    dropout: float | None = field(default=None, metadata={"help": "hidden and attention dropout; default: the "
                                                                  "model config's"})
    mlm_probability: float = 0.15
    seed: int = 0
    eval_every: int = 200
    eval_batches: int = field(default=50, metadata={"help": "valid batches per periodic evaluation"})
    eval_batch_size: int = 64
    patience: int = field(default=0, metadata={"help": "stop after this many evaluations without a new best valid "
                                                       "loss (0 = never); the run then ends at its best loss, in best/"})
    heldout: bool = field(default=False, metadata={"help": "at the end, score the last and the best checkpoint "
                                                           "with the original protocol on the whole valid and test "
                                                           "splits and on a sample of the training blocks "
                                                           "(reuse.heldout); written to summary.json"})
    heldout_train_blocks: int = field(default=640, metadata={"help": "training blocks in that sample (a fixed "
                                                                     "seeded sample of the fraction)"})
    heldout_batches: int | None = field(default=None, metadata={"help": "at most this many batches of 64 per "
                                                                        "split in that evaluation; default: "
                                                                        "whole splits"})
    save_every: int = 200
    keep_last: int = 2
    log_every: int = 10
    device: str | None = field(default=None, metadata={"help": "cuda or cpu; default cuda when available"})
    bf16: bool = field(default=True, metadata={"help": "bf16 autocast on CUDA (fp32 on CPU always)"})
    compile: bool = False
    threads: int | None = field(default=None, metadata={"help": "CPU threads per process; default: torch's"})
    resume: bool = False
    overwrite: bool = False


POSITIVE = ("batch_size", "block_size", "eval_every", "eval_batches", "eval_batch_size", "save_every", "log_every",
            "micro_batch_size", "max_steps", "threads", "heldout_batches")
NONNEGATIVE = ("heldout_train_blocks", "patience", "keep_last", "seed", "weight_decay", "grow_noise", "warmup_steps", "grow_ramp_steps",
               "grow_ligo_steps")


def check_config(cfg: TrainConfig) -> None:
    """Raise ConfigError for the first setting that is missing, out of range or contradicts another."""
    if not cfg.output_dir or not cfg.train_data:
        raise ConfigError("--output-dir and --train-data are required")
    for name in POSITIVE:
        value = getattr(cfg, name)
        if value is not None and not value > 0:  # None: not given, resolved by the trainer
            raise ConfigError(f"--{name.replace('_', '-')} must be > 0, not {value}")
    for name in NONNEGATIVE:
        value = getattr(cfg, name)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, not {value}")
    for name, high in {"lr": math.inf, "grow_ligo_lr": math.inf, "epochs": math.inf, "grad_clip": math.inf,
                       "adam_eps": 1, "adam_beta2": 1,
                       "mlm_probability": 1}.items():
        value = getattr(cfg, name)
        if not (math.isfinite(value) and 0 < value < high):  # NaN fails every comparison
            raise ConfigError(f"--{name.replace('_', '-')} {value} is outside (0, {high})")
    if not 0 < cfg.fraction <= 1:
        raise ConfigError(f"--fraction {cfg.fraction} is outside (0, 1]")
    if not (cfg.dropout is None or 0 <= cfg.dropout < 1):
        raise ConfigError(f"--dropout {cfg.dropout} must be in [0, 1); leave it out to keep the model config's")
    if not 0 <= cfg.warmup_fraction < 1:
        raise ConfigError(f"--warmup-fraction {cfg.warmup_fraction} is outside [0, 1); for a number of steps give "
                          f"--warmup-steps")
    if cfg.device is not None and cfg.device.split(":")[0] not in ("cpu", "cuda"):
        raise ConfigError(f"--device {cfg.device}: give cpu, cuda or cuda:N")
    if cfg.patience and not cfg.valid_data:
        raise ConfigError(f"--patience {cfg.patience} needs --valid-data: early stopping watches the valid loss")
    if cfg.heldout and not cfg.valid_data:
        raise ConfigError("--heldout needs --valid-data: the end-of-run evaluation reports the checkpoints on it")
    if cfg.init_from and cfg.config and not cfg.grow_method:
        raise ConfigError(f"--init-from {cfg.init_from} with --config {cfg.config} but no --grow-method: the run "
                          f"would train the checkpoint as it is while its config names another model; add "
                          f"--grow-method net2net to grow it, or drop --config")
    if cfg.grow_optimizer and not cfg.grow_method:
        raise ConfigError("--grow-optimizer carries moments across growth: it needs --grow-method and --init-from")
    if cfg.grow_method and not cfg.init_from:
        raise ConfigError(f"--grow-method {cfg.grow_method} needs --init-from, the smaller model to grow")


def config_from_dict(values: dict) -> TrainConfig:
    """A TrainConfig from a grid's recipe (YAML values), each converted to its field's type; an unknown key or an
    unconvertible value is a ConfigError naming it."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown training option(s) {', '.join(unknown)} (see python -m reuse.train --help)")
    converted = {}
    for name, value in values.items():
        kind = {"float": float, "int": int, "bool": bool, "str": str}[str(fields[name].type).removesuffix(" | None")]
        if value is None and str(fields[name].type).endswith("| None"):
            converted[name] = None
            continue
        if kind is bool and not isinstance(value, bool) or kind is int and isinstance(value, float):
            raise ConfigError(f"{name}: {value!r} is not {'true or false' if kind is bool else 'an integer'}")
        try:
            converted[name] = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: {value!r} is not {'a number' if kind in (int, float) else 'a ' + kind.__name__}") \
                from None
    return TrainConfig(**converted)


def resolve(cfg: TrainConfig, *, model_config, tokenizer: str, world_size: int, device: str, max_steps: int,
            dropout: float) -> dict:
    """What run_config.json records: every option, the derived ones filled in (steps, warm-up steps, micro-batch,
    dropout, device, world size, tokenizer), and the model's config contents, so the file alone says what was
    trained and re-runs it."""
    warmup_steps = cfg.warmup_steps if cfg.warmup_steps is not None else int(cfg.warmup_fraction * max_steps)
    model = {k: v for k, v in model_config.to_dict().items() if not k.startswith("_") and k != "transformers_version"}
    resolved = {**dataclasses.asdict(cfg), "tokenizer": tokenizer, "world_size": world_size, "device": device,
                "max_steps": max_steps, "warmup_steps": max(1, warmup_steps), "dropout": dropout,
                "micro_batch_size": cfg.micro_batch_size or cfg.batch_size // world_size, "model": model}
    return json.loads(json.dumps(resolved))  # as the file will read back (JSON keys are strings: id2label's are not)
