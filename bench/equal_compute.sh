#!/bin/bash
# Issue 29's baseline runs on the embedded benchmark (configs/embedded_bench.yaml, the 1,000-image build), two runs
# side by side, resumable (bench/accuracy.py skips what accuracy_runs.jsonl already has): the fair control of the
# clean term again (its earlier rows are void, docs/benchmarks.md), timm Mixup at α 0.2 at the budget, then every
# baseline at 1.25/1.5/2/3.2x the budget's epochs, 3 seeds each, so every SAMix row has a baseline that got at least
# its compute: 1.25x first (SAMix^P), then 3.2x (the online presets, 2.2-3.2x), 2x (quarter), 1.5x.
# Usage: bash bench/equal_compute.sh [data dir]
set -e
D=${1:-data/cluttered_mnist_1k}
python bench/accuracy.py --data-dir "$D" --seeds 0 1 2 --jobs 2 --methods mixup_clean mixup_a0.2
for f in 1.25 3.2 2 1.5; do
  python bench/accuracy.py --data-dir "$D" --seeds 0 1 2 --jobs 2 --methods "mixup_a1_x$f" "vanilla_x$f" "mixup_a0.2_x$f"
done
