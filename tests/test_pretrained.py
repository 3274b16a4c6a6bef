""" SAMix^P: export -> load round trip, hub registry, torch.hub, bad artifacts, training with it. """
import argparse
import importlib.util

import numpy as np
import pytest
import torch

from conftest import FAST_ARGS, REPO
from samix_timm.engine import parse_train_args, train
from samix_timm.errors import ConfigError
from samix_timm.export import main as export_main
from samix_timm.hub import list_pretrained, load_pretrained_artifact
from samix_timm.pretrained import FORMAT_VERSION, SAMixPretrained, build_artifact, file_sha256, load_artifact

# the normalisation of FAST_ARGS and of the shipped Mixer's recipe
EMBEDDED_NORM = dict(mean=(0.1,) * 3, std=(0.25,) * 3)


@pytest.fixture(scope='module')
def samix_run(small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp('samix_run')
    args, text = parse_train_args(['--data-dir', str(small_data), '--output', str(out), *FAST_ARGS,
                                   '--mixup', 'samix', '--epochs', '1', '--samix-vis-interval', '0'])
    return train(args, text)


@pytest.fixture(scope='module')
def samix_checkpoint(samix_run):
    return samix_run.checkpoint


@pytest.fixture(scope='module')
def artifact_path(samix_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp('artifact') / 'mine'
    assert export_main(['--checkpoint', str(samix_checkpoint), '--out', str(out)]) == 0
    (path,) = out.parent.glob('mine-*.pth')
    return path


def _load_ckpt(path):
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location='cpu', weights_only=True)


def test_export_names_file_by_its_sha256(artifact_path):
    sha = file_sha256(artifact_path)
    assert artifact_path.name == f'mine-{sha[:8]}.pth'
    art = load_artifact(artifact_path)
    assert art['format_version'] == FORMAT_VERSION
    assert art['extractor']['model'] == 'test_resnet' and art['data']['input_size'] == [3, 32, 32]
    assert art['mixer']['name'] == 'samix' and art['mixer']['config']['in_channels'] > 0


def test_round_trip_gives_bit_identical_masks(samix_checkpoint, artifact_path):
    direct = SAMixPretrained(build_artifact(_load_ckpt(samix_checkpoint)), num_classes=10, data_config=EMBEDDED_NORM)
    loaded = SAMixPretrained(load_artifact(artifact_path), num_classes=10, data_config=EMBEDDED_NORM)
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    index = torch.tensor([5, 4, 3, 2, 1, 0])
    for lam in (0.3, 0.5, 0.7):
        assert torch.equal(direct.mask(x, lam, index), loaded.mask(x, lam, index))
    # frozen: nothing in the extractor or Mixer asks for gradients; eval mode (dropout off)
    assert not any(p.requires_grad for p in loaded.mixer.parameters())
    # BatchNorm on batch statistics in the extractor and the Mixer, as in training (§7); running ones untouched
    assert all(m.training == isinstance(m, torch.nn.BatchNorm2d) for m in loaded.extractor.modules())
    assert not any(m.training for m in loaded.mixer.modules() if isinstance(m, torch.nn.Dropout))
    bn = [m for m in loaded.mixer.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    stats = [m.running_mean.clone() for m in bn]
    loaded.mask(x, 0.5, index)  # batch statistics, running statistics untouched
    assert all(torch.equal(a, m.running_mean) for a, m in zip(stats, bn))


def test_any_resolution_and_timm_mixup_shape(artifact_path):
    mixer = SAMixPretrained(load_artifact(artifact_path), num_classes=7, label_smoothing=0.0, data_config=EMBEDDED_NORM)
    for size in (32, 48, 96):
        x, y = torch.randn(5, 3, size, size), torch.randint(0, 7, (5,))
        x_mix, target = mixer(x, y)
        assert x_mix.shape == x.shape and target.shape == (5, 7)
        torch.testing.assert_close(target.sum(1), torch.ones(5))


def test_bad_artifacts(artifact_path, tmp_path):
    data = artifact_path.read_bytes()
    wrong = tmp_path / 'mine-00000000.pth'
    wrong.write_bytes(data)
    with pytest.raises(ConfigError, match='corrupt or truncated'):
        load_artifact(wrong)
    with pytest.raises(ConfigError, match='sha256'):
        load_artifact(artifact_path, sha256='f' * 64)
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(ConfigError, match='cannot be read'):
        load_artifact(cut)
    art = load_artifact(artifact_path)
    future = tmp_path / 'future.pth'
    torch.save(dict(art, format_version=FORMAT_VERSION + 1), future)
    with pytest.raises(ConfigError, match='upgrade samix-timm'):
        load_artifact(future)
    alien = dict(art, extractor=dict(art['extractor'], model='resnet_from_the_future'))
    with pytest.raises(ConfigError, match="extractor 'resnet_from_the_future' cannot be built"):
        SAMixPretrained(alien, data_config=EMBEDDED_NORM)
    with pytest.raises(ConfigError, match='samix_r18_cluttered_mnist'):
        load_pretrained_artifact('samix_nope')
    with pytest.raises(ConfigError, match='not published yet.*configs/'):
        load_pretrained_artifact('samix_r18_in1k')


def test_hubconf_entrypoints_with_docs():
    # torch.hub.list/help only read GitHub repos: inspect hubconf.py the way they do
    spec = importlib.util.spec_from_file_location('hubconf', REPO / 'hubconf.py')
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    assert hubconf.dependencies == ['torch', 'timm']
    names = [n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith('_')]
    assert set(list_pretrained()) <= set(names)
    doc = hubconf.samix_r18_cluttered_mnist.__doc__
    assert 'resnet18' in doc and 'embedded_resnet18_samix.yaml' in doc
    with pytest.raises(ConfigError, match='pretrained=False'):
        hubconf.samix_r18_cluttered_mnist(pretrained=False)


def test_shipped_mixer_loads_offline_is_spatial_and_follows_lam(embedded_data):
    mixer = torch.hub.load(str(REPO), 'samix_r18_cluttered_mnist', source='local', pretrained=True,
                           trust_repo=True, num_classes=10, data_config=EMBEDDED_NORM)
    assert isinstance(mixer, SAMixPretrained)
    from timm.data import create_dataset, create_loader
    ds = create_dataset('', root=str(embedded_data), split='validation')
    loader = create_loader(ds, input_size=(3, 32, 32), batch_size=100, use_prefetcher=False, **EMBEDDED_NORM,
                           crop_pct=1.0, num_workers=0, device=torch.device('cpu'))
    x, _ = next(iter(loader))
    index = torch.roll(torch.arange(len(x)), 1)
    means = []
    for lam in (0.3, 0.5, 0.7):
        s = mixer.mask(x, lam, index)
        means.append(float(s.mean()))
        assert float(s.flatten(1).std(1).mean()) > 0.3  # near-binary spatial masks, far from constant
    # the mean partner share follows 1 - lam (measured 0.74 / 0.53 / 0.24 for the shipped Mixer)
    for lam, mean in zip((0.3, 0.5, 0.7), means):
        assert abs(mean - (1 - lam)) < 0.1, (lam, means)
    # with lam adjusting (§3) the ratio is exact
    exact = SAMixPretrained(load_pretrained_artifact('samix_r18_cluttered_mnist'), 10, lam_adjust_prob=1.0,
                            data_config=EMBEDDED_NORM)
    for lam in (0.3, 0.7):
        assert abs(float(exact.mask(x, lam, index, adjust=True).mean()) - (1 - lam)) < 1e-3
        assert abs(float(exact.preview(x, lam)['mask'].mean()) - (1 - lam)) < 1e-3  # always adjusted at prob 1



def test_lam_area_entry_keeps_exactly_one_minus_lam_of_each_image_with_the_masks_ranking():
    """samix_r18_cluttered_mnist_lam (the shipped weights, mask_area='lam'): on data the Mixer never saw, each
    image's mask keeps exactly 1 − λ of its partner (the free-area Mixer does not), and the mask is the free one's
    logits shifted by one offset per image, so the Mixer still decides where; a bad mask_area is one line."""
    from samix_timm.hub import create_pretrained_mixer
    torch.manual_seed(0)
    x = torch.randn(16, 3, 32, 32) + torch.linspace(-1, 1, 32)  # not digits: noise over a ramp
    index = torch.roll(torch.arange(16), 1)
    free = create_pretrained_mixer('samix_r18_cluttered_mnist', num_classes=10, data_config=EMBEDDED_NORM)
    fitted = create_pretrained_mixer('samix_r18_cluttered_mnist_lam', num_classes=10, data_config=EMBEDDED_NORM)
    assert fitted.mixer.area == 'lam' and free.mixer.area == 'free'
    off = []
    for lam in (0.3, 0.5, 0.7):
        s_free, s_lam = free.mask(x, lam, index), fitted.mask(x, lam, index)
        assert torch.allclose(s_lam.flatten(1).mean(1), torch.full((16,), 1 - lam), atol=1e-3)
        off.append(float((s_free.flatten(1).mean(1) - (1 - lam)).abs().max()))
        ok = (s_free > 0.02) & (s_free < 0.98) & (s_lam > 0.02) & (s_lam < 0.98)  # unsaturated in both
        shift = torch.logit(s_lam.double()) - torch.logit(s_free.double())
        for n in range(16):
            if int(ok[n].sum()) > 10:
                assert float(shift[n][ok[n]].std()) < 1e-2, (lam, n)
    assert max(off) > 0.05, off  # the free-area Mixer's area is off on this data: the entry is needed
    assert create_pretrained_mixer('samix_r18_cluttered_mnist_lam', num_classes=10, data_config=EMBEDDED_NORM,
                                   mask_area='free').mixer.area == 'free'  # the caller's keyword wins
    with pytest.raises(ConfigError, match="mask_area='half': pass one of 'free', 'lam'"):
        create_pretrained_mixer('samix_r18_cluttered_mnist', data_config=EMBEDDED_NORM, mask_area='half')


def test_photo_mixer_entry_loads_offline_and_keeps_one_minus_lam_on_digits_it_never_saw(embedded_data):
    """samix_test_resnet_photo_objects (trained on the photo objects, area = λ by construction): through torch.hub
    on the embedded digits, each mask keeps exactly 1 − λ of its partner and is spatial, not a constant blend."""
    mixer = torch.hub.load(str(REPO), 'samix_test_resnet_photo_objects', source='local', pretrained=True,
                           trust_repo=True, num_classes=10, data_config=EMBEDDED_NORM)
    assert mixer.mixer.area == 'lam'
    from timm.data import create_dataset, create_loader
    ds = create_dataset('', root=str(embedded_data), split='validation')
    loader = create_loader(ds, input_size=(3, 32, 32), batch_size=50, use_prefetcher=False, **EMBEDDED_NORM,
                           crop_pct=1.0, num_workers=0, device=torch.device('cpu'))
    x, _ = next(iter(loader))
    index = torch.roll(torch.arange(len(x)), 1)
    for lam in (0.3, 0.5, 0.7):
        s = mixer.mask(x, lam, index)
        assert torch.allclose(s.flatten(1).mean(1), torch.full((len(x),), 1 - lam), atol=1e-3)
        assert float(s.flatten(1).std(1).mean()) > 0.3  # measured 0.44 / 0.48 / 0.44 (docs/pretrained.md)


@pytest.mark.parametrize('model,extra', [('resnet18', []), ('deit_tiny_patch16_224', ['--model-kwargs', 'img_size=32'])])
def test_train_with_pretrained_mixer(small_data, tmp_path, artifact_path, model, extra):
    args, text = parse_train_args(['--data-dir', str(small_data), '--output', str(tmp_path), *FAST_ARGS,
                                   '--model', model, *extra, '--mixup', 'samix', '--samix-pretrained',
                                   str(artifact_path), '--epochs', '1', '--opt', 'adamw', '--lr', '1e-3'])
    result = train(args, text)
    assert isinstance(result.mixup_fn, SAMixPretrained)
    assert np.isfinite(result.eval_metrics['loss'])
    assert (result.output_dir / 'samix_mix_epoch000.png').is_file()


def _online_masks(samix, x, index, lams):
    """The classifier-branch masks the online run makes for batch x (θ̄ and Mixer as in training)."""
    with torch.no_grad():
        z = samix._features(x)
        return [samix.classifier_mask(z, lam, index, x.shape[-2:]) for lam in lams]


def _held_out_batch(data, n=50):
    from timm.data import create_dataset, create_loader
    ds = create_dataset('', root=str(data), split='validation')
    loader = create_loader(ds, input_size=(3, 32, 32), batch_size=n, use_prefetcher=False, **EMBEDDED_NORM,
                           crop_pct=1.0, num_workers=0, device=torch.device('cpu'))
    return next(iter(loader))[0]


def test_exported_mixer_makes_the_masks_of_its_run(samix_run, artifact_path, small_data):
    """§7: export (fp16 extractor) -> torch.hub -> --samix-pretrained reproduces the online classifier-branch
    masks on the same batch to 1e-3; the eval-mode extractor of the first version does not."""
    from samix_timm.factory import create_mixup
    from samix_timm.mixer import set_inference_mode
    x = _held_out_batch(small_data)
    index = torch.roll(torch.arange(len(x)), 1)
    lams = (0.3, 0.5, 0.7)
    set_inference_mode(samix_run.mixup_fn.mixer)  # dropout off, as in the artifact (0 on this small data anyway)
    online = _online_masks(samix_run.mixup_fn, x, index, lams)
    via_hub = torch.hub.load(str(REPO), 'pretrained_mixer', str(artifact_path), source='local', trust_repo=True,
                             num_classes=10, data_config=EMBEDDED_NORM)
    args, _ = parse_train_args([*FAST_ARGS, '--data-dir', str(small_data), '--mixup', 'samix',
                                '--samix-pretrained', str(artifact_path)])
    via_flag = create_mixup(args, samix_run.model, 10, steps_per_epoch=1)
    for mixer in (via_hub, via_flag):
        assert isinstance(mixer, SAMixPretrained)
        for lam, s in zip(lams, online):
            assert (mixer.mask(x, lam, index) - s).abs().max() <= 1e-3
    # the features too; the first version's extractor (BatchNorm on running statistics) reads other ones
    with torch.no_grad():
        z_online = samix_run.mixup_fn._features(x)
        scale = float(z_online.abs().max())
        assert float((via_hub.features(x) - z_online).abs().max()) <= 1e-3 * scale
        via_hub.extractor.eval()
        assert float((via_hub.features(x) - z_online).abs().max()) > 0.05 * scale


def _shipped(**kw):
    return SAMixPretrained(load_pretrained_artifact('samix_r18_cluttered_mnist'), 10, data_config=EMBEDDED_NORM, **kw)


def test_one_mixer_core_makes_the_same_masks_for_samix_samix_p_and_the_ssl_branch():
    """Online SAMix's classifier mask, the frozen SAMix^P Mixer and the self-supervised branch's encoder mask all run
    the λ margin → Mixer → λ adjusting of `mixing.mixer_mask`: from the same features, Mixer weights, λ and π they
    make the same masks (the SSL branch's partners are the same batch here, and it has no λ adjusting)."""
    import copy
    import timm
    from samix_timm import MixerSettings, MixSettings, SAMix
    from samix_timm.mixer import set_inference_mode
    from samix_timm.ssl.mixer_branch import SSLMixerBranch
    pre = _shipped()
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    index = torch.tensor([2, 0, 1, 5, 3, 4])
    z = pre.features(x)
    torch.manual_seed(0)
    samix = SAMix(timm.create_model('test_resnet', num_classes=10), 10, 10, input_size=(3, 32, 32),
                  mixer=MixerSettings(mixer=copy.deepcopy(pre.mixer)), mix=MixSettings(lam_margin=pre.lam_margin))
    config = dict(pre.mixer.config)
    branch = SSLMixerBranch(config.pop('in_channels'), 10, mixer_kwargs=config, lam_margin=pre.lam_margin)
    branch.mixer.load_state_dict(pre.mixer.state_dict())
    for mixer in (samix.mixer, branch.mixer):
        set_inference_mode(mixer)  # as the frozen Mixer runs (dropout off, BatchNorm on the batch's statistics)
    for lam in (0.05, 0.3, 0.7):  # 0.05: within the margin, the constant mask 1 − λ
        for adjust in (False, True):
            s = pre.mask(x, lam, index, adjust)
            torch.testing.assert_close(samix.classifier_mask(z, lam, index, x.shape[-2:], adjust), s, rtol=0, atol=0)
            if not adjust:
                torch.testing.assert_close(branch.mask(z, z, lam, index, x.shape[-2:]), s, rtol=0, atol=0)
        assert (pre.mask(x, lam, index).flatten(1).std(1) > 0).all() != (lam == 0.05)


def test_pretrained_preview_draws_nothing_from_the_training_rng():
    """The per-epoch health and image grids preview the Mixer between epochs: with λ adjusting on (probability < 1)
    the preview used to draw numpy's global RNG, so the next epoch's λ draws depended on whether it ran."""
    pre = _shipped(lam_adjust_prob=0.5)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    np.random.seed(0)
    pre.preview(x, 0.3)
    after = np.random.rand()
    np.random.seed(0)
    assert np.random.rand() == after
