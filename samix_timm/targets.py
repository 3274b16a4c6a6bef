""" Soft targets of a mixed batch (method §0), with timm's label smoothing. """
from typing import Optional

import torch
from timm.data.mixup import one_hot


def soft_target(target: torch.Tensor, index: Optional[torch.Tensor], lam: float, num_classes: int,
                smoothing: float = 0.0) -> torch.Tensor:
    """λ·onehot(y) + (1 − λ)·onehot(y[π]) smoothed as `timm.data.mixup.mixup_target`; index None = no partner."""
    off = smoothing / num_classes
    on = 1. - smoothing + off
    y1 = one_hot(target, num_classes, on_value=on, off_value=off)
    if index is None:
        return y1
    y2 = one_hot(target[index], num_classes, on_value=on, off_value=off)
    return y1 * lam + y2 * (1. - lam)
