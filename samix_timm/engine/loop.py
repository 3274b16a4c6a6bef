""" One training epoch and one evaluation pass (the inner loops of train.py / validate.py).

The step is a `timm.task.TrainingTask` (`samix_timm.task`): mixing happens inside it, on the device, after the
loader — whether or not timm's prefetcher is on — so a learned mixer (SAMix) sees the same normalised batch a
collate-time mixer would, and the loop does not know which mixer it runs.
"""
import logging
import math
import time
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
from timm.utils import AverageMeter, accuracy, dispatch_clip_grad, reduce_tensor
from torchvision.utils import save_image

from ..errors import TrainingDivergedError
from ..task import Task

_logger = logging.getLogger(__name__)


@dataclass
class StepContext:
    """What the inner loops need besides model, loader and loss.

    Args:
        device: device the batch is moved to.
        amp_autocast: context factory for mixed precision (nullcontext when off).
        loss_scaler: timm NativeScaler for fp16 on CUDA, else None.
        channels_last: convert the input to channels_last before the forward.
        distributed: average logged metrics across ranks.
        world_size: number of ranks.
        grad_accum_steps: batches per optimizer update.
        clip_grad: gradient clipping value (None = off).
        clip_mode: timm clipping mode (norm, value, agc).
        log_interval: updates between progress lines.
        is_primary: this rank logs.
        tb_writer: tensorboard SummaryWriter (primary rank only) or None.
        synchronize_step: wait for the device after every step (timm's --synchronize-step).
        image_dir: write each logged training batch, mixed, as a JPEG there (timm's --save-images).
    """
    device: torch.device
    amp_autocast: Callable = nullcontext
    loss_scaler: Optional[object] = None
    channels_last: bool = False
    distributed: bool = False
    world_size: int = 1
    grad_accum_steps: int = 1
    clip_grad: Optional[float] = None
    clip_mode: str = 'norm'
    log_interval: int = 50
    is_primary: bool = True
    tb_writer: Optional[object] = None
    synchronize_step: bool = False
    image_dir: Optional[Path] = None


def _to_device(x, target: torch.Tensor, ctx: StepContext):
    """The batch on the device: one image tensor, or a tuple of views (train_ssl.py)."""
    if isinstance(x, (tuple, list)):
        x = tuple(v.to(ctx.device, non_blocking=True) for v in x)
    else:
        x = x.to(ctx.device, non_blocking=True)
    return x, target.to(ctx.device, non_blocking=True)


def _rows(result: Dict, x) -> int:
    """Samples the step's loss averages over: the rows the model saw (2N with a clean half), else the batch."""
    if 'output' in result:
        return result['output'].shape[0]
    return (x[0] if isinstance(x, tuple) else x).shape[0]


def _format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f'{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


def train_one_epoch(
        epoch: int,
        task: Task,
        loader,
        optimizer: torch.optim.Optimizer,
        ctx: StepContext,
        lr_scheduler=None,
        num_epochs: Optional[int] = None,
) -> Dict[str, float]:
    """Train for one epoch; returns the mean training loss and the means of the task's other metrics (the
    Mixer's, for SAMix). Clipping and EMA go through the task (`get_clip_parameters`, `update_ema`), so what it
    trains besides the classifier (the clean head) is clipped too."""
    model = task.trainable_module
    model.train()
    accum = ctx.grad_accum_steps
    num_batches = len(loader)
    updates_per_epoch = (num_batches + accum - 1) // accum
    num_updates = epoch * updates_per_epoch
    second_order = getattr(optimizer, 'is_second_order', False)
    losses_m, update_time_m = AverageMeter(), AverageMeter()
    mixer_m: Dict[str, AverageMeter] = {}
    start = update_start = time.time()
    samples_in_update = 0
    optimizer.zero_grad()
    for batch_idx, (x, target) in enumerate(loader):
        last_batch = batch_idx == num_batches - 1
        need_update = last_batch or (batch_idx + 1) % accum == 0
        x, target = _to_device(x, target, ctx)
        sync = nullcontext() if need_update else task.no_sync()
        with sync:
            with ctx.amp_autocast():
                result = task(x, target)  # mix, forward, loss (+ the clean term, §5.6)
            loss, rows = result['loss'], _rows(result, x)
            for k, v in result.items():
                if k not in ('loss', 'output', 'input'):
                    mixer_m.setdefault(k, AverageMeter()).update(v, rows)
            if accum > 1:
                loss = loss / accum
            params = task.get_clip_parameters(exclude_head='agc' in ctx.clip_mode)
            if ctx.loss_scaler is not None:
                ctx.loss_scaler(loss, optimizer, clip_grad=ctx.clip_grad, clip_mode=ctx.clip_mode,
                                parameters=params, create_graph=second_order, need_update=need_update)
            else:
                loss.backward(create_graph=second_order)
                if need_update:
                    if ctx.clip_grad is not None:
                        dispatch_clip_grad(params, value=ctx.clip_grad, mode=ctx.clip_mode)
                    optimizer.step()
        losses_m.update(loss.detach() * accum, rows)
        samples_in_update += rows
        if ctx.synchronize_step and ctx.device.type == 'cuda':
            torch.cuda.synchronize()
        if not need_update:
            continue

        num_updates += 1
        optimizer.zero_grad()
        task.update_ema(step=num_updates)
        now = time.time()
        update_time_m.update(now - update_start)
        update_start = now
        update_idx = batch_idx // accum
        if update_idx % ctx.log_interval == 0 or last_batch:
            loss_now = _global_mean(losses_m.val, ctx)
            check_finite_loss(loss_now, epoch, update_idx, optimizer)
            _log_progress(epoch, update_idx, updates_per_epoch, optimizer, loss_now, update_time_m,
                          samples_in_update, start, num_epochs, mixer_m, num_updates, ctx)
            if ctx.image_dir is not None and ctx.is_primary and 'input' in result:
                save_image(result['input'].float(), ctx.image_dir / f'train-batch-{batch_idx}.jpg', padding=0,
                           normalize=True)
        samples_in_update = 0
        if lr_scheduler is not None:
            lr_scheduler.step_update(num_updates=num_updates)

    if hasattr(optimizer, 'sync_lookahead'):
        optimizer.sync_lookahead()
    metrics = OrderedDict(loss=_global_mean(losses_m.avg, ctx))
    check_finite_loss(metrics['loss'], epoch, updates_per_epoch - 1, optimizer, whole_epoch=True)
    metrics.update((k, _global_mean(m.avg, ctx)) for k, m in mixer_m.items())
    return metrics


def check_finite_loss(loss: float, epoch: int, update_idx: int, optimizer: torch.optim.Optimizer,
                      whole_epoch: bool = False) -> None:
    """Stop the run (before anything of it is saved) when the training loss is not finite."""
    if math.isfinite(loss):
        return
    lr = max(g['lr'] for g in optimizer.param_groups)
    where = f'in epoch {epoch}' if whole_epoch else f'at epoch {epoch}, update {update_idx}'
    raise TrainingDivergedError(
        f'the training loss is {loss} {where} (lr {lr:.3g}): the run stopped and saved nothing of this epoch; '
        f'likely an lr too high or an fp16 overflow: resume from the last checkpoint with a lower --lr, '
        f'--clip-grad, or --amp-dtype bfloat16')


def _global_mean(value, ctx: StepContext) -> float:
    """A per-rank average as a float, averaged across ranks in distributed runs."""
    value = torch.as_tensor(value, dtype=torch.float32, device=ctx.device)
    if ctx.distributed:
        value = reduce_tensor(value, ctx.world_size)
    return float(value)


def _log_progress(epoch, update_idx, updates_per_epoch, optimizer, loss: float, update_time_m,
                  samples, start, num_epochs, mixer_m, num_updates, ctx: StepContext) -> None:
    if not ctx.is_primary:
        return
    lrs = [g['lr'] for g in optimizer.param_groups]
    lr = sum(lrs) / len(lrs)
    rate = samples * ctx.world_size / max(update_time_m.val, 1e-9)
    left = updates_per_epoch - update_idx - 1
    if num_epochs is not None:
        left += (num_epochs - epoch - 1) * updates_per_epoch
    extra = ''.join(f'  {k}: {m.val:.4g}' for k, m in mixer_m.items())
    _logger.info(
        f'Train: {epoch} [{update_idx:>4d}/{updates_per_epoch}]  '
        f'Loss: {loss:#.3g}  Time: {update_time_m.val:.3f}s, {rate:>7.1f} img/s  '
        f'LR: {lr:.3e}  ETA: {_format_eta(left * update_time_m.avg)}{extra}')
    if ctx.tb_writer is not None:
        ctx.tb_writer.add_scalar('train/loss', loss, num_updates)
        ctx.tb_writer.add_scalar('train/lr', lr, num_updates)
        ctx.tb_writer.add_scalar('train/img_per_s', rate, num_updates)
        for k, m in mixer_m.items():
            ctx.tb_writer.add_scalar(f'train/{k}', m.val, num_updates)


@torch.no_grad()
def evaluate(model: nn.Module, loader, ctx: StepContext, log_suffix: str = '') -> Dict[str, float]:
    """Top-1 / top-5 accuracy (%), cross-entropy loss and images/s of `model` on `loader`."""
    model.eval()
    loss_fn = nn.CrossEntropyLoss()
    loss_m, top1_m, top5_m = AverageMeter(), AverageMeter(), AverageMeter()
    num_classes = None
    start, seen = time.time(), 0
    for x, target in loader:
        x, target = _to_device(x, target, ctx)
        if ctx.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with ctx.amp_autocast():
            output = model(x)
        if isinstance(output, (tuple, list)):
            output = output[0]
        output = output.float()
        num_classes = output.shape[-1]
        loss = loss_fn(output, target)
        acc1, acc5 = accuracy(output, target, topk=(1, min(5, num_classes)))
        n = x.size(0)
        loss_m.update(loss.detach(), n)
        top1_m.update(acc1.detach(), n)
        top5_m.update(acc5.detach(), n)
        seen += n
    elapsed = time.time() - start
    metrics = OrderedDict(
        loss=_global_mean(loss_m.avg, ctx),
        top1=_global_mean(top1_m.avg, ctx),
        top5=_global_mean(top5_m.avg, ctx),
        img_per_s=seen * ctx.world_size / max(elapsed, 1e-9),
    )
    if ctx.is_primary:
        _logger.info(f'Eval{log_suffix}: loss {metrics["loss"]:.4f}  top1 {metrics["top1"]:.2f}  '
                     f'top5 {metrics["top5"]:.2f}  ({metrics["img_per_s"]:.1f} img/s)')
    return metrics
