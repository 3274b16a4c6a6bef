""" Shared fixtures: the embedded dataset (built once per session) and a small run helper. """
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from samix_timm.data import ClutteredMnistConfig, build_cluttered_mnist

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope='session')
def embedded_data(tmp_path_factory) -> Path:
    """The full embedded dataset (4,000 train / 1,000 val), as the quickstart builds it."""
    return build_cluttered_mnist(tmp_path_factory.mktemp('data') / 'cluttered_mnist')


@pytest.fixture(scope='session')
def small_data(tmp_path_factory) -> Path:
    """A 400 / 100 build of the same dataset, for runs that test mechanics rather than learning."""
    cfg = ClutteredMnistConfig(seed=1, num_train=400, num_val=100)
    return build_cluttered_mnist(tmp_path_factory.mktemp('small') / 'cluttered_mnist', cfg)


# a CPU-sized recipe on the embedded data: timm's tiny test_resnet at 32 px
FAST_ARGS = [
    '--model', 'test_resnet', '--num-classes', '10', '--img-size', '32', '--mean', '0.1', '0.1', '0.1',
    '--std', '0.25', '0.25', '0.25', '--crop-pct', '1.0', '--scale', '0.35', '1.0', '--hflip', '0',
    '--color-jitter', '0', '-b', '50', '--opt', 'sgd', '--lr', '0.1', '--weight-decay', '5e-4',
    '--warmup-epochs', '0', '--smoothing', '0', '--workers', '0', '--log-interval', '5', '--device', 'cpu',
]


def make_image_folder(root, classes: int = 4, train: int = 2, val: int = 1, size: int = 40):
    """A tiny ImageFolder of random RGB PNGs: root/{train,val}/class<k>/<i>.png."""
    rng = np.random.default_rng(0)
    for split, n in (('train', train), ('val', val)):
        for c in range(classes):
            folder = root / split / f'class{c}'
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f'{i}.png')
    return root


@pytest.fixture(scope='module')
def one_thread():
    """Batch-4 steps at 32 px gain nothing from threads; on a busy 2-core machine a second thread made
    them ~6x slower (measured). conftest's setting is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp('tiny_imagefolder'))


# SAMix's settings by the names of its former flat keywords (most tests set one or two of them)
_MIXER_FIELDS = dict(mixer='mixer', mixer_kwargs='kwargs', mixer_optimizer='optimizer', mixer_min_lr='min_lr',
                     mixer_loss='loss', eta='eta', beta='beta', mask_margin='mask_margin', mask_loss='mask_loss',
                     tap_index='tap_index')
_PRESET_FIELDS = ('mixer_every', 'mixer_until', 'mixer_batch_frac', 'mixer_scale', 'clean_weight', 'clean_forward', 'clean_frac')
_MIX_FIELDS = ('alpha', 'lam_margin', 'lam_adjust_prob', 'label_smoothing', 'prob')


def build_samix(model, num_classes: int, total_steps: int, **flat):
    """`SAMix` from one flat set of keywords, each sorted into the settings object that holds it."""
    from samix_timm import MixerSettings, MixSettings, SAMix, StepPreset
    mixer = MixerSettings(**{_MIXER_FIELDS[k]: flat.pop(k) for k in list(flat) if k in _MIXER_FIELDS})
    preset = StepPreset(**{k: flat.pop(k) for k in list(flat) if k in _PRESET_FIELDS})
    mix = MixSettings(**{k: flat.pop(k) for k in list(flat) if k in _MIX_FIELDS})
    return SAMix(model, num_classes, total_steps, mixer=mixer, preset=preset, mix=mix, **flat)


def _tmpfs_kib(request) -> int:
    mark = request.node.get_closest_marker('full_disk_kib')
    return mark.args[0] if mark else 32


@pytest.fixture
def full_disk(tmp_path, request):
    """A real tmpfs (32 KiB, or the `full_disk_kib` mark's size) (skipped where this process may not mount one)."""
    mnt = tmp_path / 'tiny'
    mnt.mkdir()
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={_tmpfs_kib(request)}k', 'tmpfs', str(mnt)], capture_output=True).returncode:
        pytest.skip('cannot mount a tmpfs here')
    try:
        yield mnt
    finally:  # lazily when a failed test still holds a file there (its traceback keeps the handle open)
        if subprocess.run(['umount', str(mnt)], capture_output=True).returncode:
            subprocess.run(['umount', '-l', str(mnt)], capture_output=True)


def load_bench(name: str):
    """A script of bench/ (not a package) as a module: `load_bench('speed')` is bench/speed.py."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f'bench_{name}', REPO / 'bench' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
