#!/usr/bin/env bash
# WikiText-103 for byte-level BPE (RoBERTa). The Wikipedia twin (data/wiki/get_data_cased_untokenized.bash) differs
# from its cased script only by keeping text exactly as extracted instead of normalising whitespace; WikiText's cased
# files are already the release's text untouched, so this writes the same bytes, to another folder (the one
# tokenization/tokenize_wiki103_roberta.bash reads by default). vokenization had no such twin: it tokenized
# data/wiki103-cased for RoBERTa too, and `bash tokenization/tokenize_wiki103_roberta.bash data/wiki103-cased` does.
# Usage: bash data/wiki103/get_data_cased_untokenized.bash   env: as data/wiki103/get_data_cased.bash
#   (OUT_DIR defaults to data/wiki103-cased-untokenized)
set -euo pipefail
source "$(dirname "$0")/common.bash"
wikitext_pipeline "${OUT_DIR:-data/wiki103-cased-untokenized}"
