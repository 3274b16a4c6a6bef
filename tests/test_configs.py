""" Every recipe in configs/ parses with the real train.py parser and trains two steps on CPU (issue 5).

A smoke run keeps the recipe's model (full width, the recipe's classifier head) and changes only
what a CPU and a toy dataset force:
- data: a generated ImageFolder (4 classes x 2 train images, batch 4 = 2 steps; 1 val image per
  class), --epochs 1, --workers 0, --device cpu;
- resolution: 32 px (ViT/Swin also get --model-kwargs img_size=32: timm builds them for one size);
- one process: --aug-repeats 0 (timm's repeated-augmentation sampler is distributed-only);
- AMP off: a CPU has no fp16 and train.py's bfloat16 substitute is ~4x slower than fp32 here
  (test_amp_recipe_as_written keeps it on for one SAMix and one AutoMix recipe).
Recipes that differ only in their length (pt100 vs pt300) make the same smoke run: it runs once (the
second is skipped, naming the first).

Parity (issue 13): `PARITY` holds, per recipe family, the values its OpenMixup counterpart sets, as
train.py arguments; every config of the family must have them, and docs/reproduce.md ("Recipe parity")
must list each of those fields with the differences that remain.
"""
import csv
import gc
import logging
import math
import re
import shutil

import pytest
import yaml
from timm.data import Mixup

from conftest import REPO
from samix_timm import reproduce
from samix_timm.defaults import samix_defaults
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
        assert cfg['samix_mixer_loss'] == 'mce'  # the released configs train the Mixer with soft-target CE
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
    if cfg['mixup'] == 'samix':  # a reproduction recipe trains the authors' step, whatever the default
        assert cfg['samix_preset'] == 'reference'


# -- parity with the OpenMixup counterparts (issue 13) -----------------------------------------------

# Per recipe family, the values of its OpenMixup counterpart (docs/reproduce.md, "Recipe parity", cites
# the files) as train.py arguments: 'all' holds for every method, 'learned' for AutoMix and SAMix, a
# method name for that method only (later entries win). A value can depend on the model: {model: value,
# '*': value}. What timm cannot express, and the choices made instead, are listed in the docs table.
# Derived fields: `global_batch` (per-GPU batch x the recipe's GPUs), `lr` (at that batch, timm's
# lr_base rule), `filter_bias_and_bn` (opt_kwargs; timm's default True skips weight decay on 1-D
# parameters), `samix_mixer_lr` / `samix_mixer_weight_decay` (None = the classifier's, as the reference).
_PT = dict(
    opt='momentum', momentum=0.9, lr=0.1, global_batch=256, weight_decay=1e-4, filter_bias_and_bn=False,
    sched='cosine', sched_on_updates=False, min_lr=0.0, warmup_epochs=0, smoothing=0.0, img_size=224,
    crop_pct=0.875, train_interpolation='bicubic', scale=[0.08, 1.0], amp=False)
_PT_LEARNED = dict(
    samix_mixer_opt='momentum', samix_mixer_lr=0.1, samix_mixer_momentum=0.9, samix_mixer_weight_decay=1e-4,
    samix_mixer_min_lr=1e-3, samix_momentum_end=0.99999, samix_beta_schedule='linear', samix_lam_adjust_prob=0.0,
    mixer_loss_smoothing=0.0, samix_momentum_hold=0.1)
_PT_SAMIX = dict(samix_mixer_dropout=0.1, samix_lam_rescale_k=-1.0, samix_mixer_upsample='bilinear')
_VIT = dict(
    opt='adamw', opt_eps=1e-8, lr=1e-3, global_batch=1024, weight_decay=0.05, filter_bias_and_bn=True,
    sched='cosine', sched_on_updates=True, min_lr=1e-5, epochs=300, clip_grad=5.0, smoothing=0.1,
    aa='rand-m9-mstd0.5-inc1', reprob=0.25, aug_repeats=0, model_ema=False, crop_pct=0.875,
    train_interpolation='bicubic')
_VIT_LEARNED = dict(
    samix_mixer_opt='adamw', samix_mixer_lr=1e-3, samix_mixer_weight_decay=0.05, samix_mixer_min_lr=1e-4,
    samix_momentum_end=0.99999, samix_beta_schedule='linear', mixer_loss_smoothing=0.1, samix_momentum_hold=0.25)
_SMALL = dict(opt='momentum', momentum=0.9, filter_bias_and_bn=False, sched='cosine', sched_on_updates=False,
              warmup_epochs=0, smoothing=0.0)
PARITY = {
    'pt100': dict(all=dict(_PT, epochs=100), learned=_PT_LEARNED, samix=_PT_SAMIX,
                  **{'samix-m0': dict(samix_mixer_momentum=0.0)},  # R-50's second 100-epoch file (docs note 17)
                  mixup=dict(mixup=0.2), cutmix=dict(cutmix={'resnet18': 0.2, '*': 1.0})),
    'pt300': dict(all=dict(_PT, epochs=300), learned=_PT_LEARNED, samix=_PT_SAMIX,
                  mixup=dict(mixup=0.2), cutmix=dict(cutmix={'resnet18': 0.2, '*': 1.0})),
    'rsb-a3': dict(
        all=dict(opt='lamb', lr=0.008, global_batch=2048, weight_decay=0.02, filter_bias_and_bn=True,
                 sched='cosine', sched_on_updates=False, min_lr=1e-6, warmup_epochs=5, warmup_lr=8e-8, epochs=100,
                 bce_loss=True, bce_sum=True, bce_target_thresh=None, smoothing=0.0, sync_bn=True, img_size=160,
                 crop_pct=0.95, train_interpolation='bicubic', aa='rand-m6-mstd0.5-inc1'),
        learned=dict(_PT_LEARNED), samix=_PT_SAMIX,  # no RSB SAMix config was released: the PyTorch-style Mixer
        rsb=dict(mixup=0.1, cutmix=1.0, mixup_switch_prob=0.5), mixup=dict(mixup=0.2), cutmix=dict(cutmix=0.2)),
    'deit300': dict(
        all=dict(_VIT, warmup_epochs=5, warmup_lr=1e-8, drop_path=0.0), learned=dict(_VIT_LEARNED, drop_path=0.1),
        samix=dict(samix_mixer_dropout=0.1, samix_mixer_upsample='nearest'),
        deit=dict(mixup=0.8, cutmix=1.0, mixup_switch_prob=0.5), mixup=dict(mixup=0.2), cutmix=dict(cutmix=0.2)),
    'swin300': dict(
        all=dict(_VIT, warmup_epochs=20, warmup_lr=1e-9, drop_path=0.2), learned=dict(_VIT_LEARNED, warmup_lr=1e-8),
        samix=dict(samix_mixer_dropout=0.1, samix_mixer_upsample='nearest'),
        swin=dict(mixup=0.8, cutmix=1.0, mixup_switch_prob=0.5), mixup=dict(mixup=0.2), cutmix=dict(cutmix=0.2)),
    'cifar100': dict(
        all=dict(_SMALL, lr=0.1, global_batch=100, weight_decay=1e-4, min_lr=0.0, epochs=800, img_size=32,
                 mean=[0.4914, 0.4822, 0.4465], std=[0.2023, 0.1994, 0.201]),
        learned=dict(min_lr=0.05, samix_mixer_opt='momentum', samix_mixer_lr=0.1, samix_mixer_momentum=0.9,
                     samix_mixer_weight_decay=1e-4, samix_mixer_min_lr=0.05, samix_momentum_end=0.999999,
                     samix_beta_schedule='constant', samix_lam_adjust_prob=0.0,
                     mixer_loss_smoothing=0.0, samix_momentum_hold=0.1),
        samix=dict(samix_mixer_dropout=0.0, samix_lam_rescale_k=0.25, samix_lam_adjust_prob=0.25,
                   samix_mixer_upsample='bilinear'),
        mixup=dict(mixup=1.0), cutmix=dict(cutmix=0.2)),
    'tiny-imagenet': dict(
        all=dict(_SMALL, lr=0.2, global_batch=100, weight_decay=1e-4, min_lr=0.0, epochs=400, img_size=64,
                 crop_pct=1.0, train_interpolation='bicubic', scale=[0.08, 1.0]),
        learned=dict(min_lr=0.05, samix_mixer_opt='momentum', samix_mixer_lr=0.1, samix_mixer_momentum=0.9,
                     samix_mixer_weight_decay=1e-4, samix_mixer_min_lr=1e-3, samix_momentum_end=0.999999,
                     samix_beta_schedule='constant', samix_lam_adjust_prob=0.0,
                     mixer_loss_smoothing=0.0, samix_momentum_hold=0.1),
        samix=dict(samix_mixer_dropout=0.0, samix_lam_rescale_k=-1.0, samix_mixer_upsample='bilinear'),
        mixup=dict(mixup=1.0), cutmix=dict(cutmix=1.0)),
    'cub200': dict(
        all=dict(_SMALL, lr=0.001, global_batch=16, weight_decay=5e-4, min_lr=0.0, epochs=200, img_size=224,
                 crop_pct=0.875, scale=[0.5, 1.0], interpolation='bilinear', train_interpolation='bilinear'),
        learned=dict(samix_mixer_opt='momentum', samix_mixer_lr=0.01, samix_mixer_momentum=0.9,
                     samix_mixer_weight_decay=5e-4, samix_mixer_min_lr=5e-4, samix_momentum_end=0.99999,
                     samix_beta_schedule='linear', samix_lam_adjust_prob=0.0,  # beta: OpenMixup decays it (docs)
                     mixer_loss_smoothing=0.0, samix_momentum_hold=0.1),
        samix=dict(samix_mixer_dropout=0.1, samix_lam_rescale_k=1.0, samix_mixer_upsample='bilinear'),
        mixup=dict(mixup=0.2), cutmix=dict(cutmix=0.2)),
}
# every AutoMix/SAMix recipe, whatever its family: the reference step of all released configs
LEARNED_ALL = dict(samix_mixer_loss='mce', samix_clean_weight=1.0, samix_preset='reference', samix_alpha=2.0,
                   samix_mask_beta=0.1, samix_mask_margin=0.1, samix_lam_margin=0.08, samix_momentum_start=0.999,
                   samix_mixer_init='reference', samix_mixer_norm='none', samix_mask_loss='batch')
LEARNED_SAMIX = dict(samix_mask_area='free', samix_mask_sharpness=0)  # the SAMix Mixer's own options (AutoMix's Mixer has none)
for _family in PARITY.values():  # AutoMix upsamples nearest in every released config
    _family['automix'] = dict(_family.get('automix', {}), samix_mixer_upsample='nearest')
PARITY_CONFIGS = [p for p in CONFIGS if reproduce.split_name(p.stem)[0] in PARITY]
LEARNED_CONFIGS = [p for p in CONFIGS if reproduce.split_name(p.stem)[2] in ('samix', 'automix')]


def _reference(recipe: str, model: str, method: str, variant: str = '') -> dict:
    table = PARITY[recipe]
    parts = ['all'] + (['learned'] if method in ('samix', 'automix') else []) + [method]
    if variant:
        assert f'{method}-{variant}' in table, f'{recipe}: no parity entry for the variant {method}-{variant}'
        parts.append(f'{method}-{variant}')
    ref = {}
    for part in parts:
        for field, value in table.get(part, {}).items():
            ref[field] = value.get(model, value['*']) if isinstance(value, dict) else value
    return ref


def _effective(args, recipe: str, field: str):
    """The value train.py runs with (timm's rules for what the YAML leaves to defaults)."""
    global_batch = args.batch_size * reproduce.RECIPES[recipe].gpus
    lr = args.lr
    if not lr:  # timm: lr_base x (global batch / lr_base_size), sqrt scaling for ada*/lamb unless told
        scale = args.lr_base_scale or ('sqrt' if any(o in args.opt.lower() for o in ('ada', 'lamb')) else 'linear')
        ratio = global_batch / args.lr_base_size
        lr = args.lr_base * (ratio ** 0.5 if scale == 'sqrt' else ratio)
    if field == 'global_batch':
        return global_batch
    if field == 'lr':
        return lr
    if field == 'filter_bias_and_bn':
        return args.opt_kwargs.get('filter_bias_and_bn', True)
    if field == 'samix_mixer_lr' and args.samix_mixer_lr is None and args.samix_mixer_opt in ('adamw', 'adam', 'lamb'):
        return lr
    if field == 'samix_mixer_weight_decay' and args.samix_mixer_weight_decay is None:
        return args.weight_decay
    if field == 'mixer_loss_smoothing':  # the Mixer's soft CE (head_mix) smooths as the recipe does
        return args.smoothing if args.samix_mixer_loss == 'mce' else None
    if field == 'samix_mask_beta' and args.samix_mask_beta is None:  # chosen by the mask the config pins (§2.6)
        return samix_defaults(args.model, 1000, mixer=args.samix_mixer, mask_area=args.samix_mask_area,
                              mask_loss=args.samix_mask_loss)['mixer'].beta.beta
    if field == 'samix_momentum_hold':  # share of the run θ̄'s momentum stays at its start (§5.5)
        return samix_defaults(args.model, 1000)['momentum'].warmup_frac
    return getattr(args, field)


def _check_fields(path, reference: dict):
    args, _ = parse_train_args(['--config', str(path)])
    recipe = reproduce.split_name(path.stem)[0]
    wrong = {}
    for field, want in reference.items():
        got = _effective(args, recipe, field)
        if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
            ok = got == pytest.approx(want, rel=1e-9, abs=1e-12)
        elif isinstance(want, list):
            ok = got is not None and list(got) == pytest.approx(want)
        else:
            ok = got == want
        if not ok:
            wrong[field] = f'{got!r}, OpenMixup {want!r}'
    assert not wrong, f'{path.stem}: {wrong} (docs/reproduce.md "Recipe parity")'


@pytest.mark.parametrize('path', PARITY_CONFIGS, ids=[p.stem for p in PARITY_CONFIGS])
def test_config_matches_its_openmixup_counterpart(path):
    recipe, model, method = reproduce.split_name(path.stem)
    _check_fields(path, _reference(recipe, model, method, reproduce.variant_of(path.stem)))
    assert 'Recipe parity' in _header(path)  # the header points to the comparison


@pytest.mark.parametrize('path', LEARNED_CONFIGS, ids=[p.stem for p in LEARNED_CONFIGS])
def test_learned_mixer_config_runs_the_reference_step(path):
    _check_fields(path, LEARNED_ALL)
    if reproduce.split_name(path.stem)[2] == 'samix':
        _check_fields(path, LEARNED_SAMIX)
    cfg = yaml.safe_load(path.read_text())
    for key in ('samix_clean_weight', 'samix_mixer_loss', 'samix_mixer_opt', 'samix_mixer_weight_decay',
                'samix_momentum_start', 'samix_momentum_end'):
        assert key in cfg, f'{key}: write the reference value out, package defaults may change'
    if cfg['samix_mixer_opt'] != 'adamw':
        assert cfg['samix_mixer_opt'] == 'momentum', "the reference Mixer is plain momentum SGD ('sgd' = Nesterov)"


def _parity_table():
    """docs/reproduce.md "Recipe parity": {field: {family column: cell}} of the comparison table."""
    docs = (REPO / 'docs' / 'reproduce.md').read_text()
    section = docs.split('\n## Recipe parity')[1].split('\n## ')[0]
    rows = [line for line in section.splitlines() if line.startswith('|')]
    head = [c.strip() for c in rows[0].strip('|').split('|')]
    table = {}
    for line in rows[2:]:
        cells = [c.strip() for c in line.strip('|').split('|')]
        for field in re.findall(r'`([a-z_]+)`', cells[0]):
            table[field] = dict(zip(head[1:], cells[1:]))
    return head, table


def test_docs_parity_table_lists_every_checked_field():
    head, table = _parity_table()
    columns = {'pt100': 'pt100 / pt300', 'pt300': 'pt100 / pt300'}
    for recipe in PARITY:
        assert columns.get(recipe, recipe) in head, recipe
    fields = {f for t in PARITY.values() for part in t.values() for f in part} | set(LEARNED_ALL) | set(LEARNED_SAMIX)
    missing = sorted(fields - set(table))
    assert not missing, f'docs/reproduce.md "Recipe parity" has no row for {missing}'
    for field, cells in table.items():
        assert all(cell for cell in cells.values()), f'{field}: fill every family (— where it does not apply)'


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
        assert (result.mixup_fn.preset.mixer_every, result.mixup_fn.preset.mixer_batch_frac) == (1, 1.0)  # paper
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
        pytest.skip(f'same smoke run as {_SMOKE_RUNS[key]} (differs only in what the smoke run overrides)')
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


@pytest.mark.parametrize('path', [p for p in CONFIGS if yaml.safe_load(p.read_text()).get('mixup') == 'samix'],
                         ids=lambda p: p.stem)
def test_reproduction_configs_depart_from_the_authors_step_in_nothing(path):
    """Every reproduction config runs the authors' step: `departures` of what it resolves to is empty (the log line
    of a run says so in words), and the `reference` preset alone, without the pinned fields, resolves the same."""
    from samix_timm.defaults import departures
    cfg = yaml.safe_load(path.read_text())
    model, steps, images = cfg['model'], 1000, 50_000
    kwargs = samix_defaults(model, steps, train_size=images, preset='reference', mixer=cfg.get('samix_mixer', 'samix'),
                            mixer_loss=cfg.get('samix_mixer_loss'), mixer_init=cfg.get('samix_mixer_init'),
                            mixer_norm=cfg.get('samix_mixer_norm'), mask_area=cfg.get('samix_mask_area'),
                            mask_loss=cfg.get('samix_mask_loss'), mask_sharpness=cfg.get('samix_mask_sharpness'),
                            mask_beta=cfg.get('samix_mask_beta'))
    assert departures(kwargs) == [], departures(kwargs)
    bare = samix_defaults(model, steps, train_size=images, preset='reference', mixer=cfg.get('samix_mixer', 'samix'))
    assert departures(bare) == [] and bare['mixer'].loss == 'mce' and bare['mixer'].beta.beta == 0.1
    assert departures(samix_defaults(model, steps, train_size=images))  # the default departs, and says where
