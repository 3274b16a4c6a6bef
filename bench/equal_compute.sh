#!/bin/bash
# Issue 29's baseline runs on the embedded benchmark (configs/embedded_bench.yaml, the 1,000-image build), two runs
# side by side, resumable (bench/accuracy.py skips what accuracy_runs.jsonl already has): the fair control of the
# clean term again (its earlier rows are void, docs/benchmarks.md), timm Mixup at α 0.2 at the budget, then every
# baseline at 1.25/1.5/2/3.2x the budget's epochs, 3 seeds each, so every SAMix row has a baseline that got at least
# its compute, cheapest first: SAMix^P costs 1.38x (its Mixer's extractor is the classifier's own architecture) and
# 1.64x (the shipped resnet18 Mixer), the online presets 2.0-3.6x (bench/results/speed_bench_1k*.md).
# Usage: bash bench/equal_compute.sh [data dir]
set -e
D=${1:-data/cluttered_mnist_1k}
python bench/accuracy.py --data-dir "$D" --seeds 0 1 2 --jobs 2 --methods mixup_clean mixup_a0.2
for f in 1.25 1.5 2 3.2; do
  python bench/accuracy.py --data-dir "$D" --seeds 0 1 2 --jobs 2 --methods "mixup_a1_x$f" "vanilla_x$f" "mixup_a0.2_x$f"
done
