#!/bin/bash
# Do the bench recipe's cost settings change what MoCo v2 learns? kNN top-1 after 20 of its 80 epochs (seed 0) with
# configs/ssl/embedded_bench.yaml as it is and with one of view_aug / channels_last switched; each run is stopped
# after its epoch-19 kNN monitor. Usage: bash bench/ssl_cost_ab.sh DATA_DIR OUT_DIR  (one torch thread per run)
set -euo pipefail
data=$1; out=$2; repo=$(cd "$(dirname "$0")/.." && pwd); mkdir -p "$out"
cfg=$repo/configs/ssl/embedded_bench.yaml
cp "$cfg" "$out/as_is.yaml"
sed 's/^channels_last: true/channels_last: false/' "$cfg" > "$out/no_channels_last.yaml"
sed 's/^view_aug: device/view_aug: loader/' "$cfg" > "$out/loader_views.yaml"
for name in as_is no_channels_last loader_views; do
  OMP_NUM_THREADS=1 python "$repo/train_ssl.py" --config "$out/$name.yaml" --data-dir "$data" --seed 0 \
    --output "$out/runs" --experiment "$name" > "$out/$name.log" 2>&1 &
  pid=$!
  while kill -0 $pid 2>/dev/null && ! grep -q 'epoch 19: kNN' "$out/$name.log"; do sleep 10; done
  kill $pid 2>/dev/null || true
  echo "$name: $(grep -o 'epoch 19: kNN.*' "$out/$name.log" || echo 'no epoch-19 monitor (see the log)')" | tee -a "$out/result.txt"
done
