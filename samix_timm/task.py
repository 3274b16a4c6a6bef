""" train.py's training step as a `timm.task.TrainingTask`: mix, forward, loss (and the clean-batch term of §5.6).

    task = create_task(model, loss_fn, mixer, clean)        # mixer: timm Mixup, SAMix, SAMix^P or None
    result = task(x, target)                                # {'loss', 'output', 'input', + the mixer's metrics}
    result['loss'].backward()

The training loop knows only the task. The clean term, W·loss(f(x), y) + loss(f(x_mix), ỹ), is computed here from
both halves directly, so nothing passes between the mixer's call and the loss (the Mixup-shaped `SAMix.__call__`
with `SAMix.loss` stays for loops of one's own).
"""
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
from timm.task import TrainingTask

from .clean import CleanTerm
from .samix import SAMix

__all__ = ['MixTask', 'SAMixTask', 'create_task']


class MixTask(TrainingTask):
    """One training step: the batch mixed by `mixer` (after the loader, outside autocast: mixers keep their own
    precision), the classifier's forward under the loop's autocast, the recipe's loss on the mixed batch, plus
    W·loss on the clean batch when `clean` is on (§5.6).

    Args:
        model: the classifier (DDP-wrapped or compiled as the loop runs it).
        criterion: the recipe's training loss (soft-target CE, BCE, ...).
        mixer: a `(x, target) -> (x_mix, soft_target)` mixer with `mixup_enabled` (timm Mixup, SAMix^P), or None.
        clean: the clean-batch term, or None.
        channels_last: hand the classifier channels_last input.
    """

    def __init__(self, model: nn.Module, criterion: Callable, mixer: Optional[Callable] = None,
                 clean: Optional[CleanTerm] = None, channels_last: bool = False,
                 device: Optional[torch.device] = None):
        super().__init__(device=device, verbose=False)
        self.trainable_module = model
        self.criterion = criterion
        self.mixer = mixer
        self.clean = clean if clean is not None and clean.weight > 0 else None
        self.channels_last = channels_last

    def mix(self, x: torch.Tensor, target: torch.Tensor):
        return self.mixer(x, target)

    def compile(self, backend: str = 'inductor', mode: Optional[str] = None, **compile_kwargs) -> nn.Module:
        """torch.compile the classifier as the loop runs it (`--torchcompile`)."""
        self.trainable_module = torch.compile(self.trainable_module, backend=backend, mode=mode, **compile_kwargs)
        self.eval_model = self.trainable_module
        return self.trainable_module

    def metrics(self) -> Dict[str, torch.Tensor]:
        """The mixer's metrics of the last step (none for a fixed mixer)."""
        return {}

    def _model(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.trainable_module(x)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> Dict[str, torch.Tensor]:
        x, y, clean = input, target, None
        if self.mixer is not None:
            if self.clean is not None and self.mixer.mixup_enabled:
                x_clean, y_clean = self.clean.batch(input, target)
                clean = x_clean.clone(), y_clean  # before mixing: timm's Mixup mixes the batch in place
            with torch.autocast(device_type=input.device.type, enabled=False):
                x, y = self.mix(input, target)
        if clean is None:
            output = self._model(x)
            return dict(loss=self.criterion(output, y), output=output, input=x, **self.metrics())
        x_clean, y_clean = clean
        if self.clean.forward == 'separate':  # each half with its own BN statistics, as the reference (§5.6)
            out_clean, out_mix = self._model(x_clean), self._model(x)
        else:
            out_clean, out_mix = self._model(torch.cat([x_clean, x])).split([x_clean.shape[0], x.shape[0]])
        loss = self.clean.weight * self.criterion(out_clean, y_clean) + self.criterion(out_mix, y)
        return dict(loss=loss, output=torch.cat([out_clean, out_mix]), input=torch.cat([x_clean, x]),
                    **self.metrics())


class SAMixTask(MixTask):
    """`MixTask` with online SAMix: the step trains the Mixer (through `SAMix.mix_batch`) and reports its metrics;
    `compile()` also compiles θ̄'s passes and the Mixer."""

    def __init__(self, model: nn.Module, criterion: Callable, samix: SAMix, channels_last: bool = False,
                 device: Optional[torch.device] = None):
        super().__init__(model, criterion, samix, samix.clean, channels_last, device)

    def mix(self, x: torch.Tensor, target: torch.Tensor):
        return self.mixer.mix_batch(x, target)

    def metrics(self) -> Dict[str, torch.Tensor]:
        return dict(self.mixer.last_metrics)

    def compile(self, backend: str = 'inductor', mode: Optional[str] = None, **compile_kwargs) -> nn.Module:
        """The classifier, and θ̄'s two passes and the Mixer with the same backend and mode (`SAMix.compile`)."""
        self.mixer.compile(backend, mode)
        return super().compile(backend, mode, **compile_kwargs)


def create_task(model: nn.Module, criterion: Callable, mixer: Optional[Callable] = None,
                clean: Optional[CleanTerm] = None, channels_last: bool = False,
                device: Optional[torch.device] = None) -> MixTask:
    """The task of a run: `SAMixTask` for online SAMix (its clean term is its preset's), else `MixTask`."""
    if isinstance(mixer, SAMix):
        return SAMixTask(model, criterion, mixer, channels_last, device)
    return MixTask(model, criterion, mixer, clean, channels_last, device)
