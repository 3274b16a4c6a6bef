""" SAMix^P bad inputs: one clear line each (hub, --samix-pretrained, export), and the batch normalisation.

Artifacts are the shipped Mixer or made here from a hand-built train.py-style checkpoint (no training).
"""
import argparse
import random
import subprocess
import sys

import pytest
import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_dataset, create_loader

from conftest import FAST_ARGS, REPO
from samix_timm.cli import run_train
from samix_timm.engine import parse_train_args
from samix_timm.engine.checks import warn_no_effect
from samix_timm.errors import ConfigError
from samix_timm.export import main as export_main
from samix_timm.factory import create_mixup
from samix_timm.hub import WEIGHTS_DIR, create_pretrained_mixer, get_entry, hub_entrypoint
from samix_timm.mixer import create_mixer

SHIPPED = 'samix_r18_cluttered_mnist'
IMAGENET = dict(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)
LAMS = (0.3, 0.5, 0.7)


def _checkpoint(samix: bool = True) -> dict:
    """What train.py saves (timm entries, args as a Namespace), with an untrained SAMix state if `samix`."""
    model = timm.create_model('test_resnet', num_classes=10)
    args = argparse.Namespace(model='test_resnet', num_classes=10, img_size=32, mean=[0.1] * 3, std=[0.25] * 3)
    checkpoint = dict(epoch=0, arch='test_resnet', state_dict=model.state_dict(), args=args)
    if samix:
        mixer = create_mixer('samix', in_channels=model.feature_info[2]['num_chs'])
        checkpoint['samix'] = dict(step=0, feature_index=2, mixer_name='samix', mixer_config=mixer.config,
                                   mixer=mixer.state_dict(), encoder=model.state_dict())
    return checkpoint


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp('checkpoints')
    torch.save(_checkpoint(), folder / 'samix.pth.tar')
    torch.save(_checkpoint(samix=False), folder / 'mixup.pth.tar')
    return folder


@pytest.fixture(scope='module')
def shipped_bytes() -> bytes:
    return (WEIGHTS_DIR / get_entry(SHIPPED).file).read_bytes()


@pytest.fixture(scope='module')
def imagenet_batch(small_data) -> torch.Tensor:
    """100 validation images normalised as a timm user's loader does by default (ImageNet mean/std)."""
    ds = create_dataset('', root=str(small_data), split='validation')
    loader = create_loader(ds, input_size=(3, 32, 32), batch_size=100, use_prefetcher=False, crop_pct=1.0,
                           num_workers=0, **IMAGENET)
    return next(iter(loader))[0]


def _mask_means(mixer, x: torch.Tensor) -> list:
    index = torch.roll(torch.arange(len(x)), 1)
    return [float(mixer.mask(x, lam, index).mean()) for lam in LAMS]


def _export_error(capsys, *argv) -> str:
    """stderr of a failing export: exit code 2, exactly one `error: ...` line, nothing on stdout."""
    assert export_main(list(argv)) == 2
    out, err = capsys.readouterr()
    assert out == '' and len(err.splitlines()) == 1 and err.startswith('error: '), err
    return err


def _train_argv(data, out, *argv) -> list:
    return ['--data-dir', str(data), '--output', str(out), *FAST_ARGS, '--epochs', '1', '--mixup', 'samix', *argv]


# --- batch normalisation: right by construction ------------------------------------------------------------------

def test_hub_mixer_on_imagenet_normalised_batches_follows_lam(imagenet_batch):
    mixer = torch.hub.load(str(REPO), SHIPPED, source='local', trust_repo=True, num_classes=10, data_config=IMAGENET)
    means = _mask_means(mixer, imagenet_batch)
    assert all(abs(m - (1 - lam)) < 0.15 for lam, m in zip(LAMS, means)), means


def test_samix_pretrained_uses_the_runs_data_config(imagenet_batch, tmp_path):
    args, _ = parse_train_args(['--data-dir', str(tmp_path), *FAST_ARGS, '--mean', *map(str, IMAGENET_DEFAULT_MEAN),
                                '--std', *map(str, IMAGENET_DEFAULT_STD), '--mixup', 'samix',
                                '--samix-pretrained', SHIPPED])
    mixer = create_mixup(args, timm.create_model('test_resnet', num_classes=10), 10, steps_per_epoch=1)
    means = _mask_means(mixer, imagenet_batch)
    assert all(abs(m - (1 - lam)) < 0.15 for lam, m in zip(LAMS, means)), means


def _run_mixer(tmp_path, *argv):
    """The SAMix^P mixer train.py builds with `argv` (its checks and warnings first), and the warnings."""
    args, _ = parse_train_args(['--data-dir', str(tmp_path), *FAST_ARGS, '--mean', *map(str, IMAGENET_DEFAULT_MEAN),
                                '--std', *map(str, IMAGENET_DEFAULT_STD), '--mixup', 'samix', *argv])
    notes = warn_no_effect(args)
    return create_mixup(args, timm.create_model('test_resnet', num_classes=10), 10, steps_per_epoch=1), notes


def test_samix_pretrained_path_takes_the_mask_area_flag(imagenet_batch, tmp_path):
    # before: --samix-mask-area was "no effect with --samix-pretrained" and an artifact given by path kept its free
    # area (0.62 / 0.49 / 0.36 on the photographs), so its soft labels were off; only a hub entry could fix the area
    path = str(WEIGHTS_DIR / get_entry(SHIPPED).file)
    free, _ = _run_mixer(tmp_path, '--samix-pretrained', path)
    lam_area, notes = _run_mixer(tmp_path, '--samix-pretrained', path, '--samix-mask-area', 'lam')
    assert notes == []
    assert all(abs(m - (1 - lam)) < 1e-3 for lam, m in zip(LAMS, _mask_means(lam_area, imagenet_batch)))
    assert max(abs(m - (1 - lam)) for lam, m in zip(LAMS, _mask_means(free, imagenet_batch))) > 0.01


def test_samix_mask_area_flag_wins_over_the_hub_entrys(imagenet_batch, tmp_path):
    entry, _ = _run_mixer(tmp_path, '--samix-pretrained', f'{SHIPPED}_lam')
    free, _ = _run_mixer(tmp_path, '--samix-pretrained', f'{SHIPPED}_lam', '--samix-mask-area', 'free')
    assert all(abs(m - (1 - lam)) < 1e-3 for lam, m in zip(LAMS, _mask_means(entry, imagenet_batch)))
    assert max(abs(m - (1 - lam)) for lam, m in zip(LAMS, _mask_means(free, imagenet_batch))) > 0.01


def test_recipe_mask_area_over_a_hub_entrys_is_said_and_logged(imagenet_batch, tmp_path, caplog):
    # a reproduction recipe pins the online Mixer's `samix_mask_area: free`; beside the `_lam` hub entry it replaces
    # the entry's area: a warning says so and the log names the area in use (not a silent change of soft labels)
    recipe = tmp_path / 'recipe.yaml'
    recipe.write_text('samix_mask_area: free\n')
    with caplog.at_level('INFO', logger='samix_timm.factory'):
        mixer, _ = _run_mixer(tmp_path, '--config', str(recipe), '--samix-pretrained', f'{SHIPPED}_lam')
    assert mixer.mixer.area == 'free'
    assert f"--samix-mask-area free (flag or recipe) replaces the mask area 'lam' of the hub entry {SHIPPED}_lam" \
        in caplog.text
    assert 'mask area free (from --samix-mask-area)' in caplog.text
    caplog.clear()
    with caplog.at_level('INFO', logger='samix_timm.factory'):
        _run_mixer(tmp_path, '--samix-pretrained', f'{SHIPPED}_lam')
    assert 'replaces the mask area' not in caplog.text and 'mask area lam (from the hub entry)' in caplog.text


def test_mask_area_beside_samix_pretrained_is_not_called_automix_only(tmp_path):
    # --samix-mixer automix is about the online Mixer; a frozen SAMix Mixer takes --samix-mask-area all the same
    _, notes = _run_mixer(tmp_path, '--samix-pretrained', SHIPPED, '--samix-mixer', 'automix', '--samix-mask-area', 'lam')
    assert not any('mask-area' in n for n in notes), notes


def test_samix_mask_area_flag_on_an_automix_artifact_names_the_flag(tmp_path):
    checkpoint = _checkpoint()
    mixer = create_mixer('automix', in_channels=checkpoint['samix']['mixer_config']['in_channels'])
    checkpoint['samix'].update(mixer_name='automix', mixer_config=mixer.config, mixer=mixer.state_dict())
    torch.save(checkpoint, tmp_path / 'automix.pth.tar')
    assert export_main(['--checkpoint', str(tmp_path / 'automix.pth.tar'), '--out', str(tmp_path / 'am')]) == 0
    (path,) = tmp_path.glob('am-*.pth')
    with pytest.raises(ConfigError, match=r"^--samix-mask-area 'lam' sets the area of a SAMix Mixer; this artifact "
                                          r"holds an 'automix' Mixer: leave it out$"):
        _run_mixer(tmp_path, '--samix-pretrained', str(path), '--samix-mask-area', 'lam')


def test_missing_batch_normalisation_is_refused():
    # before: the Mixer silently assumed its own normalisation (masks 1.00 / 0.72 / 0.01 on ImageNet batches)
    with pytest.raises(ConfigError, match=r'needs the normalisation of the batches.*pass data_config=.*mean 0\.1'):
        create_pretrained_mixer(SHIPPED, num_classes=10)


def test_batch_normalisation_of_wrong_length():
    with pytest.raises(ConfigError, match=r'does not fit the artifact: pass 3 means and 3 stds > 0'):
        create_pretrained_mixer(SHIPPED, num_classes=10, input_mean=(0.5,), input_std=(0.5,))


# --- --samix-pretrained / create_pretrained_mixer / hub: bad names and files ---------------------------------------

def test_unknown_hub_name_lists_the_names():
    with pytest.raises(ConfigError, match=rf'neither a hub name nor a file \(did you mean {SHIPPED}\?\): pass one '
                                          rf'of {SHIPPED}, {SHIPPED}_lam, samix_r18_in1k'):
        create_pretrained_mixer('samix_r18_cluttered_mnst', data_config=IMAGENET)


def test_missing_artifact_path_lists_the_names(tmp_path):
    path = tmp_path / 'nope-1234abcd.pth'
    with pytest.raises(ConfigError, match=rf"'{path}' is neither a hub name nor a file: pass one of {SHIPPED}"):
        create_pretrained_mixer(str(path), data_config=IMAGENET)


def test_truncated_artifact(tmp_path, shipped_bytes):
    cut = tmp_path / 'mine.pth'
    cut.write_bytes(shipped_bytes[:len(shipped_bytes) // 2])
    with pytest.raises(ConfigError, match=r"cannot be read as a torch file \(RuntimeError\): it is truncated"):
        create_pretrained_mixer(str(cut), data_config=IMAGENET)


def test_random_bytes_artifact(tmp_path):
    junk = tmp_path / 'junk.pth'
    junk.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(ConfigError, match=r'cannot be read as a torch file .*not a Mixer artifact'):
        create_pretrained_mixer(str(junk), data_config=IMAGENET)


def test_training_checkpoint_as_artifact(checkpoints):
    path = checkpoints / 'samix.pth.tar'
    with pytest.raises(ConfigError, match=rf"is a training checkpoint, not a Mixer artifact: export it first with "
                                          rf"`python -m samix_timm.export --checkpoint {path} --out mixers/NAME`"):
        create_pretrained_mixer(str(path), data_config=IMAGENET)


def test_checkpoint_without_a_mixer_as_artifact_is_not_told_to_export(checkpoints):
    """A plain-mixup checkpoint was told to go through samix_timm.export, which then refuses it (issue 44 audit)."""
    with pytest.raises(ConfigError, match=r"is a training checkpoint of a run without a learned Mixer") as e:
        create_pretrained_mixer(str(checkpoints / 'mixup.pth.tar'), data_config=IMAGENET)
    assert 'export it first' not in str(e.value)


class _Trap:
    """Unpickling this would write a file: samix-timm must refuse it without running it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, 'w')


def test_foreign_pickle_is_refused_not_unpickled(tmp_path):
    path, marker = tmp_path / 'evil.pth', tmp_path / 'ran'
    torch.save({'format_version': 1, 'x': _Trap(str(marker))}, path)
    with pytest.raises(ConfigError, match=r'holds a pickled [\w.]*open, which a Mixer artifact never holds'):
        create_pretrained_mixer(str(path), data_config=IMAGENET)
    assert not marker.exists()


def test_sha256_in_name_does_not_match(tmp_path, shipped_bytes):
    renamed = tmp_path / 'samix_r18_cluttered_mnist-deadbeef.pth'
    renamed.write_bytes(shipped_bytes)
    shipped = get_entry('samix_r18_cluttered_mnist').sha256[:16]
    with pytest.raises(ConfigError, match=rf'has sha256 {shipped}\.\.\., expected deadbeef\.\.\.: the file is '
                                          r'corrupt or truncated'):
        create_pretrained_mixer(str(renamed), data_config=IMAGENET)


def test_train_py_samix_pretrained_unknown_name(small_data, tmp_path, capsys):
    assert run_train(_train_argv(small_data, tmp_path, '--samix-pretrained', 'samix_nope')) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # (earlier runs' log handlers may write above it)
    assert last.startswith("error: pre-trained Mixer 'samix_nope' is neither a hub name nor a file") and SHIPPED in last


def test_train_py_process_samix_pretrained_training_checkpoint(small_data, tmp_path, checkpoints):
    # a process of its own: its stderr holds train.py's log lines, then the one error line, no traceback
    argv = _train_argv(small_data, tmp_path, '--samix-pretrained', str(checkpoints / 'samix.pth.tar'))
    proc = subprocess.run([sys.executable, 'train.py', *argv], capture_output=True, text=True, cwd=REPO, timeout=300)
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr
    assert errors == proc.stderr.strip().splitlines()[-1:]
    assert 'is a training checkpoint, not a Mixer artifact' in errors[0]


# --- hub entrypoint arguments ------------------------------------------------------------------------------------

def test_hub_unknown_kwarg():
    with pytest.raises(ConfigError, match=r"unknown argument 'num_clases' \(did you mean num_classes\?\).*it takes "
                                          r"num_classes, alpha"):
        hub_entrypoint(SHIPPED)(num_clases=10, data_config=IMAGENET)


def test_hub_num_classes_not_positive():
    with pytest.raises(ConfigError, match=r'num_classes=0 is out of range: it must be >= 1'):
        hub_entrypoint(SHIPPED)(num_classes=0, data_config=IMAGENET)


def test_hub_prob_outside_unit_interval():
    with pytest.raises(ConfigError, match=r'prob=1\.5 is out of range: it must be in \[0, 1\]'):
        hub_entrypoint(SHIPPED)(num_classes=10, prob=1.5, data_config=IMAGENET)


def test_hub_mixer_refuses_uint8_images():
    """uint8 pixels were mixed as if normalised and returned as uint8 (issue 44): one line naming `x` and the fix,
    from the call, `mask` and `preview` alike; a float batch of the same images is mixed."""
    mixer = hub_entrypoint(SHIPPED)(num_classes=10, data_config=IMAGENET)
    x, y = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), torch.arange(4)
    for call in (lambda: mixer(x, y), lambda: mixer.mask(x, 0.5, torch.arange(4)), lambda: mixer.preview(x)):
        with pytest.raises(ValueError, match=r'^x is a torch\.uint8 tensor: the pre-trained Mixer mixes float batches '
                                             r'normalised .*convert the images to float in \[0, 1\] and normalise'):
            call()
    x_mix, _ = mixer((x.float() / 255 - 0.45) / 0.225, y)
    assert x_mix.dtype == torch.float32
    grey = torch.rand(4, 1, 32, 32)  # was broadcast against the 3-channel mean/std and mixed, without a word
    for call in (lambda: mixer(grey, y), lambda: mixer.mask(grey, 0.5, torch.arange(4))):
        with pytest.raises(ValueError, match=r"^x has 1 channel\(s\): this Mixer's extractor reads 3"):
            call()


# --- python -m samix_timm.export ---------------------------------------------------------------------------------

def test_export_round_trip_then_existing_output_is_not_overwritten(checkpoints, tmp_path, capsys):
    out = tmp_path / 'mine'
    assert export_main(['--checkpoint', str(checkpoints / 'samix.pth.tar'), '--out', str(out)]) == 0
    (path,) = tmp_path.glob('mine-*.pth')
    before = path.read_bytes()
    mixer = create_pretrained_mixer(str(path), num_classes=10, data_config=IMAGENET)
    assert mixer.artifact_info['extractor'] == 'test_resnet'
    capsys.readouterr()
    err = _export_error(capsys, '--checkpoint', str(checkpoints / 'samix.pth.tar'), '--out', str(out))
    assert f"'{path}' exists: remove it or choose another path" in err
    assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [path]  # no temporary file left


def test_export_missing_checkpoint(tmp_path, capsys):
    err = _export_error(capsys, '--checkpoint', str(tmp_path / 'last.pth.tar'), '--out', str(tmp_path / 'm'))
    assert "last.pth.tar' does not exist: pass the last.pth.tar of a `train.py --mixup samix`" in err


def test_export_truncated_checkpoint(checkpoints, tmp_path, capsys):
    data = (checkpoints / 'samix.pth.tar').read_bytes()
    cut = tmp_path / 'last.pth.tar'
    cut.write_bytes(data[:len(data) // 3])
    err = _export_error(capsys, '--checkpoint', str(cut), '--out', str(tmp_path / 'm'))
    assert 'cannot be read as a torch file (RuntimeError): it is truncated, corrupt or not a training checkpoint' in err


def test_export_random_bytes_checkpoint(tmp_path, capsys):
    junk = tmp_path / 'last.pth.tar'
    junk.write_bytes(random.Random(0).randbytes(4096))
    err = _export_error(capsys, '--checkpoint', str(junk), '--out', str(tmp_path / 'm'))
    assert 'cannot be read as a torch file' in err and 'weights_only=False' not in err


def test_export_checkpoint_without_samix_state(checkpoints, tmp_path, capsys):
    err = _export_error(capsys, '--checkpoint', str(checkpoints / 'mixup.pth.tar'), '--out', str(tmp_path / 'm'))
    assert 'holds no SAMix state (a run without a learned Mixer, e.g. plain mixup)' in err


def test_export_an_artifact(tmp_path, capsys):
    shipped = WEIGHTS_DIR / get_entry(SHIPPED).file
    err = _export_error(capsys, '--checkpoint', str(shipped), '--out', str(tmp_path / 'm'))
    assert 'is already a Mixer artifact: use it as it is' in err


def test_export_output_folder_not_writable(checkpoints, tmp_path, capsys):
    blocker = tmp_path / 'mixers'
    blocker.write_text('a file where the folder should be')  # unwritable even for root
    err = _export_error(capsys, '--checkpoint', str(checkpoints / 'samix.pth.tar'), '--out', str(blocker / 'm'))
    assert f"--out '{blocker / 'm'}' cannot be written (" in err and 'folder you can write to' in err


def test_export_cli_process_prints_one_line(tmp_path):
    proc = subprocess.run([sys.executable, '-m', 'samix_timm.export', '--checkpoint', str(tmp_path / 'nope.pth.tar'),
                           '--out', str(tmp_path / 'm')], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ''
    assert proc.stderr.startswith('error: --checkpoint ') and len(proc.stderr.splitlines()) == 1, proc.stderr


@pytest.mark.parametrize('out,expected', [('', "--out '' names a folder, not a file"),
                                          ('mixers/', "--out 'mixers/' names a folder, not a file")])
def test_export_out_that_names_no_file(checkpoints, tmp_path, capsys, monkeypatch, out, expected):
    """An empty --out (a traceback from pathlib before) or one ending in '/' (an artifact named '-<hash>.pth'
    written beside it before) is one line; nothing is written."""
    monkeypatch.chdir(tmp_path)
    err = _export_error(capsys, '--checkpoint', str(checkpoints / 'samix.pth.tar'), '--out', out)
    assert expected in err and list(tmp_path.iterdir()) == []


def test_export_checkpoint_is_a_folder(tmp_path, capsys):
    err = _export_error(capsys, '--checkpoint', str(tmp_path), '--out', str(tmp_path / 'm'))
    assert f"--checkpoint '{tmp_path}' is a folder, not a file" in err



@pytest.mark.parametrize('target, message', [
    (torch.tensor([0, 1, 2, 10]), r'target holds label 10, outside the 10 classes of this Mixer \(num_classes=10\): '
                                  r'pass num_classes=11 or more'),
    (torch.tensor([0, 1, 2, -1]), r'target holds label -1, .*: pass class indices >= 0'),
    (torch.eye(10)[:4], r'target has shape \(4, 10\) for 4 images \(one-hot or soft targets\): pass the class index'),
    (torch.tensor([0, 1, 2]), r'target has shape \(3,\) for 4 images'),
    ([0, 1, 2, 3], r'target is a list: pass the class indices as a tensor'),
    (torch.tensor([0.5, 1, 2, 3]), r'target is a torch.float32 tensor of values that are not class indices'),
])
def test_hub_mixer_refuses_labels_it_would_misread(target, message):
    """Labels outside num_classes (an IndexError/RuntimeError deep in soft_target), one-hot targets (silently one
    row per class entry: 40 rows for 4 images), a wrong count or a list (issue 44): one line naming `target`."""
    mixer = hub_entrypoint(SHIPPED)(num_classes=10, data_config=IMAGENET)
    with pytest.raises(ConfigError, match=message):
        mixer(torch.randn(4, 3, 32, 32), target)
    x, soft = mixer(torch.randn(4, 3, 32, 32), torch.tensor([[0], [1], [2], [9]]))  # (N, 1) labels still mix
    assert soft.shape == (4, 10)
