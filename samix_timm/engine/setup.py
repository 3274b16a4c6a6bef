""" Building blocks train.py wires together: device/AMP, data checks, datasets, loaders, losses, output.

Each function takes the parsed timm-style `args` and returns one object, so a test (or another
script) can build exactly the piece it needs. Bad input raises `ConfigError` with a one-line fix.
"""
import logging
import os
import shutil
import tarfile
from contextlib import contextmanager, nullcontext
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from timm.data import AugMixDataset, create_dataset, create_loader
from timm.data.readers.img_extensions import get_img_extensions
from timm.loss import create_classification_loss
from timm.models import safe_model_name
from timm.utils.misc import natural_key
from timm.utils import NativeScaler, get_outdir, init_distributed_device
from torch.utils.data import IterableDataset

from ..errors import RunInterrupted
from .args import ConfigError
from .seeding import SampleSeededDataset

_logger = logging.getLogger(__name__)


def local_device(name: Optional[str]) -> torch.device:
    """The device `--device name` asks for (None: CUDA when available, else CPU), refused in one line when this
    machine has no such device (every entry point: train, validate, train_ssl, probe)."""
    name = name or ('cuda' if torch.cuda.is_available() else 'cpu')
    if name.startswith('cuda') and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} requested but CUDA is not available: use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device '{name}' is not a device: use cuda, cuda:N or cpu") from None


def resolve_device(args) -> torch.device:
    """Set up the device and (under torchrun) the process group; CUDA when available, else CPU."""
    args.device = str(local_device(args.device))
    return init_distributed_device(args)


def create_amp(args, device: torch.device) -> Tuple[Callable, Optional[NativeScaler]]:
    """Autocast context factory and loss scaler (fp16 on CUDA only) for `--amp`/`--amp-dtype`."""
    if not args.amp:
        return nullcontext, None
    if args.amp_impl != 'native':
        raise ConfigError(f"--amp-impl {args.amp_impl} is not supported: use --amp-impl native")
    dtypes = {'float16': torch.float16, 'bfloat16': torch.bfloat16}
    if args.amp_dtype not in dtypes:
        raise ConfigError(f"--amp-dtype {args.amp_dtype} is not supported: use float16 or bfloat16")
    dtype = dtypes[args.amp_dtype]
    if device.type == 'cpu' and dtype == torch.float16:
        _logger.warning('float16 autocast is not supported well on CPU: using bfloat16')
        dtype = torch.bfloat16
    scaler = NativeScaler(device=device.type) if device.type == 'cuda' and dtype == torch.float16 else None
    return partial(torch.autocast, device_type=device.type, dtype=dtype), scaler


def check_data_dir(args) -> None:
    """Fail early with a fix when an ImageFolder dataset root is missing or holds no images."""
    if args.data and not args.data_dir:
        args.data_dir = args.data
    if args.dataset:  # torch/, hfds/, tfds/ ... datasets are checked by timm
        return
    hint = 'build the embedded one with `python -m samix_timm.data --out data/cluttered_mnist`'
    if not args.data_dir:
        raise ConfigError(f'no dataset given: pass --data-dir DIR (an ImageFolder with train/ and val/), or {hint}')
    root = Path(args.data_dir)
    if not root.exists():
        raise ConfigError(f"--data-dir '{root}' does not exist: check the path, or {hint}")
    if root.is_file():
        if tarfile.is_tarfile(root):
            return  # timm reads a tar of images (ImageTar)
        raise ConfigError(f"--data-dir '{root}' is a file, not a folder of images (nor a tar of them): pass the "
                          f"ImageFolder root with train/ and val/, or {hint}")
    extensions = set(get_img_extensions())
    for _, _, files in os.walk(root):
        if any(os.path.splitext(f)[1].lower() in extensions for f in files):
            warn_lossy_images(root, getattr(args, 'input_img_mode', None) or 'RGB')
            return
    raise ConfigError(f"--data-dir '{root}' contains no images ({', '.join(sorted(extensions))}): "
                      f"point it at an ImageFolder root with class sub-folders, or {hint}")


_WIDE_MODES = ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I', 'F')  # PIL modes of more than 8 bits a channel
_ALPHA_MODES = ('RGBA', 'LA', 'PA')


def warn_lossy_images(root: Path, img_mode: str = 'RGB', limit: int = 5000, decode: int = 16) -> List[str]:
    """Warn (once per kind, naming a file) of images that timm's `convert(img_mode)` reads wrongly: 16-bit and
    other wide images (`I;16` PNGs) are clipped at 255, so they train as two values; an image whose colour channels
    are flat and whose content is in alpha trains as a blank image (alpha is dropped). Reads the headers of up to
    `limit` images spread over the folder and decodes up to `decode` images with alpha; returns the warnings."""
    extensions = set(get_img_extensions())
    files = sorted(Path(d) / f for d, _, names in os.walk(root, followlinks=True) for f in names
                   if os.path.splitext(f)[1].lower() in extensions)
    step = max(1, -(-len(files) // limit))
    wide, alpha_only, decoded = [], [], 0
    for path in files[::step]:
        try:
            with Image.open(path) as img:
                mode = img.mode
                if mode in _WIDE_MODES and img_mode not in ('I', 'F'):
                    wide.append((path, mode))
                elif mode in _ALPHA_MODES and img_mode not in _ALPHA_MODES and decoded < decode:
                    decoded += 1
                    pixels = np.asarray(img.convert('RGBA' if mode == 'PA' else mode))
                    colour, a = pixels[..., :-1], pixels[..., -1]
                    if colour.min() == colour.max() and a.min() != a.max():
                        alpha_only.append((path, mode))
        except (OSError, ValueError):  # unreadable files are timm's "Skipped sample" (cli.guarded's error)
            continue
    notes = []
    if wide:
        path, mode = wide[0]
        notes.append(f"{len(wide)} of {len(files[::step])} images checked are wider than 8 bits, e.g. '{path}' (mode "
                     f"{mode}): timm's convert('{img_mode}') clips them at 255 (a 16-bit image becomes 0 and 255); "
                     f"convert them to 8-bit images first (e.g. numpy: (array >> 8).astype('uint8'))")
    if alpha_only:
        path, mode = alpha_only[0]
        notes.append(f"{len(alpha_only)} of {decoded} images with alpha checked have their content in the alpha "
                     f"channel only, e.g. '{path}' (mode "
                     f"{mode}, colour channels flat): timm's convert('{img_mode}') drops alpha, so they train as blank "
                     f"images; composite them onto a background first (e.g. PIL: Image.alpha_composite(Image.new("
                     f"'RGBA', img.size, 'white'), img.convert('RGBA')).convert('RGB'))")
    for note in notes:
        _logger.warning(note)
    return notes


SPLIT_SYNONYMS = (('train', 'training'), ('val', 'valid', 'validation', 'eval', 'evaluation'))  # timm's


def split_folder(root: Path, split: str, what: str, flag: str) -> Path:
    """The folder timm reads `split` from (its synonyms included); refuse when there is none, where timm
    would fall back to the dataset root and e.g. validate on the training images."""
    name = split.split('[')[0]
    candidates = list(dict.fromkeys([name, *next((s for s in SPLIT_SYNONYMS if name in s), ())]))
    for c in candidates:
        if (root / c).is_dir():
            return root / c
    raise ConfigError(f"--data-dir '{root}' has no {what} split (looked for {', '.join(c + '/' for c in candidates)}): "
                      f"add that folder, or name yours with {flag}")


def folder_classes(folder: Path, training: bool = False) -> Dict[str, int]:
    """timm's ImageFolder class index of a split: the names of its class folders, in timm's natural order
    (class2 before class10). A layout timm would label otherwise is refused in one line: images in a sub-folder of
    a class folder (timm labels them by the innermost folder) or in a hidden folder (Jupyter's
    .ipynb_checkpoints would be a class); in the training split (`training`) also a class folder without images
    (timm skips it and the classes after it move down a label)."""
    extensions = set(get_img_extensions())
    names = set()
    for dirpath, _, files in os.walk(folder, followlinks=True):
        parts = Path(dirpath).relative_to(folder).parts
        if not parts or not any(os.path.splitext(f)[1].lower() in extensions for f in files):
            continue
        hidden = next((p for p in parts if p.startswith('.')), None)
        if hidden is not None:
            raise ConfigError(f"{dirpath} holds images in the hidden folder {hidden} (e.g. Jupyter's checkpoints): "
                              f"timm would read it as a class of its own; remove it from {folder}")
        if len(parts) > 1:
            raise ConfigError(f"{dirpath} holds images in a sub-folder of the class folder {folder / parts[0]}: "
                              f"timm labels images by their innermost folder ('{parts[-1]}'), not by the class "
                              f"folder; keep each class's images directly in its folder")
        names.add(parts[0])
    if training:
        empty = sorted((d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith('.')
                        and d.name not in names), key=natural_key)
        if empty:
            later = sum(natural_key(n) > natural_key(empty[0]) for n in names)
            also = f" (also empty: {', '.join(empty[1:4])})" if len(empty) > 1 else ''
            raise ConfigError(f"class folder {folder / empty[0]} holds no images{also}: timm skips it, so the "
                              f"{later} classes after it move down a label; add its images or remove the folder")
    return {n: i for i, n in enumerate(sorted(names, key=natural_key))}


def eval_class_map(args) -> Any:
    """The class index the eval split is read with: the train split's, so a val/ that lacks a class keeps
    every label where training put it (timm would index val/'s own folders and shift them)."""
    if args.dataset or args.class_map or Path(args.data_dir).is_file():
        return args.class_map
    return shared_class_index(Path(args.data_dir), args.train_split, args.val_split)


def shared_class_index(root: Path, train_split: str, val_split: str) -> Dict[str, int]:
    """The training split's class index, which every split is read with (train.py, validate.py, the SSL kNN
    monitor and probes): a validation split that lacks a class keeps each label where training put it; one
    with a class the training split lacks is refused."""
    train_dir = split_folder(root, train_split, 'training', '--train-split')
    eval_dir = split_folder(root, val_split, 'validation', '--val-split')
    train_classes, eval_classes = folder_classes(train_dir, training=True), folder_classes(eval_dir)
    if len(train_classes) == 1:
        raise ConfigError(f"{train_dir} holds one class ({next(iter(train_classes))}): every prediction would be "
                          f"right (top-1 100%) and nothing learned or measured; add the other class folders")
    extra = sorted(set(eval_classes) - set(train_classes))
    if extra:
        raise ConfigError(f"{eval_dir} has classes that {train_dir} lacks ({', '.join(extra[:5])}): give both "
                          f"splits the same class folders")
    if len(eval_classes) < len(train_classes):
        _logger.warning(f'{eval_dir} holds {len(eval_classes)} of the {len(train_classes)} training classes: '
                        f'labels follow the training class index')
    return train_classes


def dataset_class_to_idx(dataset) -> Optional[Dict[str, int]]:
    """Class index of a timm ImageFolder-style dataset, None when it has none."""
    return getattr(getattr(dataset, 'reader', None), 'class_to_idx', None) or None


def dataset_num_classes(dataset) -> Optional[int]:
    """Number of classes of a timm ImageFolder-style dataset, None when it cannot tell."""
    class_to_idx = dataset_class_to_idx(dataset)
    return len(class_to_idx) if class_to_idx else None


def create_datasets(args):
    """timm train and eval datasets from `--data-dir`, `--dataset` and the split names."""
    check_data_dir(args)
    eval_map = eval_class_map(args)  # checks the class folders before timm reads a split
    common = dict(root=args.data_dir, class_map=args.class_map, download=args.dataset_download,
                  batch_size=args.batch_size, trust_remote_code=args.dataset_trust_remote_code)
    optional = dict(input_img_mode=args.input_img_mode, input_key=args.input_key, target_key=args.target_key)
    common.update((k, v) for k, v in optional.items() if v is not None)
    train = create_dataset(args.dataset, split=args.train_split, is_training=True, seed=args.seed,
                           repeats=args.epoch_repeats, num_samples=args.train_num_samples, **common)
    common['class_map'] = eval_map
    evals = create_dataset(args.dataset, split=args.val_split, is_training=False,
                           num_samples=args.val_num_samples, **common)
    return train, evals


def check_num_classes(num_classes: int, dataset, split: str) -> None:
    """Refuse a classifier with fewer outputs than the dataset has classes; warn of one with more."""
    found = dataset_num_classes(dataset)
    if found is not None and num_classes < found:
        raise ConfigError(f'--num-classes {num_classes} is smaller than the {found} classes in the '
                          f"'{split}' split: set --num-classes {found}")
    if found is not None and num_classes > found:
        _logger.warning(f"the model has {num_classes} outputs (--num-classes) and the '{split}' split {found} "
                        f"classes: {num_classes - found} outputs are never a target; set --num-classes {found} "
                        f"unless classes are missing from the data")


def create_loaders(args, dataset_train, dataset_eval, data_config: dict, device: torch.device):
    """timm train/eval loaders; mixing is not done here but after the loader (see engine.loop)."""
    if args.aug_splits > 1:
        dataset_train = AugMixDataset(dataset_train, num_splits=args.aug_splits)
    # outermost, so that every random draw of a sample happens under its own seed; timm's multi-epoch
    # loader prefetches across epochs (its workers would read the epoch late) and keeps its RNG streams
    seeded = not args.use_multi_epochs_loader and not isinstance(dataset_train, IterableDataset)
    if seeded:
        dataset_train = SampleSeededDataset(dataset_train, args.seed)
    interpolation = args.train_interpolation
    if args.no_aug or not interpolation:
        interpolation = data_config['interpolation']
    loader_train = create_loader(
        dataset_train, input_size=data_config['input_size'], batch_size=args.batch_size, is_training=True,
        no_aug=args.no_aug, re_prob=args.reprob, re_mode=args.remode, re_count=args.recount,
        re_split=args.resplit, train_crop_mode=args.train_crop_mode, scale=args.scale, ratio=args.ratio,
        hflip=args.hflip, vflip=args.vflip, color_jitter=args.color_jitter,
        color_jitter_prob=args.color_jitter_prob, grayscale_prob=args.grayscale_prob or 0.,
        gaussian_blur_prob=args.gaussian_blur_prob or 0., auto_augment=args.aa,
        num_aug_repeats=args.aug_repeats, num_aug_splits=max(args.aug_splits, 0),
        interpolation=interpolation, mean=data_config['mean'], std=data_config['std'],
        num_workers=args.workers, distributed=args.distributed, pin_memory=args.pin_mem, device=device,
        use_prefetcher=args.prefetcher, use_multi_epochs_loader=args.use_multi_epochs_loader,
        worker_seeding=args.worker_seeding,
        persistent_workers=seeded,  # per-sample seeds: live workers still reproduce on resume
    )
    loader_eval = create_loader(
        dataset_eval, input_size=data_config['input_size'],
        batch_size=args.validation_batch_size or args.batch_size, is_training=False,
        interpolation=data_config['interpolation'], mean=data_config['mean'], std=data_config['std'],
        num_workers=args.workers, distributed=args.distributed, crop_pct=data_config['crop_pct'],
        pin_memory=args.pin_mem, device=device, use_prefetcher=args.prefetcher,
    )
    if len(loader_train) == 0:
        per = f' x {args.world_size} processes' if args.world_size > 1 else ''
        raise ConfigError(f'--batch-size {args.batch_size}{per} is larger than the {len(dataset_train)} training '
                          f'images: no full batch, nothing would be trained; lower --batch-size')
    return loader_train, loader_eval


def create_train_loss(args, mixing: bool) -> nn.Module:
    """timm's loss factory (`timm.loss.create_classification_loss`) on train.py's loss flags: JSD, BCE or CE, soft
    targets when mixing (their label smoothing is already inside them)."""
    if args.jsd_loss and args.aug_splits < 2:
        raise ConfigError('--jsd-loss needs --aug-splits 2 or more')
    loss_type = 'jsd' if args.jsd_loss else 'bce' if args.bce_loss else 'ce'
    try:
        return create_classification_loss(
            loss_type, smoothing=args.smoothing, soft_targets=mixing, pos_weight=args.bce_pos_weight,
            bce_target_thresh=args.bce_target_thresh, bce_sum=args.bce_sum, jsd_splits=args.aug_splits)
    except ValueError as e:  # e.g. BCE options without --bce-loss
        raise ConfigError(f'{e} (loss {loss_type}: the --bce-* options need --bce-loss)') from None


def create_output_dir(args, data_config: dict) -> Path:
    """The run folder; an existing one is never reused: a numeric suffix is added instead."""
    name = args.experiment or '-'.join([
        datetime.now().strftime('%Y%m%d-%H%M%S'), safe_model_name(args.model), str(data_config['input_size'][-1])])
    root = args.output or './output/train'
    wanted = Path(root) / name
    existed = wanted.exists()
    out = Path(get_outdir(root, name, inc=True))
    if existed:
        _logger.warning(f'output folder {wanted} exists: writing to {out} instead (nothing is overwritten)')
    return out


@contextmanager
def run_folder(output_dir: Optional[Path], tb_writer=None) -> Iterator[None]:
    """The body of a run: the tensorboard writer is closed at the end, and a run that fails or is stopped
    (Ctrl-C) before its first checkpoint removes its folder, which then holds only its own logs, so a rerun gets
    the same name instead of a numbered suffix. Ctrl-C later keeps the folder, drops a checkpoint write it cut
    short (timm's `tmp.pth.tar`) and raises `RunInterrupted` with the checkpoint to resume from."""
    try:
        yield
    except (Exception, KeyboardInterrupt) as e:
        if tb_writer is not None:
            tb_writer.close()  # before the folder goes (close is idempotent)
        last = None
        if output_dir is not None and output_dir.is_dir():
            try:  # a folder that turned read-only keeps what it holds (the error says why)
                (output_dir / 'tmp.pth.tar').unlink(missing_ok=True)  # a save Ctrl-C cut short
                if not any(output_dir.glob('*.pth.tar')):
                    shutil.rmtree(output_dir)
                    _logger.info(f'Removed {output_dir}: the run stopped before writing a checkpoint')
            except OSError as cleanup:
                _logger.warning(f'could not tidy {output_dir} ({cleanup.strerror or cleanup}): remove it by hand')
            if (output_dir / 'last.pth.tar').is_file():
                last = output_dir / 'last.pth.tar'
        if isinstance(e, KeyboardInterrupt) and not isinstance(e, RunInterrupted):
            raise RunInterrupted(last) from None
        raise
    finally:
        if tb_writer is not None:
            tb_writer.close()
