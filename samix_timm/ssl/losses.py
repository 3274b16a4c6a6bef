""" Contrastive losses of MoCo v2 and the instance-level SAMix losses (spec §4, §6)

All embeddings are L2-normalised. ``q`` is the query (online encoder), ``k`` a positive key
(momentum encoder), ``queue`` the KxD negatives. ``lam`` weighs the mixed image's own part:
the key ``k_i`` of the sample, ``1 - lam`` the key ``k_j`` of its partner (cross-view, §6).
"""
from typing import Union

import torch
import torch.nn.functional as F

__all__ = ['info_nce', 'lam_info_nce', 'two_way_loss', 'eta_instance_loss']

LamType = Union[float, torch.Tensor]


def _ce_first(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy with the positive in column 0: (N,)."""
    return F.cross_entropy(logits.float(), torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device),
                           reduction='none')


def _lam(lam: LamType, ref: torch.Tensor) -> torch.Tensor:
    """lam as an fp32 tensor broadcastable over the N samples of ``ref``."""
    return torch.as_tensor(lam, dtype=torch.float32, device=ref.device).reshape(-1)


def _nce_per_sample(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    pos = (q * k).sum(dim=1, keepdim=True)  # Nx1
    neg = q @ queue.t()  # NxK
    return _ce_first(torch.cat([pos, neg], dim=1) / temperature)  # N


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """MoCo's infoNCE: mean_n CE([q_n·k_n, q_n·queue] / T, 0).

    Args:
        q: NxD queries.
        k: NxD positive keys.
        queue: KxD negative keys.
        temperature: T (0.2 in MoCo v2).
    """
    return _nce_per_sample(q, k, queue, temperature).mean()


def lam_info_nce(
        q_mix: torch.Tensor,
        k_i: torch.Tensor,
        k_j: torch.Tensor,
        queue: torch.Tensor,
        lam: LamType,
        temperature: float = 0.2,
) -> torch.Tensor:
    """l_-^I (§4): lam·CE([q·k_i, q·Q]/T, 0) + (1 − lam)·CE([q·k_j, q·Q]/T, 0), mean over samples.

    Args:
        q_mix: NxD embeddings of the mixed images.
        k_i: NxD keys of the samples' other views.
        k_j: NxD keys of the partners' other views.
        queue: KxD negative keys.
        lam: Weight of the sample's own part, a float or an (N,) tensor.
        temperature: T.
    """
    lam = _lam(lam, q_mix)
    loss_i = _nce_per_sample(q_mix, k_i, queue, temperature)
    loss_j = _nce_per_sample(q_mix, k_j, queue, temperature)
    return (lam * loss_i + (1. - lam) * loss_j).mean()


def two_way_loss(
        q_mix: torch.Tensor,
        k_i: torch.Tensor,
        k_j: torch.Tensor,
        lam: LamType,
        temperature: float = 0.2,
) -> torch.Tensor:
    """l_+^I (§4): lam·CE([q·k_i, q·k_j]/T, 0) + (1 − lam)·CE([q·k_j, q·k_i]/T, 0), mean over samples."""
    lam = _lam(lam, q_mix)
    s_i = (q_mix * k_i).sum(dim=1, keepdim=True)  # Nx1
    s_j = (q_mix * k_j).sum(dim=1, keepdim=True)  # Nx1
    loss_i = _ce_first(torch.cat([s_i, s_j], dim=1) / temperature)
    loss_j = _ce_first(torch.cat([s_j, s_i], dim=1) / temperature)
    return (lam * loss_i + (1. - lam) * loss_j).mean()


def eta_instance_loss(
        q_mix: torch.Tensor,
        k_i: torch.Tensor,
        k_j: torch.Tensor,
        queue: torch.Tensor,
        lam: LamType,
        eta: float = 0.5,
        temperature: float = 0.2,
) -> torch.Tensor:
    """l_eta^I = l_+^I + eta·l_-^I (§4), the SAMix-I Mixer loss."""
    return (two_way_loss(q_mix, k_i, k_j, lam, temperature)
            + eta * lam_info_nce(q_mix, k_i, k_j, queue, lam, temperature))
