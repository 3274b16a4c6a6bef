#!/usr/bin/env python3
""" Accuracy of each mixing method on the embedded cluttered-MNIST dataset: a resumable sweep.

Each (method, seed) is one `train.py` run with the same recipe; a finished run appends one JSON
line to `<results>/accuracy_runs.jsonl`, and a later invocation skips what is already there, so
a sweep that takes hours can be stopped and resumed (also in another session). `--table` prints
mean ± std top-1 (online and EMA), wall time per method and writes a PNG of accuracy vs cost.

    nohup python bench/accuracy.py --data-dir data/cluttered_mnist --seeds 0 1 2 > bench/results/accuracy.log &
    python bench/accuracy.py --table
"""
import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# the recipe every method shares (see --help of train.py); chosen so that mixing can pay off:
# resnet18 at 64 px for 30 epochs, where benchmark-notes.md measured Mixup above no mixing
BASE = ['--config', str(REPO / 'configs' / 'embedded_resnet18_samix.yaml'), '--mixup', 'none', '--epochs', '30',
        '--model-ema', '--model-ema-decay', '0.998', '--samix-vis-interval', '0', '--checkpoint-hist', '1']

METHODS: Dict[str, List[str]] = {
    'vanilla': [],
    'mixup_a1': ['--mixup', '1.0'],
    'mixup_a0.2': ['--mixup', '0.2'],
    'cutmix_a1': ['--cutmix', '1.0'],
    'cutmix_a0.2': ['--cutmix', '0.2'],
    'automix': ['--mixup', 'samix', '--samix-mixer', 'automix', '--samix-mixer-loss', 'mce'],
    'samix': ['--mixup', 'samix'],
    'samix_every2_frac0.5': ['--mixup', 'samix', '--samix-mixer-every', '2', '--samix-mixer-batch-frac', '0.5'],
    'samix_p': ['--mixup', 'samix', '--samix-pretrained', 'samix_r18_cluttered_mnist'],
}


def _done(results: Path) -> List[Dict]:
    path = results / 'accuracy_runs.jsonl'
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def run_one(method: str, seed: int, args) -> Dict:
    out = Path(args.output)
    exp = f'{method}-s{seed}'
    cmd = [sys.executable, str(REPO / 'train.py'), *BASE, *METHODS[method], '--seed', str(seed),
           '--data-dir', args.data_dir, '--output', str(out), '--experiment', exp, '--workers', str(args.workers),
           '--epochs', str(args.epochs)]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f'{exp} failed:\n{proc.stderr[-3000:]}')
    run_dir = max(out.glob(f'{exp}*'), key=lambda p: p.stat().st_mtime)
    with open(run_dir / 'summary.csv') as f:
        last = list(csv.DictReader(f))[-1]
    return dict(method=method, seed=seed, epochs=args.epochs, top1=float(last['eval_top1']),
                ema_top1=float(last.get('eval_ema_top1', 'nan')), wall_s=time.time() - start, run_dir=str(run_dir))


def table(results: Path) -> str:
    rows = _done(results)
    by = {}
    for r in rows:
        by.setdefault(r['method'], []).append(r)
    lines = ['| method | runs | top-1 (mean ± std) | EMA top-1 | wall time / run (min) | × Mixup α=1 time |',
             '|---|---|---|---|---|---|']
    base = np.mean([r['wall_s'] for r in by.get('mixup_a1', [])]) if 'mixup_a1' in by else None
    stats = {}
    for m in METHODS:
        if m not in by:
            continue
        t1, ema, wall = (np.array([r[k] for r in by[m]]) for k in ('top1', 'ema_top1', 'wall_s'))
        stats[m] = (t1.mean(), wall.mean() / base if base else np.nan)
        lines.append(f'| {m} | {len(t1)} | {t1.mean():.2f} ± {t1.std():.2f} | {ema.mean():.2f} ± {ema.std():.2f} | '
                     f'{wall.mean() / 60:.1f} | {stats[m][1]:.2f} |')
    if stats and base:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        for m, (acc, cost) in stats.items():
            ax.scatter(cost, acc)
            ax.annotate(m, (cost, acc), fontsize=8)
        ax.set_xlabel('wall time relative to timm Mixup (α=1)')
        ax.set_ylabel('top-1 (%)')
        fig.tight_layout()
        fig.savefig(results / 'accuracy_vs_cost.png', dpi=120)
    return '\n'.join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data-dir', default='data/cluttered_mnist')
    p.add_argument('--methods', nargs='+', default=list(METHODS), choices=list(METHODS))
    p.add_argument('--seeds', nargs='+', type=int, default=[0])
    p.add_argument('--epochs', type=int, default=30)
    p.add_argument('--workers', type=int, default=1)
    p.add_argument('--output', default='output/bench_accuracy')
    p.add_argument('--results', default=str(REPO / 'bench' / 'results'))
    p.add_argument('--table', action='store_true', help='only print the table of finished runs')
    args = p.parse_args()
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    if not args.table:
        done = {(r['method'], r['seed'], r['epochs']) for r in _done(results)}
        for seed in args.seeds:
            for method in args.methods:
                if (method, seed, args.epochs) in done:
                    continue
                record = run_one(method, seed, args)
                with open(results / 'accuracy_runs.jsonl', 'a') as f:
                    f.write(json.dumps(record) + '\n')
                print(json.dumps(record), flush=True)
    text = table(results)
    (results / 'accuracy.md').write_text(text + '\n')
    print(text)


if __name__ == '__main__':
    main()
