#!/usr/bin/env python3
""" Accuracy of each mixing method on the embedded cluttered-MNIST dataset: a resumable sweep.

Each (method, seed) is one `train.py` run of configs/embedded_bench.yaml (the budget is explained
there); a finished run appends one JSON line to `<results>/accuracy_runs.jsonl` with the epochs and
image size it ran at, and a later invocation skips what is already there for the same budget and
continues a run it finds stopped part-way (`--resume` from its last.pth.tar), so a sweep, or one run,
that takes hours can be stopped and resumed (also in another session). `--jobs 2` runs two
one-thread trainings side by side (on a 2-core CPU that is faster than one two-thread run; wall
times stay comparable between methods). `--table` prints mean ± std top-1 (online and EMA) and wall
time per method for one budget, and writes a PNG of accuracy against the step-time ratio to timm
Mixup that bench/speed.py measured (`--speed` JSON, `--speed-model`).

    python -m samix_timm.data --out data/cluttered_mnist_1k --num-train 1000
    nohup python bench/accuracy.py --data-dir data/cluttered_mnist_1k --seeds 0 1 2 --jobs 2 > bench/results/accuracy.log &
    python bench/accuracy.py --table
    python bench/accuracy.py --table --img-size 32 --methods vanilla mixup_a1   # the 32-px check of the recipe
"""
import argparse
import csv
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import yaml

from samix_timm.data.photos import MANIFEST as PHOTOS_MANIFEST
from samix_timm.health import health_failures, is_grey

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff')

REPO = Path(__file__).resolve().parents[1]

RECIPE = REPO / 'configs' / 'embedded_bench.yaml'  # --recipe: configs/photo_bench.yaml for the photo objects
COMMIT = subprocess.run(['git', '-C', str(REPO), 'rev-parse', '--short', 'HEAD'], capture_output=True,
                        text=True).stdout.strip() or None  # the code every run of this sweep trains with
ROWS = 'accuracy_runs.jsonl'  # --rows: the photo objects' rows go to photo_runs.jsonl
# speed.py method whose step-time ratio stands for each accuracy method in the plot
SPEED_OF = {'vanilla': 'none', 'mixup_a1': 'mixup', 'mixup_a0.2': 'mixup', 'cutmix_a1': 'cutmix', 'mixup_cutmix': 'cutmix',
            'cutmix_a0.2': 'cutmix', 'automix': 'samix_paper', 'samix_paper': 'samix_paper', 'samix_fast': 'samix_fast',
            'samix_p': 'samix_p_shipped', 'samix_reference': 'samix_paper', 'samix_every2': 'samix_every2', 'samix_half': 'samix_half',
            'samix_lowres': 'samix_lowres', 'samix_lean': 'samix_lean',
            'samix_quarter': 'samix_quarter',
            'mixup_clean': 'mixup_clean', 'samix_noclean': 'samix_paper_noclean', 'samix_joint': 'samix_paper_joint',
            'vanilla_long': 'none', 'mixup_long': 'mixup', 'samix_default': 'samix_paper_stable',
            'samix_p_own': 'samix_p_self', 'mixup_clean0.25': 'mixup_clean0.25',
            'samix': 'samix_lowres_stable', 'samix_w0': 'samix_lowres_stable_noclean', 'samix_p_trained': 'samix_p_self',
            'samix_b0.1': 'samix_lowres_stable', 'samix_step_paper': 'samix_paper_stable',
            'mixup_clean0.25_rowmean': 'mixup_clean0.25',
            # the Mixer trains for the first 30 % of the steps: the two step costs in those shares
            'samix_until0.3': {'samix_paper_stable': 0.3, 'samix_paper_frozen': 0.7},
            # the default with its Mixer frozen after 30 %: the frozen step is timed only for the `paper` preset (the
            # Mixer's forward at full resolution, so an upper bound of the default's frozen step)
            'samix_u0.3': {'samix_lowres_stable': 0.3, 'samix_paper_frozen': 0.7}}
# equal-compute rows: a baseline trained for as many epochs as fit in the cost of `samix_paper`
# (epochs x its step-time ratio to the baseline, from the --speed JSON); method -> baseline method
EQUAL_COMPUTE = {'vanilla_long': 'vanilla', 'mixup_long': 'mixup_a1'}
# matched baselines: each baseline at these multiples of the budget's epochs, so every SAMix row has a baseline
# that got at least its compute; `<base>_x<factor>` trains `<base>` for round(factor x epochs) epochs
COMPUTE_FACTORS = (1.25, 1.5, 2, 3.2)
MATCHED_BASES = ('vanilla', 'mixup_a1', 'mixup_a0.2', 'cutmix_a1', 'mixup_cutmix')
# the speed.py run the costs of a budget come from: same model, resolution and batch as its recipe
# (the first file that timed the method; each ratio is to timm Mixup of the same file's run). speed_task_1k times
# train.py's own step (2026-12-07); the older files, the Mixup-shaped path, only for the steps it did not time
COST_SPEED = {('test_resnet', 32): ('speed_task_1k.json', 'speed_bench_1k.json', 'speed_bench_1k_p.json', 'speed_bench_1k_until.json',
                                     'speed_bench_1k_clean.json', 'speed_bench_1k_stable.json',
                                     'speed_bench_1k_noclean.json', 'speed_bench_1k_cutmix.json'),
              ('test_resnet', 64): ('speed_accuracy_recipe.json',)}

# the rows in bench/results were measured with the authors' Mixer (before the stable Mixer of method §2.6 became
# the default): the online SAMix methods keep it, so that a rerun measures what the rows measured
AUTHORS_MIXER = ['--samix-mixer-init', 'reference', '--samix-mixer-norm', 'none', '--samix-mask-loss', 'batch',
                 '--samix-mask-area', 'free', '--samix-mask-sharpness', '0']

# in the order a sweep runs them: the comparisons that choose the defaults first
METHODS: Dict[str, List[str]] = {
    'vanilla': [],
    'mixup_a1': ['--mixup', '1.0'],
    'mixup_clean': ['--mixup', '1.0', '--samix-clean-weight', '1'],  # the fair control of the clean term (§5.6)
    'samix_paper': ['--mixup', 'samix', '--samix-preset', 'paper', *AUTHORS_MIXER],  # the reference step, clean term on
    'samix_reference': ['--mixup', 'samix', '--samix-preset', 'reference'],  # the authors' step in one flag (+ mce)
    'samix_noclean': ['--mixup', 'samix', '--samix-preset', 'paper', '--samix-clean-weight', '0', *AUTHORS_MIXER],
    'samix_every2': ['--mixup', 'samix', '--samix-preset', 'every2', *AUTHORS_MIXER],
    'vanilla_long': [],
    'mixup_long': ['--mixup', '1.0'],
    'samix_joint': ['--mixup', 'samix', '--samix-preset', 'paper', '--samix-clean-forward', 'joint', *AUTHORS_MIXER],
    'samix_fast': ['--mixup', 'samix', '--samix-preset', 'fast', *AUTHORS_MIXER],
    'cutmix_a1': ['--cutmix', '1.0'],
    'mixup_a0.2': ['--mixup', '0.2'],
    'mixup_cutmix': ['--mixup', '0.8', '--cutmix', '1.0'],  # timm's switch, DeiT's alphas (switch prob 0.5)
    'cutmix_a0.2': ['--cutmix', '0.2'],
    'automix': ['--mixup', 'samix', '--samix-mixer', 'automix', '--samix-mixer-loss', 'mce', '--samix-preset', 'paper', *AUTHORS_MIXER],
    'samix_p': ['--mixup', 'samix', '--samix-pretrained', 'samix_r18_cluttered_mnist'],
    'samix_half': ['--mixup', 'samix', '--samix-preset', 'half', *AUTHORS_MIXER],
    'samix_lowres': ['--mixup', 'samix', '--samix-preset', 'lowres', *AUTHORS_MIXER],
    'samix_lean': ['--mixup', 'samix', '--samix-preset', 'lean', *AUTHORS_MIXER],
    'samix_quarter': ['--mixup', 'samix', '--samix-preset', 'quarter', *AUTHORS_MIXER],
    # the default of the afternoon of 2026-12-05 (stable Mixer, the authors' β 0.1, `paper` step), pinned so that a rerun
    # measures what its rows measured; today's default is in bench/mixer_grey.py's sweep (all_qk_image_area_b1)
    'samix_default': ['--mixup', 'samix', '--samix-preset', 'paper', '--samix-mask-beta', '0.1'],
    'samix_p_own': ['--mixup', 'samix'],  # + --samix-pretrained: the Mixer of a run in PRETRAIN_SOURCE
    # today's default as it stands (stable Mixer with area λ, `lowres`, β 1, η loss): the photo benchmark's rows,
    # without its clean-batch term, and SAMix^P with the Mixer of a default run on the same data (another seed)
    'samix': ['--mixup', 'samix'],
    'samix_w0': ['--mixup', 'samix', '--samix-clean-weight', '0'],
    # the two digits decisions re-run on the photographs: the stable Mixer's β (the authors' 0.1 against the default 1)
    # and the preset rule's choice (the default with the `paper` step, the Mixer every step at full resolution)
    'samix_b0.1': ['--mixup', 'samix', '--samix-mask-beta', '0.1'],
    'samix_step_paper': ['--mixup', 'samix', '--samix-preset', 'paper'],
    # the reading of the photo curves (online Mixers level off late, frozen ones climb) tested: the default with its
    # Mixer trained for the first 30 % of the steps only (the share `samix_until0.3` tried on the digits)
    'samix_u0.3': ['--mixup', 'samix', '--samix-mixer-until', '0.3'],
    'samix_p_trained': ['--mixup', 'samix'],
    'samix_until0.3': ['--mixup', 'samix', '--samix-preset', 'paper', '--samix-mixer-until', '0.3'],
    # the partial clean term (§5.6) beside timm Mixup, on 12 of the 50 rows: each clean image weighed W/N as in the
    # reference term, and the weighting before the fix, W on the mean of those 12 rows (= W·50/12 per N)
    'mixup_clean0.25': ['--mixup', '1.0', '--samix-clean-weight', '1', '--samix-clean-frac', '0.25'],
    'mixup_clean0.25_rowmean': ['--mixup', '1.0', '--samix-clean-weight', f'{50 / 12:.6f}', '--samix-clean-frac', '0.25'],
}
# SAMix^P methods whose Mixer is exported from a finished run of this benchmark: method -> (method, seed) of that
# run (a seed no table row uses); the export is written once under --output and reused, its cost is the source
# row's run_cost, reported as `pretrain_cost`
PRETRAIN_SOURCE = {'samix_p_own': ('samix_default', 100), 'samix_p_trained': ('samix', 100)}
_EXPORT_LOCK = threading.Lock()
EPOCH_FACTOR: Dict[str, float] = {}


def _longer(method: str, flags: List[str], speed: str, factor: float) -> None:
    """An accuracy method that trains `factor` x the budget's epochs with `flags`, its step timed as `speed`."""
    METHODS[method], SPEED_OF[method], EPOCH_FACTOR[method] = flags, speed, factor


for _base in MATCHED_BASES:
    for _factor in COMPUTE_FACTORS:
        _longer(f'{_base}_x{_factor:g}', METHODS[_base], SPEED_OF[_base], _factor)

# issue 29 item 6, the ceiling: timm Mixup at twice the 3.2x budget (384 epochs) says whether it has converged there
# (doubling its epochs buys < 0.5 point), and the default online SAMix (stable Mixer, `lowres`) at that compute:
# 384 epochs / its 2.74x step = 140 epochs
_longer('mixup_a1_x6.4', METHODS['mixup_a1'], 'mixup', 6.4)
_longer('samix_lowres_stable_x2.33', ['--mixup', 'samix'], 'samix_lowres_stable', 7 / 3)
# twice again: Mixup at 768 epochs (has it converged at 384?) and the default SAMix at that compute (280 epochs)
_longer('mixup_a1_x12.8', METHODS['mixup_a1'], 'mixup', 12.8)
_longer('samix_lowres_stable_x4.67', ['--mixup', 'samix'], 'samix_lowres_stable', 14 / 3)
# why the default SAMix stops near 85 from 140 to 280 epochs while Mixup climbs to 92 (both fit the training set):
# at 280 epochs, timm Mixup with SAMix's clean term, the default SAMix without it, and timm CutMix (a cut mask with
# an area label, as the Mixer's near-binary masks are)
_longer('mixup_clean_x4.67', METHODS['mixup_clean'], 'mixup_clean', 14 / 3)
_longer('samix_lowres_stable_noclean_x4.67', ['--mixup', 'samix', '--samix-clean-weight', '0'],
        'samix_lowres_stable_noclean', 14 / 3)
_longer('cutmix_a1_x4.67', METHODS['cutmix_a1'], 'cutmix', 14 / 3)
# and again, where Mixup still gained 2 points from 384 to 768: 1536 epochs, the default SAMix at that compute 560
_longer('mixup_a1_x25.6', METHODS['mixup_a1'], 'mixup', 25.6)
_longer('samix_lowres_stable_x9.33', ['--mixup', 'samix'], 'samix_lowres_stable', 28 / 3)
# the photo benchmark's convergence check at 120 epochs (issue 45 item 2): no mixing at twice that, 240 epochs
_longer('vanilla_x4', METHODS['vanilla'], 'none', 4)
# the photo benchmark's budget is 2x its recipe's 60 epochs (docs/benchmarks.md#photographs): every method there
# at 120 epochs (`_x2`) and at 3x that (`_x6`, 360 epochs; the baselines' 360 are also at least the compute of a
# SAMix run of 120); SAMix^P with a Mixer trained on the photographs takes it from `samix_x2` seed 100
PHOTO_SAMIX = ('samix', 'samix_reference', 'samix_p', 'samix_p_trained', 'automix', 'samix_w0', 'samix_b0.1',
               'samix_step_paper', 'samix_u0.3')
for _base in (*MATCHED_BASES, *PHOTO_SAMIX):
    for _factor in (2, 6):
        if f'{_base}_x{_factor}' not in METHODS:
            _longer(f'{_base}_x{_factor}', METHODS[_base], SPEED_OF[_base], _factor)
PRETRAIN_SOURCE.update({f'samix_p_trained_x{_factor}': ('samix_x2', 100) for _factor in (2, 6)})
# accuracy method -> the `--samix-preset` it trains with: the candidates of the default-preset rule
PRESET_OF = {'samix_paper': 'paper', 'samix_every2': 'every2', 'samix_half': 'half', 'samix_fast': 'fast',
             'samix_lowres': 'lowres', 'samix_lean': 'lean',
             'samix_quarter': 'quarter', 'samix_reference': 'reference'}


def _rows(results: Path) -> List[Dict]:
    """Every row of the rows file (ROWS), void ones included."""
    path = results / ROWS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _done(results: Path) -> List[Dict]:
    """The rows that count: a row with a `void` field (why it does not measure what its method says) is kept in the
    file for the record, left out of every table and run again by the next sweep."""
    return [r for r in _rows(results) if 'void' not in r]


# rows measured with a bug, by method: the reason written into them (`--void-rows`)
VOID = {'mixup_clean': 'the clean half was the mixed batch with one-hot labels: timm Mixup mixes in place and the '
                       'clean rows were taken after it (fixed in 5c52926, tests/test_task.py)'}


def train_images(data_dir: str) -> int:
    """Training images of a dataset build (its manifest; else the image files under train/), part of the budget."""
    root = Path(data_dir)
    if (root / 'samix_embedded.json').exists():
        return json.loads((root / 'samix_embedded.json').read_text())['num_train']
    if (root / PHOTOS_MANIFEST).exists():
        return json.loads((root / PHOTOS_MANIFEST).read_text())['counts']['train']
    return sum(1 for p in (root / 'train').rglob('*') if p.suffix.lower() in IMG_EXTENSIONS)


def dataset_id(data_dir: str) -> str:
    """Which build a row ran on: the kind of data and a hash of its manifest (`data` field of a row)."""
    root = Path(data_dir)
    for name, kind in (('samix_embedded.json', 'cluttered_mnist'), (PHOTOS_MANIFEST, 'photo_objects')):
        if (root / name).exists():
            return f'{kind}:{hashlib.sha1((root / name).read_bytes()).hexdigest()[:10]}'
    return f'folder:{root.resolve()}'


def run_epochs(method: str, args) -> int:
    """Epochs a method trains: the budget's, or for an equal-compute row as many as fit in samix_paper's cost."""
    if method in EPOCH_FACTOR:
        return int(round(args.epochs * EPOCH_FACTOR[method]))
    if method not in EQUAL_COMPUTE:
        return args.epochs
    ratios, source = speed_ratios(Path(args.speed), args.speed_model)
    base = SPEED_OF[EQUAL_COMPUTE[method]]
    if 'samix_paper' not in ratios or base not in ratios:
        raise SystemExit(f'{method} needs the step times of samix_paper and {base} in {args.speed} ({source})')
    return int(round(args.epochs * ratios['samix_paper'] / ratios[base]))


def run_one(method: str, seed: int, args) -> Dict:
    out = Path(args.output)
    exp = f'{method}-s{seed}'
    epochs = run_epochs(method, args)
    extra, pretrain_from = [], None
    if method in PRETRAIN_SOURCE:
        artifact, pretrain_from = pretrained_mixer(method, args)
        extra = ['--samix-pretrained', str(artifact)]
    cmd = [sys.executable, str(REPO / 'train.py'), '--config', str(args.recipe), *METHODS[method], *extra, '--seed', str(seed),
           '--data-dir', args.data_dir, '--output', str(out), '--experiment', exp, '--workers', str(args.workers),
           '--epochs', str(epochs), '--img-size', str(args.img_size), '--model', args.model]
    resume = unfinished_run(out, exp, cmd)
    if resume is not None:
        cmd += ['--resume', str(resume)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads)) if args.threads else None
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f'{exp} failed:\n{proc.stderr[-3000:]}')
    run_dir = this_run(out, exp, args.data_dir)
    with open(run_dir / 'summary.csv') as f:
        last = list(csv.DictReader(f))[-1]
    health = {k[len('train_'):]: float(v) for k, v in last.items() if k.startswith('train_health_')}
    record = dict(method=method, seed=seed, model=args.model, epochs=args.epochs, run_epochs=epochs,
                  img_size=args.img_size, train_images=train_images(args.data_dir), data=dataset_id(args.data_dir),
                  recipe=str(Path(args.recipe).resolve().relative_to(REPO)) if Path(args.recipe).resolve().is_relative_to(REPO)
                  else str(args.recipe), top1=float(last['eval_top1']),
                  ema_top1=float(last.get('eval_ema_top1', 'nan')), wall_s=time.time() - start, run_dir=str(run_dir),
                  jobs=args.jobs, threads=args.threads, finished=time.time(), **health)
    record['commit'] = COMMIT
    if getattr(args, 'test_split', ''):
        record.update(test_scores(run_dir, args), test_split=args.test_split)
    if pretrain_from is not None:
        record['pretrain_from'] = pretrain_from
    if resume is not None:  # wall_s is this invocation's part only
        record['resumed_from'] = str(resume)
    return {**record, **row_cost(record, Path(args.results))}


def test_scores(run_dir: Path, args) -> Dict[str, float]:
    """top-1 of the run's last checkpoint (and its EMA) on `--test-split`, evaluated once by validate.py; each
    result is kept in the run folder, so a sweep resumed after the training reuses it."""
    scores = {}
    for key, flags in (('test_top1', []), ('test_ema_top1', ['--use-ema'])):
        out = run_dir / f'{key}.json'
        if not out.exists():
            cmd = [sys.executable, str(REPO / 'validate.py'), '--data-dir', args.data_dir, '--split', args.test_split,
                   '--checkpoint', str(run_dir / 'last.pth.tar'), '--workers', str(args.workers), '--batch-size', '250',
                   '--results-file', str(out), *flags]
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads)) if args.threads else None
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                if flags and 'holds no EMA weights' in proc.stderr:  # a run without EMA weights: no EMA score, not a failure
                    continue
                raise RuntimeError(f'{run_dir.name}: evaluation on {args.test_split} failed:\n{proc.stderr[-2000:]}')
        result = json.loads(out.read_text())
        scores[key], scores['test_images'] = float(result['top1']), int(result['num_images'])
    return scores


def this_run(out: Path, exp: str, data_dir: str) -> Path:
    """The newest folder of `exp` under `out` that trained on `data_dir` (two sweeps over other data may share
    `out`; timm numbers a name that exists)."""
    mine = [p for p in out.glob(f'{exp}*') if re.fullmatch(rf'{re.escape(exp)}(-\d+)?', p.name)
            and (p / 'args.yaml').exists()
            and _same_path(yaml.safe_load((p / 'args.yaml').read_text()).get('data_dir'), data_dir)]
    if not mine:
        raise RuntimeError(f'{exp}: train.py finished but no run folder of it under {out}')
    return max(mine, key=lambda p: p.stat().st_mtime)


def _same_path(a, b) -> bool:
    return a is not None and Path(str(a)).resolve() == Path(str(b)).resolve()


def _same(a, b) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


_WHERE = ('config', 'output', 'resume')  # where the files are, not what the run trains
_LOGGING = ('experiment', 'log_interval', 'workers', 'checkpoint_hist')  # how it reports, not what it trains


def unfinished_run(out: Path, exp: str, cmd: List[str]) -> Optional[Path]:
    """last.pth.tar of an interrupted run of this job to `--resume` from, so that a run longer than a session
    goes on where it stopped (train.py's resume reproduces the uninterrupted run): the newest folder of `exp`
    whose args.yaml agrees with every `--flag value` of `cmd` it records (paths aside) and whose summary.csv ends
    before its last epoch; None when there is none."""
    # every setting the job resolves to (its recipe's values as much as its flags'; a run of another recipe is not
    # this job), as train.py's parser writes them into args.yaml
    from samix_timm.engine import parse_train_args
    pairs = vars(parse_train_args(cmd[2:])[0])
    for run_dir in sorted(out.glob(f'{exp}*'), key=lambda p: p.stat().st_mtime, reverse=True):
        checkpoint, summary, saved = (run_dir / n for n in ('last.pth.tar', 'summary.csv', 'args.yaml'))
        if not re.fullmatch(rf'{re.escape(exp)}(-\d+)?', run_dir.name) or not (
                checkpoint.exists() and summary.exists() and saved.exists()):
            continue
        saved = yaml.safe_load(saved.read_text())
        if any(k in saved and not _same(saved[k], v) for k, v in pairs.items() if k not in _WHERE + _LOGGING):
            continue
        with open(summary) as f:
            epochs = [int(r['epoch']) for r in csv.DictReader(f)]  # a resumed run's folder numbers on
        if epochs and epochs[-1] + 1 < int(saved['epochs']):
            return checkpoint
    return None


def row_cost(record: Dict, results: Path) -> Dict:
    """{'run_cost': the run's compute in units of one timm-Mixup run of its budget's epochs (run epochs / budget
    epochs x step time / timm Mixup step time), 'cost_from': the speed.py run (file, model, resolution, batch,
    method) that ratio comes from}; run_cost None, with the reason, where no speed run of that model and resolution
    (`COST_SPEED`) timed the method. SAMix^P rows add 'pretrain_cost': the run that made its Mixer, once per Mixer
    and reusable, so it is never folded into run_cost."""
    model, epochs, img_size, _ = budget(record)
    names = COST_SPEED.get((model, img_size))
    if names is None:
        return dict(run_cost=None, cost_from=f'no speed.py run of {model} at {img_size} px in COST_SPEED')
    method = SPEED_OF.get(record['method'])
    shares = method if isinstance(method, dict) else {method: 1.0}  # a step that changes during the run
    for name in names:
        ratios, source = speed_ratios(results / name, model)
        if all(m in ratios for m in shares):
            break
    else:
        return dict(run_cost=None, cost_from=f'{source}: no {" + ".join(shares)} timing')
    ratio = sum(ratios[m] * w for m, w in shares.items())
    cost = dict(run_cost=round(ratio * record.get('run_epochs', epochs) / epochs, 3),
                cost_from=f'{source}, method ' + ' + '.join(f'{w:g} x {m}' if w != 1 else m for m, w in shares.items()))
    if record['method'] in ('samix_p', 'samix_p_x2', 'samix_p_x6'):
        cost['pretrain_cost'] = None  # the shipped Mixer came from a resnet18 run on another build: not timed here
        cost['pretrain_from'] = ('configs/embedded_resnet18_samix.yaml (resnet18, 4,000 images): another model, '
                                 'not in one speed run with this budget')
    elif record['method'] in PRETRAIN_SOURCE:
        source_row = pretrain_row(record['method'], record, results)
        cost['pretrain_cost'] = source_row.get('run_cost') if source_row else None
        cost['pretrain_from'] = record.get('pretrain_from', 'no finished source run')
    return cost


def pretrain_row(method: str, record: Dict, results: Path) -> Optional[Dict]:
    """The finished row (same budget) whose run made the Mixer of SAMix^P method `method` (`PRETRAIN_SOURCE`)."""
    src, seed = PRETRAIN_SOURCE[method]
    data = record.get('data')  # builds of the same size share a budget: the Mixer must come from this one
    rows = [r for r in _done(results) if r['method'] == src and r['seed'] == seed and budget(r) == budget(record)
            and r.get('data', data) == data]
    return rows[-1] if rows else None


def pretrained_mixer(method: str, args) -> Tuple[Path, str]:
    """The artifact of SAMix^P method `method`: exported once (`python -m samix_timm.export`) from the last
    checkpoint of its source run, which must be finished; returns (artifact path, where it came from)."""
    src, seed = PRETRAIN_SOURCE[method]
    probe = dict(method=method, model=args.model, epochs=args.epochs, img_size=args.img_size,
                 train_images=train_images(args.data_dir), data=dataset_id(args.data_dir))
    row = pretrain_row(method, probe, Path(args.results))
    if row is None:
        raise SystemExit(f'{method} needs the Mixer of a finished {src} run, seed {seed}, of this budget: run '
                         f'`python bench/accuracy.py --methods {src} --seeds {seed}` (same budget flags) first')
    checkpoint = (Path(row['run_dir']) / 'last.pth.tar').resolve()
    out = Path(args.output) / 'mixers' / f'{src}-s{seed}'
    with _EXPORT_LOCK:  # runs side by side export it once
        found = sorted(out.parent.glob(f'{out.name}-*.pth'))
        if not found:
            out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, '-m', 'samix_timm.export', '--checkpoint', str(checkpoint), '--out',
                            str(out.resolve()), '--description', f'bench/accuracy.py {src} seed {seed}'],
                           check=True, cwd=REPO)
            found = sorted(out.parent.glob(f'{out.name}-*.pth'))
    health = '/'.join(f"{row.get(f'health_keep_{lam}', float('nan')):.2f}" for lam in ('0.3', '0.5', '0.7'))
    return found[-1], (f'{src} seed {seed} ({row["run_dir"]}, top-1 {row["top1"]:.1f}, Mixer keeps {health} at '
                       f'lam 0.3/0.5/0.7), artifact {found[-1].name}')


def void_rows(results: Path, before: float) -> int:
    """Mark the rows of the `VOID` methods that finished before the fix (unix time `before`; rows without a time
    are older) with the reason; returns how many changed. Rewritten through a temporary file, as `add_costs`."""
    path = results / ROWS
    rows, changed = _rows(results), 0
    for r in rows:
        if r['method'] in VOID and 'void' not in r and r.get('finished', 0) < before:
            r['void'] = VOID[r['method']]
            changed += 1
    tmp = path.with_suffix('.jsonl.tmp')
    tmp.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    tmp.replace(path)
    return changed


def add_costs(results: Path, every: bool = False) -> int:
    """Write `row_cost` into every row of the rows file that lacks it (rows from before the field), or with `every`
    into every row from today's `COST_SPEED` (after a re-timing: a row whose cost changes keeps the old one as
    `cost_before`); returns how many rows changed. The file is rewritten through a temporary file, so an
    interruption loses nothing."""
    path = results / ROWS
    rows, changed = _rows(results), 0
    for r in rows:
        if 'run_cost' not in r:
            r.update(row_cost(r, results))
            changed += 1
        elif every:
            cost = row_cost(r, results)
            if (cost['run_cost'], cost['cost_from']) != (r['run_cost'], r.get('cost_from')):
                r['cost_before'] = dict(run_cost=r['run_cost'], cost_from=r.get('cost_from'))
                r.update(cost)
                changed += 1
    tmp = path.with_suffix('.jsonl.tmp')
    tmp.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    tmp.replace(path)
    return changed


def speed_ratios(path: Path, model: str) -> Tuple[Dict[str, float], str]:
    """Step time / timm Mixup step time per speed.py method for `model` in a speed.py JSON, and
    where those timings come from (model, resolution, batch)."""
    data = json.loads(path.read_text()) if path.exists() else {'models': {}}
    if model not in data['models']:
        return {}, f'no {model} entry in {path.name}'
    res = data['models'][model]
    ratios = {m: t['median_s'] / res['time']['mixup']['median_s'] for m, t in res['time'].items() if 'median_s' in t}
    return ratios, f"{path.name}: {model} {res['img_size']} px, batch {data['batch_size']}"


def _mean_std(v: np.ndarray) -> str:
    """'mean ± std' over seeds (sample std); a single run has no spread to report."""
    return f'{v.mean():.2f} ± {v.std(ddof=1):.2f}' if len(v) > 1 else f'{v.mean():.2f} (1 run)'


def _health(records: List[Dict]) -> str:
    """Mean over seeds of the last epoch's Mixer health (train.py's summary.csv), '' without a Mixer."""
    lams = ('0.3', '0.5', '0.7')
    if not all(f'health_keep_{lam}' in r for r in records for lam in lams):
        return ''
    keep = '/'.join(f"{np.mean([r[f'health_keep_{lam}'] for r in records]):.2f}" for lam in lams)
    std = '/'.join(f"{np.mean([r[f'health_std_{lam}'] for r in records]):.2f}" for lam in lams)
    return f'{keep}; {std}'


def grey_seeds(records: List[Dict]) -> int:
    """Seeds whose Mixer ended grey (`samix_timm.health.is_grey`): a λ-blind constant mask (§3), i.e. mixup
    with the wrong λ, not a learned Mixer."""
    return sum(is_grey(r) for r in records)


def unhealthy_seeds(records: List[Dict]) -> int:
    """Seeds whose last health reading fails the rule (`samix_timm.health.health_failures`: area within 0.1 of λ and
    per-image std ≥ 0.3); rows without a reading count as healthy."""
    return sum(bool(health_failures({k: v for k, v in r.items() if k.startswith('health_')})) for r in records)


def preset_verdict(runs: Dict[str, Dict[str, np.ndarray]], cost: Dict[str, float]) -> str:
    """The rule that sets the default `--samix-preset`: the cheapest preset (step time `cost`) whose
    mean online top-1 and mean EMA top-1 (train.py keeps the best EMA checkpoint) are each no more
    than one seed-std (the larger of the two presets') below the best preset's (the highest online mean of the
    presets whose Mixer is sound), and whose Mixer never ended grey (`grey` = 0 seeds) nor, where the runs record
    it, unhealthy by the health rule (`unhealthy` = 0 seeds); `paper` when none is. `runs` maps preset name ->
    {'top1': per-seed array, 'ema_top1': per-seed array, optionally 'grey' and 'unhealthy': seed counts}."""
    sound = [n for n, r in runs.items() if not r.get('grey', 0) and not r.get('unhealthy', 0)]
    if not sound:
        return 'Preset rule: no preset whose Mixer is never grey or unhealthy -> default `paper`'
    best_name = max(sound, key=lambda n: runs[n]['top1'].mean())  # the best of the presets with a sound Mixer
    best = runs[best_name]
    parts, passing = [f'best: {best_name} ({best["top1"].mean():.2f} / {best["ema_top1"].mean():.2f})'], []
    for name, cand in runs.items():
        seeds = min(len(best['top1']), len(cand['top1']))
        ok, checks = name in sound, []
        for key in ('top1', 'ema_top1'):
            p, c = best[key], cand[key]
            tol = max(p.std(ddof=1), c.std(ddof=1)) if seeds > 1 else 0.0
            ok &= bool(c.mean() >= p.mean() - tol)
            checks.append(f'{key} {c.mean():.2f} vs {p.mean():.2f} - {tol:.2f}')
        for key in ('grey', 'unhealthy'):
            if key in cand:
                ok &= int(cand[key]) == 0
                checks.append(f'{key} Mixer in {int(cand[key])} of {len(cand["top1"])} seeds')
        passing += [name] if ok else []
        parts.append(f'{name} ({len(cand["top1"])} seeds, {cost.get(name, np.nan):.2f}x): {", ".join(checks)} '
                     f'-> {"passes" if ok else "fails"}')
    choice = min(passing, key=lambda n: cost.get(n, np.inf)) if passing else 'paper'
    return (f'Preset rule (the cheapest preset whose online and EMA means are >= the best preset\'s - max std and '
            f'whose Mixer is never grey or unhealthy): {"; ".join(parts)} -> default `{choice}`')


def budget(record) -> Tuple[str, int, int, int]:
    """What makes runs comparable: model, epochs, image size, training images (runs from before
    `model` was recorded used resnet18, before `train_images` the 4,000-image build)."""
    return record.get('model', 'resnet18'), record['epochs'], record['img_size'], record.get('train_images', 4000)


def budget_name(model: str, epochs: int, img_size: int, images: int = 4000) -> str:
    return f'{model}_{img_size}px_{epochs}ep' + ('' if images == 4000 else f'_{images}img')


def select(results: Path, model: str, epochs: int, img_size: int, images: int, methods: List[str],
           data: Optional[str] = None, score: str = 'val') -> Dict[str, List[Dict]]:
    """The finished rows of one budget on one data build by method; rows without a `data` field count as the build
    given. `score` 'test' puts each row's test split (test_top1 / test_ema_top1) in top1 / ema_top1 and leaves out
    rows without one."""
    by: Dict[str, List[Dict]] = {}
    for r in _done(results):
        if (budget(r) == (model, epochs, img_size, images) and r['method'] in methods
                and (data is None or r.get('data', data) == data)):
            if score == 'test':
                if 'test_top1' not in r:
                    continue
                r = dict(r, top1=r['test_top1'], ema_top1=r.get('test_ema_top1', float('nan')))
            by.setdefault(r['method'], []).append(r)
    return by


def compare(by: Dict[str, List[Dict]], a: str, b: str, key: str = 'top1') -> str:
    """One line: method a against b over their seeds: means, difference, Welch's t (difference / its standard
    error, sqrt(s_a²/n_a + s_b²/n_b)), and the paired differences on the seeds both ran."""
    if a not in by or b not in by:
        missing = [m for m in (a, b) if m not in by]
        raise SystemExit(f'--compare: no finished rows of {", ".join(missing)} in this budget and data build')
    va, vb = ({r['seed']: r[key] for r in by[m]} for m in (a, b))
    xa, xb = np.array(list(va.values())), np.array(list(vb.values()))
    diff = xa.mean() - xb.mean()
    text = f'{a} ({len(xa)}) {xa.mean():.2f} - {b} ({len(xb)}) {xb.mean():.2f} = {diff:+.2f}'
    if len(xa) > 1 and len(xb) > 1:
        se = float(np.sqrt(xa.var(ddof=1) / len(xa) + xb.var(ddof=1) / len(xb)))
        text += f'; Welch t {diff / se:+.2f} (standard error {se:.2f})'
    common = sorted(set(va) & set(vb))
    if common:
        paired = [va[s] - vb[s] for s in common]
        text += (f'; paired on seeds {"/".join(map(str, common))}: {" / ".join(f"{d:+.2f}" for d in paired)}, '
                 f'mean {np.mean(paired):+.2f}')
    return text


def table(results: Path, speed: Path, speed_model: str, model: str, epochs: int, img_size: int,
          methods: List[str], images: int = 4000, data: Optional[str] = None, prefix: str = 'accuracy',
          score: str = 'val') -> str:
    """Markdown table of the finished runs of one budget on one data build (+ the accuracy-vs-cost PNG beside it);
    rows without a `data` field count as the build given. `score` 'test' ranks on each row's test split
    (test_top1 / test_ema_top1) and leaves out rows without one."""
    by = select(results, model, epochs, img_size, images, methods, data, score)
    ratios, source = speed_ratios(speed, speed_model)
    lines = ['| method | runs | top-1 (mean ± std) | EMA top-1 (mean ± std) | wall time / run (min) | '
             'step time × timm Mixup | epochs | run cost × a timm Mixup run | Mixer made by (pretrain cost) | '
             'Mixer health at the end: mean(1 − s) at λ 0.3/0.5/0.7; per-image std |',
             '|---|---|---|---|---|---|---|---|---|---|']
    stats = {}
    for m in METHODS:
        if m not in by:
            continue
        t1, ema = (np.array([r[k] for r in by[m]]) for k in ('top1', 'ema_top1'))
        # a resumed run's wall_s is its last invocation's part only: the mean is over the uninterrupted runs
        wall = np.array([r['wall_s'] for r in by[m] if 'resumed_from' not in r])
        wall_text = (f'{wall.mean() / 60:.1f}' if len(wall) else '–') + (
            f' ({len(wall)} of {len(t1)}: the others resumed)' if len(wall) < len(t1) else '')
        run_epochs = by[m][0].get('run_epochs', epochs)
        costs = [r.get('run_cost') for r in by[m]]
        # the cost each row recorded (its speed run is named in the row), else this table's speed file
        run_cost = (float(np.mean(costs)) if all(c is not None for c in costs)
                    else (ratios.get(SPEED_OF[m], np.nan) if isinstance(SPEED_OF[m], str) else np.nan) * run_epochs / epochs)
        ratio = run_cost * epochs / run_epochs
        spread = (lambda v: v.std(ddof=1) if len(v) > 1 else 0.0)
        stats[m] = (t1.mean(), spread(t1), ema.mean(), spread(ema), run_cost)
        pre = by[m][0].get('pretrain_cost', '') if 'pretrain_from' in by[m][0] else ''
        made_by = (f"{PRETRAIN_SOURCE[m][0]} seed {PRETRAIN_SOURCE[m][1]} ({pre:.2f})" if m in PRETRAIN_SOURCE and
                   isinstance(pre, float) else 'the shipped Mixer (resnet18, 4,000 images; not timed)'
                   if m in ('samix_p', 'samix_p_x2', 'samix_p_x6') else '')
        lines.append(f'| {m} | {len(t1)} | {_mean_std(t1)} | {_mean_std(ema)} | '
                     f'{wall_text} | {ratio:.2f} | {run_epochs} | {run_cost:.2f} | {made_by} | '
                     f'{_health(by[m])} |')
    lines += ['', f'Step times: each row\'s `cost_from` (speed runs `{"`, `".join(sorted({n for v in COST_SPEED.values() for n in v}))}`); '
              f'rows without one: {source}.', '', equal_compute_verdict(stats)]
    presets = {PRESET_OF[m]: dict({k: np.array([r[k] for r in by[m]]) for k in ('top1', 'ema_top1')},
                                  grey=grey_seeds(by[m]), unhealthy=unhealthy_seeds(by[m])) for m in PRESET_OF if m in by}
    if 'paper' in presets and len(presets) > 1:
        cost = {PRESET_OF[m]: ratios.get(SPEED_OF[m], np.nan) for m in PRESET_OF}
        lines += ['', preset_verdict(presets, cost)]
    stats = {m: v for m, v in stats.items() if np.isfinite(v[4])}
    if stats:
        kind = 'photo objects' if data and data.startswith('photo_objects') else 'cluttered MNIST'
        plot_cost(stats, results / f'{prefix}_vs_cost_{budget_name(model, epochs, img_size, images)}.png',
                  f'{kind} ({images} train), {model} {img_size} px, {epochs}-epoch budget',
                  "step times: each row's cost_from")
    return '\n'.join(lines)


# the methods a SAMix row is compared with at equal compute: timm's mixers and no mixing, at any epochs
BASELINES = {*MATCHED_BASES, 'cutmix_a0.2', 'mixup_clean', 'vanilla_long',
             'mixup_long', 'mixup_clean0.25', 'mixup_clean0.25_rowmean',
             *(m for m in EPOCH_FACTOR if not m.startswith(('samix_', 'automix')))}  # AutoMix's Mixer is SAMix's step


def equal_compute_verdict(stats: Dict[str, Tuple[float, float, float, float, float]]) -> str:
    """Issue 29's question per SAMix method: among the baselines that got at least its run cost, the best (mean
    top-1; the method must beat it to beat every baseline) and the nearest in cost (the best of the cheapest
    ones), with the SAMix method's margin over each (online and EMA top-1); `stats`: method -> (top-1, std, EMA,
    std, run cost). A SAMix^P row's cost leaves out the run that made its Mixer (`pretrain_cost`)."""
    lines = ['| SAMix method | run cost | top-1 / EMA | best baseline with at least its compute: name (cost), top-1 / EMA, '
             'Δ top-1 / Δ EMA | nearest such baseline: name (cost), top-1 / EMA, Δ top-1 / Δ EMA |',
             '|---|---|---|---|---|']

    def cell(m, b):
        v, w = stats[m], stats[b]
        return (f'{b} ({w[4]:.2f}), {w[0]:.2f} / {w[2]:.2f}, '
                f'**{v[0] - w[0]:+.2f}** / {v[2] - w[2]:+.2f}')

    for m, v in stats.items():
        if m in BASELINES:
            continue
        rich = {b: w for b, w in stats.items() if b in BASELINES and w[4] >= v[4]}
        if not rich:
            lines.append(f'| {m} | {v[4]:.2f} | {v[0]:.2f} / {v[2]:.2f} | none measured yet | none measured yet |')
            continue
        best = max(rich, key=lambda k: rich[k][0])
        cheapest = min(w[4] for w in rich.values())
        near = max((b for b, w in rich.items() if w[4] <= cheapest + 1e-9), key=lambda k: rich[k][0])
        lines.append(f'| {m} | {v[4]:.2f} | {v[0]:.2f} / {v[2]:.2f} | {cell(m, best)} | {cell(m, near)} |')
    return '\n'.join(lines)


def pareto_front(points: List[Tuple[float, float]]) -> List[Tuple[float, float]]:
    """The (cost, top-1) points no cheaper-or-equal point beats: what the best method buys at each compute."""
    front, best = [], -np.inf
    for cost, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((cost, acc))
            best = acc
    return front


def plot_cost(stats: Dict[str, Tuple[float, float, float, float, float]], path: Path, title: str, source: str) -> None:
    """Top-1 (online and EMA, mean ± std over seeds) against the compute of the whole run, in timm-Mixup runs of
    the budget, with the Pareto front of each; `stats`: method -> (top-1, std, EMA top-1, std, run cost)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, (col, name) in zip(axes, ((0, 'top-1'), (2, 'EMA top-1'))):
        for m, v in stats.items():
            samix = m.startswith(('samix', 'automix'))
            ax.errorbar(v[4], v[col], yerr=v[col + 1], fmt='o' if samix else 's', capsize=3,
                        color='tab:red' if samix else 'tab:blue', ms=4)
            ax.annotate(m, (v[4], v[col]), xytext=(3, 3), textcoords='offset points', fontsize=6)
        front = pareto_front([(v[4], v[col]) for v in stats.values()])
        ax.step([c for c, _ in front], [a for _, a in front], where='post', color='grey', lw=1, ls='--',
                label='Pareto front')
        ax.set_xscale('log')  # costs from 0.9 to 26: the cheap rows would crowd a linear axis
        top = max(v[4] for v in stats.values())
        ticks = [t for t in (1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48) if t <= 1.1 * top]
        ax.set_xticks(ticks, labels=[f'{t:g}' for t in ticks])
        ax.set_xlim(right=1.7 * top)  # room for the label of the costliest row
        ax.set_xlabel(f'run cost, log scale (x one timm Mixup run of the budget; {source})', fontsize=7)
        ax.set_ylabel(f'{name} (%), mean ± std over seeds')
        ax.legend(fontsize=7, loc='lower right')
        ax.set_title(f'{name}: {title}', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    global ROWS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data-dir', default='data/cluttered_mnist_1k')
    p.add_argument('--recipe', default=str(RECIPE), help='the train.py recipe every run trains (default: %(default)s)')
    p.add_argument('--rows', default=ROWS, help='rows file under --results (default: %(default)s)')
    p.add_argument('--prefix', default='accuracy', help='name of the table and picture under --results')
    p.add_argument('--methods', nargs='+', default=list(METHODS), choices=list(METHODS))
    p.add_argument('--seeds', nargs='+', type=int, default=[0])
    p.add_argument('--model', default=None, help="default: the recipe's")
    p.add_argument('--epochs', type=int, default=None, help="default: the recipe's")
    p.add_argument('--img-size', type=int, default=None, help="default: the recipe's")
    p.add_argument('--workers', type=int, default=1)
    p.add_argument('--jobs', type=int, default=1, help='runs side by side')
    p.add_argument('--threads', type=int, default=None, help='torch threads per run (default: 1 when --jobs > 1)')
    p.add_argument('--speed', default=str(REPO / 'bench' / 'results' / 'speed_bench_1k.json'),
                   help='speed.py JSON for the cost axis (made for the recipe: see docs/benchmarks.md)')
    p.add_argument('--speed-model', default=None, help="model entry of that JSON (default: the recipe's model)")
    p.add_argument('--output', default='output/bench_accuracy')
    p.add_argument('--results', default=str(REPO / 'bench' / 'results'))
    p.add_argument('--test-split', default='auto',
                   help="split evaluated once with each run's last weights and EMA (test_top1, test_ema_top1 in its "
                        "row): a larger held-out set than the per-epoch val; 'auto' = test when --data-dir has one, "
                        "'' = none")
    p.add_argument('--score', choices=('val', 'test'), default='val',
                   help="--table: rank on the per-epoch val split's last epoch or on --test-split's (rows without "
                        "one are left out)")
    p.add_argument('--table', action='store_true', help='only print the table of finished runs')
    p.add_argument('--compare', nargs=2, default=None, metavar=('A', 'B'), choices=list(METHODS),
                   help='only compare two methods of the finished runs (both top-1s: means, Welch t, paired seeds)')
    p.add_argument('--add-costs', action='store_true', help='write run_cost into the rows that lack it, then exit')
    p.add_argument('--recost', action='store_true',
                   help='rewrite run_cost of every row from the speed runs of COST_SPEED (after a re-timing), then exit')
    p.add_argument('--void-rows', type=float, default=None, metavar='UNIX_TIME',
                   help='mark the rows of the VOID methods finished before this time as void, then exit')
    p.add_argument('--train-images', type=int, default=None,
                   help='budget of the table (default: the --data-dir build, the recipe\'s when none is there)')
    args = p.parse_args()
    ROWS = args.rows
    recipe = yaml.safe_load(Path(args.recipe).read_text())
    for key in ('model', 'epochs', 'img_size'):
        if getattr(args, key) is None:
            setattr(args, key, recipe[key])
    args.speed_model = args.speed_model or recipe['model']
    data = dataset_id(args.data_dir)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    if args.threads is None and args.jobs > 1:
        args.threads = 1
    if args.test_split == 'auto':
        args.test_split = 'test' if (Path(args.data_dir) / 'test').is_dir() else ''
    elif args.test_split and not (Path(args.data_dir) / args.test_split).is_dir():
        raise SystemExit(f'--test-split {args.test_split}: no such folder in {args.data_dir}')
    images = args.train_images if args.train_images is not None else train_images(args.data_dir)
    if args.add_costs or args.recost:
        print(f'run_cost written into {add_costs(results, every=args.recost)} rows of {results / ROWS}')
        return
    if args.void_rows is not None:
        print(f'{void_rows(results, args.void_rows)} rows marked void in {results / ROWS}')
        return
    if not Path(args.data_dir).is_dir():  # the table and the runs read the build; the row rewrites above do not
        raise SystemExit(f'--data-dir {args.data_dir}: no such folder (build it first: docs/benchmarks.md names the '
                         f'command of each dataset)')
    if args.compare:
        by = select(results, args.model, args.epochs, args.img_size, images, args.compare, data, args.score)
        for key in ('top1', 'ema_top1'):
            print(f'{key}: {compare(by, *args.compare, key=key)}')
        return
    if not args.table:
        # rows from before the `data` field ran on the build of their rows file
        done = {(r['method'], r['seed'], *budget(r)) for r in _done(results) if r.get('data', data) == data}
        todo = [(m, s) for s in args.seeds for m in args.methods
                if (m, s, args.model, args.epochs, args.img_size, images) not in done]
        lock = threading.Lock()

        def _run(job):
            record = run_one(*job, args)
            with lock, open(results / ROWS, 'a') as f:
                f.write(json.dumps(record) + '\n')
            print(json.dumps(record), flush=True)

        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(_run, todo))
    text = table(results, Path(args.speed), args.speed_model, args.model, args.epochs, args.img_size, args.methods,
                 images, data=data, prefix=args.prefix + ('_test' if args.score == 'test' else ''), score=args.score)
    name = f'{args.prefix}{"_test" if args.score == "test" else ""}_{budget_name(args.model, args.epochs, args.img_size, images)}'
    (results / f'{name}.md').write_text(text + '\n')
    print(text)


if __name__ == '__main__':
    main()
