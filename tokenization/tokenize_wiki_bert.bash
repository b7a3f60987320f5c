#!/usr/bin/env bash
# Tokenize LANG.{train,valid,test}.raw of a data folder for BERT: writes <file>.<tokenizer>.hdf5 and .line.
# Usage: bash tokenization/tokenize_wiki_bert.bash [DATA_DIR] [extra reuse.tokenize arguments]
#   DATA_DIR defaults to data/wiki-cased (the embedded corpus is data/wiki-embedded); env LANG_CODE (default en),
#   TOKENIZER (default bert-base-uncased; a folder or Hub id also works).
set -euo pipefail
dir=${1:-data/wiki-cased}; shift || true
lang=${LANG_CODE:-en}
python -m reuse.tokenize "$dir/$lang.train.raw" "$dir/$lang.valid.raw" "$dir/$lang.test.raw" \
  --tokenizer "${TOKENIZER:-bert-base-uncased}" "$@"
