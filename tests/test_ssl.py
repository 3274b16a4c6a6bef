""" Self-supervised SAMix pieces (spec §4, §6): losses by hand, queue, permutation, Mixer gradients, errors. """
import math
import sys
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import samix_timm.ssl.moco as moco_mod
from samix_timm.errors import ConfigError
from samix_timm.ssl import (
    KeyQueue, MoCoOnline, MoCoSAMix, create_ssl_encoder, derangement, eta_instance_loss, get_ssl_mode,
    info_nce, kmeans_labels, lam_info_nce, require_faiss, two_way_loss)
from samix_timm.mixing import mix_images
from samix_timm.ssl.mixing import cutmix_mask


def _ce0(*logits):
    """-log softmax(logits)[0] in plain Python."""
    return -logits[0] + math.log(sum(math.exp(v) for v in logits))


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def test_instance_losses_match_hand_computation():
    T, lam, eta = 0.5, 0.7, 0.5
    q = [[1., 0.], [0.6, 0.8]]
    ki = [[0.6, 0.8], [1., 0.]]
    kj = [[0., 1.], [0.8, -0.6]]
    queue = [[-1., 0.], [0., -1.], [0.8, 0.6]]
    plus = minus = 0.
    for n in range(2):
        si, sj = _dot(q[n], ki[n]) / T, _dot(q[n], kj[n]) / T
        negs = [_dot(q[n], k) / T for k in queue]
        plus += lam * _ce0(si, sj) + (1 - lam) * _ce0(sj, si)
        minus += lam * _ce0(si, *negs) + (1 - lam) * _ce0(sj, *negs)
    plus, minus = plus / 2, minus / 2
    t = [torch.tensor(v) for v in (q, ki, kj, queue)]
    assert two_way_loss(t[0], t[1], t[2], lam, T).item() == pytest.approx(plus, rel=1e-6)
    assert lam_info_nce(*t, lam, T).item() == pytest.approx(minus, rel=1e-6)
    assert eta_instance_loss(*t, lam, eta, T).item() == pytest.approx(plus + eta * minus, rel=1e-6)
    # lam = 1 reduces l_-^I to MoCo's infoNCE with the sample's own key
    assert lam_info_nce(*t, 1., T).item() == pytest.approx(info_nce(t[0], t[1], t[3], T).item(), rel=1e-6)
    # per-sample lam
    per = lam_info_nce(*t, torch.tensor([lam, lam]), T)
    assert per.item() == pytest.approx(minus, rel=1e-6)


def test_queue_enqueue_wraps_around():
    queue = KeyQueue(5, 2)
    a = F.normalize(torch.randn(3, 2), dim=1)
    b = F.normalize(torch.randn(3, 2), dim=1)
    queue.enqueue(a)
    assert int(queue.ptr) == 3
    torch.testing.assert_close(queue.keys[:3], a)
    queue.enqueue(b)  # slots 3, 4, then 0
    assert int(queue.ptr) == 1
    torch.testing.assert_close(queue.keys[3:], b[:2])
    torch.testing.assert_close(queue.keys[0], b[2])
    torch.testing.assert_close(queue.keys[1:3], a[1:])
    with pytest.raises(ValueError, match='at least as large'):
        queue.enqueue(torch.randn(6, 2))


def test_derangement_has_no_fixed_point():
    gen = torch.Generator().manual_seed(0)
    for n in (2, 3, 7, 64):
        for _ in range(50):
            index = derangement(n, generator=gen)
            assert sorted(index.tolist()) == list(range(n))
            assert not (index == torch.arange(n)).any()


def _moco(mode, n_train=32, **kw):
    torch.manual_seed(0)
    online = MoCoOnline(create_ssl_encoder('test_resnet', proj_hidden=64, proj_dim=16),
                        num_clusters=4 if mode == 'samix_c' else 0)
    moco = MoCoSAMix(online, mode, total_steps=10, queue_size=32, input_size=32,
                     mixer_kwargs=dict(mixer_kwargs=dict(dropout=0.)), **kw)
    if mode == 'samix_c':
        moco.set_pseudo_labels(torch.arange(n_train) % 4)
    return online, moco


def _views(n=8):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 32, 32, generator=gen), torch.randn(n, 3, 32, 32, generator=gen)


def test_queue_receives_the_momentum_keys(one_thread):
    online, moco = _moco('none')
    x1, x2 = _views()
    loss, _ = moco(online, x1, x2, torch.arange(8))  # enqueues the batch's keys, as MoCo's forward
    loss.backward()
    with torch.no_grad():
        expected = moco.momentum.module(x2)  # θ̄ is updated at the start of the next step only
    torch.testing.assert_close(moco.queue.keys[:8], expected)
    assert int(moco.queue.ptr) == 8 and moco.step == 1


def test_warm_up_fills_the_queue_with_key_encoder_keys_once(one_thread):
    online, moco = _moco('none')
    assert not moco.queue.full and int(moco.queue.num_filled) == 0
    views = [_views(n) for n in (12, 12, 12)]  # 36 keys for 32 slots: the third batch wraps around
    loader = [((x1, x2), torch.arange(len(x2))) for x1, x2 in views]
    assert moco.warm_up_queue(loader, torch.device('cpu')) == 3
    with torch.no_grad():
        keys = torch.cat([moco.momentum.module(x2) for _, x2 in views])
    torch.testing.assert_close(moco.queue.keys[4:], keys[4:32])
    torch.testing.assert_close(moco.queue.keys[:4], keys[32:])  # the oldest four were replaced
    assert moco.queue.full and int(moco.queue.ptr) == 4 and int(moco.queue.num_filled) == 32
    assert moco.warm_up_queue(loader, torch.device('cpu')) == 0  # a full (e.g. resumed) queue is left alone
    restored = KeyQueue(32, 16)
    restored.load_state_dict(moco.queue.state_dict())
    assert restored.full and restored._ptr == 4
    old = {k: v for k, v in moco.queue.state_dict().items() if k != 'num_filled'}  # before num_filled existed
    restored = KeyQueue(32, 16)
    restored.load_state_dict(old)
    assert restored.full


def test_collapse_signals_by_hand():
    k = F.normalize(torch.tensor([[1., 0.], [0., 1.], [1., 1.]]), dim=1)
    signals = moco_mod.collapse_signals(k, k)
    pair = 1 / math.sqrt(2)  # cos of (1,0)/(0,1) with (1,1); 0 between the first two
    assert float(signals['key_cosine']) == pytest.approx((0 + pair + pair) / 3)
    assert float(signals['instance_top1']) == pytest.approx(100.)
    one_point = moco_mod.collapse_signals(k, torch.ones(3, 2) / math.sqrt(2))  # every key the same
    assert float(one_point['key_cosine']) == pytest.approx(1.)
    assert float(one_point['instance_top1']) == pytest.approx(100 / 3)  # argmax of a tie is the first key


@pytest.mark.parametrize('mode', ['none', 'mixup', 'samix_i'])
def test_step_reads_nothing_back_from_the_device(mode, monkeypatch, one_thread):
    # the metrics stay tensors and the queue pointer lives on the host: no .item()/float()/tolist() per step
    # (the Mixer's attention check reads on CPU only, where it costs nothing: mixer.MixingAttention)
    online, moco = _moco(mode)
    x1, x2 = _views()
    reads = []

    def spy(name, original):
        def read(self, *a):
            caller = sys._getframe(1).f_code.co_filename
            if not caller.endswith('mixer.py'):
                reads.append(f'{name} in {caller}')
            return original(self, *a)
        return read

    for name in ('item', 'tolist', '__float__', '__int__', '__bool__'):
        monkeypatch.setattr(torch.Tensor, name, spy(name, getattr(torch.Tensor, name)))
    loss, metrics = moco(online, x1, x2, torch.arange(8))
    loss.backward()
    monkeypatch.undo()
    assert reads == [], reads
    assert {'key_cosine', 'instance_top1', 'loss_moco'} <= set(metrics)


@pytest.mark.parametrize('mode', ['samix_i', 'samix_c'])
def test_one_permutation_per_branch_for_images_features_and_keys(mode, monkeypatch, one_thread):
    online, moco = _moco(mode)
    x1, x2 = _views()
    drawn, mixer_calls, scored, mixed = [], [], [], []
    real_derangement, real_mixer_forward = moco_mod.global_derangement, moco.mixer.mixer.forward
    real_lam_nce = moco_mod.lam_info_nce

    def spy_derangement(n, device=None):
        drawn.append(real_derangement(n, device))
        return drawn[-1]

    def spy_mixer(z, lam, index, size, z_partner=None):
        mixer_calls.append((z, index, z_partner))
        return real_mixer_forward(z, lam, index, size, z_partner=z_partner)

    def spy_lam_nce(q_mix, k_i, k_j, queue, lam, temperature):
        scored.append((k_i, k_j))
        return real_lam_nce(q_mix, k_i, k_j, queue, lam, temperature)

    real_forward = online.forward

    def spy_forward(x, x_mix=None, head_input=None):
        mixed.append(x_mix)
        return real_forward(x, x_mix, head_input)

    monkeypatch.setattr(moco_mod, 'global_derangement', spy_derangement)
    monkeypatch.setattr(moco_mod, 'lam_info_nce', spy_lam_nce)
    monkeypatch.setattr(moco.mixer.mixer, 'forward', spy_mixer)
    monkeypatch.setattr(online, 'forward', spy_forward)
    _, metrics = moco(online, x1, x2, torch.arange(8))

    assert len(drawn) == 2  # π_k (Mixer branch), π_q (encoder branch)
    pi_k, pi_q = drawn
    k1, _, z1 = moco.keys(x1)
    k2, _, z2 = moco.keys(x2)
    for (z, index, z_partner), pi in zip(mixer_calls, (pi_k, pi_q)):
        assert index is pi  # the Mixer reads partners z2[π] with the branch's π
        torch.testing.assert_close(z, z1)
        torch.testing.assert_close(z_partner, z2)
    # encoder branch: the mixed image and its partner key use the same π_q
    (k_i, k_j), = scored
    torch.testing.assert_close(k_i, k2)
    torch.testing.assert_close(k_j, k1[pi_q])
    with torch.no_grad():
        s = moco.mixer.mask(z1, z2, metrics['lam'], pi_q, (32, 32))
    torch.testing.assert_close(mixed[0], mix_images(x1, s, pi_q, partner=x2))
    assert not (pi_q == torch.arange(8)).any() and not (pi_k == torch.arange(8)).any()


@pytest.mark.parametrize('mode', ['samix_i', 'samix_c'])
def test_mixer_loss_reaches_only_the_mixer(mode, one_thread):
    online, moco = _moco(mode)
    x1, x2 = _views()
    before = {k: v.detach().clone() for k, v in online.named_parameters()}
    loss, metrics = moco(online, x1, x2, torch.arange(8))  # the Mixer branch has stepped inside
    assert 'mixer_loss' in metrics
    assert all(p.grad is None for p in online.parameters()), 'Mixer loss leaked into the encoder or cluster head'
    assert all(p.grad is None for p in moco.momentum.module.parameters())
    assert all(not p.requires_grad for p in moco.momentum.module.parameters())
    grads = [p.grad for p in moco.mixer.mixer.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    for k, v in online.named_parameters():
        torch.testing.assert_close(v.detach(), before[k], msg=k)  # the Mixer step changed no encoder weight
    loss.backward()  # the encoder loss then reaches the encoder
    assert all(p.grad is not None for p in online.encoder.parameters())


def test_every_forward_runs_under_amp_autocast(one_thread):
    bf16 = partial(torch.autocast, device_type='cpu', dtype=torch.bfloat16)
    online, moco = _moco('samix_i', amp_autocast=bf16)
    dtypes = {'online': [], 'momentum': []}
    for name, net in (('online', online.encoder.backbone), ('momentum', moco.momentum.module.backbone)):
        conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_hook(lambda m, i, o, name=name: dtypes[name].append(o.dtype))
    x1, x2 = _views()
    loss, metrics = moco(online, x1, x2, torch.arange(8))
    # θ̄: keys of both views and the Mixer-branch score; f_θ: the clean and the mixed view
    assert dtypes == {'online': [torch.bfloat16] * 2, 'momentum': [torch.bfloat16] * 3}
    assert loss.dtype == torch.float32 and math.isfinite(loss.item()) and math.isfinite(metrics['mixer_loss'])
    assert all(p.dtype == torch.float32 and p.grad is not None for p in moco.mixer.mixer.parameters())


def test_mixer_update_through_grad_scaler_matches_plain_update(one_thread):
    """Under fp16 the Mixer loss is scaled; once unscaled the update must equal the unscaled one."""
    states, scaler = [], torch.amp.GradScaler('cpu', init_scale=2. ** 10)
    for grad_scaler in (None, scaler):
        online, moco = _moco('samix_i', grad_scaler=grad_scaler)
        initial = [p.detach().clone() for p in moco.mixer.mixer.parameters()]
        x1, x2 = _views()
        np.random.seed(0)
        torch.manual_seed(0)
        moco(online, x1, x2, torch.arange(8))
        states.append([p.detach().clone() for p in moco.mixer.mixer.parameters()])
        assert any(not torch.equal(a, b) for a, b in zip(initial, states[-1])), 'the Mixer did not move'
    for plain, scaled in zip(*states):
        torch.testing.assert_close(scaled, plain, rtol=1e-5, atol=1e-7)
    assert scaler.state_dict()['_growth_tracker'] == 1  # the scaler took exactly this one finite step
    assert moco.state_dict()['mixer']['grad_scaler'] == scaler.state_dict()


def test_mixing_masks_and_modes():
    s, lam = cutmix_mask(0.7, 4, (32, 32))
    assert s.shape == (4, 1, 32, 32)
    assert 1 - s.mean().item() == pytest.approx(lam)
    assert get_ssl_mode('none').mixes is False and get_ssl_mode('samix_c').uses_clusters
    with pytest.raises(ConfigError, match="mode='samix' is not known: use one of none, mixup"):
        get_ssl_mode('samix')


def test_kmeans_labels_and_errors():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 32, generator=gen)
    x[:150, 0] += 10.  # two obvious groups
    labels = kmeans_labels(x, 2, pca_dim=8, seed=0)
    assert labels.shape == (300,) and set(labels.tolist()) == {0, 1}
    assert len(set(labels[:150].tolist())) == 1 and len(set(labels[150:].tolist())) == 1
    torch.testing.assert_close(labels, kmeans_labels(x, 2, pca_dim=8, seed=0))  # reproducible
    with pytest.raises(ConfigError, match='num_clusters=301 must be between 2 and the 300 training samples'):
        kmeans_labels(x, 301)


def test_missing_faiss_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, 'faiss', None)
    with pytest.raises(ConfigError, match=r"pip install 'samix-timm\[ssl\]'"):
        require_faiss()


def test_bad_construction_errors():
    online = MoCoOnline(create_ssl_encoder('test_resnet', proj_hidden=16, proj_dim=8))
    with pytest.raises(ConfigError, match="mode='samix_c' needs a cluster head: build MoCoOnline with num_clusters"):
        MoCoSAMix(online, 'samix_c', total_steps=1)
    with pytest.raises(ConfigError, match=r'moco_momentum=1.5 is out of range: it must be in \[0, 1\)'):
        MoCoSAMix(online, 'none', total_steps=1, moco_momentum=1.5)
    with pytest.raises(ConfigError, match="unknown timm model 'resnet_nope'"):
        create_ssl_encoder('resnet_nope')


def test_knn_probe_with_k_above_the_training_samples_says_so(caplog):
    """k larger than the training set used to be clamped without a word; the vote of every sample is warned about
    and equals the vote with k = N."""
    import logging
    from samix_timm.ssl.probe import knn_probe
    g = torch.Generator().manual_seed(0)
    train, val = torch.randn(30, 8, generator=g), torch.randn(10, 8, generator=g)
    labels, val_labels = torch.arange(30) % 3, torch.arange(10) % 3
    with caplog.at_level(logging.WARNING):
        clamped = knn_probe(train, labels, val, val_labels, k=1000)
    assert 'k=1000 is more than the 30 training samples; k=30 is used' in caplog.text
    assert clamped == knn_probe(train, labels, val, val_labels, k=30)
