""" MoCo v2's views (§6) made on the training device: ``--view-aug device``.

The loader only decodes images (``IndexedImages``: uint8, one size, collated by ``stack_images``);
``DeviceTwoViewLoader`` makes both views of the batch with ``DeviceViewAugment``, whose crops, colour
jitter, grayscale, blur and flips are drawn per sample from a CPU generator seeded by (seed, epoch,
rank) and applied as batched tensor ops. The same ``MoCoV2Views`` as the PIL path
(``data.moco_v2_transform``), without a worker's CPU (about 1.5 ms a view on the embedded benchmark's
CPU). Differences from it (docs/method.md §6): the crop is resampled bilinearly without antialiasing
(the same where crops are upsampled, as on the embedded data; a shrinking crop aliases) and its border
row and column read the pixel beyond the box; every op works in float instead of uint8.
"""
import math
from typing import Iterator, List, Tuple

import torch
import torch.nn.functional as F
from timm.data.random_erasing import RandomErasing
from torch.utils.data import Dataset
from torchvision import transforms as T

from ..engine.seeding import sample_seed
from ..errors import ConfigError
from .data import MoCoV2Views

__all__ = ['DeviceViewAugment', 'view_generator', 'IndexedImages', 'stack_images', 'DeviceTwoViewLoader']

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert('L') and torchvision's rgb_to_grayscale


def _gray(x: torch.Tensor) -> torch.Tensor:
    """Luma of an NCHW RGB batch in [0, 1], as N1HW."""
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor.view(-1, 1, 1, 1) * x + (1 - factor.view(-1, 1, 1, 1)) * other).clamp_(0, 1)


def _brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * f.view(-1, 1, 1, 1)).clamp_(0, 1)


def _contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True), f)


def _saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, _gray(x), f)


def _hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``f`` turns (per sample) in HSV space."""
    maxc, argmax = x.max(dim=1)
    minc = x.min(dim=1).values
    chroma = maxc - minc
    sat = chroma / maxc.clamp_min(1e-12)
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    r, g, b = x.unbind(1)
    h = torch.where(argmax == 0, (g - b) / safe, torch.where(argmax == 1, 2 + (b - r) / safe, 4 + (r - g) / safe))
    h = torch.where(chroma > 0, h / 6, torch.zeros_like(h))
    h = (h + f.view(-1, 1, 1)) % 1.
    # hsv -> rgb: channel n takes v - v s clamp(min(k, 4 - k), 0, 1) with k = (n + 6h) mod 6
    vs, out = maxc * sat, []
    for n in (5, 3, 1):
        k = (n + 6 * h) % 6
        out.append(maxc - vs * torch.minimum(k, 4 - k).clamp_(0, 1))
    return torch.stack(out, dim=1)


_JITTER_OPS = (_brightness, _contrast, _saturation, _hue)


def _blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Gaussian blur with one σ per sample (separable, reflect padding as torchvision)."""
    n, c, h, w = x.shape
    t = torch.arange(kernel_size, dtype=x.dtype, device=x.device) - (kernel_size - 1) / 2
    k = torch.exp(-0.5 * (t / sigma.view(-1, 1)) ** 2)
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (n c) x K
    pad = kernel_size // 2
    y = F.pad(x.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode='reflect')
    y = F.conv2d(y, k.view(n * c, 1, 1, kernel_size), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, kernel_size, 1), groups=n * c)
    return y.view(n, c, h, w)


class DeviceViewAugment:
    """``MoCoV2Views`` applied to a uint8 NCHW batch on any device, parameters drawn per sample."""

    def __init__(self, views: MoCoV2Views):
        self.v = views
        self.mean, self.std = torch.tensor(views.mean).view(1, 3, 1, 1), torch.tensor(views.std).view(1, 3, 1, 1)
        self.ratio = (3 / 4, 4 / 3)

    def _crop_boxes(self, n: int, height: int, width: int, gen: torch.Generator) -> torch.Tensor:
        """RandomResizedCrop boxes (top, left, h, w) per sample, torchvision's rule: up to 10 draws of
        area and log-ratio, the first that fits, else the whole image clamped to the ratio range."""
        tries = 10
        area = height * width * torch.empty(n, tries).uniform_(*self.v.scale, generator=gen)
        log_r = torch.empty(n, tries).uniform_(math.log(self.ratio[0]), math.log(self.ratio[1]), generator=gen)
        w = torch.sqrt(area * log_r.exp()).round()
        h = torch.sqrt(area / log_r.exp()).round()
        fits = (w > 0) & (h > 0) & (w <= width) & (h <= height)
        first = fits.float().argmax(dim=1, keepdim=True)
        w, h, found = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0], fits.any(dim=1)
        fw, fh = float(width), float(height)  # fallback: centre, ratio clamped (torchvision)
        if width / height < self.ratio[0]:
            fh = round(width / self.ratio[0])
        elif width / height > self.ratio[1]:
            fw = round(height * self.ratio[1])
        w, h = torch.where(found, w, torch.full_like(w, fw)), torch.where(found, h, torch.full_like(h, fh))
        u = torch.rand(n, 2, generator=gen)
        top = torch.where(found, (u[:, 0] * (height - h + 1)).floor(), ((height - h) / 2).floor())
        left = torch.where(found, (u[:, 1] * (width - w + 1)).floor(), ((width - w) / 2).floor())
        return torch.stack([top, left, h, w], dim=1)

    def _apply_to(self, x: torch.Tensor, take: torch.Tensor, op, *params: torch.Tensor) -> torch.Tensor:
        """``x`` with ``op`` applied to the samples where the CPU mask ``take`` is set (indices go to the
        device without a read-back)."""
        idx = take.nonzero().squeeze(1)
        if idx.numel() == 0:
            return x
        dev_idx = idx.to(x.device, non_blocking=True)
        params = [p[idx].to(x.device, non_blocking=True) for p in params]
        return x.index_copy_(0, dev_idx, op(x.index_select(0, dev_idx), *params))

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """One augmented view (float NCHW, normalised) of each image of the uint8 batch ``images``."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ConfigError(f'--view-aug device expects uint8 RGB batches (N, 3, H, W), got '
                              f'{images.dtype} {tuple(images.shape)}')
        n, _, height, width = images.shape
        boxes = self._crop_boxes(n, height, width, gen)
        flip = torch.rand(n, generator=gen) < self.v.hflip
        top, left, h, w = boxes.unbind(1)
        # sampling grid of each crop (align_corners=False coordinates; a flip mirrors the crop, as flipping after it)
        sx = torch.where(flip, -w / width, w / width)
        affine = torch.stack([sx, (2 * left + w) / width - 1, h / height, (2 * top + h) / height - 1], dim=1)
        affine = affine.to(images.device, non_blocking=True).view(n, 4, 1, 1)
        size = self.v.img_size
        u = (torch.arange(size, device=images.device) * 2 + 1) / size - 1  # output pixel centres in [-1, 1]
        grid = torch.stack([(affine[:, 0] * u.view(1, 1, -1) + affine[:, 1]).expand(n, size, size),
                            (affine[:, 2] * u.view(1, -1, 1) + affine[:, 3]).expand(n, size, size)], dim=-1)
        x = images.float().div_(255)
        x = F.grid_sample(x, grid, mode='bilinear', padding_mode='border', align_corners=False)

        cj = self.v.color_jitter
        jitter = torch.rand(n, generator=gen) < self.v.color_jitter_prob
        factors = torch.empty(n, 4)
        factors[:, :3].uniform_(max(0., 1 - cj), 1 + cj, generator=gen)
        factors[:, 3].uniform_(-cj / 4, cj / 4, generator=gen)
        order = torch.rand(n, 4, generator=gen).argsort(dim=1)  # ColorJitter's random order, per sample
        if cj > 0:
            for position in range(4):
                for op_index, op in enumerate(_JITTER_OPS):
                    x = self._apply_to(x, jitter & (order[:, position] == op_index), op, factors[:, op_index])
        x = self._apply_to(x, torch.rand(n, generator=gen) < self.v.grayscale_prob, lambda v: _gray(v).expand_as(v))
        sigma = torch.empty(n).uniform_(0.1, 2.0, generator=gen)
        x = self._apply_to(x, torch.rand(n, generator=gen) < self.v.blur_prob,
                           lambda v, s: _blur(v, s, self.v.blur_kernel), sigma)
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        if self.v.reprob > 0:  # timm's, on the batch (python `random`, reseeded every epoch by the engine)
            x = RandomErasing(self.v.reprob, mode='const', max_count=self.v.recount, device=x.device)(x)
        return x


def view_generator(seed: int, epoch: int, rank: int = 0) -> torch.Generator:
    """CPU generator of one epoch's view parameters on one rank: a run resumed at an epoch draws them again.
    (Index -2 - rank of ``sample_seed``: -1 is the loader's epoch seed, samples are >= 0.)"""
    return torch.Generator().manual_seed(sample_seed(seed, epoch, -2 - rank))


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
