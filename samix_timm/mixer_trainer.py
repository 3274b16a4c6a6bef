""" How a Mixer M_φ is trained online, for every SAMix variant: its objective (the caller's mixing loss plus
the mask losses, §3), its own optimizer and cosine schedule (§5.4, §5.7), an fp16 GradScaler, and the
rank synchronisation that keeps one Mixer on every rank.
"""
from functools import partial
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
from timm.scheduler import CosineLRScheduler

from .errors import ConfigError
from .limits import check_keyword
from .losses import mask_losses
from .momentum import BetaSchedule
from .sync import average_gradients, broadcast_module_

__all__ = ['MixerTrainer', 'step_mixer_optimizer', 'grad_norms', 'reference_optimizer', 'MASK_LOSSES', 'MIXER_LR',
           'MIXER_MOMENTUM', 'MIXER_LR_DECAY', 'MIXER_MIN_LR', 'MASK_MARGIN']

MASK_LOSSES = ('batch', 'image')  # where ℓ_μ and ℓ_σ take their mean: the whole batch (reference) or each image
# the authors' Mixer optimizer (§5.4, §5.7): SGD lr 0.1, momentum 0.9, cosine to lr / 100; and ℓ_μ's margin (§3).
# The one place these values are written: `samix_defaults`, `ssl_mixer_defaults`, the settings objects and the
# scripts' flags take them from here.
MIXER_LR = 0.1
MIXER_MOMENTUM = 0.9
MIXER_LR_DECAY = 100  # min_lr = lr / MIXER_LR_DECAY
MIXER_MIN_LR = MIXER_LR / MIXER_LR_DECAY
MASK_MARGIN = 0.1


def reference_optimizer(lr: float = MIXER_LR, momentum: float = MIXER_MOMENTUM, weight_decay: float = 0.) -> Callable:
    """The authors' Mixer optimizer as a factory `params -> torch.optim.SGD` (§5.4)."""
    return partial(torch.optim.SGD, lr=lr, momentum=momentum, weight_decay=weight_decay)


def grad_norms(mixer: nn.Module) -> Dict[str, torch.Tensor]:
    """{'mixer_grad_<part>': gradient norm} per top-level part of the Mixer (query, key, value, ...): the
    instrument of §2.6, where a grey Mixer's Q and K get gradients orders of magnitude below the value's."""
    norms = {}
    for name, part in mixer.named_children():
        grads = [p.grad.detach().float() for p in part.parameters() if p.grad is not None]
        if grads:
            norms[f'mixer_grad_{name}'] = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    return norms


def step_mixer_optimizer(loss: torch.Tensor, optimizer: torch.optim.Optimizer, sync_grads: Callable[[], None],
                         grad_scaler: Optional[torch.amp.GradScaler] = None) -> None:
    """Backward of a Mixer loss, gradients averaged over ranks by `sync_grads`, optimizer step (fp16: scaled)."""
    optimizer.zero_grad(set_to_none=True)
    if grad_scaler is None:
        loss.backward()
        sync_grads()
        optimizer.step()
        return
    grad_scaler.scale(loss).backward()
    # average the *scaled* gradients (as DDP does) before the scaler looks at them: an inf on one rank
    # reaches every rank, so all find it, all skip the step and all lower the scale alike
    sync_grads()
    grad_scaler.step(optimizer)
    grad_scaler.update()


class MixerTrainer:
    """Optimizer, schedule, scaler and rank sync of one Mixer; ``update`` is one step of L_φ (§3, §5.4).

    Args:
        mixer: The Mixer M_φ (on its device); rank 0's weights are copied to every rank here.
        total_steps: Steps of the run (cosine learning rate, β schedule).
        optimizer: Factory ``params -> torch.optim.Optimizer`` (`reference_optimizer()`: the authors' SGD, §5.4).
        min_lr: Learning rate at the last step (cosine from the optimizer's lr).
        beta: Schedule of the mask-loss weight β (§3).
        mask_margin: Tolerance of ℓ_μ (§3).
        grad_scaler: ``torch.amp.GradScaler`` for fp16, or None.
        mask_loss: 'batch' (ℓ_μ, ℓ_σ over the batch, the reference) or 'image' (per image, §2.6).

    The trainer chooses nothing: its callers pass the values their settings hold (`MixerSettings`, `SSLMixerBranch`).
    """

    def __init__(
            self,
            mixer: nn.Module,
            total_steps: int,
            optimizer: Callable,
            min_lr: float,
            beta: BetaSchedule,
            mask_margin: float,
            grad_scaler: Optional[torch.amp.GradScaler],
            mask_loss: str,
    ):
        if mask_loss not in MASK_LOSSES:
            raise ConfigError(f'mask_loss={mask_loss!r} is not known: use one of {MASK_LOSSES}')
        check_keyword('min_lr', min_lr)
        check_keyword('mask_margin', mask_margin)
        self.mixer = broadcast_module_(mixer)
        self.optimizer = optimizer(mixer.parameters())
        self.lr_scheduler = CosineLRScheduler(self.optimizer, t_initial=max(total_steps, 1), lr_min=min_lr,
                                              t_in_epochs=False)
        self.beta = beta
        self.mask_margin = mask_margin
        self.mask_loss = mask_loss
        self.grad_scaler = grad_scaler

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]['lr']

    def update(self, loss_mix: torch.Tensor, s: torch.Tensor, lam: float, step: int) -> Dict[str, torch.Tensor]:
        """L_φ = loss_mix + β(step)·(ℓ_μ + ℓ_σ) for mask ``s`` (ℓ_σ only for Mixers trained with it, §3);
        backward to φ, rank-averaged gradients, optimizer step, then the learning rate of ``step``.
        Returns the step's metrics as device tensors."""
        loss_mu, loss_var = mask_losses(s, lam, self.mask_margin, per_image=self.mask_loss == 'image')
        if not getattr(self.mixer, 'variance_loss', True):
            loss_var = torch.zeros_like(loss_var)
        beta = self.beta(step)
        loss = loss_mix + beta * (loss_mu + loss_var)
        norms = {}

        def sync_grads():
            average_gradients(self.mixer.parameters())
            if self.grad_scaler is None:  # fp16-scaled gradients are not comparable between steps
                norms.update(grad_norms(self.mixer))

        step_mixer_optimizer(loss, self.optimizer, sync_grads, self.grad_scaler)
        self.lr_scheduler.step_update(step)
        return dict(mixer_loss=loss.detach(), mask_mu=loss_mu.detach(), mask_var=loss_var.detach(),
                    mask_keep=(1. - s.detach()).mean(), beta=beta, mixer_lr=self.lr, **norms)

    def sync_buffers(self) -> None:
        """Rank 0's BatchNorm statistics of the Mixer on every rank: every train-mode forward moved them."""
        broadcast_module_(self.mixer, params=False)

    def state_dict(self) -> Dict:
        return dict(optimizer=self.optimizer.state_dict(),
                    grad_scaler=self.grad_scaler.state_dict() if self.grad_scaler is not None else None)

    def load_state_dict(self, state: Dict) -> None:
        """Optimizer (its lr is the one the last update set) and scaler; the caller restores the Mixer."""
        self.optimizer.load_state_dict(state['optimizer'])
        if self.grad_scaler is not None and state.get('grad_scaler') is not None:
            self.grad_scaler.load_state_dict(state['grad_scaler'])
