""" Data of MoCo v2: the two-view augmentation (§6), indexed datasets and feature extraction.

``MoCoV2Views`` holds the augmentation's settings; ``--view-aug loader`` applies them with torchvision
on PIL images in the loader workers (``moco_v2_transform``), ``--view-aug device`` on the batch on the
training device (``device_aug``).
"""
from dataclasses import dataclass
from typing import Callable, Sequence, Tuple

import torch
from torch.utils.data import Dataset
from torchvision import transforms as T
from timm.data import create_transform
from timm.data.random_erasing import RandomErasing

__all__ = ['MoCoV2Views', 'moco_v2_transform', 'eval_transform', 'TwoViewDataset', 'extract_features']


@dataclass(frozen=True)
class MoCoV2Views:
    """MoCo v2's view augmentation (§6): RandomResizedCrop to ``img_size`` (area ``scale``), colour jitter
    (b/c/s = cj, hue = cj/4, random order) with probability 0.8, grayscale 0.2, Gaussian blur (σ 0.1–2,
    kernel ≈ 10% of the image) 0.5, flip, normalisation; then, when ``reprob`` > 0, timm's RandomErasing
    (up to ``recount`` boxes, erased to 0 = the mean) as train.py's ``--reprob``/``--recount``."""
    img_size: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    scale: Tuple[float, float] = (0.2, 1.)
    hflip: float = 0.5
    color_jitter: float = 0.4
    color_jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    reprob: float = 0.
    recount: int = 1

    @property
    def blur_kernel(self) -> int:
        return max(3, int(0.1 * self.img_size) // 2 * 2 + 1)


def moco_v2_transform(v: MoCoV2Views) -> Callable:
    """``v`` as a torchvision transform of one PIL image (the loader-worker path)."""
    cj = v.color_jitter
    return T.Compose([
        T.RandomResizedCrop(v.img_size, scale=tuple(v.scale)),
        T.RandomApply([T.ColorJitter(cj, cj, cj, cj / 4)], p=v.color_jitter_prob),
        T.RandomGrayscale(p=v.grayscale_prob),
        T.RandomApply([T.GaussianBlur(v.blur_kernel, sigma=(0.1, 2.0))], p=v.blur_prob),
        T.RandomHorizontalFlip(p=v.hflip),
        T.ToTensor(),
        T.Normalize(v.mean, v.std),
        *([RandomErasing(v.reprob, mode='const', max_count=v.recount, device='cpu')] if v.reprob > 0 else []),
    ])


def eval_transform(img_size: int, mean: Sequence[float], std: Sequence[float], crop_pct: float = 0.875) -> Callable:
    """timm's evaluation transform (resize, centre crop, normalise) for probes and clustering."""
    return create_transform(img_size, is_training=False, mean=tuple(mean), std=tuple(std), crop_pct=crop_pct)


class TwoViewDataset(Dataset):
    """Two independent augmentations of each image, with its index: ((x1, x2), index).

    Args:
        dataset: A dataset of (PIL image, target) pairs (timm ``create_dataset`` without transform).
        transform: The augmentation applied twice.
    """

    def __init__(self, dataset: Dataset, transform: Callable):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        img, _ = self.dataset[index]
        return (self.transform(img), self.transform(img)), index


@torch.no_grad()
def extract_features(fn: Callable[[torch.Tensor], torch.Tensor], loader, device: torch.device
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(features NxC, targets N) of ``fn`` over a loader of (images, targets), in loader order, on CPU."""
    feats, targets = [], []
    for x, y in loader:
        feats.append(fn(x.to(device)).float().cpu())
        targets.append(torch.as_tensor(y))
    return torch.cat(feats), torch.cat(targets)

