""" Reading checkpoints safely and resuming from them. What a checkpoint holds besides timm's entries is the
training task's (`samix_timm.task`, through timm's `CheckpointSaver(task=...)` hook): the classifier's
`state_dict` / `state_dict_ema` exactly where timm puts them (timm's own validate.py reads our checkpoints), a learned
mixer's state under `samix`.
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
from ..task import CLASSES_KEY

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
    return checkpoint


def model_state(checkpoint: Dict, path: Union[str, Path], flag: str, use_ema: bool = False) -> Dict[str, torch.Tensor]:
    """The classifier weights of a train.py checkpoint or of a plain timm state_dict file."""
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
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [k for k in own if k in state and state[k].shape != own[k].shape]
    if not (missing or unexpected or reshaped):
        model.load_state_dict(state)
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


# how a resume names the state behind each checkpoint entry a task loads, when it does not fit
_STATE_NAMES = {'samix': 'SAMix state', 'online': 'an online encoder', 'moco': 'MoCo state'}


def resume_task(task: Any, path: str, optimizer: Optional[torch.optim.Optimizer], loss_scaler: Optional[Any],
                args: argparse.Namespace, script: str = 'train.py') -> Optional[int]:
    """The one resume of train.py and train_ssl.py: the task's own state (`Task.load_checkpoint_state`: the
    classifier, its EMA and the Mixer, or MoCo's encoders, queue and Mixer), then timm's optimizer and scaler
    entries. Returns the next epoch (None for a bare state_dict, which train.py takes). Every mismatch is one line."""
    checkpoint = read_checkpoint(path, '--resume', f'checkpoint written by {script}')
    missing = [k for k in task.resume_keys if k not in checkpoint]
    if missing:
        raise ConfigError(f"--resume '{path}' is not a {script} checkpoint (no {', '.join(missing)}): pass the "
                          f"last.pth.tar of a {script} run")
    saved = checkpoint.get('args')

    def load(obj: Any, key: str) -> None:
        if key in ('state_dict', 'state_dict_ema'):  # the classifier: another model or class count in one line
            load_model_state(obj, model_state(checkpoint, path, '--resume', use_ema=key == 'state_dict_ema'), path,
                             '--resume', saved)
            return
        try:
            obj.load_state_dict(checkpoint[key])
        except (RuntimeError, KeyError, ValueError) as e:
            first = str(e).strip().splitlines()[0][:160]
            raise ConfigError(f"--resume '{path}' holds {_STATE_NAMES.get(key, key)} of another Mixer or model "
                              f"({first}): pass the --model, --samix-* or --ssl-mix settings and sizes it was "
                              f"trained with") from None

    task.load_checkpoint_state(checkpoint, load)
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
