#!/usr/bin/env bash
# English -> French/Spanish transfer on the embedded corpora (configs/transfer_demo.yaml), then the effective data
# transferred: results/transfer_demo/{results.csv, transfer.csv, transfer.png}. Re-running reuses what is done.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.bash
data=data/wiki-embedded
for lang in en fr es; do
  [ -s "$data/$lang.test.raw" ] || OUT_DIR="$data" bash data/embedded/get_data.bash "$lang"
done
files=("$data"/{en,fr,es}.{train,valid,test}.raw)
if [ ! -d "$data/roberta-bpe-8192" ]; then
  python -m reuse.tokenize "${files[@]}" --train-vocab 8192 --kind bpe
else
  python -m reuse.tokenize "${files[@]}" --tokenizer "$data/roberta-bpe-8192"
fi
python -m reuse.sweep configs/transfer_demo.yaml --workers "${WORKERS:-2}"
