# Shared by run_bert.bash and run_roberta.bash. Usage: run_mlm FAMILY GPUS NAME [extra reuse.train arguments]
set -euo pipefail

run_mlm() {
  local family=$1 gpus=${2:?usage: GPUS NAME [args], GPUS like 0,1,2,3 or cpu} name=${3:?usage: GPUS NAME [args]}
  shift 3
  local data=${DATA_DIR:-data/wiki-cased} tokenizer
  tokenizer=${TOKENIZER:-$([ "$family" = bert ] && echo bert-base-uncased || echo roberta-bpe)}
  [ "$family" = roberta ] && data=${DATA_DIR:-data/wiki-cased-untokenized}
  local out=snap/$name
  mkdir -p "$out"
  local args=(--config "${MODEL_CONFIG:-configs/$family-12L-64H.json}"
              --train-data "$data/en.train.raw.$tokenizer.hdf5" --valid-data "$data/en.valid.raw.$tokenizer.hdf5"
              --output-dir "$out" "$@")
  local launcher
  if [ "$gpus" = cpu ]; then
    local nproc=${NPROC_CPU:-1}
    if [ "$nproc" -gt 1 ]; then
      launcher=(torchrun --standalone --nproc_per_node "$nproc" -m reuse.train --device cpu)
    else
      launcher=(python -m reuse.train --device cpu)
    fi
  else
    export CUDA_VISIBLE_DEVICES=$gpus
    local n
    n=$(awk -F, '{print NF}' <<<"$gpus")
    if [ "$n" -gt 1 ]; then
      launcher=(torchrun --standalone --nproc_per_node "$n" -m reuse.train)
    else
      launcher=(python -m reuse.train)
    fi
  fi
  echo "${launcher[*]} ${args[*]}" >"$out/launch.sh"
  "${launcher[@]}" "${args[@]}" 2>&1 | tee -a "$out/log.txt"
}
