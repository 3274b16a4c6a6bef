import logging

import pytest
import yaml

from conftest import REPO
from samix_timm.engine.args import (TIMM_NOT_RUN, ConfigError, create_train_parser, load_yaml_config,
                                   parse_train_args)
from samix_timm.clean import clean_rows
from samix_timm.engine.checks import NOT_IMPLEMENTED, check_train_args

# an RSB A3 style recipe as timm writes args.yaml, including keys of older timm versions
RSB_A3 = """
model: resnet50
aa: rand-m6-mstd0.5-inc1
amp: true
apex_amp: false
native_amp: true
batch_size: 256
bce_loss: true
bce_target_thresh: 0.2
bn_tf: false
crop_pct: 0.95
cutmix: 1.0
mixup: 0.1
epochs: 100
img_size: 160
lr: 0.008
opt: lamb
sched: cosine
smoothing: 0.0
warmup_epochs: 5
weight_decay: 0.02
drop_path: 0.05
scale: [0.08, 1.0]
model_ema: false
"""


def _write(tmp_path, text, name='recipe.yaml'):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_match_timm():
    args, _ = parse_train_args([])
    expected = dict(
        model='resnet50', batch_size=128, opt='sgd', momentum=0.9, weight_decay=2e-5, sched='cosine', lr=None,
        lr_base=0.1, lr_base_size=256, warmup_lr=1e-5, min_lr=0, epochs=300, warmup_epochs=5, cooldown_epochs=0,
        decay_milestones=[90, 180, 270], decay_rate=0.1, mixup=0.0, cutmix=0.0, mixup_prob=1.0,
        mixup_switch_prob=0.5, mixup_mode='batch', mixup_off_epoch=0, smoothing=0.1, scale=[0.08, 1.0],
        hflip=0.5, color_jitter=0.4, reprob=0., remode='pixel', aa=None, aug_repeats=0, bce_loss=False,
        bce_target_thresh=None, model_ema=False, model_ema_decay=0.9998, train_split='train',
        val_split='validation', seed=42, log_interval=50, workers=4, amp=False, amp_dtype='float16',
        checkpoint_hist=10, eval_metric='top1', dist_bn='reduce', train_interpolation='random')
    for key, value in expected.items():
        assert getattr(args, key) == value, key


def test_yaml_sets_defaults_and_cli_wins(tmp_path, caplog):
    cfg = _write(tmp_path, RSB_A3)
    with caplog.at_level(logging.WARNING):
        args, text = parse_train_args(['--config', cfg, '--epochs', '3', '--data-dir', 'somewhere'])
    assert args.model == 'resnet50' and args.opt == 'lamb' and args.img_size == 160
    assert args.bce_loss and args.bce_target_thresh == 0.2 and args.mixup == 0.1 and args.cutmix == 1.0
    assert args.epochs == 3  # command line beats the recipe
    assert args.aa == 'rand-m6-mstd0.5-inc1' and args.amp
    # legacy keys are reported with the closest valid name and dropped
    warned = caplog.text
    assert "unknown key 'apex_amp'" in warned and "unknown key 'bn_tf'" in warned
    assert "did you mean 'amp'" in warned
    assert not hasattr(args, 'apex_amp')
    assert yaml.safe_load(text)['opt'] == 'lamb'


def test_yaml_typo_gets_closest_name(tmp_path, caplog):
    cfg = _write(tmp_path, 'model: resnet18\nwarmup_epoch: 3\nmixup_prop: 0.5\n')
    with caplog.at_level(logging.WARNING):
        args, _ = parse_train_args(['--config', cfg])
    assert "'warmup_epoch' ignored (did you mean 'warmup_epochs'?)" in caplog.text
    assert "did you mean 'mixup_prob'?" in caplog.text
    assert args.warmup_epochs == 5


@pytest.mark.parametrize('value,expected', [('0.8', 0.8), ('none', 0.0), ('samix', 'samix'), ('SAMix', 'samix')])
def test_mixup_accepts_alpha_or_method(value, expected):
    args, _ = parse_train_args(['--mixup', value])
    assert args.mixup == expected


def test_mixup_method_from_yaml(tmp_path):
    args, _ = parse_train_args(['--config', _write(tmp_path, 'mixup: samix\n')])
    assert args.mixup == 'samix'
    args, _ = parse_train_args(['--config', _write(tmp_path, 'mixup: 0.2\n', 'b.yaml')])
    assert args.mixup == 0.2


def test_bad_mixup_value_is_one_line_error(capsys):
    with pytest.raises(SystemExit):
        parse_train_args(['--mixup', 'fancy'])
    err = capsys.readouterr().err
    assert "'fancy' is neither a mixup alpha" in err and 'samix' in err


def test_bad_config_files(tmp_path):
    with pytest.raises(ConfigError, match='not found'):
        parse_train_args(['--config', str(tmp_path / 'nope.yaml')])
    with pytest.raises(ConfigError, match='not valid YAML'):
        parse_train_args(['--config', _write(tmp_path, 'a: [1,\n')])
    with pytest.raises(ConfigError, match='mapping'):
        load_yaml_config(_write(tmp_path, '- 1\n- 2\n', 'list.yaml'), create_train_parser())


def test_shipped_configs_parse_without_unknown_keys(caplog):
    from conftest import REPO
    configs = sorted((REPO / 'configs').glob('*.yaml'))
    assert configs
    for cfg in configs:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            parse_train_args(['--config', str(cfg)])
        assert 'unknown key' not in caplog.text, cfg.name


def test_a_registered_mixing_method_is_accepted_by_parser_and_built_by_factory():
    import torch.nn as nn
    from samix_timm import factory
    built = []
    factory.register_mixup_method('toy', lambda args, model, num_classes, **run: built.append(num_classes) or 'toy!')
    try:
        args, _ = parse_train_args(['--mixup', 'toy'])
        assert args.mixup == 'toy'
        assert factory.create_mixup(args, nn.Linear(2, 3), 3, data_config={}, steps_per_epoch=1) == 'toy!'
        assert built == [3]
        with pytest.raises(ValueError, match='already registered'):
            factory.register_mixup_method('toy', lambda *a, **k: None)
    finally:
        factory.MIXUP_METHODS.pop('toy', None)


def _timm_train_options():
    lines = (REPO / 'tests' / 'data' / 'timm_train_args.txt').read_text().splitlines()
    return [line.split() for line in lines if line and not line.startswith('#')]


def _not_default(kwargs):
    """Command-line words of a value other than timm's default for an option with these argparse keywords."""
    if kwargs.get('action') == 'store_true':
        return []
    word = {int: '7', float: '0.5'}.get(kwargs['type'], 'x')
    return [word] * (1 if kwargs.get('nargs') is None else 2)


def test_every_timm_train_option_is_known_and_run_or_refused(tmp_path):
    """Each of timm's train.py arguments is an argument here (the same names and aliases); the ones samix-timm does
    not run are refused, with their reason, as soon as they are given a value other than timm's default."""
    ours = {o for action in create_train_parser()._actions for o in action.option_strings}
    timm_options = _timm_train_options()
    assert len(timm_options) > 150
    missing = [' '.join(names) for names in timm_options if not set(names) <= ours]
    assert not missing, f'timm train.py arguments unknown here: {missing}'
    refused = set(TIMM_NOT_RUN) | set(NOT_IMPLEMENTED)
    dests = {next(n for n in names if n.startswith('--'))[2:].replace('-', '_') for names in timm_options}
    assert set(TIMM_NOT_RUN) <= dests and not set(TIMM_NOT_RUN) & {'model_dtype', 'tta', 'recovery_interval'}
    for dest, (flags, kwargs, reason) in TIMM_NOT_RUN.items():
        args, _ = parse_train_args(['--output', str(tmp_path), flags[0], *_not_default(kwargs)])
        with pytest.raises(ConfigError, match=f'{flags[0]} is not supported by samix-timm: '):
            check_train_args(args)
        args, _ = parse_train_args(['--output', str(tmp_path)])
        assert getattr(args, dest) == kwargs['default'], dest  # timm's default: accepted
    check_train_args(args)
    assert len(refused) == 32  # 29 timm options not run + --model-dtype, --recovery-interval, --tta


@pytest.mark.parametrize('text,message', [
    ('lr: [0.1, 0.2]\n', "lr: [0.1, 0.2] is not a number"),
    ('mean: 0.5\n', "mean: 0.5 is not a list ([...]) of numbers"),
    ('batch_size: 8.5\n', "batch_size: 8.5 is not an integer"),
    ('amp: yes please\n', "amp: 'yes please' is not true or false"),
    ('opt_kwargs: [1]\n', "opt_kwargs: [1] is not a mapping"),
    ('mean: [0.5, high, 0.5]\n', "mean: [0.5, 'high', 0.5] is not a number"),
])
def test_yaml_values_of_the_wrong_type_name_the_file_and_key(tmp_path, text, message):
    """A recipe value of the wrong type used to give a traceback deep in the run (a scalar `mean`, a list `lr`) or
    95 lines of argparse usage; now one line naming the file and the key."""
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        parse_train_args(['--config', path])
    assert str(e.value).startswith(f"config file '{path}': ") and message.split(' is not')[1] in str(e.value)
    assert str(e.value).endswith('fix the value in the file') and '\n' not in str(e.value)


def test_yaml_values_of_the_right_type_are_taken_as_the_command_line_would(tmp_path):
    args, _ = parse_train_args(['--config', _write(tmp_path, 'weight_decay: 1e-4\nbatch_size: 8.0\nmean: [1, 0, 0]\n')])
    assert args.weight_decay == 1e-4 and args.batch_size == 8 and args.mean == [1.0, 0.0, 0.0]
    with pytest.raises(ConfigError, match="cannot be read .*: pass a YAML file to --config"):
        parse_train_args(['--config', str(tmp_path)])  # a directory


@pytest.mark.parametrize('argv,warning', [
    (['--samix-mixer-lr', '0.5'], '--samix-mixer-lr has no effect without --mixup samix'),
    (['--mixup', '0.8', '--samix-eta', '0.3'], '--samix-eta has no effect without --mixup samix'),
    (['--mixup', 'samix', '--samix-pretrained', 'samix_r18_cluttered_mnist', '--samix-mixer-lr', '0.5'],
     '--samix-mixer-lr has no effect with --samix-pretrained'),
    (['--samix-clean-weight', '1'], '--samix-clean-weight has no effect without mixing'),
    (['--mixup', '0.8', '--samix-clean-frac', '0.5'], '--samix-clean-frac has no effect without the clean-batch'),
    (['--model-ema-decay', '0.99'], '--model-ema-decay has no effect without --model-ema'),
    (['--mixup', 'samix', '--samix-mixer', 'automix', '--samix-mask-area', 'lam'],
     '--samix-mask-area has no effect with --samix-mixer automix'),
    (['--mixup', '0.8', '--mixup-switch-prob', '0.3'], '--mixup-switch-prob has no effect unless'),
])
def test_options_without_effect_are_named_before_the_run(argv, warning, tmp_path, caplog):
    """Options that do nothing in the run they were given to used to be dropped silently."""
    args, _ = parse_train_args(['--output', str(tmp_path), *argv])
    with caplog.at_level(logging.WARNING):
        check_train_args(args)
    assert warning in caplog.text


def test_options_with_effect_are_not_warned_about(tmp_path, caplog):
    for argv in (['--mixup', 'samix', '--samix-mixer-lr', '0.5', '--samix-clean-frac', '0.5'],
                 ['--mixup', '0.8', '--cutmix', '1.0', '--mixup-switch-prob', '0.3', '--samix-clean-weight', '1'],
                 ['--model-ema', '--model-ema-decay', '0.99'],
                 ['--mixup', 'samix', '--samix-mask-area', 'lam', '--samix-mixer-norm', 'qk'],
                 ['--mixup', 'samix', '--samix-mixer', 'automix', '--samix-mixer-norm', 'none']):  # as the recipes
        args, _ = parse_train_args(['--output', str(tmp_path), *argv])
        with caplog.at_level(logging.WARNING):
            check_train_args(args)
        assert 'has no effect' not in caplog.text, argv


def test_a_clean_term_of_one_image_is_refused(tmp_path, caplog):
    """One clean image in a forward of its own: BatchNorm cannot normalise it (at 32 px resnets failed inside
    BatchNorm at the first step, after a warning; issue 44): one line before the run naming the flags, the smallest
    fraction and batch size that give 2 images; a batch that gives 2 is fine."""
    args, _ = parse_train_args(['--output', str(tmp_path), '--mixup', 'samix', '-b', '4', '--samix-preset', 'quarter',
                                '--samix-clean-forward', 'separate'])
    with pytest.raises(ConfigError, match=r'^--samix-preset quarter \(clean fraction 0\.25\) with --batch-size 4 gives '
                                          r'the clean-batch term 1 image .*pass --samix-clean-frac 0\.5 or more '
                                          r'\(2 images\), --batch-size 6 or more, or --samix-clean-forward joint$'):
        check_train_args(args)
    args, _ = parse_train_args(['--output', str(tmp_path), '--mixup', '1.0', '-b', '8', '--samix-clean-weight', '1',
                                '--samix-clean-frac', '0.1'])
    with pytest.raises(ConfigError, match=r'^--samix-clean-frac 0\.1 with --batch-size 8 .*--batch-size 15 or more'):
        check_train_args(args)
    assert clean_rows(0.1, 15) == 2 and clean_rows(0.1, 14) == 1
    args, _ = parse_train_args(['--output', str(tmp_path), '--mixup', 'samix', '-b', '8', '--samix-preset', 'quarter'])
    with caplog.at_level(logging.WARNING):
        check_train_args(args)
    assert 'clean-batch term sees' not in caplog.text


def test_kwargs_are_parsed_as_timm_parses_them(tmp_path):
    """--model-kwargs/--opt-kwargs use timm's ParseKwargs (Python literals, else strings), and an item without '='
    is one usage line rather than a traceback."""
    args, _ = parse_train_args(['--output', str(tmp_path), '--model-kwargs', 'img_size=32', 'act_layer=relu',
                                'pretrained_strict=False', '--opt-kwargs', 'betas=(0.9,0.95)'])
    assert args.model_kwargs == {'img_size': 32, 'act_layer': 'relu', 'pretrained_strict': False}
    assert args.opt_kwargs == {'betas': (0.9, 0.95)}
    with pytest.raises(SystemExit):
        parse_train_args(['--model-kwargs', 'img_size'])


def test_mixer_options_are_declared_once_for_both_scripts():
    """train.py and train_ssl.py share their Mixer options through one declaration (`add_mixer_args`): same flags,
    types and help; train_ssl.py only fixes the defaults train.py chooses per run."""
    from samix_timm.engine.args import create_train_parser
    from samix_timm.ssl.args import create_ssl_parser
    from samix_timm.defaults import beta_mode
    train = {a.dest: a for a in create_train_parser()._actions}
    ssl = {a.dest: a for a in create_ssl_parser()._actions}
    shared = {d for d in ssl if d.startswith('samix_')}
    assert shared == {'samix_mixer', 'samix_feature_index', 'samix_mixer_lr', 'samix_mixer_min_lr',
                      'samix_mixer_dropout', 'samix_mask_beta', 'samix_beta_schedule', 'samix_lam_margin'}
    for dest in shared:
        assert (train[dest].option_strings, train[dest].type, train[dest].help) == (
            ssl[dest].option_strings, ssl[dest].type, ssl[dest].help), dest
    assert (train['samix_mixer_lr'].default, ssl['samix_mixer_lr'].default) == (None, 0.1)
    assert ssl['samix_beta_schedule'].default == 'constant'
    assert (beta_mode('auto', 50_000), beta_mode('auto', 1_281_167)) == ('constant', 'linear')  # train.py's rule


def test_a_negative_mask_sharpness_is_one_line():
    """--samix-mask-sharpness -1 is refused before anything is built, naming the flag and the range."""
    from samix_timm.engine.checks import check_numbers
    args, _ = parse_train_args(['--model', 'test_resnet', '--mixup', 'samix', '--samix-mask-sharpness', '-1'])
    with pytest.raises(ConfigError, match=r'--samix-mask-sharpness -1 is out of range'):
        check_numbers(args)


def test_a_library_keyword_becomes_its_flag_everywhere_in_the_message():
    """train.py users read flags: the fix at the end of a library message is translated too (it read
    '--samix-mixer-scale 0.5 needs ...: use mixer_scale=1')."""
    from samix_timm.errors import keyword_as_flag
    message = ('mixer_scale=0.5 needs a model that takes any input size; this one has a fixed patch grid: use '
               'mixer_scale=1')
    assert keyword_as_flag(message, {}, prefix='--samix-') == (
        '--samix-mixer-scale 0.5 needs a model that takes any input size; this one has a fixed patch grid: use '
        '--samix-mixer-scale 1')
    assert keyword_as_flag('eta=2 is out of range: it must be in [0, 1]', {'eta': '--samix-eta'}) == (
        '--samix-eta 2 is out of range: it must be in [0, 1]')


def test_every_online_samix_flag_is_in_the_table_and_the_table_is_parser_and_library():
    """train.py's factory passes its SAMix flags through one table (`defaults.SAMIX_FLAGS`): every --samix-* flag is
    in it or listed where it is used instead, every entry is a parser dest and a `create_samix` keyword, and the
    parser's default of each is the library's (decided once)."""
    import inspect
    from samix_timm.defaults import SAMIX_FLAGS, keyword_flags, samix_defaults
    from samix_timm.factory import OTHER_SAMIX_FLAGS
    from samix_timm.settings import MixSettings
    parser_defaults = vars(create_train_parser().parse_args([]))
    samix_dests = {d for d in parser_defaults if d.startswith('samix_')}
    assert {d for d in samix_dests if d not in OTHER_SAMIX_FLAGS} == {d for d in SAMIX_FLAGS.values()
                                                                      if d.startswith('samix_')}
    assert not set(OTHER_SAMIX_FLAGS) & set(SAMIX_FLAGS.values())
    assert set(SAMIX_FLAGS.values()) <= set(parser_defaults)
    library = {k: p.default for k, p in inspect.signature(samix_defaults).parameters.items()}
    library.update({k: getattr(MixSettings, k) for k in MixSettings.__dataclass_fields__})
    library.pop('total_steps'), library.pop('train_size')
    assert set(SAMIX_FLAGS) == set(library)  # every keyword of the one path has its flag, and only those
    differ = {k: (parser_defaults[d], library[k]) for k, d in SAMIX_FLAGS.items()
              if d.startswith('samix_') and parser_defaults[d] != library[k]}
    assert not differ  # (timm's own --lr, --weight-decay, --smoothing, --mixup-prob keep timm's defaults)
    flags = keyword_flags()
    assert (flags['mask_beta'], flags['tap_index'], flags['index'], flags['loss'], flags['prob']) == (
        '--samix-mask-beta', '--samix-feature-index', '--samix-feature-index', '--samix-mixer-loss', '--mixup-prob')


def test_train_ssl_mixer_settings_come_from_one_function():
    """train_ssl.py's Mixer settings are `ssl_mixer_defaults`' choice: its flags' defaults are that function's
    fallbacks, and `SSLMixerBranch` built bare falls back on the same constants."""
    from samix_timm.defaults import ssl_mixer_defaults
    from samix_timm.ssl.args import parse_ssl_args
    from samix_timm.ssl.mixer_branch import SSLMixerBranch
    args, _ = parse_ssl_args([])
    from_flags = ssl_mixer_defaults(
        1000, 50_000, mixer=args.samix_mixer, mixer_lr=args.samix_mixer_lr, mixer_min_lr=args.samix_mixer_min_lr,
        mixer_dropout=args.samix_mixer_dropout, mask_beta=args.samix_mask_beta,
        beta_schedule=args.samix_beta_schedule, lam_margin=args.samix_lam_margin)
    assert from_flags == ssl_mixer_defaults(1000, 50_000)
    assert (from_flags['lr'], from_flags['min_lr'], from_flags['mixer_kwargs']) == (0.1, 1e-3, dict(dropout=0.))
    assert (from_flags['beta'].beta, from_flags['beta'].mode) == (0.1, 'constant')
    assert ssl_mixer_defaults(1000, 1_281_167, beta_schedule='auto')['beta'].mode == 'linear'  # as train.py's 'auto'
    assert ssl_mixer_defaults(1000, mask_beta=0.4)['beta'].beta == 0.4
    bare = SSLMixerBranch(8, 1000, mixer_kwargs=dict(dropout=0.))
    built = SSLMixerBranch(8, 1000, **ssl_mixer_defaults(1000))
    assert bare.trainer.beta == built.trainer.beta and bare.lam_margin == built.lam_margin
    assert bare.trainer.optimizer.defaults == built.trainer.optimizer.defaults
    with pytest.raises(ConfigError, match=r'lr=0.0 is out of range: it must be > 0'):
        SSLMixerBranch(8, 10, lr=0.)
    with pytest.raises(ConfigError, match=r'momentum=1.5 is out of range'):
        SSLMixerBranch(8, 10, momentum=1.5)
    with pytest.raises(ConfigError, match=r'lam_margin=0.6 is out of range'):
        SSLMixerBranch(8, 10, lam_margin=0.6)
