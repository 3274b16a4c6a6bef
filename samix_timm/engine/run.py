""" The run train.py and train_ssl.py both go through once their task, loaders, optimizer and schedule are built
(`run_epochs`): the epochs-left check, the run folder (args.yaml, timm's CheckpointSaver, tensorboard), the epoch loop
(seeding, `train_one_epoch`, summary.csv, checkpoints, the lr schedule) and the one-line error of a write that fails.
What a classifier's run and MoCo's differ in (validation, EMA, the Mixer health and pictures; the kNN monitor, the
pseudo-label refresh; the metric that picks model_best; the command that evaluates a finished run) are the named
methods of a `RunHooks` (`engine.train.ClassifierRun`, `ssl.engine.MoCoRun`).

Differences from timm's train.py loop, each deliberate:
- every epoch reseeds all RNGs from (seed, epoch, rank) and each sample is augmented under its own seed
  (engine/seeding.py), so `--resume` reproduces the uninterrupted run, with persistent workers too;
- the output folder of an earlier run is never reused (a suffix is added), and a run that stops before its first
  checkpoint leaves no folder (`setup.run_folder`);
- tensorboard scalars beside timm's `summary.csv` and `args.yaml`.
"""
import errno
import logging
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import torch
from timm import utils

from ..errors import ConfigError
from ..health import format_health, is_grey
from ..task import Task
from .loop import StepContext, train_one_epoch
from .seeding import set_loader_epoch
from .setup import create_output_dir, run_folder

_logger = logging.getLogger(__name__)

HEALTH_IMAGES = 100  # images the per-epoch Mixer health is measured on


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of one epoch (ranks add their rank on top, see timm.utils.random_seed)."""
    return seed + 1000 * (epoch + 1)


class RunHooks:
    """What one kind of run adds to the epoch loop of `run_epochs`; a method left as is does nothing.

    Attributes:
        decreasing: a lower `checkpoint_metric` is better (timm's CheckpointSaver).
        tb_tags: tensorboard prefixes of the epoch's train and eval columns.
    """
    decreasing: bool = False
    tb_tags = ('train_epoch', 'eval')

    def evaluate_command(self, checkpoint: str) -> str:
        """The command that evaluates a finished run's checkpoint (the epochs-left check prints it)."""
        raise NotImplementedError

    def describe(self, num_epochs: int, updates_per_epoch: int) -> str:
        """The run in one log line (the loop adds where its output goes)."""
        return f'Scheduled epochs: {num_epochs}, {updates_per_epoch} updates per epoch'

    def prepare(self) -> None:
        """Once the run is sure to train, before its folder is made."""

    def on_epoch_start(self, epoch: int) -> None:
        """After the epoch's reseeding, before its training."""

    def evaluate_epoch(self, epoch: int, train_metrics: Dict[str, float], ctx: StepContext,
                       output_dir: Optional[Path]) -> Dict[str, Any]:
        """After the epoch's training, on every rank: the eval columns of summary.csv (none: {}); what it measures
        of the training (the Mixer health) it adds to `train_metrics`."""
        return {}

    def checkpoint_metric(self) -> Optional[float]:
        """The epoch's metric that ranks checkpoints (None: none is ranked)."""
        return None

    def scheduler_metric(self) -> Optional[float]:
        """The epoch's metric the lr schedule steps with (timm's plateau schedule)."""
        return None


@dataclass
class RunResult:
    """Where a run ended: its folder and last checkpoint (None off the primary rank), its last epoch and that
    epoch's training metrics, the best checkpoint metric and its epoch."""
    output_dir: Optional[Path]
    last_epoch: int
    train_metrics: Dict[str, float]
    best_metric: Optional[float]
    best_epoch: Optional[int]
    checkpoint: Optional[Path]


def run_epochs(args, args_text: str, task: Task, loader, optimizer: torch.optim.Optimizer, lr_scheduler,
               num_epochs: int, start_epoch: int, ctx: StepContext, hooks: RunHooks, data_config: Dict[str, Any],
               sched_on_updates: bool = False, save_images: bool = False) -> RunResult:
    """Train epochs `start_epoch` .. `num_epochs - 1` of `task` and write the run folder (primary rank): args.yaml,
    summary.csv, tensorboard scalars and timm's checkpoints, ranked by `hooks.checkpoint_metric`. `ctx` gets the
    tensorboard writer here (and the folder as `image_dir` with `save_images`); `data_config`'s input size names the
    folder when `--experiment` does not; `sched_on_updates`: the schedule steps per update, so a resumed run
    fast-forwards it by updates."""
    check_epochs_left(start_epoch, num_epochs, args, hooks)  # before anything is written
    hooks.prepare()
    primary = ctx.is_primary
    updates_per_epoch = (len(loader) + ctx.grad_accum_steps - 1) // ctx.grad_accum_steps
    output_dir = saver = tb_writer = None
    if primary:
        output_dir = create_output_dir(args, data_config)
        (output_dir / 'args.yaml').write_text(args_text)
        saver = utils.CheckpointSaver(
            model=task.trainable_module, optimizer=optimizer, args=args, amp_scaler=ctx.loss_scaler,
            checkpoint_dir=str(output_dir), recovery_dir=str(output_dir), decreasing=hooks.decreasing,
            max_history=args.checkpoint_hist, task=task)
        from torch.utils.tensorboard import SummaryWriter
        tb_writer = SummaryWriter(log_dir=str(output_dir))
    ctx = replace(ctx, tb_writer=tb_writer, image_dir=output_dir if save_images else None)

    with run_folder(output_dir, tb_writer):  # a run that fails before its first checkpoint leaves no folder
        if lr_scheduler is not None and start_epoch > 0:
            if sched_on_updates:
                lr_scheduler.step_update(start_epoch * updates_per_epoch)
            else:
                lr_scheduler.step(start_epoch)
        if primary:
            _logger.info(f'{hooks.describe(num_epochs, updates_per_epoch)}, output in {output_dir}')
        train_metrics, best_metric, best_epoch = {}, None, None
        epoch = start_epoch - 1
        for epoch in range(start_epoch, num_epochs):
            utils.random_seed(epoch_seed(args.seed, epoch), args.rank)
            set_loader_epoch(loader, epoch)
            hooks.on_epoch_start(epoch)
            train_metrics = train_one_epoch(
                epoch, task, loader, optimizer, ctx, lr_scheduler=lr_scheduler, num_epochs=num_epochs)
            eval_metrics = hooks.evaluate_epoch(epoch, train_metrics, ctx, output_dir)
            if primary:
                with epoch_writes(epoch, output_dir, 'logs (summary.csv)'):
                    write_epoch_logs(epoch, train_metrics, eval_metrics, optimizer, output_dir, tb_writer,
                                     write_header=epoch == start_epoch, tb_tags=hooks.tb_tags)
                best_metric, best_epoch = save_checkpoint(saver, epoch, hooks.checkpoint_metric(), output_dir)
            if lr_scheduler is not None:
                lr_scheduler.step(epoch + 1, hooks.scheduler_metric())
    return RunResult(output_dir=output_dir, last_epoch=epoch, train_metrics=train_metrics, best_metric=best_metric,
                     best_epoch=best_epoch, checkpoint=output_dir / 'last.pth.tar' if output_dir else None)


def check_epochs_left(start_epoch: int, num_epochs: int, args, hooks: RunHooks) -> None:
    """A run with no epoch left to train (resuming a finished run, or --epochs / --start-epoch past the end) is
    refused in one line, with the command that evaluates the finished run: it used to end with exit 0, a NaN top-1
    and paths that did not exist (train.py), or suggest `ssl.probe --checkpoint None` (train_ssl.py)."""
    if start_epoch < num_epochs:
        return
    if args.resume and getattr(args, 'start_epoch', None) is None:  # (train_ssl.py has no --start-epoch)
        raise ConfigError(f"--resume {args.resume}: that run has trained {start_epoch} of {num_epochs} epochs, "
                          f"nothing is left to train; to train longer pass --epochs above {start_epoch} (its "
                          f"schedule becomes that of the longer run), to evaluate it: "
                          f"{hooks.evaluate_command(args.resume)}")
    raise ConfigError(f'--start-epoch {start_epoch} leaves nothing to train in a run of {num_epochs} epochs: '
                      f'pass --epochs above {start_epoch} or a smaller --start-epoch')


def log_mixer_health(epoch: int, health: Dict[str, float], images: str) -> None:
    """The epoch's Mixer health in one line, a warning when the masks are grey (§2.6: a grey Mixer is never
    silent); `images` says what it was measured on."""
    (_logger.warning if is_grey(health) else _logger.info)(
        f'Mixer health (epoch {epoch}, {images}): {format_health(health)}')


def write_epoch_logs(epoch: int, train_metrics: Dict[str, float], eval_metrics: Dict[str, Any],
                     optimizer: torch.optim.Optimizer, output_dir: Path, tb_writer, write_header: bool,
                     tb_tags=RunHooks.tb_tags) -> None:
    """The epoch's row of summary.csv (timm's `update_summary`, with the mean lr of the parameter groups) and its
    tensorboard scalars (an empty value, such as a kNN column between monitors, is not a scalar)."""
    lrs = [g['lr'] for g in optimizer.param_groups]
    summary = output_dir / 'summary.csv'
    if not write_header and summary.exists():  # the columns of the header, in its order: blank where a metric has no
        # value this epoch (no Mixer update in a whole epoch: --mixup-off-epoch, --samix-mixer-until)
        with open(summary) as f:
            header = f.readline().rstrip('\n').split(',')
        train_metrics = {h[6:]: train_metrics.get(h[6:], float('nan')) for h in header if h.startswith('train_')}
        eval_metrics = {h[5:]: eval_metrics.get(h[5:], float('nan')) for h in header if h.startswith('eval_')}
    utils.update_summary(epoch, train_metrics, eval_metrics, filename=str(summary),
                         lr=sum(lrs) / len(lrs), write_header=write_header)
    for tag, metrics in zip(tb_tags, (train_metrics, eval_metrics)):
        for k, v in metrics.items():
            if v != '':
                tb_writer.add_scalar(f'{tag}/{k}', v, epoch)


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


def save_checkpoint(saver: utils.CheckpointSaver, epoch: int, metric: Optional[float], output_dir: Path):
    """timm's `save_checkpoint`; a write that fails (full disk, lost permission) leaves no partial file behind."""
    with epoch_writes(epoch, output_dir):
        return saver.save_checkpoint(epoch, metric=metric)
