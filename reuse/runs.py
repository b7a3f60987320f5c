"""Run names: the one place that builds and parses them.

The released checkpoints set the pattern: `bert-12L-64H-0.001D` (from scratch at fraction 0.001) and
`bert-n2n-12L-128H-0.001D` (grown by net2net from the next smaller reused model). Seeds other than 0 add `-s<seed>`,
so seed 0 keeps the released names. A transfer study adds `gpt2-6L-128H-en` (pre-trained on English),
`gpt2-6L-128H-fr-0.01D` (French from scratch) and `gpt2-en2fr-6L-128H-0.01D` (English model fine-tuned on French).
"""

from __future__ import annotations

import re
from pathlib import Path

from reuse.model import load_config

GROW_TAGS = {"net2net": "n2n"}  # the released names abbreviate net2net; other operators keep their own name

NAME = re.compile(r"^(?P<family>[a-z][a-z0-9]*)-(?:(?P<source>[a-z]{2})2(?P<target>[a-z]{2})-|(?P<grow>[a-z0-9]+)-)?"
                  r"(?P<layers>\d+)L-(?P<hidden>\d+)H(?:-(?P<language>[a-z]{2}))?"
                  r"(?:-(?P<fraction>\d[0-9.e+-]*)D)?(?:-s(?P<seed>\d+))?$")


def model_tag(config_path: str | Path) -> str:
    """`4L-64H` for a model config (or checkpoint folder) with 4 layers of width 64."""
    config = load_config(config_path)
    return f"{config.num_hidden_layers}L-{config.hidden_size}H"


def run_name(family: str, tag: str, fraction: float | None = None, seed: int = 0, grow_method: str = "",
             language: str = "", source: str = "") -> str:
    """The run id; `source` and `language` name a transfer run (fine-tuned from `source` when both are given)."""
    parts = [family]
    if source:
        parts.append(f"{source}2{language}")
    elif grow_method:
        parts.append(GROW_TAGS.get(grow_method, grow_method))
    parts.append(tag)
    if language and not source:
        parts.append(language)
    if fraction is not None:
        parts.append(f"{fraction:g}D")
    if seed:
        parts.append(f"s{seed}")
    return "-".join(parts)


def parse_run_name(name: str) -> dict | None:
    """The fields of a run id (method: scratch, reuse, pretrain or finetune), or None for any other name."""
    m = NAME.match(name)
    if not m:
        return None
    if m["source"]:
        method = "finetune"
    elif m["grow"]:
        method = "reuse"
    elif m["language"] and m["fraction"] is None:
        method = "pretrain"
    else:
        method = "scratch"
    if m["fraction"] is None and method != "pretrain":
        return None
    try:
        fraction = float(m["fraction"]) if m["fraction"] is not None else 1.0
    except ValueError:
        return None
    return {"family": m["family"], "method": method, "fraction": fraction, "layers": int(m["layers"]),
            "hidden": int(m["hidden"]), "seed": int(m["seed"] or 0),
            "grow": m["grow"] or "", "language": m["target"] or m["language"] or ""}
