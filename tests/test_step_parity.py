""" Step parity (issue "paper-exact SAMix", item 6): one full SAMix step against the spec's equations.

On equal weights and inputs, what `SAMix` does in one call — the momentum update of θ̄ (§5.5), the
features of θ̄ (§1), the classifier-branch mask and mixed batch (§2, §3, §5.3), the Mixer loss and
its gradient on φ (§3, §4, §5.4) — and the classifier loss with both terms and its gradient on θ
(§5.6) must equal what this file computes by hand from design/samix.md.

The hand side never calls the package's Mixer, loss or mixing functions: the Mixer of §2 (λ scaling,
Q/K from the concatenation, softmax attention / sqrt(C/2), value conv → BN (batch stats) → ELU →
conv, P·v, bilinear upsampling by H/h, sigmoid), x_mix, the soft targets, the η-balanced BCE of §4,
ℓ_μ and ℓ_σ of §3 and the cross-entropies are re-implemented below with plain tensor ops, on the
Mixer's own weight tensors copied before the step. Only λ and the permutations are read from the
call (a spy on the Mixer's forward), and the networks f_θ / f_θ̄ are used as functions (copies).

To make the step exact: no λ margin or λ adjusting, Mixer dropout 0, no label smoothing, the Mixer
trained on the whole batch at every step, constant β, and a Mixer SGD with lr 1 and no momentum
(φ_after = φ_before − ∇φ). θ̄ starts perturbed away from θ and m = 0.9, so features and the Mixer
loss would differ if they came from θ instead of θ̄. The Mixer starts from larger random weights
than its §2.5 init so that the attention is not uniform and every Mixer parameter gets a real
gradient. Each check has a negative control showing the comparison is sensitive to the term it is
about (e.g. dropping the clean term or the mask losses moves the value past the tolerance).
"""
import copy
import math
from functools import lru_cache, partial

import numpy as np
import pytest
import timm
import torch
from timm.loss import SoftTargetCrossEntropy

from samix_timm import MixerSettings, MixSettings, SAMix, SAMixTask, StepPreset
from samix_timm.momentum import BetaSchedule, MomentumSchedule

K = 5  # classes
N = 6  # batch
HW = 32  # image side: at 32 px the tap is layer1 (32x8x8), the small-input rule of §1
M = 0.9  # momentum of θ̄ (constant schedule)
ETA = 0.5  # η of §4 (small-data default), neither 0 nor 1 so the class weighting matters
BETA = 0.1  # β of §3 (constant, small datasets)
MARGIN = 0.1  # margin of ℓ_μ (§3)
BN_EPS = 1e-5  # PyTorch BatchNorm default
TOL = dict(rtol=1e-4, atol=1e-6)
# §2.2: the K bias adds q_i·b_k to row i of Qᵀ K, a constant along the softmax axis, so it never changes P
# and its gradient is 0 up to rounding (a redundant parameter of the spec'd architecture, not a bug)
DEAD_PARAM = 'key.bias'

torch.set_num_threads(1)


# -- hand implementations of the spec's equations (plain tensor ops) --------------------------------

def _conv1x1(t, weight, bias=None):
    """1×1 convolution as a channel contraction: weight O×I×1×1, t N×I×h×w -> N×O×h×w."""
    out = torch.einsum('oi,nihw->nohw', weight[:, :, 0, 0], t)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def _bilinear_matrix(out_size, in_size):
    """Rows of bilinear interpolation weights, half-pixel centres (align_corners=False), scale in/out."""
    a = torch.zeros(out_size, in_size)
    scale = in_size / out_size
    for o in range(out_size):
        src = max((o + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(math.floor(src)), in_size - 1)
        i1 = min(i0 + 1, in_size - 1)
        w1 = src - i0
        a[o, i0] += 1 - w1
        a[o, i1] += w1
    return a


def hand_mixer(phi, z, lam, index, out_hw, k=-1.):
    """§2: s = σ(up(P·v)) with the Mixer weights `phi` (dict of tensors), one λ for the batch."""
    n, c, h, w = z.shape
    # §2.1 adaptive λ encoding, optional rescale
    lt = lam if k < 0 else ((4 / 3) * lam ** 3 - 2 * lam ** 2 + (k + 1) * lam) / (k + 1 / 3)
    z_i = (1 + lt) * z
    z_j = (2 - lt) * z[index]
    # §2.2 mixing attention: Q, K from concat(ẑ_i, ẑ_j), two separate 1×1 convs 2C -> C/2 with bias
    u = torch.cat([z_i, z_j], dim=1)
    q = _conv1x1(u, phi['query.weight'], phi['query.bias']).reshape(n, c // 2, h * w)
    kk = _conv1x1(u, phi['key.weight'], phi['key.bias']).reshape(n, c // 2, h * w)
    logits = torch.einsum('ndi,ndj->nij', q, kk) / math.sqrt(c / 2)  # N×hw×hw, Qᵀ K / sqrt(C/2)
    e = torch.exp(logits - logits.max(dim=-1, keepdim=True).values)
    p = e / e.sum(dim=-1, keepdim=True)  # softmax over the last axis
    # §2.3 value from ẑ_j only: conv C -> C/2 (no bias) -> BN (train mode: batch stats) -> ELU -> conv -> 1
    t = _conv1x1(z_j, phi['value.0.weight'])
    mean = t.mean(dim=(0, 2, 3), keepdim=True)
    var = ((t - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)  # biased variance, as BN normalises
    t = (t - mean) / torch.sqrt(var + BN_EPS) * phi['value.1.weight'].view(1, -1, 1, 1) \
        + phi['value.1.bias'].view(1, -1, 1, 1)
    t = torch.where(t > 0, t, torch.exp(torch.clamp(t, max=0.)) - 1)  # ELU, α = 1
    v = _conv1x1(t, phi['value.3.weight']).reshape(n, h * w, 1)  # dropout p = 0: identity
    # §2.4 m = P·v, upsampled by H/h (bilinear), sigmoid
    m = torch.bmm(p, v).reshape(n, h, w)
    up = torch.einsum('Hh,nhw,Ww->nHW', _bilinear_matrix(out_hw[0], h), m, _bilinear_matrix(out_hw[1], w))
    return (1 / (1 + torch.exp(-up))).unsqueeze(1)  # N×1×H×W


def hand_mix(x, s, index):
    """§0: x_mix = (1 − s) ⊙ x + s ⊙ x[π]."""
    return (1 - s) * x + s * x[index]


def hand_onehot(y):
    return (y.view(-1, 1) == torch.arange(K).view(1, -1)).float()


def hand_soft_target(y, index, lam):
    """§0: λ·onehot(y) + (1 − λ)·onehot(y[π])."""
    return lam * hand_onehot(y) + (1 - lam) * hand_onehot(y[index])


def hand_log_softmax(o):
    o = o - o.max(dim=-1, keepdim=True).values
    return o - torch.log(torch.exp(o).sum(dim=-1, keepdim=True))


def hand_soft_ce(o, target):
    """§4 MCE: mean_n( −Σ_c ỹ_nc log softmax(o_n)_c ); with a one-hot target it is the clean CE."""
    return -(target * hand_log_softmax(o)).sum(dim=-1).mean()


def hand_eta_bce(o, y, index, lam, eta):
    """§4 ℓ_η: mean_n[ Σ_{c∈{y_i,y_j}} BCE(o_nc, ỹ_nc) + η Σ_{c∉{y_i,y_j}} BCE(o_nc, 0) ]."""
    t = hand_soft_target(y, index, lam)
    log_p = -torch.log1p(torch.exp(-o))  # log σ(o)
    log_1mp = -torch.log1p(torch.exp(o))  # log(1 − σ(o))
    bce = -(t * log_p + (1 - t) * log_1mp)
    pair = torch.maximum(hand_onehot(y), hand_onehot(y[index]))  # 1 on {y_i, y_j}
    return ((pair * bce).sum(dim=-1) + eta * ((1 - pair) * bce).sum(dim=-1)).mean()


def hand_mask_losses(s, lam):
    """§3: μ = mean of s over batch and pixels; ℓ_μ = max(|1 − μ − λ| − 0.1, 0), ℓ_σ = −2 mean((s − μ)²)."""
    mu = s.mean()
    return torch.clamp((1 - mu - lam).abs() - MARGIN, min=0.), -2 * ((s - mu) ** 2).mean()


def hand_stage_features(net, x):
    """§1: the stage map the Mixer reads, for test_resnet at 32 px `layer1` (stem, maxpool, layer1)."""
    return net.layer1(net.maxpool(net.act1(net.bn1(net.conv1(x)))))


# -- one recorded SAMix step --------------------------------------------------------------------------

def _randomise_mixer(mixer, gen):
    """Weights large enough that the attention is not uniform and the mask is not ≈ 0.5 (cf. §2.5)."""
    std = {'query.weight': 0.15, 'key.weight': 0.15, 'query.bias': 0.1, 'key.bias': 0.1,
           'value.0.weight': 0.3, 'value.1.bias': 0.2, 'value.3.weight': 0.6}
    with torch.no_grad():
        for name, p in mixer.named_parameters():
            if name == 'value.1.weight':  # BN γ
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(std[name] * torch.randn(p.shape, generator=gen))


@lru_cache(maxsize=None)
def run_step(clean_weight=1.0, clean_forward='separate', lam_rescale_k=-1., seed=2):
    """Build SAMix, run one call and the classifier backward; keep every input and output needed."""
    # seed 2: ℓ_μ active for both λ encodings; with seed 1 and lam_rescale_k 0.25 the softmax is so peaked that
    # fp32 gradients of two correct implementations differ by 0.4 % on some CPUs (the losses agree exactly)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = timm.create_model('test_resnet', num_classes=K)
    with torch.no_grad():  # timm zero-inits the last BN γ of each block: perturb so every θ gets a gradient
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    samix = SAMix(
        model, K, total_steps=10, input_size=(3, HW, HW), momentum=MomentumSchedule(M, M, 10),
        mixer=MixerSettings(
            mixer='samix', kwargs=dict(dropout=0.0, lam_rescale_k=lam_rescale_k),
            optimizer=partial(torch.optim.SGD, lr=1.0, momentum=0.0, weight_decay=0.0), min_lr=1.0, eta=ETA,
            loss='eta', beta=BetaSchedule(BETA, 'constant', 10), mask_margin=MARGIN),
        preset=StepPreset(mixer_batch_frac=1.0, mixer_every=1, clean_weight=clean_weight, clean_forward=clean_forward),
        mix=MixSettings(alpha=2.0, lam_margin=0.0, lam_adjust_prob=0.0, label_smoothing=0.0, prob=1.0))
    # θ̄ away from θ (as after some training), so θ and θ̄ are told apart
    with torch.no_grad():
        for p in samix.encoder.module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    _randomise_mixer(samix.mixer, gen)
    x = torch.randn(N, 3, HW, HW, generator=gen)
    y = torch.randint(0, K, (N,), generator=gen)

    rec = dict(x=x, y=y, samix=samix, model=model, clean_weight=clean_weight, clean_forward=clean_forward,
               lam_rescale_k=lam_rescale_k)
    rec['theta0'] = copy.deepcopy(model)
    rec['theta_bar0'] = {n: p.detach().clone() for n, p in samix.encoder.module.named_parameters()}
    rec['phi0'] = {n: p.detach().clone() for n, p in samix.mixer.named_parameters()}

    calls = []
    mixer_forward = samix.mixer.forward

    def spy(z, lam, index, out_size, z_partner=None):
        calls.append(dict(z=z.detach().clone(), lam=lam, index=index.clone(), out_size=tuple(out_size),
                          grad_enabled=torch.is_grad_enabled(), training=samix.mixer.training))
        s = mixer_forward(z, lam, index, out_size, z_partner)
        calls[-1]['s'] = s.detach().clone()
        return s

    samix.mixer.forward = spy
    steps = []

    def pre_step(optimizer, args, kwargs):  # the Mixer gradients as the optimizer sees them
        steps.append(dict(
            phi_grad={n: None if p.grad is None else p.grad.clone() for n, p in samix.mixer.named_parameters()},
            theta_grad=[p.grad for p in model.parameters()],
            theta_bar_grad=[p.grad for p in samix.encoder.module.parameters()],
            lr=[g['lr'] for g in optimizer.param_groups]))

    samix.optimizer.register_step_pre_hook(pre_step)

    targets = []

    def recipe_loss(output, target):  # the recipe's loss, seeing the targets the task hands it
        targets.append(target)
        return SoftTargetCrossEntropy()(output, target)

    task = SAMixTask(model, recipe_loss, samix)
    np.random.seed(seed)  # the per-step draws (mix or not, λ): numpy's global RNG, as timm's Mixup
    result = task(x, y)  # the whole step: θ̄, masks, Mixer update, the classifier's loss (not yet its backward)
    samix.mixer.forward = mixer_forward
    xb = result['input']  # [x_clean; x_mix], the batch the classifier saw
    yb = torch.cat(targets)  # [onehot(y); ỹ_q], clean term first
    rec.update(calls=calls, steps=steps, xb=xb, yb=yb,
               metrics={k: v for k, v in result.items() if k not in ('loss', 'output', 'input')})
    rec['theta_after_call'] = {n: p.detach().clone() for n, p in model.named_parameters()}
    rec['theta_bar1'] = {n: p.detach().clone() for n, p in samix.encoder.module.named_parameters()}
    rec['phi1'] = {n: p.detach().clone() for n, p in samix.mixer.named_parameters()}
    rec['theta_grad_after_call'] = [p.grad for p in model.parameters()]

    # the classifier's side (§5.6): W·loss(clean) + loss(mixed), one backward
    loss = result['loss']
    loss.backward()
    rec['cls_loss'] = loss.detach()
    rec['theta_grad'] = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    rec['phi_grad_after_cls'] = {n: None if p.grad is None else p.grad.clone()
                                 for n, p in samix.mixer.named_parameters()}
    rec['theta_bar_grad_after_cls'] = [p.grad for p in samix.encoder.module.parameters()]
    return rec


def hand_theta_bar(rec):
    """f_θ̄ as a function: the architecture of θ with the weights θ̄ holds after the call's momentum update
    (test (d) checks them against θ̄ ← m θ̄ + (1 − m) θ of §5.5; the Mixer update leaves them alone), in
    train mode: BN on batch statistics, as SAMix uses the copy."""
    net = copy.deepcopy(rec['theta0'])
    with torch.no_grad():
        for n, p in net.named_parameters():
            p.copy_(rec['theta_bar1'][n])
    net.requires_grad_(False)
    return net.train()


def hand_branches(rec):
    """λ_q, π_q (classifier branch, first Mixer call) and λ_k, π_k (Mixer branch, second call), §5.1."""
    (cq, ck) = rec['calls']
    return cq['lam'], cq['index'], ck['lam'], ck['index']


def hand_classifier_batch(rec):
    """§5.3: s_q = M_φ(z, λ_q, π_q) (no grad), x_mix_q, ỹ_q; z = stage map of θ̄ on x (§1)."""
    x, y = rec['x'], rec['y']
    lam_q, idx_q, _, _ = hand_branches(rec)
    with torch.no_grad():
        z = hand_stage_features(hand_theta_bar(rec), x)
        s_q = hand_mixer(rec['phi0'], z, lam_q, idx_q, (HW, HW), rec['lam_rescale_k'])
    return z, s_q, hand_mix(x, s_q, idx_q), hand_soft_target(y, idx_q, lam_q)


def hand_classifier_loss(rec, weight=None, forward=None):
    """§5.6: L_θ = W·CE(f_θ(x), y) + MCE(f_θ(x_mix_q), ỹ_q) and its gradient on every θ parameter."""
    weight = rec['clean_weight'] if weight is None else weight
    forward = rec['clean_forward'] if forward is None else forward
    x, y = rec['x'], rec['y']
    _, _, x_mix, y_mix = hand_classifier_batch(rec)
    net = copy.deepcopy(rec['theta0']).train()
    if forward == 'separate':  # one forward per half: each half has its own BN batch statistics
        o_clean, o_mix = net(x), net(x_mix)
    else:  # one forward of the 2N batch
        o = net(torch.cat([x, x_mix]))
        o_clean, o_mix = o[:N], o[N:]
    loss = weight * hand_soft_ce(o_clean, hand_onehot(y)) + hand_soft_ce(o_mix, y_mix)
    names, params = zip(*net.named_parameters())
    return loss.detach(), dict(zip(names, torch.autograd.grad(loss, params)))


def hand_mixer_loss(rec, beta=BETA, eta=ETA):
    """§5.4: L_φ = ℓ_η(f_θ̄(x_mix_k), ỹ_k) + β(ℓ_μ + ℓ_σ), gradient on φ (copy of the weights before the step)."""
    x, y = rec['x'], rec['y']
    _, _, lam_k, idx_k = hand_branches(rec)
    enc = hand_theta_bar(rec)
    with torch.no_grad():
        z = hand_stage_features(enc, x)
    phi = {n: t.clone().requires_grad_(True) for n, t in rec['phi0'].items()}
    s_k = hand_mixer(phi, z, lam_k, idx_k, (HW, HW), rec['lam_rescale_k'])
    logits = enc(hand_mix(x, s_k, idx_k))
    l_eta = hand_eta_bce(logits, y, idx_k, lam_k, eta)
    l_mu, l_sigma = hand_mask_losses(s_k, lam_k)
    loss = l_eta + beta * (l_mu + l_sigma)
    names = list(phi)
    grads = dict(zip(names, torch.autograd.grad(loss, [phi[n] for n in names])))
    return dict(loss=loss.detach(), l_eta=l_eta.detach(), l_mu=l_mu.detach(), l_sigma=l_sigma.detach(),
                s_k=s_k.detach(), grads=grads)


def _close(a, b):
    return torch.allclose(a, b, **TOL)


# -- the checks -----------------------------------------------------------------------------------------

@pytest.mark.parametrize('lam_rescale_k', [-1., 0.25])
def test_classifier_batch_matches_hand_mixer(lam_rescale_k):
    """(a) §1, §2, §5.3, §5.6: the 2N batch [x; x_mix_q] and targets [onehot(y); ỹ_q] SAMix returns equal the
    hand Mixer on θ̄'s stage features (after θ̄ ← mθ̄ + (1−m)θ), λ_q, π_q; also with the λ rescale (k = 0.25)."""
    rec = run_step(lam_rescale_k=lam_rescale_k)
    x, y = rec['x'], rec['y']
    cq, ck = rec['calls']
    # §5.1 two independent draws; the permutations are permutations of the batch
    assert rec['metrics']['lam'] == cq['lam'] and rec['metrics']['lam_k'] == ck['lam']
    assert 0 < cq['lam'] < 1 and 0 < ck['lam'] < 1 and cq['lam'] != ck['lam']
    for c in (cq, ck):
        assert torch.equal(c['index'].sort().values, torch.arange(N))
        assert c['out_size'] == (HW, HW) and c['training']
    # §5.3 the classifier-branch mask has no grad, the Mixer branch (§5.4) has
    assert not cq['grad_enabled'] and ck['grad_enabled']
    z, s_q, x_mix, y_mix = hand_classifier_batch(rec)
    # §1 the Mixer reads θ̄'s (not θ's) stage map of the clean batch, both branches the same one
    assert z.shape == (N, 32, 8, 8)
    torch.testing.assert_close(cq['z'], z, **TOL)
    torch.testing.assert_close(ck['z'], z, **TOL)
    with torch.no_grad():
        z_theta = hand_stage_features(copy.deepcopy(rec['theta0']).train(), x)
    assert not _close(cq['z'], z_theta)  # negative control: θ's features differ
    # §2 mask and §0 mixing
    torch.testing.assert_close(cq['s'], s_q, **TOL)
    assert s_q.shape == (N, 1, HW, HW) and float(s_q.std()) > 0.05  # a real, non-constant mask
    assert rec['xb'].shape == (2 * N, 3, HW, HW) and rec['yb'].shape == (2 * N, K)
    torch.testing.assert_close(rec['xb'][:N], x, rtol=0, atol=0)  # the clean half is x itself
    torch.testing.assert_close(rec['xb'][N:], x_mix, **TOL)
    torch.testing.assert_close(rec['yb'][:N], hand_onehot(y), rtol=0, atol=0)
    torch.testing.assert_close(rec['yb'][N:], y_mix, **TOL)
    assert not rec['xb'].requires_grad and not rec['yb'].requires_grad
    # negative controls: the partner order and the λ encoding matter
    with torch.no_grad():
        s_other = hand_mixer(rec['phi0'], z, 1 - cq['lam'], cq['index'], (HW, HW), lam_rescale_k)
    assert not _close(s_other, s_q)
    assert not _close(hand_mix(x, s_q, torch.roll(cq['index'], 1)), x_mix)


@pytest.mark.parametrize('clean_weight,clean_forward', [(1.0, 'separate'), (0.5, 'separate'), (1.0, 'joint')])
def test_classifier_loss_and_gradients_match_spec(clean_weight, clean_forward):
    """(b) §4, §5.6: SAMixTask's loss with SoftTargetCrossEntropy equals, value and gradient on
    every θ parameter, W·CE(f_θ(x), y) + MCE(f_θ(x_mix_q), ỹ_q) with one forward per half ('separate', the
    reference) or one forward of the 2N batch ('joint')."""
    rec = run_step(clean_weight=clean_weight, clean_forward=clean_forward)
    loss, grads = hand_classifier_loss(rec)
    torch.testing.assert_close(rec['cls_loss'], loss, **TOL)
    assert set(rec['theta_grad']) == set(grads)
    for name, g in grads.items():
        assert rec['theta_grad'][name] is not None, name
        torch.testing.assert_close(rec['theta_grad'][name], g, **TOL, msg=lambda m: f'{name}: {m}')
    # negative controls: dropping the clean term, another W, or the other forward change the value
    assert not _close(rec['cls_loss'], hand_classifier_loss(rec, weight=0.0)[0])
    assert not _close(rec['cls_loss'], hand_classifier_loss(rec, weight=2 * clean_weight)[0])
    other = 'joint' if clean_forward == 'separate' else 'separate'
    other_loss, other_grads = hand_classifier_loss(rec, forward=other)
    assert not _close(rec['cls_loss'], other_loss)
    assert not all(_close(rec['theta_grad'][n], g) for n, g in other_grads.items())


@pytest.mark.parametrize('lam_rescale_k', [-1., 0.25])
def test_mixer_loss_and_gradients_match_spec(lam_rescale_k):
    """(c) §2, §3, §4, §5.4: L_φ = ℓ_η(f_θ̄(x_mix_k), ỹ_k) + β(ℓ_μ + ℓ_σ) as SAMix logs it, its parts
    (mask_mu = ℓ_μ, mask_var = ℓ_σ), the gradient on every Mixer parameter (read at the optimizer step) and
    the SGD update φ_after = φ_before − 1.0·∇φ all equal the hand computation on the weights before the step."""
    rec = run_step(lam_rescale_k=lam_rescale_k)
    hand = hand_mixer_loss(rec)
    met = rec['metrics']
    (_, ck) = rec['calls']
    torch.testing.assert_close(ck['s'], hand['s_k'], **TOL)
    torch.testing.assert_close(met['mask_mu'], hand['l_mu'], **TOL)
    torch.testing.assert_close(met['mask_var'], hand['l_sigma'], **TOL)
    torch.testing.assert_close(met['mixer_loss'], hand['loss'], **TOL)
    torch.testing.assert_close(torch.as_tensor(met['mask_keep']), 1 - hand['s_k'].mean(), **TOL)
    assert met['beta'] == BETA
    assert float(hand['l_mu']) > 0, 'ℓ_μ inactive: pick another seed so its gradient is exercised'
    (step,) = rec['steps']  # exactly one Mixer update
    assert step['lr'] == [1.0]
    for name, g in hand['grads'].items():
        actual = step['phi_grad'][name]
        assert actual is not None, name
        if name == DEAD_PARAM:  # softmax over j is blind to q_i·b_k, the same for every j: ∂L/∂b_k = 0
            assert float(g.abs().max()) < 1e-6 and float(actual.abs().max()) < 1e-6
        else:  # every other φ parameter gets a real gradient
            assert float(g.abs().max()) > 1e-5, name
        torch.testing.assert_close(actual, g, **TOL, msg=lambda m: f'{name}: {m}')
        # plain SGD, lr 1, no momentum / weight decay: φ_after = φ_before − ∇φ
        torch.testing.assert_close(rec['phi1'][name], rec['phi0'][name] - g, **TOL)
    # negative controls: without the mask losses, with η = 1 (MBCE) or η = 0 (pBCE) the result differs
    for alt in (hand_mixer_loss(rec, beta=0.0), hand_mixer_loss(rec, eta=1.0), hand_mixer_loss(rec, eta=0.0)):
        assert not _close(met['mixer_loss'], alt['loss'])
        assert not all(_close(step['phi_grad'][n], g) for n, g in alt['grads'].items())


def test_gradients_reach_only_their_own_parameters():
    """(d) §5.4, §5.5, §5.6: the Mixer loss reaches φ only (θ and θ̄ get no grad and are not moved), the
    classifier loss reaches θ only (φ's gradients are those of the Mixer step, θ̄ none); θ̄ is frozen
    (requires_grad False) and equals m θ̄ + (1 − m) θ after the call's momentum update."""
    rec = run_step()
    samix = rec['samix']
    theta0 = dict(rec['theta0'].named_parameters())
    # §5.5 momentum update at the start of the call, and the Mixer update does not touch θ̄
    for n, p in rec['theta_bar1'].items():
        torch.testing.assert_close(p, M * rec['theta_bar0'][n] + (1 - M) * theta0[n], **TOL)
    assert not any(p.requires_grad for p in samix.encoder.module.parameters())
    # §5.4 the Mixer step: grads on φ only
    (step,) = rec['steps']
    assert all(g is not None for g in step['phi_grad'].values())
    assert all(g is None for g in step['theta_grad'])
    assert all(g is None for g in step['theta_bar_grad'])
    assert all(g is None for g in rec['theta_grad_after_call'])
    assert all(torch.equal(rec['theta_after_call'][n], p.detach()) for n, p in theta0.items())  # θ unmoved
    assert all(not torch.equal(rec['phi1'][n], rec['phi0'][n]) for n in rec['phi0'] if n != DEAD_PARAM)  # φ moved
    # §5.6 the classifier loss: grads on θ only
    assert all(g is not None and float(g.abs().sum()) > 0 for g in rec['theta_grad'].values())
    for n, g in step['phi_grad'].items():
        assert torch.equal(rec['phi_grad_after_cls'][n], g), n  # the classifier backward added nothing to φ
    assert all(g is None for g in rec['theta_bar_grad_after_cls'])
