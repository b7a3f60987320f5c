"""Where a checkpoint or tokenizer lives: a local folder, a Hub repository, or a subfolder of a Hub repository.

The released checkpoints are subfolders of one repository (`peihaowang/data-efficient-scaling/bert-12L-64H-0.001D`),
but `from_pretrained` takes a repository id of at most one `/` and the subfolder as a separate argument: this module
is the one place that turns such an id into those arguments, for configs, models and tokenizers alike.
"""

from __future__ import annotations

from pathlib import Path


def is_local(name_or_folder: str | Path) -> bool:
    """An existing path, or anything written as a path (starting with `/`, `.` or `~`): never a Hub id."""
    text = str(name_or_folder)
    return Path(text).exists() or text.startswith(("/", ".", "~"))


def from_pretrained_args(name_or_folder: str | Path) -> tuple[str, dict]:
    """(first argument, keyword arguments) for `from_pretrained`, remote code always refused.

    A local path stays as it is (a local folder always wins over a Hub id of the same spelling). Otherwise
    `owner/repo/sub/folder` becomes `owner/repo` with `subfolder="sub/folder"`; `owner/repo` and plain names are
    passed through.
    """
    text = str(name_or_folder)
    parts = [p for p in text.split("/") if p]
    # Nothing in this project needs code shipped with a checkpoint: a config's `auto_map` is refused, never run
    # (transformers would otherwise ask on stdin whether to execute the folder's Python files).
    safe = {"trust_remote_code": False}
    if is_local(text) or len(parts) <= 2:
        return text, safe
    return "/".join(parts[:2]), {"subfolder": "/".join(parts[2:]), **safe}


def is_hub_id(name_or_folder: str | Path) -> bool:
    """Whether `name_or_folder` names something on the Hub: `owner/repo` or `owner/repo/subfolder`, not local."""
    return not is_local(name_or_folder) and "/" in str(name_or_folder).strip("/")
