#!/usr/bin/env bash
# One-time set-up, idempotent: the CPU build of torch first (a bare `torch` requirement would pull a CUDA build),
# then this package and its test extras in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
fi
python -m pip install -q -e ".[test]"
