""" What checkpoints hold besides timm's entries, through timm's `CheckpointSaver(task=...)` hook.

The classifier's `state_dict` / `state_dict_ema` stay exactly where timm puts them (timm's own
validate.py reads our checkpoints); a learned mixer adds its state under `samix`.
"""
import argparse
import logging
from typing import Any, Dict, Optional

import torch
import torch.nn as nn
from timm.utils import get_state_dict, unwrap_model

_logger = logging.getLogger(__name__)

MIXER_STATE_KEY = 'samix'


class CheckpointState:
    """The `task` object timm's CheckpointSaver asks for the entries of a checkpoint.

    Args:
        model: the classifier (possibly DDP-wrapped).
        model_ema: timm EMA of the classifier, or None.
        mixup_fn: the batch mixer; saved when it has a `state_dict` (SAMix), ignored otherwise.
    """

    def __init__(self, model: nn.Module, model_ema: Optional[nn.Module] = None, mixup_fn: Optional[Any] = None):
        self.model, self.model_ema, self.mixup_fn = model, model_ema, mixup_fn

    def get_checkpoint_state(self, ema: bool = False, unwrap_fn=unwrap_model) -> Dict[str, Any]:
        if ema:
            return {'state_dict_ema': get_state_dict(self.model_ema, unwrap_fn)} if self.model_ema else {}
        state = {'state_dict': get_state_dict(self.model, unwrap_fn)}
        if hasattr(self.mixup_fn, 'state_dict'):
            state[MIXER_STATE_KEY] = self.mixup_fn.state_dict()
        return state


def restore_mixer_state(mixup_fn: Any, checkpoint_path: str) -> bool:
    """Load a learned mixer's state from a checkpoint; returns False (and warns) when it has none."""
    if not hasattr(mixup_fn, 'load_state_dict'):
        return False
    with torch.serialization.safe_globals([argparse.Namespace]):
        checkpoint = torch.load(checkpoint_path, map_location='cpu', weights_only=True)
    if MIXER_STATE_KEY not in checkpoint:
        _logger.warning(f'{checkpoint_path} holds no SAMix state: the Mixer and momentum encoder start fresh')
        return False
    mixup_fn.load_state_dict(checkpoint[MIXER_STATE_KEY])
    _logger.info(f'Restored SAMix state (step {mixup_fn.step}) from {checkpoint_path}')
    return True
