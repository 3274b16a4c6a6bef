#!/bin/bash
# The §2.6 evidence sweep of bench/mixer_grey.py, two runs side by side (resumable: finished runs are skipped):
# the default preset at 10 seeds first, then every economy preset seed by seed (5 seeds each).
# Usage: bash bench/mixer_grey_sweep.sh VARIANT [data dir]   (all_qk_image_area = the default Mixer, reference = the authors')
set -e
V=${1:?variant}; D=${2:-data/cluttered_mnist_1k}
runs="paper:0 paper:1 paper:2 paper:3 paper:4 paper:5 paper:6 paper:7 paper:8 paper:9"
for s in 0 1 2 3 4; do for p in every2 half lowres lean quarter fast; do runs="$runs $p:$s"; done; done
python bench/mixer_grey.py --data-dir "$D" --variants "$V" --jobs 2 --runs $runs
