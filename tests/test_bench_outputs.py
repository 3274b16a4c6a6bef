""" bench scripts never replace a results file they did not create in the same run, and say so in one line
(bench/gpu_check.py, bench/speed.py; issue 44); gpu_check's budget is a finite number > 0, and a run that checked
nothing does not exit 0. The checks and timings themselves are replaced by fakes: these tests take a second. """
import json
import math
import sys

import pytest

from conftest import load_bench

FINISHED = json.dumps(dict(done=True, note='a finished report'))


@pytest.fixture
def gpu_check(monkeypatch):
    """bench/gpu_check.py whose checks return made-up results at once; `calls` lists the checks run."""
    module = load_bench('gpu_check')
    module.calls = []

    def fake_item(kind, key, args, device, deadline):
        module.calls.append((kind, key))
        if kind == 'overflow':
            return dict(fell_back=True, finite=True)
        if kind == 'finite':
            return {m: dict(finite=True, steps=1) for m in module.METHODS}
        return {m: dict(step_s=0.1, peak_mb=1.0, finite=True, steps=1, time_x_mixup=1.0, memory_x_mixup=1.0)
                for m in module.METHODS}

    monkeypatch.setattr(module, 'run_item', fake_item)
    return module


@pytest.fixture
def speed(monkeypatch):
    """bench/speed.py whose timing returns a made-up result at once; `calls` counts the models timed."""
    module = load_bench('speed')
    module.calls = []

    def fake_time(model_name, methods, args, device):
        module.calls.append(model_name)
        return {m: dict(median_s=0.1, iqr_s=0.0, steps=1) for m in methods}

    monkeypatch.setattr(module, 'time_methods', fake_time)
    return module


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: '), err
    return err[0]


def _gpu_args(out, *extra) -> list:
    return ['--smoke', '--out', str(out), *extra]


@pytest.mark.parametrize('existing', ['.json', '.md'])
def test_gpu_check_refuses_an_existing_report(gpu_check, tmp_path, capsys, existing):
    """A second run to the same --out (a finished GPU report, say) is refused before any check, in one line naming
    the file and the flags; the report stays as it was."""
    out = tmp_path / 'gpu_check'
    out.with_suffix(existing).write_text(FINISHED)
    assert gpu_check.main(_gpu_args(out, '--budget-s', '0.001')) == 2
    line = _one_error_line(capsys)
    assert str(out.with_suffix(existing)) in line and '--out' in line and '--overwrite' in line
    assert out.with_suffix(existing).read_text() == FINISHED
    assert gpu_check.calls == []


def test_gpu_check_report_is_its_own_from_the_start_and_rewritten_in_one_run(gpu_check, tmp_path):
    """The files are created before the first check (a 'still running' report) and rewritten after each check of
    the same run; --overwrite replaces an existing report on purpose."""
    out = tmp_path / 'gpu_check'
    seen = []
    fake = gpu_check.run_item
    gpu_check.run_item = lambda *a: (seen.append(json.loads(out.with_suffix('.json').read_text())['done']), fake(*a))[1]
    assert gpu_check.main(_gpu_args(out)) == 0
    assert seen and not any(seen)  # the report existed, unfinished, when each check started
    assert json.loads(out.with_suffix('.json').read_text())['done']
    assert len(gpu_check.calls) == 3  # finite, overflow, timing
    out.with_suffix('.json').write_text(FINISHED)
    assert gpu_check.main(_gpu_args(out, '--overwrite')) == 0
    assert json.loads(out.with_suffix('.json').read_text())['finite']


@pytest.mark.parametrize('where', ['below_a_file', 'no_name'])
def test_gpu_check_unwritable_out_is_one_line_before_any_check(gpu_check, tmp_path, capsys, where):
    (tmp_path / 'a_file').write_text('x')
    out = {'below_a_file': tmp_path / 'a_file' / 'report', 'no_name': ''}[where]
    assert gpu_check.main(_gpu_args(out)) == 2
    line = _one_error_line(capsys)
    assert '--out' in line
    assert gpu_check.calls == []


@pytest.mark.parametrize('budget', ['0', '-5', 'nan', 'inf'])
def test_gpu_check_budget_must_be_finite_and_positive(gpu_check, tmp_path, capsys, budget):
    out = tmp_path / 'gpu_check'
    assert gpu_check.main(_gpu_args(out, '--budget-s', budget)) == 2
    line = _one_error_line(capsys)
    assert f'--budget-s {float(budget):g} is out of range' in line and 'finite' in line
    assert not out.with_suffix('.json').exists() and not out.with_suffix('.md').exists()
    assert gpu_check.calls == []


def test_gpu_check_that_checked_nothing_does_not_exit_0(gpu_check, tmp_path, capsys):
    """A budget that ends before the first check: the report lists every check as skipped, and the exit code and
    one line say that nothing was checked."""
    out = tmp_path / 'gpu_check'
    assert gpu_check.main(_gpu_args(out, '--budget-s', '1e-9')) == 1
    assert 'nothing was checked' in capsys.readouterr().err
    result = json.loads(out.with_suffix('.json').read_text())
    assert result['done'] and [k for k, _ in result['skipped']] == ['finite', 'overflow', 'timing']
    assert gpu_check.calls == []


def _speed_main(speed, monkeypatch, *argv) -> int:
    monkeypatch.setattr(sys, 'argv', ['bench/speed.py', '--models', 'test_resnet', '--methods', 'mixup',
                                      '--no-memory', '--device', 'cpu', *argv])
    try:
        return speed.main() or 0
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize('existing', ['.json', '.md'])
def test_speed_refuses_to_overwrite_the_committed_results(speed, tmp_path, monkeypatch, capsys, existing):
    """Without --out, speed.py writes bench/results/speed.{json,md}, which are committed: an existing file is
    refused before any timing, in one line naming it and the flags; it stays as it was."""
    monkeypatch.chdir(tmp_path)
    committed = tmp_path / 'bench' / 'results' / f'speed{existing}'
    committed.parent.mkdir(parents=True)
    committed.write_text(FINISHED)
    assert _speed_main(speed, monkeypatch) == 2
    line = _one_error_line(capsys)
    assert f'bench/results/speed{existing}' in line and '--out' in line and '--overwrite' in line
    assert committed.read_text() == FINISHED
    assert speed.calls == []


def test_speed_writes_new_files_and_overwrites_only_when_asked(speed, tmp_path, monkeypatch):
    out = tmp_path / 'new' / 'speed_x'
    assert _speed_main(speed, monkeypatch, '--out', str(out)) == 0
    result = json.loads(out.with_suffix('.json').read_text())
    assert result['done'] and math.isclose(result['models']['test_resnet']['time']['mixup']['median_s'], 0.1)
    assert 'still running' not in out.with_suffix('.md').read_text()
    out.with_suffix('.json').write_text(FINISHED)
    assert _speed_main(speed, monkeypatch, '--out', str(out), '--overwrite') == 0
    assert json.loads(out.with_suffix('.json').read_text())['done']
    assert speed.calls == ['test_resnet', 'test_resnet']


def test_speed_unwritable_out_is_one_line_before_any_timing(speed, tmp_path, monkeypatch, capsys):
    (tmp_path / 'a_file').write_text('x')
    assert _speed_main(speed, monkeypatch, '--out', str(tmp_path / 'a_file' / 'speed')) == 2
    assert 'cannot be written' in _one_error_line(capsys)
    assert speed.calls == []
