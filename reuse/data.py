"""Training and evaluation data over `<file>.<tokenizer>.hdf5` token arrays.

A corpus is one token stream cut into consecutive blocks of `block_size` tokens (126 by default; with [CLS] and
[SEP] that is 128, as the original project). A data fraction keeps the first `floor(fraction * blocks)` blocks of a
seeded permutation, so for one seed the 0.1% set lies inside the 0.2% set. Masking follows BERT: 15% of the
non-special positions, of which 80% become the mask token, 10% a random token and 10% stay.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

IGNORE_INDEX = -100
# The paper's block: 126 tokens, 128 with [CLS] and [SEP]. Every default in the package is this one.
BLOCK_SIZE = 126


class DataError(Exception):
    """Bad data files or data settings; the message names the file or value and what to do."""


@dataclass(frozen=True)
class TokenFileInfo:
    path: Path
    num_tokens: int
    num_lines: int
    tokenizer: str
    vocab_size: int


def inspect_tokens(path: str | Path) -> TokenFileInfo:
    """Check that `path` is this project's HDF5 layout and agrees with its `.line` file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; tokenize the text first (tokenization/tokenize_wiki_bert.bash)")
    try:
        with h5py.File(path, "r") as h5:
            tokens = h5.get("tokens")
            if not isinstance(tokens, h5py.Dataset) or tokens.ndim != 1:
                raise DataError(f"{path} has no 1-D dataset 'tokens': not a file written by reuse.tokenize")
            if tokens.dtype.kind not in "iu":
                raise DataError(f"{path} holds {tokens.dtype} tokens, not integer ids: re-run reuse.tokenize")
            num_tokens = len(tokens)
            attrs = dict(h5.attrs)
    except OSError as e:
        raise DataError(f"{path} is not a readable HDF5 file ({e})") from e
    line_path = path.with_suffix(".line")
    if not line_path.is_file():
        raise DataError(f"{line_path} is missing: re-run reuse.tokenize on the text file")
    try:
        offsets = np.loadtxt(line_path, dtype=np.int64, ndmin=1)
    except ValueError as e:  # not numbers, or not text at all
        raise DataError(f"{line_path} is not a list of token offsets ({str(e).splitlines()[0]}): re-run "
                        f"reuse.tokenize with --force") from e
    if len(offsets) == 0 or offsets[-1] != num_tokens or offsets[0] != 0 or np.any(np.diff(offsets) <= 0):
        raise DataError(f"{line_path} disagrees with {path} ({num_tokens} tokens, offsets end at "
                        f"{offsets[-1] if len(offsets) else 'nothing'}): re-run reuse.tokenize with --force")
    name = attrs.get("tokenizer", path.name.rsplit(".", 2)[-2])
    vocab_size = int(attrs.get("vocab_size", 0))
    return TokenFileInfo(path, num_tokens, len(offsets) - 1, str(name), vocab_size)


def select_blocks(num_blocks: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a nested, seeded `fraction` of `num_blocks` blocks."""
    if not 0 < fraction <= 1:
        raise DataError(f"fraction {fraction} is outside (0, 1]")
    keep = int(np.floor(fraction * num_blocks + 1e-9))
    if keep == 0:
        raise DataError(f"fraction {fraction} of {num_blocks} blocks leaves no block; use a larger fraction")
    order = np.random.default_rng(seed).permutation(num_blocks)
    return np.sort(order[:keep])


def load_blocks(path: str | Path, block_size: int = BLOCK_SIZE, fraction: float = 1.0, seed: int = 0,
                chunk_blocks: int = 8192) -> torch.Tensor:
    """The selected blocks as one int32 tensor [n, block_size], read in sequential chunks of the file.

    A data fraction of Wikipedia fits in memory (0.9% of 2.5B tokens is 90 MB), and holding it there keeps data
    loading off the training step's critical path: a batch is one index into this tensor.
    """
    info = inspect_tokens(path)
    num_blocks = info.num_tokens // block_size
    if num_blocks == 0:
        raise DataError(f"{path} has {info.num_tokens} tokens, fewer than one block of {block_size}")
    chosen = select_blocks(num_blocks, fraction, seed)
    out = torch.empty((len(chosen), block_size), dtype=torch.int32)
    filled = 0
    with h5py.File(path, "r") as h5:
        tokens = h5["tokens"]
        for lo in range(0, num_blocks, chunk_blocks):
            hi = min(lo + chunk_blocks, num_blocks)
            wanted = chosen[(chosen >= lo) & (chosen < hi)]
            if len(wanted) == 0:
                continue
            chunk = tokens[lo * block_size:hi * block_size].astype(np.int32).reshape(hi - lo, block_size)
            out[filled:filled + len(wanted)] = torch.from_numpy(chunk[wanted - lo])
            filled += len(wanted)
    return out


def check_ids(ids, vocab_size: int, where) -> None:
    """Token ids the model has embeddings for: an id out of range would fail deep inside an embedding lookup (or,
    on a GPU, as a device assert)."""
    if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise DataError(f"{where} holds token ids from {int(ids.min())} to {int(ids.max())}, outside the "
                        f"vocabulary's 0..{vocab_size - 1}: tokenize it with the model's tokenizer")


def check_file_ids(path: str | Path, vocab_size: int, chunk: int = 1 << 22) -> None:
    """check_ids over a whole token file, read in chunks (evaluation splits are small; this is not for training
    corpora, whose selected blocks are checked in memory instead)."""
    with h5py.File(path, "r") as h5:
        tokens = h5["tokens"]
        for start in range(0, len(tokens), chunk):
            check_ids(tokens[start:start + chunk], vocab_size, path)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host batch onto the device without making the host wait: pinned memory, then an asynchronous copy."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def special_ids(tokenizer) -> torch.Tensor:
    """The ids masking never touches."""
    return torch.tensor(sorted(set(tokenizer.all_special_ids)))


def add_special_tokens(blocks: torch.Tensor, cls_id: int, sep_id: int) -> torch.Tensor:
    """[CLS] + block + [SEP] for every row, as int64 input ids."""
    n = blocks.shape[0]
    cls = torch.full((n, 1), cls_id, dtype=torch.long, device=blocks.device)
    sep = torch.full((n, 1), sep_id, dtype=torch.long, device=blocks.device)
    return torch.cat([cls, blocks.long(), sep], dim=1)


class BlockDataset(Dataset):
    """Map-style dataset of [CLS] + block + [SEP]; opens the HDF5 file lazily in each process (DataLoader workers
    must not share an h5py handle opened before fork)."""

    def __init__(self, path: str | Path, cls_id: int, sep_id: int, block_size: int = BLOCK_SIZE,
                 num_blocks: int | None = None):
        info = inspect_tokens(path)
        self.path, self.block_size, self.cls_id, self.sep_id = str(path), block_size, cls_id, sep_id
        full = info.num_tokens // block_size
        self.num_blocks = full if num_blocks is None else min(num_blocks, full)
        if self.num_blocks <= 0:
            raise DataError(f"{path} has {info.num_tokens} tokens: no full block of {block_size}")
        self._h5, self._pid = None, None

    def __len__(self) -> int:
        return self.num_blocks

    def __getitem__(self, i: int) -> torch.Tensor:
        if self._h5 is None or self._pid != os.getpid():
            self._h5, self._pid = h5py.File(self.path, "r"), os.getpid()
        block = self._h5["tokens"][i * self.block_size:(i + 1) * self.block_size].astype(np.int64)
        return torch.cat([torch.tensor([self.cls_id]), torch.from_numpy(block), torch.tensor([self.sep_id])])

    def __getstate__(self):
        return {**self.__dict__, "_h5": None, "_pid": None}


def mask_tokens(input_ids: torch.Tensor, special_ids: torch.Tensor, mask_id: int, vocab_size: int,
                mlm_probability: float = 0.15, generator: torch.Generator | None = None):
    """BERT masking; returns (inputs, labels) with labels IGNORE_INDEX where nothing is predicted.

    The draws and their order (Bernoulli 0.15, Bernoulli 0.8, Bernoulli 0.5, random ids for every position) are those
    of transformers' DataCollatorForLanguageModeling, so with the global generator it reproduces the original
    evaluation's masks exactly. Pass a generator to keep the global RNG untouched.
    """
    shape, device = input_ids.shape, input_ids.device
    labels = input_ids.clone()
    inputs = input_ids.clone()
    probability = torch.full(shape, mlm_probability, device=device)
    probability.masked_fill_(torch.isin(input_ids, special_ids.to(device)), 0.0)
    masked = torch.bernoulli(probability, generator=generator).bool()
    labels[~masked] = IGNORE_INDEX
    replaced = torch.bernoulli(torch.full(shape, 0.8, device=device), generator=generator).bool() & masked
    inputs[replaced] = mask_id
    randomized = torch.bernoulli(torch.full(shape, 0.5, device=device), generator=generator).bool() & masked & ~replaced
    random_ids = torch.randint(vocab_size, shape, dtype=torch.long, device=device, generator=generator)
    inputs[randomized] = random_ids[randomized]
    return inputs, labels
