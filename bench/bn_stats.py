#!/usr/bin/env python3
""" Are a run's BatchNorm running statistics what costs it top-1? Evaluate a checkpoint as saved, then again after
re-estimating every BatchNorm's running mean/var from clean training images (the model in train mode, no
gradient, a cumulative average over the batches; "precise BN"), for the weights and the EMA weights.

A large gain says the running statistics the run kept are not those of clean images (e.g. a step whose
BatchNorm saw mostly mixed images), not that the weights are worse. Each row also has the top-1 on the clean
training images as saved (`train_top1`): near 100 with a low top-1 says the run fits its training set and
generalises worse, not that it trained too little.

    python bench/bn_stats.py --data-dir data/cluttered_mnist_1k --runs output/bench_accuracy/samix_quarter-s0 \
        --out bench/results/bn_stats.jsonl
"""
import argparse
import json
import sys
from contextlib import nullcontext
from pathlib import Path

import torch
from timm.data import create_dataset, create_loader, resolve_data_config
from timm.models import create_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from samix_timm.engine.checkpoint import CLASSES_KEY, load_model_state, model_state, read_checkpoint  # noqa: E402
from samix_timm.engine.loop import StepContext, evaluate  # noqa: E402


def loader_of(data_dir: str, split: str, data_config, classes, batch_size: int):
    dataset = create_dataset('', root=data_dir, split=split, class_map=classes or '')
    return create_loader(dataset, input_size=data_config['input_size'], batch_size=batch_size, use_prefetcher=False,
                         interpolation=data_config['interpolation'], mean=data_config['mean'],
                         std=data_config['std'], num_workers=0, crop_pct=data_config['crop_pct'])


@torch.no_grad()
def recompute_bn(model: torch.nn.Module, loader, batches: int) -> None:
    """Running statistics of every BatchNorm from `batches` clean batches, a cumulative average (momentum None)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for i, (x, _) in enumerate(loader):
        if i == batches:
            break
        model(x)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.eval()


def measure(run: Path, args) -> dict:
    checkpoint = read_checkpoint(run / 'last.pth.tar', '--runs')
    saved = vars(checkpoint['args'])
    row = dict(run=str(run), model=saved['model'], mixup=saved.get('mixup'), preset=saved.get('samix_preset'),
               seed=saved.get('seed'), bn_batches=args.batches, bn_batch_size=args.batch_size)
    ctx = StepContext(device=torch.device('cpu'), amp_autocast=nullcontext, channels_last=False)
    for ema in (False, True):
        model = create_model(saved['model'], num_classes=saved['num_classes'])
        load_model_state(model, model_state(checkpoint, str(run), '--runs', use_ema=ema), str(run), '--runs',
                         checkpoint.get('args'))
        config = resolve_data_config(saved, model=model)
        classes = checkpoint.get(CLASSES_KEY)
        val = loader_of(args.data_dir, 'validation', config, classes, 250)
        key = 'ema_' if ema else ''
        model.eval()
        row[f'{key}top1'] = round(evaluate(model, val, ctx)['top1'], 2)
        train = loader_of(args.data_dir, 'train', config, classes, args.batch_size)
        row[f'{key}train_top1'] = round(evaluate(model, train, ctx)['top1'], 2)
        recompute_bn(model, train, args.batches)
        row[f'{key}top1_clean_bn'] = round(evaluate(model, val, ctx)['top1'], 2)
    return row


def summary(rows) -> str:
    """Markdown: per run folder name without its seed, the mean top-1 as saved and with clean BN statistics."""
    groups = {}
    for r in rows:
        groups.setdefault(Path(r['run']).name.rsplit('-s', 1)[0], []).append(r)
    lines = ['| runs of | n | top-1 as saved | with clean BN statistics | EMA top-1 as saved | EMA with clean BN | '
             'top-1 on the training images (EMA) |',
             '|---|---|---|---|---|---|---|']
    for name, rs in sorted(groups.items()):
        mean = lambda k: sum(r[k] for r in rs) / len(rs)  # noqa: E731
        lines.append(f"| {name} | {len(rs)} | {mean('top1'):.2f} | {mean('top1_clean_bn'):.2f} "
                     f"({mean('top1_clean_bn') - mean('top1'):+.2f}) | {mean('ema_top1'):.2f} | "
                     f"{mean('ema_top1_clean_bn'):.2f} ({mean('ema_top1_clean_bn') - mean('ema_top1'):+.2f}) | "
                     + (f"{mean('train_top1'):.2f} ({mean('ema_train_top1'):.2f}) |"
                        if all('train_top1' in r for r in rs) else 'not measured |'))
    return '\n'.join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    p.add_argument('--data-dir', required=True)
    p.add_argument('--runs', nargs='*', default=[], help='run folders with a last.pth.tar')
    p.add_argument('--batches', type=int, default=20, help='clean training batches for the statistics')
    p.add_argument('--batch-size', type=int, default=50, help='the recipe batch')
    p.add_argument('--out', default=None, help='append one JSON row per run (runs already in it are skipped)')
    args = p.parse_args()
    torch.manual_seed(0)
    done = ([json.loads(line) for line in Path(args.out).read_text().splitlines() if line.strip()]
            if args.out and Path(args.out).exists() else [])
    for run in args.runs:
        if any(r['run'] == str(run) for r in done):
            continue
        row = measure(Path(run), args)
        print(json.dumps(row))
        done.append(row)
        if args.out:
            with open(args.out, 'a') as f:
                f.write(json.dumps(row) + '\n')
    print(summary(done))


if __name__ == '__main__':
    main()
