#!/usr/bin/env bash
# The main job: the small end-to-end reproduction on the embedded corpus (14 to 22 minutes on 2 CPU cores, by machine).
# Set up; prepare the English Wikipedia lead sections; tokenize them for BERT (bert-base-uncased) and with an 8k
# WordPiece vocabulary trained on the corpus; run configs/demo.yaml (scratch and reuse ladders, 3 widths x 2 fractions);
# write results/demo/{results.csv, curves.png, report.md}. Re-running reuses everything already done.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.bash
data=data/wiki-embedded
if [ ! -s "$data/en.test.raw" ]; then
  OUT_DIR="$data" bash data/embedded/get_data.bash en
fi
bash tokenization/tokenize_wiki_bert.bash "$data"
if [ ! -d "$data/bert-wordpiece-8192" ]; then
  python -m reuse.tokenize "$data/en.train.raw" "$data/en.valid.raw" "$data/en.test.raw" --train-vocab 8192
else
  bash tokenization/tokenize_wiki_bert.bash "$data" --tokenizer "$data/bert-wordpiece-8192"
fi
python -m reuse.sweep configs/demo.yaml --workers "${WORKERS:-2}"
echo "report: results/demo/report.md"
