"""Dataclass configs filled from a JSON/YAML file and the command line (the command line wins), and the argument
checks shared by the command-line tools.

Every field becomes `--field-name`; booleans become flags (`--compile`, `--no-compile`). A file given with
`--args-file FILE.yaml` supplies values for any field. The resolved dataclass is what a run writes next to its
checkpoints, so a result can always be traced back and re-run.

`Parser` and the `type=` checks below refuse nonsense (a negative size, an output file that is a folder) while the
arguments are parsed, before any work, with one line `error: ...` as every other error of these tools.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import typing
from pathlib import Path

import yaml


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line starting with `error:` (exit status 2) instead of a usage block."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _number(kind, text: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None


def positive_int(text: str) -> int:
    value = _number(int, text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {value}")
    return value


def nonnegative_int(text: str) -> int:
    value = _number(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, not {value}")
    return value


def nonnegative_float(text: str) -> float:
    value = _number(float, text)
    if not (math.isfinite(value) and value >= 0):  # NaN fails every comparison: test for what is allowed
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, not {text}")
    return value


def _under_a_file(path: Path) -> Path | None:
    return next((p for p in path.parents if p.exists() and not p.is_dir()), None)


def output_file(text: str) -> Path:
    """A file to write: not an existing folder, and not below an existing file."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is an existing folder; give a file name")
    blocking = _under_a_file(path)
    if blocking:
        raise argparse.ArgumentTypeError(f"{blocking} is a file, so {path} cannot be created below it")
    return path


def output_folder(text: str) -> Path:
    """A folder to write: not an existing file, and not below an existing file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is an existing file; give a folder")
    blocking = _under_a_file(path)
    if blocking:
        raise argparse.ArgumentTypeError(f"{blocking} is a file, so {path} cannot be created below it")
    return path


def read_mapping(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) if path.suffix in (".yaml", ".yml") else json.load(f)
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SystemExit(f"error: {path} is not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'} "
                         f"({str(e).splitlines()[0]})") from None
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


def dataclass_values(cls, args: argparse.Namespace) -> dict:
    """Defaults' overrides: the --args-file values, then what was given on the command line."""
    values = {}
    names = {f.name for f in dataclasses.fields(cls)}
    if getattr(args, "args_file", None):
        from_file = read_mapping(args.args_file)
        unknown = set(from_file) - names
        if unknown:
            raise SystemExit(f"error: {args.args_file} has unknown fields {sorted(unknown)}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values.update({k: file_value(cls, fields[k], v, args.args_file) for k, v in from_file.items()})
    values.update({k: v for k, v in vars(args).items() if k in names and v is not None})
    return values


def file_value(cls, field: dataclasses.Field, value, path):
    """An --args-file value as its field's type: JSON's and YAML's own types, or a number written as text ("1e-3");
    anything else is one line naming the field, never a truthy "no" that overwrites a folder."""
    kind = _field_type(cls, field)
    optional = type(None) in typing.get_args(typing.get_type_hints(cls)[field.name])
    if value is None and optional:
        return None
    if kind is bool and isinstance(value, bool) or kind is str and isinstance(value, str):
        return value
    if kind in (int, float) and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        if kind is int and isinstance(value, float):
            if value.is_integer():
                return int(value)
        else:
            try:
                return kind(value)
            except ValueError:
                pass
    wanted = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(kind, str(kind))
    raise SystemExit(f"error: {field.name}: {value!r} is not {wanted} (in {path})")


def dataclass_from_args(cls, args: argparse.Namespace):
    """Defaults, then the --args-file values, then what was given on the command line."""
    return cls(**dataclass_values(cls, args))
