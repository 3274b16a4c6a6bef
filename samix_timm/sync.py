""" The one set of rank-synchronisation helpers of everything DDP does not wrap (Mixer, θ̄, MoCo's queue).

Each is the identity (or a no-op) in a single process, so callers have one code path.
"""
from typing import Iterable

import torch
import torch.distributed as dist
import torch.nn as nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

__all__ = ['is_distributed', 'broadcast_', 'broadcast_module_', 'average_gradients', 'any_rank']


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def broadcast_(x: torch.Tensor) -> torch.Tensor:
    """Rank 0's ``x`` on every rank (in place)."""
    if is_distributed():
        dist.broadcast(x, 0)
    return x


@torch.no_grad()
def broadcast_module_(module: nn.Module, params: bool = True) -> nn.Module:
    """Rank 0's buffers (and parameters) on every rank, one broadcast per dtype (as DDP's broadcast_buffers)."""
    if not is_distributed():
        return module
    tensors = [*(module.parameters() if params else ()), *module.buffers()]
    for dtype in dict.fromkeys(t.dtype for t in tensors):  # same order on every rank
        group = [t for t in tensors if t.dtype == dtype]
        flat = _flatten_dense_tensors(group)
        dist.broadcast(flat, 0)
        for t, synced in zip(group, _unflatten_dense_tensors(flat, group)):
            t.copy_(synced)
    return module


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Mean of each gradient over ranks (what DDP does for the modules it wraps)."""
    if not is_distributed():
        return
    world = dist.get_world_size()
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is True on any (one all-reduce; ``flag`` itself without DDP)."""
    if not is_distributed():
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
