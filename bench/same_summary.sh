#!/bin/bash
# Does a change keep the fixed-seed demo identical? The demo's recipe (configs/embedded_quickstart.yaml,
# --mixup samix, seed 42, one torch thread) for a few epochs at two commits, each from its own worktree, then
# `cmp` of the two summary.csv files (issue 43's "done when": the fixed-seed demo's summary.csv is unchanged).
# Usage (in the environment `make test` made, or PYTHON=.venv/bin/python):
#   bash bench/same_summary.sh DATA_DIR BEFORE AFTER [EPOCHS] [EXTRA train.py FLAGS ...]
#   PYTHON=.venv/bin/python bash bench/same_summary.sh data/cluttered_mnist e2c6428 HEAD 3
set -euo pipefail
data=$(realpath "$1"); before=$2; after=$3; epochs=${4:-3}; shift $(( $# < 4 ? $# : 4 ))
repo=$(cd "$(dirname "$0")/.." && pwd); out=$(mktemp -d)
python=${PYTHON:-$(command -v python)}; python="$(cd "$(dirname "$python")" && pwd)/$(basename "$python")"  # a venv's link kept
trap 'for s in before after; do git -C "$repo" worktree remove --force "$out/$s-src" 2>/dev/null || true; done' EXIT
for side in before after; do
  rev=${!side}
  git -C "$repo" worktree add --detach "$out/$side-src" "$rev" -q
  (cd "$out/$side-src" && OMP_NUM_THREADS=1 PYTHONPATH="$out/$side-src" "$python" train.py \
     --config configs/embedded_quickstart.yaml --data-dir "$data" --mixup samix --epochs "$epochs" "$@" \
     --output "$out/runs" --experiment "$side" > "$out/$side.log" 2>&1) || { echo "$side ($rev) failed: $out/$side.log"; exit 1; }
done
if cmp -s "$out/runs/before/summary.csv" "$out/runs/after/summary.csv"; then
  echo "identical: summary.csv of $before and $after ($epochs epochs; runs in $out/runs)"
else
  echo "DIFFERENT: diff $out/runs/before/summary.csv $out/runs/after/summary.csv"; exit 1
fi
