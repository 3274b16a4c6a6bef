""" Tests of samix_timm.mixer (spec §2). """
import pytest
import torch
import torch.nn as nn

from samix_timm.mixer import (
    AutoMixer, Mixer, MixerNumericsError, create_mixer, list_mixers, mixer_inference, rescale_lam)

torch.set_num_threads(1)


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def batch(n=4, c=32, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, h, w, generator=g)
    index = torch.randperm(n, generator=g)
    return z, index


@pytest.mark.parametrize('in_channels,expected', [(256, 164_480), (1024, 2_624_000)])
def test_mixer_param_count(in_channels, expected):
    assert num_params(Mixer(in_channels)) == expected


def test_automixer_param_count():
    assert num_params(AutoMixer(256)) == 33_282


@pytest.mark.parametrize('cls', [Mixer, AutoMixer])
@pytest.mark.parametrize('hw,out_size', [(8, 64), (14, 224), ((7, 9), (56, 72))])
def test_fresh_mixer_is_half(cls, hw, out_size):
    h, w = (hw, hw) if isinstance(hw, int) else hw
    z, index = batch(n=3, c=64, h=h, w=w)
    s = cls(64)(z, 0.3, index, out_size)
    H, W = (out_size, out_size) if isinstance(out_size, int) else out_size
    assert s.shape == (3, 1, H, W)
    assert s.dtype == torch.float32
    assert (s - 0.5).abs().max() < 0.02


@pytest.mark.parametrize('cls', [Mixer, AutoMixer])
def test_lam_float_and_tensor(cls):
    z, index = batch()
    mixer = cls(32).eval()
    s_float = mixer(z, 0.3, index, 32)
    s_tensor = mixer(z, torch.full((4,), 0.3), index, 32)
    torch.testing.assert_close(s_float, s_tensor)
    s_per_sample = mixer(z, torch.tensor([0.1, 0.4, 0.6, 0.9]), index, 32)
    assert s_per_sample.shape == (4, 1, 32, 32)
    with pytest.raises(ValueError):
        mixer(z, torch.full((3,), 0.3), index, 32)


@pytest.mark.parametrize('cls', [Mixer, AutoMixer])
def test_gradient_reaches_all_params(cls):
    z, index = batch()
    mixer = cls(32)
    s = mixer(z, 0.4, index, (32, 32))
    (s * torch.randn_like(s)).sum().backward()
    for name, p in mixer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_attention_fp32_under_autocast():
    z, index = batch()
    mixer = Mixer(32, dropout=0.).eval()
    dtypes = {}
    mixer.query.register_forward_hook(lambda m, i, o: dtypes.__setitem__('query', o.dtype))
    mixer.attention.register_forward_hook(lambda m, i, o: dtypes.__setitem__('attention', o.dtype))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        s_amp = mixer(z, 0.3, index, 32)
    assert dtypes == {'query': torch.bfloat16, 'attention': torch.float32}
    assert s_amp.dtype == torch.float32 and torch.isfinite(s_amp).all()
    torch.testing.assert_close(s_amp, mixer(z, 0.3, index, 32), atol=1e-3, rtol=0)


@pytest.mark.parametrize('cls', [Mixer, AutoMixer])
def test_non_finite_attention_raises(cls):
    z, index = batch()
    z[0, 0, 0, 0] = float('nan')
    with pytest.raises(MixerNumericsError, match='not finite'):
        cls(32)(z, 0.5, index, 32)
    assert issubclass(MixerNumericsError, RuntimeError)


def test_partner_index_and_upsample_modes():
    z, _ = batch()
    identity = torch.arange(4)
    mixer = Mixer(32, upsample='nearest').eval()
    s = mixer(z, 0.5, identity, 32)
    # nearest upsampling of an 8x8 map to 32x32 repeats each cell in a 4x4 block
    assert torch.equal(s[:, :, ::4, ::4].repeat_interleave(4, 2).repeat_interleave(4, 3), s)
    # each sample's mask only depends on that sample and its partner
    s_rolled = mixer(z, 0.5, torch.tensor([1, 0, 3, 2]), 32)
    s_swapped = mixer(z[[1, 0, 2, 3]], 0.5, torch.tensor([1, 0, 3, 2]), 32)
    torch.testing.assert_close(s_rolled[2:], s_swapped[2:])
    with pytest.raises(ValueError):
        Mixer(32, upsample='bicubic')


def test_rescale_lam_hand_value():
    # k = 1, lam = 0.2: (4/3 * 0.008 - 2 * 0.04 + 2 * 0.2) / (4/3) = 0.3306667 / 1.3333333 = 0.248
    assert rescale_lam(0.2, k=1.) == pytest.approx(0.248)
    assert rescale_lam(0.2) == 0.2
    for k in (0., 0.25, 1.):
        assert rescale_lam(0., k) == pytest.approx(0.)
        assert rescale_lam(0.5, k) == pytest.approx(0.5)
        assert rescale_lam(1., k) == pytest.approx(1.)
    with pytest.raises(ValueError):
        Mixer(32, lam_rescale_k=-0.5)


def test_lam_encoding_scales_the_pair():
    z, index = batch()
    mixer = Mixer(32, lam_rescale_k=1.)
    seen = {}
    mixer.query.register_forward_pre_hook(lambda m, args: seen.__setitem__('u', args[0]))
    mixer.value.register_forward_pre_hook(lambda m, args: seen.__setitem__('v_in', args[0]))
    lam = torch.tensor([0.2, 0.5, 0.8, 1.0])
    lam_t = rescale_lam(lam, 1.).view(4, 1, 1, 1)
    mixer(z, lam, index, 16)
    torch.testing.assert_close(seen['u'], torch.cat([(1 + lam_t) * z, (2 - lam_t) * z[index]], dim=1))
    torch.testing.assert_close(seen['v_in'], (2 - lam_t) * z[index])


def test_mixer_uses_rescaled_lam():
    z, index = batch()
    plain = Mixer(32, dropout=0.).eval()
    rescaled = Mixer(32, lam_rescale_k=1., dropout=0.).eval()
    rescaled.load_state_dict(plain.state_dict())
    torch.testing.assert_close(rescaled(z, 0.2, index, 16), plain(z, 0.248, index, 16))


def _hand_set_mixer() -> Mixer:
    """ Uniform attention and a value that grows with the partner's scale (2 - lam). """
    mixer = Mixer(4, dropout=0.).eval()
    with torch.no_grad():
        for conv in (mixer.query, mixer.key):
            conv.weight.zero_()
            conv.bias.zero_()
        mixer.value[0].weight.copy_(torch.full_like(mixer.value[0].weight, 0.5))
        mixer.value[3].weight.copy_(torch.ones_like(mixer.value[3].weight))
    return mixer


def test_lam_encoding_direction():
    mixer = _hand_set_mixer()
    z = torch.rand(2, 4, 4, 4)  # positive features: value = 2 * 0.5 * (2 - lam) * sum_c z_j > 0
    index = torch.tensor([1, 0])
    s_lam0 = mixer(z, 0., index, 8)
    s_lam1 = mixer(z, 1., index, 8)
    # lam = 0 gives the partner more weight than lam = 1
    assert (s_lam0 > s_lam1).all()
    # uniform attention: the mask logit is the mean of v over positions, v scales with (2 - lam)
    v1 = z[index].sum(1).mean((1, 2))  # at lam = 1: 2 channels * 0.5 * 1 * sum_c z_j
    torch.testing.assert_close(s_lam1[:, 0, 0, 0], torch.sigmoid(v1))
    torch.testing.assert_close(s_lam0[:, 0, 0, 0], torch.sigmoid(2 * v1))


def test_automixer_lam_channels():
    mixer = AutoMixer(4).eval()
    with torch.no_grad():
        mixer.qk.weight.zero_()
        mixer.qk.bias.zero_()
        mixer.value.weight.zero_()
        mixer.value.weight[0, 4] = 1.  # reads the lambda channel of the partner map: 1 - lam
    z, index = torch.randn(2, 4, 3, 3), torch.tensor([1, 0])
    s = mixer(z, torch.tensor([0.25, 1.]), index, 6)
    torch.testing.assert_close(s[:, 0, 0, 0], torch.sigmoid(torch.tensor([0.75, 0.])))


def test_config_rebuilds():
    for name, kwargs in [('samix', dict(lam_rescale_k=0.25, dropout=0.)), ('automix', dict(reduction=4))]:
        mixer = create_mixer(name, 64, **kwargs)
        clone = create_mixer(name, **mixer.config)
        assert type(clone) is type(mixer) and clone.config == mixer.config
        assert num_params(clone) == num_params(mixer)
    assert Mixer(16).config == dict(
        in_channels=16, reduction=2, lam_rescale_k=-1., dropout=0.1, upsample='bilinear', init='reference',
        norm='none')


def test_create_mixer_registry():
    assert list_mixers() == ['automix', 'samix']
    assert isinstance(create_mixer('samix', 256), Mixer)
    assert isinstance(create_mixer('automix', 256), AutoMixer)
    with pytest.raises(ValueError, match='automix, samix'):
        create_mixer('puzzlemix', 256)


def test_mixer_inference_mode_is_deterministic_and_restores_state():
    z, index = batch()
    mixer = Mixer(32, dropout=0.5)
    state = {k: v.clone() for k, v in mixer.state_dict().items()}
    with mixer_inference(mixer):
        a, b = mixer(z, 0.5, index, 16), mixer(z, 0.5, index, 16)
    assert torch.equal(a, b)  # dropout off
    for k, v in mixer.state_dict().items():  # running statistics and their count untouched
        assert torch.equal(state[k], v), k
    assert mixer.training and mixer.value[4].training and mixer.value[1].momentum == 0.1


@pytest.mark.parametrize('cls', [Mixer, AutoMixer])
def test_low_precision_features_outside_autocast(cls):
    z, index = batch()
    s = cls(32)(z.bfloat16(), 0.5, index, 16)  # features from an autocast pass, Mixer called outside it
    assert s.dtype == torch.float32 and s.shape == (4, 1, 16, 16)


def test_fan_in_init_scales_only_query_and_key():
    """§2.6: 'fan_in' draws Q and K from N(0, 1/fan_in) (fan_in 2C = 512 here); everything else stays at §2.5."""
    torch.manual_seed(0)
    ref, ours = Mixer(256, init='reference'), Mixer(256, init='fan_in')
    for conv in (ours.query, ours.key):
        assert conv.weight.std().item() == pytest.approx(512 ** -0.5, rel=0.02)
    assert ref.query.weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert ours.value[0].weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert AutoMixer(256, init='fan_in').qk.weight.std().item() == pytest.approx(257 ** -0.5, rel=0.02)
    with pytest.raises(ValueError, match='init must be one of'):
        Mixer(16, init='xavier')


def test_rms_norm_makes_the_mask_blind_to_the_feature_scale():
    """§2.6: with norm='rms' the mask of z and of 100·z are the same; the reference Mixer's are not."""
    z, index = batch()
    for norm, same in (('rms', True), ('none', False)):
        torch.manual_seed(0)
        mixer = Mixer(32, init='fan_in', norm=norm, dropout=0.).eval()
        a, b = mixer(z, 0.3, index, 16), mixer(100. * z, 0.3, index, 16)
        assert torch.allclose(a, b, atol=1e-5) == same, norm



def test_qk_norm_bounds_the_attention_logits():
    """§2.6: with norm='qk' the logits lie in [-sqrt(d), sqrt(d)] however large Q and K grow; the reference
    attention saturates (one key per query) when they grow."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 16, 8, 8, generator=g), torch.randn(2, 16, 8, 8, generator=g)
    from samix_timm.mixer import MixingAttention
    bounded, plain = MixingAttention(qk_norm=True), MixingAttention()
    p_small, p_large = bounded(q, k), bounded(1000. * q, 1000. * k)
    torch.testing.assert_close(p_small, p_large)  # scale-free
    assert float(p_large.log().amax(-1).sub(p_large.log().amin(-1)).max()) <= 2 * 16 ** 0.5 + 1e-4
    assert float(plain(1000. * q, 1000. * k).amax(-1).min()) > 0.99  # saturated
    assert float(p_large.amax(-1).max()) < 0.9


def test_mask_area_fits_lam_per_image_with_the_implicit_gradient():
    """§2.6 area 'lam': mean(s_n) = keep_n for every image, the offset's gradient is the implicit one
    (finite differences in float64), and no update can change an image's area (its gradient sums to 0)."""
    from samix_timm.mixer import fit_mask_area
    g = torch.Generator().manual_seed(0)
    m = (3. * torch.randn(3, 1, 8, 8, generator=g)).double().requires_grad_(True)
    keep = torch.tensor([0.3, 0.5, 0.9], dtype=torch.float64)
    s = fit_mask_area(m, keep, steps=60)
    torch.testing.assert_close(s.mean((1, 2, 3)), keep, rtol=0, atol=1e-9)
    w = torch.randn(s.shape, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((s * w).sum(), m)
    for i in ((0, 0, 3, 5), (2, 0, 7, 0)):
        up, down = m.detach().clone(), m.detach().clone()
        up[i] += 1e-5
        down[i] -= 1e-5
        fd = ((fit_mask_area(up, keep, 60) * w).sum() - (fit_mask_area(down, keep, 60) * w).sum()) / 2e-5
        assert abs(float(fd) - float(grad[i])) < 1e-7, i
    (area_grad,) = torch.autograd.grad(fit_mask_area(m, keep, 60).mean((1, 2, 3)).sum(), m)
    assert float(area_grad.sum((1, 2, 3)).abs().max()) < 1e-9
    naive = m.detach().sigmoid().mean((1, 2, 3))
    assert float((naive - keep).abs().max()) > 0.1  # the offset did the work


def test_mixer_with_lam_area_keeps_lam_of_each_image():
    """A Mixer with area='lam' keeps exactly lam_n of image n (mean(1 - s_n) = lam_n, the label weight) for a
    scalar and a per-sample lam, whatever its weights; the reference Mixer does not; config round-trips."""
    z, index = batch(n=6)
    torch.manual_seed(0)
    fitted = Mixer(32, init='fan_in', norm='qk', area='lam', dropout=0.)
    torch.manual_seed(0)
    free = Mixer(32, init='fan_in', norm='qk', dropout=0.)
    lam = torch.tensor([0.1, 0.3, 0.5, 0.6, 0.7, 0.95])
    for lam_ in (lam, 0.3):
        keep = 1 - fitted(z, lam_, index, 16).mean((1, 2, 3))
        torch.testing.assert_close(keep, torch.as_tensor(lam_).expand(6), rtol=0, atol=1e-4)
    assert float((1 - free(z, lam, index, 16).detach().mean((1, 2, 3)) - lam).abs().max()) > 0.05
    assert fitted.config['area'] == 'lam' and 'area' not in free.config  # exports made before the option rebuild
    assert Mixer(**fitted.config).area == 'lam'
    with pytest.raises(ValueError, match='area must be one of'):
        Mixer(32, area='exact')


def test_mask_area_fit_refuses_non_finite_logits():
    """An inf logit (fp16 overflow in the value head) would become NaN masks through the offset; it is a
    MixerNumericsError, as a non-finite attention is."""
    from samix_timm.mixer import fit_mask_area
    m = torch.zeros(2, 1, 4, 4)
    m[1, 0, 0, 0] = float('inf')
    with pytest.raises(MixerNumericsError, match='mask logits are not finite in 1 of 32'):
        fit_mask_area(m, torch.tensor([0.5, 0.5]))


def test_mixer_sharpness_sets_a_least_logit_std_per_image():
    """sharpness=g makes each image's mask logits m_n (1 + g / std(m_n)), std g + std(m_n) (§2.6): a Mixer whose own
    logits are nearly flat (the authors' N(0, 0.01^2) init) still makes spatial masks, a sharp Mixer stays as sharp,
    the area constraint still holds, gradients still reach Q, K and the value head; config round-trips."""
    z, index = batch(n=6)
    torch.manual_seed(0)
    flat = Mixer(32, area='lam', dropout=0.)
    torch.manual_seed(0)
    sharp = Mixer(32, area='lam', dropout=0., sharpness=6.)
    s_flat, s_sharp = flat(z, 0.3, index, 16), sharp(z, 0.3, index, 16)
    assert float(s_flat.detach().flatten(1).std(1).max()) < 0.05  # grey: the logits are ~1e-2
    std = s_sharp.detach().flatten(1).std(1, unbiased=False)
    assert float(std.min()) > 0.3  # near-binary: a binary mask keeping 0.3 has std 0.458
    torch.testing.assert_close(1 - s_sharp.mean((1, 2, 3)), torch.full((6,), 0.3), rtol=0, atol=1e-4)
    # the logits themselves (nearest upsampling: each position repeated alike): std over positions = g + the own
    torch.manual_seed(0)
    own = Mixer(32, dropout=0., upsample='nearest', init='fan_in_all')
    near = Mixer(32, dropout=0., upsample='nearest', init='fan_in_all', sharpness=2.)  # logits fp32 sigmoid keeps
    near.load_state_dict(own.state_dict())
    logit_std = [torch.logit(mixer(z, 0.5, index, 8).detach().double()).flatten(1).std(1, unbiased=False)
                 for mixer in (own, near)]
    torch.testing.assert_close(logit_std[1], logit_std[0] + 2., rtol=0, atol=1e-3)
    s_sharp.pow(2).mean().backward()
    for part in (sharp.query, sharp.key, sharp.value[0]):
        assert part.weight.grad is not None and float(part.weight.grad.abs().sum()) > 0
    assert sharp.config['sharpness'] == 6. and 'sharpness' not in flat.config
    assert Mixer(**sharp.config).sharpness == 6.
    with pytest.raises(ValueError, match='sharpness must be > 0'):
        Mixer(32, sharpness=0.)
