""" `create_mixup`: the one place train.py turns `--mixup/--cutmix` into a batch mixer.

A numeric `--mixup`/`--cutmix` gives timm's own `Mixup` (unchanged behaviour); a method name
(`--mixup samix`) looks the method up in a small registry.
"""
from typing import Callable, Dict, Optional

import torch.nn as nn
from timm.data import Mixup

from .errors import ConfigError


def mixing_active(args) -> bool:
    """True when `args` asks for any batch mixing (timm's rule, plus method names)."""
    if isinstance(args.mixup, str):
        return True
    return args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None


def _create_timm_mixup(args, model: nn.Module, num_classes: int) -> Mixup:
    if args.batch_size % 2:
        raise ConfigError(f'timm Mixup/CutMix needs an even batch size, got --batch-size {args.batch_size}: '
                          f'use {args.batch_size + 1}')
    return Mixup(
        mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
        prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
        label_smoothing=args.smoothing, num_classes=num_classes)


def _create_samix(args, model: nn.Module, num_classes: int):
    raise ConfigError('--mixup samix is not available yet in this version: use a float alpha '
                      '(e.g. --mixup 0.8) until the SAMix core lands')


# method name -> builder(args, model, num_classes)
MIXUP_METHODS: Dict[str, Callable] = {'samix': _create_samix}


def create_mixup(args, model: nn.Module, num_classes: int) -> Optional[Callable]:
    """timm `Mixup` for numeric alphas, a registered method for `--mixup NAME`, None when off."""
    if not mixing_active(args):
        return None
    if isinstance(args.mixup, str):
        return MIXUP_METHODS[args.mixup](args, model, num_classes)
    return _create_timm_mixup(args, model, num_classes)
