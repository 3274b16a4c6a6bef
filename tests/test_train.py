""" train.py / validate.py end to end on the embedded dataset (CPU). """
import csv
import json
import logging
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from timm.loss import BinaryCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from conftest import FAST_ARGS, REPO
from samix_timm.cli import run_train, run_validate
from samix_timm.engine import parse_train_args, train
from samix_timm.errors import ConfigError
from samix_timm.engine.setup import create_train_loss


def _train(data, out, *extra):
    args, text = parse_train_args(['--data-dir', str(data), '--output', str(out), *FAST_ARGS, *extra])
    return train(args, text)


def _summary(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_short_run_learns_and_validate_reproduces(embedded_data, tmp_path):
    result = _train(embedded_data, tmp_path, '--epochs', '3', '--experiment', 'learn', '--model-ema',
                    '--model-ema-decay', '0.99')
    top1 = result.eval_metrics['top1']
    assert top1 > 50, f'top-1 {top1:.1f}% is not clearly above chance (10%)'
    run = result.output_dir
    for name in ('last.pth.tar', 'summary.csv', 'args.yaml'):
        assert (run / name).is_file(), name
    assert any(f.name.startswith('events.out.tfevents') for f in run.iterdir())
    rows = _summary(run / 'summary.csv')
    assert [int(r['epoch']) for r in rows] == [0, 1, 2]
    assert float(rows[-1]['eval_top1']) == pytest.approx(top1, abs=1e-3)
    assert 'eval_ema_top1' in rows[-1]

    # validate.py, as a script, on the checkpoint the run wrote: same accuracy
    res_file = tmp_path / 'val.json'
    proc = subprocess.run(
        [sys.executable, str(REPO / 'validate.py'), '--data-dir', str(embedded_data), '--checkpoint',
         str(run / 'last.pth.tar'), '--workers', '0', '--device', 'cpu', '--results-file', str(res_file)],
        capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(res_file.read_text())
    assert res['model'] == 'test_resnet' and res['num_images'] == 1000
    assert res['top1'] == pytest.approx(top1, abs=0.01)
    ema_file = tmp_path / 'val_ema.json'  # a results file is never overwritten
    ema = run_validate(['--data-dir', str(embedded_data), '--checkpoint', str(run / 'last.pth.tar'),
                        '--use-ema', '--workers', '0', '--device', 'cpu', '--results-file', str(ema_file)])
    assert ema == 0
    assert json.loads(ema_file.read_text())['top1'] == pytest.approx(result.ema_metrics['top1'], abs=0.01)


@pytest.mark.parametrize('full_workers,resumed_workers', [('0', '0'), ('2', '1')])
def test_resume_reproduces_uninterrupted_run(small_data, tmp_path, full_workers, resumed_workers):
    # ('2', '1'): two persistent workers live through all epochs of the full run, the resumed run starts
    # one fresh worker at epoch 1 -- per-sample seeds make both see the same augmented images
    full = _train(small_data, tmp_path, '--epochs', '3', '--experiment', 'full', '--sched', 'step',
                  '--decay-epochs', '1', '--decay-rate', '0.5', '--workers', full_workers)
    resumed = _train(small_data, tmp_path, '--epochs', '3', '--experiment', 'resumed', '--sched', 'step',
                     '--decay-epochs', '1', '--decay-rate', '0.5', '--workers', resumed_workers,
                     '--resume', str(full.output_dir / 'checkpoint-0.pth.tar'))
    a, b = _summary(full.output_dir / 'summary.csv'), _summary(resumed.output_dir / 'summary.csv')
    assert [int(r['epoch']) for r in b] == [1, 2]  # continued at the saved epoch
    for ra, rb in zip(a[1:], b):
        assert float(ra['lr']) == float(rb['lr'])  # scheduler state
        assert float(ra['train_loss']) == pytest.approx(float(rb['train_loss']), rel=1e-5)
    sa, sb = full.model.state_dict(), resumed.model.state_dict()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=1e-6, msg=k)


def test_mixing_runs_after_the_loader_with_and_without_prefetcher(small_data, tmp_path):
    for i, extra in enumerate(([], ['--no-prefetcher'])):
        result = _train(small_data, tmp_path, '--epochs', '1', '--mixup', '0.8', '--cutmix', '1.0',
                        '--experiment', f'mix{i}', *extra)
        rows = _summary(result.output_dir / 'summary.csv')
        assert float(rows[0]['train_loss']) > 0


@pytest.mark.parametrize('extra,loss_type,check', [
    (dict(mixing=True), SoftTargetCrossEntropy, None),
    (dict(mixing=True, bce_loss=True, bce_target_thresh=0.2), BinaryCrossEntropy,
     lambda l: l.target_threshold == 0.2 and l.smoothing == 0),
    (dict(mixing=False, smoothing=0.1), LabelSmoothingCrossEntropy, lambda l: l.smoothing == 0.1),
    (dict(mixing=False, smoothing=0.1, bce_loss=True), BinaryCrossEntropy, lambda l: l.smoothing == 0.1),
    (dict(mixing=False, smoothing=0.0), nn.CrossEntropyLoss, None),
])
def test_loss_selection_follows_timm(extra, loss_type, check):
    mixing = extra.pop('mixing')
    args, _ = parse_train_args([])
    for k, v in extra.items():
        setattr(args, k, v)
    loss = create_train_loss(args, mixing)
    assert type(loss) is loss_type
    assert check is None or check(loss)


def _run_error(capsys, *argv):
    code = run_train(list(argv))
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith('error: ')]
    assert code == 2
    assert len(err) == 1, err  # one line, no traceback
    return err[0]


def test_bad_inputs_give_one_line_errors(small_data, tmp_path, capsys):
    empty = tmp_path / 'empty'
    (empty / 'train' / 'a').mkdir(parents=True)
    base = [*FAST_ARGS, '--output', str(tmp_path / 'out'), '--epochs', '1']
    assert 'no dataset given' in _run_error(capsys, *base)
    assert 'does not exist' in _run_error(capsys, *base, '--data-dir', str(tmp_path / 'missing'))
    assert 'contains no images' in _run_error(capsys, *base, '--data-dir', str(empty))
    err = _run_error(capsys, *base, '--data-dir', str(small_data), '--num-classes', '5')
    assert 'smaller than the 10 classes' in err and '--num-classes 10' in err
    assert "unknown timm model 'resnet_nope'" in _run_error(
        capsys, *base, '--data-dir', str(small_data), '--model', 'resnet_nope')
    assert 'even batch size' in _run_error(capsys, *base, '--data-dir', str(small_data), '--mixup', '0.5',
                                           '-b', '51')
    assert 'does not exist' in _run_error(capsys, *base, '--data-dir', str(small_data), '--resume',
                                         str(tmp_path / 'nothing.pth.tar'))
    assert 'is not a file' in (
        run_validate(['--data-dir', str(small_data), '--checkpoint', str(tmp_path / 'x.pth')]) == 2
        and capsys.readouterr().err)


def test_output_folder_is_never_overwritten(small_data, tmp_path):
    first = _train(small_data, tmp_path, '--epochs', '1', '--experiment', 'same')
    before = (first.output_dir / 'summary.csv').read_bytes()
    second = _train(small_data, tmp_path, '--epochs', '1', '--experiment', 'same')
    assert second.output_dir != first.output_dir and second.output_dir.name.startswith('same-')
    assert (first.output_dir / 'summary.csv').read_bytes() == before


def test_train_script_runs_from_the_command_line(small_data, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / 'train.py'), '--config', str(REPO / 'configs' / 'embedded_quickstart.yaml'),
         '--data-dir', str(small_data), '--output', str(tmp_path), '--epochs', '1', '--img-size', '32',
         '--workers', '0', '--device', 'cpu'],
        capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'validation top-1' in proc.stdout and 'summary.csv' in proc.stdout and 'tensorboard' in proc.stdout


@pytest.mark.slow
def test_two_process_gloo_run_agrees(small_data, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=f'{REPO}{os.pathsep}{REPO / "tests"}')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29517',
           str(REPO / 'tests' / 'ddp_worker.py'), str(tmp_path), '--data-dir', str(small_data),
           '--output', str(tmp_path / 'out'), *FAST_ARGS, '--epochs', '1']
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = torch.load(tmp_path / 'rank0.pt'), torch.load(tmp_path / 'rank1.pt')
    assert r0['metrics']['top1'] == r1['metrics']['top1']
    for k in r0['state']:
        assert torch.equal(r0['state'][k], r1['state'][k]), k
    assert len(list((tmp_path / 'out').iterdir())) == 1  # only rank 0 writes


def test_create_mixing_gives_samix_its_clean_term():
    # what train() and reproduce.measure_cost both build: SAMix's task adds its preset's clean-batch term (§5.6),
    # timm Mixup's only with --samix-clean-weight; the loss is the recipe's either way
    from samix_timm.engine.train import build_model, build_task, create_mixing
    from samix_timm.task import MixTask, SAMixTask
    for extra, task_type, has_clean in ((['--mixup', 'samix'], SAMixTask, True), (['--mixup', '0.8'], MixTask, False),
                                        (['--mixup', '0.8', '--samix-clean-weight', '1'], MixTask, True)):
        args, _ = parse_train_args(['--model', 'test_resnet', '--num-classes', '4', '--img-size', '32', *extra])
        args.distributed = False
        model = build_model(args, 4)
        mixup_fn, clean, loss = create_mixing(args, model, dict(input_size=(3, 32, 32)), 10, 100, None, None,
                                              torch.device('cpu'))
        assert type(loss) is SoftTargetCrossEntropy
        task = build_task(args, model, loss, mixup_fn, clean, torch.device('cpu'))
        assert type(task) is task_type and task.trainable_module is model and (task.clean is not None) == has_clean
        if task_type is SAMixTask:
            assert task.clean is mixup_fn.clean


def test_resuming_a_finished_run_says_so_and_writes_nothing(small_data, tmp_path):
    """--resume of a finished run (or --epochs at or below its epoch) used to exit 0 with 'validation top-1 nan%'
    and print a checkpoint and summary that did not exist; now one line, before any folder is made."""
    done = _train(small_data, tmp_path, '--epochs', '1', '--experiment', 'done')
    folders = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ConfigError, match='has trained 1 of 1 epochs, nothing is left to train; to train longer '
                                          'pass --epochs above 1'):
        _train(small_data, tmp_path, '--epochs', '1', '--experiment', 'again',
               '--resume', str(done.output_dir / 'last.pth.tar'))
    with pytest.raises(ConfigError, match='--start-epoch 3 leaves nothing to train in a run of 2 epochs'):
        _train(small_data, tmp_path, '--epochs', '2', '--start-epoch', '3', '--experiment', 'late')
    assert sorted(p.name for p in tmp_path.iterdir()) == folders
    longer = _train(small_data, tmp_path, '--epochs', '2', '--experiment', 'longer',
                    '--resume', str(done.output_dir / 'last.pth.tar'))
    assert [int(r['epoch']) for r in _summary(longer.output_dir / 'summary.csv')] == [1]


@pytest.mark.parametrize('stop_at', [0, 1])
def test_ctrl_c_stops_in_one_line_with_the_resume_command(small_data, tmp_path, monkeypatch, capsys, stop_at):
    """Ctrl-C used to print a 55-line traceback, no resume hint, and leave the epoch-0 folder or a partial
    tmp.pth.tar. Now: one line and exit 130; before the first checkpoint the folder goes; after it, the folder stays
    without a cut-short save, and the printed command resumes the run."""
    from samix_timm.engine import run as engine_run  # the epoch loop of train.py (and train_ssl.py)
    real, calls = engine_run.train_one_epoch, {'n': 0}

    def interrupted(*args, **kwargs):
        if calls['n'] == stop_at:
            for run in tmp_path.glob('*/'):
                (run / 'tmp.pth.tar').write_bytes(b'PK half a checkpoint')  # a save cut short
            raise KeyboardInterrupt
        calls['n'] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_run, 'train_one_epoch', interrupted)
    monkeypatch.setattr(logging.getLogger(), 'handlers', [])  # run_train adds its handler on this test's stderr
    argv = ['--data-dir', str(small_data), '--output', str(tmp_path), *FAST_ARGS, '--epochs', '2',
            '--experiment', 'run']
    assert run_train(argv) == 130
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith(('Train', 'Test'))]
    assert 'Traceback' not in '\n'.join(err)
    if stop_at == 0:
        assert err[-1] == 'interrupted before the first checkpoint: nothing was kept'
        assert not list(tmp_path.iterdir())
        return
    run = tmp_path / 'run'
    assert err[-1].startswith('interrupted: the run is kept up to its last epoch; resume with: python train.py ')
    assert err[-1].endswith(f'--resume {run / "last.pth.tar"}') and not (run / 'tmp.pth.tar').exists()
    monkeypatch.setattr(engine_run, 'train_one_epoch', real)
    words = err[-1].split('resume with: python train.py ')[1].split()
    assert run_train(words) == 0
    assert [int(r['epoch']) for r in _summary(tmp_path / 'run-1' / 'summary.csv')] == [1]


def test_a_real_sigint_stops_train_py_in_one_line(small_data, tmp_path):
    """A real SIGINT to the process group of `python train.py` (what Ctrl-C in a terminal sends) once the first
    checkpoint exists: exit code 130, no traceback, no cut-short tmp.pth.tar, and the last line names a checkpoint
    that exists and resumes the run."""
    import signal
    import time
    argv = [sys.executable, str(REPO / 'train.py'), '--data-dir', str(small_data), '--output', str(tmp_path),
            *FAST_ARGS, '--epochs', '200', '--experiment', 'run']
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS='1'), start_new_session=True,
                            # a shell's background job (`cmd &`) ignores SIGINT and children inherit that: a
                            # terminal's Ctrl-C reaches a foreground run, which is what this test stands for
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    last = tmp_path / 'run' / 'last.pth.tar'
    deadline = time.time() + 600  # generous: CI machines may be busy
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert last.exists(), "no checkpoint within 600 s"
    time.sleep(1.0)  # into the next epoch
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"train.py did not stop within 300 s of SIGINT: {proc.communicate()[1][-2000:]}")
    assert proc.returncode == 130, err[-2000:]
    assert 'Traceback' not in err, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith('interrupted: the run is kept up to its last epoch; resume with: python train.py '), line
    assert line.endswith(f'--resume {last}') and last.exists() and not (tmp_path / 'run' / 'tmp.pth.tar').exists()
    assert torch.load(last, map_location='cpu', weights_only=False)['epoch'] < 199


def test_bce_options_without_bce_loss_are_refused():
    """timm's loss factory refuses --bce-target-thresh without --bce-loss (it used to be ignored silently)."""
    args, _ = parse_train_args([])
    args.bce_target_thresh = 0.2
    with pytest.raises(ConfigError, match='BCE target threshold.*need --bce-loss'):
        create_train_loss(args, True)
