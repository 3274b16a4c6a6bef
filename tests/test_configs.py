""" Every recipe in configs/ parses with the real train.py parser and trains two steps on CPU (issue 5).

A smoke run keeps the recipe's model (full width, the recipe's classifier head) and changes only
what a CPU and a toy dataset force:
- data: a generated ImageFolder (4 classes x 2 train images, batch 4 = 2 steps; 1 val image per
  class), --epochs 1, --workers 0, --device cpu;
- resolution: 32 px (ViT/Swin also get --model-kwargs img_size=32: timm builds them for one size);
- one process: --aug-repeats 0 (timm's repeated-augmentation sampler is distributed-only);
- AMP off: a CPU has no fp16 and train.py's bfloat16 substitute is ~4x slower than fp32 here
  (test_amp_recipe_as_written keeps it on for one SAMix and one AutoMix recipe).
Recipes that differ only in their length (pt100 vs pt300) make the same smoke run: it runs once.
"""
import csv
import gc
import logging
import math
import shutil

import pytest
import torch
import yaml
from timm.data import Mixup

from conftest import REPO
from samix_timm import reproduce
from samix_timm.engine import parse_train_args, train
from samix_timm.engine.args import ParseKwargs, create_train_parser, load_yaml_config
from samix_timm.mixer import mixer_name

CONFIGS = reproduce.list_configs()
SMOKE_SIZE = 32
HEAVY_MODELS = ('resnet101', 'resnext101_32x4d')
HEAVY_RECIPES = ('rsb-a1', 'rsb-a2', 'rsb-a3', 'deit300', 'swin300')


pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.one_thread


def _param(path):
    recipe, model, _ = reproduce.split_name(path.stem)
    slow = model in HEAVY_MODELS or recipe in HEAVY_RECIPES
    return pytest.param(path, id=path.stem, marks=[pytest.mark.slow] if slow else [])


def _header(path) -> str:
    return ''.join(line for line in path.read_text().splitlines(keepends=True) if line.startswith('#'))


# -- parsing ------------------------------------------------------------------------------------------

def test_configs_cover_every_recipe_and_method():
    stems = {p.stem for p in CONFIGS}
    assert len(stems) == len(CONFIGS), "config names must be unique across configs/*/"
    for recipe in ('pt100', 'pt300'):
        for model in ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnext101_32x4d'):
            assert {f'{recipe}_{model}_{m}' for m in ('mixup', 'cutmix', 'automix', 'samix')} <= stems
    for recipe, model, own in (('rsb-a3', 'resnet50', 'rsb'), ('rsb-a2', 'resnet50', 'rsb'),
                               ('rsb-a1', 'resnet50', 'rsb'), ('deit300', 'deit_small_patch16_224', 'deit'),
                               ('swin300', 'swin_tiny_patch4_window7_224', 'swin')):
        assert {f'{recipe}_{model}_{m}' for m in (own, 'mixup', 'cutmix', 'automix', 'samix')} <= stems
    for recipe in ('cifar100', 'tiny-imagenet', 'cub200'):
        assert {f'{recipe}_resnet18_{m}' for m in ('mixup', 'cutmix', 'automix', 'samix')} <= stems


@pytest.mark.parametrize('path', CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_has_only_known_keys_of_the_right_type(path, caplog):
    parser = create_train_parser()
    with caplog.at_level(logging.WARNING):
        known = load_yaml_config(str(path), parser)
        args, _ = parse_train_args(['--config', str(path)])
    assert 'unknown key' not in caplog.text, caplog.text
    raw = yaml.safe_load(path.read_text())
    assert set(known) == set(raw), 'keys must be written with underscores, as timm writes args.yaml'
    actions = {a.dest: a for a in parser._actions}
    for key, value in raw.items():
        action = actions[key]
        if action.nargs == 0:  # store_true / store_false
            assert isinstance(value, bool), f'{key}: {value!r} should be true/false'
        elif isinstance(action, ParseKwargs):
            assert isinstance(value, dict), key
        elif action.nargs not in (None, '?'):
            assert isinstance(value, list), f'{key}: {value!r} should be a list'
        elif action.type is float:
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            assert number, f'{key}: {value!r} (YAML reads 1e-4 as a string: write 1.0e-4)'
        elif action.type is int:
            assert isinstance(value, int) and not isinstance(value, bool), f'{key}: {value!r}'
        elif key != 'mixup':
            assert isinstance(value, str), f'{key}: {value!r}'
        assert getattr(args, key) is not None
    assert args.experiment == path.stem  # the harness and docs find runs by config name


@pytest.mark.parametrize('path', CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_name_states_recipe_model_method(path):
    cfg = yaml.safe_load(path.read_text())
    recipe, model, method = reproduce.split_name(path.stem)
    assert recipe in reproduce.RECIPES
    assert path.parent.name == ('in1k' if reproduce.RECIPES[recipe].data == '$IMAGENET' else 'small')
    assert cfg['model'].split('.')[0] == model
    mixup, cutmix = cfg.get('mixup', 0.0), cfg.get('cutmix', 0.0)
    if method in ('samix', 'automix'):
        assert mixup == 'samix' and cutmix == 0 and cfg['samix_mixer'] == method
        assert cfg['samix_mixer_loss'] == ('mce' if method == 'automix' else 'eta')
    elif method == 'mixup':
        assert mixup > 0 and cutmix == 0
    elif method == 'cutmix':
        assert mixup == 0 and cutmix > 0
    else:  # the recipe's own Mixup + CutMix (RSB, DeiT, Swin)
        assert mixup > 0 and cutmix > 0
    assert not cfg.get('pretrained') and not cfg.get('dataset_download'), 'configs never download by themselves'


@pytest.mark.parametrize('path', CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_states_source_and_samix_settings(path):
    header = _header(path)
    assert '# Source:' in header
    assert 'SAMix settings (spec §5' in header and '§1' in header  # Mixer optimizer, eta, momentum, features
    for word in ('lr', 'eta', 'momentum encoder'):
        assert word in header, word
    if path.parent.name == 'small':
        assert 'Data:' in header  # data layout of each small-data set
    cfg = yaml.safe_load(path.read_text())
    if cfg['mixup'] == 'samix':  # a reproduction recipe trains the paper's Mixer branch, whatever the default
        assert cfg['samix_preset'] == 'paper'


# -- two training steps per recipe --------------------------------------------------------------------

_SMOKE_RUNS = {}  # effective arguments -> config that already ran them


def _smoke_argv(path, data, out):
    cfg = yaml.safe_load(path.read_text())
    return ['--config', str(path), '--data-dir', str(data), '--epochs', '1', '--img-size', str(SMOKE_SIZE),
            '--batch-size', '4', '--workers', '0', '--device', 'cpu', '--output', str(out),
            *reproduce.smoke_overrides(cfg, SMOKE_SIZE)]


def _check_run(path, result):
    cfg = yaml.safe_load(path.read_text())
    with open(result.output_dir / 'summary.csv') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    assert math.isfinite(float(rows[0]['train_loss'])) and math.isfinite(float(rows[0]['eval_top1']))
    if cfg['mixup'] == 'samix':
        assert mixer_name(result.mixup_fn.mixer) == cfg['samix_mixer']
        assert result.mixup_fn.step == 2
        assert (result.mixup_fn.mixer_every, result.mixup_fn.mixer_batch_frac) == (1, 1.0)  # samix_preset: paper
        assert math.isfinite(float(rows[0]['train_mixer_loss']))
    else:
        assert isinstance(result.mixup_fn, Mixup)
        assert (result.mixup_fn.mixup_alpha, result.mixup_fn.cutmix_alpha) == (cfg['mixup'], cfg['cutmix'])
    if cfg.get('model_ema'):
        assert 'eval_ema_top1' in rows[0]


@pytest.mark.parametrize('path', [_param(p) for p in CONFIGS])
def test_config_trains_two_steps(path, tiny_data, tmp_path):
    args, text = parse_train_args(_smoke_argv(path, tiny_data, tmp_path))
    args.amp = False
    key = yaml.safe_dump({k: v for k, v in vars(args).items() if k not in ('config', 'experiment', 'output')})
    if key in _SMOKE_RUNS:  # same run as another config (it differs only in what the smoke run overrides)
        return
    result = train(args, text)
    try:
        _check_run(path, result)
    finally:
        shutil.rmtree(result.output_dir)  # checkpoints of 100M-parameter models add up
        del result
        gc.collect()
    _SMOKE_RUNS[key] = path.stem


# Swin, not DeiT: ViT token maps stay fp32 under autocast (fp32 position embedding), Swin stage maps do not
AMP_CONFIGS = [REPO / 'configs' / 'in1k' / f'swin300_swin_tiny_patch4_window7_224_{m}.yaml'
               for m in ('samix', 'automix')]


@pytest.mark.slow
@pytest.mark.parametrize('path', [
    pytest.param(AMP_CONFIGS[0], id='samix'),
    pytest.param(AMP_CONFIGS[1], id='automix'),  # AutoMixer once failed on bf16 features (fixed in mixer.py)
])
def test_amp_recipe_as_written(path, tiny_data, tmp_path):
    args, text = parse_train_args(_smoke_argv(path, tiny_data, tmp_path))
    assert args.amp
    result = train(args, text)
    try:
        _check_run(path, result)
    finally:
        shutil.rmtree(result.output_dir)
