#!/usr/bin/env bash
# Tokenize WikiText-103's wiki.{train,valid,test}.raw for BERT with the rule the original applied to this corpus
# (vokenization's tokenization/tokenize_dataset.py on a `wiki103` folder): headings (' = ... = ') and lines of fewer
# than 5 words dropped, the rest concatenated. Writes <file>.<tokenizer>.hdf5 and .line.
# Usage: bash tokenization/tokenize_wiki103_bert.bash [DATA_DIR] [extra reuse.tokenize arguments]
#   DATA_DIR defaults to data/wiki103-cased; env TOKENIZER (default bert-base-uncased; a folder or Hub id also works).
set -euo pipefail
dir=${1:-data/wiki103-cased}; shift || true
python -m reuse.tokenize "$dir/wiki.train.raw" "$dir/wiki.valid.raw" "$dir/wiki.test.raw" \
  --tokenizer "${TOKENIZER:-bert-base-uncased}" --line-filter wiki103 "$@"
