#!/bin/bash
# The §2.6 evidence sweep of bench/mixer_grey.py in priority order (resumable: finished runs are skipped):
# first the seeds whose reference Mixer ended grey in bench/results/accuracy_runs.jsonl, then the default preset,
# then more seeds. Usage: bash bench/mixer_grey_sweep.sh VARIANT [data dir]
set -e
V=${1:?variant}; D=${2:-data/cluttered_mnist_1k}
run() { python bench/mixer_grey.py --data-dir "$D" --variants "$V" --jobs 2 "$@"; }
run --presets lean --seeds 0 2
run --presets lowres every2 --seeds 1
run --presets quarter --seeds 0
run --presets half --seeds 2
run --presets paper --seeds 0 1 2
run --presets lean lowres quarter half every2 --seeds 0 1 2
run --presets paper --seeds 3 4 5
run --presets lean lowres quarter half every2 --seeds 3 4
run --presets paper --seeds 6 7 8 9
run --presets fast --seeds 0 1 2 3 4
