""" `create_mixup`: the one place train.py turns `--mixup/--cutmix` into a batch mixer.

A numeric `--mixup`/`--cutmix` gives timm's own `Mixup` (unchanged behaviour); a method name
(`--mixup samix`) looks the method up in a small registry. This module and the engine are the
only places that read `args`; everything they build takes plain keyword arguments.
"""
import logging
from contextlib import nullcontext
from functools import partial
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
from timm.data import Mixup, resolve_data_config
from timm.optim import create_optimizer_v2

from .errors import ConfigError
from .hub import create_pretrained_mixer
from .mixer import list_mixers
from .momentum import PAPER_MOMENTUM_END, BetaSchedule, MomentumSchedule, describe_schedules, scaled_momentum
from .samix import SAMix

_logger = logging.getLogger(__name__)

# below this many training images a run counts as "small data" (CIFAR, Tiny-ImageNet, CUB, ...)
SMALL_DATA_IMAGES = 200_000
_TRANSFORMER_PREFIXES = ('vit', 'deit', 'swin', 'eva', 'beit', 'cait', 'xcit', 'test_vit')

# --samix-preset NAME -> economies of the Mixer branch (§5.4); an explicit --samix-mixer-every or
# --samix-mixer-batch-frac overrides its value. 'paper' trains the Mixer on the whole batch at every
# step; the others are the economies bench/accuracy.py weighs against it (README "Benchmarks").
SAMIX_PRESETS: Dict[str, Dict[str, float]] = {
    'paper': dict(mixer_every=1, mixer_batch_frac=1.0),
    'every2': dict(mixer_every=2, mixer_batch_frac=1.0),
    'half': dict(mixer_every=1, mixer_batch_frac=0.5),
    'fast': dict(mixer_every=2, mixer_batch_frac=0.5),
}


def samix_economies(args) -> Dict[str, float]:
    """mixer_every / mixer_batch_frac of `--samix-preset`, with explicit flags taking precedence."""
    if args.samix_preset not in SAMIX_PRESETS:
        raise ConfigError(f"--samix-preset {args.samix_preset} is not known: use one of {', '.join(SAMIX_PRESETS)}")
    economies = dict(SAMIX_PRESETS[args.samix_preset])
    if args.samix_mixer_every is not None:
        economies['mixer_every'] = args.samix_mixer_every
    if args.samix_mixer_batch_frac is not None:
        economies['mixer_batch_frac'] = args.samix_mixer_batch_frac
    return economies


def mixing_active(args) -> bool:
    """True when `args` asks for any batch mixing (timm's rule, plus method names)."""
    if isinstance(args.mixup, str):
        return True
    return args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None


def is_transformer(model_name: str) -> bool:
    """ViT-family names get the transformer settings of §5 (AdamW Mixer, 25% momentum hold)."""
    return model_name.lower().startswith(_TRANSFORMER_PREFIXES)


def _create_timm_mixup(args, model: nn.Module, num_classes: int, **_) -> Mixup:
    if args.batch_size % 2:
        raise ConfigError(f'timm Mixup/CutMix needs an even batch size, got --batch-size {args.batch_size}: '
                          f'use {args.batch_size + 1}')
    return Mixup(
        mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
        prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
        label_smoothing=args.smoothing, num_classes=num_classes)


def _create_samix(args, model: nn.Module, num_classes: int, data_config: Dict, steps_per_epoch: int,
                  train_size: Optional[int], amp_autocast: Callable, fp16_scaler: bool):
    """SAMix with the §5 settings of the recipe family, scaled to this run's length and data size;
    SAMix^P (a frozen pre-trained Mixer, §7) with `--samix-pretrained`."""
    if args.samix_pretrained:
        mixer = create_pretrained_mixer(
            args.samix_pretrained, num_classes=num_classes, alpha=args.samix_alpha, lam_margin=args.samix_lam_margin,
            lam_adjust_prob=args.samix_lam_adjust_prob, label_smoothing=args.smoothing, prob=args.mixup_prob,
            input_mean=data_config['mean'], input_std=data_config['std'], amp_autocast=amp_autocast)
        _logger.info(f'SAMix^P: pre-trained Mixer {args.samix_pretrained} ({mixer.artifact_info["extractor"]} '
                     f'extractor at {mixer.input_size}), frozen')
        return mixer
    input_size = data_config['input_size']
    if args.samix_mixer not in list_mixers():
        raise ConfigError(f"--samix-mixer {args.samix_mixer} is not known: use one of {', '.join(list_mixers())}")
    total = max(1, args.epochs * steps_per_epoch)
    small = train_size is not None and train_size < SMALL_DATA_IMAGES
    vit = is_transformer(args.model)
    if args.cutmix > 0 or args.cutmix_minmax is not None:
        _logger.info('--mixup samix replaces the recipe\'s Mixup/CutMix: --cutmix settings are not used')

    dropout = args.samix_mixer_dropout if args.samix_mixer_dropout is not None else (0.0 if small else 0.1)
    mixer_kwargs = dict(dropout=dropout, lam_rescale_k=args.samix_lam_rescale_k) if args.samix_mixer == 'samix' else {}

    opt = args.samix_mixer_opt or ('adamw' if vit else 'sgd')
    lr = args.samix_mixer_lr if args.samix_mixer_lr is not None else (args.lr if opt.lower() in ('adamw', 'adam', 'lamb') and args.lr else 0.1)
    min_lr = args.samix_mixer_min_lr if args.samix_mixer_min_lr is not None else lr / 100
    mixer_optimizer = partial(create_optimizer_v2, opt=opt, lr=lr, weight_decay=args.samix_mixer_weight_decay,
                              momentum=args.samix_mixer_momentum)

    start, end = scaled_momentum(total, PAPER_MOMENTUM_END['small' if small else 'imagenet'])
    momentum = MomentumSchedule(
        start=start if args.samix_momentum_start is None else args.samix_momentum_start,
        end=end if args.samix_momentum_end is None else args.samix_momentum_end,
        total_steps=total, warmup_frac=0.25 if vit else 0.1)
    beta_mode = args.samix_beta_schedule
    if beta_mode == 'auto':
        beta_mode = 'constant' if small else 'linear'
    beta = BetaSchedule(args.samix_mask_beta, beta_mode, total)
    eta = args.samix_eta if args.samix_eta is not None else (0.5 if small else 0.1)
    economies = samix_economies(args)
    _logger.info(
        f'SAMix: {args.samix_mixer} Mixer, {opt} lr {lr:g} -> {min_lr:g}, eta {eta:g} ({args.samix_mixer_loss}), dropout {dropout:g}, '
        f'preset {args.samix_preset} (Mixer trained every {economies["mixer_every"]} step(s) on '
        f'{economies["mixer_batch_frac"]:g} of the batch), '
        + describe_schedules(momentum, beta, f'{"small" if small else "ImageNet-scale"} data, '
                                            f'{train_size} images'))
    grad_scaler = torch.amp.GradScaler('cuda') if fp16_scaler else None
    return SAMix(
        model, num_classes, total, mixer=args.samix_mixer, mixer_kwargs=mixer_kwargs, mixer_optimizer=mixer_optimizer,
        tap_index=args.samix_feature_index, input_size=tuple(input_size), mixer_min_lr=min_lr, alpha=args.samix_alpha, eta=eta,
        mixer_loss=args.samix_mixer_loss, momentum=momentum, beta=beta, mask_margin=args.samix_mask_margin,
        lam_margin=args.samix_lam_margin, lam_adjust_prob=args.samix_lam_adjust_prob,
        **economies,
        label_smoothing=args.smoothing, prob=args.mixup_prob, amp_autocast=amp_autocast, grad_scaler=grad_scaler)


# method name -> builder(args, model, num_classes, **run_info)
MIXUP_METHODS: Dict[str, Callable] = {'samix': _create_samix}


def create_mixup(
        args,
        model: nn.Module,
        num_classes: int,
        *,
        data_config: Optional[Dict] = None,
        steps_per_epoch: Optional[int] = None,
        train_size: Optional[int] = None,
        amp_autocast: Optional[Callable] = None,
        fp16_scaler: bool = False,
) -> Optional[Callable]:
    """timm `Mixup` for numeric alphas, a registered method for `--mixup NAME`, None when off.

    Learned methods also need to know the run: `data_config` (timm's, for input size and
    normalisation; default: resolved for `model`), `steps_per_epoch` (mixer calls per epoch; schedules scale with the run
    length), `train_size` (images, picks small-data defaults), the loop's `amp_autocast` and whether
    fp16 loss scaling is on.
    """
    if not mixing_active(args):
        return None
    if not isinstance(args.mixup, str):
        return _create_timm_mixup(args, model, num_classes)
    if steps_per_epoch is None:
        raise ValueError(f'--mixup {args.mixup} needs steps_per_epoch (batches per epoch) to set its schedules')
    if data_config is None:
        data_config = resolve_data_config(vars(args), model=model)
    return MIXUP_METHODS[args.mixup](
        args, model, num_classes, data_config=data_config, steps_per_epoch=steps_per_epoch, train_size=train_size,
        amp_autocast=amp_autocast or nullcontext,
        fp16_scaler=fp16_scaler)
