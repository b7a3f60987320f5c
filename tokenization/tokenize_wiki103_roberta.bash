#!/usr/bin/env bash
# Tokenize WikiText-103's wiki.{train,valid,test}.raw for RoBERTa (byte-level BPE) with the original's rule for this
# corpus (see tokenize_wiki103_bert.bash): <file>.<tokenizer>.hdf5 and .line.
# Usage: bash tokenization/tokenize_wiki103_roberta.bash [DATA_DIR] [extra reuse.tokenize arguments]
#   DATA_DIR defaults to data/wiki103-cased-untokenized (the same bytes as data/wiki103-cased); env TOKENIZER
#   (default roberta-bpe, the GPT-2 merges with RoBERTa's special-token layout; roberta-base works when the Hub is
#   reachable).
set -euo pipefail
dir=${1:-data/wiki103-cased-untokenized}; shift || true
python -m reuse.tokenize "$dir/wiki.train.raw" "$dir/wiki.valid.raw" "$dir/wiki.test.raw" \
  --tokenizer "${TOKENIZER:-roberta-bpe}" --line-filter wiki103 "$@"
