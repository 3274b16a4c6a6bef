""" The training run behind train.py: timm's components wired the way timm's train.py wires them, then the epochs
of `engine.run.run_epochs` (the loop train_ssl.py runs too) with `ClassifierRun`, train.py's part of it: validation,
the EMA's, the Mixer health and the mix-grid pictures.

Differences from timm's script, each deliberate: mixing runs on the device after the loader (prefetcher on or off),
built by `create_mixup`; the loop's own (seeding for an exact resume, run folders) are listed in `engine.run`.
"""
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import torch
import torch.nn as nn
from timm import utils
from timm.data import resolve_data_config
from timm.layers import convert_splitbn_model, convert_sync_batchnorm, set_fast_norm
from timm.models import create_model, is_model, list_models
from timm.optim import create_optimizer_v2, optimizer_kwargs
from timm.scheduler import create_scheduler_v2, scheduler_kwargs

from ..errors import ConfigError
from ..factory import create_clean_term, create_mixup, mixing_active
from ..health import mixer_health
from ..task import create_task
from .args import ConfigError
from .checkpoint import load_model_state, model_state, read_checkpoint, resume_task
from .checks import check_train_args
from .loop import StepContext, evaluate
from .run import HEALTH_IMAGES, RunHooks, log_mixer_health, run_epochs
from .setup import (
    check_num_classes, create_amp, create_datasets, create_loaders, create_train_loss, dataset_class_to_idx,
    dataset_num_classes, resolve_device)
from .visualize import write_mix_grid

_logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished run reports (also printed by train.py); `model` is the unwrapped classifier."""
    model: nn.Module
    mixup_fn: Optional[object]
    output_dir: Optional[Path]
    last_epoch: int
    eval_metrics: Dict[str, float]
    ema_metrics: Optional[Dict[str, float]]
    best_metric: Optional[float]
    best_epoch: Optional[int]
    checkpoint: Optional[Path]
    mixer_health: Optional[Dict[str, float]] = None  # the last epoch's, for mixers that can preview


def build_model(args, num_classes: Optional[int]) -> nn.Module:
    """timm `create_model` from the arguments; an unknown model name gets a suggestion."""
    if not is_model(args.model):
        close = list_models(f'*{args.model.split(".")[0][:8]}*')[:5]
        raise ConfigError(f"unknown timm model '{args.model}': pick a name from timm.list_models()"
                          + (f", e.g. {', '.join(close)}" if close else ''))
    in_chans = args.in_chans or (args.input_size[0] if args.input_size else 3)
    overlay = dict(file=args.pretrained_path) if args.pretrained_path else None
    drop_path = args.drop_path if args.drop_path is not None else args.drop_connect  # timm's deprecated name
    model = create_model(
        args.model, pretrained=args.pretrained, pretrained_cfg_overlay=overlay, in_chans=in_chans,
        num_classes=num_classes, drop_rate=args.drop, drop_path_rate=drop_path,
        drop_block_rate=args.drop_block, global_pool=args.gp, bn_momentum=args.bn_momentum,
        bn_eps=args.bn_eps, scriptable=args.torchscript, **args.model_kwargs)
    if args.initial_checkpoint:  # timm's strict load, with one-line errors
        checkpoint = read_checkpoint(args.initial_checkpoint, '--initial-checkpoint')
        load_model_state(model, model_state(checkpoint, args.initial_checkpoint, '--initial-checkpoint'),
                         args.initial_checkpoint, '--initial-checkpoint', checkpoint.get('args'))
    if args.head_init_scale is not None:
        with torch.no_grad():
            model.get_classifier().weight.mul_(args.head_init_scale)
            model.get_classifier().bias.mul_(args.head_init_scale)
    if args.head_init_bias is not None:
        nn.init.constant_(model.get_classifier().bias, args.head_init_bias)
    if args.grad_checkpointing:
        model.set_grad_checkpointing(enable=True)
    return model


def resolve_lr(args) -> None:
    """timm's rule: without `--lr`, lr = lr_base scaled by global batch / lr_base_size."""
    if args.lr is not None:
        return
    global_batch = args.batch_size * args.world_size * args.grad_accum_steps
    ratio = global_batch / args.lr_base_size
    scale = args.lr_base_scale or ('sqrt' if any(o in args.opt.lower() for o in ('ada', 'lamb')) else 'linear')
    args.lr = args.lr_base * (ratio ** 0.5 if scale == 'sqrt' else ratio)
    if utils.is_primary(args):
        _logger.info(f'Learning rate {args.lr:.4g} from --lr-base {args.lr_base} and global batch {global_batch} '
                     f'({scale} scaling)')


def create_mixing(args, model: nn.Module, data_config: dict, steps_per_epoch: int, train_size: int,
                  amp_autocast, loss_scaler, device: torch.device):
    """(mixing component or None, its clean-batch term or None, the recipe's training loss) as `train` builds them
    for `build_task`. Also what `reproduce.measure_cost` times."""
    mixup_fn = create_mixup(args, model, args.num_classes, data_config=data_config, steps_per_epoch=steps_per_epoch,
                            train_size=train_size, amp_autocast=amp_autocast, fp16_scaler=loss_scaler is not None)
    loss_fn = create_train_loss(args, mixing_active(args)).to(device)
    return mixup_fn, create_clean_term(args, mixup_fn, args.num_classes), loss_fn


def build_task(args, model: nn.Module, loss_fn: nn.Module, mixup_fn, clean, device: torch.device,
               class_to_idx: Optional[Dict[str, int]] = None):
    """The training step (`samix_timm.task`) around the model, with its EMA (`--model-ema`, timm's `setup_ema`):
    DDP-wrapped when distributed (`prepare_distributed`), then compiled with `--torchcompile` (SAMix's θ̄ passes and
    Mixer with it); it also says what a checkpoint holds (the EMA, the class index, SAMix's state). Built before
    the optimizer (`create_task_optimizer`)."""
    clean_head = args.samix_clean_head or 'shared'
    if clean_head == 'own' and (clean is None or clean.weight == 0):
        raise ConfigError('--samix-clean-head own needs the clean-batch term: pass --samix-clean-weight 1 beside '
                          'the mixing, or drop --samix-clean-head')
    task = create_task(model, loss_fn, mixup_fn, clean, channels_last=args.channels_last, device=device,
                       class_to_idx=class_to_idx, clean_head=clean_head)
    if args.model_ema:
        task.setup_ema(decay=args.model_ema_decay, use_warmup=args.model_ema_warmup,
                       device='cpu' if args.model_ema_force_cpu else None)
    if args.distributed:
        task.prepare_distributed(device_ids=[device] if device.type == 'cuda' else None,
                                 broadcast_buffers=not args.no_ddp_bb)
    if args.torchcompile:
        task.compile(args.torchcompile, args.torchcompile_mode)
    return task


def create_task_optimizer(args, task) -> torch.optim.Optimizer:
    """timm's optimizer of the task's classifier (its weight-decay and layer-decay rules), then the groups of what
    the task trains beside it (the clean head of `--samix-clean-head own`)."""
    optimizer = create_optimizer_v2(utils.unwrap_model(task.trainable_module), **optimizer_kwargs(cfg=args),
                                    **args.opt_kwargs)
    for group in task.extra_param_groups(args.weight_decay):
        optimizer.add_param_group(group)
    return optimizer


def train(args, args_text: str) -> TrainResult:
    """Run a whole training as configured by timm-style `args`; returns the final metrics."""
    check_train_args(args)
    args.prefetcher = not args.no_prefetcher
    args.grad_accum_steps = max(1, args.grad_accum_steps)
    device = resolve_device(args)
    primary = utils.is_primary(args)
    if args.distributed:
        _logger.info(f'Process {args.rank} of {args.world_size} on {args.device}')
    elif primary:
        _logger.info(f'Training with a single process on {args.device}')
    if args.log_wandb:
        _logger.warning('--log-wandb is not supported by samix-timm: logging to tensorboard only')
    amp_autocast, loss_scaler = create_amp(args, device)
    utils.random_seed(args.seed, args.rank)
    if args.fuser:
        utils.set_jit_fuser(args.fuser)
    if args.fast_norm:
        set_fast_norm()

    dataset_train, dataset_eval = create_datasets(args)
    model = build_model(args, args.num_classes)
    if args.num_classes is None:
        args.num_classes = model.num_classes
    check_num_classes(args.num_classes, dataset_train, args.train_split)
    if primary:
        n_params = sum(p.numel() for p in model.parameters())
        _logger.info(f'Model {args.model} created, {n_params} parameters, {args.num_classes} classes '
                     f'(data has {dataset_num_classes(dataset_train)})')
    data_config = resolve_data_config(vars(args), model=model, verbose=primary)
    if args.aug_splits > 1 and mixing_active(args):
        raise ConfigError('--aug-splits cannot be combined with --mixup/--cutmix: drop one of them')
    if args.split_bn:
        model = convert_splitbn_model(model, max(args.aug_splits, 2))
    model.to(device=device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if args.distributed and args.sync_bn:
        args.dist_bn = ''
        model = convert_sync_batchnorm(model)
    if args.torchscript:
        model = torch.jit.script(model)

    resolve_lr(args)
    loader_train, loader_eval = create_loaders(args, dataset_train, dataset_eval, data_config, device)
    mixup_fn, clean, train_loss_fn = create_mixing(args, model, data_config, len(loader_train), len(dataset_train),
                                                   amp_autocast, loss_scaler, device)
    task = build_task(args, model, train_loss_fn, mixup_fn, clean, device, dataset_class_to_idx(dataset_train))
    optimizer = create_task_optimizer(args, task)
    model_ema = task.trainable_module_ema if task.has_ema() else None
    resume_epoch = None
    if args.resume:  # the task's state (classifier, EMA, Mixer), the optimizer and the scaler
        resume_epoch = resume_task(task, args.resume, None if args.no_resume_opt else optimizer,
                                   None if args.no_resume_opt else loss_scaler, args)
        if primary:
            _logger.info(f'Resumed {args.resume}: epoch {resume_epoch} next')
    model = task.trainable_module

    updates_per_epoch = (len(loader_train) + args.grad_accum_steps - 1) // args.grad_accum_steps
    lr_scheduler, num_epochs = create_scheduler_v2(
        optimizer, **scheduler_kwargs(args), updates_per_epoch=updates_per_epoch)
    start_epoch = args.start_epoch if args.start_epoch is not None else (resume_epoch or 0)
    hooks = ClassifierRun(args, model, mixup_fn, loader_train, loader_eval, data_config, num_epochs, device,
                          model_ema=model_ema)
    ctx = StepContext(
        device=device, amp_autocast=amp_autocast, loss_scaler=loss_scaler, channels_last=args.channels_last,
        distributed=args.distributed, world_size=args.world_size, grad_accum_steps=args.grad_accum_steps,
        clip_grad=args.clip_grad, clip_mode=args.clip_mode, log_interval=args.log_interval,
        is_primary=primary, synchronize_step=args.synchronize_step)
    run = run_epochs(args, args_text, task, loader_train, optimizer, lr_scheduler, num_epochs, start_epoch, ctx,
                     hooks, data_config, sched_on_updates=args.sched_on_updates, save_images=args.save_images)
    return TrainResult(model=utils.unwrap_model(model), mixup_fn=mixup_fn, output_dir=run.output_dir,
                       last_epoch=run.last_epoch, eval_metrics=hooks.eval_metrics, ema_metrics=hooks.ema_metrics,
                       best_metric=run.best_metric, best_epoch=run.best_epoch, checkpoint=run.checkpoint,
                       mixer_health=hooks.health)


class ClassifierRun(RunHooks):
    """train.py's part of the epoch loop (`engine.run.run_epochs`): mixing off from --mixup-off-epoch; after each
    epoch the Mixer health on a fixed held-out batch (mixers that can preview), BN statistics shared across ranks
    (--dist-bn), validation and the EMA's, which then picks model_best (timm's convention), and the mix-grid pictures.

    Args:
        args: train.py's arguments.
        model: the classifier as the task trains it (DDP-wrapped when distributed).
        mixup_fn: the mixing component, or None.
        loader_train: the training loader (the pictures show a batch of it).
        loader_eval: the validation loader.
        data_config: timm's data config (the pictures' mean and std).
        num_epochs: epochs of the whole run (the last one gets pictures).
        device: where the health batch goes.
        model_ema: timm's EMA of the classifier, or None.
    """

    def __init__(self, args, model: nn.Module, mixup_fn, loader_train, loader_eval, data_config: Dict[str, Any],
                 num_epochs: int, device: torch.device, model_ema: Optional[nn.Module] = None):
        self.args, self.model, self.model_ema, self.mixup_fn = args, model, model_ema, mixup_fn
        self.loader_train, self.loader_eval = loader_train, loader_eval
        self.data_config, self.num_epochs = data_config, num_epochs
        self.decreasing = args.eval_metric == 'loss'
        self.health_x = None
        if hasattr(mixup_fn, 'preview'):  # a fixed held-out batch for the per-epoch Mixer health
            self.health_x = next(iter(loader_eval))[0][:HEALTH_IMAGES].to(device)
        self.eval_metrics: Dict[str, float] = {}
        self.ema_metrics: Optional[Dict[str, float]] = None
        self.health: Optional[Dict[str, float]] = None

    def evaluate_command(self, checkpoint: str) -> str:
        return f'python validate.py --checkpoint {checkpoint} --data-dir {self.args.data_dir}'

    def on_epoch_start(self, epoch: int) -> None:
        if self.mixup_fn is not None and self.args.mixup_off_epoch and epoch >= self.args.mixup_off_epoch:
            self.mixup_fn.mixup_enabled = False

    def evaluate_epoch(self, epoch: int, train_metrics: Dict[str, float], ctx: StepContext,
                       output_dir: Optional[Path]) -> Dict[str, float]:
        """The health (into the train columns), then validation and the EMA's as the eval columns (ema_*)."""
        args = self.args
        if self.health_x is not None:
            self.health = mixer_health(self.mixup_fn, self.health_x)
            train_metrics.update(self.health)
            if ctx.is_primary:
                log_mixer_health(epoch, self.health, f'{len(self.health_x)} held-out images')
        dist_bn = args.distributed and args.dist_bn in ('broadcast', 'reduce')
        if dist_bn:
            utils.distribute_bn(self.model, args.world_size, args.dist_bn == 'reduce')
        self.eval_metrics = evaluate(self.model, self.loader_eval, ctx)
        if self.model_ema is not None and not args.model_ema_force_cpu:
            if dist_bn:
                utils.distribute_bn(self.model_ema, args.world_size, args.dist_bn == 'reduce')
            self.ema_metrics = evaluate(self.model_ema.module, self.loader_eval, ctx, log_suffix=' (EMA)')
        if ctx.is_primary and self._is_vis_epoch(epoch):
            x, _ = next(iter(self.loader_train))  # shuffled: a mix of classes
            png = write_mix_grid(self.mixup_fn, x.to(ctx.device)[:8], self.data_config['mean'],
                                 self.data_config['std'], epoch, output_dir, ctx.tb_writer)
            _logger.info(f'Mixed samples written to {png}')
        columns = {k: v for k, v in self.eval_metrics.items() if k != 'img_per_s'}
        if self.ema_metrics is not None:
            columns.update((f'ema_{k}', v) for k, v in self.ema_metrics.items() if k != 'img_per_s')
        return columns

    def checkpoint_metric(self) -> float:
        # timm's convention: the EMA metric picks the best checkpoint when EMA is evaluated
        return (self.ema_metrics if self.ema_metrics is not None else self.eval_metrics)[self.args.eval_metric]

    def scheduler_metric(self) -> float:
        return self.eval_metrics[self.args.eval_metric]

    def _is_vis_epoch(self, epoch: int) -> bool:
        """Image grids every --samix-vis-interval epochs and at the last epoch, for mixers that can preview."""
        if not hasattr(self.mixup_fn, 'preview') or self.args.samix_vis_interval <= 0:
            return False
        return epoch % self.args.samix_vis_interval == 0 or epoch == self.num_epochs - 1
