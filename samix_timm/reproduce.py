""" Reproduction harness of docs/reproduce.md: run recipes from configs/, collect `summary.csv`, print the table.

    python -m samix_timm.reproduce --configs configs/in1k/pt100_resnet50_samix.yaml --nproc 4 --data-dir $IMAGENET
    python -m samix_timm.reproduce --configs configs/small/cifar100_*.yaml --data-dir D --epochs 2 --img-size 32 \\
        --extra -b 4 --workers 0                  # a toy smoke run on CPU
    python -m samix_timm.reproduce --collect output/train/pt100_resnet50_samix ...   # table of finished runs
    python -m samix_timm.reproduce --measure-cost --configs ... [--device cuda]      # img/s -> device-hours
    python -m samix_timm.reproduce --markdown                                         # the docs table

The expected numbers (spec §8, with their source) live in `EXPECTED`, keyed by config name
`<recipe>_<model>_<method>`; `RECIPES` holds what a YAML cannot (GPU count of the reference run,
dataset size, the paper's metric). Metric (OpenMixup's convention, spec §8): median top-1 of the
last 5 (≤ 100-epoch recipes) or 10 epochs for CNNs, best epoch for transformers; online and EMA.
"""
import argparse
import csv
import glob
import logging
import math
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

_logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
IMAGENET_TRAIN = 1_281_167


@dataclass(frozen=True)
class Recipe:
    """A recipe family of configs/ (the first `_`-separated part of a config name).

    Args:
        gpus: GPUs of the reference run; global batch = gpus x the YAML's batch_size.
        train_images: training images per epoch (cost estimates).
        data: placeholder of the dataset root in the commands.
        metric: 'median' (of the last `last` epochs) or 'best'.
        last: epochs the median is taken over.
        test_img_size: evaluation size when it differs from training (RSB A3: 160 train, 224 test).
        extra: train.py arguments a full run needs besides the YAML (fine-tuning weights).
    """
    gpus: int
    train_images: int
    data: str
    metric: str = 'median'
    last: int = 10
    test_img_size: Optional[int] = None
    extra: Tuple[str, ...] = ()


RECIPES: Dict[str, Recipe] = {
    'pt100': Recipe(4, IMAGENET_TRAIN, '$IMAGENET', last=5),
    'pt300': Recipe(4, IMAGENET_TRAIN, '$IMAGENET'),
    'rsb-a3': Recipe(8, IMAGENET_TRAIN, '$IMAGENET', last=5, test_img_size=224),
    'rsb-a2': Recipe(8, IMAGENET_TRAIN, '$IMAGENET'),
    'rsb-a1': Recipe(8, IMAGENET_TRAIN, '$IMAGENET'),
    'deit300': Recipe(8, IMAGENET_TRAIN, '$IMAGENET', metric='best'),
    'swin300': Recipe(8, IMAGENET_TRAIN, '$IMAGENET', metric='best'),
    'cifar100': Recipe(1, 50_000, '$CIFAR100'),
    'tiny-imagenet': Recipe(1, 100_000, '$TINY_IMAGENET'),
    'cub200': Recipe(1, 5_994, '$CUB200', extra=('--pretrained',)),
}

# where an expected number comes from
SOURCES = {
    '§8': 'spec §8 (OpenMixup benchmark docs)',
    'OM': 'OpenMixup README of that benchmark (not in spec §8)',
    'RSB': 'ResNet strikes back, Table 1',
}


@dataclass(frozen=True)
class Expected:
    """Expected ImageNet/small-data top-1 of one config.

    Args:
        top1: the number to compare with, None when no comparable published number exists.
        source: key of `SOURCES` ('—' when there is no number).
        note: a caveat shown next to the number.
    """
    top1: Optional[float]
    source: str = '§8'
    note: str = ''


def _expected_table() -> Dict[str, Expected]:
    table = {}
    methods = ('mixup', 'cutmix', 'automix', 'samix')
    pytorch_style = {  # (recipe, model): (Mixup, CutMix, AutoMix, SAMix), source
        ('pt100', 'resnet18'): ((69.98, 68.95, 70.50, 70.83), '§8'),
        ('pt100', 'resnet34'): ((73.97, 73.58, 74.52, 74.95), 'OM'),
        ('pt100', 'resnet50'): ((77.12, 77.17, 77.91, 78.14), '§8'),
        ('pt100', 'resnet101'): ((78.97, 78.96, 79.87, 80.05), 'OM'),
        ('pt100', 'resnext101_32x4d'): ((79.98, 80.42, 80.89, 80.98), 'OM'),
        ('pt300', 'resnet18'): ((71.72, 71.01, 72.05, 72.27), '§8'),
        ('pt300', 'resnet34'): ((75.73, 75.16, 76.10, 76.28), 'OM'),
        ('pt300', 'resnet50'): ((78.44, 78.69, 79.25, 79.39), '§8'),
        ('pt300', 'resnet101'): ((80.60, 80.59, 80.98, 81.10), 'OM'),
        ('pt300', 'resnext101_32x4d'): ((None,) * 4, 'OM'),
    }
    for (recipe, model), (values, source) in pytorch_style.items():
        for method, top1 in zip(methods, values):
            table[f'{recipe}_{model}_{method}'] = Expected(top1, source if top1 else '—')
    table['pt100_resnet50_samix'] = Expected(78.14, '§8', 'the OpenMixup README lists 78.06')
    recipe_rows = {  # config prefix: (the recipe's own mixing or None, {method: Expected})
        'rsb-a3_resnet50': ('rsb', dict(rsb=Expected(78.08), mixup=Expected(77.66), cutmix=Expected(77.62),
                                        automix=Expected(78.44), samix=Expected(78.64))),
        'rsb-a2_resnet50': ('rsb', dict(rsb=Expected(79.80, 'OM'), cutmix=Expected(79.38, 'OM'))),
        'rsb-a1_resnet50': ('rsb', dict(rsb=Expected(80.4, 'RSB'))),
        'deit300_deit_small_patch16_224': ('deit', dict(
            deit=Expected(79.80), mixup=Expected(77.72), cutmix=Expected(80.13), automix=Expected(80.78),
            samix=Expected(80.94))),
        'swin300_swin_tiny_patch4_window7_224': ('swin', dict(
            swin=Expected(81.20), mixup=Expected(81.01),
            cutmix=Expected(81.33, '§8', 'the OpenMixup README lists 81.23'),
            automix=Expected(81.80), samix=Expected(81.87))),
        'cub200_resnet18': (None, dict(mixup=Expected(78.39, 'OM'), cutmix=Expected(78.40, 'OM'),
                                       automix=Expected(79.87, 'OM'), samix=Expected(81.11, 'OM'))),
    }
    for prefix, (baseline, known) in recipe_rows.items():
        for method in ((baseline,) if baseline else ()) + methods:
            table[f'{prefix}_{method}'] = known.get(method, Expected(None, '—'))
    stem_note = "not comparable: OpenMixup's CIFAR ResNet-18 has a 3x3 stride-1 stem, timm's resnet18 does not"
    for prefix, om in (('cifar100_resnet18', (79.12, 78.17, 82.04, 82.30)),
                       ('tiny-imagenet_resnet18', (63.86, 65.53, 67.33, 68.89))):
        for method, ref in zip(methods, om):
            table[f'{prefix}_{method}'] = Expected(None, '—', f'{stem_note} (OpenMixup: {ref:.2f})')
    return table


EXPECTED: Dict[str, Expected] = _expected_table()


def split_name(stem: str) -> Tuple[str, str, str]:
    """`pt100_resnext101_32x4d_samix` -> ('pt100', 'resnext101_32x4d', 'samix')."""
    recipe, rest = stem.split('_', 1)
    model, method = rest.rsplit('_', 1)
    return recipe, model, method


METHOD_ORDER = ('mixup', 'cutmix', 'rsb', 'deit', 'swin', 'automix', 'samix')


def table_order(path: Path):
    """Sort key: recipes as in `RECIPES`, models by size (resnet18 < resnet101), methods as in §8."""
    recipe, model, method = split_name(path.stem)
    natural = [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', model)]
    return (list(RECIPES).index(recipe) if recipe in RECIPES else len(RECIPES), natural,
            METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER))


def list_configs(root: Path = REPO / 'configs') -> List[Path]:
    """The recipe YAMLs of the reproduction table (configs/<group>/*.yaml; the quickstart is not one,
    nor are the train_ssl.py recipes of configs/ssl/)."""
    return sorted((p for p in root.glob('*/*.yaml') if p.parent.name != 'ssl'), key=table_order)


def config_path(stem: str) -> Optional[Path]:
    """configs/<group>/<stem>.yaml of this checkout, None if there is none."""
    found = sorted((REPO / 'configs').glob(f'*/{stem}.yaml'))
    return found[0] if found else None


def read_config(path) -> Dict:
    with open(path) as f:
        return yaml.safe_load(f) or {}


def is_transformer(model: str) -> bool:
    from .defaults import is_transformer as _is_transformer
    return _is_transformer(model)


# -- the paper's metric -------------------------------------------------------------------------------

def paper_metric(values: Sequence[float], metric: str, last: int) -> Optional[float]:
    """Median of the last `last` epochs (CNNs) or the best epoch (transformers); None without epochs."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return None
    return max(values) if metric == 'best' else statistics.median(values[-last:])


@dataclass
class RunResult:
    """One finished (or failed) run, as a row of the table."""
    config: str
    run_dir: Optional[Path]
    epochs_done: int = 0
    epochs: int = 0
    top1: Optional[float] = None
    ema_top1: Optional[float] = None
    test_top1: Optional[float] = None
    error: str = ''


def _column(rows: List[Dict], key: str) -> List[float]:
    return [float(r[key]) for r in rows if r.get(key) not in (None, '')]


def collect(run_dir, data_dir: Optional[str] = None, test_size: bool = True) -> RunResult:
    """Read a train.py run folder (args.yaml + summary.csv) and apply the paper's metric of its recipe.

    Recipes evaluated at another size than they train at (RSB A3: 160 -> 224 px) also get their last
    checkpoint evaluated at the test size with validate.py's code, unless the run overrode the
    recipe's resolution (smoke runs) or `test_size` is False; `data_dir` overrides args.yaml's.
    """
    run_dir = Path(run_dir)
    args = read_config(run_dir / 'args.yaml')
    config = Path(args.get('config') or '')
    stem = config.stem or args.get('experiment') or run_dir.name
    recipe = RECIPES.get(stem.split('_')[0], Recipe(1, 0, ''))
    if not (run_dir / 'summary.csv').is_file():
        return RunResult(config=stem, run_dir=run_dir, error='no summary.csv (no finished epoch)')
    with open(run_dir / 'summary.csv') as f:
        rows = list(csv.DictReader(f))
    last = min(recipe.last, len(rows)) or 1
    result = RunResult(
        config=stem, run_dir=run_dir, epochs_done=len(rows), epochs=int(args.get('epochs') or len(rows)),
        top1=paper_metric(_column(rows, 'eval_top1'), recipe.metric, last),
        ema_top1=paper_metric(_column(rows, 'eval_ema_top1'), recipe.metric, last))
    yaml_path = config if config.is_file() else config_path(stem)
    recipe_size = read_config(yaml_path).get('img_size') if yaml_path else None
    checkpoint = run_dir / 'last.pth.tar'
    if test_size and recipe.test_img_size and args.get('img_size') == recipe_size and checkpoint.is_file():
        from .engine.validate import parse_validate_args, validate
        vargs = parse_validate_args([
            '--data-dir', data_dir or args['data_dir'], '--checkpoint', str(checkpoint),
            '--img-size', str(recipe.test_img_size), '--crop-pct', str(args.get('crop_pct') or 0.95),
            '--workers', str(args.get('workers', 4)), '--device', args.get('device') or 'cpu'])
        result.test_top1 = validate(vargs)['top1']
    return result


# -- the table (docs/reproduce.md format) ------------------------------------------------------------

TABLE_HEADER = ('| config | GPUs × batch | commands (single node; 2 nodes, same global batch) | expected top-1 '
                '| measured top-1 (online / EMA) | metric | cost |\n|---|---|---|---|---|---|---|')


def commands(path: Path) -> Tuple[str, str]:
    """(single-node, two-node) commands of a config, keeping the recipe's global batch."""
    stem = path.stem
    recipe = RECIPES[split_name(stem)[0]]
    cfg = path.relative_to(REPO) if path.is_absolute() and REPO in path.parents else path
    tail = f'train.py -c {cfg} --data-dir {recipe.data}' + ''.join(f' {a}' for a in recipe.extra)
    if recipe.gpus == 1:
        return f'python {tail}', '—'
    batch = read_config(path)['batch_size']
    return (f'torchrun --nproc_per_node {recipe.gpus} {tail}',
            f'torchrun --nnodes 2 --nproc_per_node {recipe.gpus} --rdzv-backend c10d --rdzv-endpoint $HOST:29500 '
            f'{tail} -b {batch // 2}')


def format_expected(stem: str) -> str:
    e = EXPECTED.get(stem, Expected(None, '—'))
    text = f'{e.top1:.2f} ({e.source})' if e.top1 is not None else '—'
    return f'{text}; {e.note}' if e.note else text


def _pct(v: Optional[float]) -> str:
    return '—' if v is None else f'{v:.2f}'


def metric_text(stem: str, result: Optional[RunResult] = None) -> str:
    """The paper's metric of a recipe, plus the length of `result` when it is not the recipe's."""
    recipe = RECIPES[split_name(stem)[0]]
    text = 'best epoch' if recipe.metric == 'best' else f'median of last {recipe.last} ep'
    if recipe.test_img_size:
        text += f' (paper: tested at {recipe.test_img_size} px; train.py evaluates at the training size)'
    path = config_path(stem)
    planned = read_config(path).get('epochs') if path else None
    if result is not None and result.epochs_done and result.epochs_done != planned:
        text += f' (this run: {result.epochs_done} of {planned} ep)'
    return text


def table_row(path: Path, result: Optional[RunResult] = None, cost: str = '') -> str:
    """One row of the docs table; `result` fills the measured column."""
    stem = path.stem
    recipe = RECIPES[split_name(stem)[0]]
    single, multi = commands(path)
    measured = ''
    if result is not None:
        measured = result.error or f'{_pct(result.top1)} / {_pct(result.ema_top1)}'
        if result.test_top1 is not None:
            measured += f'; last epoch at {recipe.test_img_size} px: {result.test_top1:.2f}'
    batch = read_config(path).get('batch_size')
    multi = f'`{multi}`' if multi != '—' else multi
    return (f'| {stem} | {recipe.gpus} × {batch} | `{single}`<br>{multi} | {format_expected(stem)} | {measured} '
            f'| {metric_text(stem, result)} | {cost} |')


def format_table(paths: Sequence[Path], results: Optional[Dict[str, RunResult]] = None,
                 costs: Optional[Dict[str, str]] = None) -> str:
    results, costs = results or {}, costs or {}
    return '\n'.join([TABLE_HEADER] + [table_row(p, results.get(p.stem), costs.get(p.stem, '')) for p in paths])


# -- running train.py --------------------------------------------------------------------------------

def smoke_overrides(cfg: Dict, img_size: Optional[int] = None, nproc: int = 1) -> List[str]:
    """train.py arguments a reduced run needs besides --data-dir/--epochs/--img-size.

    Transformers get `--model-kwargs img_size=N` (timm builds ViT/Swin for a fixed size), and a
    single process cannot use repeated augmentation (timm's RepeatAugSampler is distributed-only).
    """
    extra = []
    if img_size is not None and is_transformer(str(cfg.get('model', ''))):
        extra += ['--model-kwargs', f'img_size={img_size}']
    if nproc == 1 and cfg.get('aug_repeats'):
        extra += ['--aug-repeats', '0']
    return extra


def train_command(path: Path, output: Path, nproc: int = 1, data_dir: Optional[str] = None,
                  epochs: Optional[int] = None, img_size: Optional[int] = None, extra: Sequence[str] = (),
                  pretrained: bool = True) -> List[str]:
    """The train.py command line of one config (python for 1 process, torchrun for more)."""
    launcher = [sys.executable] if nproc == 1 else [sys.executable, '-m', 'torch.distributed.run',
                                                    '--nproc_per_node', str(nproc)]
    cmd = launcher + [str(REPO / 'train.py'), '--config', str(path), '--output', str(output)]
    if data_dir:
        cmd += ['--data-dir', str(data_dir)]
    if epochs is not None:
        cmd += ['--epochs', str(epochs)]
    if img_size is not None:
        cmd += ['--img-size', str(img_size)]
    cmd += smoke_overrides(read_config(path), img_size, nproc)
    recipe = RECIPES.get(split_name(path.stem)[0])
    cmd += [a for a in (recipe.extra if recipe else ()) if pretrained or a != '--pretrained']
    return cmd + list(extra)


def run_config(path: Path, output: Path, **kwargs) -> RunResult:
    """Run train.py for one config (log in OUTPUT/<config>.log) and collect its run folder."""
    output.mkdir(parents=True, exist_ok=True)
    log = output / f'{path.stem}.log'
    cmd = train_command(path, output, **kwargs)
    _logger.info(f'{path.stem}: {" ".join(cmd)}  (log: {log})')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')])))
    with open(log, 'w') as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    text = log.read_text()
    found = re.findall(r'^\s*summary:\s+(.+)\s*$', text, re.M)  # printed by train.py at the end
    if proc.returncode != 0 or not found:
        lines = [line for line in text.splitlines() if line.strip()]
        return RunResult(config=path.stem, run_dir=None, error=f'failed ({lines[-1][:120] if lines else "no output"})')
    return collect(Path(found[-1].strip()).parent, kwargs.get('data_dir'))


# -- cost: measured images/s -> device-hours ----------------------------------------------------------

def measure_cost(path: Path, device: str = 'cpu', batch_size: Optional[int] = None, steps: int = 3,
                 img_size: Optional[int] = None, amp: Optional[bool] = None, repeats: int = 1) -> float:
    """Training images/s of one process for a config: model, loss, optimizer, mixing (SAMix trains its
    Mixer) and EMA as train.py wires them, on random tensors (no data loading, no evaluation).
    One warm-up step is not timed; of `repeats` timings of `steps` steps the fastest counts (the least
    disturbed by other load). `amp` None keeps the recipe's setting on CUDA and turns it off on CPU
    (no fp16 there; bfloat16 autocast is slower than fp32 on most CPUs)."""
    import torch
    from timm.data import resolve_data_config
    from timm.optim import create_optimizer_v2, optimizer_kwargs
    from timm.utils import ModelEmaV3

    from .engine.args import parse_train_args
    from .engine.loop import StepContext, train_one_epoch
    from .engine.setup import create_amp, create_train_loss, resolve_device
    from .engine.train import build_model, resolve_lr
    from .factory import create_mixup, mixing_active

    cfg = read_config(path)
    argv = ['--config', str(path), '--device', device, *smoke_overrides(cfg, img_size)]
    if batch_size:
        argv += ['--batch-size', str(batch_size)]
    if img_size:
        argv += ['--img-size', str(img_size)]
    args, _ = parse_train_args(argv)
    args.amp = (device != 'cpu' and args.amp) if amp is None else amp
    dev = resolve_device(args)
    amp_autocast, scaler = create_amp(args, dev)
    model = build_model(args, args.num_classes).to(dev)
    resolve_lr(args)
    optimizer = create_optimizer_v2(model, **optimizer_kwargs(cfg=args), **args.opt_kwargs)
    recipe = RECIPES.get(split_name(path.stem)[0], Recipe(1, 10_000, ''))
    data_config = resolve_data_config(vars(args), model=model)
    size = data_config['input_size'][-1]
    mixup_fn = create_mixup(args, model, args.num_classes, data_config=data_config,
                            steps_per_epoch=max(1, recipe.train_images // (args.batch_size * recipe.gpus)),
                            train_size=recipe.train_images, amp_autocast=amp_autocast, fp16_scaler=scaler is not None)
    ema = ModelEmaV3(model, decay=args.model_ema_decay) if args.model_ema else None
    loss_fn = create_train_loss(args, mixing_active(args)).to(dev)
    ctx = StepContext(device=dev, amp_autocast=amp_autocast, loss_scaler=scaler, clip_grad=args.clip_grad,
                      clip_mode=args.clip_mode, log_interval=10 ** 9, is_primary=False)
    batch = (torch.randn(args.batch_size, 3, size, size, device=dev),
             torch.randint(0, args.num_classes, (args.batch_size,), device=dev))

    def run(n: int) -> float:
        if dev.type == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        train_one_epoch(0, model, [batch] * n, optimizer, loss_fn, ctx, model_ema=ema, mixup_fn=mixup_fn)
        if dev.type == 'cuda':
            torch.cuda.synchronize()
        return time.perf_counter() - start

    run(1)
    return max(steps * args.batch_size / run(steps) for _ in range(repeats))


def device_hours(images_per_s: float, epochs: int, train_images: int) -> float:
    """Device-hours of a run (summed over devices; wall time = this / devices, if scaling is linear)."""
    return epochs * train_images / images_per_s / 3600


def cost_text(path: Path, images_per_s: float, device: str, threads: Optional[int] = None) -> str:
    """`0.2 img/s (cpu, 1 thread) → 1,234 cpu-hours` for the recipe's epochs and dataset size."""
    recipe = RECIPES[split_name(path.stem)[0]]
    hours = device_hours(images_per_s, read_config(path)['epochs'], recipe.train_images)
    where = f'{device}, {threads} thread{"s" if threads != 1 else ""}' if threads else device
    return f'{images_per_s:.3g} img/s ({where}) → {hours:,.0f} {device}-hours'


# -- command line -------------------------------------------------------------------------------------

def _expand(patterns: Sequence[str]) -> List[Path]:
    paths = []
    for p in patterns:
        paths += [Path(m).resolve() for m in sorted(glob.glob(p))] or [Path(p).resolve()]
    return paths


def create_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description='Run/collect the reproduction table of docs/reproduce.md')
    p.add_argument('--configs', nargs='+', default=None, help='config YAMLs (default: every recipe in configs/)')
    p.add_argument('--collect', nargs='+', default=None, metavar='RUN_DIR', help='only collect finished run folders')
    p.add_argument('--markdown', action='store_true', help='print the docs table of the configs (no runs)')
    p.add_argument('--measure-cost', action='store_true', help='time training steps, print img/s and device-hours')
    p.add_argument('--data-dir', default=None, help='dataset root (overrides nothing else)')
    p.add_argument('--epochs', type=int, default=None, help='override the recipe epochs (smoke runs)')
    p.add_argument('--img-size', type=int, default=None, help='override the training resolution (smoke runs)')
    p.add_argument('--output', default='output/reproduce', help='root of the run folders and logs')
    p.add_argument('--nproc', type=int, default=1, help='processes per run (torchrun when > 1)')
    p.add_argument('--skip-pretrained', action='store_true',
                   help='do not add --pretrained to fine-tuning recipes (offline smoke runs)')
    p.add_argument('--device', default='cpu', help='device of --measure-cost')
    p.add_argument('--cost-batch', type=int, default=None, help='batch of --measure-cost (default: the recipe)')
    p.add_argument('--cost-steps', type=int, default=3, help='timed steps of --measure-cost')
    p.add_argument('--cost-repeats', type=int, default=1, help='timings per config; the fastest counts')
    p.add_argument('--extra', nargs=argparse.REMAINDER, default=[], help='further train.py arguments (last)')
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    args = create_parser().parse_args(argv)
    if args.collect:
        results = [collect(d, data_dir=args.data_dir) for d in args.collect]
        paths = [config_path(r.config) or Path(f'{r.config}.yaml') for r in results]
        print(format_table(paths, {r.config: r for r in results}))
        return 0
    paths = _expand(args.configs) if args.configs else list_configs()
    if args.markdown:
        print(format_table(paths))
        return 0
    if args.measure_cost:
        import torch
        costs, seen = {}, {}
        for path in paths:
            cfg = read_config(path)
            mixing = f"samix:{cfg.get('samix_mixer')}" if cfg.get('mixup') == 'samix' else 'timm'  # Mixup = CutMix
            key = (cfg['model'], args.img_size or cfg.get('img_size'), mixing, cfg.get('opt'),
                   bool(cfg.get('model_ema')))
            if key not in seen:
                seen[key] = measure_cost(path, args.device, args.cost_batch, args.cost_steps, args.img_size,
                                         repeats=args.cost_repeats)
            threads = torch.get_num_threads() if args.device == 'cpu' else None
            costs[path.stem] = cost_text(path, seen[key], args.device, threads)
            print(f'{path.stem}: {costs[path.stem]}', flush=True)
        print(format_table(paths, costs=costs))
        return 0
    results = {}
    for path in paths:
        results[path.stem] = run_config(
            path, Path(args.output).resolve(), nproc=args.nproc, data_dir=args.data_dir, epochs=args.epochs,
            img_size=args.img_size, extra=args.extra, pretrained=not args.skip_pretrained)
    print(format_table(paths, results))
    return 1 if any(r.error for r in results.values()) else 0


if __name__ == '__main__':
    sys.exit(main())
