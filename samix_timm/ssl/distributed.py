""" Collective helpers of MoCo under DDP: gathered batches, shuffled BN, rank-averaged Mixer gradients.

Every helper is the identity (or a no-op) in a single process, so the training code has one path.
(The rank-sync primitives live in ``samix_timm.sync``, shared with supervised SAMix.)
"""
from typing import Tuple

import torch
import torch.distributed as dist

from ..sync import average_gradients, broadcast_, broadcast_module_, is_distributed

__all__ = ['is_distributed', 'gather', 'broadcast_', 'broadcast_module_', 'shuffle_batch', 'unshuffle',
           'average_gradients']


@torch.no_grad()
def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (same shape on every rank) over ranks in rank order; no gradient."""
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def _local_slice(n: int) -> slice:
    rank = dist.get_rank() if is_distributed() else 0
    return slice(rank * n, (rank + 1) * n)


@torch.no_grad()
def shuffle_batch(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """MoCo's shuffled BN: this rank's share of a randomly reordered global batch, and the order.

    The key encoder then normalises with statistics of samples from other ranks, so the keys carry
    no batch-statistics shortcut. Returns (local images, global order); undo with ``unshuffle``.
    """
    x_all = gather(x)  # (world·N)x...
    order = broadcast_(torch.randperm(x_all.shape[0], device=x.device))
    return x_all[order][_local_slice(x.shape[0])], order


@torch.no_grad()
def unshuffle(y: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Outputs of a ``shuffle_batch`` input back on the rank and position of their images."""
    y_all = gather(y)
    restored = torch.empty_like(y_all)
    restored[order] = y_all
    return restored[_local_slice(y.shape[0])]


