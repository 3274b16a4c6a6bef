#!/bin/bash
# The §2.6 evidence sweep of bench/mixer_grey.py in priority order, two runs side by side (resumable: finished
# runs are skipped): first the seeds whose authors' Mixer ended grey in bench/results/accuracy_runs.jsonl, then
# the default preset, then more seeds of every preset. Usage: bash bench/mixer_grey_sweep.sh VARIANT [data dir]
set -e
V=${1:?variant}; D=${2:-data/cluttered_mnist_1k}
python bench/mixer_grey.py --data-dir "$D" --variants "$V" --jobs 2 --runs \
  lean:0 lean:2 lowres:1 every2:1 quarter:0 half:2 paper:0 paper:1 paper:2 lean:1 lowres:0 lowres:2 \
  quarter:1 quarter:2 half:0 half:1 every2:0 every2:2 paper:3 paper:4 \
  lean:3 lean:4 lowres:3 lowres:4 quarter:3 quarter:4 half:3 half:4 every2:3 every2:4 \
  paper:5 paper:6 paper:7 paper:8 paper:9 fast:0 fast:1 fast:2 fast:3 fast:4
