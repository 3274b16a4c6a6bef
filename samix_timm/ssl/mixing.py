""" Cross-view mixing of self-supervised SAMix (spec §6) and the registry of mixing modes.

View 1 of sample a is mixed with view 2 of its partner b = π(a): ``x_mix = (1 − s) ⊙ x1 +
s ⊙ x2_all[π]``. The λ part is matched to the key of a's other view (view 2 of a), the 1 − λ part
to the key of b's other view (view 1 of b). π indexes the *gathered* batch under DDP and is a
derangement (no sample is its own partner); one π per branch serves the images, the Mixer
features and the keys.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from timm.data.mixup import rand_bbox

from ..errors import ConfigError
from ..mixing import margin_mask
from .distributed import broadcast_, is_distributed

__all__ = [
    'derangement', 'global_derangement', 'mixup_mask', 'cutmix_mask',
    'SSLMode', 'get_ssl_mode', 'list_ssl_modes',
]

SizeType = Sequence[int]


def derangement(n: int, device=None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A random permutation with no fixed point (one cycle through a random order); needs n >= 2."""
    if n < 2:
        raise ValueError(f'a derangement needs at least 2 samples, got {n}')
    order = torch.randperm(n, generator=generator).to(device)
    index = torch.empty_like(order)
    index[order] = order.roll(-1)  # order[i] -> order[i + 1]
    return index


def global_derangement(n_local: int, device=None) -> torch.Tensor:
    """This rank's slice of one derangement of the gathered batch (rank 0 draws it): indices into it."""
    world, rank = (torch.distributed.get_world_size(), torch.distributed.get_rank()) if is_distributed() else (1, 0)
    index = broadcast_(derangement(n_local * world).to(device))
    return index[rank * n_local:(rank + 1) * n_local]


def mixup_mask(lam: float, n: int, size: SizeType, device=None) -> Tuple[torch.Tensor, float]:
    """Mixup as a mask (`mixing.margin_mask`: the constant partner weight 1 − λ). Returns (s Nx1xHxW, λ)."""
    return margin_mask(n, size, lam, device), lam


def cutmix_mask(lam: float, n: int, size: SizeType, device=None) -> Tuple[torch.Tensor, float]:
    """CutMix as a mask: a box of area ≈ 1 − λ from the partner; λ corrected to the clipped box."""
    h, w = size
    yl, yh, xl, xh = rand_bbox((h, w), lam)
    s = torch.zeros((n, 1, h, w), device=device)
    s[..., yl:yh, xl:xh] = 1.
    return s, 1. - float((yh - yl) * (xh - xl)) / (h * w)


@dataclass(frozen=True)
class SSLMode:
    """One ``--ssl-mix`` mode.

    Args:
        name: The mode's name.
        mask: Hand-made mask of the encoder branch (``mixup_mask``/``cutmix_mask``), None for Mixer
            masks or no mixing.
        mixer_loss: Loss that trains the Mixer: 'instance' (l_eta^I, SAMix-I) or 'cluster'
            (class-level l_eta on k-means pseudo-labels, SAMix-C); None without a Mixer.
    """
    name: str
    mask: Optional[Callable] = None
    mixer_loss: Optional[str] = None

    @property
    def mixes(self) -> bool:
        return self.mask is not None or self.mixer_loss is not None

    @property
    def uses_clusters(self) -> bool:
        return self.mixer_loss == 'cluster'


_MODES: Dict[str, SSLMode] = {m.name: m for m in (
    SSLMode('none'),
    SSLMode('mixup', mask=mixup_mask),
    SSLMode('cutmix', mask=cutmix_mask),
    SSLMode('samix_i', mixer_loss='instance'),
    SSLMode('samix_c', mixer_loss='cluster'),
)}


def list_ssl_modes() -> List[str]:
    return list(_MODES)


def get_ssl_mode(name: str) -> SSLMode:
    """The mode registered as ``name``; a ConfigError lists the valid ones."""
    if name not in _MODES:
        raise ConfigError(f"mode={name!r} is not known: use one of {', '.join(_MODES)}")
    return _MODES[name]
