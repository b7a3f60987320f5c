#!/usr/bin/env bash
# Train a RoBERTa masked LM; the log is written to snap/NAME/log.txt.
# Usage: bash scripts/run_roberta.bash GPUS NAME [extra reuse.train arguments]
#   GPUS: ids like 0,1,2,3 (several run through torchrun) or cpu (NPROC_CPU processes with gloo, default 1).
#   env: DATA_DIR (default data/wiki-cased-untokenized), TOKENIZER (default roberta-bpe),
#        MODEL_CONFIG (default configs/roberta-12L-64H.json).
set -euo pipefail
source "$(dirname "$0")/common_train.bash"
run_mlm roberta "$@"
