""" The one run of train.py and train_ssl.py (`engine.run.run_epochs`): both scripts train through its epoch loop,
with their own hooks, and refuse a finished run through its one epochs-left check. """
import csv

import pytest
import torch

import samix_timm.engine.run as run_module
from samix_timm.engine.args import parse_train_args
from samix_timm.engine.run import write_epoch_logs
from samix_timm.engine.train import train
from samix_timm.errors import ConfigError
from samix_timm.ssl.args import parse_ssl_args
from samix_timm.ssl.engine import train_ssl

# a 2-step CPU run on a 4-class ImageFolder of 8 training images (as tests/test_errors.py)
TRAIN = ['--model', 'test_resnet', '--num-classes', '4', '--img-size', '32', '-b', '4', '--epochs', '1',
         '--workers', '0', '--device', 'cpu', '--warmup-epochs', '0', '--lr', '0.01']
SSL = ['--model', 'test_resnet', '--img-size', '32', '-b', '4', '--epochs', '1', '--queue-size', '16',
       '--proj-hidden', '32', '--workers', '0', '--device', 'cpu', '--knn-interval', '0']


def test_both_scripts_train_through_one_run_and_one_epochs_left_check(tiny_data, tmp_path, monkeypatch, one_thread):
    epochs, checks = [], []  # every epoch the loop of run_epochs trained; every epochs-left check, by its hooks
    real_epoch, real_check = run_module.train_one_epoch, run_module.check_epochs_left

    def recorded_epoch(epoch, task, *args, **kwargs):
        epochs.append((epoch, type(task).__name__))
        return real_epoch(epoch, task, *args, **kwargs)

    def recorded_check(start_epoch, num_epochs, args, hooks):
        checks.append(type(hooks).__name__)
        return real_check(start_epoch, num_epochs, args, hooks)

    monkeypatch.setattr(run_module, 'train_one_epoch', recorded_epoch)
    monkeypatch.setattr(run_module, 'check_epochs_left', recorded_check)
    scripts = (('train', parse_train_args, train, TRAIN), ('ssl', parse_ssl_args, train_ssl, SSL))
    runs = {}
    for name, parse, entry, argv in scripts:
        args, text = parse([*argv, '--data-dir', str(tiny_data), '--output', str(tmp_path), '--experiment', name])
        runs[name] = entry(args, text).checkpoint
    assert epochs == [(0, 'MixTask'), (0, 'MoCoTask')]

    # resuming either finished run: the same line, with the command that evaluates that script's checkpoint
    lines = {}
    for name, parse, entry, argv in scripts:
        args, text = parse([*argv, '--data-dir', str(tiny_data), '--output', str(tmp_path), '--experiment', 'again',
                            '--resume', str(runs[name])])
        with pytest.raises(ConfigError) as e:
            entry(args, text)
        lines[name] = str(e.value).replace(str(runs[name]), 'CKPT')
    head = ('--resume CKPT: that run has trained 1 of 1 epochs, nothing is left to train; to train longer pass '
            '--epochs above 1 (its schedule becomes that of the longer run), to evaluate it: ')
    data = f'--checkpoint CKPT --data-dir {tiny_data}'
    assert lines == dict(train=f'{head}python validate.py {data}', ssl=f'{head}python -m samix_timm.ssl.probe {data}')
    assert len(epochs) == 2 and not (tmp_path / 'again').exists()  # refused before training or writing
    assert checks == ['ClassifierRun', 'MoCoRun'] * 2


def test_epoch_logs_keep_the_first_rows_columns(tmp_path):
    """A later epoch without a metric of the first (no Mixer update that epoch) gets a blank in its column; an
    empty value (the kNN column between monitors) is written to summary.csv, not to tensorboard."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)

    class Board:
        scalars = []

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, step))

    board = Board()
    write_epoch_logs(0, dict(loss=1.0, mixer_loss=2.0), dict(knn_top1=''), optimizer, tmp_path, board, True,
                     tb_tags=('epoch', 'epoch'))
    write_epoch_logs(1, dict(loss=0.5), dict(knn_top1=40.0), optimizer, tmp_path, board, False)
    with open(tmp_path / 'summary.csv') as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ['epoch', 'train_loss', 'train_mixer_loss', 'eval_knn_top1', 'lr']
    assert rows[0]['eval_knn_top1'] == '' and rows[1]['train_mixer_loss'] == 'nan' and rows[1]['lr'] == '0.5'
    assert board.scalars == [('epoch/loss', 0), ('epoch/mixer_loss', 0), ('train_epoch/loss', 1),
                             ('train_epoch/mixer_loss', 1), ('eval/knn_top1', 1)]
