""" Momentum encoder f_θ̄ of SAMix and the schedules that drive the online Mixer (spec §3, §5).

`MomentumEncoder` is timm's `ModelEmaV3` with frozen parameters and a momentum that follows a
schedule; the schedules are small pure functions of the step so that resuming only needs the
step counter.
"""
import math
from dataclasses import dataclass
from typing import Optional

import torch.nn as nn
from timm.utils import ModelEmaV3

from .errors import ConfigError
from .limits import KEYWORD_LIMITS, check_keyword

# the paper's momentum schedule (§5): its start, and its final momentum by scale of the data
PAPER_MOMENTUM_START = 0.999
PAPER_MOMENTUM_END = dict(imagenet=0.99999, small=0.999999)
PAPER_MASK_BETA = 0.1  # β of the mask losses (§3): the authors' (every SAMix and AutoMix config of OpenMixup)


@dataclass(frozen=True)
class MomentumSchedule:
    """m(t): constant `start` for the first `warmup_frac` of `total_steps`, then on the cosine of the whole run,
    m = end − (end − start)(1 + cos(π t / T)) / 2 with the absolute step t, as the reference (§5.5): m jumps onto
    the cosine when the hold ends.

    Args:
        start: momentum during the first part of training.
        end: momentum at the last step.
        total_steps: length of the run in SAMix calls.
        warmup_frac: fraction of the run held at `start` (0.1 for CNNs, 0.25 for ViTs).
    """
    start: float
    end: float
    total_steps: int
    warmup_frac: float = 0.1

    def __post_init__(self):  # the ranges train.py's --samix-momentum-start/-end check too
        check_keyword('start', self.start, KEYWORD_LIMITS['momentum_start'])
        check_keyword('end', self.end, KEYWORD_LIMITS['momentum_end'])
        check_keyword('warmup_frac', self.warmup_frac)

    def __call__(self, step: int) -> float:
        if step < int(self.warmup_frac * self.total_steps):
            return self.start
        progress = min(1.0, step / max(self.total_steps, 1))  # absolute t / T, not restarted after the hold (§5.5)
        return self.end - (self.end - self.start) * (1 + math.cos(math.pi * progress)) / 2


def paper_momentum(total_steps: int, warmup_frac: float = 0.1) -> MomentumSchedule:
    """The paper's ImageNet schedule, 0.999 -> 0.99999, unscaled (`SAMix` built without a schedule; train.py and
    `create_samix` scale it to the run, `scaled_momentum`)."""
    return MomentumSchedule(PAPER_MOMENTUM_START, PAPER_MOMENTUM_END['imagenet'], total_steps, warmup_frac)


def scaled_momentum(total_steps: int, paper_end: float = PAPER_MOMENTUM_END['imagenet']):
    """(start, end) scaled to the run length T: start = min(0.999, 1 − 10/T), end = min(paper, 1 − 1/T) (§5).

    On ImageNet-length runs (≥ 100k steps) this is the paper's schedule; on short runs it keeps
    θ̄ from freezing near its random initialisation.
    """
    total_steps = max(total_steps, 20)
    return min(PAPER_MOMENTUM_START, 1 - 10 / total_steps), min(paper_end, 1 - 1 / total_steps)


BETA_MODES = ('linear', 'constant')


@dataclass(frozen=True)
class BetaSchedule:
    """Weight β of the mask losses (§3): `linear` from `beta` to 0 over the run, or `constant`.

    Args:
        beta: initial (or constant) weight (the paper's: `PAPER_MASK_BETA`).
        mode: 'linear' (ImageNet-scale recipes) or 'constant' (small datasets); `BETA_MODES`.
        total_steps: length of the run in SAMix calls.
    """
    beta: float
    mode: str
    total_steps: int

    def __post_init__(self):
        check_keyword('mask_beta', self.beta)  # the range train.py's --samix-mask-beta checks too
        if self.mode not in BETA_MODES:
            raise ConfigError(f"beta_schedule={self.mode!r} is not known: use 'linear' or 'constant'")

    def __call__(self, step: int) -> float:
        if self.mode == 'constant':
            return self.beta
        return self.beta * max(0.0, 1 - step / max(self.total_steps, 1))


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Plain BatchNorm2d in place of every SyncBatchNorm (same parameters and buffers, same order), so the
    momentum encoder's forwards run without collectives under `--sync-bn`: each rank normalises its batch."""
    if isinstance(module, nn.SyncBatchNorm):
        ref = module.weight if module.weight is not None else module.running_mean
        bn = nn.BatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats, device=ref.device if ref is not None else None,
                            dtype=ref.dtype if ref is not None else None)
        bn.load_state_dict(module.state_dict())
        bn.train(module.training)
        return bn
    for name, child in module.named_children():
        reverted = revert_sync_batchnorm(child)
        if reverted is not child:
            setattr(module, name, reverted)
    return module


class MomentumEncoder(ModelEmaV3):
    """Frozen EMA copy θ̄ of the classifier θ (§5): parameters lerp with momentum m(t), buffers copy.

    The copy normalises with batch statistics (train mode), like MoCo's key encoder, and its own
    passes leave its BatchNorm running statistics untouched (momentum 0): they mirror θ's, which
    DDP keeps equal on all ranks, so every rank holds the same encoder. (Spec §5 lets θ̄'s own
    passes update them; SAMix never reads them, and mirroring is what keeps ranks identical.)

    Args:
        model: the classifier being trained (unwrapped, before DDP).
        schedule: momentum as a function of the step.
    """

    def __init__(self, model: nn.Module, schedule: MomentumSchedule):
        super().__init__(model, exclude_buffers=True)
        revert_sync_batchnorm(self.module)  # θ̄ needs no statistics of other ranks' batches
        self.schedule = schedule
        self.module.requires_grad_(False)
        self.module.train()
        for m in self.module.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
                m.momentum = 0.0

    def step(self, model: nn.Module, step: int) -> float:
        """θ̄ ← m θ̄ + (1 − m) θ with m = schedule(step); returns m."""
        self.decay = self.schedule(step)
        self.update(model)
        return self.decay


def describe_schedules(momentum: MomentumSchedule, beta: BetaSchedule, note: Optional[str] = None) -> str:
    """One log line with the schedule values chosen for this run."""
    text = (f'momentum {momentum.start:.6g} -> {momentum.end:.6g} (cosine after {momentum.warmup_frac:.0%} of '
            f'{momentum.total_steps} steps), mask-loss beta {beta.beta:g} {beta.mode}')
    return text + (f' ({note})' if note else '')
