""" The mixing primitives every Mixer shares (method §0, §3): the mixed image, its soft target, the λ margin
and λ adjusting. Online SAMix, the frozen SAMix^P Mixer and the self-supervised branch all mix through these. """
from typing import Optional, Sequence

import torch
from timm.data.mixup import one_hot


def mix_images(x: torch.Tensor, s: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x_mix = (1 − s) ⊙ x + s ⊙ x[π] (§0); s is the per-pixel weight of the partner."""
    s = s.to(x.dtype)
    return x + s * (x[index] - x)  # same as (1 - s) * x + s * x[index], one temporary less


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


def in_lam_margin(lam: float, margin: float) -> bool:
    """λ within `margin` of 0 or 1: the Mixer is not asked, the mask is plain mixup's (§3 lam_margin)."""
    return lam <= margin or lam >= 1. - margin


def margin_mask(n: int, size: Sequence[int], lam: float, device) -> torch.Tensor:
    """The mask of a batch whose λ is within the margin: 1 − λ everywhere (plain mixup), Nx1xHxW."""
    return torch.full((n, 1, *size), 1. - lam, device=device)


def adjust_lam(s: torch.Tensor, lam: float) -> torch.Tensor:
    """Rescale each sample's mask so that mean(1 − s) = λ exactly (§3 λ adjusting)."""
    keep = (1. - s).mean(dim=(1, 2, 3), keepdim=True)  # Nx1x1x1, mean weight of the sample itself
    shrink_keep = 1. - (1. - s) * (lam / keep.clamp(min=1e-6))  # mean(1 − s) > λ: scale (1 − s) down
    shrink_partner = s * ((1. - lam) / (1. - keep).clamp(min=1e-6))  # mean(1 − s) ≤ λ: scale s down
    return torch.where(keep > lam, shrink_keep, shrink_partner)
