""" Mixer health: whether the masks follow λ and are spatial (method §3), as numbers for every epoch.

A Mixer can degenerate silently: a constant grey mask (λ-blind, per-image std ≈ 0) or masks whose
area ignores λ make the soft labels wrong. `mixer_health` measures, on a fixed batch and fixed λ,
how much of each image is kept, mean(1 − s) (should be ≈ λ), and how spatial the masks are (mean
per-image std of s; 0.5 for a half-and-half binary mask, 0 for a constant one), plus the instruments of
§2.6: the mixing attention's entropy (1 = uniform, the grey Mixer's state) and the weight scale of each part.
"""
import math
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn

HEALTH_LAMS = (0.3, 0.5, 0.7)
# a Mixer is grey when its masks are constant: per-image std below this at some λ of the reading (§2.6).
# Not `health_failures`' 0.3 "not spatial" bound: healthy seeds can end with soft but spatial masks at
# 0.21–0.26, while collapsed ones read 0.00–0.01 (bench/results).
GREY_STD = 0.05


def _attention_hook(entropies: List[torch.Tensor], logit_stds: List[torch.Tensor]):
    def hook(module, inputs, p):  # p: Nxhwxhw rows of the mixing attention
        if p.shape[-1] < 2:  # one position (a 1x1 map): the attention is uniform, its logits have no spread
            entropies.append(p.new_ones(()))
            logit_stds.append(p.new_zeros(()))
            return
        h = -(p * p.clamp(min=1e-12).log()).sum(-1).mean()
        entropies.append(h / math.log(p.shape[-1]))
        logits = p.clamp(min=1e-30).log()  # log-softmax = logits - logsumexp: the same spread per row
        logit_stds.append(logits.std(dim=-1).mean())
    return hook


@torch.no_grad()
def mixer_health(mixer, x: torch.Tensor, lams: Sequence[float] = HEALTH_LAMS, net: Optional[nn.Module] = None
                 ) -> Dict[str, float]:
    """{'health_keep_<λ>': mean(1 − s), 'health_std_<λ>': mean per-image std of s} of `mixer.preview`, and
    'health_grey' (1. when grey); for a learned Mixer also 'mixer_attention_entropy' (mean normalised entropy
    of the attention rows, 1 = uniform), 'mixer_weight_std_<part>' (std of each part's conv weights) and
    'mixer_bn_gamma_<part>' (mean |γ|). `net` is the Mixer behind `mixer.preview` (default: `mixer.mixer`)."""
    metrics, entropies, logit_stds = {}, [], []
    net = net if net is not None else getattr(mixer, 'mixer', None)
    attention = getattr(net, 'attention', None)
    handle = attention.register_forward_hook(_attention_hook(entropies, logit_stds)) if attention is not None else None
    try:
        for lam in lams:
            preview = mixer.preview(x, lam)
            s = preview['mask'].float().flatten(1)  # N x HW
            metrics[f'health_keep_{lam:g}'] = float((1. - s).mean())
            metrics[f'health_std_{lam:g}'] = float(s.std(dim=1, unbiased=False).mean())
            if 'mask_raw' in preview:  # the Mixer's own area, before λ adjusting (§3) makes it exact
                metrics[f'mixer_keep_{lam:g}'] = float((1. - preview['mask_raw'].float()).mean())
    finally:
        if handle is not None:
            handle.remove()
    sharpness = getattr(net, 'sharpness', None)
    if sharpness is not None:  # the Mixer's own masks, before the sharpness floor (§2.6): what says it learned
        net.sharpness = None
        try:
            for lam in lams:
                s = mixer.preview(x, lam)['mask'].float().flatten(1)
                metrics[f'health_own_std_{lam:g}'] = float(s.std(dim=1, unbiased=False).mean())
        finally:
            net.sharpness = sharpness
    metrics['health_grey'] = float(is_grey(metrics))
    if entropies:  # not when the Mixer runs compiled (hooks do not fire inside a compiled graph)
        metrics['mixer_attention_entropy'] = float(torch.stack(entropies).mean())
        metrics['mixer_attention_logit_std'] = float(torch.stack(logit_stds).mean())  # the softmax's sharpness
    if isinstance(net, nn.Module):
        for name, part in net.named_children():
            weights = [m.weight.detach().float().flatten() for m in part.modules() if isinstance(m, nn.Conv2d)]
            if weights:
                metrics[f'mixer_weight_std_{name}'] = float(torch.cat(weights).std())
            gammas = [m.weight.detach().float().abs() for m in part.modules()
                      if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None]
            if gammas:  # the value head's BN scale: γ -> 0 makes the value map, hence the mask, constant
                metrics[f'mixer_bn_gamma_{name}'] = float(torch.cat(gammas).mean())
    return metrics


def is_grey(metrics: Dict[str, float], min_std: float = GREY_STD) -> bool:
    """True when the per-image mask std is below `min_std` at some λ of a health reading: a λ-blind, constant
    mask, i.e. mixup with the wrong λ in its labels, not a learned Mixer. With a sharpness floor (§2.6) it reads
    the Mixer's own masks, before the floor (`health_own_std_*`): the floor makes even an untrained Mixer's sharp."""
    own = [v for k, v in metrics.items() if k.startswith('health_own_std_')]
    return any(v < min_std for v in own or [v for k, v in metrics.items() if k.startswith('health_std_')])


def health_failures(metrics: Dict[str, float], keep_tol: float = 0.1, min_std: float = 0.3) -> Dict[str, str]:
    """What is wrong with a health reading: |mean(1 − s) − λ| > keep_tol or per-image std < min_std."""
    failures = {}
    for key, value in metrics.items():
        if not key.startswith(('health_keep_', 'health_std_')):
            continue
        kind, lam = key.rsplit('_', 1)
        if kind == 'health_keep' and abs(value - float(lam)) > keep_tol:
            failures[key] = f'keeps {value:.3f} of the image at lam {lam} (should be within {keep_tol:g} of {lam})'
        elif kind == 'health_std' and value < min_std:
            failures[key] = f'per-image mask std {value:.3f} at lam {lam} (< {min_std:g}: not spatial)'
    if is_grey(metrics) and not failures:  # sharp masks from the floor alone (§2.6)
        failures['health_grey'] = (f"the Mixer's own masks are constant (per-image std < {GREY_STD:g} before the "
                                   f"sharpness floor): nothing learned")
    return failures


def format_health(metrics: Dict[str, float]) -> str:
    """'mean(1 - s) 0.31/0.50/0.69 at lam 0.3/0.5/0.7, per-image std 0.45/0.48/0.44' for the log; a grey
    reading ends with 'GREY'."""
    lams = [k.rsplit('_', 1)[1] for k in metrics if k.startswith('health_keep_')]
    keep = '/'.join(f"{metrics[f'health_keep_{lam}']:.2f}" for lam in lams)
    std = '/'.join(f"{metrics[f'health_std_{lam}']:.2f}" for lam in lams)
    line = f"mean(1 - s) {keep} at lam {'/'.join(lams)}, per-image std {std}"
    if any(k.startswith('health_own_std_') for k in metrics):
        own = '/'.join(f"{metrics[f'health_own_std_{lam}']:.2f}" for lam in lams)
        line += f" ({own} before the sharpness floor)"
    if 'mixer_attention_entropy' in metrics:
        line += f", attention entropy {metrics['mixer_attention_entropy']:.3f} of uniform"
    if is_grey(metrics):
        line += f' -> GREY (constant masks: per-image std < {GREY_STD:g}, no learned mixing)'
    return line
