""" Registry of published SAMix^P Mixers: name -> file or URL, sha256, and how it was made (§7). """
import difflib
import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from .errors import ConfigError
from .pretrained import SAMixPretrained, load_artifact

_logger = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).parent / 'weights'


@dataclass(frozen=True)
class MixerEntry:
    """One published Mixer.

    Args:
        name: hub name (also the hubconf entrypoint).
        doc: what `torch.hub.help` shows: data, extractor, resolution, how it was made.
        file: file name inside `samix_timm/weights/` for Mixers shipped with the package.
        url: download URL for hosted Mixers (file name carries the sha256 prefix, torch.hub style).
        sha256: full sha256 of the file.
        recipe: command that trains and exports it, for entries not published yet.
        mask_area: `SAMixPretrained`'s mask_area for this entry (None: the Mixer's own); a caller's keyword wins.
    """
    name: str
    doc: str
    file: Optional[str] = None
    url: Optional[str] = None
    sha256: Optional[str] = None
    recipe: Optional[str] = None
    mask_area: Optional[str] = None


_ENTRIES: Dict[str, MixerEntry] = {}


def register(entry: MixerEntry) -> MixerEntry:
    _ENTRIES[entry.name] = entry
    return entry


def list_pretrained() -> List[str]:
    """Names of all registered Mixers (published or not)."""
    return sorted(_ENTRIES)


def _did_you_mean(name: str, choices: List[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f' (did you mean {close[0]}?)' if close else ''


def get_entry(name: str) -> MixerEntry:
    if name not in _ENTRIES:
        raise ConfigError(f"no pre-trained Mixer named '{name}'{_did_you_mean(name, list_pretrained())}: choose one "
                          f"of {', '.join(list_pretrained())} or pass a path to an artifact")
    return _ENTRIES[name]


def load_pretrained_artifact(name_or_path: str) -> Dict[str, Any]:
    """Artifact dict of a hub name or a local artifact path, sha256-checked."""
    if name_or_path not in _ENTRIES:
        if not Path(name_or_path).is_file():
            raise ConfigError(f"pre-trained Mixer '{name_or_path}' is neither a hub name nor a file"
                              f"{_did_you_mean(name_or_path, list_pretrained())}: pass one of "
                              f"{', '.join(list_pretrained())} or the path of a file written by "
                              f"`python -m samix_timm.export`")
        return load_artifact(name_or_path)
    entry = get_entry(name_or_path)
    if entry.file:
        return load_artifact(WEIGHTS_DIR / entry.file, sha256=entry.sha256)
    if entry.url:
        path = Path(torch.hub.get_dir()) / 'checkpoints' / entry.url.rsplit('/', 1)[-1]
        if not path.exists():
            torch.hub.download_url_to_file(entry.url, str(path), hash_prefix=entry.sha256)
        return load_artifact(path, sha256=entry.sha256)
    raise ConfigError(f"the Mixer '{entry.name}' is registered but its weights are not published yet: "
                      f"produce it yourself with: {entry.recipe}")


register(MixerEntry(
    name='samix_r18_cluttered_mnist',
    doc='SAMix Mixer trained online on the embedded cluttered-MNIST dataset (4,000 images, 32 px) with a '
        'resnet18 classifier; extractor = its momentum encoder up to layer1 (64x8x8 at 32 px), stored in '
        'float16 (0.37 MB). Made by: python -m samix_timm.data --out data/cluttered_mnist; python train.py '
        '--config configs/embedded_resnet18_samix.yaml --data-dir data/cluttered_mnist (seed 42, 30 epochs, '
        '1,200 Mixer steps; commit bdd6132, classifier 82.1 % top-1), then python -m samix_timm.export '
        '--checkpoint <run>/last.pth.tar --out samix_r18_cluttered_mnist. Measured with bench/mixer_lam.py on the '
        'first 100 validation images, the extractor on batch statistics as in its run: mean mask 0.70 / 0.52 / 0.27 '
        'for lam 0.3 / 0.5 / 0.7 (ideal 0.7 / 0.5 / 0.3), per-image std 0.43-0.48 (near-binary spatial masks); the '
        'run itself measured 0.69 / 0.52 / 0.28 on those images. Shipped inside the package (works offline).',
    file='samix_r18_cluttered_mnist-72a80135.pth',
    sha256='72a801352442ab5e780514058957e87b095a239f702af5f4e2cf2b75e8bd89cd',
))
register(MixerEntry(
    name='samix_r18_cluttered_mnist_lam',
    doc='The Mixer of samix_r18_cluttered_mnist (same file, same weights) with its mask area fitted to lam at mix '
        'time (mask_area=\'lam\': a per-image logit offset, method §2.6), so that each mask keeps exactly the '
        'share of the partner its soft label gives it on any data; the learnt Mixer keeps its own area, which '
        'follows lam on the digits it was trained on but not on other data (docs/benchmarks.md#photographs). '
        'Shipped inside the package (works offline).',
    file='samix_r18_cluttered_mnist-72a80135.pth',
    sha256='72a801352442ab5e780514058957e87b095a239f702af5f4e2cf2b75e8bd89cd',
    mask_area='lam',
))
register(MixerEntry(
    name='samix_test_resnet_photo_objects',
    doc='SAMix Mixer trained online on the photo objects (Tux Paint stamps over natural photographs, 10 categories, '
        '2,000 images of the held-out-objects build, 32 px) with the default SAMix (stable Mixer, area = lam by '
        'construction, method 2.6) and a timm test_resnet classifier; extractor = its momentum encoder up to '
        'stage 1 (32x8x8 at 32 px), float16 (0.08 MB). Made by: python -m samix_timm.data --photos --out '
        'data/photo_objects_stamp_test --num-train 2000 --num-val 1000 --split stamp --num-test 10000; python '
        'bench/accuracy.py --recipe configs/photo_bench.yaml --rows photo_runs.jsonl --prefix photo --data-dir '
        'data/photo_objects_stamp_test --methods samix_x2 --seeds 100 (120 epochs, 4,800 steps, commit 850740b; '
        'classifier 25.8 % top-1 on the 10,000 test images), then python -m samix_timm.export. Each mask keeps '
        'exactly 1 - lam of the partner on any data; object retention on the held-out objects: '
        'docs/benchmarks.md#photographs. Shipped inside the package (works offline).',
    file='samix_test_resnet_photo_objects-d693178c.pth',
    sha256='d693178cda506d6c228b2f37c3549dd610d3b40000ef63c0dc8a7d483dcac119',
))
register(MixerEntry(
    name='samix_r18_in1k',
    doc='SAMix Mixer on ImageNet-1k, resnet18 extractor at 224 px, supervised online SAMix (paper §7). '
        'Weights not yet published.',
    recipe='torchrun --nproc_per_node 4 train.py --config configs/in1k/pt100_resnet18_samix.yaml '
           '--data-dir /path/to/imagenet, then python -m samix_timm.export --checkpoint <run>/last.pth.tar '
           '--out samix_r18_in1k',
))
register(MixerEntry(
    name='samix_r50_in1k_ssl',
    doc='SAMix-C Mixer from self-supervised MoCo v2 pre-training on ImageNet-1k, resnet50 extractor at 224 px '
        '(paper §6-§7). Weights not yet published.',
    recipe='torchrun --nproc_per_node 8 train_ssl.py --config configs/ssl/in1k_resnet50_samix_c.yaml '
           '--data-dir /path/to/imagenet --batch-size 32, then python -m samix_timm.export --checkpoint '
           '<run>/last.pth.tar --out samix_r50_in1k_ssl',
))


# keyword arguments of SAMixPretrained after the artifact
MIXER_KWARGS = tuple(inspect.signature(SAMixPretrained).parameters)[1:]


def create_pretrained_mixer(name_or_path: str, num_classes: int = 1000, **kwargs) -> SAMixPretrained:
    """`SAMixPretrained` from a hub name or artifact path; kwargs go to `SAMixPretrained`, which needs the
    batch normalisation: `data_config` (timm's) or `input_mean`/`input_std`."""
    unknown = [k for k in kwargs if k not in MIXER_KWARGS]
    if unknown:
        raise ConfigError(f"unknown argument '{unknown[0]}'{_did_you_mean(unknown[0], list(MIXER_KWARGS))} for the "
                          f"pre-trained Mixer '{name_or_path}': it takes {', '.join(MIXER_KWARGS)}")
    if name_or_path in _ENTRIES and _ENTRIES[name_or_path].mask_area is not None:
        kwargs.setdefault('mask_area', _ENTRIES[name_or_path].mask_area)
    return SAMixPretrained(load_pretrained_artifact(name_or_path), num_classes=num_classes, **kwargs)


def hub_entrypoint(name: str):
    """A torch.hub entrypoint `name(pretrained=True, **kwargs) -> SAMixPretrained` documented by its entry."""
    entry = get_entry(name)

    def entrypoint(pretrained: bool = True, **kwargs) -> SAMixPretrained:
        if not pretrained:
            raise ConfigError(f"'{name}' is a pre-trained Mixer: pretrained=False has nothing to build; "
                              f"train your own with `train.py --mixup samix` instead")
        return create_pretrained_mixer(name, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = (f'{entry.doc}\n\n    Args:\n        pretrained: must be True.\n'
                          f'        **kwargs: SAMixPretrained arguments ({", ".join(MIXER_KWARGS)}); data_config '
                          f'(the timm data config of your loader) or input_mean and input_std are required: the '
                          f'Mixer renormalises the batches to its own normalisation.')
    return entrypoint
