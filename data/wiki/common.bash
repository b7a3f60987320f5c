# Shared by get_data_cased.bash and get_data_cased_untokenized.bash: fetch (or take) a dump, extract, segment, split.
# Usage: wiki_pipeline LANG OUT_DIR [--raw]
set -euo pipefail

wiki_pipeline() {
  local lang=$1 out_dir=$2; shift 2
  local dump=${WIKI_DUMP:-}
  mkdir -p "$out_dir"
  if [ -z "$dump" ]; then
    dump="$out_dir/${lang}wiki-latest-pages-articles.xml.bz2"
    # wget -c resumes a partial download instead of starting over.
    wget -c "https://dumps.wikimedia.org/${lang}wiki/latest/${lang}wiki-latest-pages-articles.xml.bz2" -O "$dump"
  fi
  if [ ! -r "$dump" ]; then
    echo "error: dump $dump is missing or unreadable; set WIKI_DUMP to a LANGwiki-...-pages-articles.xml.bz2" >&2
    exit 1
  fi
  # pipefail off in this subshell: once head has its bytes, bzcat dies of SIGPIPE on any dump larger than a pipe
  # buffer (every real one), and only grep's verdict counts.
  if ! (set +o pipefail; bzcat "$dump" 2>/dev/null | head -c 4096 | grep -q "<mediawiki"); then
    echo "error: $dump is not a bzip2-compressed MediaWiki XML dump (no <mediawiki> element at its start)" >&2
    exit 1
  fi
  # Global, not local: the EXIT trap runs after this function has returned.
  WIKI_EXTRACTED=$(mktemp -d "$out_dir/.extracted.XXXXXX")
  trap 'rm -rf "$WIKI_EXTRACTED"' EXIT
  python -m wikiextractor.WikiExtractor "$dump" -o "$WIKI_EXTRACTED" --json --no-templates -q \
    --processes "$(nproc)"
  python -m reuse.corpus wiki "$WIKI_EXTRACTED" --lang "$lang" --out-dir "$out_dir" \
    --valid-lines "${VALID_LINES:-5000}" --test-lines "${TEST_LINES:-5000}" "$@"
}
