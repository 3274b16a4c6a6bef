""" What the repository holds: results as jsonl/md/png/json/txt/log, never training checkpoints or run folders;
a README of one screen whose links (and those of docs/) lead somewhere. """
import re
import subprocess

import pytest

from conftest import REPO

# the only tracked torch files: the shipped SAMix^P Mixers and one test fixture of an old checkpoint layout
ALLOWED_TORCH_FILES = {'samix_timm/weights/samix_r18_cluttered_mnist-72a80135.pth',
                       'samix_timm/weights/samix_test_resnet_photo_objects-d693178c.pth', 'tests/data/samix_state_pre_split.pth'}


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


def test_readme_is_short_and_starts_with_the_two_commands():
    lines = (REPO / 'README.md').read_text().splitlines()
    assert len(lines) <= 200, f'README.md has {len(lines)} lines: move details to docs/'
    first_block = lines[lines.index('```bash') + 1:lines.index('```')]
    assert [line.split()[:2] for line in first_block] == [['make', 'demo'], ['make', 'test']]
    assert lines.index('```bash') < 10
    assert any('--mixup samix' in line for line in lines[:25]), 'the one flag belongs on the first screen'


def _anchors(path):
    """GitHub's anchors of a markdown file's headings."""
    heads = [line.lstrip('#').strip() for line in path.read_text().splitlines() if line.startswith('#')]
    return {re.sub(r'[^\w\- ]', '', h.lower()).replace(' ', '-') for h in heads}


def test_readme_and_docs_links_resolve():
    broken = []
    for page in [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]:
        text = re.sub(r'```.*?```', '', page.read_text(), flags=re.S)  # not inside code blocks
        for target in re.findall(r'\]\(([^)\s]+)\)', text):
            if target.startswith(('http://', 'https://')):
                continue
            path, _, anchor = target.partition('#')
            dest = (page.parent / path) if path else page
            if not dest.exists() or (anchor and dest.suffix == '.md' and anchor not in _anchors(dest)):
                broken.append(f'{page.relative_to(REPO)}: {target}')
    assert not broken, broken


def test_readme_own_loop_example_runs(monkeypatch):
    """The README's `create_samix` example for one's own loop, run as written (CPU: `.cuda()` is the identity here)."""
    import timm
    import torch
    text = (REPO / 'README.md').read_text()
    block = next(b for b in re.findall(r'```python\n(.*?)```', text, flags=re.S) if 'create_samix(' in b)
    monkeypatch.setattr(torch.Tensor, 'cuda', lambda self, *a, **k: self)
    torch.manual_seed(0)
    namespace = dict(model=timm.create_model('test_resnet', num_classes=1000), epochs=1, lr=0.1, dataset=range(8),
                     loader=[(torch.randn(4, 3, 32, 32), torch.randint(0, 1000, (4,)))])
    exec(compile(block, 'README.md', 'exec'), namespace)
    assert namespace['loss'].ndim == 0 and torch.isfinite(namespace['loss'])
