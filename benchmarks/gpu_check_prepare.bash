#!/usr/bin/env bash
# Run here, before benchmarks/gpu_check.bash goes to a machine without a network: the tokenized embedded corpus in
# data/wiki-embedded/ (the GPU machine has no spaCy to build it) and, in .whl/, the wheels of this package's
# requirements that the device tool's GPU image lacks (its package list: tensorboardX). Both folders are ignored by
# git; name them in the device call's `carry`.
set -euo pipefail
cd "$(dirname "$0")/.."
data=data/wiki-embedded
# The same folder as the demo's (scripts/prepare_demo_data.bash): split once, tokenized here for bert-base-uncased.
[ -s "$data/en.test.raw" ] || OUT_DIR="$data" bash data/embedded/get_data.bash en
if [ ! -f "$data/en.valid.raw.bert-base-uncased.hdf5" ]; then
  python -m reuse.tokenize "$data/en.train.raw" "$data/en.valid.raw"
fi
# Pure-Python wheels, so any platform's pip fetches the ones the GPU machine's Python takes.
python -m pip download -q --no-deps --only-binary=:all: -d .whl "tensorboardX==2.6.5"
du -sh "$data" .whl
