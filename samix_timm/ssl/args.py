""" Command line of train_ssl.py: timm's argument names where timm has one, plus the MoCo / SSL-mix arguments.

Two-stage parsing as train.py: ``--config FILE.yaml`` keys become defaults, the command line wins.
"""
import argparse
from typing import Optional, Sequence, Tuple

from ..defaults import SSL_FLAG_DEFAULTS
from ..engine.args import ParseKwargs, add_mixer_args, parse_with_config
from .mixing import list_ssl_modes

__all__ = ['create_ssl_parser', 'parse_ssl_args']


def create_ssl_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description='Self-supervised MoCo v2 (+ Mixup/CutMix/SAMix-I/SAMix-C) on a timm model')
    p.add_argument('-c', '--config', default='', type=str, metavar='FILE', help='YAML recipe of argument defaults')
    p.add_argument('data', nargs='?', metavar='DIR', const=None, help='dataset root (timm style, use --data-dir)')
    g = p.add_argument_group('Data')
    g.add_argument('--data-dir', metavar='DIR', help='ImageFolder root with train/ and val/')
    g.add_argument('--dataset', default='', metavar='NAME', help='timm dataset type; empty = ImageFolder')
    g.add_argument('--train-split', default='train', help='train split')
    g.add_argument('--val-split', default='validation', help='split of the kNN monitor (also finds val/)')
    g = p.add_argument_group('Model')
    g.add_argument('--model', default='resnet50', help='timm backbone (built headless)')
    g.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs, help='extra create_model kwargs')
    g.add_argument('--img-size', type=int, default=224, help='training image size')
    g.add_argument('--mean', type=float, nargs=3, default=(0.485, 0.456, 0.406), help='dataset mean')
    g.add_argument('--std', type=float, nargs=3, default=(0.229, 0.224, 0.225), help='dataset std')
    g.add_argument('--crop-pct', type=float, default=0.875, help='centre crop of probes and clustering')
    g.add_argument('--resume', default='', help='continue a train_ssl.py checkpoint (last.pth.tar)')
    g.add_argument('-b', '--batch-size', type=int, default=256, help='batch size per process')
    g = p.add_argument_group('Optimizer and schedule')
    g.add_argument('--opt', default='sgd', help='timm optimizer name')
    g.add_argument('--lr', type=float, default=0.03, help='learning rate (MoCo v2: 0.03 at batch 256)')
    g.add_argument('--momentum', type=float, default=0.9, help='optimizer momentum')
    g.add_argument('--weight-decay', type=float, default=1e-4, help='weight decay')
    g.add_argument('--opt-kwargs', nargs='*', default={}, action=ParseKwargs, help='extra optimizer kwargs')
    g.add_argument('--sched', default='cosine', help='timm scheduler (cosine, step, multistep, ...)')
    g.add_argument('--epochs', type=int, default=200, help='epochs to train')
    g.add_argument('--warmup-epochs', type=int, default=0, help='linear warmup epochs')
    g.add_argument('--warmup-lr', type=float, default=1e-5, help='warmup start lr')
    g.add_argument('--min-lr', type=float, default=0., help='lr at the end of the schedule')
    g.add_argument('--decay-milestones', type=int, nargs='+', default=[120, 160], help='multistep epochs')
    g.add_argument('--decay-rate', type=float, default=0.1, help='step/multistep decay')
    g = p.add_argument_group('MoCo v2 augmentation (§6)')
    g.add_argument('--view-aug', default='loader', choices=('loader', 'device'),
                   help='where the views are made: torchvision on PIL images in the loader workers, or per-sample '
                        'parameters applied to the whole batch on the training device (one image size; '
                        'docs/method.md §6)')
    g.add_argument('--scale', type=float, nargs=2, default=(0.2, 1.0), help='RandomResizedCrop scale')
    g.add_argument('--hflip', type=float, default=0.5, help='horizontal flip probability')
    g.add_argument('--color-jitter', type=float, default=0.4, help='brightness/contrast/saturation (hue = /4)')
    g.add_argument('--color-jitter-prob', type=float, default=0.8, help='colour jitter probability')
    g.add_argument('--grayscale-prob', type=float, default=0.2, help='grayscale probability')
    g.add_argument('--gaussian-blur-prob', type=float, default=0.5, help='blur probability')
    g.add_argument('--reprob', type=float, default=0., help='random erasing probability (timm; 0 = MoCo v2)')
    g.add_argument('--recount', type=int, default=1, help='random erasing boxes (timm)')
    g = p.add_argument_group('MoCo v2 and mixing (§4, §6)')
    g.add_argument('--ssl-mix', default='none', choices=list_ssl_modes(), help='mixing mode')
    g.add_argument('--queue-size', type=int, default=16384, help='keys in the queue (65536 IN-1k, 16384 small)')
    g.add_argument('--queue-init', default='keys', choices=('keys', 'random'),
                   help='queue before the first step: keys of the key encoder on training views, or random '
                        'unit vectors (MoCo v2 as published); docs/method.md §6')
    g.add_argument('--temperature', type=float, default=0.2, help='infoNCE temperature T')
    g.add_argument('--moco-momentum', type=float, default=0.999, help='key-encoder momentum m')
    g.add_argument('--proj-hidden', type=int, default=2048, help='projector hidden width')
    g.add_argument('--proj-dim', type=int, default=128, help='embedding dimension')
    g.add_argument('--ssl-alpha', type=float, default=2.0, help='lam ~ Beta(alpha, alpha)')
    g.add_argument('--mix-weight', type=float, default=1.0, help='weight of the mixed-image infoNCE')
    g.add_argument('--eta', type=float, default=0.5, help='eta of the Mixer loss (§4)')
    g.add_argument('--num-clusters', type=int, default=200, help='k-means clusters C (samix_c)')
    g.add_argument('--cluster-interval', type=int, default=10, help='epochs between k-means refreshes (samix_c)')
    g.add_argument('--cluster-pca-dim', type=int, default=256, help='PCA dimension before k-means')
    g.add_argument('--cluster-iters', type=int, default=20, help='k-means iterations')
    # the Mixer options of train.py, with the fixed values of the SAMix-I/-C recipes (§6)
    add_mixer_args(g, **SSL_FLAG_DEFAULTS)
    g = p.add_argument_group('Monitoring, output, devices')
    g.add_argument('--knn-interval', type=int, default=1, help='epochs between kNN monitors on the val split (0 = off)')
    g.add_argument('--knn-k', type=int, default=20, help='neighbours of the kNN monitor')
    g.add_argument('--output', default='output/ssl', help='output root')
    g.add_argument('--experiment', default='', help='output sub-folder name')
    g.add_argument('--checkpoint-hist', type=int, default=3, help='epoch checkpoints kept besides last.pth.tar')
    g.add_argument('--log-interval', type=int, default=50, help='steps between log lines')
    g.add_argument('--seed', type=int, default=42, help='random seed')
    g.add_argument('-j', '--workers', type=int, default=4, help='data loader workers')
    g.add_argument('--pin-mem', action='store_true', default=False, help='pin loader memory')
    g.add_argument('--device', default=None, help='default cuda if available, else cpu')
    g.add_argument('--amp', action='store_true', default=False, help='mixed precision (torch.autocast)')
    g.add_argument('--amp-dtype', default='float16', help='AMP dtype: float16 or bfloat16 (bfloat16 on CPU)')
    g.add_argument('--amp-impl', default='native', help='AMP implementation (native only)')
    g.add_argument('--channels-last', action='store_true', default=False, help='channels_last memory layout')
    g.add_argument('--dist-backend', default=None, help='nccl on cuda, else gloo')
    g.add_argument('--dist-url', default=None, help='distributed init url (env:// by default)')
    g.add_argument('--local_rank', '--local-rank', default=0, type=int)
    return p


def parse_ssl_args(argv: Optional[Sequence[str]] = None) -> Tuple[argparse.Namespace, str]:
    """Parse train_ssl.py's command line after applying ``--config``; returns (args, args_text)."""
    return parse_with_config(create_ssl_parser(), argv)
