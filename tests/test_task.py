""" The training step as a timm TrainingTask (samix_timm/task.py): the loss against hand-computed values, the clean
term with no state passed through the mixer, and the loop's step unchanged by the move. """
import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.task import TrainingTask

from samix_timm.clean import CleanTerm
from samix_timm.mixing import soft_target
from samix_timm.samix import SAMix
from samix_timm.settings import StepPreset
from samix_timm.task import MixTask, SAMixTask, create_task

K = 5


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, K))


def _batch(n=8):
    torch.manual_seed(1)
    return torch.randn(n, 3, 16, 16), torch.randint(0, K, (n,))


def test_mix_task_is_a_timm_training_task_with_the_recipe_loss():
    model, (x, y) = _model(), _batch()
    task = MixTask(model, SoftTargetCrossEntropy())
    assert isinstance(task, TrainingTask) and task.trainable_module is model
    result = task(x, soft_target(y, None, 1., K, 0.))
    expected = SoftTargetCrossEntropy()(model(x), soft_target(y, None, 1., K, 0.))
    torch.testing.assert_close(result['loss'], expected)
    assert result['output'].shape == (8, K)


def test_clean_term_by_hand_for_both_forwards_and_a_fraction():
    """W/N·Σ_{i<n} CE(f(x_i), onehot(y_i)) + CE(f(x_mix), ỹ) on timm Mixup's batch of N, the two forwards separate
    (BN per half) or joint; value and gradient by hand. With a fraction (n < N) each clean image keeps its weight W/N
    of the reference term: W on the mean of n rows put N/n times that on each and cost 7 points (§5.6)."""
    x, y = _batch()
    for forward, frac in (('separate', 1.0), ('joint', 1.0), ('separate', 0.25)):
        model = _model()
        mixup = Mixup(mixup_alpha=1.0, num_classes=K)
        task = MixTask(model, SoftTargetCrossEntropy(), mixup, CleanTerm(0.7, K, 0.1, forward, frac))
        np.random.seed(3)
        result = task(x.clone(), y)
        np.random.seed(3)
        x_mix, y_mix = Mixup(mixup_alpha=1.0, num_classes=K)(x.clone(), y)
        n = max(1, round(frac * 8))
        y_clean = soft_target(y[:n], None, 1., K, 0.1)  # the clean rows are the images before mixing (x is intact)
        ce = SoftTargetCrossEntropy()
        if forward == 'separate':
            out_clean, out_mix = model(x[:n]), model(x_mix)
        else:
            out_clean, out_mix = model(torch.cat([x[:n], x_mix])).split([n, 8])
        per_image = -(y_clean * out_clean.log_softmax(-1)).sum(1)
        by_hand = 0.7 * per_image.sum() / 8 + ce(out_mix, y_mix)
        torch.testing.assert_close(result['loss'], by_hand)
        assert result['output'].shape[0] == n + 8 and result['input'].shape[0] == n + 8
        g_task = torch.autograd.grad(result['loss'], model[0].weight)[0]
        g_hand = torch.autograd.grad(by_hand, model[0].weight)[0]
        torch.testing.assert_close(g_task, g_hand)


def test_no_clean_half_when_mixing_is_off():
    model, (x, y) = _model(), _batch()
    mixup = Mixup(mixup_alpha=1.0, num_classes=K)
    mixup.mixup_enabled = False
    result = MixTask(model, SoftTargetCrossEntropy(), mixup, CleanTerm(1.0, K))(x, y)
    assert result['output'].shape[0] == 8


def _samix_step_task(seed=0, **preset):
    torch.manual_seed(seed)
    model = timm.create_model('test_resnet', num_classes=K)
    samix = SAMix(model, K, 10, preset=StepPreset(**preset), input_size=(3, 32, 32))
    return create_task(model, SoftTargetCrossEntropy(), samix)


def _samix_batch(n=16):
    torch.manual_seed(1)
    return torch.randn(n, 3, 32, 32), torch.randint(0, K, (n,))


def test_samix_task_loss_is_the_clean_and_the_mixed_term_of_its_own_mix():
    """The SAMix task's loss is W·CE(f(x), onehot(y)) + CE(f(x_mix), ỹ) (§5.6, separate forwards) for the x_mix, ỹ
    its step makes (`mix`: θ̄, the masks, the Mixer update), from the same RNG state; it reports the Mixer's
    metrics and the momentum and λ of the step."""
    x, y = _samix_batch()
    task = _samix_step_task(clean_weight=0.5, clean_forward='separate')
    assert isinstance(task, SAMixTask) and task.mixer is None and task.samix.clean.weight == 0.5
    torch.manual_seed(5), np.random.seed(5)
    result = task(x, y)
    twin = _samix_step_task(clean_weight=0.5, clean_forward='separate')
    torch.manual_seed(5), np.random.seed(5)
    x_mix, y_mix, metrics = twin.mix(x, y)
    model = twin.trainable_module
    by_hand = 0.5 * SoftTargetCrossEntropy()(model(x), soft_target(y, None, 1., K, 0.1)) \
        + SoftTargetCrossEntropy()(model(x_mix), y_mix)
    torch.testing.assert_close(result['loss'], by_hand, rtol=0, atol=0)
    torch.testing.assert_close(result['input'], torch.cat([x, x_mix]), rtol=0, atol=0)
    assert {'mixer_loss', 'mask_keep', 'lam_k', 'momentum', 'lam'} <= set(result) and set(metrics) <= set(result)
    assert metrics['lam'] == result['lam'] and y_mix.shape == (16, K)


def test_samix_task_keeps_no_state_between_calls():
    """Each call returns what it made: a second step gives the same result whether or not other calls on the task and
    its SAMix (preview, health, checkpoint state, train/eval, a call of another task) came in between (it used to
    pass the clean split and the metrics through attributes of the mixer: `CleanTerm.split`, `last_metrics`)."""
    from samix_timm.health import mixer_health
    x, y = _samix_batch()
    results = []
    for interleave in (False, True):
        task = _samix_step_task()
        torch.manual_seed(5), np.random.seed(5)
        task(x, y)
        rng = torch.get_rng_state(), np.random.get_state()
        if interleave:
            task.samix.preview(x[:4])
            mixer_health(task.samix, x[:8], lams=(0.3,))
            task.get_checkpoint_state()
            task.eval(), task.train()
            MixTask(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, K)), SoftTargetCrossEntropy(),
                    Mixup(mixup_alpha=1.0, num_classes=K), CleanTerm(1.0, K))(x.clone(), y)
            other = _samix_step_task(seed=3)
            other(x[:8], y[:8])
            torch.set_rng_state(rng[0]), np.random.set_state(rng[1])
        results.append(task(x[:8], y[:8]))
    plain, interleaved = results
    assert set(plain) == set(interleaved)
    for k, v in plain.items():
        torch.testing.assert_close(torch.as_tensor(interleaved[k]), torch.as_tensor(v), rtol=0, atol=0, msg=k)


def test_samix_task_to_train_and_state_dict_reach_theta_bar_and_the_mixer():
    """θ̄, the feature tap and the Mixer are the task's submodules (through `samix`), as timm's distillation task
    owns its teacher: `train(False)` puts the Mixer in eval (θ̄ stays on batch statistics, as the method uses it),
    `to(dtype)` converts θ̄ and the Mixer (and a step runs in that dtype), `state_dict` holds both."""
    task = _samix_step_task()
    samix = task.samix
    task.train(False)
    assert not samix.mixer.training and not any(m.training for m in samix.mixer.modules())
    assert samix.encoder.module.training  # θ̄ normalises with batch statistics whatever the task's mode
    task.train()
    assert samix.mixer.training and samix.encoder.module.training
    keys = task.state_dict().keys()
    assert any(k.startswith('samix.encoder.module.') for k in keys) and any(k.startswith('samix.mixer.') for k in keys)
    task.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in samix.encoder.module.parameters())
    assert all(p.dtype == torch.float64 for p in samix.mixer.parameters())
    assert task.dtype == torch.float64
    x, y = _samix_batch(8)
    result = task(x.double(), y)
    assert result['loss'].dtype == torch.float64 and torch.isfinite(result['loss'])
    assert samix.optimizer.param_groups[0]['params'][0] is next(samix.mixer.parameters())  # still the Mixer's


def test_clean_half_is_the_unmixed_batch_although_timm_mixup_mixes_in_place():
    """timm's Mixup overwrites its input with the mixed batch; the clean term must still see the images as they came
    from the loader (it used to see the mixed ones with one-hot labels: `mixup_clean`, the fair control of §5.6)."""
    x, y = _batch()
    seen = []

    class Spy(nn.Module):
        def forward(self, inp):
            seen.append(inp.detach().clone())
            return inp.mean((2, 3)).repeat(1, 2)[:, :K]

    np.random.seed(0)
    MixTask(Spy(), SoftTargetCrossEntropy(), Mixup(mixup_alpha=1.0, num_classes=K),
            CleanTerm(1.0, K, forward='separate'))(x.clone(), y)
    torch.testing.assert_close(seen[0], x)  # separate forward: the clean half first
    assert not torch.equal(seen[1], x)


def test_one_resume_restores_what_each_task_saved(tmp_path):
    """`resume_task` (train.py and train_ssl.py alike) puts back what `get_checkpoint_state` wrote; from a checkpoint
    of a run without a Mixer or an EMA, θ̄ and the EMA start from the resumed classifier, not from its fresh init."""
    import argparse
    from timm.utils import ModelEmaV3
    from samix_timm.engine.checkpoint import resume_task
    torch.manual_seed(3)
    trained = timm.create_model('test_resnet', num_classes=K)
    path = tmp_path / 'plain.pth.tar'
    torch.save({'state_dict': trained.state_dict(), 'epoch': 4, 'version': 2}, path)
    torch.manual_seed(0)
    model = timm.create_model('test_resnet', num_classes=K)
    ema = ModelEmaV3(model)
    samix = SAMix(model, K, 10, input_size=(3, 32, 32))
    task = create_task(model, SoftTargetCrossEntropy(), samix, model_ema=ema)
    assert resume_task(task, str(path), None, None, argparse.Namespace(opt='sgd')) == 5
    for module in (model, ema.module, samix.encoder.module):
        for k, v in trained.state_dict().items():
            torch.testing.assert_close(module.state_dict()[k], v, msg=k)
    # a checkpoint of that task resumes its Mixer too
    samix.step = 7
    torch.save({**task.get_checkpoint_state(), **task.get_checkpoint_state(ema=True), 'epoch': 1, 'version': 2},
               tmp_path / 'samix.pth.tar')
    torch.manual_seed(1)
    other = timm.create_model('test_resnet', num_classes=K)
    other_samix = SAMix(other, K, 10, input_size=(3, 32, 32))
    resume_task(create_task(other, SoftTargetCrossEntropy(), other_samix), str(tmp_path / 'samix.pth.tar'), None,
                None, argparse.Namespace(opt='sgd'))
    assert other_samix.step == 7
    for a, b in zip(other_samix.mixer.state_dict().values(), samix.mixer.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_samix_checkpoint_entry_keeps_its_layout():
    """The task state's 'samix' entry keeps the layout checkpoints have been written with (main before SAMix became
    a task's submodule; the SAMix^P export reads it too), so they resume and export unchanged."""
    task = _samix_step_task()
    x, y = _samix_batch(8)
    task(x, y)
    state = task.get_task_state()['samix']
    assert set(state) == {'step', 'fp32_features', 'feature_index', 'mixer_name', 'mixer_config', 'mixer', 'mask_loss',
                          'encoder', 'optimizer', 'grad_scaler'}
    assert state['step'] == 1 and state['mixer_name'] == 'samix' and set(state['optimizer']) == {'state', 'param_groups'}
    assert state['mixer'].keys() == task.samix.mixer.state_dict().keys()
    assert state['encoder'].keys() == task.trainable_module.state_dict().keys()  # θ̄: the classifier's layout


def test_own_clean_head_by_hand_and_gradients_reach_only_their_head():
    """clean_head='own' (the reference's head_one): loss = W·CE(head(pool(features(x))), y) + CE(f(x_mix), ỹ); the
    clean head learns from the clean rows only, the classifier's head from the mixed rows only, the backbone from
    both; the separate and joint forwards differ only in BN statistics."""
    from samix_timm.clean import CleanHeadClassifier
    x, y = _batch(8)
    for forward in ('separate', 'joint'):
        torch.manual_seed(0)
        model = timm.create_model('test_resnet', num_classes=K)
        mixup = Mixup(mixup_alpha=1.0, num_classes=K)
        task = MixTask(model, SoftTargetCrossEntropy(), mixup, CleanTerm(0.5, K, forward=forward), clean_head='own')
        assert isinstance(task.clean_classifier, CleanHeadClassifier)
        head = task.clean_classifier.head
        np.random.seed(3)
        result = task(x.clone(), y)
        np.random.seed(3)
        x_mix, y_mix = Mixup(mixup_alpha=1.0, num_classes=K)(x.clone(), y)
        y_clean = soft_target(y, None, 1., K, 0.)
        ce = SoftTargetCrossEntropy()
        if forward == 'separate':
            out_clean = head(model.forward_head(model.forward_features(x), pre_logits=True))
            out_mix = model(x_mix)
        else:
            f = model.forward_features(torch.cat([x, x_mix]))
            out_clean, out_mix = head(model.forward_head(f[:8], pre_logits=True)), model.forward_head(f[8:])
        torch.testing.assert_close(result['loss'], 0.5 * ce(out_clean, y_clean) + ce(out_mix, y_mix))
    # gradients: each head from its own half only, the backbone from both
    for half in (0, 1):
        torch.manual_seed(0)
        model = timm.create_model('test_resnet', num_classes=K)
        task = MixTask(model, SoftTargetCrossEntropy(), Mixup(mixup_alpha=1.0, num_classes=K), CleanTerm(1.0, K),
                       clean_head='own')
        task.clean_classifier(x, x.flip(0))[half].sum().backward()
        head_grad, fc_grad = task.clean_classifier.head.weight.grad, model.get_classifier().weight.grad
        assert (head_grad is not None) == (half == 0) and (fc_grad is not None) == (half == 1)
        assert model.conv1[0].weight.grad.abs().sum() > 0


def test_own_clean_head_stays_out_of_the_model_checkpoint_and_resumes(tmp_path):
    import argparse
    from samix_timm.engine.checkpoint import resume_task
    from samix_timm.task import CLEAN_HEAD_KEY
    torch.manual_seed(0)
    model = timm.create_model('test_resnet', num_classes=K)
    task = MixTask(model, SoftTargetCrossEntropy(), Mixup(mixup_alpha=1.0, num_classes=K), CleanTerm(1.0, K),
                   clean_head='own')
    with torch.no_grad():
        task.clean_classifier.head.weight.add_(1.0)
    state = task.get_checkpoint_state()
    timm.create_model('test_resnet', num_classes=K).load_state_dict(state['state_dict'])  # the model users load
    assert set(state['task_state'][CLEAN_HEAD_KEY]) == {'weight', 'bias'} and CLEAN_HEAD_KEY not in state
    torch.save({**state, 'epoch': 0, 'version': 2}, tmp_path / 'c.pth.tar')
    other = MixTask(timm.create_model('test_resnet', num_classes=K), SoftTargetCrossEntropy(),
                    Mixup(mixup_alpha=1.0, num_classes=K), CleanTerm(1.0, K), clean_head='own')
    resume_task(other, str(tmp_path / 'c.pth.tar'), None, None, argparse.Namespace(opt='sgd'))
    torch.testing.assert_close(other.clean_classifier.head.weight, task.clean_classifier.head.weight)
    with pytest.raises(ValueError, match="clean_head='own' needs the clean-batch term"):
        MixTask(model, SoftTargetCrossEntropy(), None, None, clean_head='own')


def _samix_task(seed: int, **kwargs):
    torch.manual_seed(seed)
    model = timm.create_model('test_resnet', num_classes=K)
    samix = SAMix(model, K, 10, input_size=(3, 32, 32))
    return model, samix, create_task(model, SoftTargetCrossEntropy(), samix, **kwargs)


def test_timm_resume_task_checkpoint_resumes_a_samix_run(tmp_path):
    """timm's own `resume_task_checkpoint` (timm.task) continues a SAMix run: the classifier, θ̄, the Mixer and its
    step from `task_state`, the optimizer, the epoch; it raised TypeError on our tasks before they kept timm's
    contract."""
    from timm.task import resume_task_checkpoint
    model, samix, task = _samix_task(0)
    x, y = _batch(8)
    optimizer = torch.optim.SGD(task.get_clip_parameters(), lr=0.1, momentum=0.9)
    task(x, y)['loss'].backward()
    optimizer.step()
    saved = {**task.get_checkpoint_state(), 'optimizer': optimizer.state_dict(), 'epoch': 3, 'version': 2}
    assert set(saved['task_state']) == {'samix'} and 'samix' not in saved
    torch.save(saved, tmp_path / 'last.pth.tar')
    other_model, other_samix, other = _samix_task(1)
    other_opt = torch.optim.SGD(other.get_clip_parameters(), lr=0.1, momentum=0.9)
    assert resume_task_checkpoint(other, str(tmp_path / 'last.pth.tar'), other_opt, weights_only=False) == 4
    assert other_samix.step == samix.step == 1
    for a, b in ((other_model, model), (other_samix.mixer, samix.mixer), (other_samix.encoder.module, samix.encoder.module)):
        for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(v, w, msg=k)
    torch.testing.assert_close(other_opt.state_dict()['state'][0]['momentum_buffer'],
                               optimizer.state_dict()['state'][0]['momentum_buffer'])


def test_a_checkpoint_written_before_the_task_state_still_resumes(tmp_path):
    """Checkpoints of before 2026-12-07 kept SAMix's state at the top level (`samix`): ours resume them."""
    import argparse
    from samix_timm.engine.checkpoint import resume_task
    _, samix, task = _samix_task(0)
    samix.step = 5
    state = task.get_checkpoint_state()
    legacy = {'state_dict': state['state_dict'], 'samix': state['task_state']['samix'], 'epoch': 0, 'version': 2}
    torch.save(legacy, tmp_path / 'old.pth.tar')
    _, other_samix, other = _samix_task(1)
    assert resume_task(other, str(tmp_path / 'old.pth.tar'), None, None, argparse.Namespace(opt='sgd')) == 1
    assert other_samix.step == 5
    for a, b in zip(other_samix.mixer.state_dict().values(), samix.mixer.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_the_clip_set_holds_every_trained_parameter():
    """What the optimizer trains is what clipping sees: the classifier's parameters, and with clean_head='own' its
    clean head's too (the loop used to clip the model only: 0 of the head's 2 tensors)."""
    from samix_timm.engine import parse_train_args
    from samix_timm.engine.train import build_model, build_task, create_mixing, create_task_optimizer
    for extra in ([], ['--samix-clean-head', 'own']):
        args, _ = parse_train_args(['--model', 'test_resnet', '--num-classes', '4', '--img-size', '32', '--mixup',
                                    'samix', '--samix-clean-weight', '1', '--model-ema', *extra])
        args.distributed = False
        model = build_model(args, 4)
        mixup_fn, clean, loss = create_mixing(args, model, dict(input_size=(3, 32, 32)), 10, 100, None, None,
                                              torch.device('cpu'))
        task = build_task(args, model, loss, mixup_fn, clean, torch.device('cpu'))
        optimizer = create_task_optimizer(args, task)
        trained = {id(p) for g in optimizer.param_groups for p in g['params']}
        clipped = {id(p) for p in task.get_clip_parameters()}
        assert trained == clipped, (len(trained), len(clipped))
        assert len(trained) == len(list(model.parameters())) + 2 * bool(extra)
        assert task.has_ema() and task.trainable_module_ema.module is not model
        if extra:
            head = task.clean_classifier.head
            assert {id(head.weight), id(head.bias)} <= clipped
            assert {id(p) for p in task.get_clip_parameters(exclude_head=True)}.isdisjoint({id(head.weight)})
