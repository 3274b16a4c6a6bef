#!/usr/bin/env python3
""" Per-epoch validation curves of benchmark runs: kept as rows, summarised over epoch windows.

bench/accuracy.py keeps one number per run (the test top-1 at its end); where a verdict needs the shape of training
(does a method peak early, still climb, fall), this keeps each finished run's val top-1 and EMA top-1 per epoch from
its `summary.csv`, so the figures come from committed rows rather than from run folders that are not kept.

    python bench/val_curves.py --collect output/photo_objects_stamp_test --out bench/results/photo_val_curves.jsonl
    python bench/val_curves.py --out bench/results/photo_val_curves.jsonl --window 56 65 --window -10 0
"""
import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import dataset_id  # noqa: E402


def read_run(folder: Path) -> Optional[Dict]:
    """One finished run folder (`<method>-s<seed>` with args.yaml and a summary.csv of all its epochs) as a row;
    None for a run that has not finished (fewer epochs in summary.csv than args.yaml asks)."""
    summary, args_file = folder / 'summary.csv', folder / 'args.yaml'
    if not (summary.exists() and args_file.exists()):
        return None
    args = yaml.safe_load(args_file.read_text())
    with summary.open() as f:
        rows = list(csv.DictReader(f))
    if len(rows) < int(args['epochs']):
        return None
    method, _, seed = folder.name.rpartition('-s')
    ema = 'eval_ema_top1' in rows[0]
    return dict(method=method, seed=int(seed), data=dataset_id(args['data_dir']), epochs=len(rows),
                top1=[round(float(r['eval_top1']), 2) for r in rows],
                ema_top1=[round(float(r['eval_ema_top1']), 2) for r in rows] if ema else None)


def collect(runs: Path, out: Path) -> int:
    """Append the rows of the finished runs under `runs` that `out` does not hold yet; return how many."""
    have = {(r['method'], r['seed'], r['data']) for r in load(out)}
    new = [row for row in (read_run(f) for f in sorted(runs.iterdir()) if f.is_dir())
           if row is not None and (row['method'], row['seed'], row['data']) not in have]
    with out.open('a') as f:
        f.writelines(json.dumps(r) + '\n' for r in new)
    return len(new)


def load(out: Path) -> List[Dict]:
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.exists() else []


def window_mean(curve: Sequence[float], first: int, last: int) -> float:
    """Mean over epochs first..last, 1-based and inclusive; first < 1 counts from the end (-10 0: the last 10)."""
    n = len(curve)
    lo, hi = (n + first, n + last) if first < 0 else (first - 1, last)
    if not 0 <= lo < hi <= n:
        raise SystemExit(f'--window {first} {last}: outside the {n} epochs of a run (1-based, or -K 0 for the last K)')
    return float(np.mean(curve[lo:hi]))


def report(rows: List[Dict], windows: List[Tuple[int, int]], key: str) -> str:
    """A markdown table: each run's mean `key` over each window, then each method's mean over its seeds."""
    head = [f'epochs {a}–{b}' if a > 0 else f'last {-a}' for a, b in windows]
    lines = [f'| method | seed | epochs | {" | ".join(head)} |', '|---|---|---|' + '---|' * len(windows)]
    by: Dict[str, List[List[float]]] = {}
    for r in sorted(rows, key=lambda r: (r['method'], r['seed'])):
        if r[key] is None:
            continue
        means = [window_mean(r[key], a, b) for a, b in windows]
        by.setdefault(r['method'], []).append(means)
        lines.append(f'| {r["method"]} | {r["seed"]} | {r["epochs"]} | {" | ".join(f"{m:.1f}" for m in means)} |')
    for method, runs in by.items():
        lines.append(f'| {method} | mean of {len(runs)} | | '
                     f'{" | ".join(f"{m:.1f}" for m in np.mean(runs, axis=0))} |')
    return '\n'.join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument('--out', type=Path, required=True, help='the rows file (jsonl)')
    p.add_argument('--collect', type=Path, default=None, help='run folders to add to --out (finished runs only)')
    p.add_argument('--window', type=int, nargs=2, action='append', metavar=('FIRST', 'LAST'), default=None,
                   help='epochs to average, 1-based inclusive; -K 0 = the last K (repeatable)')
    p.add_argument('--key', choices=('top1', 'ema_top1'), default='ema_top1')
    p.add_argument('--methods', nargs='*', default=None)
    p.add_argument('--data', default=None, help='only rows of this data build (the `data` field)')
    args = p.parse_args()
    if args.collect is not None:
        if not args.collect.is_dir():
            raise SystemExit(f'--collect {args.collect}: no such folder (the --output of bench/accuracy.py)')
        print(f'{collect(args.collect, args.out)} runs added to {args.out}')
    if args.window:
        rows = [r for r in load(args.out) if (args.methods is None or r['method'] in args.methods)
                and (args.data is None or r['data'] == args.data)]
        print(report(rows, [tuple(w) for w in args.window], args.key))


if __name__ == '__main__':
    main()
