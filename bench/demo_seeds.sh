#!/bin/bash
# How often does the demo's Mixer end healthy? `make demo`'s recipe (configs/embedded_quickstart.yaml,
# --mixup samix) once per seed, two runs side by side at one torch thread each (deterministic per seed on one
# machine), then one line per seed: validation top-1 and the final Mixer-health line.
# Usage: bash bench/demo_seeds.sh DATA_DIR OUT_DIR [SEED ...]   (default seeds 42 0 1 2 3 4 5; 42 is timm's default)
set -euo pipefail
data=$1; out=$2; shift 2; seeds=${*:-42 0 1 2 3 4 5}
repo=$(cd "$(dirname "$0")/.." && pwd); mkdir -p "$out"
run() {
  OMP_NUM_THREADS=1 python "$repo/train.py" --config "$repo/configs/embedded_quickstart.yaml" --data-dir "$data" \
    --mixup samix --seed "$1" --output "$out/runs" --experiment "seed$1" > "$out/seed$1.log" 2>&1
}
list=($seeds)
for ((i = 0; i < ${#list[@]}; i += 2)); do  # two at a time
  run "${list[i]}" & pids=($!)
  if ((i + 1 < ${#list[@]})); then run "${list[i + 1]}" & pids+=($!); fi
  wait "${pids[@]}" || true  # a failed run shows as "no result" below
done
for s in $seeds; do
  echo "seed $s: $(grep -o 'validation top-1 [0-9.]*%' "$out/seed$s.log" || echo 'no result (see the log)');" \
       "$(grep -o 'Mixer health: .*' "$out/seed$s.log" || true)" | tee -a "$out/result.txt"
done
