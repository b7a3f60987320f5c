#!/usr/bin/env bash
# Tokenize LANG.{train,valid,test}.raw of a data folder for RoBERTa (byte-level BPE): <file>.<tokenizer>.hdf5 and .line.
# Usage: bash tokenization/tokenize_wiki_roberta.bash [DATA_DIR] [extra reuse.tokenize arguments]
#   DATA_DIR defaults to data/wiki-cased-untokenized; env LANG_CODE (default en), TOKENIZER (default roberta-bpe,
#   the GPT-2 merges with RoBERTa's special-token layout; roberta-base works when the Hub is reachable).
set -euo pipefail
dir=${1:-data/wiki-cased-untokenized}; shift || true
lang=${LANG_CODE:-en}
python -m reuse.tokenize "$dir/$lang.train.raw" "$dir/$lang.valid.raw" "$dir/$lang.test.raw" \
  --tokenizer "${TOKENIZER:-roberta-bpe}" "$@"
