""" validate.py: evaluate a checkpoint on an ImageFolder with timm's validate.py argument names.

When `--model` / `--num-classes` are not given they are read from the checkpoint's saved
training arguments, so `python validate.py --data-dir D --checkpoint run/last.pth.tar` works.
"""
import argparse
import json
import logging
import pickle
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
from timm.data import create_dataset, create_loader, resolve_data_config
from timm.data.readers.class_map import load_class_map
from timm.models import create_model, is_model

from .args import ConfigError, ParseKwargs
from .loop import StepContext, evaluate
from .checkpoint import CLASSES_KEY, load_model_state, model_state, read_checkpoint
from .checks import check_kwargs_flags, check_new_file, check_numbers
from .setup import check_data_dir, check_num_classes, create_amp, folder_classes, local_device, split_folder

_logger = logging.getLogger(__name__)


def create_validate_parser() -> argparse.ArgumentParser:
    """Arguments of timm's validate.py that apply to single-checkpoint evaluation."""
    p = argparse.ArgumentParser(description='Evaluate a timm checkpoint (top-1/top-5, loss, img/s)')
    p.add_argument('data', nargs='?', metavar='DIR', const=None, help='dataset root (deprecated, use --data-dir)')
    p.add_argument('--data-dir', metavar='DIR', help='dataset root directory')
    p.add_argument('--dataset', metavar='NAME', default='', help='dataset type; empty = ImageFolder/ImageTar')
    p.add_argument('--split', metavar='NAME', default='validation', help='split (also finds val/)')
    p.add_argument('--class-map', default='', type=str, metavar='FILENAME', help='class to index map file')
    p.add_argument('--model', '-m', metavar='NAME', default=None, help='timm model (default: from checkpoint)')
    p.add_argument('--checkpoint', default='', type=str, metavar='PATH', help='checkpoint to evaluate')
    p.add_argument('--use-ema', action='store_true', default=False, help='evaluate the EMA weights')
    p.add_argument('--num-classes', type=int, default=None, help='classes (default: from checkpoint)')
    p.add_argument('--gp', default=None, type=str, metavar='POOL', help='global pool type')
    p.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs, help='extra create_model kwargs')
    p.add_argument('-j', '--workers', default=4, type=int, metavar='N', help='data loader workers')
    p.add_argument('-b', '--batch-size', default=256, type=int, metavar='N', help='batch size')
    p.add_argument('--img-size', default=None, type=int, metavar='N', help='image size')
    p.add_argument('--in-chans', type=int, default=None, metavar='N', help='input channels')
    p.add_argument('--input-size', default=None, nargs=3, type=int, metavar='N N N', help='input (d h w)')
    p.add_argument('--crop-pct', default=None, type=float, metavar='N', help='centre crop fraction')
    p.add_argument('--crop-mode', default=None, type=str, metavar='N', help='crop mode')
    p.add_argument('--mean', type=float, nargs='+', default=None, metavar='MEAN', help='dataset mean')
    p.add_argument('--std', type=float, nargs='+', default=None, metavar='STD', help='dataset std')
    p.add_argument('--interpolation', default='', type=str, metavar='NAME', help='resize interpolation')
    p.add_argument('--log-freq', default=10, type=int, metavar='N', help='unused, timm compatibility')
    p.add_argument('--device', default=None, type=str, help='device; default cuda if available, else cpu')
    p.add_argument('--amp', action='store_true', default=False, help='mixed precision')
    p.add_argument('--amp-dtype', default='float16', type=str, help='AMP dtype')
    p.add_argument('--amp-impl', default='native', type=str, help='AMP implementation (native only)')
    p.add_argument('--channels-last', action='store_true', default=False, help='channels_last layout')
    p.add_argument('--no-prefetcher', action='store_true', default=False, help='disable the prefetcher')
    p.add_argument('--pin-mem', action='store_true', default=False, help='pin loader memory')
    p.add_argument('--results-file', default='', type=str, metavar='FILENAME', help='write results as JSON')
    return p


def _fill_from_checkpoint(args, checkpoint: Dict) -> None:
    """Take --model, --num-classes and the data config the run trained with from the checkpoint."""
    saved = vars(checkpoint['args']) if isinstance(checkpoint.get('args'), argparse.Namespace) else {}
    for key in ('model', 'num_classes', 'img_size', 'input_size', 'mean', 'std', 'crop_pct', 'interpolation',
                'in_chans', 'gp'):
        if getattr(args, key) in (None, '') and saved.get(key) not in (None, ''):
            setattr(args, key, saved[key])


def check_class_map(args, trained: Dict[str, int]) -> None:
    """`--class-map` gives every class the label the checkpoint trained it with (`trained`, its class index):
    another map scored the model against shifted labels (top-1 0.0 without a word)."""
    root = args.data_dir
    if args.data_dir and not args.dataset and Path(args.data_dir).is_dir():
        root = str(split_folder(Path(args.data_dir), args.split, 'evaluation', '--split'))
    try:
        given = load_class_map(args.class_map, root or '')
    except (AssertionError, ValueError, OSError, UnicodeDecodeError, pickle.UnpicklingError) as e:
        raise ConfigError(f"--class-map '{args.class_map}' cannot be read ({e or type(e).__name__}): pass a .txt "
                          f"file of class names, one per line, or leave it out (the checkpoint's class index is "
                          f"used)") from None
    unknown = sorted(str(c) for c in given if c not in trained)
    moved = [c for c in given if c in trained and given[c] != trained[c]]
    if unknown or moved:
        detail = (f"'{moved[0]}' is label {given[moved[0]]} there and {trained[moved[0]]} in training" if moved else
                  f"it names classes the checkpoint was not trained on ({', '.join(unknown[:5])})")
        raise ConfigError(f"--class-map '{args.class_map}' disagrees with the class index the checkpoint was "
                          f"trained with ({detail}): leave --class-map out (validate.py reads the split with the "
                          f"checkpoint's index), or pass the map the run trained with")


def split_class_map(args, checkpoint: Optional[Dict], num_classes: int):
    """The class index to read the split with: --class-map, else the one the checkpoint trained with; without
    either, a split with another class count than the model is refused (its labels would shift)."""
    trained = (checkpoint or {}).get(CLASSES_KEY)
    if args.class_map and trained:
        check_class_map(args, trained)
    if args.class_map or args.dataset or Path(args.data_dir).is_file():
        return args.class_map
    folder = split_folder(Path(args.data_dir), args.split, 'evaluation', '--split')
    found = folder_classes(folder)
    if trained:
        extra = sorted(set(found) - set(trained))
        if extra:
            raise ConfigError(f"{folder} has classes the checkpoint was not trained on ({', '.join(extra[:5])}): "
                              f"evaluate a split with the training classes only")
        return trained
    if len(found) != num_classes:
        raise ConfigError(f'{folder} has {len(found)} classes and the model {num_classes} outputs: its labels would '
                          f'not match the training ones; pass --class-map with the training class names '
                          f'(a .txt file, one per line)')
    return ''


def validate(args) -> Dict[str, float]:
    """Evaluate `args.checkpoint` (timm-loadable state_dict) on `args.data_dir`/`args.split`."""
    check_numbers(args)
    if args.results_file:
        check_new_file('results_file', args.results_file)  # before the evaluation, and never over an old file
    checkpoint = None
    if args.checkpoint:
        checkpoint = read_checkpoint(args.checkpoint, '--checkpoint')
        _fill_from_checkpoint(args, checkpoint)
    if not args.model:
        raise ConfigError('no model given: pass --model NAME (or a --checkpoint written by train.py)')
    if not is_model(args.model):
        raise ConfigError(f"unknown timm model '{args.model}': pick a name from timm.list_models()")
    check_data_dir(args)
    check_kwargs_flags('model_kwargs', args.model_kwargs,
                       dict(num_classes='--num-classes', in_chans='--in-chans', global_pool='--gp'))
    device = local_device(args.device)
    args.device = str(device)
    amp_autocast, _ = create_amp(args, device)
    in_chans = args.in_chans or (args.input_size[0] if args.input_size else 3)
    model = create_model(args.model, num_classes=args.num_classes, in_chans=in_chans, global_pool=args.gp,
                         **args.model_kwargs)
    if checkpoint is not None:
        state = model_state(checkpoint, args.checkpoint, '--checkpoint', use_ema=args.use_ema)
        load_model_state(model, state, args.checkpoint, '--checkpoint', checkpoint.get('args'))
    data_config = resolve_data_config(vars(args), model=model, use_test_size=True)
    dataset = create_dataset(args.dataset, root=args.data_dir, split=args.split,
                             class_map=split_class_map(args, checkpoint, model.num_classes))
    check_num_classes(model.num_classes, dataset, args.split)
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    loader = create_loader(
        dataset, input_size=data_config['input_size'], batch_size=args.batch_size,
        use_prefetcher=not args.no_prefetcher, interpolation=data_config['interpolation'],
        mean=data_config['mean'], std=data_config['std'], num_workers=args.workers,
        crop_pct=data_config['crop_pct'], crop_mode=data_config['crop_mode'], pin_memory=args.pin_mem,
        device=device, persistent_workers=False)
    ctx = StepContext(device=device, amp_autocast=amp_autocast, channels_last=args.channels_last)
    metrics = evaluate(model, loader, ctx)
    results = dict(model=args.model, checkpoint=args.checkpoint, split=args.split, num_images=len(dataset),
                   top1=round(metrics['top1'], 4), top5=round(metrics['top5'], 4), loss=round(metrics['loss'], 6),
                   img_per_s=round(metrics['img_per_s'], 2), input_size=list(data_config['input_size']))
    if args.results_file:
        Path(args.results_file).parent.mkdir(parents=True, exist_ok=True)
        with open(args.results_file, 'x') as f:
            f.write(json.dumps(results, indent=2))
    return results


def parse_validate_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse validate.py's command line."""
    return create_validate_parser().parse_args(argv)
