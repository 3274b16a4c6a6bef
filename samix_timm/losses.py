""" Losses of SAMix: mixup CE / BCE, the eta-balanced class-level loss and the mask regularisers

Classifier losses (§4) take the soft target ``lam * onehot(y_a) + (1 - lam) * onehot(y_b)``
that ``timm.data.Mixup`` and the SAMix trainer hand to the training loop; the eta-balanced loss
trains the Mixer (§4) and ``mask_losses`` regularises its mask (§3).
"""
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.loss import BinaryCrossEntropy, SoftTargetCrossEntropy

__all__ = ['mixup_ce', 'mixup_bce', 'eta_balanced_bce', 'EtaBalancedBCE', 'mask_losses']

LamType = Union[float, torch.Tensor]

_soft_target_ce = SoftTargetCrossEntropy()


def mixup_ce(logits: torch.Tensor, soft_target: torch.Tensor) -> torch.Tensor:
    """ MCE (§4): mean over samples of -sum_c target_c * log softmax(logits)_c (timm's SoftTargetCrossEntropy).

    Args:
        logits: NxK class logits.
        soft_target: NxK soft target (label smoothing, if any, applied upstream by the mixup).
    """
    return _soft_target_ce(logits, soft_target)


def mixup_bce(
        logits: torch.Tensor,
        soft_target: torch.Tensor,
        target_threshold: Optional[float] = None,
) -> torch.Tensor:
    """ MBCE (§4, RSB style): BCE-with-logits against the soft target (timm's BinaryCrossEntropy).

    Dense targets are used as given (timm smooths only index targets), binarised with
    ``target > target_threshold`` when a threshold is set; the loss is the mean over all NxK
    elements, as in timm (``eta_balanced_bce`` sums over classes instead).

    Args:
        logits: NxK class logits.
        soft_target: NxK soft target.
        target_threshold: Binarise the target above this value (e.g. 0.2 in RSB A1/A2); None keeps it soft.
    """
    if soft_target.shape != logits.shape:
        raise ValueError(
            f'mixup_bce expects a dense soft target shaped like the logits {tuple(logits.shape)}, '
            f'got {tuple(soft_target.shape)}.')
    return BinaryCrossEntropy(smoothing=0., target_threshold=target_threshold)(logits, soft_target)


def eta_balanced_bce(
        logits: torch.Tensor,
        y_a: torch.Tensor,
        y_b: torch.Tensor,
        lam: LamType,
        eta: float,
) -> torch.Tensor:
    """ eta-balanced class-level loss l_eta of the Mixer (§4, SAMix-C).

    BCE-with-logits against ``lam * onehot(y_a) + (1 - lam) * onehot(y_b)``, with weight 1 on the
    classes y_a and y_b (the local term) and ``eta`` on every other class (the global term); sum
    over classes, mean over samples. eta = 0 is pBCE, eta = 1 plain MBCE summed over classes.
    When y_a == y_b the target is 1 on that class.

    Args:
        logits: NxK class logits.
        y_a: Class indices (N,) of the samples, weighted by ``lam``.
        y_b: Class indices (N,) of the partners, weighted by ``1 - lam``.
        lam: Mixing ratio, a float or an (N,) tensor.
        eta: Weight of the classes outside {y_a, y_b}.
    """
    num_classes = logits.shape[-1]
    lam = torch.as_tensor(lam, dtype=torch.float32, device=logits.device).reshape(-1, 1)  # Nx1 or 1x1
    one_a = F.one_hot(y_a.long(), num_classes).float()  # NxK
    one_b = F.one_hot(y_b.long(), num_classes).float()  # NxK
    target = lam * one_a + (1. - lam) * one_b  # NxK
    weight = eta + (1. - eta) * torch.maximum(one_a, one_b)  # NxK, 1 on {y_a, y_b}, eta elsewhere
    loss = F.binary_cross_entropy_with_logits(logits.float(), target, weight=weight, reduction='none')
    return loss.sum(dim=-1).mean()


class EtaBalancedBCE(nn.Module):
    """ Module form of ``eta_balanced_bce`` (§4).

    Args:
        eta: Weight of the classes outside {y_a, y_b} (0.1 ImageNet-scale, 0.5 small data).
    """

    def __init__(self, eta: float = 0.1):
        super().__init__()
        self.eta = eta

    def forward(self, logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, lam: LamType) -> torch.Tensor:
        return eta_balanced_bce(logits, y_a, y_b, lam, self.eta)


def mask_losses(s: torch.Tensor, lam: LamType, margin: float = 0.1, per_image: bool = False
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """ Mask regularisers (l_mu, l_sigma) of §3.

    With mu the mean of s over the whole batch and all pixels (the reference):
    l_mu = max(|1 - mu - lam| - margin, 0) and l_sigma = -2 * mean((s - mu)^2).
    ``per_image`` (§2.6): mu_n is each image's own mean and both terms are averaged over images, so masks that
    are constant per image (0 for some images, 1 for others) no longer meet them.

    Args:
        s: Partner weights, Nx1xHxW in [0, 1].
        lam: Mixing ratio, a float or an (N,) tensor (for the batch form its mean is used, since mu is a batch mean).
        margin: Tolerance of l_mu.
        per_image: Per-image mean and variance instead of the batch's.

    Returns:
        (l_mu, l_sigma), two scalar tensors.
    """
    s = s.float()
    if per_image:
        mu = s.mean(dim=(1, 2, 3), keepdim=True)  # Nx1x1x1
        lam = lam.float().view(-1, 1, 1, 1) if isinstance(lam, torch.Tensor) else lam
        loss_mu = ((1. - mu - lam).abs() - margin).clamp(min=0.).mean()
        return loss_mu, -2. * (s - mu).pow(2).mean()
    if isinstance(lam, torch.Tensor):
        lam = lam.float().mean()
    mu = s.mean()
    loss_mu = ((1. - mu - lam).abs() - margin).clamp(min=0.)
    loss_var = -2. * (s - mu).pow(2).mean()
    return loss_mu, loss_var
