#!/usr/bin/env bash
# Set up (idempotent) and run the test suite, one pytest-xdist worker per core. Slow tests run too; pass
# `-m "not slow"` to skip them, `-n 0` to run in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.bash
# One torch thread per worker: two workers with two threads each on two cores spend their time waiting on each other.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
python -m pytest -q -n auto tests "$@"
