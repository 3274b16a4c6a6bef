""" The key queue of MoCo: a FIFO of the last K momentum keys, the negatives of infoNCE (§6). """
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['KeyQueue']


class KeyQueue(nn.Module):
    """Ring buffer of L2-normalised keys (buffers, so it is saved with the model and moves with it).

    Args:
        size: Number of keys K (65,536 ImageNet-1k, 16,384 small data, §6).
        dim: Key dimension D.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size < 1:
            raise ValueError(f'queue size must be >= 1, got {size}')
        self.register_buffer('keys', F.normalize(torch.randn(size, dim), dim=1))  # KxD
        self.register_buffer('ptr', torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest entries by ``keys`` (BxD, B <= K), wrapping around the end."""
        n = keys.shape[0]
        if n > self.size:
            raise ValueError(f'cannot enqueue {n} keys into a queue of {self.size}: use a queue at least '
                             f'as large as the global batch')
        ptr = int(self.ptr)
        slots = (torch.arange(n, device=self.keys.device) + ptr) % self.size
        self.keys[slots] = keys.detach().to(self.keys.dtype)
        self.ptr.fill_((ptr + n) % self.size)
