""" Mixer health: whether the masks follow λ and are spatial (method §3), as numbers for every epoch.

A Mixer can degenerate silently: a constant grey mask (λ-blind, per-image std ≈ 0) or masks whose
area ignores λ make the soft labels wrong. `mixer_health` measures, on a fixed batch and fixed λ,
how much of each image is kept, mean(1 − s) (should be ≈ λ), and how spatial the masks are (mean
per-image std of s; 0.5 for a half-and-half binary mask, 0 for a constant one).
"""
from typing import Dict, Sequence

import torch

HEALTH_LAMS = (0.3, 0.5, 0.7)


@torch.no_grad()
def mixer_health(mixer, x: torch.Tensor, lams: Sequence[float] = HEALTH_LAMS) -> Dict[str, float]:
    """{'health_keep_<λ>': mean(1 − s), 'health_std_<λ>': mean per-image std of s} of `mixer.preview`."""
    metrics = {}
    for lam in lams:
        s = mixer.preview(x, lam)['mask'].float().flatten(1)  # N x HW
        metrics[f'health_keep_{lam:g}'] = float((1. - s).mean())
        metrics[f'health_std_{lam:g}'] = float(s.std(dim=1, unbiased=False).mean())
    return metrics


def health_failures(metrics: Dict[str, float], keep_tol: float = 0.1, min_std: float = 0.3) -> Dict[str, str]:
    """What is wrong with a health reading: |mean(1 − s) − λ| > keep_tol or per-image std < min_std."""
    failures = {}
    for key, value in metrics.items():
        kind, lam = key.rsplit('_', 1)
        if kind == 'health_keep' and abs(value - float(lam)) > keep_tol:
            failures[key] = f'keeps {value:.3f} of the image at lam {lam} (should be within {keep_tol:g} of {lam})'
        elif kind == 'health_std' and value < min_std:
            failures[key] = f'per-image mask std {value:.3f} at lam {lam} (< {min_std:g}: not spatial)'
    return failures


def format_health(metrics: Dict[str, float]) -> str:
    """'keep 0.31/0.50/0.69 at lam 0.3/0.5/0.7, std 0.45/0.48/0.44' for the log."""
    lams = [k.rsplit('_', 1)[1] for k in metrics if k.startswith('health_keep_')]
    keep = '/'.join(f"{metrics[f'health_keep_{lam}']:.2f}" for lam in lams)
    std = '/'.join(f"{metrics[f'health_std_{lam}']:.2f}" for lam in lams)
    return f"mean(1 - s) {keep} at lam {'/'.join(lams)}, per-image std {std}"
