""" bench bookkeeping: the rule that picks the default preset, per-budget tables, resume (accuracy.py, ssl_probes.py). """
import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, load_bench


@pytest.fixture(scope='module')
def accuracy():
    return load_bench('accuracy')


def _presets(**runs):
    """(online top-1, EMA top-1) per seed -> the arrays preset_verdict reads."""
    return {name: dict(top1=np.array([r[0] for r in rs], float), ema_top1=np.array([r[1] for r in rs], float))
            for name, rs in runs.items()}


@pytest.mark.parametrize('paper,fast,choice', [
    # (online top-1, EMA top-1) per seed
    ([(90, 85), (91, 86), (92, 87)], [(90, 85), (90.5, 85.5), (91.5, 86.5)], 'fast'),  # both within one std
    ([(90, 85), (91, 86), (92, 87)], [(89, 84), (89.5, 84), (90, 84)], 'paper'),       # online 89.5 < 91 - 1
    ([(90, 85), (91, 86), (92, 87)], [(90, 82), (91, 83), (92, 84)], 'paper'),         # EMA 83 < 86 - 1
    ([(91, 86)], [(90.9, 86)], 'paper'),                                               # one seed: no tolerance
    ([(91, 86)], [(91, 86)], 'fast'),
])
def test_preset_verdict(accuracy, paper, fast, choice):
    verdict = accuracy.preset_verdict(_presets(paper=paper, fast=fast), {'fast': 1.6})
    assert verdict.endswith(f'default `{choice}`')


def test_preset_verdict_takes_the_cheapest_that_passes(accuracy):
    paper = [(90, 85), (91, 86), (92, 87)]
    passes, fails = [(90, 85), (91, 86), (92, 86.5)], [(90, 82), (91, 83), (92, 84)]
    cost = {'every2': 1.84, 'half': 1.86, 'fast': 1.63}
    runs = _presets(paper=paper, every2=passes, half=passes, fast=fails)
    verdict = accuracy.preset_verdict(runs, cost)
    assert verdict.endswith('default `every2`') and 'fast (3 seeds, 1.63x)' in verdict and '-> fails' in verdict
    cost['half'] = 1.70  # now the cheaper of the two that pass
    assert accuracy.preset_verdict(runs, cost).endswith('default `half`')
    runs['fast'] = runs['every2']
    assert accuracy.preset_verdict(runs, cost).endswith('default `fast`')


def test_every_preset_has_an_accuracy_method(accuracy):
    from samix_timm.defaults import SAMIX_PRESETS
    assert sorted(accuracy.PRESET_OF.values()) == sorted(SAMIX_PRESETS)
    for method, preset in accuracy.PRESET_OF.items():
        flags = accuracy.METHODS[method]
        assert flags[flags.index('--samix-preset') + 1] == preset and method in accuracy.SPEED_OF


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


def test_table_wall_time_leaves_out_resumed_runs(accuracy, tmp_path):
    # before: a run resumed near its end counted its last minutes as its wall time (Mixup α 0.2 seed 2: 0.9 min)
    base = dict(method='vanilla', model='test_resnet', epochs=30, img_size=64, top1=90.0, ema_top1=90.0)
    rows = [dict(base, seed=0, wall_s=600), dict(base, seed=1, wall_s=720),
            dict(base, seed=2, wall_s=30, resumed_from='output/x/last.pth.tar')]
    (tmp_path / 'accuracy_runs.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    row = accuracy.table(tmp_path, tmp_path / 'missing.json', 'test_resnet', 'test_resnet', 30, 64,
                         ['vanilla']).splitlines()[2]
    assert '| 11.0 (2 of 3: the others resumed) |' in row, row
    (tmp_path / 'accuracy_runs.jsonl').write_text(json.dumps(rows[2]) + '\n')
    row = accuracy.table(tmp_path, tmp_path / 'missing.json', 'test_resnet', 'test_resnet', 30, 64,
                         ['vanilla']).splitlines()[2]
    assert '| – (0 of 1: the others resumed) |' in row, row



def test_table_on_the_test_split_ranks_on_it_and_leaves_out_rows_without_one(accuracy, tmp_path):
    base = dict(method='vanilla', model='test_resnet', epochs=30, img_size=64, wall_s=600)
    rows = [dict(base, seed=0, top1=92.0, ema_top1=88.0, test_top1=80.0, test_ema_top1=81.0),
            dict(base, seed=1, top1=94.0, ema_top1=90.0, test_top1=82.0, test_ema_top1=83.0),
            dict(base, seed=2, top1=10.0, ema_top1=10.0)]  # evaluated before the test split existed
    (tmp_path / 'accuracy_runs.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    test = accuracy.table(tmp_path, tmp_path / 'missing.json', 'test_resnet', 'test_resnet', 30, 64, ['vanilla'],
                          score='test')
    assert test.splitlines()[2].startswith('| vanilla | 2 | 81.00 ± 1.41 | 82.00 ± 1.41 |'), test
    val = accuracy.table(tmp_path, tmp_path / 'missing.json', 'test_resnet', 'test_resnet', 30, 64, ['vanilla'])
    assert val.splitlines()[2].startswith('| vanilla | 3 | 65.33 ± 47.93 |'), val

def _gpu_check():
    return load_bench('gpu_check')


def test_gpu_check_cpu_path(small_data, tmp_path, monkeypatch):
    """bench/gpu_check.py --smoke: every method trains finite steps under bf16 autocast, ratios are written, the
    injected float16 feature overflow takes the fp32 fallback (the GPU run is the same code at 224 px), and the
    results files are rewritten after every check, most important first."""
    gpu_check = _gpu_check()
    out = tmp_path / 'gpu_check'
    snapshots = []
    write = gpu_check.write
    monkeypatch.setattr(gpu_check, 'write', lambda result, path: (write(result, path), snapshots.append(
        json.loads(path.with_suffix('.json').read_text()))))
    assert gpu_check.main(['--smoke', '--data-dir', str(small_data), '--out', str(out)]) == 0
    result = json.loads(out.with_suffix('.json').read_text())
    assert result['done'] and not result['skipped']
    (checks,), (runs,) = result['finite'].values(), result['timings'].values()
    assert sorted(checks) == sorted(runs) == sorted(gpu_check.METHODS)
    assert all(r['finite'] for r in checks.values())
    assert all(r['finite'] and r['time_x_mixup'] > 0 and r['steps'] == 2 for r in runs.values())
    assert runs['mixup']['time_x_mixup'] == 1.0
    assert result['overflow'] == {'test_resnet': {'fell_back': True, 'finite': True}}
    assert '| test_resnet | bfloat16 | eager | samix_paper |' in out.with_suffix('.md').read_text()
    # written after each of the three checks (finite, overflow, timing), in that order, then once more when done
    progress = [(len(s['finite']), len(s['overflow']), len(s['timings']), s['done']) for s in snapshots]
    assert progress == [(1, 0, 0, False), (1, 1, 0, False), (1, 1, 1, False), (1, 1, 1, True)]


def test_gpu_check_stops_cleanly_at_its_budget(small_data, tmp_path):
    """A spent budget starts no check: every one is listed as skipped, the files are written, and the run says it
    checked nothing (exit 1, issue 44); the plan puts the finite checks of every path and the overflow before
    timings."""
    gpu_check = _gpu_check()
    out = tmp_path / 'gpu_check'
    assert gpu_check.main(['--smoke', '--data-dir', str(small_data), '--out', str(out), '--budget-s', '1e-9']) == 1
    result = json.loads(out.with_suffix('.json').read_text())
    assert result['finite'] == result['overflow'] == result['timings'] == {}
    assert [kind for kind, _ in result['skipped']] == ['finite', 'overflow', 'timing']
    assert 'Not run, the budget was spent' in out.with_suffix('.md').read_text()
    args = argparse.Namespace(models=['a', 'b'], dtypes=['float16'], modes=['eager', 'compiled'])
    assert [k for k, _ in gpu_check.plan(args)] == ['finite'] * 2 + ['overflow'] * 2 + ['finite'] * 2 + ['timing'] * 4


def test_speed_runner_channels_last_suffix():
    """bench/speed.py `name@cl`: model, batch and SAMix's θ̄ in channels_last, and a step runs."""
    import torch
    speed = load_bench('speed')
    assert speed.split_method('samix_every2@cl') == ('samix_every2', True)
    assert speed.split_method('mixup') == ('mixup', False)
    assert speed.split_method('mixup@fp16') == ('mixup@fp16', False)  # not a method: refused by main()
    r = speed.Runner('test_resnet', 'samix_every2@cl', 32, 4, torch.device('cpu'))
    assert r.x.is_contiguous(memory_format=torch.channels_last) and not r.x.is_contiguous()
    assert r.mix.channels_last  # θ̄ takes its input in the classifier's memory format
    assert r.step() > 0
    plain = speed.Runner('test_resnet', 'samix_every2', 32, 4, torch.device('cpu'))
    assert not plain.mix.channels_last and plain.x.is_contiguous()
    # a method the model cannot run is reported, not fatal to the other models of the run
    args = type('A', (), dict(img_size=32, batch_size=2, warmup=0, reps=1, window=1))()
    out = speed.time_methods('deit_tiny_patch16_224', ['samix_lowres'], args, torch.device('cpu'))
    assert 'fixed patch grid' in out['samix_lowres']['skipped']
    assert '| samix_lowres | n/a: ' in speed.markdown(dict(command='c', reps=1, batch_size=2, models={
        'deit_tiny_patch16_224': dict(img_size=32, time=dict(mixup=dict(median_s=1., iqr_s=0.), **out))}), 'm')


def test_preset_with_a_grey_mixer_in_one_seed_fails_the_rule(accuracy):
    """Accuracy within tolerance is not enough: a seed whose Mixer ended as a constant mask disqualifies."""
    paper, cand = [(90, 85), (91, 86), (92, 87)], [(90.5, 85.5), (91, 86), (91.5, 86.5)]
    runs = _presets(paper=paper, fast=cand)
    assert accuracy.preset_verdict(runs, {'fast': 1.6}).endswith('default `fast`')
    healthy = {f'health_std_{lam}': 0.4 for lam in ('0.3', '0.5', '0.7')}
    grey = dict(healthy, **{'health_std_0.5': 0.01})
    off_lam = dict(healthy, **{'health_keep_0.7': 0.4})  # the keep reading is not part of the rule
    soft = {f'health_std_{lam}': 0.22 for lam in ('0.3', '0.5', '0.7')}  # soft but spatial masks: not grey
    assert accuracy.grey_seeds([healthy, grey, off_lam, soft]) == 1
    assert accuracy.unhealthy_seeds([healthy, grey, off_lam, soft, {}]) == 3  # item 7's rule: healthy in every seed
    runs['fast']['grey'] = accuracy.grey_seeds([healthy, grey, healthy])
    verdict = accuracy.preset_verdict(runs, {'fast': 1.6})
    assert 'grey Mixer in 1 of 3 seeds -> fails' in verdict and verdict.endswith('default `paper`')


def test_preset_rule_compares_with_the_best_preset_and_needs_health_in_every_seed(accuracy):
    """Issue 29 item 7: the reference is the best preset, not `paper`; a preset with one unhealthy seed fails."""
    runs = _presets(paper=[(88, 84), (89, 85), (90, 86)], fast=[(91, 86), (92, 87), (93, 88)],
                    every2=[(90.5, 85.5), (91, 86), (91.5, 86.5)])
    cost = {'paper': 3.6, 'fast': 2.7, 'every2': 2.8}
    verdict = accuracy.preset_verdict(runs, cost)
    assert verdict.startswith('Preset rule') and 'best: fast' in verdict and verdict.endswith('default `fast`')
    assert 'paper (3 seeds, 3.60x): top1 89.00 vs 92.00 - 1.00' in verdict
    runs['fast']['unhealthy'] = 1
    verdict = accuracy.preset_verdict(runs, cost)
    assert 'unhealthy Mixer in 1 of 3 seeds -> fails' in verdict and verdict.endswith('default `every2`')


def test_mixer_grey_preset_rule_reads_the_sweep_and_the_stable_step_times(tmp_path):
    """bench/mixer_grey.py applies the rule to one variant's runs, health from each run's reading, step times from
    the `samix_<preset>_stable` rows of a speed run."""
    grey_bench = load_bench('mixer_grey')
    sharp = {f'health_{k}_{lam}': v for lam in ('0.3', '0.5', '0.7') for k, v in (('keep', float(lam)), ('std', 0.4))}
    soft = dict(sharp, **{'health_std_0.3': 0.2})
    records = [dict(variant='v', preset='paper', seed=s, top1=t, ema_top1=t - 2, **sharp) for s, t in enumerate((82, 83, 84))]
    records += [dict(variant='v', preset='every2', seed=s, top1=t, ema_top1=t - 2, **(soft if s == 0 else sharp))
                for s, t in enumerate((82.5, 83, 83.5))]
    records += [dict(variant='v', preset='lowres', seed=s, top1=t, ema_top1=t - 2, **sharp) for s, t in enumerate((82, 83, 83))]
    speed = tmp_path / 'speed.json'
    assert 'no speed run' in grey_bench.preset_rule(records, 'v', speed)
    speed.write_text(json.dumps(dict(models=dict(test_resnet=dict(time={
        'mixup': dict(median_s=0.1), 'samix_paper_stable': dict(median_s=0.36), 'samix_every2_stable': dict(median_s=0.3),
        'samix_lowres_stable': dict(median_s=0.28)})))))
    verdict = grey_bench.preset_rule(records, 'v', speed)
    assert 'every2 (3 seeds, 3.00x)' in verdict and 'unhealthy Mixer in 1 of 3 seeds -> fails' in verdict
    assert verdict.endswith('default `lowres`')


def test_ssl_sweep_continues_an_interrupted_run(tmp_path, monkeypatch):
    """bench/ssl_probes.py: a run folder whose last checkpoint is before the final epoch is moved aside (kept) and
    continued with --resume from it; a finished run is only probed; train time sums the parts."""
    import argparse
    import os
    import subprocess
    import torch
    import yaml
    probes = load_bench('ssl_probes')
    epochs = yaml.safe_load(probes.CONFIG.read_text())['epochs']

    def fake_run(folder, last_epoch, seconds, resume=''):
        folder.mkdir()
        (folder / 'args.yaml').write_text(yaml.safe_dump(dict(resume=resume)))
        torch.save(dict(epoch=last_epoch), folder / 'last.pth.tar')
        start = (folder / 'args.yaml').stat().st_mtime
        os.utime(folder / 'last.pth.tar', (start + seconds, start + seconds))

    calls, real_run = [], subprocess.run

    def subprocess_run(cmd, **kwargs):
        if '--checkpoint' in cmd:  # the probe
            Path(cmd[cmd.index('--results-file') + 1]).write_text(json.dumps(dict(knn_top1=61.0, linear_top1=70.0)))
        elif '--experiment' in cmd:  # train_ssl.py: the rest of the epochs
            resume = cmd[cmd.index('--resume') + 1] if '--resume' in cmd else ''
            fake_run(tmp_path / cmd[cmd.index('--experiment') + 1], epochs - 1, 200.0, resume)
        else:  # platform.processor() asks uname
            return real_run(cmd, **kwargs)
        calls.append(cmd)

    monkeypatch.setattr(subprocess, 'run', subprocess_run)
    args = argparse.Namespace(threads=1, data_dir='unused', epochs=None, linear_epochs=1)
    fake_run(tmp_path / 'mocov2-seed1', 4, 100.0)  # stopped after epoch 4
    row = probes.run_one('mocov2', 1, args, tmp_path)
    (part,) = tmp_path.glob('mocov2-seed1-part-*')
    assert calls[0][calls[0].index('--resume') + 1] == str(part / 'last.pth.tar')
    assert torch.load(part / 'last.pth.tar')['epoch'] == 4  # the interrupted part is kept as it was
    assert row['train_s'] == pytest.approx(300.0, abs=1.0) and row['knn_top1'] == 61.0

    calls.clear()
    (tmp_path / 'mocov2-seed1' / 'probe.json').unlink()  # training finished, probe interrupted
    probes.run_one('mocov2', 1, args, tmp_path)
    assert len(calls) == 1 and '--checkpoint' in calls[0]
    assert len(list(tmp_path.glob('mocov2-seed1-part-*'))) == 1

    calls.clear()
    (tmp_path / 'mocov2-seed2').mkdir()  # stopped before its first checkpoint: start again
    probes.run_one('mocov2', 2, args, tmp_path)
    assert '--resume' not in calls[0]


def test_mixer_grey_table_counts_grey_and_healthy_seeds():
    grey_bench = load_bench('mixer_grey')

    def run(seed, keep, std, escape):
        r = dict(variant='stable', preset='lean', seed=seed, top1=80. + seed, ema_top1=70., extra=[],
                 trajectory={'health_std_0.5': [0.0] * escape + [std]})
        for lam, k in zip(('0.3', '0.5', '0.7'), keep):
            r[f'health_keep_{lam}'], r[f'health_std_{lam}'] = k, std
        return r

    rows = [run(0, (0.3, 0.5, 0.7), 0.45, 3), run(1, (0.46, 0.46, 0.46), 0.01, 60), run(2, (0.1, 0.5, 0.7), 0.4, 1)]
    line = grey_bench.table(rows).splitlines()[-1]
    cells = [c.strip() for c in line.strip('|').split('|')]
    assert cells[3] == '1 [1]' and cells[4] == '1 of 3'  # seed 1 grey; only seed 0 meets the health rule
    assert cells[5] == '3 - 1'  # the epoch the per-image std first reached 0.05; '-' never
    assert cells[8] == '81.00 ± 1.00'
    # the before/after table: the authors' Mixer from accuracy rows of the recipe, the stable one from these rows
    before = [dict(r, method='samix_lean', img_size=32, epochs=60) for r in rows[:2]]
    line = grey_bench.compare_table(rows, before, ['stable']).splitlines()[-1]
    cells = [c.strip() for c in line.strip('|').split('|')]
    assert cells[0] == 'lean' and cells[1] == '1 of 2 [1]' and cells[5] == '1 of 3 [1]' and cells[6] == '1 of 3'


def test_the_stable_variant_is_what_the_defaults_give():
    """bench/mixer_grey.py's comparison names the stable Mixer by its flags: they must be the package defaults, and
    the 'reference' variant the authors' Mixer of the reproduction configs."""
    from samix_timm.defaults import samix_defaults
    grey_bench = load_bench('mixer_grey')
    p = argparse.ArgumentParser()
    p.add_argument('--samix-mixer-init'), p.add_argument('--samix-mask-loss'), p.add_argument('--samix-mixer-norm')
    p.add_argument('--samix-mask-area'), p.add_argument('--samix-mask-sharpness', type=float)
    p.add_argument('--samix-mask-beta', type=float)
    for variant, given in ((grey_bench.STABLE, False), ('reference', True)):
        flags = p.parse_args(grey_bench.VARIANTS[variant])
        made = samix_defaults('resnet18', 100, **(dict(
            mixer_init=flags.samix_mixer_init, mixer_norm=flags.samix_mixer_norm, mask_area=flags.samix_mask_area,
            mask_loss=flags.samix_mask_loss, mask_sharpness=flags.samix_mask_sharpness) if given else {}))['mixer']
        assert (made.kwargs['init'], made.kwargs['norm'], made.kwargs['area'], made.mask_loss,
                made.kwargs.get('sharpness', 0.), made.beta.beta) == (
            flags.samix_mixer_init, flags.samix_mixer_norm, flags.samix_mask_area, flags.samix_mask_loss,
            flags.samix_mask_sharpness, flags.samix_mask_beta), variant


def test_pareto_front_keeps_what_no_cheaper_run_beats(accuracy):
    points = [(1.0, 80.0), (1.25, 79.0), (1.5, 83.0), (3.2, 82.0), (3.6, 90.0), (1.5, 81.0)]
    assert accuracy.pareto_front(points) == [(1.0, 80.0), (1.5, 83.0), (3.6, 90.0)]


def test_matched_baselines_train_their_multiple_of_the_epochs(accuracy):
    args = argparse.Namespace(epochs=60)
    assert [accuracy.run_epochs(f'mixup_a1_x{f:g}', args) for f in accuracy.COMPUTE_FACTORS] == [75, 90, 120, 192]
    assert accuracy.run_epochs('vanilla_x2', args) == 120 and accuracy.run_epochs('samix_paper', args) == 60
    assert accuracy.METHODS['mixup_a0.2_x1.5'] == ['--mixup', '0.2']  # timm's α grid kept: 0.2 and 1
    assert accuracy.SPEED_OF['vanilla_x3.2'] == 'none'


def test_every_row_gets_its_run_cost(accuracy, tmp_path):
    """run_cost = run epochs / budget epochs x step time / timm Mixup step time from the speed run of the budget's
    model and resolution, named in the row; None with the reason where no such speed run timed it; add_costs fills
    the rows that lack it and leaves the others as they are."""
    speed = dict(batch_size=50, models=dict(test_resnet=dict(img_size=32, time=dict(
        mixup=dict(median_s=0.1), none=dict(median_s=0.09), samix_paper=dict(median_s=0.32)))))
    (tmp_path / 'speed_bench_1k.json').write_text(json.dumps(speed))
    base = dict(seed=0, model='test_resnet', epochs=60, img_size=32, train_images=1000, top1=80., ema_top1=78.)
    rows = [dict(base, method='samix_paper', run_epochs=60), dict(base, method='vanilla_x2', run_epochs=120),
            dict(base, method='cutmix_a1', run_epochs=60), dict(base, method='vanilla', model='resnet18', run_epochs=60),
            dict(base, method='mixup_a1', run_epochs=60, run_cost=7.0, cost_from='kept')]
    (tmp_path / 'accuracy_runs.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    assert accuracy.add_costs(tmp_path) == 4
    out = [json.loads(line) for line in (tmp_path / 'accuracy_runs.jsonl').read_text().splitlines()]
    assert out[0]['run_cost'] == pytest.approx(3.2) and 'test_resnet 32 px, batch 50' in out[0]['cost_from']
    assert out[1]['run_cost'] == pytest.approx(1.8)  # 2 x 0.9
    assert out[2]['run_cost'] is None and 'no cutmix timing' in out[2]['cost_from']
    assert out[3]['run_cost'] is None and 'no speed.py run of resnet18' in out[3]['cost_from']
    assert out[4]['run_cost'] == 7.0 and out[4]['cost_from'] == 'kept'
    assert [r['method'] for r in out] == [r['method'] for r in rows]
    # after a re-timing every row is recomputed; a changed one keeps what it had
    speed['models']['test_resnet']['time']['samix_paper'] = dict(median_s=0.25)
    (tmp_path / 'speed_bench_1k.json').write_text(json.dumps(speed))
    assert accuracy.add_costs(tmp_path) == 0
    assert accuracy.add_costs(tmp_path, every=True) == 2  # samix_paper and the 'kept' mixup_a1
    out = [json.loads(line) for line in (tmp_path / 'accuracy_runs.jsonl').read_text().splitlines()]
    assert out[0]['run_cost'] == pytest.approx(2.5) and out[0]['cost_before']['run_cost'] == pytest.approx(3.2)
    assert out[4]['run_cost'] == pytest.approx(1.0) and out[4]['cost_before'] == dict(run_cost=7.0, cost_from='kept')
    assert 'cost_before' not in out[1] and out[1]['run_cost'] == pytest.approx(1.8)


def test_void_rows_leave_the_tables_and_run_again(accuracy, tmp_path):
    """A row measured with a bug stays in the file with the reason, but no table counts it and a sweep reruns it;
    rows finished after the fix are kept."""
    base = dict(seed=0, model='test_resnet', epochs=60, img_size=32, train_images=1000, top1=70., ema_top1=60.,
                wall_s=60., run_epochs=60)
    rows = [dict(base, method='mixup_clean'), dict(base, method='mixup_clean', seed=1, finished=200.),
            dict(base, method='mixup_a1')]
    (tmp_path / 'accuracy_runs.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    assert accuracy.void_rows(tmp_path, before=100.) == 1
    kept = accuracy._done(tmp_path)
    assert [(r['method'], r['seed']) for r in kept] == [('mixup_clean', 1), ('mixup_a1', 0)]
    assert 'mixes in place' in accuracy._rows(tmp_path)[0]['void']
    text = accuracy.table(tmp_path, tmp_path / 'missing.json', 'test_resnet', 'test_resnet', 60, 32,
                          ['mixup_clean'], 1000)
    assert '| mixup_clean | 1 | 70.00 (1 run) |' in text


def test_samix_p_rows_carry_the_cost_of_the_run_that_made_their_mixer(accuracy, tmp_path):
    """A SAMix^P row made from a run of the benchmark reports that run's cost as pretrain_cost, never in run_cost;
    the step ratio comes from the first speed file (COST_SPEED) that timed the method."""
    speed = dict(batch_size=50, models={'test_resnet': dict(img_size=32, time={
        'mixup': {'median_s': 0.1}, 'samix_paper_stable': {'median_s': 0.3}})})
    extra = dict(batch_size=50, models={'test_resnet': dict(img_size=32, time={
        'mixup': {'median_s': 0.2}, 'samix_p_self': {'median_s': 0.22}})})
    (tmp_path / 'speed_bench_1k.json').write_text(json.dumps(speed))
    (tmp_path / 'speed_bench_1k_p.json').write_text(json.dumps(extra))
    budget = dict(model='test_resnet', epochs=60, img_size=32, train_images=1000)
    source = dict(method='samix_default', seed=100, run_epochs=60, top1=80.0, run_dir='x', **budget)
    source.update(accuracy.row_cost(source, tmp_path))
    assert source['run_cost'] == pytest.approx(3.0)
    row = dict(method='samix_p_own', seed=0, run_epochs=60, **budget)
    assert accuracy.row_cost(row, tmp_path)['pretrain_cost'] is None  # no finished source run yet
    (tmp_path / 'accuracy_runs.jsonl').write_text(json.dumps(source) + '\n')
    cost = accuracy.row_cost(row, tmp_path)
    assert cost['run_cost'] == pytest.approx(1.1) and cost['pretrain_cost'] == pytest.approx(3.0)
    assert 'speed_bench_1k_p.json' in cost['cost_from']
    other_budget = dict(row, epochs=30)
    assert accuracy.row_cost(other_budget, tmp_path).get('pretrain_cost') is None
    # builds of the same size share the budget: a Mixer trained on another build is not this row's source
    (tmp_path / 'accuracy_runs.jsonl').write_text(json.dumps(dict(source, data='photo_objects:aaaa')) + '\n')
    assert accuracy.row_cost(dict(row, data='photo_objects:bbbb'), tmp_path).get('pretrain_cost') is None
    assert accuracy.row_cost(dict(row, data='photo_objects:aaaa'), tmp_path)['pretrain_cost'] == pytest.approx(3.0)


def test_equal_compute_verdict_compares_with_the_best_baseline_that_got_at_least_the_compute(accuracy):
    stats = {'samix_paper': (83.0, 1.0, 80.0, 1.0, 3.2), 'mixup_a1': (95.0, 0.5, 94.0, 0.5, 1.0),
             'vanilla_x3.2': (82.0, 1.0, 81.0, 1.0, 3.0), 'mixup_a1_x3.2': (81.5, 1.0, 80.5, 1.0, 3.2),
             'mixup_long': (90.0, 1.0, 89.0, 1.0, 3.6), 'samix_p_own': (79.0, 1.0, 70.0, 1.0, 4.0),
             'mixup_cutmix': (84.0, 1.0, 84.0, 1.0, 1.0), 'vanilla_x4': (80.0, 1.0, 80.0, 1.0, 3.8)}
    lines = {line.split(' | ')[0].strip('| '): line for line in
             accuracy.equal_compute_verdict(stats).splitlines()[2:]}
    assert set(lines) == {'samix_paper', 'samix_p_own'}  # timm's switch and vanilla_x4 are baselines (it listed them)
    # mixup_a1 is better but got less compute, vanilla_x3.2 too (3.0 < 3.2): the best with >= 3.2 is mixup_long,
    # the nearest in cost mixup_a1_x3.2
    best, near = lines['samix_paper'].split(' | ')[3:5]
    assert 'mixup_long (3.60)' in best and '**-7.00** / -9.00' in best
    assert 'mixup_a1_x3.2 (3.20)' in near and '**+1.50** / -0.50' in near
    assert 'none measured yet' in lines['samix_p_own']


def test_automix_rows_are_not_baselines_of_the_equal_compute_verdict(accuracy):
    # before: automix_x2 (AutoMix's Mixer in the SAMix step) was counted as a baseline and beat the SAMix rows
    stats = {'samix_x2': (28.5, 2.0, 28.8, 1.8, 5.75), 'automix_x2': (29.6, 0.0, 30.2, 0.0, 7.19),
             'cutmix_a1_x6': (28.2, 0.0, 28.2, 0.0, 6.31)}
    lines = {line.split(' | ')[0].strip('| '): line for line in
             accuracy.equal_compute_verdict(stats).splitlines()[2:]}
    assert set(lines) == {'samix_x2', 'automix_x2'}
    assert 'cutmix_a1_x6 (6.31)' in lines['samix_x2'].split(' | ')[3]
    assert 'none measured yet' in lines['automix_x2']


def test_default_preset_is_the_rule_verdict_on_the_committed_sweep():
    """samix_timm.defaults.DEFAULT_PRESET is what the preset rule (issue 29 item 7) says on the committed Mixer-health
    sweep of the default Mixer and its committed step times: change either and this test says so."""
    from samix_timm.defaults import DEFAULT_PRESET
    grey_bench = load_bench('mixer_grey')
    results = REPO / 'bench' / 'results'
    records = [r for r in grey_bench._read(results / 'mixer_grey_runs.jsonl') if not r['extra']]
    verdict = grey_bench.preset_rule(records, grey_bench.STABLE, results / f'{grey_bench.SPEED_STABLE}.json')
    assert verdict.endswith(f'default `{DEFAULT_PRESET}`'), verdict


def test_accuracy_sweep_resumes_an_unfinished_run(accuracy, tmp_path, monkeypatch):
    """bench/accuracy.py: a run stopped before its last epoch is continued with --resume from its last.pth.tar
    when its args.yaml says it is the same job; a run of another budget or a finished one is never resumed."""
    import subprocess
    import yaml
    args = argparse.Namespace(output=str(tmp_path / 'out'), workers=0, img_size=32, model='test_resnet',
                              data_dir=str(tmp_path / 'data'), epochs=60, threads=1, jobs=1,
                              results=str(tmp_path / 'results'), recipe=str(accuracy.RECIPE))

    def fake_run(name, epochs, last_epoch, seed=0, lr=0.1, mixup=1.0):
        folder = Path(args.output) / name
        folder.mkdir(parents=True)
        (folder / 'args.yaml').write_text(yaml.safe_dump(dict(
            epochs=epochs, seed=seed, mixup=mixup, model='test_resnet', img_size=32, data_dir=args.data_dir, lr=lr,
            config='/elsewhere/configs/embedded_bench.yaml', output='elsewhere')))
        (folder / 'summary.csv').write_text('epoch,eval_top1\n' + ''.join(
            f'{e},{50 + e / 10}\n' for e in range(last_epoch - 2, last_epoch + 1)))
        (folder / 'last.pth.tar').write_bytes(b'')
        return folder

    calls = []

    def subprocess_run(cmd, **kwargs):
        calls.append(cmd)
        fake_run(f'mixup_a1-s0-{len(calls)}', 60, 59)
        return subprocess.CompletedProcess(cmd, 0, '', '')

    monkeypatch.setattr(subprocess, 'run', subprocess_run)
    monkeypatch.setattr(accuracy, 'row_cost', lambda record, results: {})
    fake_run('mixup_a1-s0', 30, 10)  # another budget: 30 epochs
    fake_run('mixup_a1-s01', 60, 10, seed=1)  # another job whose name starts the same
    assert accuracy.run_one('mixup_a1', 0, args)['top1'] == pytest.approx(55.9)
    assert '--resume' not in calls[-1]
    stopped = fake_run('mixup_a1-s0-7', 60, 20)  # this job, stopped after epoch 20
    row = accuracy.run_one('mixup_a1', 0, args)
    assert calls[-1][calls[-1].index('--resume') + 1] == str(stopped / 'last.pth.tar')
    assert row['resumed_from'] == str(stopped / 'last.pth.tar') and row['run_dir'].endswith('mixup_a1-s0-2')
    stopped.rename(stopped.with_name('moved-away'))  # only finished runs of this job are left
    accuracy.run_one('mixup_a1', 0, args)
    assert '--resume' not in calls[-1]
    fake_run('mixup_a1-s0-9', 60, 20, lr=0.02)  # stopped, but made under a recipe with another lr than the recipe's
    accuracy.run_one('mixup_a1', 0, args)
    assert '--resume' not in calls[-1]
    # the recipe's `mixup: none` is 0.0 in args.yaml (as train.py's parser resolves it): the same job, resumed
    vanilla = fake_run('vanilla-s0', 60, 20, mixup=0.0)
    accuracy.run_one('vanilla', 0, args)
    assert calls[-1][calls[-1].index('--resume') + 1] == str(vanilla / 'last.pth.tar')



def test_test_split_is_evaluated_once_per_run_and_kept(accuracy, tmp_path, monkeypatch):
    """Each finished run is scored on the test split by validate.py (weights, then EMA weights); a sweep resumed
    after that reads the kept results instead of evaluating again; a run without EMA weights gets no EMA score."""
    import subprocess
    calls = []

    def subprocess_run(cmd, **kwargs):
        calls.append(cmd)
        if '--use-ema' in cmd and 'no-ema' in cmd[cmd.index('--checkpoint') + 1]:
            return subprocess.CompletedProcess(cmd, 2, '', "error: --checkpoint 'x' holds no EMA weights: drop it")
        out = Path(cmd[cmd.index('--results-file') + 1])
        out.write_text(json.dumps(dict(top1=30.0 + ('--use-ema' in cmd), num_images=10000)))
        return subprocess.CompletedProcess(cmd, 0, '', '')

    monkeypatch.setattr(subprocess, 'run', subprocess_run)
    args = argparse.Namespace(data_dir=str(tmp_path / 'data'), test_split='test', workers=0, threads=1)
    run = tmp_path / 'run'
    run.mkdir()
    assert accuracy.test_scores(run, args) == dict(test_top1=30.0, test_ema_top1=31.0, test_images=10000)
    assert all(c[c.index('--split') + 1] == 'test' for c in calls) and len(calls) == 2
    assert accuracy.test_scores(run, args)['test_ema_top1'] == 31.0 and len(calls) == 2  # kept, not evaluated again
    (tmp_path / 'no-ema').mkdir()
    assert accuracy.test_scores(tmp_path / 'no-ema', args) == dict(test_top1=30.0, test_images=10000)

def test_accuracy_rows_count_the_images_of_a_folder_without_manifest(accuracy, tmp_path):
    for c in range(4):
        (tmp_path / 'train' / str(c)).mkdir(parents=True)
        for i in range(40):
            (tmp_path / 'train' / str(c) / f'{i}.png').write_bytes(b'')
    (tmp_path / 'train' / '0' / 'notes.txt').write_text('not an image')
    assert accuracy.train_images(str(tmp_path)) == 160
    assert accuracy.dataset_id(str(tmp_path)) == f'folder:{tmp_path.resolve()}'


def test_photo_budget_methods_train_longer_with_the_same_flags(accuracy):
    """The photo benchmark's budget (2x its recipe's epochs) and 3x that: every baseline and SAMix method of it has
    `_x2` / `_x6` with its own flags and step time, and SAMix^P on a photo-trained Mixer takes it from `samix_x2`."""
    for base in (*accuracy.MATCHED_BASES, *accuracy.PHOTO_SAMIX):
        for factor in (2, 6):
            name = f'{base}_x{factor}'
            assert accuracy.METHODS[name] == accuracy.METHODS[base]
            assert accuracy.SPEED_OF[name] == accuracy.SPEED_OF[base] and accuracy.EPOCH_FACTOR[name] == factor
    assert accuracy.PRETRAIN_SOURCE['samix_p_trained_x2'] == ('samix_x2', 100)
    assert accuracy.PRETRAIN_SOURCE['samix_p_trained_x6'] == ('samix_x2', 100)
    assert 'samix_p_trained_x2' in accuracy.PRETRAIN_SOURCE and 'samix_x2' not in accuracy.PRETRAIN_SOURCE
    # the digits decisions re-run there differ from the default by one setting each: β, the step's preset
    assert accuracy.METHODS['samix_b0.1_x2'] == accuracy.METHODS['samix'] + ['--samix-mask-beta', '0.1']
    assert accuracy.METHODS['samix_step_paper_x2'] == accuracy.METHODS['samix'] + ['--samix-preset', 'paper']
    assert accuracy.METHODS['samix_u0.3_x2'] == accuracy.METHODS['samix'] + ['--samix-mixer-until', '0.3']
    assert accuracy.SPEED_OF['samix_u0.3_x2'] == {'samix_lowres_stable': 0.3, 'samix_paper_frozen': 0.7}


@pytest.mark.parametrize('make, argv, message', [
    (False, [], '--data-dir {d}: no such folder (build it first'),  # before: an empty table, exit 0
    (True, ['--test-split', 'nope'], '--test-split nope: no such folder in {d}'),
    (True, ['--compare', 'samix_x2', 'cutmix_a1_x2'], '--compare: no finished rows of samix_x2, cutmix_a1_x2 in this'),
])
def test_accuracy_missing_data_folder_or_test_split_is_one_line(tmp_path, make, argv, message):
    import subprocess
    import sys
    data = tmp_path / 'data'
    if make:
        data.mkdir()
    proc = subprocess.run([sys.executable, str(REPO / 'bench' / 'accuracy.py'), '--recipe',
                           str(REPO / 'configs' / 'photo_bench.yaml'), '--data-dir', str(data), '--results',
                           str(tmp_path / 'results'), '--table', *argv], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stdout == '' and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(message.format(d=data)), proc.stderr


def test_val_curves_keep_finished_runs_once_and_average_windows(tmp_path):
    """bench/val_curves.py: a finished run folder becomes one row (an unfinished one none, a second collect adds
    nothing); window means are hand-computed (epochs 2–3, the last 2)."""
    curves = load_bench('val_curves')
    runs = tmp_path / 'runs'
    for name, epochs, done in (('samix_x2-s3', 4, 4), ('cutmix_a1_x2-s0', 4, 2)):
        folder = runs / name
        folder.mkdir(parents=True)
        (folder / 'args.yaml').write_text(f'epochs: {epochs}\ndata_dir: {tmp_path}\n')
        lines = ['epoch,eval_top1,eval_ema_top1'] + [f'{e},{10 * e},{10 * e + 1}' for e in range(done)]
        (folder / 'summary.csv').write_text('\n'.join(lines) + '\n')
    out = tmp_path / 'curves.jsonl'
    assert curves.collect(runs, out) == 1 and curves.collect(runs, out) == 0
    (row,) = curves.load(out)
    assert (row['method'], row['seed'], row['top1'], row['ema_top1']) == ('samix_x2', 3, [0, 10, 20, 30], [1, 11, 21, 31])
    assert curves.window_mean(row['ema_top1'], 2, 3) == pytest.approx(16.)
    assert curves.window_mean(row['ema_top1'], -2, 0) == pytest.approx(26.)
    table = curves.report([row], [(2, 3), (-2, 0)], 'ema_top1')
    assert '| samix_x2 | 3 | 4 | 16.0 | 26.0 |' in table and 'mean of 1' in table
    with pytest.raises(SystemExit, match='outside the 4 epochs'):
        curves.window_mean(row['ema_top1'], 3, 5)


def test_compare_gives_the_difference_welch_t_and_paired_seeds(accuracy):
    """--compare: a = 30, 32 (seeds 0, 1), b = 28, 29, 30 (seeds 0, 1, 2): difference 2.0, standard error
    sqrt(2/2 + 1/3) = 1.155, t 1.73; paired on seeds 0 / 1: +2 / +3."""
    by = {'a': [dict(seed=0, top1=30.), dict(seed=1, top1=32.)],
          'b': [dict(seed=0, top1=28.), dict(seed=1, top1=29.), dict(seed=2, top1=30.)]}
    assert accuracy.compare(by, 'a', 'b') == ('a (2) 31.00 - b (3) 29.00 = +2.00; Welch t +1.73 (standard error '
                                              '1.15); paired on seeds 0/1: +2.00 / +3.00, mean +2.50')
    with pytest.raises(SystemExit, match='no finished rows of c'):
        accuracy.compare(by, 'a', 'c')


def test_val_curves_missing_run_folder_is_one_line(tmp_path):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, str(REPO / 'bench' / 'val_curves.py'), '--collect', str(tmp_path / 'nope'),
                           '--out', str(tmp_path / 'curves.jsonl')], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f'--collect {tmp_path / "nope"}: no such folder'), proc.stderr
    assert not (tmp_path / 'curves.jsonl').exists()
