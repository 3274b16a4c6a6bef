""" Checks of train.py's arguments, run before anything is built or written (issue 16).

Each bad value raises `ConfigError` with one line naming the argument, the value and the fix:
non-finite numbers, values outside their range, unknown names, combinations that would train
something else than asked, and timm arguments samix-timm does not implement.
"""
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

from timm.data import create_transform
from timm.optim import get_optimizer_info, optimizer_kwargs

from ..clean import CLEAN_HEADS, clean_rows
from ..defaults import SAMIX_FLAGS, SAMIX_PRESETS, preset_values
from ..errors import ConfigError
from ..limits import FRACTION, KEYWORD_LIMITS, PROB, RATE, Limit, above, at_least, closed, half_open
from ..mixer import MIXER_AREAS, MIXER_INITS, MIXER_NORMS, MIXER_UPSAMPLES, list_mixers
from ..mixer_trainer import MASK_LOSSES
from ..settings import MixSettings, StepPreset
from ..factory import mixing_active
from .args import TIMM_NOT_RUN, create_train_parser
from .setup import SPLIT_SYNONYMS

_logger = logging.getLogger(__name__)

K = KEYWORD_LIMITS  # the library's ranges: a --samix-* flag checks the keyword it sets

# argument -> allowed values (None, the "unset" default, is always allowed)
LIMITS: Dict[str, Limit] = {
    'epochs': at_least(1), 'batch_size': at_least(1), 'validation_batch_size': at_least(1),
    'workers': at_least(0), 'img_size': at_least(1), 'num_classes': K['num_classes'], 'in_chans': at_least(1),
    'grad_accum_steps': at_least(1), 'log_interval': at_least(1), 'checkpoint_hist': at_least(1),
    'start_epoch': at_least(0), 'lr': above(0), 'lr_base': above(0), 'lr_base_size': at_least(1),
    'min_lr': at_least(0), 'warmup_lr': at_least(0), 'warmup_epochs': at_least(0),
    'cooldown_epochs': at_least(0), 'weight_decay': at_least(0), 'momentum': closed(0, 1),
    'clip_grad': above(0), 'smoothing': K['label_smoothing'], 'mixup_prob': K['prob'], 'mixup_switch_prob': PROB,
    'cutmix': at_least(0), 'reprob': PROB, 'hflip': PROB, 'vflip': PROB, 'color_jitter': at_least(0),
    'color_jitter_prob': PROB, 'grayscale_prob': PROB, 'gaussian_blur_prob': PROB, 'drop': RATE,
    'drop_path': RATE, 'drop_block': RATE, 'drop_connect': RATE, 'model_ema_decay': closed(0, 1),
    'crop_pct': closed(0.01, 1), 'samix_alpha': K['alpha'], 'samix_mixer_lr': K['mixer_lr'],
    'samix_mixer_min_lr': K['min_lr'], 'samix_mixer_momentum': K['mixer_momentum'],
    'samix_mixer_weight_decay': K['mixer_weight_decay'], 'samix_mixer_dropout': K['mixer_dropout'],
    'samix_mask_sharpness': at_least(0), 'samix_eta': K['eta'], 'samix_momentum_start': K['momentum_start'],
    'samix_momentum_end': K['momentum_end'], 'samix_mask_beta': K['mask_beta'],
    'samix_mask_margin': K['mask_margin'], 'samix_lam_margin': K['lam_margin'],
    'samix_lam_adjust_prob': K['lam_adjust_prob'],
    'samix_clean_weight': K['clean_weight'], 'samix_mixer_batch_frac': K['mixer_batch_frac'],
    'samix_mixer_every': K['mixer_every'],
    'samix_mixer_until': K['mixer_until'],
    'samix_mixer_scale': K['mixer_scale'], 'samix_clean_frac': K['clean_frac'], 'samix_vis_interval': at_least(0),
    'recount': at_least(1), 'seed': at_least(0), 'decay_rate': above(0), 'decay_epochs': above(0),
    'aug_repeats': at_least(0), 'aug_splits': at_least(0), 'mixup_off_epoch': at_least(0),
    'bn_momentum': closed(0, 1), 'bn_eps': above(0), 'opt_eps': above(0), 'layer_decay': above(0),
    'patience_epochs': at_least(0), 'epoch_repeats': at_least(0),
    # train_ssl.py (MoCo v2 and its mixing, §6): the same ranges, in the same place
    'queue_size': at_least(1), 'temperature': above(0), 'moco_momentum': K['moco_momentum'], 'proj_hidden': at_least(1),
    'proj_dim': at_least(1), 'ssl_alpha': above(0), 'mix_weight': at_least(0), 'eta': closed(0, 1),
    'num_clusters': at_least(2), 'cluster_interval': at_least(1), 'cluster_pca_dim': at_least(1),
    'cluster_iters': at_least(1), 'knn_interval': at_least(0), 'knn_k': at_least(1),
    'linear_epochs': at_least(0), 'linear_lr': above(0),  # ssl.probe
    # python -m samix_timm.reproduce
    'nproc': at_least(1), 'cost_batch': at_least(1), 'cost_steps': at_least(1), 'cost_repeats': at_least(1),
    'color_jitter_prob': PROB, 'grayscale_prob': PROB, 'gaussian_blur_prob': PROB,
}

# argument -> the names it accepts
CHOICES: Dict[str, Callable[[], Sequence[str]]] = {
    'samix_preset': lambda: tuple(SAMIX_PRESETS),
    'samix_mixer': list_mixers,
    'samix_mixer_loss': lambda: ('eta', 'mce'),
    'samix_mixer_init': lambda: MIXER_INITS,
    'samix_mixer_norm': lambda: MIXER_NORMS,
    'samix_mask_area': lambda: MIXER_AREAS,
    'samix_mixer_upsample': lambda: MIXER_UPSAMPLES,
    'samix_mask_loss': lambda: MASK_LOSSES,
    'samix_clean_forward': lambda: ('separate', 'joint'),
    'samix_clean_head': lambda: CLEAN_HEADS,
    'samix_beta_schedule': lambda: ('auto', 'linear', 'constant'),
    'eval_metric': lambda: ('top1', 'top5', 'loss'),
    'clip_mode': lambda: ('norm', 'value', 'agc'),
    'mixup_mode': lambda: ('batch', 'pair', 'elem'),
    'sched': lambda: ('cosine', 'tanh', 'step', 'multistep', 'plateau', 'poly', 'constant', 'wsd', 'rsqrt', 'none'),
    'dist_bn': lambda: ('broadcast', 'reduce', ''),
    'amp_dtype': lambda: ('float16', 'bfloat16'),
}

# timm arguments parsed for recipe compatibility but not implemented: set -> refused with the reason
NOT_IMPLEMENTED: Dict[str, str] = {
    'model_dtype': 'train in float32 and use --amp --amp-dtype bfloat16 for low precision',
    'recovery_interval': 'a mid-epoch checkpoint resumes at the next epoch (timm), skipping the rest of this one; '
                         'last.pth.tar is written every epoch and --resume reproduces the run',
    'tta': 'timm\'s train.py does not use it either; drop it',
}
_UNSET = (None, 0, False, '', 'float32')


def _arg(dest: str) -> str:
    return '--' + dest.replace('_', '-')


def check_numbers(args) -> None:
    """Every number given is finite and inside its argument's range."""
    for dest, value in vars(args).items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f'{_arg(dest)} {v} is not a finite number: pass a real value')
        if dest in LIMITS and isinstance(value, (int, float)) and not isinstance(value, bool):
            text, ok = LIMITS[dest][:2]
            if not ok(value):
                raise ConfigError(f'{_arg(dest)} {value:g} is out of range: it must be {text}')


def check_names(args) -> None:
    """Names that pick a component exist (optimizer, scheduler, Mixer, preset, ...)."""
    for dest, choices in CHOICES.items():
        value = getattr(args, dest, None)
        if value is not None and value not in choices():
            raise ConfigError(f"{_arg(dest)} '{value}' is not known: use one of "
                              f"{', '.join(repr(c) for c in choices())}")
    for dest in ('opt', 'samix_mixer_opt'):
        name = getattr(args, dest, None)
        if name is None:
            continue
        try:
            get_optimizer_info(name.lower().replace('lookahead_', ''))
        except ValueError:
            raise ConfigError(f"{_arg(dest)} '{name}' is not a timm optimizer: use one of "
                              f"timm.optim.list_optimizers() (e.g. sgd, momentum, adamw, lamb)") from None


def check_mixing(args) -> None:
    """Mixing arguments that only mean something together."""
    mixup = args.mixup
    if not isinstance(mixup, str) and mixup < 0:
        raise ConfigError(f'--mixup {mixup:g} is out of range: an alpha must be >= 0 (0 = off), or a method name')
    samix = mixup == 'samix'
    if args.samix_pretrained and not samix:
        raise ConfigError(f'--samix-pretrained {args.samix_pretrained} is only used by SAMix: add --mixup samix '
                          f'(without it the run would not mix at all)')
    if samix and args.batch_size < 2:
        raise ConfigError(f'--mixup samix mixes pairs of images in a batch: --batch-size {args.batch_size} '
                          f'must be 2 or more')
    if samix and args.torchscript and not args.samix_pretrained:
        raise ConfigError('--torchscript cannot train an online SAMix: its momentum encoder copies the classifier and '
                          'reads stage features through forward_intermediates, which a scripted model lacks; use '
                          '--torchcompile, or --samix-pretrained (a frozen Mixer)')
    if samix or args.samix_clean_weight:
        # the clean term's own forward (factory: a preset's values for SAMix, 'separate' and 1 beside a fixed mixer)
        step = (preset_values(args.samix_preset, clean_weight=args.samix_clean_weight,
                              clean_forward=args.samix_clean_forward, clean_frac=args.samix_clean_frac)
                if samix and not args.samix_pretrained else
                StepPreset(clean_weight=args.samix_clean_weight or 0., clean_forward=args.samix_clean_forward or
                           'separate', clean_frac=args.samix_clean_frac or 1.0))
        rows = clean_rows(step.clean_frac, args.batch_size)
        if step.clean_weight and step.clean_forward == 'separate' and rows < 2 and mixing_active(args):
            frac = step.clean_frac
            given = (f'--samix-clean-frac {frac:g}' if args.samix_clean_frac is not None else
                     f'--samix-preset {args.samix_preset} (clean fraction {frac:g})')
            batch = next(b for b in range(args.batch_size + 1, 10 ** 6) if clean_rows(frac, b) >= 2)
            raise ConfigError(f"{given} with --batch-size {args.batch_size} gives the clean-batch term {rows} image "
                              f"in a forward of its own, which BatchNorm cannot normalise (a ValueError inside the "
                              f"run): pass --samix-clean-frac {2 / args.batch_size:.3g} or more (2 images), "
                              f"--batch-size {batch} or more, or --samix-clean-forward joint")
    if args.mixup_mode != 'batch' and samix:
        raise ConfigError(f"--mixup-mode {args.mixup_mode} is a timm Mixup mode: SAMix draws lam per batch, "
                          f"drop --mixup-mode")


def check_not_implemented(args) -> None:
    """timm arguments that would be silently ignored are refused instead."""
    for dest, reason in NOT_IMPLEMENTED.items():
        value = getattr(args, dest, None)
        if value not in _UNSET:
            raise ConfigError(f'{_arg(dest)} is not supported by samix-timm: {reason}')
    for dest, (_, kwargs, reason) in TIMM_NOT_RUN.items():
        if getattr(args, dest, kwargs['default']) != kwargs['default']:
            raise ConfigError(f'{_arg(dest)} is not supported by samix-timm: {reason}')
    if args.drop_connect is not None and args.drop_path is not None and args.drop_connect != args.drop_path:
        raise ConfigError(f'--drop-connect {args.drop_connect:g} and --drop-path {args.drop_path:g} disagree: '
                          f'--drop-connect is timm\'s deprecated name of --drop-path, pass only --drop-path')


# create_model keywords train.py sets from flags of their own (engine.train.build_model)
MODEL_KWARG_FLAGS = dict(num_classes='--num-classes', in_chans='--in-chans', drop_rate='--drop',
                         drop_path_rate='--drop-path', drop_block_rate='--drop-block', global_pool='--gp',
                         bn_momentum='--bn-momentum', bn_eps='--bn-eps', scriptable='--torchscript',
                         pretrained='--pretrained', pretrained_cfg_overlay='--pretrained-path')
# timm.optim.optimizer_kwargs keywords -> the flag that sets each (the rest: --<keyword>)
_OPT_KWARG_FLAGS = dict(eps='--opt-eps', betas='--opt-betas', foreach='--opt-foreach')


def check_kwargs_flags(dest: str, kwargs: Dict[str, Any], taken: Dict[str, str]) -> None:
    """`--dest k=v ...` sets no keyword the script already passes from a flag of its own (`taken`: keyword -> flag):
    it would fail as "got multiple values for keyword argument" deep in timm."""
    for key in kwargs or {}:
        if key in taken:
            raise ConfigError(f'{_arg(dest)} {key}={kwargs[key]} sets what {taken[key]} sets: pass '
                              f'{taken[key]} instead (and drop {key} from {_arg(dest)})')


def check_model_kwargs(args) -> None:
    """`--model-kwargs`/`--opt-kwargs` (also from a recipe) do not repeat a keyword a flag already sets."""
    check_kwargs_flags('model_kwargs', args.model_kwargs, MODEL_KWARG_FLAGS)
    check_kwargs_flags('opt_kwargs', args.opt_kwargs,
                       {k: _OPT_KWARG_FLAGS.get(k, _arg(k)) for k in optimizer_kwargs(cfg=args)})


def check_input(args) -> None:
    """Channels, normalisation and augmentation policy agree with what timm's loader will produce."""
    in_chans = args.input_size[0] if args.input_size else (args.in_chans or 3)
    for dest in ('mean', 'std'):
        values = getattr(args, dest)
        if values is not None and len(values) not in (1, in_chans):
            raise ConfigError(f'{_arg(dest)} has {len(values)} values for {in_chans} input channels: '
                              f'pass {in_chans} values (or one for all)')
    if args.std is not None and min(args.std) <= 0:
        raise ConfigError(f'--std {" ".join(f"{v:g}" for v in args.std)} must be > 0 (batches are divided by it)')
    if in_chans != 3 and not args.input_img_mode:
        raise ConfigError(f'--in-chans {in_chans} needs the loader to read {in_chans}-channel images: add '
                          f'--input-img-mode {"L" if in_chans == 1 else "MODE"} (timm reads RGB otherwise)')
    if args.aa:
        try:
            create_transform(32, is_training=True, auto_augment=args.aa)
        except (AssertionError, ValueError, KeyError, IndexError) as e:
            detail = f' ({e})' if str(e) else ''
            raise ConfigError(f"--aa '{args.aa}' is not a timm augmentation policy{detail}: use e.g. "
                              f"rand-m9-mstd0.5-inc1, augmix-m5-w4-d2, original, v0 or 3a") from None


def check_input_file(dest: str, path: str, what: str) -> None:
    """The file `--dest` names exists and is a file; `what` says what to pass instead."""
    check_path_length(dest, path)
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{_arg(dest)} '{path}' does not exist: pass {what}")
    if not p.is_file():
        raise ConfigError(f"{_arg(dest)} '{path}' is a folder, not a file: pass {what}")


def check_writable_folder(dest: str, folder: Path, shown: str) -> None:
    """Files can be made in `folder` or, where it does not exist yet, in its nearest existing parent."""
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f'{existing} is a file')
        tempfile.TemporaryFile(dir=existing).close()  # the only test that also holds for root and read-only mounts
    except OSError as e:
        raise ConfigError(f"{_arg(dest)} '{shown}' cannot be written ({e.strerror or e}): pass {_arg(dest)} in a "
                          f"folder you can write to") from None


def check_file_name(dest: str, path: str) -> None:
    """`--dest` names a file (not a folder, not empty) in a folder that can be written."""
    check_path_length(dest, path)
    p = Path(path)
    if not path or path.endswith(('/', '\\')) or p.is_dir():
        raise ConfigError(f"{_arg(dest)} '{path}' names a folder, not a file: add a file name (e.g. "
                          f"{_arg(dest)} {Path(path or '.') / 'name'})")
    check_writable_folder(dest, p.parent, path)


def check_new_file(dest: str, path: str) -> None:
    """`check_file_name`, and the file does not exist yet: nothing the user has is overwritten."""
    check_file_name(dest, path)
    if Path(path).exists():
        raise ConfigError(f"{_arg(dest)} '{path}' already exists: it is never overwritten; pass a new path or move "
                          f"the old file away")


NAME_MAX = 255  # bytes in one file or folder name (ext4, xfs, tmpfs, ...); a path at most PATH_MAX
PATH_MAX = 4096


def check_path_length(dest: str, path: str) -> None:
    """`--dest PATH` fits the file system's limits (a name of at most 255 bytes, a path of at most 4096): a longer
    one used to fail with `OSError: File name too long` in a traceback when the first file was written."""
    longest = max((len(os.fsencode(part)) for part in Path(path).parts), default=0)
    size = len(os.fsencode(os.path.abspath(path)))
    if longest > NAME_MAX or size >= PATH_MAX:
        what = (f'has a name of {longest} bytes, more than the {NAME_MAX}' if longest > NAME_MAX else
                f'is a path of {size} bytes, more than the {PATH_MAX - 1}')
        raise ConfigError(f"{_arg(dest)} '{path[:40]}...' {what} a file system allows: pass a shorter {_arg(dest)}")


def check_output(args, default_root: str = './output/train') -> None:
    """The output root can be written, the run folder's name fits the file system, and the run folder is not
    inside a split of the data (train.py and train_ssl.py)."""
    root = args.output or default_root
    check_path_length('output', root)
    if getattr(args, 'experiment', None):
        check_path_length('experiment', args.experiment)
        check_path_length('experiment', os.path.join(root, args.experiment))
    check_writable_folder('output', Path(root), root)
    data = getattr(args, 'data_dir', None) or getattr(args, 'data', None)
    if data and Path(data).is_dir():
        out = Path(root).resolve()
        given = [str(getattr(args, d, '') or '').split('[')[0] for d in ('train_split', 'val_split')]
        for name in dict.fromkeys(n for names in (*SPLIT_SYNONYMS, given) for n in names if n):
            split = (Path(data) / name).resolve()
            if split.is_dir() and (out == split or split in out.parents):
                raise ConfigError(f"--output '{root}' is inside the {name}/ split of --data-dir: the next run would "
                                  f"read this run's folder as a class; pass an --output outside '{data}'")


def check_paths(args) -> None:
    """Files the run reads exist; the output root can be written."""
    for dest in ('initial_checkpoint', 'resume', 'pretrained_path', 'data_dir'):
        if getattr(args, dest, None):
            check_path_length(dest, getattr(args, dest))
    for dest in ('initial_checkpoint', 'resume', 'pretrained_path'):
        if getattr(args, dest, None):
            check_input_file(dest, getattr(args, dest),
                             'a checkpoint written by train.py, e.g. output/train/<run>/last.pth.tar')
    check_output(args)


# options of the SAMix Mixer only -> the value that is also AutoMix's (no warning when a recipe writes it out)
_SAMIX_MIXER_ONLY = dict(samix_mixer_norm='none', samix_mask_area='free', samix_mask_sharpness=0, samix_lam_rescale_k=-1,
                         samix_mixer_dropout=None)
_CLEAN_TERM = ('samix_clean_weight', 'samix_clean_forward', 'samix_clean_frac', 'samix_clean_head')  # also beside timm Mixup/SAMix^P
# options that change only an online SAMix run (not timm Mixup, not a frozen SAMix^P Mixer): the flags of the SAMix
# table (`defaults.SAMIX_FLAGS`) except the classifier branch's draw (`MixSettings`, SAMix^P's too) and the clean term
# and the mask area, which a frozen Mixer also takes (`SAMixPretrained(mask_area=...)`)
_ONLINE_SAMIX_ONLY = tuple(dest for keyword, dest in SAMIX_FLAGS.items() if dest.startswith('samix_')
                           and keyword not in MixSettings.__dataclass_fields__ and dest not in _CLEAN_TERM
                           and dest != 'samix_mask_area')


def warn_no_effect(args) -> List[str]:
    """A warning for every option given (away from its default) that does nothing in this run; returns them."""
    defaults = vars(create_train_parser().parse_args([]))
    given = {d for d, v in vars(args).items() if d in defaults and v != defaults[d]}
    samix, mixing = args.mixup == 'samix', mixing_active(args)
    clean = bool(args.samix_clean_weight) or (samix and preset_values(args.samix_preset).clean_weight > 0)
    notes = []
    for d in sorted(given):
        if d.startswith('samix_') and d not in _CLEAN_TERM and not samix:
            notes.append(f'{_arg(d)} has no effect without --mixup samix')
        elif samix and args.samix_pretrained and d in _ONLINE_SAMIX_ONLY:
            notes.append(f'{_arg(d)} has no effect with --samix-pretrained: a frozen Mixer is not trained')
        elif samix and args.samix_mixer == 'automix' and not args.samix_pretrained and d in _SAMIX_MIXER_ONLY and \
                getattr(args, d) != _SAMIX_MIXER_ONLY[d]:
            notes.append(f'{_arg(d)} has no effect with --samix-mixer automix: it sets the SAMix Mixer')
        elif d in _CLEAN_TERM and not mixing:
            notes.append(f'{_arg(d)} has no effect without mixing: the clean-batch term goes beside a mixed batch')
        elif d in ('samix_clean_forward', 'samix_clean_frac', 'samix_clean_head') and not clean:
            notes.append(f'{_arg(d)} has no effect without the clean-batch term (--samix-clean-weight)')
        elif d.startswith('model_ema_') and not args.model_ema:
            notes.append(f'{_arg(d)} has no effect without --model-ema')
        elif d == 'mixup_switch_prob' and (samix or not (args.mixup and args.cutmix)):
            notes.append('--mixup-switch-prob has no effect unless timm Mixup and CutMix are both on')
    for note in notes:
        _logger.warning(note)
    return notes


# the checks `check_train_args` runs, in order
TRAIN_CHECKS = [check_numbers, check_names, check_mixing, check_not_implemented, check_model_kwargs, check_input,
                check_paths, warn_no_effect]


def check_train_args(args: Any) -> None:
    """Refuse bad train.py arguments with one line each, before anything is created."""
    for check in TRAIN_CHECKS:
        check(args)
