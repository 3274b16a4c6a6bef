""" Reading checkpoints safely and resuming from them. What a checkpoint holds besides timm's entries is the
training task's (`samix_timm.task`, through timm's `CheckpointSaver(task=...)` hook): the classifier's
`state_dict` / `state_dict_ema` exactly where timm puts them (timm's own validate.py reads our checkpoints), a learned
mixer's state under `task_state` (timm's key), so `timm.task.resume_task_checkpoint` resumes our runs too.
"""
import argparse
import logging
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
import torch.nn as nn
from timm.models import clean_state_dict
from timm.utils import get_state_dict, unwrap_model

from ..errors import ConfigError
from ..files import read_torch_file
from ..task import CLASSES_KEY, CLEAN_HEAD_KEY, LEGACY_TASK_KEYS, MOCO_STATE_KEY, TASK_STATE_KEY, MixTask, task_state_of

_logger = logging.getLogger(__name__)



def read_checkpoint(path: Union[str, Path], flag: str, kind: str = 'checkpoint written by train.py') -> Dict:
    """Load a checkpoint without running code from it; one line naming the file when it is not one."""
    path = Path(path)
    example = 'output/ssl/<run>/last.pth.tar' if 'train_ssl' in kind else 'output/train/<run>/last.pth.tar'
    fix = f'pass a {kind} to {flag} (e.g. {example})'
    if not path.is_file():
        raise ConfigError(f"{flag} '{path}' is not a file: {fix}")
    checkpoint = read_torch_file(path, kind, fix)
    if not isinstance(checkpoint, dict):
        raise ConfigError(f"{flag} '{path}' holds a {type(checkpoint).__name__}, not a {kind}")
    if {'format_version', 'extractor', 'mixer'} <= set(checkpoint):  # an artifact of python -m samix_timm.export
        raise ConfigError(f"{flag} '{path}' is a Mixer artifact (python -m samix_timm.export), not a {kind}: a Mixer "
                          f"is used by train.py --mixup samix --samix-pretrained {path}; {fix}")
    return checkpoint


def model_state(checkpoint: Dict, path: Union[str, Path], flag: str, use_ema: bool = False) -> Dict[str, torch.Tensor]:
    """The classifier weights of a train.py checkpoint or of a plain timm state_dict file."""
    if MOCO_STATE_KEY in task_state_of(checkpoint):  # its state_dict is MoCo's online module, not a classifier
        raise ConfigError(f"{flag} '{path}' is a train_ssl.py checkpoint: export its backbone first (python -m "
                          f"samix_timm.ssl.export --checkpoint {path} --out backbone.pth --num-classes N) and pass "
                          f"that to --initial-checkpoint, or probe it with python -m samix_timm.ssl.probe")
    key = 'state_dict_ema' if use_ema else 'state_dict'
    if key in checkpoint:
        return clean_state_dict(checkpoint[key])
    if use_ema:
        raise ConfigError(f"{flag} '{path}' holds no EMA weights: drop --use-ema, or train with --model-ema")
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return clean_state_dict(checkpoint)  # a bare state_dict (timm's own files)
    raise ConfigError(f"{flag} '{path}' holds no model weights (keys: {', '.join(list(checkpoint)[:6])}): "
                      f"pass a checkpoint written by train.py")


def load_model_state(model: nn.Module, state: Dict[str, torch.Tensor], path: Union[str, Path], flag: str,
                     saved_args: Optional[argparse.Namespace] = None) -> None:
    """`model.load_state_dict(state)` (strict); another model or class count gets one line with the fix."""
    check_model_state(model, state, path, flag, saved_args)
    model.load_state_dict(state)


def check_model_state(model: nn.Module, state: Dict[str, torch.Tensor], path: Union[str, Path], flag: str,
                      saved_args: Optional[argparse.Namespace] = None) -> None:
    """One line with the fix when `state` does not fit `model` strictly (another model or class count)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [k for k in own if k in state and state[k].shape != own[k].shape]
    if not (missing or unexpected or reshaped):
        return
    name = type(model).__name__
    if saved_args is not None and getattr(saved_args, 'model', None):
        hint = (f'it was trained as --model {saved_args.model} --num-classes {saved_args.num_classes}: '
                f'pass the same')
    else:
        hint = 'pass the --model and --num-classes it was trained with'
    detail = ', '.join(f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}' for k in reshaped[:2])
    raise ConfigError(f"{flag} '{path}' holds weights of another model than this {name} ({len(missing)} missing, "
                      f"{len(unexpected)} unexpected, {len(reshaped)} of another shape{': ' + detail if detail else ''}"
                      f"): {hint}")


def upgrade_checkpoint(checkpoint: Dict[str, Any]) -> Dict[str, Any]:
    """A checkpoint in today's layout: one written before the task state (2026-12-07) kept SAMix's, the clean
    head's and MoCo's state at the top level and MoCo's online module under `online`; they move under `task_state`
    / `state_dict`, where timm's `resume_task_checkpoint` and ours read them."""
    if TASK_STATE_KEY in checkpoint or not ({*LEGACY_TASK_KEYS, 'online'} & set(checkpoint)):
        return checkpoint
    upgraded = {k: v for k, v in checkpoint.items() if k not in LEGACY_TASK_KEYS and k != 'online'}
    upgraded[TASK_STATE_KEY] = task_state_of(checkpoint)
    if 'online' in checkpoint:
        upgraded['state_dict'] = checkpoint['online']
    return upgraded


def check_clean_head(task: Any, task_state: Dict[str, Any], path: Union[str, Path], with_optimizer: bool) -> None:
    """A resume whose `--samix-clean-head` differs from the checkpoint's, while the optimizer state is loaded, is
    refused naming the flag (the optimizer's parameter groups differ by the clean head's; issue 44: the error used to
    name only the groups, after a warning that the run would go on)."""
    if not with_optimizer or not isinstance(task, MixTask):
        return
    saved_own, own = CLEAN_HEAD_KEY in (task_state or {}), getattr(task, 'clean_classifier', None) is not None
    if saved_own != own:
        was, now = ('own', 'shared') if saved_own else ('shared', 'own')
        raise ConfigError(f"--resume '{path}' was trained with --samix-clean-head {was}, this run uses {now}: pass "
                          f"--samix-clean-head {was}, or --no-resume-opt to start the optimizer fresh"
                          + ('' if saved_own else ' (the clean head then starts as a copy of the classifier head)'))


def resume_task(task: Any, path: str, optimizer: Optional[torch.optim.Optimizer], loss_scaler: Optional[Any],
                args: argparse.Namespace, script: str = 'train.py') -> Optional[int]:
    """The one resume of train.py and train_ssl.py, through timm's task contract: `task.load_checkpoint_state` with
    the trainable module's `state_dict` and the `task_state` (the clean head and the Mixer, or MoCo's encoders,
    queue and Mixer), the EMA's the same way, then timm's optimizer and scaler entries; what
    `timm.task.resume_task_checkpoint` does, with every mismatch in one line. Checkpoints written before the task
    state resume too (`upgrade_checkpoint`). Returns the next epoch (None for a bare state_dict, which train.py
    takes)."""
    checkpoint = upgrade_checkpoint(read_checkpoint(path, '--resume', f'checkpoint written by {script}'))
    task_state = task_state_of(checkpoint)
    missing = [k for k in task.resume_keys if k not in checkpoint] + [k for k in task.resume_task_keys
                                                                       if k not in task_state]
    if missing:
        raise ConfigError(f"--resume '{path}' is not a {script} checkpoint (no {', '.join(missing)}): pass the "
                          f"last.pth.tar of a {script} run")
    saved = checkpoint.get('args')
    check_clean_head(task, task_state, path, optimizer is not None and 'optimizer' in checkpoint)
    if isinstance(task, MixTask):  # the classifier: another model or class count in one line
        state = model_state(checkpoint, path, '--resume')
        check_model_state(unwrap_model(task.trainable_module), state, path, '--resume', saved)
    else:
        state = checkpoint['state_dict']
    try:
        task.load_checkpoint_state(state, task_state)
        if task.has_ema():
            if 'state_dict_ema' in checkpoint:
                task.load_checkpoint_state(model_state(checkpoint, path, '--resume', use_ema=True),
                                           checkpoint.get('task_state_ema'), ema=True)
            else:
                task.restart_ema()
    except (RuntimeError, KeyError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:160]
        raise ConfigError(f"--resume '{path}' holds the state of another Mixer or model ({first}): pass the "
                          f"--model, --samix-* or --ssl-mix settings and sizes it was trained with") from None
    if optimizer is not None and 'optimizer' in checkpoint:
        saved_opt = getattr(saved, 'opt', args.opt)
        if saved_opt.lower() != args.opt.lower():
            raise ConfigError(f"--resume '{path}' was trained with --opt {saved_opt}, this run uses --opt {args.opt}: "
                              f"pass --opt {saved_opt}, or --no-resume-opt to start the optimizer fresh")
        try:
            optimizer.load_state_dict(checkpoint['optimizer'])
        except (ValueError, KeyError, RuntimeError) as e:
            raise ConfigError(f"--resume '{path}' holds optimizer state of other parameter groups ({e}): pass the "
                              f"settings it was trained with, or --no-resume-opt to start the optimizer fresh") from None
    if loss_scaler is not None and loss_scaler.state_dict_key in checkpoint:
        loss_scaler.load_state_dict(checkpoint[loss_scaler.state_dict_key])
    if 'epoch' not in checkpoint:
        return None
    epoch = checkpoint['epoch']
    return epoch + 1 if checkpoint.get('version', 1) > 1 else epoch
