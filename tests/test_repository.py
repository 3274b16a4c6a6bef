""" What the repository holds: results as jsonl/md/png/json/txt/log, never training checkpoints or run folders. """
import subprocess

import pytest

from conftest import REPO

# the only tracked torch files: the shipped SAMix^P Mixer and one test fixture of an old checkpoint layout
ALLOWED_TORCH_FILES = {'samix_timm/weights/samix_r18_cluttered_mnist-034c709e.pth', 'tests/data/samix_state_pre_split.pth'}


def _tracked():
    try:
        out = subprocess.run(['git', 'ls-files'], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip('not a git checkout')
    return out.splitlines()


def test_no_checkpoint_or_run_folder_is_committed():
    files = _tracked()
    torch_files = {f for f in files if f.endswith(('.pth', '.pth.tar', '.pt', '.ckpt', '.safetensors'))}
    assert torch_files <= ALLOWED_TORCH_FILES, f'checkpoints in git: {sorted(torch_files - ALLOWED_TORCH_FILES)}'
    runs = [f for f in files if 'events.out.tfevents' in f or f.endswith('/args.yaml') and f.startswith('bench/')]
    assert not runs, f'run folders in git (commit their jsonl/md results instead): {runs[:5]}'
