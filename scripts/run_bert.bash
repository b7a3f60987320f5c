#!/usr/bin/env bash
# Train a BERT masked LM, in the style of the original project's scripts; the log is written to snap/NAME/log.txt.
# Usage: bash scripts/run_bert.bash GPUS NAME [extra reuse.train arguments]
#   GPUS: ids like 0,1,2,3 (several run through torchrun) or cpu (NPROC_CPU processes with gloo, default 1).
#   env: DATA_DIR (default data/wiki-cased), TOKENIZER (default bert-base-uncased),
#        MODEL_CONFIG (default configs/bert-12L-64H.json).
# Example: bash scripts/run_bert.bash 0 bert-12L-64H-0.001D --fraction 0.001 --epochs 20
set -euo pipefail
source "$(dirname "$0")/common_train.bash"
run_mlm bert "$@"
