""" The training run behind train.py: timm's components wired the way timm's train.py wires them.

Differences from timm's script, each deliberate:
- mixing runs on the device after the loader (prefetcher on or off), built by `create_mixup`;
- every epoch reseeds all RNGs from (seed, epoch, rank) and each sample is augmented under its own
  seed (engine/seeding.py), so `--resume` reproduces the uninterrupted run with persistent workers;
- the output folder of an earlier run is never reused (a suffix is added);
- tensorboard scalars beside timm's `summary.csv` and `args.yaml`.
"""
import errno
import logging
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Optional

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
from ..health import format_health, is_grey, mixer_health
from ..task import create_task
from .args import ConfigError
from .checkpoint import load_model_state, model_state, read_checkpoint, resume_task
from .checks import check_train_args
from .loop import StepContext, evaluate, train_one_epoch
from .seeding import set_loader_epoch
from .setup import (
    check_num_classes, create_amp, create_datasets, create_loaders, create_output_dir, create_train_loss,
    dataset_class_to_idx, dataset_num_classes, resolve_device, run_folder)
from .visualize import write_mix_grid

_logger = logging.getLogger(__name__)

HEALTH_IMAGES = 100  # held-out images the Mixer health is measured on


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


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of one epoch (ranks add their rank on top, see timm.utils.random_seed)."""
    return seed + 1000 * (epoch + 1)


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

    health_x = health = None
    if hasattr(mixup_fn, 'preview'):  # a fixed held-out batch for the per-epoch Mixer health
        health_x = next(iter(loader_eval))[0][:HEALTH_IMAGES].to(device)

    updates_per_epoch = (len(loader_train) + args.grad_accum_steps - 1) // args.grad_accum_steps
    lr_scheduler, num_epochs = create_scheduler_v2(
        optimizer, **scheduler_kwargs(args), updates_per_epoch=updates_per_epoch)
    start_epoch = args.start_epoch if args.start_epoch is not None else (resume_epoch or 0)
    check_epochs_left(start_epoch, num_epochs, args)  # before anything is written

    output_dir = saver = tb_writer = None
    if primary:
        output_dir = create_output_dir(args, data_config)
        (output_dir / 'args.yaml').write_text(args_text)
        saver = utils.CheckpointSaver(
            model=model, optimizer=optimizer, args=args, model_ema=model_ema, amp_scaler=loss_scaler,
            checkpoint_dir=str(output_dir), recovery_dir=str(output_dir),
            decreasing=args.eval_metric == 'loss', max_history=args.checkpoint_hist,
            task=task)
        from torch.utils.tensorboard import SummaryWriter
        tb_writer = SummaryWriter(log_dir=str(output_dir))

    with run_folder(output_dir, tb_writer):  # a run that fails before its first checkpoint leaves no folder
        if lr_scheduler is not None and start_epoch > 0:
            if args.sched_on_updates:
                lr_scheduler.step_update(start_epoch * updates_per_epoch)
            else:
                lr_scheduler.step(start_epoch)
        if primary:
            _logger.info(f'Scheduled epochs: {num_epochs}, {updates_per_epoch} updates per epoch, '
                         f'output in {output_dir}')

        ctx = StepContext(
            device=device, amp_autocast=amp_autocast, loss_scaler=loss_scaler, channels_last=args.channels_last,
            distributed=args.distributed, world_size=args.world_size, grad_accum_steps=args.grad_accum_steps,
            clip_grad=args.clip_grad, clip_mode=args.clip_mode, log_interval=args.log_interval,
            is_primary=primary, tb_writer=tb_writer, synchronize_step=args.synchronize_step,
            image_dir=output_dir if args.save_images else None)
        eval_metrics, ema_metrics = {}, None
        best_metric = best_epoch = None
        epoch = start_epoch - 1
        for epoch in range(start_epoch, num_epochs):
            utils.random_seed(epoch_seed(args.seed, epoch), args.rank)
            set_loader_epoch(loader_train, epoch)
            if mixup_fn is not None and args.mixup_off_epoch and epoch >= args.mixup_off_epoch:
                mixup_fn.mixup_enabled = False
            train_metrics = train_one_epoch(
                epoch, task, loader_train, optimizer, ctx, lr_scheduler=lr_scheduler, num_epochs=num_epochs)
            if health_x is not None:
                health = mixer_health(mixup_fn, health_x)
                train_metrics.update(health)
                if primary:  # §2.6: a grey Mixer is never silent
                    (_logger.warning if is_grey(health) else _logger.info)(
                        f'Mixer health (epoch {epoch}, {len(health_x)} held-out images): {format_health(health)}')
            if args.distributed and args.dist_bn in ('broadcast', 'reduce'):
                utils.distribute_bn(model, args.world_size, args.dist_bn == 'reduce')
            eval_metrics = evaluate(model, loader_eval, ctx)
            if model_ema is not None and not args.model_ema_force_cpu:
                if args.distributed and args.dist_bn in ('broadcast', 'reduce'):
                    utils.distribute_bn(model_ema, args.world_size, args.dist_bn == 'reduce')
                ema_metrics = evaluate(model_ema.module, loader_eval, ctx, log_suffix=' (EMA)')
            if primary and _is_vis_epoch(args, mixup_fn, epoch, num_epochs):
                x, _ = next(iter(loader_train))  # shuffled: a mix of classes
                png = write_mix_grid(mixup_fn, x.to(device)[:8], data_config['mean'], data_config['std'], epoch,
                                     output_dir, tb_writer)
                _logger.info(f'Mixed samples written to {png}')
            if primary:
                with epoch_writes(epoch, output_dir, 'logs (summary.csv)'):
                    _write_epoch_logs(epoch, train_metrics, eval_metrics, ema_metrics, optimizer, output_dir,
                                      tb_writer, write_header=best_metric is None)
                # timm's convention: the EMA metric picks the best checkpoint when EMA is evaluated
                chosen = ema_metrics if ema_metrics is not None else eval_metrics
                best_metric, best_epoch = save_checkpoint(saver, epoch, chosen[args.eval_metric], output_dir)
            if lr_scheduler is not None:
                lr_scheduler.step(epoch + 1, eval_metrics[args.eval_metric])
    return TrainResult(model=utils.unwrap_model(model), mixup_fn=mixup_fn, output_dir=output_dir, last_epoch=epoch,
                       eval_metrics=eval_metrics, ema_metrics=ema_metrics, best_metric=best_metric, best_epoch=best_epoch,
                       checkpoint=output_dir / 'last.pth.tar' if output_dir else None, mixer_health=health)


# what torch's checkpoint writer says when a write fails (full disk, file gone, a folder that turned read-only);
# other RuntimeErrors are not ours
_WRITER_FAILURES = ('unexpected pos', 'file write failed', 'PytorchStreamWriter', 'iostream error', 'open file failed')
_NOT_ALLOWED = (errno.EACCES, errno.EPERM, errno.EROFS)


@contextmanager
def epoch_writes(epoch: int, output_dir: Path, what: str = 'checkpoint') -> Iterator[None]:
    """A write of the run folder that fails (full disk, a folder that turned read-only or lost its permission) is one
    line: what could not be written, why, the fix, and the checkpoint to resume from when one was kept (at epoch 0
    none is, and the run folder goes: issue 44, the line used to recommend a file that did not exist)."""
    try:
        yield
    except (OSError, RuntimeError) as e:  # RuntimeError: torch's zip writer ("unexpected pos ...", "open file failed")
        if isinstance(e, RuntimeError) and not any(w in str(e) for w in _WRITER_FAILURES):
            raise
        for partial in output_dir.glob('tmp*.pth.tar'):
            try:
                partial.unlink(missing_ok=True)
            except OSError:
                pass
        reason = getattr(e, 'strerror', None) or str(e).splitlines()[0].split('strerror: ')[-1]
        try:
            free = f'{shutil.disk_usage(output_dir).free / 2 ** 20:.1f} MiB free there'
        except OSError:
            free = 'free space unknown'
        not_allowed = getattr(e, 'errno', None) in _NOT_ALLOWED or any(
            w in reason for w in ('Permission denied', 'Read-only', 'not permitted'))
        fix = (f'make {output_dir} writable again' if not_allowed else
               'free disk space or pass --output on another disk')
        last = output_dir / 'last.pth.tar'
        then = (f', then --resume {last}' if last.is_file() else
                ', then run the same command again (no checkpoint had been written to resume from)')
        raise ConfigError(f'cannot write the epoch {epoch} {what} to {output_dir} ({reason}; {free}): '
                          f'{fix}{then}') from None


def save_checkpoint(saver: utils.CheckpointSaver, epoch: int, metric: float, output_dir: Path):
    """timm's `save_checkpoint`; a write that fails (full disk, lost permission) leaves no partial file behind."""
    with epoch_writes(epoch, output_dir):
        return saver.save_checkpoint(epoch, metric=metric)


def check_epochs_left(start_epoch: int, num_epochs: int, args) -> None:
    """A run with no epoch left to train (resuming a finished run, or --epochs / --start-epoch past the end) is
    refused in one line: it used to end with exit 0, a NaN top-1 and paths that did not exist."""
    if start_epoch < num_epochs:
        return
    if args.resume and args.start_epoch is None:
        raise ConfigError(f"--resume {args.resume}: that run has trained {start_epoch} of {num_epochs} epochs, "
                          f"nothing is left to train; to train longer pass --epochs above {start_epoch} (its "
                          f"schedule becomes that of the longer run), to evaluate it: python validate.py --checkpoint "
                          f"{args.resume} --data-dir {args.data_dir}")
    raise ConfigError(f'--start-epoch {start_epoch} leaves nothing to train in a run of {num_epochs} epochs: '
                      f'pass --epochs above {start_epoch} or a smaller --start-epoch')


def _is_vis_epoch(args, mixup_fn, epoch: int, num_epochs: int) -> bool:
    """Image grids every --samix-vis-interval epochs and at the last epoch, for mixers that can preview."""
    if not hasattr(mixup_fn, 'preview') or args.samix_vis_interval <= 0:
        return False
    return epoch % args.samix_vis_interval == 0 or epoch == num_epochs - 1


def _write_epoch_logs(epoch, train_metrics, eval_metrics, ema_metrics, optimizer, output_dir, tb_writer,
                      write_header: bool) -> None:
    lrs = [g['lr'] for g in optimizer.param_groups]
    summary_eval = dict(eval_metrics)
    summary_eval.pop('img_per_s', None)
    if ema_metrics is not None:
        summary_eval.update((f'ema_{k}', v) for k, v in ema_metrics.items() if k != 'img_per_s')
    summary = output_dir / 'summary.csv'
    if not write_header and summary.exists():  # the columns of the header, in its order: blank where a metric has no
        # value this epoch (no Mixer update in a whole epoch: --mixup-off-epoch, --samix-mixer-until)
        with open(summary) as f:
            header = f.readline().rstrip('\n').split(',')
        train_metrics = {h[6:]: train_metrics.get(h[6:], float('nan')) for h in header if h.startswith('train_')}
        summary_eval = {h[5:]: summary_eval.get(h[5:], float('nan')) for h in header if h.startswith('eval_')}
    utils.update_summary(epoch, train_metrics, summary_eval, filename=str(summary),
                         lr=sum(lrs) / len(lrs), write_header=write_header)
    for k, v in summary_eval.items():
        tb_writer.add_scalar(f'eval/{k}', v, epoch)
    for k, v in train_metrics.items():
        tb_writer.add_scalar(f'train_epoch/{k}', v, epoch)
