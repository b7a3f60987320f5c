#!/usr/bin/env bash
# Set up (idempotent) and run the test suite. Slow tests run too; pass `-m "not slow"` to skip them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.bash
python -m pytest -q tests "$@"
