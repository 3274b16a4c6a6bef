""" The training run behind train_ssl.py: MoCo v2 (+ a mixing mode) on a timm backbone (spec §6), trained by the
epoch loop train.py runs too (``engine.run.run_epochs``: seeding for an exact ``--resume``, run folder, summary.csv,
checkpoints) with ``MoCoRun``, train_ssl.py's part of it: the queue warm-up, the k-means pseudo-label refresh, the
Mixer health and the kNN monitor. Under torchrun the encoder is DDP-wrapped, keys use shuffled BN, and the queue and
the mixing permutations span the gathered batch (see ``moco``, ``distributed``).
"""
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import torch
import torch.nn as nn
from timm import utils
from timm.data import create_dataset
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..engine.checkpoint import resume_task
from ..engine.checks import (check_input_file, check_kwargs_flags, check_names, check_numbers, check_output,
                              check_path_length)
from ..engine.loop import StepContext
from ..engine.run import HEALTH_IMAGES, RunHooks, log_mixer_health, run_epochs
from ..engine.seeding import SampleSeededDataset, set_loader_epoch
from ..engine.setup import check_data_dir, create_amp, resolve_device, shared_class_index, split_folder
from ..defaults import ssl_mixer_defaults
from ..errors import ConfigError, keyword_as_flag
from ..health import mixer_health
from ..task import MoCoTask
from .cluster import kmeans_labels, require_faiss
from .data import MoCoV2Views, TwoViewDataset, eval_transform, extract_features, moco_v2_transform
from .device_aug import DeviceTwoViewLoader, DeviceViewAugment, IndexedImages, stack_images
from .distributed import broadcast_, broadcast_module_
from .encoder import create_ssl_encoder
from .mixing import get_ssl_mode
from .moco import MoCoOnline, MoCoSAMix
from .probe import eval_features, knn_probe

_logger = logging.getLogger(__name__)

CONFIG_KEYS = ('model', 'model_kwargs', 'img_size', 'mean', 'std', 'crop_pct', 'ssl_mix', 'proj_hidden', 'proj_dim')


@dataclass
class SSLResult:
    """What a finished run reports; ``encoder`` is the unwrapped online encoder."""
    encoder: nn.Module
    moco: MoCoSAMix
    output_dir: Optional[Path]
    last_epoch: int
    train_metrics: Dict[str, float]
    knn_top1: Optional[float]
    checkpoint: Optional[Path]
    mixer_health: Optional[Dict[str, float]] = None  # the last epoch's, for SAMix-I/-C


# create_optimizer_v2 keywords train_ssl.py sets from flags of its own: --opt-kwargs must not repeat them
_OPT_KWARG_FLAGS = dict(opt='--opt', lr='--lr', weight_decay='--weight-decay', momentum='--momentum')


def _check_args(args, mode) -> None:
    check_numbers(args)
    check_names(args)  # --samix-mixer, --samix-beta-schedule, --opt, --sched: one line for an unknown name
    # as train.py's checks: the run folder can be made (writable, a name the file system allows, not inside a split
    # of --data-dir, where the next run would read it as a class), and no keyword is set twice
    check_output(args, 'output/ssl')
    if args.resume:
        check_input_file('resume', args.resume, 'the last.pth.tar of a train_ssl.py run, e.g. '
                                                'output/ssl/<run>/last.pth.tar')
    if 'num_classes' in (args.model_kwargs or {}):
        raise ConfigError(f"--model-kwargs num_classes={args.model_kwargs['num_classes']}: train_ssl.py builds the "
                          f"backbone without a classifier (num_classes=0; the probes fit their own); drop num_classes")
    check_kwargs_flags('opt_kwargs', args.opt_kwargs, _OPT_KWARG_FLAGS)
    if args.knn_interval > 0 and not args.dataset and Path(args.data_dir).is_dir():
        split_folder(Path(args.data_dir), args.val_split, 'validation (the kNN probe)', '--val-split')
        shared_class_index(Path(args.data_dir), args.train_split, args.val_split)  # a val/ class train/ lacks: refused
    if args.batch_size < 2:
        raise ConfigError(f'--batch-size {args.batch_size}: mixing partners need at least 2 samples per batch')
    if args.queue_size < args.batch_size * args.world_size:
        raise ConfigError(f'--queue-size {args.queue_size} is smaller than the global batch '
                          f'{args.batch_size * args.world_size}: raise --queue-size')
    if mode.uses_clusters:
        require_faiss()
        if args.cluster_interval < 1:
            raise ConfigError(f'--cluster-interval {args.cluster_interval} must be 1 or more epochs')


def _train_loader(args, dataset, collate_fn=None) -> DataLoader:
    sampler = DistributedSampler(dataset, shuffle=True, seed=args.seed, drop_last=True) if args.distributed else None
    # per-sample seeds: a resumed run reproduces the uninterrupted one
    loader = DataLoader(SampleSeededDataset(dataset, args.seed), batch_size=args.batch_size,
                        shuffle=sampler is None, sampler=sampler, num_workers=args.workers, pin_memory=args.pin_mem,
                        drop_last=True, persistent_workers=args.workers > 0, collate_fn=collate_fn)
    if len(loader) == 0:
        raise ConfigError(f'--batch-size {args.batch_size} is larger than the {len(dataset)} training images '
                          f'per process: lower --batch-size')
    return loader


def _views(args) -> MoCoV2Views:
    return MoCoV2Views(args.img_size, tuple(args.mean), tuple(args.std), tuple(args.scale), args.hflip,
                       args.color_jitter, args.color_jitter_prob, args.grayscale_prob, args.gaussian_blur_prob,
                       args.reprob, args.recount)


def _loader_views(args, base: Dataset, device: torch.device) -> DataLoader:
    """--view-aug loader: torchvision on PIL images in the workers."""
    return _train_loader(args, TwoViewDataset(base, moco_v2_transform(_views(args))))


def _device_views(args, base: Dataset, device: torch.device) -> DeviceTwoViewLoader:
    """--view-aug device: uint8 images from the workers, both views made as a batch on the device."""
    return DeviceTwoViewLoader(_train_loader(args, IndexedImages(base), stack_images),
                               DeviceViewAugment(_views(args)), device, args.seed, args.rank)


VIEW_AUGS = {'loader': _loader_views, 'device': _device_views}


def _eval_loader(args, split: str) -> DataLoader:
    """A split through the eval transform, labelled with the training split's class index (a val/ that lacks a
    class keeps every label where train/ has it: the kNN monitor and model_best depend on it)."""
    class_map = ('' if args.dataset or not Path(args.data_dir).is_dir() else
                 shared_class_index(Path(args.data_dir), args.train_split, args.val_split))
    dataset = create_dataset(args.dataset, root=args.data_dir, split=split, is_training=False, class_map=class_map,
                             transform=eval_transform(args.img_size, args.mean, args.std, args.crop_pct))
    return DataLoader(dataset, batch_size=max(args.batch_size, 256), shuffle=False, num_workers=args.workers)


def refresh_pseudo_labels(args, moco: MoCoSAMix, loader: DataLoader, epoch: int, device) -> torch.Tensor:
    """k-means of f_θ̄'s pooled train-set features (rank 0), broadcast to every rank (§6)."""
    n = len(loader.dataset)
    labels = torch.zeros(n, dtype=torch.long, device=device)
    if utils.is_primary(args):
        feats, _ = extract_features(moco.momentum.module.backbone, loader, device)
        labels.copy_(kmeans_labels(feats, args.num_clusters, args.cluster_pca_dim, args.cluster_iters,
                                   seed=args.seed + epoch))
    moco.set_pseudo_labels(broadcast_(labels))
    return moco.pseudo_labels


# keyword arguments of the SSL library whose flag is not `--` + the keyword with dashes
_KEYWORD_FLAGS = dict(mode='--ssl-mix', index='--samix-feature-index')


def train_ssl(args, args_text: str) -> SSLResult:
    """Run a whole self-supervised training as configured by ``args`` (see ``args.create_ssl_parser``); errors of
    the library, which name keyword arguments, come out naming this script's flags."""
    try:
        return _train_ssl(args, args_text)
    except ValueError as e:
        message = keyword_as_flag(str(e), _KEYWORD_FLAGS)
        if message is None:
            raise
        raise ConfigError(message) from None


def _train_ssl(args, args_text: str) -> SSLResult:
    device = resolve_device(args)
    primary = utils.is_primary(args)
    mode = get_ssl_mode(args.ssl_mix)
    if args.data_dir or args.data:
        check_path_length('data_dir', args.data_dir or args.data)
    check_data_dir(args)
    _check_args(args, mode)
    utils.random_seed(args.seed, args.rank)

    base = create_dataset(args.dataset, root=args.data_dir, split=args.train_split, is_training=True)
    loader = VIEW_AUGS[args.view_aug](args, base, device)
    total_steps = args.epochs * len(loader)

    encoder = create_ssl_encoder(args.model, args.proj_hidden, args.proj_dim, **args.model_kwargs)
    online = MoCoOnline(encoder, args.num_clusters if mode.uses_clusters else 0).to(device)
    broadcast_module_(online)  # rank 0's start on every rank *before* θ̄ copies it (DDP syncs θ only at wrap)
    if args.channels_last:
        online.to(memory_format=torch.channels_last)  # before θ̄ copies it
    amp_autocast, loss_scaler = create_amp(args, device)
    optimizer = create_optimizer_v2(online, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay,
                                    momentum=args.momentum, **args.opt_kwargs)
    lr_scheduler, num_epochs = create_scheduler_v2(
        optimizer, sched=args.sched, num_epochs=args.epochs, decay_milestones=args.decay_milestones,
        decay_rate=args.decay_rate, min_lr=args.min_lr, warmup_lr=args.warmup_lr, warmup_epochs=args.warmup_epochs,
        step_on_epochs=False, updates_per_epoch=len(loader))
    mixer_kwargs = ssl_mixer_defaults(  # the SSL Mixer's settings, decided in defaults.py (as train.py's)
        total_steps, len(base), mixer=args.samix_mixer, mixer_lr=args.samix_mixer_lr,
        mixer_min_lr=args.samix_mixer_min_lr, mixer_dropout=args.samix_mixer_dropout, mask_beta=args.samix_mask_beta,
        beta_schedule=args.samix_beta_schedule, lam_margin=args.samix_lam_margin)
    moco = MoCoSAMix(online, args.ssl_mix, total_steps, queue_size=args.queue_size, temperature=args.temperature,
                     moco_momentum=args.moco_momentum, alpha=args.ssl_alpha, mix_weight=args.mix_weight,
                     eta=args.eta, tap_index=args.samix_feature_index, input_size=args.img_size,
                     mixer_kwargs=mixer_kwargs, amp_autocast=amp_autocast,
                     grad_scaler=torch.amp.GradScaler(device.type) if loss_scaler is not None else None)

    model = online
    if args.distributed:
        model = nn.parallel.DistributedDataParallel(online, device_ids=[device] if device.type == 'cuda' else None)
    task = MoCoTask(model, moco, args.channels_last, device, config={k: getattr(args, k) for k in CONFIG_KEYS})
    start_epoch = 0
    if args.resume:  # the task's state (online encoder, MoCo's key encoder, queue and Mixer), optimizer, scaler
        start_epoch = resume_task(task, args.resume, optimizer, loss_scaler, args, script='train_ssl.py')
        if primary:
            _logger.info(f'Resumed {args.resume} at epoch {start_epoch}')
    hooks = MoCoRun(args, mode, moco, online, loader, num_epochs, device)
    # MoCo runs its forwards under its own autocast (moco.amp_autocast): the loop adds none
    ctx = StepContext(device=device, loss_scaler=loss_scaler, distributed=args.distributed,
                      world_size=args.world_size, log_interval=args.log_interval, is_primary=primary)
    run = run_epochs(args, args_text, task, loader, optimizer, lr_scheduler, num_epochs, start_epoch, ctx, hooks,
                     dict(input_size=(3, args.img_size, args.img_size)), sched_on_updates=True)
    return SSLResult(encoder=online.encoder, moco=moco, output_dir=run.output_dir, last_epoch=run.last_epoch,
                     train_metrics=run.train_metrics, knn_top1=hooks.knn_top1, checkpoint=run.checkpoint,
                     mixer_health=hooks.health)


class MoCoRun(RunHooks):
    """train_ssl.py's part of the epoch loop (``engine.run.run_epochs``): the queue filled by the key encoder before
    the first epoch (--queue-init keys, §6); the k-means pseudo-labels refreshed before an epoch (SAMix-C); after it,
    BN statistics averaged across ranks, then on rank 0 the Mixer health (SAMix-I/-C) and the kNN monitor, which
    picks model_best (its column is in every row, empty between monitors).

    Args:
        args: train_ssl.py's arguments.
        mode: the ``--ssl-mix`` mode.
        moco: the run's ``MoCoSAMix``.
        online: the online ``MoCoOnline``, unwrapped.
        loader: the training loader (the queue warm-up reads it).
        num_epochs: epochs of the whole run (the last one gets a kNN monitor).
        device: where the health batch goes.
    """
    tb_tags = ('epoch', 'epoch')

    def __init__(self, args, mode, moco: MoCoSAMix, online: MoCoOnline, loader, num_epochs: int,
                 device: torch.device):
        self.args, self.mode, self.moco, self.online, self.loader = args, mode, moco, online, loader
        self.num_epochs, self.device = num_epochs, device
        self.primary = utils.is_primary(args)
        self.cluster_loader = self.knn_loaders = self.health_x = None
        self.knn_top1: Optional[float] = None  # the last monitor's
        self.knn_now: Optional[float] = None  # this epoch's
        self.health: Optional[Dict[str, float]] = None

    def evaluate_command(self, checkpoint: str) -> str:
        return f'python -m samix_timm.ssl.probe --checkpoint {checkpoint} --data-dir {self.args.data_dir}'

    def describe(self, num_epochs: int, updates_per_epoch: int) -> str:
        mixer_info = f', Mixer on stage {self.moco.tap_index}' if self.moco.mixer is not None else ''
        return (f'MoCo v2 + {self.args.ssl_mix} on {self.args.model}: {num_epochs} epochs x {updates_per_epoch} '
                f'steps{mixer_info}')

    def prepare(self) -> None:
        """The queue warm-up, then the loaders of the k-means, of the kNN monitor and of the health batch."""
        args, moco = self.args, self.moco
        if args.queue_init == 'keys' and not moco.queue.full:  # real negatives from the first step (§6)
            set_loader_epoch(self.loader, -1)  # views no training step sees again: no positive among the negatives
            batches = moco.warm_up_queue(self.loader, self.device, args.channels_last)
            if self.primary:
                _logger.info(f'Queue of {moco.queue.size} keys filled by the key encoder on {batches} batches')
        self.cluster_loader = _eval_loader(args, args.train_split) if self.mode.uses_clusters else None
        if self.primary and args.knn_interval > 0:
            self.knn_loaders = _eval_loader(args, args.train_split), _eval_loader(args, args.val_split)
        if self.primary and moco.mixer is not None:  # a fixed batch (first training images, eval transform)
            self.health_x = next(iter(_eval_loader(args, args.train_split)))[0][:HEALTH_IMAGES].to(self.device)

    def on_epoch_start(self, epoch: int) -> None:
        if self.mode.uses_clusters and (epoch % self.args.cluster_interval == 0 or self.moco.pseudo_labels is None):
            refresh_pseudo_labels(self.args, self.moco, self.cluster_loader, epoch, self.device)

    def evaluate_epoch(self, epoch: int, train_metrics: Dict[str, float], ctx: StepContext,
                       output_dir: Optional[Path]) -> Dict[str, Any]:
        """The health (into the train columns) and the kNN monitor (the eval column, '' between monitors)."""
        args = self.args
        if args.distributed:  # each rank's last forwards moved its BN statistics: average them (timm's dist_bn)
            utils.distribute_bn(self.online, args.world_size, reduce=True)
            utils.distribute_bn(self.moco.momentum.module, args.world_size, reduce=True)
        self.knn_now = None
        if not self.primary:
            return {}
        if self.health_x is not None:
            self.health = mixer_health(self.moco, self.health_x, net=self.moco.mixer.mixer)
            train_metrics.update(self.health)
            log_mixer_health(epoch, self.health, f'{len(self.health_x)} images')
        if self.knn_loaders is None:
            return {}
        if (epoch + 1) % args.knn_interval == 0 or epoch == self.num_epochs - 1:
            feats = [eval_features(self.online.encoder.backbone, ld, self.device) for ld in self.knn_loaders]
            self.knn_top1 = self.knn_now = knn_probe(*feats[0], *feats[1], k=args.knn_k)
            _logger.info(f'epoch {epoch}: kNN top-1 {self.knn_now:.2f}%')
        return dict(knn_top1=self.knn_now if self.knn_now is not None else '')

    def checkpoint_metric(self) -> Optional[float]:
        return self.knn_now
