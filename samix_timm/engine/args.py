""" Command line of train.py: timm's argument names and defaults, timm's two-stage `--config` parsing.

Every timm `train.py` argument keeps its name and default, so a timm recipe YAML (RSB, DeiT,
Swin) runs unchanged. Differences, all additive:
- `--mixup` takes timm's float alpha or a method name (`samix`, `none`);
- a YAML key that is not an argument is dropped with a warning naming the closest valid key
  (timm ignores it silently);
- `--device` defaults to CUDA when available, else CPU.
"""
import argparse
import difflib
import logging
from typing import Any, Dict, Optional, Sequence, Tuple

import yaml
from timm.utils import ParseKwargs as TimmParseKwargs

from ..defaults import DEFAULT_PRESET
from ..mixer_trainer import MASK_MARGIN, MIXER_MOMENTUM
from ..settings import MixSettings
from ..errors import ConfigError
from ..factory import MIXUP_METHODS

_logger = logging.getLogger(__name__)



def mixup_arg(value: Any) -> Any:
    """Parse `--mixup`: a float alpha (timm), `none` (= 0.0) or a mixing method name."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip().lower()
    if text == 'none':
        return 0.0
    if text in MIXUP_METHODS:  # the factory's registry: a registered method is a valid --mixup
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{value}' is neither a mixup alpha (a float such as 0.8) nor a method "
            f"({', '.join(('none', *MIXUP_METHODS))})") from None


class ParseKwargs(TimmParseKwargs):
    """timm's `--model-kwargs a=1 b=x` -> {'a': 1, 'b': 'x'} (Python literals, else strings); an item without '='
    is a usage error instead of a traceback."""

    def __call__(self, parser, namespace, values, option_string=None):
        bad = [item for item in values if item and '=' not in item]
        if bad:
            raise argparse.ArgumentError(self, f"'{bad[0]}' is not key=value")
        super().__call__(parser, namespace, values, option_string)


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('data', nargs='?', metavar='DIR', const=None,
                        help='dataset root (positional form is deprecated in timm, use --data-dir)')
    parser.add_argument('--data-dir', metavar='DIR', help='dataset root directory')
    parser.add_argument('--dataset', metavar='NAME', default='',
                        help='dataset type/name; empty = ImageFolder or ImageTar')
    g = parser.add_argument_group('Dataset parameters')
    g.add_argument('--train-split', metavar='NAME', default='train', help='train split folder')
    g.add_argument('--val-split', metavar='NAME', default='validation',
                   help='validation split (also finds val/, valid/, eval/)')
    g.add_argument('--train-num-samples', default=None, type=int, metavar='N',
                   help='number of train samples (iterable datasets only)')
    g.add_argument('--val-num-samples', default=None, type=int, metavar='N',
                   help='number of validation samples (iterable datasets only)')
    g.add_argument('--dataset-download', action='store_true', default=False,
                   help='allow download for torch/ datasets that support it')
    g.add_argument('--class-map', default='', type=str, metavar='FILENAME', help='class to index map file')
    g.add_argument('--input-img-mode', default=None, type=str, help='image mode of the dataset loader')
    g.add_argument('--input-key', default=None, type=str, help='image key of dict datasets')
    g.add_argument('--target-key', default=None, type=str, help='target key of dict datasets')
    g.add_argument('--dataset-trust-remote-code', action='store_true', default=False,
                   help='allow remote code in Hugging Face datasets')


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group('Model parameters')
    g.add_argument('--model', default='resnet50', type=str, metavar='MODEL', help='timm model name')
    g.add_argument('--pretrained', action='store_true', default=False, help='start from timm pretrained weights')
    g.add_argument('--pretrained-path', default=None, type=str, help='load pretrained weights from this file')
    g.add_argument('--initial-checkpoint', default='', type=str, metavar='PATH', help='initialise from checkpoint')
    g.add_argument('--resume', default='', type=str, metavar='PATH', help='resume model + optimizer state')
    g.add_argument('--no-resume-opt', action='store_true', default=False,
                   help='do not restore optimizer state on resume')
    g.add_argument('--num-classes', type=int, default=None, metavar='N', help='classes (model default if None)')
    g.add_argument('--gp', default=None, type=str, metavar='POOL', help='global pool type')
    g.add_argument('--img-size', type=int, default=None, metavar='N', help='image size')
    g.add_argument('--in-chans', type=int, default=None, metavar='N', help='image input channels')
    g.add_argument('--input-size', default=None, nargs=3, type=int, metavar='N N N',
                   help='input dimensions (d h w)')
    g.add_argument('--crop-pct', default=None, type=float, metavar='N', help='validation centre crop fraction')
    g.add_argument('--mean', type=float, nargs='+', default=None, metavar='MEAN', help='dataset mean')
    g.add_argument('--std', type=float, nargs='+', default=None, metavar='STD', help='dataset std')
    g.add_argument('--interpolation', default='', type=str, metavar='NAME', help='resize interpolation')
    g.add_argument('-b', '--batch-size', type=int, default=128, metavar='N', help='batch size per process')
    g.add_argument('-vb', '--validation-batch-size', type=int, default=None, metavar='N',
                   help='validation batch size')
    g.add_argument('--channels-last', action='store_true', default=False, help='channels_last memory layout')
    g.add_argument('--fuser', default='', type=str, help='jit fuser')
    g.add_argument('--grad-accum-steps', type=int, default=1, metavar='N', help='gradient accumulation steps')
    g.add_argument('--grad-checkpointing', action='store_true', default=False, help='gradient checkpointing')
    g.add_argument('--fast-norm', default=False, action='store_true', help='timm fast-norm layers')
    g.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs, help='extra create_model kwargs')
    g.add_argument('--head-init-scale', default=None, type=float, help='scale of the head init')
    g.add_argument('--head-init-bias', default=None, type=float, help='bias value of the head init')
    g.add_argument('--torchcompile-mode', type=str, default=None, help='torch.compile mode')
    s = g.add_mutually_exclusive_group()
    s.add_argument('--torchscript', dest='torchscript', action='store_true', help='torch.jit.script the model')
    s.add_argument('--torchcompile', nargs='?', type=str, default=None, const='inductor',
                   help='torch.compile with this backend')


def _add_optimizer_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group('Optimizer parameters')
    g.add_argument('--opt', default='sgd', type=str, metavar='OPTIMIZER', help='timm optimizer name')
    g.add_argument('--opt-eps', default=None, type=float, metavar='EPSILON', help='optimizer epsilon')
    g.add_argument('--opt-betas', default=None, type=float, nargs='+', metavar='BETA', help='optimizer betas')
    g.add_argument('--momentum', type=float, default=0.9, metavar='M', help='optimizer momentum')
    g.add_argument('--weight-decay', type=float, default=2e-5, help='weight decay')
    g.add_argument('--clip-grad', type=float, default=None, metavar='NORM', help='gradient clipping value')
    g.add_argument('--clip-mode', type=str, default='norm', help='clipping mode: norm, value, agc')
    g.add_argument('--layer-decay', type=float, default=None, help='layer-wise lr decay')
    g.add_argument('--layer-decay-min-scale', type=float, default=0, help='layer-wise lr decay minimum scale')
    g.add_argument('--layer-decay-no-opt-scale', type=float, default=None,
                   help='layer-wise lr decay scale below which layers are not optimized')
    g.add_argument('--opt-kwargs', nargs='*', default={}, action=ParseKwargs, help='extra optimizer kwargs')


def _add_schedule_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group('Learning rate schedule parameters')
    g.add_argument('--sched', type=str, default='cosine', metavar='SCHEDULER', help='lr scheduler')
    g.add_argument('--sched-on-updates', action='store_true', default=False, help='step the schedule per update')
    g.add_argument('--lr', type=float, default=None, metavar='LR', help='learning rate (overrides --lr-base)')
    g.add_argument('--lr-base', type=float, default=0.1, metavar='LR', help='lr at --lr-base-size batch')
    g.add_argument('--lr-base-size', type=int, default=256, metavar='DIV', help='batch size of --lr-base')
    g.add_argument('--lr-base-scale', type=str, default='', metavar='SCALE',
                   help='lr vs batch scaling: linear, sqrt (by optimizer if empty)')
    g.add_argument('--lr-noise', type=float, nargs='+', default=None, metavar='pct, pct', help='lr noise on/off')
    g.add_argument('--lr-noise-pct', type=float, default=0.67, metavar='PERCENT', help='lr noise limit')
    g.add_argument('--lr-noise-std', type=float, default=1.0, metavar='STDDEV', help='lr noise std')
    g.add_argument('--lr-cycle-mul', type=float, default=1.0, metavar='MULT', help='cycle length multiplier')
    g.add_argument('--lr-cycle-decay', type=float, default=0.5, metavar='MULT', help='decay per cycle')
    g.add_argument('--lr-cycle-limit', type=int, default=1, metavar='N', help='cycle limit')
    g.add_argument('--lr-k-decay', type=float, default=1.0, help='k-decay for cosine/poly')
    g.add_argument('--warmup-lr', type=float, default=1e-5, metavar='LR', help='warmup learning rate')
    g.add_argument('--min-lr', type=float, default=0, metavar='LR', help='lower lr bound')
    g.add_argument('--epochs', type=int, default=300, metavar='N', help='epochs to train')
    g.add_argument('--epoch-repeats', type=float, default=0., metavar='N', help='dataset repeats per epoch')
    g.add_argument('--start-epoch', default=None, type=int, metavar='N', help='manual start epoch')
    g.add_argument('--decay-milestones', default=[90, 180, 270], type=int, nargs='+', metavar='MILESTONES',
                   help='multistep decay epochs')
    g.add_argument('--decay-epochs', type=float, default=90, metavar='N', help='step decay interval')
    g.add_argument('--warmup-epochs', type=int, default=5, metavar='N', help='warmup epochs')
    g.add_argument('--warmup-prefix', action='store_true', default=False, help='exclude warmup from the decay')
    g.add_argument('--cooldown-epochs', type=int, default=0, metavar='N', help='cooldown epochs at min lr')
    g.add_argument('--patience-epochs', type=int, default=10, metavar='N', help='plateau patience')
    g.add_argument('--decay-rate', '--dr', type=float, default=0.1, metavar='RATE', help='lr decay rate')


def _add_augmentation_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group('Augmentation and regularization parameters')
    g.add_argument('--no-aug', action='store_true', default=False, help='disable train augmentation')
    g.add_argument('--train-crop-mode', type=str, default=None, help='crop mode of the train transform')
    g.add_argument('--scale', type=float, nargs='+', default=[0.08, 1.0], metavar='PCT', help='RRC scale')
    g.add_argument('--ratio', type=float, nargs='+', default=[3. / 4., 4. / 3.], metavar='RATIO', help='RRC ratio')
    g.add_argument('--hflip', type=float, default=0.5, help='horizontal flip probability')
    g.add_argument('--vflip', type=float, default=0., help='vertical flip probability')
    g.add_argument('--color-jitter', type=float, default=0.4, metavar='PCT', help='colour jitter factor')
    g.add_argument('--color-jitter-prob', type=float, default=None, metavar='PCT', help='colour jitter probability')
    g.add_argument('--grayscale-prob', type=float, default=None, metavar='PCT', help='grayscale probability')
    g.add_argument('--gaussian-blur-prob', type=float, default=None, metavar='PCT', help='blur probability')
    g.add_argument('--aa', type=str, default=None, metavar='NAME', help='AutoAugment/RandAugment policy')
    g.add_argument('--aug-repeats', type=float, default=0, help='repeated augmentation count (distributed)')
    g.add_argument('--aug-splits', type=int, default=0, help='augmentation splits (AugMix)')
    g.add_argument('--jsd-loss', action='store_true', default=False, help='JSD + CE loss (with --aug-splits)')
    g.add_argument('--bce-loss', action='store_true', default=False, help='BCE loss')
    g.add_argument('--bce-sum', action='store_true', default=False, help='sum BCE over classes')
    g.add_argument('--bce-target-thresh', type=float, default=None, help='binarise soft BCE targets at this value')
    g.add_argument('--bce-pos-weight', type=float, default=None, help='positive weight of BCE')
    g.add_argument('--reprob', type=float, default=0., metavar='PCT', help='random erase probability')
    g.add_argument('--remode', type=str, default='pixel', help='random erase mode')
    g.add_argument('--recount', type=int, default=1, help='random erase count')
    g.add_argument('--resplit', action='store_true', default=False, help='no random erase on the first split')
    g.add_argument('--mixup', type=mixup_arg, default=0.0,
                   help="mixup alpha (timm, enabled if > 0) or a method: 'samix' for learned mixing, 'none'")
    g.add_argument('--cutmix', type=float, default=0.0, help='cutmix alpha, enabled if > 0')
    g.add_argument('--cutmix-minmax', type=float, nargs='+', default=None, help='cutmix min/max ratio')
    g.add_argument('--mixup-prob', type=float, default=1.0, help='probability of mixing a batch')
    g.add_argument('--mixup-switch-prob', type=float, default=0.5, help='probability of cutmix when both on')
    g.add_argument('--mixup-mode', type=str, default='batch', help='mixing parameters per batch, pair or elem')
    g.add_argument('--mixup-off-epoch', default=0, type=int, metavar='N', help='turn mixing off at this epoch')
    g.add_argument('--smoothing', type=float, default=0.1, help='label smoothing')
    g.add_argument('--train-interpolation', type=str, default='random', help='train interpolation')
    g.add_argument('--drop', type=float, default=0.0, metavar='PCT', help='dropout rate')
    g.add_argument('--drop-connect', type=float, default=None, metavar='PCT', help='deprecated, use --drop-path')
    g.add_argument('--drop-path', type=float, default=None, metavar='PCT', help='drop path rate')
    g.add_argument('--drop-block', type=float, default=None, metavar='PCT', help='drop block rate')


def _add_norm_ema_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group('Batch norm parameters')
    g.add_argument('--bn-momentum', type=float, default=None, help='BatchNorm momentum override')
    g.add_argument('--bn-eps', type=float, default=None, help='BatchNorm epsilon override')
    g.add_argument('--sync-bn', action='store_true', help='synchronized BatchNorm')
    g.add_argument('--dist-bn', type=str, default='reduce', help='BN stats across ranks: broadcast, reduce, ""')
    g.add_argument('--split-bn', action='store_true', help='separate BN per augmentation split')
    g = parser.add_argument_group('Model exponential moving average parameters')
    g.add_argument('--model-ema', action='store_true', default=False, help='track an EMA of the weights')
    g.add_argument('--model-ema-force-cpu', action='store_true', default=False, help='keep the EMA on CPU')
    g.add_argument('--model-ema-decay', type=float, default=0.9998, help='EMA decay')
    g.add_argument('--model-ema-warmup', action='store_true', help='EMA decay warmup')


def _add_misc_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group('Miscellaneous parameters')
    g.add_argument('--seed', type=int, default=42, metavar='S', help='random seed')
    g.add_argument('--worker-seeding', type=str, default='all', help='worker seed mode')
    g.add_argument('--log-interval', type=int, default=50, metavar='N', help='batches between log lines')
    g.add_argument('--recovery-interval', type=int, default=0, metavar='N', help='batches between recovery saves')
    g.add_argument('--checkpoint-hist', type=int, default=10, metavar='N', help='checkpoints to keep')
    g.add_argument('-j', '--workers', type=int, default=4, metavar='N', help='data loader workers')
    g.add_argument('--save-images', action='store_true', default=False, help='save input batches')
    g.add_argument('--pin-mem', action='store_true', default=False, help='pin loader memory')
    g.add_argument('--no-prefetcher', action='store_true', default=False, help='disable the device prefetcher')
    g.add_argument('--output', default='', type=str, metavar='PATH', help='output root (default ./output/train)')
    g.add_argument('--experiment', default='', type=str, metavar='NAME', help='output sub-folder name')
    g.add_argument('--eval-metric', default='top1', type=str, metavar='EVAL_METRIC', help='best-checkpoint metric')
    g.add_argument('--tta', type=int, default=0, metavar='N', help='test-time augmentation factor (unused)')
    g.add_argument('--local_rank', '--local-rank', default=0, type=int)
    g.add_argument('--use-multi-epochs-loader', action='store_true', default=False, help='multi-epochs loader')
    g.add_argument('--log-wandb', action='store_true', default=False, help='log to wandb (not supported here)')
    g = parser.add_argument_group('Device parameters')
    g.add_argument('--device', default=None, type=str, help='device; default cuda if available, else cpu')
    g.add_argument('--amp', action='store_true', default=False, help='mixed precision (torch.autocast)')
    g.add_argument('--amp-dtype', default='float16', type=str, help='AMP dtype: float16 or bfloat16')
    g.add_argument('--amp-impl', default='native', type=str, help='AMP implementation (native only)')
    g.add_argument('--model-dtype', default=None, type=str, help='model dtype override (float32 if None)')
    g.add_argument('--no-ddp-bb', action='store_true', default=False, help='no DDP buffer broadcast')
    g.add_argument('--synchronize-step', action='store_true', default=False, help='synchronize each step')
    g.add_argument('--dist-backend', default=None, type=str, help='distributed backend (nccl on cuda, else gloo)')
    g.add_argument('--dist-url', default=None, type=str, help='distributed init url (env:// by default)')


def _add_samix_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group('SAMix parameters (used with --mixup samix; None = chosen per run, logged)')
    g.add_argument('--samix-pretrained', type=str, default=None,
                   help='SAMix^P: a frozen pre-trained Mixer (hub name or artifact path) instead of online training')
    g.add_argument('--samix-alpha', type=float, default=MixSettings.alpha, help='lam ~ Beta(alpha, alpha) (default: 2)')
    add_mixer_args(g)
    g.add_argument('--samix-mixer-opt', type=str, default=None,
                   help='Mixer optimizer (default: momentum (plain SGD) for CNNs, adamw for transformers)')
    g.add_argument('--samix-mixer-momentum', type=float, default=MIXER_MOMENTUM, help='Mixer SGD momentum')
    g.add_argument('--samix-mixer-weight-decay', type=float, default=None,
                   help='Mixer weight decay, on every Mixer parameter (default: --weight-decay, as the reference)')
    g.add_argument('--samix-mixer-norm', type=str, default=None,
                   help="Mixer normalisation: 'qk' (Q and K at unit RMS, default), 'none' (the authors') or 'rms' "
                        "(input at per-sample unit RMS); method §2.6")
    g.add_argument('--samix-mask-area', type=str, default=None,
                   help="mask area: 'lam' (each mask keeps exactly lam of its image, default) or 'free' (learned "
                        "under the mean loss, the authors'); method §2.6. With --samix-pretrained: the frozen "
                        "Mixer's (default: the artifact's own, or its hub entry's)")
    g.add_argument('--samix-mask-sharpness', type=float, default=None,
                   help="least std of each image's mask logits, g: m -> m (1 + g / std(m)) (default 0: as the Mixer "
                        "makes them, the authors'); method §2.6")
    g.add_argument('--samix-mixer-init', type=str, default=None,
                   help="Mixer init: 'fan_in_all' (every conv N(0, 1/fan_in), default), 'fan_in' (Q/K only) or "
                        "'reference' (N(0, 0.01^2), the authors'; AutoMix's default); method §2.6")
    g.add_argument('--samix-mixer-upsample', type=str, default=None,
                   help="mask upsampling: 'bilinear' or 'nearest' (default: as the released configs, SAMix bilinear "
                        "for CNNs and nearest for ViTs, AutoMix nearest)")
    g.add_argument('--samix-lam-rescale-k', type=float, default=-1,
                   help='k of the lam rescale (-1 off; 0.25 CIFAR-like, 1 fine-grained)')
    g.add_argument('--samix-eta', type=float, default=None,
                   help='eta of the Mixer loss (default: 0.1 ImageNet-scale, 0.5 small data)')
    g.add_argument('--samix-mixer-loss', type=str, default=None,
                   help="Mixer loss: 'eta' (spec §4; default) or 'mce' (the authors' configs; default of "
                        "--samix-preset reference)")
    g.add_argument('--samix-momentum-start', type=float, default=None,
                   help='momentum-encoder start (default: min(0.999, 1 - 10/T), T = total steps)')
    g.add_argument('--samix-momentum-end', type=float, default=None,
                   help='momentum-encoder end (default: min(paper value, 1 - 1/T))')
    g.add_argument('--samix-mask-loss', type=str, default=None,
                   help="mask losses per 'image' (default) or over the 'batch' (the authors'; AutoMix's default); method §2.6")
    g.add_argument('--samix-mask-margin', type=float, default=MASK_MARGIN, help='margin of the mean-mask loss')
    g.add_argument('--samix-lam-adjust-prob', type=float, default=MixSettings.lam_adjust_prob,
                   help='probability of lam adjusting')
    g.add_argument('--samix-preset', type=str, default=DEFAULT_PRESET,
                   help="how the step runs (default: what the preset rule picks, docs/benchmarks.md): 'paper' (the "
                        "reference: Mixer on the whole batch every step, clean "
                        "term), economies 'every2' (Mixer every 2nd step), 'half' (half the batch), 'fast' "
                        "(both), 'lowres' (every2 at half resolution), 'lean' (lowres + clean term on a quarter "
                        "of the batch), 'quarter' (every2 + that clean term, joint forward); 'reference' = the "
                        "authors' step exactly: 'paper' with their Mixer, mask losses, beta 0.1 and mce Mixer loss; "
                        "see docs/benchmarks.md")
    g.add_argument('--samix-clean-weight', type=float, default=None,
                   help='W of the clean-batch term W*CE(f(x), y) beside the mixup loss (0 = off; default: from '
                        '--samix-preset, 1 = the reference; also adds the term to timm Mixup/CutMix and SAMix^P)')
    g.add_argument('--samix-clean-forward', type=str, default=None,
                   help="'separate' (one forward per half, BN statistics per half, as the reference) or 'joint' "
                        "(one forward of the 2N batch) (default: from --samix-preset)")
    g.add_argument('--samix-clean-head', type=str, default=None,
                   help="'shared' (the clean batch through the classifier's head; default) or 'own' (the "
                        "reference's second, training-only head on the shared features, saved outside state_dict)")
    g.add_argument('--samix-mixer-batch-frac', type=float, default=None,
                   help='fraction of the batch the Mixer trains on (default: from --samix-preset; 1 = paper)')
    g.add_argument('--samix-mixer-every', type=int, default=None,
                   help='train the Mixer every k-th step (default: from --samix-preset; 1 = paper)')
    g.add_argument('--samix-mixer-until', type=float, default=None,
                   help='train the Mixer for this first fraction of the run, then keep it frozen (the masks '
                        'still follow the momentum encoder) (default: from --samix-preset; 1 = paper)')
    g.add_argument('--samix-mixer-scale', type=float, default=None,
                   help='resolution of the Mixer branch (theta-bar reads a resized copy of its mixed batch) as a '
                        'fraction of the input size, for models that take any input size (default: from '
                        '--samix-preset; 1 = paper)')
    g.add_argument('--samix-clean-frac', type=float, default=None,
                   help='fraction of the clean batch the clean-batch term sees (default: from --samix-preset; '
                        '1 = the reference)')
    g.add_argument('--samix-vis-interval', type=int, default=10,
                   help='epochs between mixed-sample image grids (tensorboard + PNG); 0 = off')


_RESOLUTION = ("timm's scheduled-resolution loader is not supported: online SAMix builds its momentum encoder and "
               "Mixer for one input size; train at one --img-size")
_NAFLEX = "timm's NaFlex loader (variable sequence lengths) is not supported: SAMix mixes batches of one image size"
_KD = "knowledge distillation (timm's distillation tasks) is not implemented: train without a teacher"
_WANDB = 'samix-timm logs to tensorboard (event files in the run folder), not to wandb'
# timm train.py arguments that samix-timm parses, so that timm recipes and command lines keep working, but does
# not run: any value other than timm's default is refused with the reason (engine.checks). dest -> (flags,
# argparse keywords with timm's type and default, reason)
TIMM_NOT_RUN: Dict[str, Tuple[Tuple[str, ...], Dict[str, Any], str]] = {
    'device_modules': (('--device-modules',), dict(type=str, nargs='+', default=None),
                       'samix-timm runs on CUDA or CPU devices (--device); other backends are untested'),
    'val_interval': (('--val-interval',), dict(type=int, default=1),
                     'samix-timm validates and checkpoints every epoch (Mixer health, model_best and --resume use it)'),
    'wandb_project': (('--wandb-project',), dict(type=str, default=None), _WANDB),
    'wandb_tags': (('--wandb-tags',), dict(type=str, nargs='+', default=[]), _WANDB),
    'wandb_resume_id': (('--wandb-resume-id',), dict(type=str, default=''), _WANDB),
    'train_img_sizes': (('--train-img-sizes',), dict(type=int, nargs='+', default=None), _RESOLUTION),
    'train_batch_sizes': (('--train-batch-sizes',), dict(type=int, nargs='+', default=None), _RESOLUTION),
    'train_size_probs': (('--train-size-probs',), dict(type=float, nargs='+', default=None), _RESOLUTION),
    'train_size_schedule': (('--train-size-schedule',), dict(type=str, default='constant'), _RESOLUTION),
    'train_size_schedule_spread': (('--train-size-schedule-spread',), dict(type=float, default=0.65), _RESOLUTION),
    'train_size_random_mix': (('--train-size-random-mix',), dict(type=float, default=0.1), _RESOLUTION),
    'train_batches_per_epoch': (('--train-batches-per-epoch', '--train-steps-per-epoch'), dict(type=int, default=None),
                                'an epoch is one pass over the training set here (SAMix schedules count its steps)'),
    'variable_batch_loss_scale': (('--variable-batch-loss-scale',), dict(type=str, default='none'), _RESOLUTION),
    'naflex_loader': (('--naflex-loader',), dict(action='store_true', default=False), _NAFLEX),
    'naflex_train_seq_lens': (('--naflex-train-seq-lens',),
                              dict(type=int, nargs='+', default=[128, 256, 576, 784, 1024]), _NAFLEX),
    'naflex_max_seq_len': (('--naflex-max-seq-len',), dict(type=int, default=576), _NAFLEX),
    'naflex_patch_sizes': (('--naflex-patch-sizes',), dict(type=int, nargs='+', default=None), _NAFLEX),
    'naflex_patch_size_probs': (('--naflex-patch-size-probs',), dict(type=float, nargs='+', default=None), _NAFLEX),
    'naflex_loss_scale': (('--naflex-loss-scale',), dict(type=str, default='linear'), _NAFLEX),
    'naflex_patchify_channels_first': (('--naflex-patchify-channels-first',), dict(action='store_true', default=False),
                                       _NAFLEX),
    'kd_model_name': (('--kd-model-name',), dict(type=str, default=None), _KD),
    'kd_distill_type': (('--kd-distill-type',), dict(type=str, default='logit'), _KD),
    'kd_loss_type': (('--kd-loss-type',), dict(type=str, default='kl'), _KD),
    'distill_loss_weight': (('--distill-loss-weight',), dict(type=float, default=None), _KD),
    'task_loss_weight': (('--task-loss-weight',), dict(type=float, default=None), _KD),
    'kd_temperature': (('--kd-temperature',), dict(type=float, default=4.0), _KD),
    'kd_student_feature_dim': (('--kd-student-feature-dim',), dict(type=int, default=None), _KD),
    'kd_teacher_feature_dim': (('--kd-teacher-feature-dim',), dict(type=int, default=None), _KD),
    'kd_token_distill_type': (('--kd-token-distill-type',), dict(type=str, default='soft'), _KD),
}


def _add_not_run_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group('timm arguments samix-timm does not run (refused unless left at timm\'s default)')
    for dest, (flags, kwargs, reason) in TIMM_NOT_RUN.items():
        g.add_argument(*flags, dest=dest, help=f'not run: {reason}', **kwargs)


# groups of arguments in the order they show in --help
ARGUMENT_GROUPS = [
    _add_data_args, _add_model_args, _add_optimizer_args, _add_schedule_args,
    _add_augmentation_args, _add_samix_args, _add_norm_ema_args, _add_misc_args, _add_not_run_args,
]


def add_mixer_args(g, **defaults) -> None:
    """The Mixer options train.py and train_ssl.py share, declared once; `defaults` overrides a script's own
    (train_ssl.py fixes what train.py chooses per run, None there)."""
    g.add_argument('--samix-mixer', type=str, default='samix', help="Mixer: 'samix' or the 'automix' ablation")
    g.add_argument('--samix-feature-index', type=int, default=None,
                   help='forward_intermediates index of the momentum encoder the Mixer reads (default: stride 16, '
                        '>= 8x8 on small inputs)')
    g.add_argument('--samix-mixer-lr', type=float, default=None,
                   help='Mixer lr (train.py default: 0.1 for sgd, the backbone lr for adamw)')
    g.add_argument('--samix-mixer-min-lr', type=float, default=None,
                   help='Mixer lr at the end of the cosine (train.py default: lr / 100)')
    g.add_argument('--samix-mixer-dropout', type=float, default=None,
                   help='Mixer dropout (train.py default: 0.1 ImageNet-scale, 0 small data)')
    g.add_argument('--samix-mask-beta', type=float, default=None,
                   help="weight beta of the mask losses (§3; default 1 for the stable Mixer's mask, §2.6, 0.1 for "
                        "the authors' mask and SAMix-I/-C)")
    g.add_argument('--samix-beta-schedule', type=str, default='auto',
                   help="'linear' to 0, 'constant', or 'auto' (constant below 200k training images), §3")
    g.add_argument('--samix-lam-margin', type=float, default=MixSettings.lam_margin,
                   help='plain mixup when lam is this close to 0/1')
    for action in g._group_actions:
        if action.dest in defaults:
            action.default = defaults[action.dest]


def create_train_parser() -> argparse.ArgumentParser:
    """The train.py argument parser (timm's names and defaults plus our additions)."""
    parser = argparse.ArgumentParser(description='Train a timm model, optionally with SAMix')
    parser.add_argument('-c', '--config', default='', type=str, metavar='FILE',
                        help='YAML recipe whose keys set argument defaults (timm style)')
    for add in ARGUMENT_GROUPS:
        add(parser)
    return parser


def closest_arg(key: str, dests) -> Optional[str]:
    """The argument a mistyped or legacy key most likely meant (spelling first, then shared words)."""
    close = difflib.get_close_matches(key, sorted(dests), n=1, cutoff=0.6)
    if close:
        return close[0]
    words = set(key.split('_'))
    shared = sorted((len(words & set(d.split('_'))), -len(d), d) for d in dests)
    return shared[-1][2] if shared and shared[-1][0] else None


class _DuplicateKey(Exception):
    """A mapping of a recipe sets one key twice (YAML would keep the last value silently)."""

    def __init__(self, key: Any, first: int, second: int):
        super().__init__(key)
        self.key, self.first, self.second = key, first, second


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.safe_load` that refuses a key given twice in one mapping, with the lines of both."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == 'tag:yaml.org,2002:merge':  # `<<: *base`, whose keys a recipe may override
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: left to SafeLoader's own error
                continue
            if first is not None:
                raise _DuplicateKey(key, first, key_node.start_mark.line + 1)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_yaml_config(path: str, parser: argparse.ArgumentParser) -> Dict[str, Any]:
    """Read a YAML recipe; keys that are not arguments are dropped with a warning, a key given twice is refused."""
    try:
        with open(path) as f:
            cfg = yaml.load(f, Loader=_UniqueKeyLoader) or {}
    except _DuplicateKey as e:
        raise ConfigError(f"config file '{path}' sets '{e.key}' twice (lines {e.first} and {e.second}): YAML would "
                          f"keep the last value silently; keep one of them") from None
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' not found: check the --config path") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        reason = getattr(e, 'strerror', None) or type(e).__name__
        raise ConfigError(f"config file '{path}' cannot be read ({reason}): pass a YAML file to --config") from None
    except yaml.YAMLError as e:
        mark = getattr(e, 'problem_mark', None)
        where = f' at line {mark.line + 1}, column {mark.column + 1}' if mark else ''
        problem = getattr(e, 'problem', None) or type(e).__name__
        raise ConfigError(f"config file '{path}' is not valid YAML ({problem}{where}): fix the syntax") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"config file '{path}' must be a mapping of argument names to values")
    actions = {a.dest: a for a in parser._actions if a.dest != argparse.SUPPRESS}
    dests = set(actions)
    known = {}
    given = {}
    for key, value in cfg.items():
        dest = str(key).replace('-', '_')
        if dest in given:  # model-ema and model_ema: one argument
            raise ConfigError(f"config file '{path}' sets '{dest}' twice (as '{given[dest]}' and '{key}'): only one "
                              f"value would be used; keep one of them")
        given[dest] = key
        if dest in dests:
            known[dest] = _yaml_value(path, key, value, actions[dest])
            continue
        close = closest_arg(dest, dests)
        hint = f"did you mean '{close}'?" if close else 'no similar argument exists'
        _logger.warning(f"{path}: unknown key '{key}' ignored ({hint})")
    return known


_TYPE_NAMES = {int: 'an integer', float: 'a number', str: 'a string'}


def _yaml_value(path: str, key: str, value: Any, action: argparse.Action) -> Any:
    """A recipe value of the type its argument takes (what the command line would give), or one line naming the
    file, the key and what it takes: argparse never checks YAML defaults, and a wrong type used to surface as a
    traceback deep in the run or as argparse's usage."""
    if value is None:
        return value

    def wrong(what: str):
        return ConfigError(f"config file '{path}': {key}: {value!r} is not {what}: fix the value in the file")

    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise wrong('true or false')
        return value
    if isinstance(action, ParseKwargs):
        if not isinstance(value, dict):
            raise wrong('a mapping ({name: value, ...})')
        return value
    kind = action.type if action.type in _TYPE_NAMES else None
    many = action.nargs in ('+', '*') or isinstance(action.nargs, int)
    if many:
        if not isinstance(value, (list, tuple)):
            raise wrong(f"a list ([...]){f' of {_TYPE_NAMES[kind].split()[-1]}s' if kind else ''}")
        return [_scalar(v, kind, wrong) for v in value]
    if isinstance(value, (list, tuple, dict)) and action.nargs in (None, '?'):
        raise wrong(_TYPE_NAMES.get(kind, 'a single value'))
    return _scalar(value, kind, wrong)


def _scalar(value: Any, kind, wrong) -> Any:
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise wrong('an integer')
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    return float(value)  # '1e-4' as YAML 1.1 reads it
                except ValueError:
                    pass
            raise wrong('a number')
        return float(value)
    if kind is str and isinstance(value, (list, dict)):
        raise wrong('a string')
    return value


def parse_train_args(argv: Optional[Sequence[str]] = None) -> Tuple[argparse.Namespace, str]:
    """Parse the command line after applying `--config` as new defaults; returns (args, args_text)."""
    return parse_with_config(create_train_parser(), argv)


def parse_with_config(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None
                      ) -> Tuple[argparse.Namespace, str]:
    """timm's two-stage parse for any parser: `--config` YAML keys become defaults, then the command line."""
    config_parser = argparse.ArgumentParser(add_help=False)
    config_parser.add_argument('-c', '--config', default='', type=str)
    cfg_args, remaining = config_parser.parse_known_args(argv)
    if cfg_args.config:
        parser.set_defaults(**load_yaml_config(cfg_args.config, parser))
    args = parser.parse_args(remaining)
    args.config = cfg_args.config
    args_text = yaml.safe_dump(vars(args), default_flow_style=False)
    return args, args_text

