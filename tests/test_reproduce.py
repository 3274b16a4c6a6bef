""" The reproduction harness (`python -m samix_timm.reproduce`) and docs/reproduce.md (issue 5). """
import csv
import re
import shutil

import pytest
import yaml

from conftest import REPO
from samix_timm import reproduce

CIFAR = [REPO / 'configs' / 'small' / f'cifar100_resnet18_{m}.yaml' for m in ('samix', 'mixup')]
TINY_RUN = ['--epochs', '2', '--img-size', '32', '--extra', '-b', '4', '--workers', '0', '--device', 'cpu']
ROW = re.compile(r'^\| (?P<config>[\w.-]+) \| (?P<gpus>\d+) × (?P<batch>\d+) \| (?P<commands>`[^|]+) \| '
                 r'(?P<expected>[^|]+) \| (?P<measured>[^|]*) \| (?P<metric>[^|]+) \| (?P<cost>[^|]*) \|$')


pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.one_thread


def _table_rows(text):
    return {m['config']: m.groupdict() for m in map(ROW.match, text.splitlines()) if m}


def _write_run(run_dir, config, top1, ema_top1=None, epochs=None):
    """A fake train.py run folder: args.yaml + summary.csv with the given per-epoch top-1."""
    run_dir.mkdir(parents=True)
    (run_dir / 'args.yaml').write_text(yaml.safe_dump(dict(config=str(config), epochs=epochs or len(top1))))
    with open(run_dir / 'summary.csv', 'w', newline='') as f:
        fields = ['epoch', 'train_loss', 'eval_loss', 'eval_top1', 'eval_top5'] + (
            ['eval_ema_top1'] if ema_top1 else []) + ['lr']
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for i, v in enumerate(top1):
            row = dict(epoch=i, train_loss=1.0, eval_loss=1.0, eval_top1=v, eval_top5=v, lr=0.1)
            if ema_top1:
                row['eval_ema_top1'] = ema_top1[i]
            w.writerow(row)
    return run_dir


def test_paper_metric():
    assert reproduce.paper_metric([1, 9, 2, 3, 4, 5, 6], 'median', 5) == 4
    assert reproduce.paper_metric([1, 2, 3, 4], 'median', 10) == 2.5  # fewer epochs than the window
    assert reproduce.paper_metric([70, 81, 80], 'best', 10) == 81
    assert reproduce.paper_metric([float('nan'), 3.0], 'median', 5) == 3.0
    assert reproduce.paper_metric([], 'best', 1) is None


def test_collect_applies_each_recipe_metric(tmp_path):
    top1 = [float(v) for v in range(60, 72)]  # 12 epochs: 60 .. 71
    resnet = _write_run(tmp_path / 'a', REPO / 'configs' / 'in1k' / 'pt100_resnet18_samix.yaml', top1,
                        ema_top1=[v - 1 for v in top1], epochs=100)
    r = reproduce.collect(resnet)
    assert (r.config, r.epochs_done, r.epochs) == ('pt100_resnet18_samix', 12, 100)
    assert (r.top1, r.ema_top1) == (69.0, 68.0)  # median of the last 5 epochs (67 .. 71)
    assert reproduce.collect(_write_run(tmp_path / 'b', 'configs/in1k/pt300_resnet18_samix.yaml', top1)).top1 == 66.5
    deit = _write_run(tmp_path / 'c', 'configs/in1k/deit300_deit_small_patch16_224_samix.yaml', top1[::-1])
    r = reproduce.collect(deit)
    assert r.top1 == 71.0 and r.ema_top1 is None  # best epoch; no EMA column
    assert reproduce.metric_text(r.config, r) == 'best epoch (this run: 12 of 300 ep)'
    assert reproduce.metric_text('pt100_resnet18_samix') == 'median of last 5 ep'
    assert reproduce.metric_text('rsb-a3_resnet50_samix').startswith('median of last 5 ep (paper: tested at 224 px')


def test_expected_numbers_are_spec_section_8():
    e = reproduce.EXPECTED
    section_8 = {  # recipe row -> Mixup, CutMix, AutoMix, SAMix
        'pt100_resnet18': (69.98, 68.95, 70.50, 70.83), 'pt100_resnet50': (77.12, 77.17, 77.91, 78.14),
        'pt300_resnet18': (71.72, 71.01, 72.05, 72.27), 'pt300_resnet50': (78.44, 78.69, 79.25, 79.39),
        'rsb-a3_resnet50': (77.66, 77.62, 78.44, 78.64),
        'deit300_deit_small_patch16_224': (77.72, 80.13, 80.78, 80.94),
        'swin300_swin_tiny_patch4_window7_224': (81.01, 81.33, 81.80, 81.87),
    }
    for prefix, values in section_8.items():
        for method, top1 in zip(('mixup', 'cutmix', 'automix', 'samix'), values):
            assert (e[f'{prefix}_{method}'].top1, e[f'{prefix}_{method}'].source) == (top1, '§8'), prefix + method
    assert e['rsb-a3_resnet50_rsb'].top1 == 78.08 and e['deit300_deit_small_patch16_224_deit'].top1 == 79.80
    assert e['swin300_swin_tiny_patch4_window7_224_swin'].top1 == 81.20
    assert set(e) == {p.stem for p in reproduce.list_configs()}
    for stem, expected in e.items():
        assert expected.source in reproduce.SOURCES or (expected.top1 is None and expected.source == '—'), stem


def test_docs_table_has_one_row_per_config():
    docs = (REPO / 'docs' / 'reproduce.md').read_text()
    rows = _table_rows(docs.split('\n## The table\n')[1].split('\n## ')[0])
    paths = reproduce.list_configs()
    assert list(rows) == [p.stem for p in paths], 'regenerate with: python -m samix_timm.reproduce --markdown'
    for path in paths:
        row, generated = rows[path.stem], ROW.match(reproduce.table_row(path))
        for column in ('gpus', 'batch', 'commands', 'expected', 'metric'):
            assert row[column].strip() == generated[column].strip(), (path.stem, column)
        assert f'-c configs/{path.parent.name}/{path.name}' in row['commands']
    assert reproduce.TABLE_HEADER in docs


def test_train_command_overrides():
    deit = REPO / 'configs' / 'in1k' / 'deit300_deit_small_patch16_224_samix.yaml'
    cmd = reproduce.train_command(deit, REPO / 'out', data_dir='d', epochs=1, img_size=32)
    assert cmd[cmd.index('--model-kwargs') + 1] == 'img_size=32'  # ViTs are built for one size
    cmd = reproduce.train_command(deit, REPO / 'out', nproc=8)
    assert 'torch.distributed.run' in cmd and '--model-kwargs' not in cmd
    rsb = REPO / 'configs' / 'in1k' / 'rsb-a1_resnet50_samix.yaml'  # repeated augmentation needs torchrun
    cmd = reproduce.train_command(rsb, REPO / 'out', data_dir='d', epochs=1, img_size=32)
    assert cmd[cmd.index('--aug-repeats') + 1] == '0'
    assert '--aug-repeats' not in reproduce.train_command(rsb, REPO / 'out', nproc=8)
    cub = REPO / 'configs' / 'small' / 'cub200_resnet18_samix.yaml'
    assert '--pretrained' in reproduce.train_command(cub, REPO / 'out')
    assert '--pretrained' not in reproduce.train_command(cub, REPO / 'out', pretrained=False)
    single, multi = reproduce.commands(REPO / 'configs' / 'in1k' / 'rsb-a3_resnet50_samix.yaml')
    assert single.startswith('torchrun --nproc_per_node 8 train.py -c configs/in1k/rsb-a3_resnet50_samix.yaml')
    assert '--nnodes 2' in multi and multi.endswith('-b 128')  # 2 x 8 x 128 = the recipe's 2048


def test_measure_cost_and_hours():
    images_per_s = reproduce.measure_cost(CIFAR[0], 'cpu', batch_size=4, steps=1, img_size=32)
    assert images_per_s > 0
    assert reproduce.device_hours(100.0, epochs=10, train_images=36_000) == pytest.approx(1.0)
    assert reproduce.cost_text(CIFAR[0], 50.0, 'cpu').endswith('→ 222 cpu-hours')  # 800 x 50,000 / 50 / 3600


@pytest.mark.slow
def test_harness_turns_two_tiny_runs_into_the_docs_table(tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('OMP_NUM_THREADS', '1')  # the train.py processes, see one_thread
    out = tmp_path / 'runs'
    code = reproduce.main(['--configs', *map(str, CIFAR), '--data-dir', str(tiny_data), '--output', str(out),
                           *TINY_RUN])
    table = capsys.readouterr().out
    assert code == 0, table
    assert reproduce.TABLE_HEADER in table
    rows = _table_rows(table)
    assert list(rows) == [p.stem for p in CIFAR]
    for path in CIFAR:
        row = rows[path.stem]
        assert re.fullmatch(r'\d+\.\d\d / —', row['measured']), row['measured']  # online / no EMA
        assert row['metric'].strip() == 'median of last 10 ep (this run: 2 of 800 ep)'
        assert row['commands'] == ROW.match(reproduce.table_row(path))['commands']
        run = out / path.stem
        with open(run / 'summary.csv') as f:
            top1 = [float(r['eval_top1']) for r in csv.DictReader(f)]
        assert len(top1) == 2 and row['measured'].strip().startswith(f'{sum(top1) / 2:.2f}')
        assert (out / f'{path.stem}.log').is_file()
    # collect-only mode gives the same table from the run folders
    assert reproduce.main(['--collect', *(str(out / p.stem) for p in CIFAR)]) == 0
    assert _table_rows(capsys.readouterr().out) == rows
    # a recipe that tests at another size (RSB A3: 160 -> 224) gets its last checkpoint validated there
    monkeypatch.setitem(reproduce.RECIPES, 'cifar100', reproduce.Recipe(1, 50_000, '$CIFAR100', test_img_size=48))
    result = reproduce.collect(out / CIFAR[0].stem)
    assert result.test_top1 is not None and 'last epoch at 48 px' in reproduce.table_row(CIFAR[0], result)
    shutil.rmtree(out)  # ~0.5 GB of checkpoints; pytest keeps old tmp dirs


def test_a_second_run_of_a_config_keeps_the_first_log(tmp_path, monkeypatch):
    """The log of an earlier run of the same config used to be overwritten; the next one gets a numbered name."""
    import subprocess
    from types import SimpleNamespace
    from samix_timm.reproduce import runner
    config = reproduce.list_configs()[0]

    def fake_run(cmd, stdout, **kwargs):
        stdout.write(f'run {len(list(tmp_path.glob("*.log")))}\n')
        return SimpleNamespace(returncode=1)

    monkeypatch.setattr(subprocess, 'run', fake_run)
    for _ in range(2):
        assert runner.run_config(config, tmp_path).error.startswith('failed (run ')
    assert sorted(p.name for p in tmp_path.glob('*.log')) == [f'{config.stem}-1.log', f'{config.stem}.log']
    assert (tmp_path / f'{config.stem}.log').read_text() == 'run 1\n'
