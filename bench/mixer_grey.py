#!/usr/bin/env python3
""" Why a Mixer goes grey, and whether a fix holds: a resumable grid of train.py runs (method §2.6).

Each (variant, preset, seed) trains configs/embedded_bench.yaml with `--mixup samix --samix-preset PRESET`
plus the variant's flags, and appends one JSON line to `<results>/mixer_grey_runs.jsonl`: top-1, EMA top-1,
the last epoch's Mixer health and its per-epoch trajectory (per-image mask std, mean(1 − s), attention
entropy, Q/K/value weight scale and gradient norms, BN γ of the value head) from the run's summary.csv.
A later invocation skips what is there. `--table` writes `mixer_grey.md`: per variant and preset, grey
seeds (per-image std < 0.05 at the end), healthy seeds (|mean(1 − s) − λ| ≤ 0.1 and std ≥ 0.3), top-1.

    python -m samix_timm.data --out data/cluttered_mnist_1k --num-train 1000
    nohup python bench/mixer_grey.py --variants reference fan_in --presets lean --seeds 0 1 2 --jobs 2 &
    python bench/mixer_grey.py --table
"""
import argparse
import csv
import functools
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List

import numpy as np

from samix_timm.defaults import SAMIX_PRESETS
from samix_timm.health import health_failures, is_grey

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / 'configs' / 'embedded_bench.yaml'
# variant -> train.py flags on top of the recipe; 'reference' is the authors' Mixer init and weight decay
VARIANTS: Dict[str, List[str]] = {
    'reference': ['--samix-mixer-init', 'reference', '--samix-mask-loss', 'batch', '--samix-mixer-norm', 'none', '--samix-mask-area', 'free'],
    'fan_in': ['--samix-mixer-init', 'fan_in', '--samix-mask-loss', 'batch', '--samix-mixer-norm', 'none', '--samix-mask-area', 'free'],
    'wd0': ['--samix-mixer-init', 'reference', '--samix-mask-loss', 'batch', '--samix-mixer-norm', 'none', '--samix-mixer-weight-decay', '0', '--samix-mask-area', 'free'],
    'image': ['--samix-mixer-init', 'reference', '--samix-mask-loss', 'image', '--samix-mixer-norm', 'none', '--samix-mask-area', 'free'],
    'fan_in_image': ['--samix-mixer-init', 'fan_in', '--samix-mask-loss', 'image', '--samix-mixer-norm', 'none', '--samix-mask-area', 'free'],
    'rms': ['--samix-mixer-init', 'reference', '--samix-mask-loss', 'batch', '--samix-mixer-norm', 'rms', '--samix-mask-area', 'free'],
    'rms_fan_in': ['--samix-mixer-init', 'fan_in', '--samix-mask-loss', 'batch', '--samix-mixer-norm', 'rms', '--samix-mask-area', 'free'],
    'rms_fan_in_image': ['--samix-mixer-init', 'fan_in', '--samix-mask-loss', 'image', '--samix-mixer-norm', 'rms', '--samix-mask-area', 'free'],
    'qk_image': ['--samix-mixer-init', 'reference', '--samix-mask-loss', 'image', '--samix-mixer-norm', 'qk', '--samix-mask-area', 'free'],
    'qk_fan_in_image': ['--samix-mixer-init', 'fan_in', '--samix-mask-loss', 'image', '--samix-mixer-norm', 'qk', '--samix-mask-area', 'free'],
    'qk_fan_in_image_area': ['--samix-mixer-init', 'fan_in', '--samix-mask-loss', 'image', '--samix-mixer-norm', 'qk',
                             '--samix-mask-area', 'lam'],
    'all_qk_image_area': ['--samix-mixer-init', 'fan_in_all', '--samix-mask-loss', 'image', '--samix-mixer-norm', 'qk',
                          '--samix-mask-area', 'lam'],
    'all_qk_image_area_sharp': ['--samix-mixer-init', 'fan_in_all', '--samix-mask-loss', 'image', '--samix-mixer-norm',
                                'qk', '--samix-mask-area', 'lam', '--samix-mask-sharpness', '6'],
    'all_qk_image_area_b1': ['--samix-mixer-init', 'fan_in_all', '--samix-mask-loss', 'image', '--samix-mixer-norm', 'qk',
                             '--samix-mask-area', 'lam', '--samix-mask-beta', '1'],
}
for _flags in VARIANTS.values():  # every variant before the mask sharpness (§2.6) was measured without it,
    if '--samix-mask-sharpness' not in _flags:
        _flags += ['--samix-mask-sharpness', '0']
    if '--samix-mask-beta' not in _flags:  # and with the authors' β of the mask losses
        _flags += ['--samix-mask-beta', '0.1']
SPEED_STABLE = 'speed_bench_1k_stable'  # bench/speed.py of every preset with the default Mixer, this recipe
STABLE = 'all_qk_image_area_b1'  # the variant the package defaults give (tests/test_bench.py checks it)
TRAJECTORY = ('health_std_0.5', 'health_keep_0.3', 'health_keep_0.7', 'mixer_attention_entropy',
              'mixer_attention_logit_std',
              'mixer_weight_std_query', 'mixer_weight_std_key', 'mixer_weight_std_value', 'mixer_bn_gamma_value',
              'mixer_grad_query', 'mixer_grad_key', 'mixer_grad_value', 'mask_var', 'mask_mu')


def _read(path: Path) -> List[Dict]:
    """The rows that count: one with a `void` field (why it does not measure what its run says) stays in the file for
    the record and is run again."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return [r for r in rows if 'void' not in r]


def run_one(variant: str, preset: str, seed: int, args) -> Dict:
    exp = f'{variant}-{preset}-s{seed}'
    cmd = [sys.executable, str(REPO / 'train.py'), '--config', str(RECIPE), '--mixup', 'samix', '--samix-preset', preset,
           *VARIANTS[variant], '--seed', str(seed), '--data-dir', args.data_dir, '--output', args.output,
           '--experiment', exp, *args.extra]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f'{exp} failed:\n{proc.stderr[-3000:]}')
    run_dir = max(Path(args.output).glob(f'{exp}*'), key=lambda p: p.stat().st_mtime)
    with open(run_dir / 'summary.csv') as f:
        rows = list(csv.DictReader(f))
    last = rows[-1]
    health = {k[len('train_'):]: float(v) for k, v in last.items() if k.startswith('train_health_')}
    trajectory = {k: [round(float(r[f'train_{k}']), 4) for r in rows] for k in TRAJECTORY if f'train_{k}' in last}
    return dict(variant=variant, preset=preset, seed=seed, extra=args.extra, top1=float(last['eval_top1']),
                ema_top1=float(last.get('eval_ema_top1', 'nan')), wall_s=round(time.time() - start, 1),
                threads=args.threads, jobs=args.jobs, **health, trajectory=trajectory)


@functools.lru_cache(maxsize=1)
def _accuracy():
    """bench/accuracy.py, for its preset rule (loaded once)."""
    spec = importlib.util.spec_from_file_location('bench_accuracy', REPO / 'bench' / 'accuracy.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def preset_rule(records: List[Dict], variant: str, speed: Path) -> str:
    """bench/accuracy.py's preset rule on one Mixer variant of this sweep: the cheapest preset healthy in every seed and
    within a seed-std of the best, with step times from the speed run `speed` (`samix_<preset>_stable`)."""
    accuracy = _accuracy()
    runs = {}
    for preset in SAMIX_PRESETS:
        rs = [r for r in records if (r['variant'], r['preset']) == (variant, preset)]
        if rs:
            runs[preset] = dict(top1=np.array([r['top1'] for r in rs]), ema_top1=np.array([r['ema_top1'] for r in rs]),
                                grey=accuracy.grey_seeds(rs), unhealthy=accuracy.unhealthy_seeds(rs))
    if not runs or not speed.exists():
        return f'(no preset rule for `{variant}`: {"no runs" if not runs else f"no speed run {speed.name}"})'
    times = json.loads(speed.read_text())['models']['test_resnet']['time']
    cost = {p: times[f'samix_{p}_stable']['median_s'] / times['mixup']['median_s'] for p in runs
            if f'samix_{p}_stable' in times}
    return f'`{variant}`, step times from {speed.name}: ' + accuracy.preset_verdict(runs, cost)


def table(records: List[Dict]) -> str:
    lines = ['| variant | preset | seeds | grey at the end [seeds] | healthy at the end | first epoch not grey, per seed | '
             'mean(1 − s) at λ 0.3/0.5/0.7, mean over seeds | per-image std | top-1 | EMA top-1 |',
             '|---|---|---|---|---|---|---|---|---|---|']
    order = list(dict.fromkeys(r['variant'] for r in records))  # variants in the order they were first run
    keys = sorted({(r['variant'], r['preset']) for r in records}, key=lambda k: (order.index(k[0]), k[1]))
    spread = (lambda v: f'{v.mean():.2f} ± {v.std(ddof=1):.2f}' if len(v) > 1 else f'{v.mean():.2f}')
    for variant, preset in keys:
        rs = sorted((r for r in records if (r['variant'], r['preset']) == (variant, preset)), key=lambda r: r['seed'])
        grey = [r['seed'] for r in rs if is_grey(r)]
        healthy = [r['seed'] for r in rs if not health_failures({k: v for k, v in r.items() if k.startswith('health_')})]
        escape = []
        for r in rs:
            std = r['trajectory'].get('health_std_0.5')
            first = None if std is None else next((i for i, v in enumerate(std) if v >= 0.05), '-')
            escape.append('n/a' if first is None else str(first))
        keep = '/'.join(f"{np.mean([r[f'health_keep_{lam}'] for r in rs]):.2f}" for lam in ('0.3', '0.5', '0.7'))
        std = '/'.join(f"{np.mean([r[f'health_std_{lam}'] for r in rs]):.2f}" for lam in ('0.3', '0.5', '0.7'))
        top1, ema = np.array([r['top1'] for r in rs]), np.array([r['ema_top1'] for r in rs])
        lines.append(f'| {variant} | {preset} | {len(rs)} | {len(grey)} {grey if grey else ""} | '
                     f'{len(healthy)} of {len(rs)} | {" ".join(escape)} | {keep} | {std} | {spread(top1)} | '
                     f'{spread(ema)} |')
    return '\n'.join(lines)


def reference_table(path: Path) -> str:
    """The same columns for the authors' Mixer in the accuracy benchmark (bench/accuracy.py rows of this recipe:
    test_resnet, 32 px, 60 epochs, 1,000 images), the "before" of the stable Mixer."""
    rows = [r for r in _read(path) if r.get('img_size') == 32 and r.get('epochs') == 60
            and r.get('train_images', 1000) == 1000 and r['method'].startswith('samix_')
            and r['method'][len('samix_'):] in SAMIX_PRESETS]
    records = [dict(r, variant='reference (accuracy.py)', preset=r['method'][len('samix_'):], trajectory={}) for r in rows]
    return table(records)


def _summary(rs: List[Dict]) -> str:
    if not rs:
        return '— | — | — | —'
    grey = [r['seed'] for r in rs if is_grey(r)]
    healthy = sum(not health_failures({k: v for k, v in r.items() if k.startswith('health_')}) for r in rs)
    top1, ema = np.array([r['top1'] for r in rs]), np.array([r['ema_top1'] for r in rs])
    spread = (lambda v: f'{v.mean():.2f} ± {v.std(ddof=1):.2f}' if len(v) > 1 else f'{v.mean():.2f}')
    return (f'{len(grey)} of {len(rs)}{" " + str(grey) if grey else ""} | {healthy} of {len(rs)} | {spread(top1)} | '
            f'{spread(ema)}')


def compare_table(records: List[Dict], accuracy_rows: List[Dict], variants: List[str]) -> str:
    """Per preset: the authors' Mixer (accuracy benchmark rows, then this sweep's `reference` runs of the seeds those
    lack) against each of `variants` — grey seeds, healthy seeds, top-1 and EMA top-1."""
    before = {}
    for r in accuracy_rows:
        if r.get('img_size') == 32 and r.get('epochs') == 60 and r['method'].startswith('samix_'):
            before.setdefault(r['method'][len('samix_'):], []).append(r)
    for r in records:
        if r['variant'] == 'reference' and not r['extra'] and r['preset'] in SAMIX_PRESETS:
            if r['seed'] not in {b['seed'] for b in before.get(r['preset'], [])}:
                before.setdefault(r['preset'], []).append(r)
    after = {v: {} for v in variants}
    for r in records:
        if r['variant'] in after:
            after[r['variant']].setdefault(r['preset'], []).append(r)
    lines = ["| preset | authors' Mixer: grey | healthy | top-1 | EMA top-1 | "
             + ' | '.join(f'`{v}`: grey | healthy | top-1 | EMA top-1' for v in variants) + ' |',
             '|---|' + '---|---|---|---|' * (1 + len(variants))]
    for preset in SAMIX_PRESETS:
        if preset in before or any(preset in a for a in after.values()):
            lines.append(f'| {preset} | {_summary(before.get(preset, []))} | '
                         + ' | '.join(_summary(after[v].get(preset, [])) for v in variants) + ' |')
    return '\n'.join(lines)


def sharpness_table(gains=(1, 2, 3, 4, 6, 8), sizes=(4, 8), out: int = 32, images: int = 256) -> str:
    """What a sharpness floor g gives a Mixer with nothing learned (method §2.6): per-image std of s at λ 0.3/0.5/0.7
    for logits of unit-Gaussian noise at unit std per image times g on an hxh map, upsampled bilinearly to out x out,
    area fitted to λ; a binary mask has 0.46/0.50/0.46. Data-free: the floor acts on standardised logits."""
    import torch
    import torch.nn.functional as F
    from samix_timm.mixer import fit_mask_area
    lines = ['| g | map | per-image std at λ 0.3 / 0.5 / 0.7 |', '|---|---|---|']
    for g in gains:
        for h in sizes:
            torch.manual_seed(0)
            z = torch.randn(images, 1, h, h)
            z = z / z.flatten(1).std(1).view(-1, 1, 1, 1)
            m = F.interpolate(g * z, size=(out, out), mode='bilinear', align_corners=False)
            stds = [float(fit_mask_area(m, torch.full((images,), 1 - lam)).flatten(1).std(1).mean())
                    for lam in (0.3, 0.5, 0.7)]
            lines.append(f'| {g:g} | {h}x{h} | ' + ' / '.join(f'{v:.3f}' for v in stds) + ' |')
    return '\n'.join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data-dir', default='data/cluttered_mnist_1k')
    p.add_argument('--variants', nargs='+', default=['reference'], choices=list(VARIANTS))
    p.add_argument('--presets', nargs='+', default=['paper'], choices=list(SAMIX_PRESETS))
    p.add_argument('--seeds', nargs='+', type=int, default=[0])
    p.add_argument('--runs', nargs='+', default=None, metavar='PRESET:SEED',
                   help='an explicit list of runs in this order (instead of --presets x --seeds)')
    p.add_argument('--jobs', type=int, default=2, help='runs side by side')
    p.add_argument('--threads', type=int, default=1, help='torch threads per run (1: deterministic)')
    p.add_argument('--output', default='output/bench_mixer_grey')
    p.add_argument('--results', default=str(REPO / 'bench' / 'results'))
    p.add_argument('--extra', nargs=argparse.REMAINDER, default=[], help='more train.py flags (last)')
    p.add_argument('--table', action='store_true', help='only write the table of finished runs')
    p.add_argument('--stable', default=STABLE, help='the variant the defaults give, for the comparison')
    p.add_argument('--compare', nargs='*', default=['all_qk_image_area', 'all_qk_image_area_sharp'],
                   help='other stable variants shown beside it (all_qk_image_area: with the authors\' β 0.1; '
                        'all_qk_image_area_sharp: that and the sharpness floor)')
    p.add_argument('--sharpness-table', action='store_true', help='only print what each mask sharpness floor gives')
    args = p.parse_args()
    if args.sharpness_table:
        print(sharpness_table())
        return
    results = Path(args.results)
    path = results / 'mixer_grey_runs.jsonl'
    if not args.table:
        done = {(r['variant'], r['preset'], r['seed'], tuple(r['extra'])) for r in _read(path)}
        grid = ([(pr, int(s)) for pr, s in (r.split(':') for r in args.runs)] if args.runs else
                [(pr, s) for s in args.seeds for pr in args.presets])
        todo = [(v, pr, s) for pr, s in grid for v in args.variants if (v, pr, s, tuple(args.extra)) not in done]
        lock = threading.Lock()

        def _run(job):
            record = run_one(*job, args)
            with lock, open(path, 'a') as f:
                f.write(json.dumps(record) + '\n')
            print(json.dumps({k: v for k, v in record.items() if k != 'trajectory'}), flush=True)

        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(_run, todo))
    records = [r for r in _read(path) if not r['extra']]
    compared = [v for v in (*args.compare, args.stable) if v != args.stable] + [args.stable]
    text = (compare_table(records, _read(results / 'accuracy_runs.jsonl'), compared) + '\n\nEvery variant '
            '(the stable Mixer, the default, is `' + args.stable + '`):\n\n' + table(records)
            + '\n\nThe authors\' Mixer in the accuracy benchmark '
            '(bench/accuracy.py, same recipe; no per-epoch trajectory was recorded there):\n\n'
            + reference_table(results / 'accuracy_runs.jsonl')
            + '\n\nThe default preset by the numbers (bench/accuracy.py\'s rule, health in every seed required):\n\n'
            + '\n\n'.join(preset_rule(records, v, results / f'{SPEED_STABLE}.json') for v in compared))
    (results / 'mixer_grey.md').write_text(text + '\n')
    print(text)


if __name__ == '__main__':
    main()
