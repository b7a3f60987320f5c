#!/usr/bin/env bash
# English (or LANG) Wikipedia, cased, one sentence per line, whitespace-normalised: input for WordPiece (BERT).
# Usage: bash data/wiki/get_data_cased.bash [LANG]      env: WIKI_DUMP, OUT_DIR, VALID_LINES, TEST_LINES, SPACY_MODEL
set -euo pipefail
source "$(dirname "$0")/common.bash"
lang=${1:-en}
wiki_pipeline "$lang" "${OUT_DIR:-data/wiki-cased}"
