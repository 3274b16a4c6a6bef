""" bench/speed.py times and counts train.py's step: the task built from each method's train.py flags, run by
`train_one_epoch` (issue 43 item 7); `--flops` counts the FLOPs of that step. CPU, test_resnet at 32 px: seconds. """
import json
import sys
import types

import pytest
import torch
import yaml

from conftest import REPO, load_bench
from samix_timm import SAMixPretrained
from samix_timm.defaults import DEFAULT_PRESET, SAMIX_PRESETS
from samix_timm.task import MixTask, SAMixTask

CPU = torch.device('cpu')


@pytest.fixture(scope='module')
def speed():
    return load_bench('speed')


def _args(**kw):
    return types.SimpleNamespace(**dict(dict(img_size=32, batch_size=4, warmup=1, reps=2, window=2), **kw))


def test_timed_step_is_the_task_step(speed, monkeypatch, one_thread):
    """What time_methods times is `SAMixTask.forward` (and `MixTask.forward` for timm Mixup), called by
    `train_one_epoch` once per batch: the Mixer's step counter advances with every timed or warm-up step and its
    weights change (its own update runs inside the task's step)."""
    calls, tasks, epochs = {}, {}, []
    samix_forward, mix_forward, loop = SAMixTask.forward, MixTask.forward, speed.train_one_epoch

    def spy(original, name):
        def forward(self, input, target):
            calls[name] = calls.get(name, 0) + 1
            if name not in tasks:  # the task, and the Mixer's weights before its first step
                mixer = self.samix.mixer.parameters() if name == 'samix' else ()
                tasks[name] = (self, [p.detach().clone() for p in mixer])
            return original(self, input, target)
        return forward

    monkeypatch.setattr(SAMixTask, 'forward', spy(samix_forward, 'samix'))
    monkeypatch.setattr(MixTask, 'forward', spy(mix_forward, 'mixup'))
    monkeypatch.setattr(speed, 'train_one_epoch', lambda *a, **k: (epochs.append(len(a[2])), loop(*a, **k))[1])
    args = _args()
    out = speed.time_methods('test_resnet', ['mixup', 'samix_paper_stable'], args, CPU)
    steps = args.warmup + args.reps * args.window
    assert calls == {'mixup': steps, 'samix': steps}
    assert sorted(epochs) == [args.warmup] * 2 + [args.window] * (2 * args.reps)  # one train_one_epoch per sample
    task, before = tasks['samix']
    assert type(task) is SAMixTask and type(tasks['mixup'][0]) is MixTask
    assert task.samix.step == steps
    assert any(not torch.equal(b, p) for b, p in zip(before, task.samix.mixer.parameters()))
    assert all(r['median_s'] > 0 and r['steps'] == args.reps for r in out.values())


def test_runner_builds_what_the_flags_say(speed, one_thread):
    """Each method's train.py flags reach the task: the default SAMix, the authors' step, SAMix^P, the clean term
    beside timm Mixup, and no mixing."""
    def runner(method):
        return speed.Runner('test_resnet', method, 32, 4, CPU)

    default = runner('samix').task
    assert type(default) is SAMixTask and default.samix.preset == SAMIX_PRESETS[DEFAULT_PRESET]
    reference = runner('samix_reference').task
    assert reference.samix.preset == SAMIX_PRESETS['reference'] and reference.samix.settings.loss == 'mce'
    assert reference.clean is not None and reference.clean.forward == 'separate'
    assert isinstance(runner('samix_p').mix, SAMixPretrained)
    clean = runner('mixup_clean').task
    assert type(clean) is MixTask and clean.clean.weight == 1 and clean.clean.forward == 'separate'
    none = runner('none')
    assert none.mix is None and none.step() > 0


def test_flops_of_the_step(speed, tmp_path, monkeypatch, one_thread):
    """--flops on test_resnet: a positive count per image for every method, SAMix above timm Mixup and the authors'
    step (Mixer every step, full resolution) above the default (lowres); the same per image at another batch; the
    table and the JSON are written where --out says."""
    out = tmp_path / 'flops'
    methods = ['none', 'mixup', 'samix', 'samix_reference']
    monkeypatch.setattr(sys, 'argv', ['bench/speed.py'])
    assert speed.main(['--flops', '--models', 'test_resnet:32', '--methods', *methods, '--out', str(out)]) == 0
    result = json.loads(out.with_suffix('.json').read_text())
    assert result['done'] and result['batch_size'] == 2 and result['num_classes'] == 1000
    flops = {m: f['gflops_per_image'] for m, f in result['models']['test_resnet']['flops'].items()}
    assert sorted(flops) == sorted(methods) and all(f > 0 for f in flops.values())
    assert flops['samix_reference'] > flops['samix'] > flops['mixup'] * 1.5
    text = out.with_suffix('.md').read_text()
    assert '| method | test_resnet (32 px) |' in text and '| mixup | ' in text and '(1.00×)' in text
    at4 = speed.count_flops('test_resnet', ['samix'], _args(batch_size=4, num_classes=1000), CPU)
    assert at4['samix']['gflops_per_image'] == pytest.approx(flops['samix'], rel=1e-6)


def test_flops_reports_what_train_py_refuses(speed, one_thread):
    """A method train.py refuses for the model (the lowres Mixer branch on a ViT's fixed patch grid) is a row that
    says why, not a failed run."""
    out = speed.count_flops('deit_tiny_patch16_224', ['mixup', 'samix_lowres_stable', 'samix', 'samix_every2_stable'],
                            _args(batch_size=2, num_classes=10), CPU)
    assert out['mixup']['gflops_per_image'] > 0 and 'fixed patch grid' in out['samix_lowres_stable']['skipped']
    # train.py's default on such a model runs its Mixer branch at full resolution: the every2 step
    assert out['samix']['gflops_per_image'] == pytest.approx(out['samix_every2_stable']['gflops_per_image'], rel=1e-6)


def test_flops_models_are_those_of_configs_in1k(speed):
    """--flops defaults to the IN-1k models of configs/in1k, at the resolution their configs train at."""
    configs = [yaml.safe_load(p.read_text()) for p in (REPO / 'configs' / 'in1k').glob('*.yaml')]
    trained = {(c['model'], c['img_size']) for c in configs}
    assert {speed.split_size(m, 0) for m in speed.IN1K_MODELS} <= trained
    assert {m for m, _ in trained} >= {'resnet18', 'resnet50', 'deit_small_patch16_224', 'swin_tiny_patch4_window7_224'}


def test_flops_refuses_to_overwrite_the_committed_table(speed, tmp_path, monkeypatch, capsys):
    """Without --out, --flops writes bench/results/flops_in1k.{json,md}: an existing one is refused before any count."""
    monkeypatch.chdir(tmp_path)
    committed = tmp_path / 'bench' / 'results' / 'flops_in1k.md'
    committed.parent.mkdir(parents=True)
    committed.write_text('a committed table')
    monkeypatch.setattr(speed, 'count_flops', lambda *a: pytest.fail('counted before checking --out'))
    assert speed.main(['--flops']) == 2
    err = capsys.readouterr().err
    assert 'bench/results/flops_in1k.md' in err and '--overwrite' in err
    assert committed.read_text() == 'a committed table'
