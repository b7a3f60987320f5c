"""A grid file (YAML): what it must hold, checked before any run is planned. See configs/demo.yaml for one."""

from __future__ import annotations

from pathlib import Path

import yaml

from reuse.model import ModelError


class SweepError(Exception):
    """A grid or results folder that cannot be used; the message says what to do."""


def load_grid(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"grid {path} does not exist (see configs/demo.yaml)")
    try:
        grid = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise SweepError(f"grid {path} is not valid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(grid, dict):
        raise SweepError(f"grid {path} is not a mapping of keys (see configs/demo.yaml)")
    transfer = "targets" in grid
    for key in ("name", "models", "fractions", "methods") + (("pretrain",) if transfer else ("train_data",)):
        if key not in grid:
            raise SweepError(f"grid {path} lacks '{key}'")
    for key in ("models", "fractions"):
        if not isinstance(grid[key], list) or not grid[key]:
            raise SweepError(f"grid {path}: '{key}' must be a non-empty list")
    for fraction in grid["fractions"]:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < float(fraction) <= 1:
            raise SweepError(f"grid {path}: fraction {fraction} is outside (0, 1]")
    for model in grid["models"]:
        if not Path(str(model)).is_file():
            raise SweepError(f"grid {path} names model config {model}, which does not exist")
    if not isinstance(grid["methods"], dict) or not grid["methods"]:
        raise SweepError(f"grid {path}: 'methods' must map method names to recipes")
    allowed = {"scratch", "finetune"} if transfer else {"scratch", "reuse"}
    unknown = set(grid["methods"]) - allowed
    if unknown:
        raise SweepError(f"grid {path}: unknown methods {sorted(unknown)}; use {' and '.join(sorted(allowed))}")
    if "seeds" in grid:
        if transfer:
            raise SweepError(f"grid {path}: transfer grids do not take seeds yet; remove 'seeds'")
        grid_seeds(grid)  # checks them
    check_operators(grid)
    recipes = [grid.get("train") or {}] + [r or {} for r in grid["methods"].values()]
    if any(r.get("patience") for r in recipes) and not transfer and not grid.get("valid_data"):
        raise SweepError(f"grid {path} sets patience but no valid_data: early stopping needs a valid split")
    if not transfer and not grid.get("valid_data"):
        raise SweepError(f"grid {path} lacks 'valid_data': the results table and the report compare valid losses")
    from reuse.downstream import DownstreamError, check_downstream
    try:
        check_downstream(grid)
    except (DownstreamError, ModelError) as e:
        raise SweepError(f"grid {path}: {e}") from e
    return grid


def grid_seeds(grid: dict) -> dict[float, list[int]]:
    """Seeds per fraction: `seeds: [0, 1, 2]` for every fraction, or `seeds: {0.1: [0, 1, 2], 0.5: [0]}`."""
    given = grid.get("seeds", [0])
    fractions = [float(f) for f in grid["fractions"]]
    if isinstance(given, dict):
        per = {float(k): v for k, v in given.items()}
        extra = set(per) - set(fractions)
        if extra:
            raise SweepError(f"grid {grid['name']}: seeds are given for fractions {sorted(extra)}, which the grid "
                             f"does not train")
        per = {f: per.get(f, [0]) for f in fractions}
    else:
        per = {f: given for f in fractions}
    for fraction, seeds in per.items():
        if not isinstance(seeds, list) or not seeds or \
                not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
            raise SweepError(f"grid {grid['name']}: seeds {seeds!r} (fraction {fraction:g}) must be a non-empty "
                             f"list of integers >= 0, like [0, 1, 2]")
        if len(set(seeds)) != len(seeds):
            raise SweepError(f"grid {grid['name']}: seeds {seeds} repeat a seed (fraction {fraction:g})")
    return per


def check_operators(grid: dict) -> None:
    """`operators: {net2net: {}, msg: {grow_ramp_steps: 50}}`: one reuse chain per operator, each on top of
    `methods.reuse`'s recipe; refused here, before planning, when it cannot mean that."""
    if "operators" not in grid:
        return
    operators, name = grid["operators"], grid.get("name", "?")
    if "targets" in grid:
        raise SweepError(f"grid {name}: 'operators' needs a model ladder, not a transfer study; remove it")
    if "reuse" not in grid["methods"]:
        raise SweepError(f"grid {name}: 'operators' grows on top of the reuse recipe; add 'methods: {{reuse: ...}}'")
    if not isinstance(operators, dict) or not operators:
        raise SweepError(f"grid {name}: 'operators' must map operator names to recipe overrides, like "
                         f"{{net2net: {{}}, msg: {{grow_ramp_steps: 50}}}}")
    from reuse.growing import RULES  # the operators each model family grows with

    family = grid.get("family", "bert")
    known = RULES.get(family, ())
    unknown = sorted(set(operators) - set(known))
    if unknown:
        raise SweepError(f"grid {name}: unknown operators {unknown} for {family}; use {', '.join(known)}")
    for op, recipe in operators.items():
        if recipe is not None and not isinstance(recipe, dict):
            raise SweepError(f"grid {name}: operator {op}'s recipe must be a mapping of train options (or {{}})")
