""" `create_mixup`: the one place train.py turns `--mixup/--cutmix` into a batch mixer.

A numeric `--mixup`/`--cutmix` gives timm's own `Mixup` (unchanged behaviour); a method name
(`--mixup samix`) looks the method up in a small registry. This module and the engine are the
only places that read `args`; everything they build takes plain keyword arguments.
"""
import logging
from contextlib import nullcontext
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
from timm.data import Mixup, resolve_data_config

from .clean import CleanTerm
from .defaults import SAMIX_FLAGS, SMALL_DATA_IMAGES, departures, describe_defaults, keyword_flags
from .errors import ConfigError, keyword_as_flag
from .hub import create_pretrained_mixer, get_entry, list_pretrained
from .momentum import describe_schedules
from .samix import SAMix, create_samix

_logger = logging.getLogger(__name__)


def mixing_active(args) -> bool:
    """True when `args` asks for any batch mixing (timm's rule, plus method names)."""
    if isinstance(args.mixup, str):
        return True
    return args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None


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
        # --samix-mask-area given: the masks' area rule (method §2.6); not given: the artifact's, or its hub entry's
        area = {} if args.samix_mask_area is None else dict(mask_area=args.samix_mask_area)
        try:
            mixer = create_pretrained_mixer(
                args.samix_pretrained, num_classes=num_classes, alpha=args.samix_alpha,
                lam_margin=args.samix_lam_margin, lam_adjust_prob=args.samix_lam_adjust_prob,
                label_smoothing=args.smoothing, prob=args.mixup_prob, input_mean=data_config['mean'],
                input_std=data_config['std'], amp_autocast=amp_autocast, **area)
        except ConfigError as e:  # mask_area=... becomes the flag that set it; other messages stay as they are
            if not str(e).startswith('mask_area='):
                raise
            raise ConfigError(keyword_as_flag(str(e), _KEYWORD_FLAGS, prefix='--samix-')) from None
        entry_area = get_entry(args.samix_pretrained).mask_area if args.samix_pretrained in list_pretrained() else None
        if area and entry_area not in (None, args.samix_mask_area):  # e.g. a reproduction recipe's `free`
            _logger.warning(f"--samix-mask-area {args.samix_mask_area} (flag or recipe) replaces the mask area "
                            f"'{entry_area}' of the hub entry {args.samix_pretrained}: leave it out to keep the "
                            f"entry's")
        source = '--samix-mask-area' if area else 'the hub entry' if entry_area else 'the artifact'
        _logger.info(f'SAMix^P: pre-trained Mixer {args.samix_pretrained} ({mixer.artifact_info["extractor"]} '
                     f'extractor at {mixer.input_size}), frozen, mask area '
                     f'{getattr(mixer.mixer, "area", "free")} (from {source})')
        return mixer
    if args.cutmix > 0 or args.cutmix_minmax is not None:
        _logger.info('--mixup samix replaces the recipe\'s Mixup/CutMix: --cutmix settings are not used')
    total = max(1, args.epochs * steps_per_epoch)
    try:  # the flags by the table, through the one path a loop of one's own takes too
        samix = create_samix(
            model, num_classes, total, train_size=train_size, input_size=tuple(data_config['input_size']),
            amp_autocast=amp_autocast, grad_scaler=torch.amp.GradScaler('cuda') if fp16_scaler else None,
            **{keyword: getattr(args, dest) for keyword, dest in SAMIX_FLAGS.items()})
    except ValueError as e:  # the settings name keyword arguments; here they become the flags that set them
        message = keyword_as_flag(str(e), _KEYWORD_FLAGS, prefix='--samix-')
        if message is None:
            raise
        raise ConfigError(message) from None
    chosen = dict(mixer=samix.settings, preset=samix.preset, momentum=samix.momentum)
    small = train_size is not None and train_size < SMALL_DATA_IMAGES
    _logger.info(f'SAMix (preset {args.samix_preset}): {describe_defaults(chosen)}, '
                 + describe_schedules(samix.momentum, samix.settings.beta,
                                      f'{"small" if small else "ImageNet-scale"} data, {train_size} images'))
    departs = departures(chosen)
    _logger.info('SAMix departs from the authors\' step in: ' + '; '.join(departs) + ' (--samix-preset reference '
                 'runs theirs)' if departs else 'SAMix runs the authors\' step (their Mixer, step and losses)')
    return samix


# keyword argument -> flag, for library errors: the table's, the objects' own names for them, and the run's
_KEYWORD_FLAGS = dict(keyword_flags(), num_classes='--num-classes')
# --samix-* flags that are not `create_samix` keywords, and where each is used instead
OTHER_SAMIX_FLAGS = dict(samix_pretrained='SAMix^P (create_pretrained_mixer, above)',
                         samix_clean_head='the task (engine.train, create_task)',
                         samix_vis_interval='the engine (image grids)')


def create_clean_term(args, mixer, num_classes: int) -> Optional[CleanTerm]:
    """The clean-batch term of §5.6 for a run: online SAMix's comes with its preset (`SAMix.clean`); a fixed mixer
    (timm Mixup, SAMix^P) gets one only when `--samix-clean-weight` > 0 (it is the online SAMix reference step, and
    the fair control for it); None without mixing."""
    if mixer is None:
        return None
    if isinstance(mixer, SAMix):
        return mixer.clean
    if not args.samix_clean_weight:
        return None
    clean = CleanTerm(args.samix_clean_weight, num_classes, args.smoothing, args.samix_clean_forward or 'separate',
                      args.samix_clean_frac or 1.0)
    _logger.info(f'Clean-batch term: W {clean.weight:g} x CE on the clean batch ({clean.forward} forward)')
    return clean


# method name -> builder(args, model, num_classes, **run_info); the one list `--mixup NAME` accepts
MIXUP_METHODS: Dict[str, Callable] = {}


def register_mixup_method(name: str, builder: Callable) -> None:
    """Make `--mixup NAME` build a mixer with `builder(args, model, num_classes, **run_info)` (see `create_mixup`)."""
    if name in MIXUP_METHODS or name == 'none':
        raise ValueError(f"mixing method '{name}' is already registered")
    MIXUP_METHODS[name.lower()] = builder


register_mixup_method('samix', _create_samix)


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
