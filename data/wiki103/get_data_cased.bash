#!/usr/bin/env bash
# WikiText-103 (Merity et al. 2016), raw release, cased: wiki.{train,valid,test}.raw byte for byte as in
# wikitext-103-raw-v1.zip, the corpus the paper trained on. Input for WordPiece (BERT): the release's text is already
# whitespace-tokenized, so unlike data/wiki/get_data_cased.bash nothing is normalised.
# Source: the Hugging Face Hub dataset Salesforce/wikitext (config wikitext-103-raw-v1) through huggingface_hub's cache,
# or a local copy of the release archive with WIKITEXT_ZIP (it was published at
# https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-raw-v1.zip).
# Usage: bash data/wiki103/get_data_cased.bash   env: OUT_DIR (default data/wiki103-cased), WIKITEXT_ZIP,
#   WIKITEXT_REVISION (Hub revision; default the pinned parquet conversion), HF_HOME / HF_HUB_CACHE / HF_HUB_OFFLINE
set -euo pipefail
source "$(dirname "$0")/common.bash"
wikitext_pipeline "${OUT_DIR:-data/wiki103-cased}"
