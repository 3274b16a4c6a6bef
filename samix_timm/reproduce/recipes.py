""" The recipe families of configs/ and how config files are found and read (names `<recipe>_<model>_<method>`). """
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import yaml

REPO = Path(__file__).resolve().parents[2]
IMAGENET_TRAIN = 1_281_167


@dataclass(frozen=True)
class Recipe:
    """A recipe family of configs/ (the first `_`-separated part of a config name).

    Args:
        gpus: GPUs of the reference run; global batch = gpus x the YAML's batch_size.
        train_images: training images per epoch (cost estimates).
        data: placeholder of the dataset root in the commands.
        metric: 'median' (of the last `last` epochs) or 'best'.
        last: epochs the median is taken over.
        test_img_size: evaluation size when it differs from training (RSB A3: 160 train, 224 test).
        extra: train.py arguments a full run needs besides the YAML (fine-tuning weights).
    """
    gpus: int
    train_images: int
    data: str
    metric: str = 'median'
    last: int = 10
    test_img_size: Optional[int] = None
    extra: Tuple[str, ...] = ()


RECIPES: Dict[str, Recipe] = {
    'pt100': Recipe(4, IMAGENET_TRAIN, '$IMAGENET', last=5),
    'pt300': Recipe(4, IMAGENET_TRAIN, '$IMAGENET'),
    'rsb-a3': Recipe(8, IMAGENET_TRAIN, '$IMAGENET', last=5, test_img_size=224),
    'rsb-a2': Recipe(8, IMAGENET_TRAIN, '$IMAGENET'),
    'rsb-a1': Recipe(8, IMAGENET_TRAIN, '$IMAGENET'),
    'deit300': Recipe(8, IMAGENET_TRAIN, '$IMAGENET', metric='best'),
    'swin300': Recipe(8, IMAGENET_TRAIN, '$IMAGENET', metric='best'),
    'cifar100': Recipe(1, 50_000, '$CIFAR100'),
    'tiny-imagenet': Recipe(1, 100_000, '$TINY_IMAGENET'),
    'cub200': Recipe(1, 5_994, '$CUB200', extra=('--pretrained',)),
}


def split_name(stem: str) -> Tuple[str, str, str]:
    """`pt100_resnext101_32x4d_samix` -> ('pt100', 'resnext101_32x4d', 'samix'); a variant of a method's
    config (`pt100_resnet50_samix-m0`) gives the method ('samix'), see `variant_of`."""
    recipe, rest = stem.split('_', 1)
    model, method = rest.rsplit('_', 1)
    return recipe, model, method.split('-', 1)[0]


def variant_of(stem: str) -> str:
    """The variant of a config name, '' for none: `pt100_resnet50_samix-m0` -> 'm0' (a second reference config
    of the same recipe, model and method)."""
    method = stem.rsplit('_', 1)[1]
    return method.split('-', 1)[1] if '-' in method else ''


METHOD_ORDER = ('mixup', 'cutmix', 'rsb', 'deit', 'swin', 'automix', 'samix')


def table_order(path: Path):
    """Sort key: recipes as in `RECIPES`, models by size (resnet18 < resnet101), methods as in §8."""
    recipe, model, method = split_name(path.stem)
    natural = [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', model)]
    return (list(RECIPES).index(recipe) if recipe in RECIPES else len(RECIPES), natural,
            METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), variant_of(path.stem))


def list_configs(root: Path = REPO / 'configs') -> List[Path]:
    """The recipe YAMLs of the reproduction table (configs/<group>/*.yaml; the quickstart is not one,
    nor are the train_ssl.py recipes of configs/ssl/)."""
    return sorted((p for p in root.glob('*/*.yaml') if p.parent.name != 'ssl'), key=table_order)


def config_path(stem: str) -> Optional[Path]:
    """configs/<group>/<stem>.yaml of this checkout, None if there is none."""
    found = sorted((REPO / 'configs').glob(f'*/{stem}.yaml'))
    return found[0] if found else None


def read_config(path) -> Dict:
    with open(path) as f:
        return yaml.safe_load(f) or {}


def is_transformer(model: str) -> bool:
    from ..defaults import is_transformer as _is_transformer
    return _is_transformer(model)
