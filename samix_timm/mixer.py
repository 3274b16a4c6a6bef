""" Mixers: the learnable mask generators of SAMix and of the AutoMix ablation (spec §2)

A Mixer maps the stop-gradient feature map ``z`` (NxCxhxw) of a clean batch, a mixing ratio
``lam`` and a permutation ``index`` of the batch to ``s`` in [0, 1] (Nx1xHxW), the per-pixel
weight of the *partner* image: ``x_mix = (1 - s) * x + s * x[index]`` (§0), so that the mean of
``1 - s`` should be close to ``lam`` (§3).

Mixers are built by name through ``create_mixer`` ("samix", "automix"); each exposes ``config``,
the constructor kwargs, so ``create_mixer(name, **mixer.config)`` rebuilds it.
"""
import math
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .limits import KEYWORD_LIMITS, check_keyword

__all__ = [
    'Mixer', 'AutoMixer', 'MixingAttention', 'MixerNumericsError',
    'MIXER_INITS', 'MIXER_NORMS', 'MIXER_UPSAMPLES', 'MIXER_AREAS', 'fit_mask_area', 'rescale_lam', 'create_mixer',
    'list_mixers', 'mixer_name', 'mixer_inference', 'set_inference_mode',
]

LamType = Union[float, torch.Tensor]
SizeType = Union[int, Sequence[int]]

MIXER_UPSAMPLES = ('bilinear', 'nearest')
MIXER_INITS = ('reference', 'fan_in', 'fan_in_all')
MIXER_NORMS = ('none', 'rms', 'qk')
MIXER_AREAS = ('free', 'lam')  # mask area: learned under ℓ_μ (the authors') or 1 - lam per image by construction


class MixerNumericsError(RuntimeError):
    """ Raised by a Mixer's forward when its fp32 mixing attention holds NaN or inf values. """


def rescale_lam(lam: LamType, k: float = -1.) -> LamType:
    """ Rescaled lambda of the adaptive lambda encoding (§2.1).

    ``((4/3) lam^3 - 2 lam^2 + (k + 1) lam) / (k + 1/3)``; keeps 0 -> 0, 1/2 -> 1/2 and 1 -> 1.

    Args:
        lam: Mixing ratio(s) in [0, 1], a float or a tensor.
        k: Rescale strength (k >= 0); k < 0 (the default -1) returns ``lam`` unchanged.
    """
    if k < 0:
        return lam
    return ((4. / 3.) * lam ** 3 - 2. * lam ** 2 + (k + 1.) * lam) / (k + 1. / 3.)


def _lam_map(lam: LamType, z: torch.Tensor) -> torch.Tensor:
    """ Mixing ratio(s) as an fp32 Nx1x1x1 tensor on ``z``'s device. """
    n = z.shape[0]
    lam = torch.as_tensor(lam, dtype=torch.float32, device=z.device)
    if lam.ndim == 0:
        lam = lam.expand(n)
    if lam.shape != (n,):
        raise ValueError(f'lam must be a float or a tensor of shape ({n},), got shape {tuple(lam.shape)}.')
    return lam.view(n, 1, 1, 1)


def _size_2d(size: SizeType) -> List[int]:
    if isinstance(size, int):
        return [size, size]
    size = [int(v) for v in size]
    if len(size) != 2:
        raise ValueError(f'out_size must be an int or (H, W), got {size}.')
    return size


class MixingAttention(nn.Module):
    """ P = softmax(Q^T K / sqrt(d)) over the last axis, always in fp32 (§2.2).

    Autocast is switched off inside, so the Nx(hw)x(hw) logits never overflow in fp16. Raises
    ``MixerNumericsError`` when the logits are not finite. The check needs a host/device sync, so
    on accelerators it only runs for fp16 inputs (where overflow can happen); on CPU it is free.

    Args:
        qk_norm: Scale each position's query and key to unit RMS over their d channels first (§2.6): the
            logits then lie in [-sqrt(d), sqrt(d)] whatever the weights' or the features' scale.
    """

    def __init__(self, qk_norm: bool = False):
        super().__init__()
        self.qk_norm = qk_norm

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        check = q.device.type == 'cpu' or q.dtype == torch.float16
        with torch.autocast(device_type=q.device.type, enabled=False):
            q = q.flatten(2).float()  # Nxdxhw
            k = k.flatten(2).float()  # Nxdxhw
            if self.qk_norm:  # §2.6
                q = q * torch.rsqrt(q.pow(2).mean(dim=1, keepdim=True) + 1e-6)
                k = k * torch.rsqrt(k.pow(2).mean(dim=1, keepdim=True) + 1e-6)
            logits = torch.bmm(q.transpose(1, 2), k) / math.sqrt(q.shape[1])  # Nxhwxhw
            if check and not torch.isfinite(logits).all():
                num_nan = int(torch.isnan(logits).sum())
                num_inf = int(torch.isinf(logits).sum())
                raise MixerNumericsError(
                    f'Mixer attention logits are not finite in fp32: {num_nan} NaN and {num_inf} inf '
                    f'of {logits.numel()} values. Check the input features z for NaN/inf and the '
                    f'Mixer weights (diverged Mixer learning rate?).')
            return logits.softmax(dim=-1)


def fit_mask_area(m: torch.Tensor, keep: torch.Tensor, steps: int = 30, check: bool = True) -> torch.Tensor:
    """ s = sigmoid(m + b_n) with the per-image offset b_n that makes mean(s_n) = keep_n (§2.6, mask area).

    b_n is found by bisection (mean(s_n) rises monotonically with b_n; b_n lies between logit(keep_n) - max(m_n)
    and logit(keep_n) - min(m_n)); its gradient is the implicit one, db_n/dm_nk = -s'_nk / sum_k s'_nk, so the
    area stays fixed under every update and only the shape of the mask learns.

    Args:
        m: Mask logits, Nx1xHxW fp32.
        keep: Target mean of s per image, (N,) in (0, 1).
        check: Refuse non-finite logits (a host sync: the Mixer skips it on CUDA unless the value head ran in fp16,
            as for the attention logits).
    """
    flat = m.flatten(1)
    if check and not torch.isfinite(flat).all():  # a sigmoid would hide it as 0/1; the offset would make NaN
        raise MixerNumericsError(
            f'Mixer mask logits are not finite in {int((~torch.isfinite(flat)).sum())} of {flat.numel()} values. '
            f'Check the input features z for NaN/inf and the Mixer weights (diverged Mixer learning rate?).')
    with torch.no_grad():
        target = keep.to(flat.dtype).clamp(1e-3, 1. - 1e-3)
        lo = torch.logit(target) - flat.amax(1)
        hi = torch.logit(target) - flat.amin(1)
        for _ in range(steps):
            b = (lo + hi) / 2
            above = torch.sigmoid(flat + b[:, None]).mean(1) > target
            hi = torch.where(above, b, hi)
            lo = torch.where(above, lo, b)
        b = (lo + hi) / 2
        ds = torch.sigmoid(flat + b[:, None])
        ds = ds * (1. - ds)
        w = ds / ds.sum(1, keepdim=True).clamp_min(1e-12)
    b = b - ((flat - flat.detach()) * w).sum(1)  # same value, implicit gradient
    return torch.sigmoid(flat + b[:, None]).view_as(m)


def _attention_mask(
        p: torch.Tensor, v: torch.Tensor, out_size: SizeType, mode: str, keep: Optional[torch.Tensor] = None,
        sharpness: Optional[float] = None,
) -> torch.Tensor:
    """ s = sigmoid(up(P . v)) in fp32 (§2.4); the scale is out_size / h, never a fixed stride.

    With ``keep`` (N,), each image's mask logits are shifted so that mean(s_n) = keep_n (`fit_mask_area`).
    With ``sharpness`` g, each image's logits m_n become m_n (1 + g / std(m_n)): their std over positions is
    g + std(m_n), so the mask is never softer than g allows and may grow sharper (§2.6, mask sharpness).
    """
    n, _, h, w = v.shape
    with torch.autocast(device_type=v.device.type, enabled=False):
        m = torch.bmm(p, v.flatten(2).transpose(1, 2).float())  # Nxhwx1
        m = m.transpose(1, 2).reshape(n, 1, h, w)  # Nx1xhxw
        if sharpness is not None:  # §2.6, mask sharpness
            m = m * (1. + sharpness / (m.flatten(1).std(dim=1, unbiased=False).view(n, 1, 1, 1) + 1e-6))
        m = F.interpolate(
            m, size=_size_2d(out_size), mode=mode, align_corners=False if mode == 'bilinear' else None)
        if keep is not None:
            return fit_mask_area(m, keep, check=v.device.type == 'cpu' or v.dtype == torch.float16)
        return m.sigmoid()  # Nx1xHxW


def _check_upsample(upsample: str):
    if upsample not in MIXER_UPSAMPLES:
        raise ValueError(f'upsample must be one of {MIXER_UPSAMPLES}, got {upsample!r}.')


def _rms_normalize(z: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """ z divided by each sample's root mean square over C, h, w (§2.6): the Mixer then sees features of one
    scale whatever the backbone's feature norm does during training. """
    return z * torch.rsqrt(z.float().pow(2).mean(dim=(1, 2, 3), keepdim=True) + eps).to(z.dtype)


def _check_init(init: str):
    if init not in MIXER_INITS:
        raise ValueError(f'init must be one of {MIXER_INITS}, got {init!r}.')


def _init_weights(module: nn.Module, init: str = 'reference', attention: Sequence[nn.Conv2d] = ()):
    """ Conv weights ~ N(0, 0.01^2), biases 0, BN gamma 1 / beta 0, so a fresh Mixer gives s ~ 0.5 (§2.5).

    ``init='fan_in'`` draws the weights of the ``attention`` convs (Q and K) from N(0, 1/fan_in) instead, so the
    attention logits start at the scale of the features rather than ~1e-4 of it: §2.6 (the grey Mixer).
    ``init='fan_in_all'`` does so for every conv, the value head's too, so the mask logits P·v also start at O(1)
    instead of ~1e-2 (masks that start flat and sharpen only as slowly as the value weights grow, §2.6).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, mean=0., std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if init in ('fan_in', 'fan_in_all'):
        convs = attention if init == 'fan_in' else [m for m in module.modules() if isinstance(m, nn.Conv2d)]
        for conv in convs:
            nn.init.normal_(conv.weight, mean=0., std=conv.weight[0].numel() ** -0.5)


class Mixer(nn.Module):
    """ SAMix Mixer M_phi (§2): adaptive lambda encoding, mixing attention, non-linear content.

    Parameters for in_channels C and reduction r: Q and K 2C -> C/r (with bias) each, value
    C -> C/r (no bias), BN(C/r), C/r -> 1 (no bias): 164,480 for C = 256, 2,624,000 for C = 1024.

    Args:
        in_channels: Channels C of the feature map z.
        reduction: Width of Q, K and the value's hidden layer is C // reduction.
        lam_rescale_k: k of the lambda rescale (§2.1); -1 disables it (ImageNet default).
        dropout: Dropout on the value map (0.1 for ImageNet-scale data, 0 for small data).
        upsample: Mask upsampling, 'bilinear' or 'nearest'.
        init: 'reference' (every conv N(0, 0.01^2), §2.5), 'fan_in' (Q and K N(0, 1/fan_in)) or 'fan_in_all'
            (every conv N(0, 1/fan_in)); §2.6.
        norm: 'none' (the reference), 'rms' (z and its partner divided by their per-sample RMS first) or 'qk'
            (each position's Q and K at unit RMS, so the logits are bounded by sqrt(d)); §2.6.
        area: 'free' (the reference: the area is learned under ℓ_μ) or 'lam' (each mask keeps exactly 1 - lam of
            its partner, mean(1 - s_n) = lam_n, by a per-image logit offset); §2.6.
        sharpness: None (the reference: the logits' scale is what P·v makes it) or g > 0: each image's logits m_n
            scaled by 1 + g / std(m_n), so their std is at least g: masks never softer than that; §2.6.
    """
    variance_loss = True  # trained with ℓ_μ + ℓ_σ (§3)

    def __init__(
            self,
            in_channels: int,
            reduction: int = 2,
            lam_rescale_k: float = -1.,
            dropout: float = 0.1,
            upsample: str = 'bilinear',
            init: str = 'reference',
            norm: str = 'none',
            area: str = 'free',
            sharpness: Optional[float] = None,
    ):
        super().__init__()
        hidden = in_channels // reduction
        if hidden < 1:
            raise ValueError(f'in_channels // reduction must be >= 1, got {in_channels} // {reduction}.')
        if lam_rescale_k != -1 and lam_rescale_k < 0:
            raise ValueError(f'lam_rescale_k must be -1 (no rescale) or >= 0, got {lam_rescale_k}.')
        check_keyword('dropout', dropout, KEYWORD_LIMITS['mixer_dropout'])
        _check_upsample(upsample)
        _check_init(init)
        if norm not in MIXER_NORMS:
            raise ValueError(f'norm must be one of {MIXER_NORMS}, got {norm!r}.')
        if area not in MIXER_AREAS:
            raise ValueError(f'area must be one of {MIXER_AREAS}, got {area!r}.')
        if sharpness is not None and not sharpness > 0:
            raise ValueError(f'sharpness must be > 0 (or None: the logits as the Mixer makes them), got {sharpness}.')
        self._config = dict(
            in_channels=in_channels, reduction=reduction, lam_rescale_k=lam_rescale_k,
            dropout=dropout, upsample=upsample, init=init, norm=norm)
        if area != 'free':  # written only when set, so Mixers exported before the option rebuild unchanged
            self._config['area'] = area
        if sharpness is not None:
            self._config['sharpness'] = sharpness
        self.sharpness = sharpness
        self.area = area
        self.lam_rescale_k = lam_rescale_k
        self.norm = norm
        self.upsample = upsample

        self.query = nn.Conv2d(2 * in_channels, hidden, 1)
        self.key = nn.Conv2d(2 * in_channels, hidden, 1)
        self.attention = MixingAttention(qk_norm=norm == 'qk')
        self.value = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ELU(inplace=True),
            nn.Conv2d(hidden, 1, 1, bias=False),
            nn.Dropout(dropout),
        )
        _init_weights(self, init, (self.query, self.key))

    @property
    def config(self) -> Dict[str, Any]:
        """ Constructor kwargs; ``Mixer(**mixer.config)`` rebuilds an identical (untrained) Mixer. """
        return dict(self._config)

    def forward(
            self,
            z: torch.Tensor,
            lam: LamType,
            index: torch.Tensor,
            out_size: SizeType,
            z_partner: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """ Mask of the partner images.

        Args:
            z: Stop-gradient stage-l features of the clean batch, NxCxhxw (§1).
            lam: Mixing ratio of the batch (float) or of each sample ((N,) tensor).
            index: Partner indices (LongTensor, N); the partner of sample n is index[n].
            out_size: Image size (H, W) or an int for square images.
            z_partner: Features the partners are taken from (MxCxhxw, e.g. the other view or a
                gathered batch in self-supervised mixing, §6); None means ``z`` itself.

        Returns:
            s in [0, 1], Nx1xHxW fp32, the weight of the partner image.
        """
        z = z.to(self.query.weight.dtype)  # low-precision features from an autocast pass
        z_p = z if z_partner is None else z_partner.to(z.dtype)
        if self.norm == 'rms':  # §2.6
            z = _rms_normalize(z)
            z_p = z if z_partner is None else _rms_normalize(z_p)
        lam_n = _lam_map(lam, z)  # Nx1x1x1, the lam of the labels
        lam = rescale_lam(lam_n, self.lam_rescale_k)
        # §2.1 adaptive lambda encoding (residual scaling)
        z_i = (1. + lam) * z  # NxCxhxw
        z_j = (2. - lam) * z_p[index]  # NxCxhxw
        # §2.2 mixing attention on the concatenated pair
        u = torch.cat([z_i, z_j], dim=1)  # Nx2Cxhxw
        p = self.attention(self.query(u), self.key(u))  # Nxhwxhw, fp32
        # §2.3 non-linear content from the partner only
        v = self.value(z_j)  # Nx1xhxw
        # §2.4 mask logits, upsample, sigmoid
        keep = 1. - lam_n.flatten() if self.area == 'lam' else None  # s weighs the partner: mean(s_n) = 1 - lam_n
        return _attention_mask(p, v, out_size, self.upsample, keep, self.sharpness)


class AutoMixer(nn.Module):
    """ AutoMix's Mixer, the ``mixer=automix`` ablation (§2, last paragraph).

    lambda is appended as a constant channel (lambda to z, 1 - lambda to the partner z[index]);
    one shared 1x1 conv (C+1 -> C/r, with bias) gives Q from the sample and K from the partner;
    the value is one 1x1 conv (C+1 -> 1, with bias) of the partner: 33,282 parameters for C = 256.

    Args:
        in_channels: Channels C of the feature map z.
        reduction: Width of the shared Q/K conv is C // reduction.
        upsample: Mask upsampling, 'nearest' (AutoMix) or 'bilinear'.
        init: 'reference' (every conv N(0, 0.01^2)), 'fan_in' (the shared Q/K conv N(0, 1/fan_in)) or 'fan_in_all'
            (every conv N(0, 1/fan_in)); §2.6.
    """
    variance_loss = False  # AutoMix trains its Mixer with ℓ_μ only (§2, last paragraph)

    def __init__(self, in_channels: int, reduction: int = 2, upsample: str = 'nearest', init: str = 'reference'):
        super().__init__()
        hidden = in_channels // reduction
        if hidden < 1:
            raise ValueError(f'in_channels // reduction must be >= 1, got {in_channels} // {reduction}.')
        _check_upsample(upsample)
        _check_init(init)
        self._config = dict(in_channels=in_channels, reduction=reduction, upsample=upsample, init=init)
        self.upsample = upsample

        self.qk = nn.Conv2d(in_channels + 1, hidden, 1)
        self.attention = MixingAttention()
        self.value = nn.Conv2d(in_channels + 1, 1, 1)
        _init_weights(self, init, (self.qk,))

    @property
    def config(self) -> Dict[str, Any]:
        """ Constructor kwargs; ``AutoMixer(**mixer.config)`` rebuilds an identical (untrained) Mixer. """
        return dict(self._config)

    def forward(
            self,
            z: torch.Tensor,
            lam: LamType,
            index: torch.Tensor,
            out_size: SizeType,
            z_partner: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """ Mask of the partner images; same contract as ``Mixer.forward``. """
        n, _, h, w = z.shape
        z = z.to(self.qk.weight.dtype)  # low-precision features from an autocast pass
        z_p = z if z_partner is None else z_partner.to(z.dtype)
        lam = _lam_map(lam, z).to(z.dtype).expand(n, 1, h, w)  # Nx1xhxw
        z_i = torch.cat([z, lam], dim=1)  # Nx(C+1)xhxw
        z_j = torch.cat([z_p[index], 1. - lam], dim=1)  # Nx(C+1)xhxw
        p = self.attention(self.qk(z_i), self.qk(z_j))  # Nxhwxhw, fp32
        v = self.value(z_j)  # Nx1xhxw
        return _attention_mask(p, v, out_size, self.upsample)


def set_inference_mode(mixer: nn.Module) -> List[tuple]:
    """ Dropout off, BatchNorm on batch statistics without touching its running statistics.

    This is how a Mixer is used frozen (previews, SAMix^P §7): it was trained with batch
    statistics, so eval-mode BN (running statistics) would feed it inputs it never saw — e.g. the
    λ scaling of §2.1, which batch statistics normalise away. Returns the previous states.
    """
    saved = [(m, m.training, getattr(m, 'momentum', None)) for m in mixer.modules()]
    for m in mixer.modules():
        m.training = isinstance(m, nn.modules.batchnorm._BatchNorm)
        if m.training:
            m.momentum = 0.0
    return saved


@contextmanager
def mixer_inference(mixer: nn.Module) -> Iterator[nn.Module]:
    """ `set_inference_mode` for the duration of a block; the previous states come back on exit. """
    saved = set_inference_mode(mixer)
    # BN counts its forwards even at momentum 0: keep the count too, so a preview changes no state
    counts = {m: m.num_batches_tracked.clone() for m, _, _ in saved
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.num_batches_tracked is not None}
    try:
        yield mixer
    finally:
        for m, training, momentum in saved:
            m.training = training
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = momentum
        for m, count in counts.items():
            m.num_batches_tracked.copy_(count)


_MIXERS: Dict[str, Type[nn.Module]] = {
    'samix': Mixer,
    'automix': AutoMixer,
}


def mixer_name(mixer: nn.Module) -> str:
    """ The ``create_mixer`` name of a built Mixer. """
    for name, cls in _MIXERS.items():
        if type(mixer) is cls:
            return name
    raise ValueError(f'{type(mixer).__name__} is not a registered Mixer ({", ".join(list_mixers())}).')


def list_mixers() -> List[str]:
    """ Names accepted by ``create_mixer``. """
    return sorted(_MIXERS)


def create_mixer(name: str, in_channels: int, **kwargs) -> nn.Module:
    """ Build a Mixer by name.

    Args:
        name: 'samix' (``Mixer``) or 'automix' (``AutoMixer``).
        in_channels: Channels of the feature map the Mixer reads.
        **kwargs: Constructor kwargs of that Mixer.
    """
    if name not in _MIXERS:
        raise ValueError(f'Unknown mixer {name!r}; valid names: {", ".join(list_mixers())}.')
    return _MIXERS[name](in_channels=in_channels, **kwargs)
