""" The key queue of MoCo: a FIFO of the last K momentum keys, the negatives of infoNCE (§6). """
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['KeyQueue']


class KeyQueue(nn.Module):
    """Ring buffer of L2-normalised keys (buffers, so it is saved with the model and moves with it).

    It starts as random unit vectors; ``filled`` counts the real keys enqueued so far (capped at K),
    so a run can fill it with real keys before its first step (``MoCoSAMix.warm_up_queue``). The
    write position is mirrored on the host, so enqueueing never waits for the device.

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
        self.register_buffer('num_filled', torch.zeros((), dtype=torch.long))
        self._ptr = self._filled = 0

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @property
    def full(self) -> bool:
        """Every slot holds a real key."""
        return self._filled >= self.size

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest entries by ``keys`` (BxD, B <= K), wrapping around the end."""
        n = keys.shape[0]
        if n > self.size:
            raise ValueError(f'cannot enqueue {n} keys into a queue of {self.size}: use a queue at least '
                             f'as large as the global batch')
        slots = (torch.arange(n, device=self.keys.device) + self._ptr) % self.size
        self.keys[slots] = keys.detach().to(self.keys.dtype)
        self._ptr = (self._ptr + n) % self.size
        self._filled = min(self._filled + n, self.size)
        self.ptr.fill_(self._ptr)
        self.num_filled.fill_(self._filled)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # queues saved before ``num_filled`` existed had been running: count them as full
        state_dict.setdefault(prefix + 'num_filled', torch.tensor(self.size))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._ptr, self._filled = int(self.ptr), int(self.num_filled)
