#!/usr/bin/env bash
# The demos' data, shared by scripts/run_demo.bash and scripts/run_operators_demo.bash: the English Wikipedia lead
# sections of the embedded corpus, a 2048-token WordPiece vocabulary trained on them, and the three splits tokenized
# with it into data/wiki-embedded/. Steps already done are skipped (tokenization skips files made by the same
# tokenizer: reuse.tokenize checks each file's recorded tokenizer fingerprint).
set -euo pipefail
cd "$(dirname "$0")/.."
data=data/wiki-embedded
if [ ! -s "$data/en.test.raw" ]; then
  OUT_DIR="$data" bash data/embedded/get_data.bash en
fi
if [ ! -d "$data/bert-wordpiece-2048" ]; then
  python -m reuse.tokenize "$data/en.train.raw" "$data/en.valid.raw" "$data/en.test.raw" --train-vocab 2048
else
  bash tokenization/tokenize_wiki_bert.bash "$data" --tokenizer "$data/bert-wordpiece-2048"
fi
