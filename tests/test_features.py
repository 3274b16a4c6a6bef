""" Tests of samix_timm.features (spec §1), and FeatureTap + Mixer end to end. """
import logging

import pytest
import timm
import torch
import torch.nn as nn

from samix_timm.features import FeatureTap, FeatureTapError, select_feature_index
from samix_timm.mixer import Mixer

torch.set_num_threads(1)


@pytest.fixture(scope='module')
def resnet18():
    return timm.create_model('resnet18', pretrained=False).eval()


@pytest.fixture(scope='module')
def deit_tiny():
    return timm.create_model('deit_tiny_patch16_224', pretrained=False).eval()


@pytest.fixture(scope='module')
def swin_tiny():
    return timm.create_model('swin_tiny_patch4_window7_224', pretrained=False).eval()


def tap_and_mix(tap: FeatureTap, size: int, n: int = 2) -> torch.Tensor:
    x = torch.randn(n, 3, size, size)
    with torch.no_grad():
        z = tap(x)
    s = Mixer(tap.channels)(z, 0.4, torch.arange(n).flip(0), x.shape[-2:])
    assert s.shape == (n, 1, size, size)
    return z


def test_resnet18_224(resnet18, caplog):
    with caplog.at_level(logging.INFO, logger='samix_timm.features'):
        tap = FeatureTap(resnet18, input_size=(3, 224, 224))
    assert (tap.index, tap.channels, tap.reduction) == (3, 256, 16)
    assert 'index 3 (layer3)' in caplog.text
    z = tap_and_mix(tap, 224)
    assert z.shape == (2, 256, 14, 14)
    # same map as running the ResNet by hand up to layer3
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        m = resnet18
        ref = m.layer3(m.layer2(m.layer1(m.maxpool(m.act1(m.bn1(m.conv1(x)))))))
        torch.testing.assert_close(tap(x), ref)


def test_resnet18_small_input(resnet18):
    tap = FeatureTap(resnet18, input_size=64)
    assert (tap.index, tap.channels, tap.reduction) == (2, 128, 8)
    assert tap_and_mix(tap, 64).shape == (2, 128, 8, 8)
    # without an input size the stride-16 default stays
    assert FeatureTap(resnet18).index == 3


def test_deit_tiny(deit_tiny):
    tap = FeatureTap(deit_tiny, input_size=224)
    assert (tap.index, tap.channels, tap.reduction) == (5, 192, 16)
    z = tap_and_mix(tap, 224)
    assert z.shape == (2, 192, 14, 14)
    # patch tokens after block 5, no final norm, class token dropped
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        t = deit_tiny.norm_pre(deit_tiny._pos_embed(deit_tiny.patch_embed(x)))
        t = deit_tiny.blocks[:6](t)[:, 1:]  # 1x196x192
        torch.testing.assert_close(tap(x), t.transpose(1, 2).reshape(1, 192, 14, 14))


def test_deit_small():
    tap = FeatureTap(timm.create_model('deit_small_patch16_224', pretrained=False).eval(), input_size=224)
    assert (tap.index, tap.channels, tap.reduction) == (5, 384, 16)
    assert tap_and_mix(tap, 224, n=1).shape == (1, 384, 14, 14)


def test_swin_tiny(swin_tiny):
    tap = FeatureTap(swin_tiny, input_size=224)
    assert (tap.index, tap.channels, tap.reduction) == (2, 384, 16)
    assert tap_and_mix(tap, 224, n=1).shape == (1, 384, 14, 14)


def test_user_index(resnet18):
    tap = FeatureTap(resnet18, index=4)
    assert (tap.index, tap.channels, tap.reduction) == (4, 512, 32)
    assert FeatureTap(resnet18, index=-2).index == 3
    for bad in (5, -6, 2.0, '3'):
        with pytest.raises(ValueError, match=r'0\.\.4'):
            FeatureTap(resnet18, index=bad)


def test_no_forward_intermediates():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=16))
    with pytest.raises(FeatureTapError, match='Sequential') as err:
        FeatureTap(model)
    assert '--' not in str(err.value) and 'forward_intermediates' in str(err.value)  # the library names no flags
    assert isinstance(err.value, ValueError)


def test_no_feature_info():
    class NoInfo(nn.Module):
        def forward_intermediates(self, x, **kwargs):
            return [x]

    with pytest.raises(FeatureTapError, match='NoInfo has no feature_info'):
        FeatureTap(NoInfo())


def test_tap_keeps_gradients(resnet18):
    tap = FeatureTap(resnet18, input_size=64)
    assert tap(torch.randn(1, 3, 64, 64)).requires_grad


def test_select_feature_index_rules():
    def info(*reductions):
        return [dict(num_chs=8, reduction=r) for r in reductions]

    assert select_feature_index(info(2, 4, 8, 16, 32)) == 3
    assert select_feature_index(info(4, 8, 16, 32), input_size=224) == 2
    assert select_feature_index(info(4, 8, 16, 32), input_size=(3, 96, 128)) == 1  # 96 // 16 = 6 < 8
    assert select_feature_index(info(2, 4, 8, 16, 32), input_size=32) == 1  # 32 // 4 = 8
    assert select_feature_index(info(*[16] * 12)) == 5  # plain ViT: block 5 of 12
    assert select_feature_index(info(*[16] * 24)) == 11
    assert select_feature_index(info(*[16] * 12), input_size=64) == 5  # no 8x8 map: keep default
    assert select_feature_index(info(*[14] * 12)) == 5  # patch-14 ViT: closest to 16
    assert select_feature_index(info(4, 8, 32)) == 1  # no stride 16: closest, finer map on a tie


def test_a_one_position_stage_is_warned_about(caplog):
    """A stage whose map is 1x1 at the training size makes every mask constant over its image (a grey Mixer by
    construction): warned before training; the default stage at that size is not."""
    import logging
    model = timm.create_model('resnet18', num_classes=4)
    with caplog.at_level(logging.WARNING):
        FeatureTap(model, index=4, input_size=32)  # stride 32 at 32 px: 1x1
    assert any('1x1 at input 32' in r.message and 'constant over each image' in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        FeatureTap(model, input_size=32)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
