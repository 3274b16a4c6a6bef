""" Data of MoCo v2: the two-view augmentation (§6), indexed datasets and feature extraction.

Two ways to make the views (``--view-aug``): ``loader`` augments PIL images in the loader workers
(``moco_v2_transform``, torchvision); ``device`` loads uint8 images and augments the batch on the
training device (``DeviceTwoViewLoader`` with ``device_aug.DeviceViewAugment``).
"""
from typing import Callable, Iterator, List, Sequence, Tuple

import torch
from torch.utils.data import Dataset
from torchvision import transforms as T
from timm.data import create_transform
from timm.data.random_erasing import RandomErasing

from ..errors import ConfigError
from .device_aug import DeviceViewAugment, view_generator

__all__ = ['moco_v2_transform', 'eval_transform', 'TwoViewDataset', 'IndexedImages', 'stack_images',
           'DeviceTwoViewLoader', 'extract_features']


def moco_v2_transform(
        img_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        scale: Tuple[float, float] = (0.2, 1.),
        hflip: float = 0.5,
        color_jitter: float = 0.4,
        color_jitter_prob: float = 0.8,
        grayscale_prob: float = 0.2,
        blur_prob: float = 0.5,
        reprob: float = 0.,
        recount: int = 1,
) -> Callable:
    """MoCo v2 augmentation (§6): RandomResizedCrop, colour jitter (b/c/s = cj, hue = cj/4) with
    probability 0.8, grayscale 0.2, Gaussian blur (σ 0.1–2, kernel ≈ 10% of the image) 0.5, flip; then,
    when ``reprob`` > 0, timm's RandomErasing (up to ``recount`` boxes, erased to 0 = the mean) as train.py's
    ``--reprob``/``--recount``."""
    kernel = max(3, int(0.1 * img_size) // 2 * 2 + 1)
    return T.Compose([
        T.RandomResizedCrop(img_size, scale=tuple(scale)),
        T.RandomApply([T.ColorJitter(color_jitter, color_jitter, color_jitter, color_jitter / 4)], p=color_jitter_prob),
        T.RandomGrayscale(p=grayscale_prob),
        T.RandomApply([T.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=blur_prob),
        T.RandomHorizontalFlip(p=hflip),
        T.ToTensor(),
        T.Normalize(mean, std),
        *([RandomErasing(reprob, mode='const', max_count=recount, device='cpu')] if reprob > 0 else []),
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


class IndexedImages(Dataset):
    """Each image as a uint8 CHW tensor, with its index: (image, index); the views are made later on the device.

    Args:
        dataset: A dataset of (PIL image, target) pairs (timm ``create_dataset`` without transform).
    """

    def __init__(self, dataset: Dataset):
        self.dataset, self.to_tensor = dataset, T.PILToTensor()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        img, _ = self.dataset[index]
        return self.to_tensor(img.convert('RGB')), index


_SIZE_ERROR = '--view-aug device batches whole images, which must all have one size'


def stack_images(batch: List[Tuple[torch.Tensor, int]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Collate of ``IndexedImages``: (uint8 NCHW, indices); images of different sizes are refused in one line."""
    images, index = zip(*batch)
    sizes = {tuple(img.shape[-2:]) for img in images}
    if len(sizes) > 1:
        raise ConfigError(f'{_SIZE_ERROR}; found {sorted(sizes)[:2]}: resize the dataset once or use --view-aug loader')
    return torch.stack(images), torch.tensor(index)


class DeviceTwoViewLoader:
    """Two views of every image made on ``device`` from a loader of ``IndexedImages``: iterates
    ((x1, x2), index) as a loader of ``TwoViewDataset``. The view parameters of an epoch come from
    ``view_generator(seed, epoch, rank)``, so a run resumed at an epoch makes the same views."""

    def __init__(self, loader, augment: DeviceViewAugment, device: torch.device, seed: int, rank: int = 0):
        self.loader, self.augment, self.device, self.seed, self.rank = loader, augment, device, seed, rank
        self.generator = view_generator(seed, 0, rank)

    @property
    def dataset(self):
        return self.loader.dataset

    @property
    def sampler(self):
        return self.loader.sampler

    def set_epoch(self, epoch: int) -> None:
        self.generator = view_generator(self.seed, epoch, self.rank)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        try:
            for images, index in self.loader:
                images = images.to(self.device, non_blocking=True)
                yield (self.augment(images, self.generator), self.augment(images, self.generator)), index
        except ConfigError as e:  # raised in a worker, it arrives with the worker's traceback: keep its last line
            if _SIZE_ERROR not in str(e):
                raise
            raise ConfigError(str(e).strip().splitlines()[-1].split('ConfigError: ', 1)[-1]) from None


@torch.no_grad()
def extract_features(fn: Callable[[torch.Tensor], torch.Tensor], loader, device: torch.device
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(features NxC, targets N) of ``fn`` over a loader of (images, targets), in loader order, on CPU."""
    feats, targets = [], []
    for x, y in loader:
        feats.append(fn(x.to(device)).float().cpu())
        targets.append(torch.as_tensor(y))
    return torch.cat(feats), torch.cat(targets)

