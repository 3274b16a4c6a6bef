""" FeatureTap: the stage-l feature map of a timm model, the input of the Mixer (spec §1)

The tap calls ``model.forward_intermediates(x, indices=[index], intermediates_only=True,
stop_early=True)``, so the backbone stops at the chosen stage. Indices are those of
``forward_intermediates``, which match the entries of ``model.feature_info`` in timm:
ResNet/ResNeXt 0 = stem ``act1`` (stride 2), 1..4 = ``layer1..4`` (stride 4..32); Swin and
ConvNeXt 0..3 = stages (stride 4..32); plain ViT/DeiT 0..depth-1 = blocks (all stride 16).
"""
import logging
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

__all__ = ['FeatureTap', 'FeatureTapError', 'select_feature_index']

_logger = logging.getLogger(__name__)

SizeType = Union[int, Sequence[int]]

TARGET_REDUCTION = 16  # stage l = 3 of the spec is the stride-16 map (§1)
MIN_MAP_SIZE = 8  # small inputs: deepest stage whose map is at least 8x8 (§1)


class FeatureTapError(ValueError):
    """ Raised when a model cannot provide stage feature maps to the Mixer. """


def _input_hw(input_size: SizeType) -> Tuple[int, int]:
    """ (H, W) from an int, (H, W) or timm's (C, H, W). """
    if isinstance(input_size, int):
        return input_size, input_size
    size = tuple(int(v) for v in input_size)
    if len(size) not in (2, 3):
        raise ValueError(f'input_size must be an int, (H, W) or (C, H, W), got {input_size}.')
    return size[-2], size[-1]


def select_feature_index(feature_info: List[Dict], input_size: Optional[SizeType] = None) -> int:
    """ Default stage for the Mixer (§1).

    The entry of ``feature_info`` whose reduction is 16 (the one closest to 16, preferring the
    finer map, if none is). When several entries qualify (plain ViTs: one per block, all at
    stride 16) the middle one is taken, index (n - 1) // 2, i.e. block 5 of 12 for DeiT.
    If ``input_size`` is given and that map would be smaller than 8x8 (size estimated as
    input_size // reduction), the deepest entry whose map is at least 8x8 is taken instead
    (resnet18 at 64 px -> index 2, ``layer2``, 8x8); if no entry reaches 8x8 the default stays.

    Args:
        feature_info: ``model.feature_info``, dicts with 'num_chs' and 'reduction'.
        input_size: Training image size, an int, (H, W) or (C, H, W); None skips the small-input rule.
    """
    reductions = [info['reduction'] for info in feature_info]
    best = min(reductions, key=lambda r: (abs(r - TARGET_REDUCTION), r))
    candidates = [i for i, r in enumerate(reductions) if r == best]
    index = candidates[(len(candidates) - 1) // 2]
    if input_size is None:
        return index

    h, w = _input_hw(input_size)

    def map_ok(i: int) -> bool:
        return min(h, w) // reductions[i] >= MIN_MAP_SIZE

    if not map_ok(index):
        large_enough = [i for i in range(len(reductions)) if map_ok(i)]
        if large_enough:
            index = large_enough[-1]
    return index


def _get_feature_info(model: nn.Module) -> List[Dict]:
    info = getattr(model, 'feature_info', None)
    if info is not None and hasattr(info, 'get_dicts'):  # timm FeatureInfo of features_only models
        info = info.get_dicts()
    if not info:
        raise FeatureTapError(
            f'{type(model).__name__} has no feature_info, so its stage maps cannot be located; '
            f'use a timm model family that has forward_intermediates and feature_info.')
    return list(info)


class FeatureTap(nn.Module):
    """ Stage feature map of a timm model through ``forward_intermediates`` (§1).

    Default stage: the stride-16 entry of ``model.feature_info`` (ResNet index 3 = ``layer3``,
    Swin/ConvNeXt index 2, plain ViT/DeiT block 5 of 12: patch tokens without the final norm and
    prefix tokens, reshaped to CxHxW). For small inputs, when ``input_size`` is given and the
    stride-16 map would be smaller than 8x8, the deepest stage whose map is at least 8x8
    (resnet18 at 64 px -> index 2, 128x8x8). See ``select_feature_index``. The stage chosen is logged.

    The forward does not switch off gradients: the caller wraps it in ``torch.no_grad()``.

    Args:
        model: A timm model with ``forward_intermediates`` and ``feature_info``.
        index: Stage index in ``forward_intermediates`` numbering (negative counts from the end);
            None picks the default above.
        input_size: Training image size (int, (H, W) or (C, H, W)) for the small-input rule.
    """

    def __init__(
            self,
            model: nn.Module,
            index: Optional[int] = None,
            input_size: Optional[SizeType] = None,
    ):
        super().__init__()
        name = type(model).__name__
        if not callable(getattr(model, 'forward_intermediates', None)):
            raise FeatureTapError(
                f'{name} has no forward_intermediates(), which SAMix needs to read its stage features. '
                f'Pick a timm model family that has forward_intermediates (ResNet, ViT/DeiT, Swin, '
                f'ConvNeXt, ...).')
        feature_info = _get_feature_info(model)
        num_stages = len(feature_info)

        if index is None:
            index = select_feature_index(feature_info, input_size)
            how = 'default'
        else:
            if isinstance(index, bool) or not isinstance(index, int) or not -num_stages <= index < num_stages:
                raise FeatureTapError(
                    f'index={index!r} is not a stage of {name}: valid indices are '
                    f'0..{num_stages - 1} (or -{num_stages}..-1 from the end), reductions '
                    f'{[info["reduction"] for info in feature_info]}.')
            index = index % num_stages
            how = 'user-given'

        self.model = model
        self.index = index
        self.channels = feature_info[index]['num_chs']
        self.reduction = feature_info[index]['reduction']
        if input_size is not None:
            h, w = (v // self.reduction for v in _input_hw(input_size))
            if h * w <= 1:  # P·v has one position: every mask is constant over its image (§2.6, a grey Mixer)
                _logger.warning(
                    f'FeatureTap: stage index {index} of {name} is {max(h, 1)}x{max(w, 1)} at input {input_size}: the '
                    f'Mixer would make masks constant over each image (Mixup at SAMix\'s cost); pick an earlier '
                    f'stage (index) or a larger input')
        _logger.info(
            f'FeatureTap: {name} {how} stage index {index} ({feature_info[index].get("module", "?")}), '
            f'{self.channels} channels at stride {self.reduction}'
            + (f' for input {input_size}' if input_size is not None else '') + '.')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ Nx3xHxW images -> NxCxhxw stage map. """
        return self.model.forward_intermediates(
            x, indices=[self.index], intermediates_only=True, stop_early=True)[0]
