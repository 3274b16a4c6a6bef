""" The small typed objects an online SAMix is built from (method §2–§5): what the classifier branch draws
(`MixSettings`), the Mixer and how it is trained (`MixerSettings`), and how the step runs (`StepPreset`, one per
`--samix-preset`). Each checks its own values and names the keyword argument when one is wrong; only scripts
know flags. """
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, Optional, Union

import torch.nn as nn

from .clean import CLEAN_FORWARDS
from .errors import ConfigError
from .limits import check_keyword
from .mixer_trainer import MASK_LOSSES, MASK_MARGIN, MIXER_MIN_LR, reference_optimizer
from .momentum import PAPER_MASK_BETA, BetaSchedule

MIXER_LOSSES = ('eta', 'mce')


@dataclass(frozen=True)
class MixSettings:
    """The classifier branch's draw, timm `Mixup`'s knobs (§0, §3).

    Args:
        alpha: λ ~ Beta(alpha, alpha) (2 in the paper).
        lam_margin: λ ≤ margin or ≥ 1 − margin gives the plain-mixup mask 1 − λ (§3).
        lam_adjust_prob: probability of λ adjusting the classifier-branch mask (§3).
        label_smoothing: timm label smoothing of the soft targets (the classifier's, and the Mixer's under 'mce',
            as the reference's head_mix, §5.7).
        prob: probability of mixing a batch (timm `mixup_prob`).
    """
    alpha: float = 2.0
    lam_margin: float = 0.08
    lam_adjust_prob: float = 0.0
    label_smoothing: float = 0.1
    prob: float = 1.0

    def __post_init__(self):
        for name in ('alpha', 'lam_margin', 'lam_adjust_prob', 'label_smoothing', 'prob'):
            check_keyword(name, getattr(self, name))


@dataclass(frozen=True)
class StepPreset:
    """How the SAMix step runs: the Mixer-branch economies and the clean-batch term (§5.4–§5.6). The `paper`
    preset is the reference step; the others are measured economies (bench/accuracy.py).

    Args:
        mixer_every: train the Mixer every k-th call (1 = paper).
        mixer_until: train the Mixer during this first fraction of the run, then keep it frozen (1 = paper; < 1:
            the masks still follow θ̄, the Mixer's update and its forward through θ̄ stop; an economy of ours).
        mixer_batch_frac: fraction of the batch the Mixer branch trains on (1 = paper).
        mixer_scale: resolution of the Mixer branch's mixed batch, as a fraction of the input's (1 = paper; < 1:
            θ̄ reads a resized copy, the mask is made at that size and its gradient still reaches φ).
        clean_weight: W of the clean-batch term W·CE(f_θ(x), y) (§5.6; 0 = off, the reference uses 1).
        clean_forward: 'joint' (one forward of the 2N batch) or 'separate' (one per half, as the reference).
        clean_frac: fraction of the clean batch the clean term sees (1 = the reference).
    """
    mixer_every: int = 1
    mixer_until: float = 1.0
    mixer_batch_frac: float = 1.0
    mixer_scale: float = 1.0
    clean_weight: float = 0.0
    clean_forward: str = 'joint'
    clean_frac: float = 1.0

    def __post_init__(self):
        for name in ('mixer_every', 'mixer_until', 'mixer_batch_frac', 'mixer_scale', 'clean_frac', 'clean_weight'):
            check_keyword(name, getattr(self, name))
        if self.clean_forward not in CLEAN_FORWARDS:
            raise ConfigError(f"clean_forward={self.clean_forward!r} is not known: use one of {CLEAN_FORWARDS}")


@dataclass(frozen=True)
class MixerSettings:
    """The Mixer M_φ and how it is trained (§2–§4). `samix_defaults` (and `create_samix`) choose every field per
    run; built directly, the field defaults are the authors' values and `for_run` fills in the two that need the run.

    Args:
        mixer: a Mixer name for `create_mixer` ('samix', 'automix') or a built Mixer.
        kwargs: constructor keywords when `mixer` is a name.
        optimizer: factory `params -> torch.optim.Optimizer` (None: `reference_optimizer()`, the authors' SGD).
        min_lr: Mixer learning rate at the last step (cosine from the optimizer's lr).
        loss: 'eta' (η-balanced BCE, §4) or 'mce' (soft-target CE, the released configs).
        eta: weight of the classes outside the mixed pair in the η loss (§4).
        beta: schedule of the mask-loss weight (§3; None: `PAPER_MASK_BETA`, linear to 0 over the run).
        mask_margin: tolerance of ℓ_μ (§3).
        mask_loss: 'batch' (ℓ_μ, ℓ_σ over the batch, the reference) or 'image' (per image, §2.6).
        tap_index: stage index of the features the Mixer reads (None: see `FeatureTap`).
    """
    mixer: Union[str, nn.Module] = 'samix'
    kwargs: Dict[str, Any] = field(default_factory=dict)
    optimizer: Optional[Callable] = None
    min_lr: float = MIXER_MIN_LR
    loss: str = 'eta'
    eta: float = 0.1
    beta: Optional[BetaSchedule] = None
    mask_margin: float = MASK_MARGIN
    mask_loss: str = 'batch'
    tap_index: Optional[int] = None

    def __post_init__(self):
        if self.loss not in MIXER_LOSSES:
            raise ConfigError(f"loss={self.loss!r} is not known: use 'eta' or 'mce'")
        if self.mask_loss not in MASK_LOSSES:
            raise ConfigError(f'mask_loss={self.mask_loss!r} is not known: use one of {MASK_LOSSES}')
        for name in ('eta', 'mask_margin', 'min_lr'):
            check_keyword(name, getattr(self, name))
        if self.beta is not None and not isinstance(self.beta, BetaSchedule):
            raise ConfigError(f'beta={self.beta!r} is not a BetaSchedule: pass BetaSchedule(mask_beta, mode, '
                              f'total_steps) (or None)')

    def for_run(self, total_steps: int) -> 'MixerSettings':
        """These settings with the two values a run decides filled in where None: the optimizer
        (`reference_optimizer()`) and β (`PAPER_MASK_BETA`, linear to 0 over `total_steps`)."""
        if self.optimizer is not None and self.beta is not None:
            return self
        return replace(self, optimizer=self.optimizer or reference_optimizer(),
                       beta=self.beta or BetaSchedule(PAPER_MASK_BETA, 'linear', total_steps))
