"""A grid file (YAML): what it must hold, checked before any run is planned. See configs/demo.yaml for one.

A model-ladder grid names its protocol:
- `paper`: the original project's protocol. Every run trains its whole fixed budget (no patience) and its result is
  its last checkpoint; the best checkpoint on the periodic valid loss is kept beside it, so the same runs also give
  the early-stopping numbers. A reused model grows from its parent's last checkpoint unless the reuse recipe says
  `parent_checkpoint: best`.
- `early-stop`: every run stops on `patience` and its result is its best checkpoint, which children grow from.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import yaml

from reuse.config import TrainConfig
from reuse.data import DataError, inspect_tokens
from reuse.grow import GrowthError
from reuse.growing import check_growth
from reuse.model import ModelError, load_config


class SweepError(Exception):
    """A grid or results folder that cannot be used; the message says what to do."""


PROTOCOLS = {"paper": "a fixed budget, the last checkpoint", "early-stop": "patience, the best checkpoint"}
PARENT_CHECKPOINTS = ("last", "best")
# What a search variant may change: the recipes, never the data or the ladder (variants must be comparable).
SEARCH_KEYS = ("train", "methods", "fraction_args", "model_args")
PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def default_parent_checkpoint(grid: dict) -> str:
    return "last" if grid.get("protocol") == "paper" else "best"


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
    if not isinstance(grid["name"], str) or not PLAIN_NAME.match(grid["name"]):
        # it names snap/<name> and results/<name>: a path here would write (and overwrite) outside them
        raise SweepError(f"grid {path}: name {grid['name']!r} must be a plain name (letters, digits, '.', '_', "
                         f"'-'), not a path")
    for key in ("models", "fractions"):
        if not isinstance(grid[key], list) or not grid[key]:
            raise SweepError(f"grid {path}: '{key}' must be a non-empty list")
    for fraction in grid["fractions"]:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < float(fraction) <= 1:
            raise SweepError(f"grid {path}: fraction {fraction} is outside (0, 1]")
    for model in grid["models"]:
        if not Path(str(model)).is_file():
            raise SweepError(f"grid {path} names model config {model}, which does not exist")
    check_methods(grid, path)
    if "seeds" in grid:
        if transfer:
            raise SweepError(f"grid {path}: transfer grids do not take seeds yet; remove 'seeds'")
        grid_seeds(grid)  # checks them
    check_operators(grid)
    if not transfer or "protocol" in grid:
        check_protocol(grid, path)
    check_search(grid, path)
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


def check_methods(grid: dict, path: Path) -> None:
    if not isinstance(grid["methods"], dict) or not grid["methods"]:
        raise SweepError(f"grid {path}: 'methods' must map method names to recipes")
    allowed = {"scratch", "finetune"} if "targets" in grid else {"scratch", "reuse"}
    unknown = set(grid["methods"]) - allowed
    if unknown:
        raise SweepError(f"grid {path}: unknown methods {sorted(unknown)}; use {' and '.join(sorted(allowed))}")
    for method, recipe in grid["methods"].items():
        if recipe is not None and not isinstance(recipe, dict):
            raise SweepError(f"grid {path}: methods.{method} must be a mapping of train options")


def check_protocol(grid: dict, path: Path) -> None:
    protocol = grid.get("protocol")
    if protocol not in PROTOCOLS:
        given = f"protocol {protocol!r} is unknown" if "protocol" in grid else "has no 'protocol'"
        raise SweepError(f"grid {path} {given}: give 'protocol: paper' ({PROTOCOLS['paper']}) or "
                         f"'protocol: early-stop' ({PROTOCOLS['early-stop']})")


def check_search(grid: dict, path: Path) -> None:
    """`search: {lr1e-3: {methods: {...}}, ...}`: one full ladder per variant, each on top of the grid."""
    if "search" not in grid:
        return
    search = grid["search"]
    if not isinstance(search, dict) or not search:
        raise SweepError(f"grid {path}: 'search' must map variant names to changes of {', '.join(SEARCH_KEYS)}")
    for name, changes in search.items():
        if not isinstance(name, str) or not PLAIN_NAME.match(name):
            raise SweepError(f"grid {path}: search variant name {name!r} must be a plain name (letters, digits, "
                             f"'.', '_', '-'): it names a folder")
        if not isinstance(changes, dict) or set(changes) - set(SEARCH_KEYS):
            raise SweepError(f"grid {path}: search variant {name} may change only {', '.join(SEARCH_KEYS)}")
    for variant in search_variants(grid).values():
        check_methods(variant, path)
        check_protocol(variant, path)


def search_variants(grid: dict) -> dict[str, dict]:
    """The grids a search runs, by variant name ('' for a grid without a search). A variant's `train` updates the
    grid's; its other keys replace the grid's."""
    if "search" not in grid:
        return {"": grid}
    out = {}
    for name, changes in grid["search"].items():
        variant = {k: v for k, v in grid.items() if k != "search"}
        for key, value in changes.items():
            variant[key] = {**(grid.get("train") or {}), **(value or {})} if key == "train" else value
        out[name] = variant
    return out


def check_protocol_runs(grid: dict, runs: list) -> None:
    """What each run's final recipe (every override applied) must be under the grid's protocol, and a parent
    checkpoint every child can have (runs: reuse.sweep.Run, planned)."""
    protocol, by_id = grid.get("protocol"), {r.run_id: r for r in runs}
    for run in runs:
        patience = run.args.get("patience")
        if protocol == "paper" and patience:
            raise SweepError(f"grid {grid['name']}, run {run.run_id}: protocol paper trains every run to its fixed "
                             f"budget, but its recipe sets patience {patience}; remove patience, or use "
                             f"protocol early-stop")
        if protocol == "early-stop" and not patience:
            raise SweepError(f"grid {grid['name']}, run {run.run_id}: protocol early-stop needs patience > 0 in its "
                             f"recipe (evaluations without a new best valid loss before the run stops)")
        if run.parent_checkpoint not in ("",) + PARENT_CHECKPOINTS:
            raise SweepError(f"grid {grid['name']}, run {run.run_id}: parent_checkpoint {run.parent_checkpoint!r} "
                             f"is neither {' nor '.join(PARENT_CHECKPOINTS)}")
        parent = by_id.get(run.parent)
        if run.parent_checkpoint == "best" and parent is not None and \
                not (parent.valid_data or grid.get("valid_data")):
            raise SweepError(f"grid {grid['name']}, run {run.run_id}: parent_checkpoint best, but its parent "
                             f"{run.parent} has no valid data and so keeps no best checkpoint; use "
                             f"parent_checkpoint: last, or give the parent valid_data")


# check_growth's settings after the two configs, in its order, as TrainConfig names them
GROWTH = ("grow_method", "grow_depth_method", "grow_mapping", "grow_noise", "grow_ramp_steps", "grow_ligo_steps",
          "grow_ligo_lr")


def check_growth_options(grid: dict, runs: list) -> None:
    """Every reused run's growth settings pass the growth checks here, not in the run: an operator study's noise,
    inherited from the reuse recipe, would otherwise fail one chain after the scratch ladder has trained."""
    models = {r.run_id: r.model for r in runs}
    seen = set()
    for run in runs:
        if run.method != "reuse" or run.parent not in models:
            continue
        key = (models[run.parent], run.model) + tuple(run.args.get(k, getattr(TrainConfig, k)) for k in GROWTH)
        if key in seen:
            continue
        seen.add(key)
        try:
            check_growth(load_config(key[0]), load_config(key[1]), *key[2:])
        except (GrowthError, ModelError) as e:
            raise SweepError(f"grid {grid['name']}, run {run.run_id}: {e}") from e


def check_batches(grid: dict, runs: list) -> None:
    """Every fraction must hold at least one batch, and under protocol paper every step cap at least one epoch
    (a budget "far past the data limit" that does not see the data once is a mistake): found here, before any run
    starts, not in the first run."""
    blocks_of = {}
    for run in runs:
        data = run.train_data or grid.get("train_data")
        block_size, batch_size = int(run.args.get("block_size", TrainConfig.block_size)), int(run.args.get("batch_size", TrainConfig.batch_size))
        if (data, block_size) not in blocks_of:
            try:
                blocks_of[(data, block_size)] = inspect_tokens(data).num_tokens // block_size
            except DataError:
                return  # the data is not there yet (a transfer grid's later corpora): the trainer will say
        blocks = math.floor(run.fraction * blocks_of[(data, block_size)] + 1e-9)
        if blocks < batch_size:
            raise SweepError(f"grid {grid['name']}: fraction {run.fraction:g} of {data} is {blocks} blocks of "
                             f"{block_size} tokens, fewer than one batch of {batch_size}; raise the fraction or "
                             f"lower batch_size")
        steps = run.args.get("max_steps")
        if grid.get("protocol") == "paper" and steps and int(steps) < blocks // batch_size:
            raise SweepError(f"grid {grid['name']}, run {run.run_id}: max_steps {steps} is less than one epoch of "
                             f"fraction {run.fraction:g} ({blocks // batch_size} steps of {batch_size} blocks); "
                             f"protocol paper trains far past the data limit: raise max_steps")
