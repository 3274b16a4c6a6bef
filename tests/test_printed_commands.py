""" Every command our scripts print for the user to type next, run verbatim (issue 44: a printed `probes:` command
crashed and no test ran it as printed).

A tiny run of train.py and of train_ssl.py (test_resnet, 32 px, 8 training images) is driven to each place that
prints a command: the end of a run, Ctrl-C after the first checkpoint (the resume command), resuming a finished run
(the command that evaluates it) and a training checkpoint given where a Mixer artifact goes (the export command).
Each printed `python ...` command is split with shlex and run in-process through its entry point, with nothing
appended; it must exit 0 and do what the line says. Not run: `tensorboard --logdir DIR` (another tool's command:
the folder is checked instead). The end-of-run `probes:` command of train_ssl.py is run by
tests/test_ssl_train.py::test_cli_run_logs_collapse_signals_and_saves_through_timm; here it is run too (8 images).
"""
import logging
import re
import shlex
from pathlib import Path
from typing import List

import pytest

import samix_timm.engine.run as run_module
from samix_timm.cli import run_train, run_train_ssl, run_validate
from samix_timm.export import main as export_main
from samix_timm.ssl.export import main as ssl_export_main
from samix_timm.ssl.probe import main as probe_main

TRAIN = ['--model', 'test_resnet', '--num-classes', '4', '--img-size', '32', '-b', '4', '--epochs', '2',
         '--workers', '0', '--device', 'cpu', '--warmup-epochs', '0', '--lr', '0.01', '--mixup', 'samix']
SSL = ['--model', 'test_resnet', '--img-size', '32', '-b', '4', '--epochs', '2', '--queue-size', '16',
       '--proj-hidden', '32', '--workers', '0', '--device', 'cpu', '--knn-interval', '1',
       '--ssl-mix', 'samix_i']

# what each printed program is, run in-process
SCRIPTS = {'train.py': run_train, 'validate.py': run_validate, 'train_ssl.py': run_train_ssl}
MODULES = {'samix_timm.ssl.probe': probe_main, 'samix_timm.export': export_main,
           'samix_timm.ssl.export': ssl_export_main}
_COMMAND = re.compile(r'`(python [^`]+)`|(python (?:-m )?\S+.*)$')


@pytest.fixture(autouse=True)
def fresh_log_handlers():
    root = logging.getLogger()
    before = list(root.handlers)
    root.handlers[:] = []
    yield
    root.handlers[:] = before


def printed_commands(text: str) -> List[List[str]]:
    """The `python ...` commands of the lines in `text`, split as a shell would."""
    commands = []
    for line in text.splitlines():
        m = _COMMAND.search(line)
        if m:
            commands.append(shlex.split(m.group(1) or m.group(2)))
    return commands


def run_printed(words: List[str]) -> int:
    """Run `python X.py ...` / `python -m module ...` through its entry point, verbatim."""
    assert words[0] == 'python', words
    if words[1] == '-m':
        return MODULES[words[2]](words[3:])
    return SCRIPTS[words[1]](words[2:])


def _interrupt_after_first_epoch(monkeypatch):
    """Ctrl-C at the start of the second epoch (after the first checkpoint), in the epoch loop both scripts run."""
    real, calls = run_module.train_one_epoch, {'n': 0}

    def interrupted(*args, **kwargs):
        if calls['n'] == 1:
            raise KeyboardInterrupt
        calls['n'] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, 'train_one_epoch', interrupted)
    return real


def test_train_py_printed_commands_run_as_printed(tiny_data, tmp_path, monkeypatch, capsys, one_thread):
    monkeypatch.chdir(tmp_path)  # the export hint writes mixers/NAME relative to where it is typed
    argv = [*TRAIN, '--data-dir', str(tiny_data), '--output', str(tmp_path / 'out'), '--experiment', 'run']
    real = _interrupt_after_first_epoch(monkeypatch)
    assert run_train(argv) == 130
    resume = printed_commands(capsys.readouterr().err)
    assert len(resume) == 1 and resume[0][:2] == ['python', 'train.py'], resume
    monkeypatch.setattr(run_module, 'train_one_epoch', real)

    # 1. Ctrl-C: "resume with: python train.py ... --resume RUN/last.pth.tar" continues the run to its end
    assert run_printed(resume[0]) == 0
    out = capsys.readouterr().out
    assert 'after 2 epochs' in out, out
    finished = Path(re.search(r'checkpoint:\s+(\S+)', out).group(1))
    assert finished.is_file()
    board = re.search(r'tensorboard --logdir (\S+)', out).group(1)  # another tool's command: its folder exists
    assert Path(board).is_dir() and not printed_commands(out)

    # 2. resuming the finished run: the line gives the command that evaluates it
    assert run_train([*argv, '--resume', str(finished)]) == 2
    evaluate = printed_commands(capsys.readouterr().err)
    assert len(evaluate) == 1 and evaluate[0][:2] == ['python', 'validate.py'], evaluate
    assert run_printed(evaluate[0]) == 0
    assert '"top1"' in capsys.readouterr().out

    # 3. the training checkpoint given as a Mixer artifact: the line gives the export command
    assert run_train([*argv, '--samix-pretrained', str(finished), '--experiment', 'frozen']) == 2
    export = printed_commands(capsys.readouterr().err)
    assert len(export) == 1 and export[0][:3] == ['python', '-m', 'samix_timm.export'], export
    assert run_printed(export[0]) == 0
    artifact = capsys.readouterr().out.splitlines()[0]
    assert Path(artifact).is_file() and Path(artifact).parent == Path('mixers')


def test_train_ssl_printed_commands_run_as_printed(tiny_data, tmp_path, monkeypatch, capsys, one_thread):
    argv = [*SSL, '--data-dir', str(tiny_data), '--output', str(tmp_path / 'out'), '--experiment', 'run']
    real = _interrupt_after_first_epoch(monkeypatch)
    assert run_train_ssl(argv) == 130
    resume = printed_commands(capsys.readouterr().err)
    assert len(resume) == 1 and resume[0][:2] == ['python', 'train_ssl.py'], resume
    monkeypatch.setattr(run_module, 'train_one_epoch', real)

    # 1. Ctrl-C: the resume command trains the second epoch; the end of the run prints the probes command
    assert run_printed(resume[0]) == 0
    out = capsys.readouterr().out
    assert 'after 2 epochs' in out, out
    finished = Path(re.search(r'checkpoint:\s+(\S+)', out).group(1))
    probes = printed_commands(out)
    assert len(probes) == 1 and probes[0][:3] == ['python', '-m', 'samix_timm.ssl.probe'], probes
    assert run_printed(probes[0]) == 0
    capsys.readouterr()

    # 2. resuming the finished run: the line gives the probes command (it lacked --data-dir, which probe requires)
    assert run_train_ssl([*argv, '--resume', str(finished)]) == 2
    evaluate = printed_commands(capsys.readouterr().err)
    assert len(evaluate) == 1 and evaluate[0][:3] == ['python', '-m', 'samix_timm.ssl.probe'], evaluate
    assert run_printed(evaluate[0]) == 0
    assert '"knn_top1"' in capsys.readouterr().out
