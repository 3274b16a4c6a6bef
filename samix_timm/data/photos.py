""" Photo objects: photographed objects pasted onto natural photographs, an ImageFolder built offline.

Object photographs with alpha masks come from Tux Paint's stamps (Debian `tuxpaint-stamps-default`,
cartoon drawings and symbols left out), backgrounds are random crops of natural photographs (Debian
`tuxpaint-data`'s templates, or any folder given as `backgrounds`). Each image holds one object of its
class at random scale, position, flip, small rotation and brightness, over a smaller object of another
class as clutter. Unlike the embedded digits (bright strokes on black, where a Mixup blend keeps both
objects whole), a blend here overlays two textured backgrounds and two half-contrast objects, so where
a mix cuts can matter. Each image's object mask is saved under `masks/` (255 = the labelled object,
128 = the clutter object where visible), outside the class folders that timm reads.
"""
import hashlib
import json
import logging
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .embedded import EmbeddedDataError

_logger = logging.getLogger(__name__)

MANIFEST = 'samix_photos.json'
STAMPS_DIR = '/usr/share/tuxpaint/stamps'
BACKGROUNDS_DIR = '/usr/share/tuxpaint/templates'
STAMPS_PACKAGE = 'sudo apt-get install tuxpaint-stamps-default'
BACKGROUNDS_PACKAGE = 'sudo apt-get install tuxpaint-data'
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.webp')
# class -> stamp folders (relative to the stamps root, searched recursively); photographs of things only
CLASSES: Dict[str, Tuple[str, ...]] = {
    'birds': ('animals/birds',),
    'fish': ('animals/fish', 'animals/shellfish'),
    'flowers': ('plants/flowers',),
    'fruit': ('food/fruit', 'food/nuts'),
    'insects': ('animals/insects',),
    'mammals': ('animals/mammals', 'animals/marsupials'),
    'music': ('hobbies/music',),
    'tools': ('household/tools', 'household/arttools'),
    'vegetables': ('food/vegetables',),
    'vehicles': ('vehicles', 'military/vehicles'),
}
LEFT_OUT = ('cartoon',)  # folder names whose stamps are drawings, not photographs
MIN_STAMPS = 2  # per class: one for training, one held out (split 'stamp')
STAMP_SIDE = 160  # stamps are shrunk once to this longest side (renders are at most a few hundred pixels)


@dataclass(frozen=True)
class PhotoObjectsConfig:
    """What defines one build (written to the manifest).

    Args:
        seed: seed of the split, the stamps chosen, the placements and the backgrounds.
        canvas: side of the square RGB image in pixels.
        num_train: training images (split evenly over the classes).
        num_val: validation images (split evenly over the classes).
        num_test: images of a `test` split drawn like the validation images (same stamps) after them, so the
            train and val images do not change; a large test split evaluated once at the end measures a run with
            less noise than the per-epoch val split (0 = none, and the manifest is that of a build without it).
        split: 'render' = train and val show the same stamps in other renders; 'stamp' = each class's stamps
            are split, val shows only stamps never seen in training (harder: a category from few instances).
        val_stamp_frac: share of each class's stamps held out for val when split is 'stamp'.
        object_scale_min, object_scale_max: longest side of the object as a share of the canvas.
        clutter_scale_min, clutter_scale_max: the same for the clutter object (another class).
        max_rotation: largest rotation of an object in degrees (either way).
        brightness: objects' brightness factor is drawn from [1 - brightness, 1 + brightness].
    """
    seed: int = 0
    canvas: int = 64
    num_train: int = 2000
    num_val: int = 1000
    num_test: int = 0
    split: str = 'render'
    val_stamp_frac: float = 0.3
    object_scale_min: float = 0.5
    object_scale_max: float = 0.85
    clutter_scale_min: float = 0.25
    clutter_scale_max: float = 0.4
    max_rotation: float = 15.0
    brightness: float = 0.25

    def check(self) -> None:
        if self.split not in ('render', 'stamp'):
            raise EmbeddedDataError(f"split must be 'render' or 'stamp', got {self.split!r}")
        if self.canvas < 8 or self.num_train < 1 or self.num_val < 1 or self.num_test < 0:
            raise EmbeddedDataError('canvas must be >= 8, num_train and num_val >= 1 and num_test >= 0')
        if not 0 < self.val_stamp_frac < 1:
            raise EmbeddedDataError(f'val_stamp_frac must be in (0, 1), got {self.val_stamp_frac}')
        for lo, hi, name in ((self.object_scale_min, self.object_scale_max, 'object_scale'),
                             (self.clutter_scale_min, self.clutter_scale_max, 'clutter_scale')):
            if not 0 < lo <= hi <= 1:
                raise EmbeddedDataError(f'{name}_min/_max must satisfy 0 < min <= max <= 1, got {lo}, {hi}')
        if not 0 <= self.brightness < 1 or not 0 <= self.max_rotation <= 180:
            raise EmbeddedDataError('brightness must be in [0, 1) and max_rotation in [0, 180]')


def _images_under(folder: Path) -> List[Path]:
    return sorted(p for p in folder.rglob('*') if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def find_stamps(stamps_dir: str | Path, classes: Dict[str, Sequence[str]] = CLASSES) -> Dict[str, List[Path]]:
    """class -> its stamp files (RGBA images; drawings in `cartoon` folders left out)."""
    root = Path(stamps_dir)
    fix = (f'{STAMPS_PACKAGE} (or pass --stamps DIR)' if root == Path(STAMPS_DIR) else
           'pass --stamps a folder of RGBA stamps in the category folders of Tux Paint\'s')
    if not root.is_dir():
        raise EmbeddedDataError(f'no stamps at {root}: {fix}')
    found = {}
    for name, folders in classes.items():
        files = [p for f in folders for p in _images_under(root / f)
                 if not any(part in LEFT_OUT for part in p.relative_to(root).parts)]
        if len(files) < MIN_STAMPS:
            raise EmbeddedDataError(f'class {name} has {len(files)} stamps under {root} ({", ".join(folders)}), '
                                    f'fewer than {MIN_STAMPS}: {fix}')
        found[name] = files
    return found


def find_backgrounds(backgrounds_dir: str | Path) -> List[Path]:
    """The background photographs of a folder (any image files)."""
    root = Path(backgrounds_dir)
    files = _images_under(root) if root.is_dir() else []
    if not files:
        fix = (f'{BACKGROUNDS_PACKAGE} (or pass --backgrounds DIR, a folder of photographs)'
               if root == Path(BACKGROUNDS_DIR) else
               f'pass --backgrounds a folder of photographs ({", ".join(sorted(IMAGE_SUFFIXES))})')
        raise EmbeddedDataError(f'no background photographs at {root}: {fix}')
    return files


def _object_key(path: Path) -> str:
    """Stamps that show one object (a `_mirror` copy, a `-1` variant) share a key, so a split never puts one
    object on both sides."""
    stem = re.sub(r'[-_]mirror$', '', path.stem.lower())
    return str(path.parent / re.sub(r'-\d+$', '', stem))


def split_stamps(stamps: Dict[str, List[Path]], cfg: PhotoObjectsConfig,
                 rng: np.random.Generator) -> Tuple[Dict[str, List[Path]], Dict[str, List[Path]]]:
    """(train stamps, val stamps) per class: the same lists (split 'render'), or disjoint objects ('stamp')."""
    if cfg.split == 'render':
        return stamps, stamps
    train, val = {}, {}
    for name, files in stamps.items():
        keys = sorted({_object_key(p) for p in files})
        if len(keys) < 2:
            raise EmbeddedDataError(f"class {name} shows {len(keys)} distinct object(s): split 'stamp' needs 2, "
                                    f"use split 'render'")
        keys = [keys[i] for i in rng.permutation(len(keys))]
        n_val = min(len(keys) - 1, max(1, round(cfg.val_stamp_frac * len(keys))))
        held = set(keys[:n_val])
        val[name] = [p for p in files if _object_key(p) in held]
        train[name] = [p for p in files if _object_key(p) not in held]
    return train, val


def _load_stamp(path: Path):
    """RGBA stamp cropped to its alpha and shrunk to STAMP_SIDE; None when it has no visible pixels."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert('RGBA')
    box = im.getchannel('A').point(lambda a: 255 if a > 16 else 0).getbbox()
    if box is None:
        return None
    im = im.crop(box)
    im.thumbnail((STAMP_SIDE, STAMP_SIDE), Image.LANCZOS)
    return im


def _load_background(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert('RGB')


def _background(photo, canvas: int, rng: np.random.Generator):
    """A random square crop (30-100 % of the shorter side), maybe flipped, resized to canvas x canvas."""
    from PIL import Image

    w, h = photo.size
    side = int(min(w, h) * rng.uniform(0.3, 1.0))
    x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    crop = photo.crop((x, y, x + side, y + side)).resize((canvas, canvas), Image.BILINEAR)
    return crop.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop


def _place(stamp, canvas: int, scale: Tuple[float, float], cfg: PhotoObjectsConfig, rng: np.random.Generator):
    """(RGBA object image, top-left x, y): flipped, rotated, brightened and scaled so that its longest side is a
    share of the canvas in `scale`, placed with its centre inside the canvas' middle part."""
    from PIL import Image, ImageEnhance

    im = stamp.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else stamp
    angle = float(rng.uniform(-cfg.max_rotation, cfg.max_rotation))
    if angle:
        im = im.rotate(angle, resample=Image.BILINEAR, expand=True)
    side = max(2, int(round(canvas * rng.uniform(*scale))))
    ratio = side / max(im.size)
    im = im.resize((max(1, round(im.width * ratio)), max(1, round(im.height * ratio))), Image.LANCZOS)
    factor = float(rng.uniform(1 - cfg.brightness, 1 + cfg.brightness))
    rgb = ImageEnhance.Brightness(im.convert('RGB')).enhance(factor)
    rgb.putalpha(im.getchannel('A'))
    # the centre anywhere in the middle 60 % of the canvas: most of the object stays inside
    cx, cy = rng.uniform(0.2 * canvas, 0.8 * canvas, size=2)
    return rgb, int(round(cx - rgb.width / 2)), int(round(cy - rgb.height / 2))


def render_photo(stamp, clutter, photo, cfg: PhotoObjectsConfig, rng: np.random.Generator):
    """One image (RGB PIL image) and its mask (uint8 HxW: 255 the object, 128 the visible clutter, 0 neither)."""
    from PIL import Image

    image = _background(photo, cfg.canvas, rng)
    mask = np.zeros((cfg.canvas, cfg.canvas), dtype=np.uint8)
    for obj, scale, value in ((clutter, (cfg.clutter_scale_min, cfg.clutter_scale_max), 128),
                              (stamp, (cfg.object_scale_min, cfg.object_scale_max), 255)):
        placed, x, y = _place(obj, cfg.canvas, scale, cfg, rng)
        image.paste(placed, (x, y), placed)
        alpha = Image.new('L', image.size, 0)
        alpha.paste(placed.getchannel('A'), (x, y))
        mask[np.asarray(alpha) > 127] = value  # the object covers the clutter it overlaps
    return image, mask


def _manifest(cfg: PhotoObjectsConfig, stamps_dir: Path, backgrounds: List[Path]) -> Dict:
    config = asdict(cfg)
    if not cfg.num_test:  # a build without a test split keeps the manifest (and build id) it had before num_test
        del config['num_test']
    return dict(config=config, stamps_dir=str(stamps_dir), backgrounds=[p.name for p in backgrounds])


def build_id(root: str | Path) -> str:
    """A short name of one build: its folder's manifest hashed (the `data` field of benchmark rows)."""
    text = (Path(root) / MANIFEST).read_text()
    return 'photo_objects:' + hashlib.sha1(text.encode()).hexdigest()[:10]


def build_photo_objects(root: str | Path, cfg: PhotoObjectsConfig = PhotoObjectsConfig(),
                        stamps_dir: str | Path = STAMPS_DIR, backgrounds_dir: str | Path = BACKGROUNDS_DIR,
                        classes: Dict[str, Sequence[str]] = CLASSES) -> Path:
    """Write the photo-objects ImageFolder (`train/`, `val/`, `test/` if asked, `masks/`, the manifest) under `root`, return it.

    An existing build of the same config and sources is reused; a folder holding anything else is never
    overwritten (choose another `root` or delete it yourself).
    """
    from PIL import Image

    cfg.check()
    if min(cfg.num_train, cfg.num_val, cfg.num_test or len(classes)) < len(classes):  # each class: num // classes
        test = f', num_test={cfg.num_test}' if cfg.num_test else ''
        raise EmbeddedDataError(f'num_train={cfg.num_train}, num_val={cfg.num_val}{test}: each must be at least the '
                                f'{len(classes)} classes (the images are split evenly over them)')
    root, stamps_dir = Path(root), Path(stamps_dir)
    backgrounds = find_backgrounds(backgrounds_dir)
    stamp_files = find_stamps(stamps_dir, classes)
    stamp_files = {c: sorted(files, key=lambda p: str(p.relative_to(stamps_dir))) for c, files in stamp_files.items()}
    manifest = _manifest(cfg, stamps_dir, backgrounds)
    manifest['stamps'] = {c: [str(p.relative_to(stamps_dir)) for p in files] for c, files in stamp_files.items()}
    path = root / MANIFEST
    if path.is_file():
        old = json.loads(path.read_text())
        if {k: old.get(k) for k in manifest} == manifest:
            _logger.info(f'Photo objects already built at {root}')
            return root
    if root.exists() and any(root.iterdir()):
        raise EmbeddedDataError(f'{root} exists and does not hold a build with this config: remove it or pass '
                                f'another --out')

    rng = np.random.default_rng(cfg.seed)
    train_stamps, val_stamps = split_stamps(stamp_files, cfg, rng)
    loaded = {p: _load_stamp(p) for files in stamp_files.values() for p in files}
    photos = [_load_background(p) for p in backgrounds]
    names = sorted(classes)
    tmp = root.with_name(root.name + '.partial')
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {}
    splits = [('train', train_stamps, cfg.num_train), ('val', val_stamps, cfg.num_val)]
    splits += [('test', val_stamps, cfg.num_test)] if cfg.num_test else []
    for split, per_class, total in splits:
        usable = {c: [p for p in per_class[c] if loaded[p] is not None] for c in names}
        empty = [c for c in names if not usable[c]]
        if empty:
            raise EmbeddedDataError(f'no visible stamp for class(es) {", ".join(empty)} in {split}: check --stamps')
        each = total // len(names)
        for c in names:
            (tmp / split / c).mkdir(parents=True, exist_ok=True)
            (tmp / 'masks' / split / c).mkdir(parents=True, exist_ok=True)
        for n in range(each * len(names)):
            c = names[n % len(names)]
            other = names[(n % len(names) + 1 + int(rng.integers(len(names) - 1))) % len(names)]
            stamp = loaded[usable[c][int(rng.integers(len(usable[c])))]]
            clutter = loaded[usable[other][int(rng.integers(len(usable[other])))]]
            image, mask = render_photo(stamp, clutter, photos[int(rng.integers(len(photos)))], cfg, rng)
            image.save(tmp / split / c / f'{n:05d}.png')
            Image.fromarray(mask, mode='L').save(tmp / 'masks' / split / c / f'{n:05d}.png')
        counts[split] = each * len(names)
    manifest.update(counts=counts, split_stamps={
        s: {c: [str(p.relative_to(stamps_dir)) for p in v[c]] for c in names}
        for s, v in (('train', train_stamps), ('val', val_stamps))})
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    root.parent.mkdir(parents=True, exist_ok=True)
    if root.exists():
        root.rmdir()  # empty, checked above
    tmp.rename(root)
    test = f' / {counts["test"]} test' if 'test' in counts else ''
    _logger.info(f'Built photo objects at {root}: {counts["train"]} train / {counts["val"]} val{test}, {len(names)} '
                 f'classes, split {cfg.split}')
    return root


def object_mask_path(root: str | Path, image_path: str | Path) -> Path:
    """The mask file of an image of a build (masks/<split>/<class>/<name>.png)."""
    rel = Path(image_path).resolve().relative_to(Path(root).resolve())
    return Path(root) / 'masks' / rel
