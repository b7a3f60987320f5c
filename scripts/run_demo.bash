#!/usr/bin/env bash
# The main job on the embedded corpus: set up, prepare the English Wikipedia lead sections, tokenize them for BERT,
# and print the token counts per split. Re-running reuses what is done.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.bash
data=${DATA_DIR:-data/wiki-embedded}
if [ ! -s "$data/en.test.raw" ]; then
  OUT_DIR="$data" bash data/embedded/get_data.bash en
fi
bash tokenization/tokenize_wiki_bert.bash "$data"
