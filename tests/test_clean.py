""" The clean-batch term (§5.6), the run-aware defaults of one's own loop, and the Mixer health numbers. """
import math

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.loss import BinaryCrossEntropy, SoftTargetCrossEntropy

from conftest import build_samix
from samix_timm import MixSettings, SAMix
from samix_timm.clean import CleanTerm
from samix_timm.defaults import samix_defaults
from samix_timm.health import health_failures, mixer_health
from samix_timm.task import MixTask, SAMixTask

K = 10


def _model(seed=0):
    torch.manual_seed(seed)
    return timm.create_model('test_resnet', num_classes=K)


def _batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, K, (n,), generator=g)


class _Fixed:
    """A mixer that hands back a given mixed batch (timm Mixup's call), to check the clean term by hand."""
    mixup_enabled = True

    def __init__(self, x_mix, y_mix):
        self.x_mix, self.y_mix = x_mix, y_mix

    def __call__(self, x, target):
        return self.x_mix, self.y_mix


class _Recording(nn.Module):
    """The recipe's loss, keeping the targets the task hands it."""

    def __init__(self, loss_fn):
        super().__init__()
        self.loss_fn, self.targets = loss_fn, []

    def forward(self, output, target):
        self.targets.append(target)
        return self.loss_fn(output, target)


def test_clean_and_mixed_terms_against_hand_values():
    """W·loss(f(x), onehot(y) smoothed as the recipe) + loss(f(x_mix), ỹ); the plain loss on an unmixed batch."""
    x = torch.tensor([[2., 0., 0.], [0., 1., 0.]]).view(2, 3, 1, 1)  # nn.Flatten: the pixels are the logits
    x_mix = torch.tensor([[1., 1., 1.], [0., 0., 3.]]).view(2, 3, 1, 1)
    y_mix = torch.tensor([[.2, .8, 0.], [0., .4, .6]])
    loss_fn = _Recording(SoftTargetCrossEntropy())
    task = MixTask(nn.Flatten(), loss_fn, _Fixed(x_mix, y_mix), CleanTerm(0.5, num_classes=3, smoothing=0.3))
    result = task(x, torch.tensor([0, 2]))
    y_clean = loss_fn.targets[0]  # one-hot with the recipe's smoothing: on = 1 - 0.3 + 0.1, off = 0.1
    torch.testing.assert_close(y_clean, torch.tensor([[.8, .1, .1], [.1, .1, .8]]))
    logp, logp_mix = x.flatten(1).log_softmax(-1), x_mix.flatten(1).log_softmax(-1)
    by_hand = 0.5 * -(y_clean * logp).sum(1).mean() + -(y_mix * logp_mix).sum(1).mean()
    torch.testing.assert_close(result['loss'], by_hand)
    assert torch.equal(result['input'], torch.cat([x, x_mix]))
    plain = MixTask(  # no mixing: no clean half, the plain loss
        nn.Flatten(), SoftTargetCrossEntropy(), None, CleanTerm(0.5, 3, 0.3))(x, y_clean)
    torch.testing.assert_close(plain['loss'], -(y_clean * logp).sum(1).mean())


def test_clean_half_follows_the_recipes_bce_threshold():
    """RSB recipes: the clean half goes through the same BCE with its target threshold."""
    x, x_mix = torch.tensor([[0.5, -1., 2.]]).view(1, 3, 1, 1), torch.tensor([[1., 0., -1.]]).view(1, 3, 1, 1)
    y_mix = torch.tensor([[.7, .3, 0.]])
    bce = BinaryCrossEntropy(target_threshold=0.2)
    task = MixTask(nn.Flatten(), bce, _Fixed(x_mix, y_mix), CleanTerm(1.0, num_classes=3, smoothing=0.1))
    y_clean = torch.tensor([[0.1 / 3, 0.9 + 0.1 / 3, 0.1 / 3]])
    by_hand = (F.binary_cross_entropy_with_logits(x.flatten(1), (y_clean > 0.2).float())
               + F.binary_cross_entropy_with_logits(x_mix.flatten(1), (y_mix > 0.2).float()))
    torch.testing.assert_close(task(x, torch.tensor([1]))['loss'], by_hand)


@pytest.mark.parametrize('bad', [-1.0, float('nan')])
def test_bad_clean_weight_is_refused(bad):
    with pytest.raises(ValueError, match='weight=.* it must be >= 0'):
        CleanTerm(bad, K)
    with pytest.raises(ValueError, match="forward='both' is not known: use one of joint, separate"):
        CleanTerm(1.0, K, forward='both')


def _samix_task(model, **flat):
    return SAMixTask(model, _Recording(SoftTargetCrossEntropy()), build_samix(model, K, 100, input_size=(3, 32, 32),
                                                                             **flat))


def test_samix_task_trains_on_clean_then_mixed_and_both_terms_train_the_classifier():
    model = _model()
    task = _samix_task(model, label_smoothing=0.0, lam_margin=0.0, clean_weight=1.0, clean_forward='separate')
    samix = task.samix
    x, y = _batch()
    np.random.seed(0)
    result = task(x, y)
    x_out, (y_clean, y_mix) = result['input'], task.criterion.targets
    assert x_out.shape[0] == 12 and torch.equal(x_out[:6], x)  # clean rows untouched
    torch.testing.assert_close(y_clean, F.one_hot(y, K).float())
    lam = result['lam']
    assert not torch.allclose(x_out[6:], x)  # the mixed half is mixed
    torch.testing.assert_close(y_mix.max(1).values.min(), torch.tensor(max(lam, 1 - lam)), atol=1e-6, rtol=0)
    ce = SoftTargetCrossEntropy()
    torch.testing.assert_close(result['loss'], ce(result['output'][:6], y_clean) + ce(result['output'][6:], y_mix))
    mixer_grads = [p.grad.clone() for p in samix.mixer.parameters()]  # left by the Mixer's own update
    result['loss'].backward()
    assert all(p.grad is not None for p in model.parameters())
    # the classifier loss never reaches φ (x_mix is built under no_grad)
    assert all(torch.equal(g, p.grad) for g, p in zip(mixer_grads, samix.mixer.parameters()))
    # off: the mixed batch alone
    off = _samix_task(_model(), clean_weight=0.0)
    assert off.clean is None and off(x, y)['input'].shape[0] == 6


def test_samix_disabled_mixing_trains_on_the_plain_batch():
    task = _samix_task(_model(), clean_weight=1.0)
    task.samix.mixup_enabled = False  # timm's --mixup-off-epoch
    x, y = _batch()
    result = task(x, y)
    assert torch.equal(result['input'], x) and result['output'].shape[0] == 6


def test_separate_forward_gives_each_half_its_own_batchnorm_statistics():
    x, y = _batch()
    outputs = {}
    for forward in ('separate', 'joint'):
        model = _model().train()
        task = MixTask(model, SoftTargetCrossEntropy(), _Fixed(3 * x + 1, F.one_hot(y, K).float()),
                       CleanTerm(1.0, K, forward=forward))
        outputs[forward] = task(x, y)['output'].detach()
    torch.testing.assert_close(outputs['separate'][:6], _model().train()(x))  # as a forward of the clean batch alone
    assert not torch.allclose(outputs['joint'][:6], outputs['separate'][:6], atol=1e-3)  # BN saw both halves together


def test_train_args_and_own_loop_get_the_same_samix():
    """One source of defaults: train.py's factory and SAMix(**samix_defaults(...)) build the same thing."""
    from samix_timm.engine.args import parse_train_args
    from samix_timm.factory import create_mixup
    args, _ = parse_train_args(['--model', 'test_resnet', '--mixup', 'samix', '--epochs', '5', '--lr', '0.1',
                                '--weight-decay', '5e-4', '--smoothing', '0'])
    data_config = dict(input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.5,) * 3)
    ours = create_mixup(args, _model(), K, data_config=data_config, steps_per_epoch=40, train_size=4000)
    T = 5 * 40
    own = SAMix(_model(), K, T, input_size=(3, 32, 32), mix=MixSettings(label_smoothing=0.0),
                **samix_defaults('test_resnet', T, train_size=4000, lr=0.1, weight_decay=5e-4))
    assert ours.total_steps == own.total_steps and ours.preset == own.preset and ours.mix == own.mix
    for attr in ('eta', 'loss', 'mask_margin', 'mask_loss', 'min_lr', 'kwargs'):
        assert getattr(ours.settings, attr) == getattr(own.settings, attr), attr
    assert ours.clean.weight == own.clean.weight == 1.0 and ours.clean.forward == own.clean.forward
    assert [ours.momentum(t) for t in (0, T // 2, T)] == [own.momentum(t) for t in (0, T // 2, T)]
    assert [ours.settings.beta(t) for t in (0, T)] == [own.settings.beta(t) for t in (0, T)] == [1.0, 1.0]  # constant, §2.6
    assert ours.optimizer.defaults == own.optimizer.defaults
    assert ours.mixer.config == own.mixer.config


def test_defaults_by_family_size_and_length():
    small = samix_defaults('resnet18', 1000, train_size=50_000, weight_decay=1e-4)
    big = samix_defaults('resnet50', 500_000, train_size=1_281_167, weight_decay=1e-4)
    vit = samix_defaults('deit_small_patch16_224', 500_000, train_size=1_281_167, lr=5e-4, weight_decay=0.05)
    assert (small['mixer'].eta, big['mixer'].eta) == (0.5, 0.1)
    assert (small['mixer'].kwargs['dropout'], big['mixer'].kwargs['dropout']) == (0.0, 0.1)
    assert small['mixer'].beta.mode == 'constant' and big['mixer'].beta.mode == 'linear'
    assert big['momentum'].start == pytest.approx(0.999) and big['momentum'].end == pytest.approx(0.99999)
    assert small['momentum'].start == pytest.approx(1 - 10 / 1000)  # scaled to T
    opt = big['mixer'].optimizer.keywords
    assert (opt['opt'], opt['lr'], opt['weight_decay']) == ('momentum', 0.1, 1e-4)  # §5.7: plain SGD, inherited wd
    assert vit['mixer'].optimizer.keywords['opt'] == 'adamw' and vit['mixer'].optimizer.keywords['lr'] == 5e-4
    assert vit['momentum'].warmup_frac == 0.25
    # the Mixer's weight decay reaches every parameter, BN and biases included (the reference's)
    mixer = nn.Sequential(nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2))
    optimizer = big['mixer'].optimizer(mixer.parameters())
    assert all(g['weight_decay'] == 1e-4 for g in optimizer.param_groups)
    assert sum(len(g['params']) for g in optimizer.param_groups) == 4
    assert not any(g.get('nesterov') for g in optimizer.param_groups)


def test_stable_mask_gets_beta_1_and_the_authors_mask_keeps_0_1():
    """§2.6 cause 6: β of the mask losses is 1 for the stable Mixer's mask (area λ, per-image losses), where it weighs
    ℓ_σ alone; the authors' mask (free area or batch losses), AutoMix and an explicit value keep theirs."""
    beta = (lambda **kw: samix_defaults('resnet18', 1000, train_size=50_000, **kw)['mixer'].beta.beta)
    assert beta() == 1.0
    assert beta(mask_area='free') == beta(mask_loss='batch') == beta(mixer='automix') == 0.1
    assert beta(mask_beta=0.3) == beta(mask_area='free', mask_beta=0.3) == 0.3
    big = samix_defaults('resnet50', 500_000, train_size=1_281_167)['mixer'].beta
    assert (big.beta, big.mode, big(0), big(500_000)) == (1.0, 'linear', 1.0, 0.0)  # linear to 0 at ImageNet scale


class _ConstantMixer:
    """A degenerate Mixer: the same grey mask whatever λ."""

    def __init__(self, value):
        self.value = value

    def preview(self, x, lam=0.5):
        return dict(mask=torch.full((x.shape[0], 1, *x.shape[-2:]), self.value))


class _HalfMixer:
    """An ideal one: a binary mask whose partner area is 1 − λ."""

    def preview(self, x, lam=0.5):
        w = x.shape[-1]
        s = torch.zeros(x.shape[0], 1, *x.shape[-2:])
        s[..., : round((1 - lam) * w)] = 1.
        return dict(mask=s)


def test_health_tells_a_degenerate_mixer_from_a_good_one():
    x = torch.zeros(4, 3, 10, 10)
    grey = mixer_health(_ConstantMixer(0.46), x)
    assert grey['health_keep_0.3'] == pytest.approx(0.54) and grey['health_std_0.5'] == pytest.approx(0.)
    assert set(health_failures(grey)) == {'health_keep_0.3', 'health_keep_0.7', 'health_std_0.3', 'health_std_0.5',
                                          'health_std_0.7'}
    good = mixer_health(_HalfMixer(), x)
    assert good['health_keep_0.3'] == pytest.approx(0.3) and good['health_std_0.5'] == pytest.approx(0.5)
    assert good['health_std_0.3'] == pytest.approx(math.sqrt(0.21))
    assert health_failures(good) == {}
    # a reading just under the bar is not printed as the bar itself ("0.30 < 0.3")
    assert '0.298' in health_failures({'health_std_0.3': 0.2984})['health_std_0.3']


def test_health_of_a_real_samix_changes_no_state():
    samix = SAMix(_model(), K, 100, input_size=(3, 32, 32))
    x, _ = _batch()
    before = {k: v.clone() for k, v in samix.mixer.state_dict().items()}
    rng = np.random.get_state()[1].copy()
    h = mixer_health(samix, x)
    assert {f'health_{k}_{lam}' for k in ('keep', 'std') for lam in (0.3, 0.5, 0.7)} | {'health_grey'} <= set(h)
    # the instruments of §2.6: attention entropy in (0, 1], weight scale of Q/K/value, the value head's BN γ
    assert 0 < h['mixer_attention_entropy'] <= 1 + 1e-6 and h['mixer_weight_std_query'] > 0
    assert h['mixer_bn_gamma_value'] == pytest.approx(1.) and h['health_grey'] in (0., 1.)
    assert h['mixer_keep_0.5'] == pytest.approx(h['health_keep_0.5'])  # no λ adjusting: the raw mask is the one
    assert all(torch.equal(before[k], v) for k, v in samix.mixer.state_dict().items())
    assert np.array_equal(rng, np.random.get_state()[1])


def test_clean_frac_weighs_the_first_rows_of_the_clean_batch():
    """`clean_frac` < 1: the term sees the first round(frac·N) clean rows, each weighed W/N as in the reference term;
    the mixed batch stays whole; with the separate forward the clean rows get their own."""
    clean = CleanTerm(2.0, num_classes=3, frac=0.25)
    x, y = torch.randn(8, 3, 1, 1, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    x_mix, y_mix = -torch.ones(8, 3, 1, 1), torch.full((8, 3), 1 / 3)
    loss_fn = _Recording(SoftTargetCrossEntropy())
    result = MixTask(nn.Flatten(), loss_fn, _Fixed(x_mix, y_mix), clean)(x, y)
    assert result['input'].shape[0] == 10 and torch.equal(result['input'][:2], x[:2])
    torch.testing.assert_close(loss_fn.targets[0], F.one_hot(y[:2], 3).float())
    logp, logp_mix = x[:2].flatten(1).log_softmax(-1), x_mix.flatten(1).log_softmax(-1)
    by_hand = 2.0 * -(loss_fn.targets[0] * logp).sum(1).sum() / 8 + -(y_mix * logp_mix).sum(1).mean()  # W/N each
    torch.testing.assert_close(result['loss'], by_hand)
    model = _model().train()
    xb, yb = _batch(8)
    task = MixTask(model, SoftTargetCrossEntropy(), _Fixed(3 * xb, F.one_hot(yb, K).float()),
                   CleanTerm(1.0, K, forward='separate', frac=0.25))
    separate = task(xb, yb)['output']
    assert separate.shape[0] == 10
    torch.testing.assert_close(separate[:2], _model().train()(xb[:2]))  # the clean rows get their own forward
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=f'frac={bad} is out of range: it must be in'):
            CleanTerm(1.0, K, frac=bad)


def test_samix_with_clean_frac_trains_on_fewer_clean_rows():
    task = _samix_task(_model(), lam_margin=0.0, clean_weight=1.0, clean_frac=0.5)
    x, y = _batch(6)
    np.random.seed(0)
    x_out = task(x, y)['input']
    assert x_out.shape[0] == 9 and torch.equal(x_out[:3], x[:3])


def test_health_of_a_one_position_mixer_reads_uniform_not_nan():
    """A Mixer on a 1x1 map (stage 4 at 32 px): its attention has one key, entropy 1 of uniform (was nan) and the
    masks are grey."""
    samix = build_samix(_model(), K, 100, input_size=(3, 32, 32), tap_index=-1)
    x, _ = _batch()
    h = mixer_health(samix, x)
    assert h['mixer_attention_entropy'] == 1. and h['mixer_attention_logit_std'] == 0.
    assert h['health_grey'] == 1.
