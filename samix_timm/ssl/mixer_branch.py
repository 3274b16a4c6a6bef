""" The online Mixer of self-supervised SAMix (spec §6): masks for the encoder, and its own update.

The branch is loss-agnostic: the caller passes ``score(x_mix) -> loss`` (SAMix-I's l_eta^I through
the frozen momentum encoder, or SAMix-C's class-level l_eta on the cluster head), and the branch
adds the mask losses (§3), back-propagates to the Mixer only, averages its gradients over ranks
and steps its own SGD with a cosine learning rate (§5.4).
"""
from contextlib import nullcontext
from typing import Callable, Dict, Optional, Union

import torch

from ..defaults import SSL_BETA_SCHEDULE
from ..limits import KEYWORD_LIMITS, check_keyword
from ..mixer import create_mixer, mixer_name
from ..mixer_trainer import MASK_MARGIN, MIXER_LR, MIXER_MIN_LR, MIXER_MOMENTUM, MixerTrainer, reference_optimizer
from ..mixing import mix_images, mixer_mask
from ..momentum import PAPER_MASK_BETA, BetaSchedule
from ..settings import MixSettings

__all__ = ['SSLMixerBranch']


class SSLMixerBranch:
    """Mixer M_φ with its optimizer for cross-view mixing. train_ssl.py builds it with `ssl_mixer_defaults`; the
    defaults here are the same constants (the Mixer's own keyword defaults when `mixer_kwargs` is None).

    Args:
        in_channels: Channels of the momentum encoder's stage-l map.
        total_steps: Steps of the run (cosine learning rate, β schedule).
        mixer: ``create_mixer`` name ('samix' or 'automix').
        mixer_kwargs: Constructor kwargs of the Mixer (e.g. ``dropout=0.``).
        lr: Mixer SGD learning rate (the authors' SGD, §5.4).
        min_lr: Learning rate at the last step.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        beta: Schedule of the mask-loss weight (§3; None: `PAPER_MASK_BETA`, constant, as the SSL recipes).
        mask_margin: Tolerance of l_mu (§3).
        lam_margin: Encoder-branch mask is the constant 1 − λ when λ is this close to 0 or 1 (§3).
        device: Device of the Mixer.
        amp_autocast: Autocast context factory for the forward through the scoring network (``--amp``).
        grad_scaler: ``torch.amp.GradScaler`` of the Mixer update under fp16, or None.
    """

    def __init__(
            self,
            in_channels: int,
            total_steps: int,
            mixer: str = 'samix',
            mixer_kwargs: Optional[Dict] = None,
            lr: float = MIXER_LR,
            min_lr: float = MIXER_MIN_LR,
            momentum: float = MIXER_MOMENTUM,
            weight_decay: float = 0.,
            beta: Optional[BetaSchedule] = None,
            mask_margin: float = MASK_MARGIN,
            lam_margin: float = MixSettings.lam_margin,
            device: Optional[torch.device] = None,
            amp_autocast: Callable = nullcontext,
            grad_scaler: Optional[torch.amp.GradScaler] = None,
    ):
        for name, value, limit in (('lr', lr, 'mixer_lr'), ('momentum', momentum, 'mixer_momentum'),
                                   ('weight_decay', weight_decay, 'mixer_weight_decay'),
                                   ('lam_margin', lam_margin, 'lam_margin')):
            check_keyword(name, value, KEYWORD_LIMITS[limit])  # (min_lr, mask_margin: the trainer checks them)
        self.mixer = create_mixer(mixer, in_channels, **(mixer_kwargs or {})).to(device)
        beta = beta or BetaSchedule(PAPER_MASK_BETA, SSL_BETA_SCHEDULE, total_steps)
        self.trainer = MixerTrainer(self.mixer, total_steps, reference_optimizer(lr, momentum, weight_decay), min_lr,
                                    beta, mask_margin, grad_scaler, mask_loss='batch')
        self.lam_margin = lam_margin
        self.amp_autocast = amp_autocast

    @torch.no_grad()
    def mask(self, z1: torch.Tensor, z2_all: torch.Tensor, lam: float, index: torch.Tensor, size) -> torch.Tensor:
        """Encoder-branch mask s (Nx1xHxW) of view 1 with partners z2_all[index] (no gradient): the λ margin and the
        Mixer, as every SAMix makes the mask a network trains on (`mixing.mixer_mask`, §3, §6)."""
        s = mixer_mask(self.mixer, z1, lam, index, size, self.lam_margin, z_partner=z2_all)
        self.trainer.sync_buffers()  # on every rank, whatever its λ: the forward moved this rank's BN statistics
        return s

    def train_step(
            self,
            x1: torch.Tensor,
            x2_all: torch.Tensor,
            z1: torch.Tensor,
            z2_all: torch.Tensor,
            lam: float,
            index: torch.Tensor,
            score: Callable[[torch.Tensor], torch.Tensor],
            step: int,
    ) -> Dict[str, Union[float, torch.Tensor]]:
        """One Mixer update: L_φ = score(x_mix) + β(l_mu + l_sigma), gradient to φ only (§3, §6)."""
        s = self.mixer(z1, lam, index, x1.shape[-2:], z_partner=z2_all)  # Nx1xHxW, grad to φ
        x_mix = mix_images(x1, s, index, partner=x2_all)  # view 1 with the partners' view 2 (§6)
        with self.amp_autocast():
            loss_mix = score(x_mix).float()
        return self.trainer.update(loss_mix, s, lam, step + 1)  # + β(ℓ_μ + ℓ_σ), step φ (§3)

    def state_dict(self) -> Dict:
        """Mixer weights, name and config (what a SAMix^P export needs), its optimizer and scaler."""
        return dict(mixer=self.mixer.state_dict(), name=mixer_name(self.mixer), config=self.mixer.config,
                    **self.trainer.state_dict())

    def load_state_dict(self, state: Dict, step: int) -> None:
        self.mixer.load_state_dict(state['mixer'])
        self.trainer.load_state_dict(state)
        self.trainer.lr_scheduler.step_update(step)
