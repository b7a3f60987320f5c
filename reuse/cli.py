"""Dataclass configs filled from a JSON/YAML file and the command line (the command line wins).

Every field becomes `--field-name`; booleans become flags (`--compile`, `--no-compile`). A file given with
`--args-file FILE.yaml` supplies values for any field. The resolved dataclass is what a run writes next to its
checkpoints, so a result can always be traced back and re-run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path

import yaml


def read_mapping(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist")
    with open(path) as f:
        data = yaml.safe_load(f) if path.suffix in (".yaml", ".yml") else json.load(f)
    if not isinstance(data, dict):
        raise SystemExit(f"error: {path} must hold a mapping of field names to values")
    return data


def _field_type(cls, field: dataclasses.Field):
    hint = typing.get_type_hints(cls)[field.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls) -> None:
    for field in dataclasses.fields(cls):
        flag = "--" + field.name.replace("_", "-")
        kind = _field_type(cls, field)
        doc = field.metadata.get("help", "")
        if kind is bool:
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=None, help=doc)
        else:
            parser.add_argument(flag, dest=field.name, type=kind, default=None, help=doc)
    parser.add_argument("--args-file", type=Path, help="JSON or YAML file with values for any of these fields")


def dataclass_from_args(cls, args: argparse.Namespace):
    """Defaults, then the --args-file values, then what was given on the command line."""
    values = {}
    names = {f.name for f in dataclasses.fields(cls)}
    if getattr(args, "args_file", None):
        from_file = read_mapping(args.args_file)
        unknown = set(from_file) - names
        if unknown:
            raise SystemExit(f"error: {args.args_file} has unknown fields {sorted(unknown)}")
        values.update(from_file)
    values.update({k: v for k, v in vars(args).items() if k in names and v is not None})
    return cls(**values)
