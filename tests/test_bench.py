""" bench/accuracy.py bookkeeping: the rule that picks the default preset, per-budget tables, resume. """
import importlib.util
import json

import numpy as np
import pytest

from conftest import REPO


@pytest.fixture(scope='module')
def accuracy():
    spec = importlib.util.spec_from_file_location('bench_accuracy', REPO / 'bench' / 'accuracy.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('paper,fast,choice', [
    ([90.0, 91.0, 92.0], [90.0, 90.5, 91.5], 'fast'),   # mean 90.67 >= 91.0 - std 1.0
    ([90.0, 91.0, 92.0], [89.0, 89.5, 90.0], 'paper'),  # mean 89.5 < 91.0 - 1.0
    ([91.0], [90.9], 'paper'),                          # one seed: no tolerance, any loss keeps paper
    ([91.0], [91.0], 'fast'),
])
def test_preset_verdict(accuracy, paper, fast, choice):
    assert accuracy.preset_verdict(np.array(paper), np.array(fast)).endswith(f'default `{choice}`')


def test_table_keeps_budgets_apart(accuracy, tmp_path):
    rows = [dict(method='vanilla', seed=0, model='test_resnet', epochs=30, img_size=64, top1=92.0, ema_top1=88.0, wall_s=600),
            dict(method='vanilla', seed=1, model='test_resnet', epochs=30, img_size=64, top1=94.0, ema_top1=90.0, wall_s=660),
            dict(method='vanilla', seed=0, epochs=30, img_size=32, top1=10.0, ema_top1=10.0, wall_s=60)]  # resnet18, old record
    (tmp_path / 'accuracy_runs.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    text = accuracy.table(tmp_path, tmp_path / 'missing.json', 'test_resnet', 'test_resnet', 30, 64, ['vanilla'])
    row = text.splitlines()[2]
    assert row.startswith('| vanilla | 2 | 93.00 ± 1.41 | 89.00 ± 1.41 | 10.5 |'), row
    old = accuracy.table(tmp_path, tmp_path / 'missing.json', 'resnet18', 'resnet18', 30, 32, ['vanilla'])
    assert '| vanilla | 1 | 10.00 (1 run) |' in old
