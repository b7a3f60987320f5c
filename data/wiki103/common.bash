# Shared by get_data_cased.bash and get_data_cased_untokenized.bash: the release's files from the Hub or WIKITEXT_ZIP.
# Usage: wikitext_pipeline OUT_DIR
set -euo pipefail

wikitext_pipeline() {
  local args=(--out-dir "$1")
  if [ -n "${WIKITEXT_ZIP:-}" ]; then args+=(--zip "$WIKITEXT_ZIP"); fi
  if [ -n "${WIKITEXT_REVISION:-}" ]; then args+=(--revision "$WIKITEXT_REVISION"); fi
  python -m reuse.wikitext "${args[@]}"
}
