#!/usr/bin/env python3
""" Self-supervised SAMix on the embedded cluttered-MNIST dataset: MoCo v2 vs + Mixup / + CutMix vs SAMix-I vs SAMix-C.

Every (mode, seed) is one train_ssl.py run of configs/ssl/embedded_bench.yaml (same epochs for all
modes; the budget is explained there) followed by the kNN and linear probes of its backbone
(python -m samix_timm.ssl.probe). A finished run appends one JSON line to
``<results>/ssl_runs.jsonl``; a later invocation skips what is there and continues an interrupted run from
its last checkpoint, so the sweep is resumable.
The table (mean ± std over seeds) is printed and written to ``<results>/ssl.md``.

    nohup python bench/ssl_probes.py --data-dir data/cluttered_mnist --seeds 0 1 2 > bench/results/ssl.log 2>&1 &
    python bench/ssl_probes.py --table

(Named ssl_probes.py, not ssl.py: a bench/ssl.py would shadow the standard-library `ssl` for every
script in bench/, since torch imports asyncio.)
"""
import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / 'configs' / 'ssl' / 'embedded_bench.yaml'
MODES = {'mocov2': 'none', 'mocov2+mixup': 'mixup', 'mocov2+cutmix': 'cutmix', 'samix_i': 'samix_i', 'samix_c': 'samix_c'}


def _machine() -> str:
    import torch
    return f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, CPU'


def _done(runs_file: Path) -> List[Dict]:
    if not runs_file.exists():
        return []
    return [json.loads(line) for line in runs_file.read_text().splitlines() if line.strip()]


def _checkpoint_epoch(path: Path) -> int:
    """The last finished epoch of a train_ssl.py checkpoint; -1 when there is none."""
    import torch
    return torch.load(path, map_location='cpu', weights_only=False)['epoch'] if path.exists() else -1


def _train_seconds(run_dir: Path) -> float:
    """Training wall time of a run: its folder's args.yaml to its last checkpoint, plus the same for each earlier
    part it was resumed from (the ``resume`` of its args.yaml)."""
    import yaml
    seconds = (run_dir / 'last.pth.tar').stat().st_mtime - (run_dir / 'args.yaml').stat().st_mtime
    resume = yaml.safe_load((run_dir / 'args.yaml').read_text()).get('resume')
    return seconds + (_train_seconds(Path(resume).parent) if resume else 0.0)


def run_one(name: str, seed: int, args, out_root: Path) -> Dict:
    """train_ssl.py then the probes, each in a one-thread subprocess; returns the result row. An interrupted run
    is continued from its last checkpoint (``--resume`` reproduces the uninterrupted run), its folder kept."""
    import yaml
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    experiment = f'{name}-seed{seed}'
    run_dir = out_root / experiment
    cmd = [sys.executable, str(REPO / 'train_ssl.py'), '--config', str(CONFIG), '--data-dir', args.data_dir,
           '--ssl-mix', MODES[name], '--seed', str(seed), '--output', str(out_root), '--experiment', experiment]
    if args.epochs:
        cmd += ['--epochs', str(args.epochs)]
    probe_file = run_dir / 'probe.json'
    if run_dir.exists() and not probe_file.exists():
        last_epoch = _checkpoint_epoch(run_dir / 'last.pth.tar')
        if last_epoch < (args.epochs or yaml.safe_load(CONFIG.read_text())['epochs']) - 1:
            # interrupted in training: move it aside and continue it
            part = run_dir.rename(out_root / f'{experiment}-part-{int(time.time())}')
            if last_epoch >= 0:
                cmd += ['--resume', str(part / 'last.pth.tar')]
                print(f'{experiment}: continuing {part} after epoch {last_epoch}', flush=True)
    if not run_dir.exists():
        subprocess.run(cmd, env=env, check=True, cwd=REPO)
    if not probe_file.exists():
        subprocess.run([sys.executable, '-m', 'samix_timm.ssl.probe', '--checkpoint', str(run_dir / 'last.pth.tar'),
                        '--data-dir', args.data_dir, '--linear-epochs', str(args.linear_epochs),
                        '--results-file', str(probe_file)], env=env, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    probe = json.loads(probe_file.read_text())
    return dict(method=name, ssl_mix=MODES[name], seed=seed, knn_top1=probe['knn_top1'],
                linear_top1=probe['linear_top1'], train_s=round(_train_seconds(run_dir), 1),
                epochs=args.epochs or 'config', machine=_machine(), threads=args.threads)


def _steps_per_run(data_dir: str) -> int:
    """Training steps of one bench run: epochs x full batches of the training split."""
    import yaml
    cfg = yaml.safe_load(CONFIG.read_text())
    images = sum(1 for f in (Path(data_dir) / 'train').rglob('*') if f.is_file())
    return cfg['epochs'] * (images // cfg['batch_size'])


def time_steps(args, out_root: Path) -> Dict[str, float]:
    """Seconds per training step of every method, from one invocation running them one after another
    (1 epoch each at the recipe's settings, one torch thread): the controlled timing of the table."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    per_step = {}
    for name in args.methods:
        cmd = [sys.executable, str(REPO / 'train_ssl.py'), '--config', str(CONFIG), '--data-dir', args.data_dir,
               '--ssl-mix', MODES[name], '--epochs', '1', '--knn-interval', '0', '--output', str(out_root),
               '--experiment', f'time-{name}-{int(time.time())}', *shlex.split(args.train_args)]
        log = subprocess.run(cmd, env=env, check=True, cwd=REPO, capture_output=True, text=True)
        steps = [float(m) for m in re.findall(r'([0-9.]+)s/step', log.stdout + log.stderr)]
        per_step[name] = steps[-1]  # the epoch's mean (the log line of its last step)
        print(f'{name}: {per_step[name]:.3f} s/step', flush=True)
    return per_step


def table(rows: List[Dict], timing: Optional[Dict] = None) -> str:
    """Mean ± std over seeds per method; the time columns: s/step and s/step x steps of the controlled
    timing (``--time``), and the mean wall time of the sweep's own runs (which ran two side by side)."""
    lines = ['| method | `--ssl-mix` | seeds | kNN top-1 (%) | linear top-1 (%) | s/step (alone) | '
             'train time / run (alone) | wall time / run in the sweep |',
             '|---|---|---|---|---|---|---|---|']
    for name, mode in MODES.items():
        done = [r for r in rows if r['method'] == name]
        if not done:
            continue

        def stat(key):
            v = np.array([r[key] for r in done], dtype=float)
            return f'{v.mean():.2f} ± {v.std():.2f}' if len(v) > 1 else f'{v[0]:.2f}'
        step = (timing or {}).get('s_per_step', {}).get(name)
        alone = (f'{step:.3f}', f'{step * timing["steps_per_run"] / 60:.1f} min') if step else ('—', '—')
        minutes = np.mean([r['train_s'] for r in done]) / 60
        lines.append(f'| {name} | {mode} | {len(done)} | {stat("knn_top1")} | {stat("linear_top1")} | '
                     f'{alone[0]} | {alone[1]} | {minutes:.1f} min |')
    return '\n'.join(lines)


def pixel_knn(data_dir: str, img_size: int = 32) -> float:
    """kNN top-1 of the raw pixels (the probe's k and weighting, eval transform of the recipe): what a
    backbone must beat to have learned anything beyond the image itself."""
    import torch
    from timm.data import create_dataset
    from torch.utils.data import DataLoader

    from samix_timm.ssl.data import eval_transform
    from samix_timm.ssl.probe import knn_probe
    transform = eval_transform(img_size, (0.1,) * 3, (0.25,) * 3, 1.0)

    def pixels(split):
        ds = create_dataset('', root=data_dir, split=split, is_training=False, transform=transform)
        xs, ys = zip(*[(x[:, 0].flatten(1), y) for x, y in DataLoader(ds, batch_size=500)])
        return torch.cat(xs), torch.cat(ys)

    return knn_probe(*pixels('train'), *pixels('validation'))


def random_net(data_dir: str, img_size: int, seed: int, linear_epochs: int) -> Dict[str, float]:
    """kNN and linear top-1 of a randomly initialised backbone of the recipe (torch seed `seed`): the floor
    a trained one must clear by far."""
    import timm
    import torch

    from samix_timm.ssl.probe import probe_backbone
    torch.manual_seed(seed)
    return probe_backbone(timm.create_model('test_resnet', num_classes=0), data_dir, img_size, (0.1,) * 3,
                          (0.25,) * 3, crop_pct=1.0, linear_epochs=linear_epochs)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument('--data-dir', default=str(REPO / 'data' / 'cluttered_mnist'))
    p.add_argument('--seeds', type=int, nargs='+', default=[0])
    p.add_argument('--methods', nargs='+', default=list(MODES), choices=list(MODES))
    p.add_argument('--epochs', type=int, default=None, help='override the config epochs (same for all methods)')
    p.add_argument('--linear-epochs', type=int, default=100, help='linear-probe epochs (§6: 100)')
    p.add_argument('--threads', type=int, default=1, help='torch threads per run')
    p.add_argument('--results', default=str(REPO / 'bench' / 'results'))
    p.add_argument('--table', action='store_true', help='only print the table of finished runs')
    p.add_argument('--pixel-knn', action='store_true', help='only print the kNN top-1 of the raw pixels')
    p.add_argument('--pixel-size', type=int, default=32, help='image size of --pixel-knn and --random-net')
    p.add_argument('--random-net', action='store_true', help='only print the probes of random test_resnets (--seeds)')
    p.add_argument('--train-args', default='', help='extra train_ssl.py arguments of the --time runs, e.g. '
                   '"--view-aug loader" (with --results elsewhere)')
    p.add_argument('--time', action='store_true', help='only time one epoch of each --methods, one after another '
                   '(run it alone on the machine); writes <results>/ssl_step_time.json')
    args = p.parse_args()
    if args.pixel_knn:
        print(f'raw-pixel kNN top-1 at {args.pixel_size} px: {pixel_knn(args.data_dir, args.pixel_size):.2f}%')
        return 0
    if args.random_net:
        for seed in args.seeds:
            print(f'random test_resnet, seed {seed}, {args.pixel_size} px: '
                  f'{random_net(args.data_dir, args.pixel_size, seed, args.linear_epochs)}', flush=True)
        return 0
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    if args.time:
        per_step = time_steps(args, results / 'ssl_runs')
        (results / 'ssl_step_time.json').write_text(json.dumps(dict(
            s_per_step=per_step, steps_per_run=_steps_per_run(args.data_dir), machine=_machine(), threads=args.threads,
            train_args=args.train_args),
            indent=1) + '\n')
        return 0
    runs_file = results / 'ssl_runs.jsonl'
    if not args.table:
        for seed in args.seeds:
            for name in args.methods:
                if any(r['method'] == name and r['seed'] == seed for r in _done(runs_file)):
                    print(f'skip {name} seed {seed}: already in {runs_file}')
                    continue
                row = run_one(name, seed, args, results / 'ssl_runs')
                with open(runs_file, 'a') as f:
                    f.write(json.dumps(row) + '\n')
                print(json.dumps(row), flush=True)
    rows = _done(runs_file)
    timing_file = results / 'ssl_step_time.json'
    timing = json.loads(timing_file.read_text()) if timing_file.exists() else None
    text = table(rows, timing)
    print(text)
    if rows:
        cfg = CONFIG.relative_to(REPO)
        (results / 'ssl.md').write_text(
            f'# Self-supervised SAMix on the embedded cluttered-MNIST data\n\n'
            f'`python bench/ssl_probes.py --data-dir data/cluttered_mnist --seeds {" ".join(map(str, sorted({r["seed"] for r in rows})))}`'
            f' (recipe `{cfg}`; probes: kNN k = 20 cosine, linear {args.linear_epochs} epochs on frozen features).\n'
            f'Machine: {rows[0]["machine"]}, {rows[0].get("threads", args.threads)} torch thread(s) per run. Time columns: '
            f'"alone" is `python bench/ssl_probes.py --time` (one epoch of each method, one after another, nothing else '
            f'running) as s/step and s/step x {timing["steps_per_run"] if timing else "the"} steps of a run; "in the sweep" is '
            f'each run folder\'s args.yaml to last checkpoint, two runs side by side.\n\n{text}\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
