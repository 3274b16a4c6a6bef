""" Collective helpers of MoCo under DDP: gathered batches, shuffled BN, rank-averaged Mixer gradients.

Every helper is the identity (or a no-op) in a single process, so the training code has one path.
"""
from typing import Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = ['is_distributed', 'gather', 'broadcast_', 'broadcast_module_', 'shuffle_batch', 'unshuffle',
           'average_gradients']


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


@torch.no_grad()
def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (same shape on every rank) over ranks in rank order; no gradient."""
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def broadcast_(x: torch.Tensor) -> torch.Tensor:
    """Rank 0's ``x`` on every rank (in place)."""
    if is_distributed():
        dist.broadcast(x, 0)
    return x


@torch.no_grad()
def broadcast_module_(module: nn.Module) -> nn.Module:
    """Rank 0's parameters and buffers on every rank (in place)."""
    if is_distributed():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, 0)
    return module


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


def average_gradients(params: Sequence[nn.Parameter]) -> None:
    """Mean of each gradient over ranks (for modules outside DDP, e.g. the Mixer)."""
    if not is_distributed():
        return
    world = dist.get_world_size()
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)
