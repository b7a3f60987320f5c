#!/usr/bin/env bash
# The main job: the small end-to-end reproduction on the embedded corpus, in the data-limited regime (see README for
# its measured time on 2 CPU cores). Set up; prepare the English Wikipedia lead sections; train a 2048-token WordPiece
# vocabulary on them and tokenize; run configs/demo.yaml (scratch and reuse ladders, 3 widths x 2 fractions, 3 seeds
# at the smaller fraction, each run trained until its valid loss stops improving); write
# results/demo/{results.csv, curves.png, report.md}. Re-running reuses everything already done.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.bash
bash scripts/prepare_demo_data.bash
python -m reuse.sweep configs/demo.yaml --workers "${WORKERS:-2}"
echo "report: results/demo/report.md"
