#!/usr/bin/env bash
# The paper's grid on GPUs, one run per GPU: bash scripts/run_paper.bash 0,1,2,3 [extra reuse.sweep arguments]
# Needs WikiText-103 tokenized for BERT (data/wiki103/get_data_cased.bash, tokenization/tokenize_wiki103_bert.bash) and
# full Wikipedia's valid/test splits, the notebook's evaluation data (data/wiki/get_data_cased.bash,
# tokenization/tokenize_wiki_bert.bash).
set -euo pipefail
cd "$(dirname "$0")/.."
gpus=${1:?usage: run_paper.bash GPUS (e.g. 0,1,2,3)}; shift
python -m reuse.sweep configs/paper.yaml --gpus "$gpus" "$@"
