""" The Mixer core every SAMix shares (method §0, §3): the λ draw, the mask of a mixing (λ margin → Mixer → λ
adjusting), the mixed image (with a partner batch for cross-view mixing, §6), its soft target and the preview.
Online SAMix (`samix.SAMix`, `task.SAMixTask`), the frozen SAMix^P Mixer (`pretrained.SAMixPretrained`) and the
self-supervised branch (`ssl.mixer_branch`) all mix through these. """
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from timm.data.mixup import one_hot

__all__ = ['draw_lam', 'draw_mixing', 'mix_images', 'soft_target', 'in_lam_margin', 'margin_mask', 'adjust_lam',
           'mixer_mask', 'preview_index', 'preview_dict']


def draw_lam(alpha: float) -> float:
    """λ ~ Beta(α, α) from numpy's global RNG, as timm's Mixup draws it (§0)."""
    return float(np.random.beta(alpha, alpha))


def draw_mixing(alpha: float, prob: float = 1.0, lam_margin: float = 0.0, lam_adjust_prob: float = 0.0,
                num_lams: int = 1) -> Optional[Tuple[List[float], bool]]:
    """One batch's draw from numpy's global RNG, in this order: mix at all (probability `prob`, as timm's Mixup),
    `num_lams` λ ~ Beta(α, α) (§5.1: λ_q, λ_k), then λ adjusting of the first λ (probability `lam_adjust_prob`,
    never within the margin, §3). Returns (λs, adjust), or None for an unmixed batch."""
    if not np.random.rand() < prob:
        return None
    lams = [draw_lam(alpha) for _ in range(num_lams)]
    adjust = lam_adjust_prob > 0 and not in_lam_margin(lams[0], lam_margin) and np.random.rand() < lam_adjust_prob
    return lams, bool(adjust)


def mix_images(x: torch.Tensor, s: torch.Tensor, index: torch.Tensor,
               partner: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x_mix = (1 − s) ⊙ x + s ⊙ partner[π] (§0), s the per-pixel weight of the partner. The partners come from
    `x` itself, or from `partner` (view 2 of the gathered batch in cross-view mixing, §6)."""
    s = s.to(x.dtype)
    partner = x if partner is None else partner
    return x + s * (partner[index] - x)  # same as (1 - s) * x + s * partner[index], one temporary less


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
    """The mask of a batch whose λ is within the margin, and Mixup's as a mask: 1 − λ everywhere, Nx1xHxW."""
    return torch.full((n, 1, *size), 1. - lam, device=device)


def adjust_lam(s: torch.Tensor, lam: float) -> torch.Tensor:
    """Rescale each sample's mask so that mean(1 − s) = λ exactly (§3 λ adjusting)."""
    keep = (1. - s).mean(dim=(1, 2, 3), keepdim=True)  # Nx1x1x1, mean weight of the sample itself
    shrink_keep = 1. - (1. - s) * (lam / keep.clamp(min=1e-6))  # mean(1 − s) > λ: scale (1 − s) down
    shrink_partner = s * ((1. - lam) / (1. - keep).clamp(min=1e-6))  # mean(1 − s) ≤ λ: scale s down
    return torch.where(keep > lam, shrink_keep, shrink_partner)


def mixer_mask(mixer: Callable, z: torch.Tensor, lam: float, index: torch.Tensor, size: Sequence[int],
               lam_margin: float = 0.0, adjust: bool = False, z_partner: Optional[torch.Tensor] = None
               ) -> torch.Tensor:
    """The mask s (Nx1xHxW) of a mixing the Mixer makes for a network to train on (§3): the constant 1 − λ within
    the λ margin, else M_φ(z, λ, π) (partners from `z_partner` in cross-view mixing, §6), λ-adjusted when `adjust`.
    `mixer` is the Mixer or what runs it (its compiled version, a call that hands it λ as a tensor)."""
    if in_lam_margin(lam, lam_margin):
        return margin_mask(z.shape[0], size, lam, z.device)
    s = mixer(z, lam, index, size, z_partner=z_partner)
    return adjust_lam(s, lam) if adjust else s


def preview_index(n: int, device=None) -> torch.Tensor:
    """The partners of a preview: each image with the one before it (π(n) = n − 1), so a grid shows both."""
    return torch.roll(torch.arange(n, device=device), 1)


def preview_dict(x: torch.Tensor, s: torch.Tensor, index: torch.Tensor,
                 raw: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """{x_i, x_j, mask, x_mix} of a preview (and 'mask_raw', the Mixer's own mask before λ adjusting, §3)."""
    out = dict(x_i=x, x_j=x[index], mask=s, x_mix=mix_images(x, s, index))
    if raw is not None:
        out['mask_raw'] = raw
    return out
