#!/usr/bin/env bash
# The GLUE tasks, in the layout reuse.finetune reads: DIR/{CoLA,SST-2,MRPC,STS-B,QQP,MNLI,QNLI,RTE,WNLI}/train.tsv and
# dev.tsv (MNLI: dev_matched.tsv and dev_mismatched.tsv), from the archives the GLUE organisers publish. MRPC comes
# as Microsoft's original training file; its dev split is the published list of dev pair ids, cut out of it here.
# Needs curl and unzip, and a network. Each task folder appears under its final name only when complete; tasks
# already there are skipped.
# Usage: bash data/glue/get_glue.bash [TASK...]    (folder names; default: all nine)    env: OUT_DIR (default data/glue)
set -euo pipefail
out=${OUT_DIR:-$(dirname "$0")}
glue=https://dl.fbaipublicfiles.com/glue/data
senteval=https://dl.fbaipublicfiles.com/senteval/senteval_data
declare -A archive=([CoLA]=CoLA.zip [SST-2]=SST-2.zip [STS-B]=STS-B.zip [QQP]=QQP-clean.zip [MNLI]=MNLI.zip
                    [QNLI]=QNLIv2.zip [RTE]=RTE.zip [WNLI]=WNLI.zip)
if [ $# -gt 0 ]; then tasks=("$@"); else tasks=(CoLA SST-2 MRPC STS-B QQP MNLI QNLI RTE WNLI); fi
for task in "${tasks[@]}"; do
  if [ "$task" != MRPC ] && [ -z "${archive[$task]+x}" ]; then
    echo "error: unknown GLUE task folder $task; use CoLA SST-2 MRPC STS-B QQP MNLI QNLI RTE WNLI" >&2
    exit 2
  fi
done
mkdir -p "$out"
tmp=$(mktemp -d "$out/.download-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for task in "${tasks[@]}"; do
  if [ -s "$out/$task/train.tsv" ]; then
    echo "$task: already in $out/$task"
    continue
  fi
  echo "$task: downloading"
  if [ "$task" = MRPC ]; then
    curl -fsSL -o "$tmp/msr_paraphrase_train.txt" "$senteval/msr_paraphrase_train.txt"
    curl -fsSL -o "$tmp/mrpc_dev_ids.tsv" "$glue/mrpc_dev_ids.tsv"
    mkdir -p "$tmp/MRPC"
    # The first file lists "#1 ID<tab>#2 ID" of the dev pairs; the training file's header goes to both outputs.
    awk -F'\t' -v train="$tmp/MRPC/train.tsv" -v dev="$tmp/MRPC/dev.tsv" '
      { sub(/\r$/, "") }
      NR == FNR { dev_ids[$1 "\t" $2] = 1; next }
      FNR == 1 { print > train; print > dev; next }
      ($2 "\t" $3) in dev_ids { print > dev; next }
      { print > train }' "$tmp/mrpc_dev_ids.tsv" "$tmp/msr_paraphrase_train.txt"
  else
    curl -fsSL -o "$tmp/$task.zip" "$glue/${archive[$task]}"
    unzip -q -o "$tmp/$task.zip" -d "$tmp"  # every archive holds one folder named like the task
  fi
  rm -rf "$out/$task"
  mv "$tmp/$task" "$out/$task"
done
echo "GLUE in $out"
