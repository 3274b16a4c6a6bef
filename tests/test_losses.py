""" Tests of samix_timm.losses (spec §3, §4). """
import math

import pytest
import torch
import torch.nn.functional as F

from samix_timm.losses import EtaBalancedBCE, eta_balanced_bce, mask_losses, mixup_bce, mixup_ce

torch.set_num_threads(1)


def bce(o: float, t: float) -> float:
    """ Binary cross-entropy of one logit o against target t, by hand. """
    p = 1. / (1. + math.exp(-o))
    return -(t * math.log(p) + (1. - t) * math.log(1. - p))


def soft_target(y_a, y_b, lam, num_classes):
    lam = torch.as_tensor(lam, dtype=torch.float32).reshape(-1, 1)
    return lam * F.one_hot(y_a, num_classes).float() + (1 - lam) * F.one_hot(y_b, num_classes).float()


LOGITS = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]])
Y_A = torch.tensor([0, 2])
Y_B = torch.tensor([1, 2])  # second sample mixes class 2 with itself


def test_eta_balanced_bce_hand_value():
    eta = 0.1
    # sample 0: target (0.7, 0.3, 0); classes 0, 1 weighted 1, class 2 weighted eta
    loss0 = bce(2.0, 0.7) + bce(-1.0, 0.3) + eta * bce(0.5, 0.)
    # sample 1: y_a == y_b == 2, target (0, 0, 1) whatever lam; classes 0, 1 weighted eta
    loss1 = eta * bce(0.0, 0.) + eta * bce(1.0, 0.) + bce(-2.0, 1.)
    expected = (loss0 + loss1) / 2
    assert expected == pytest.approx(1.8825831, abs=1e-6)  # (1.4375974 + 2.3275689) / 2
    lam = torch.tensor([0.7, 0.4])
    assert eta_balanced_bce(LOGITS, Y_A, Y_B, lam, eta).item() == pytest.approx(expected, rel=1e-6)
    assert EtaBalancedBCE(eta)(LOGITS, Y_A, Y_B, lam).item() == pytest.approx(expected, rel=1e-6)


def test_eta_balanced_bce_float_lam():
    expected = ((bce(2.0, 0.7) + bce(-1.0, 0.3) + 0.5 * bce(0.5, 0.))
                + (0.5 * bce(0.0, 0.) + 0.5 * bce(1.0, 0.) + bce(-2.0, 1.))) / 2
    assert eta_balanced_bce(LOGITS, Y_A, Y_B, 0.7, 0.5).item() == pytest.approx(expected, rel=1e-6)


def test_eta_one_is_mbce_summed_over_classes():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 10, generator=g)
    y_a, y_b = torch.randint(0, 10, (8,), generator=g), torch.randint(0, 10, (8,), generator=g)
    lam = torch.rand(8, generator=g)
    target = soft_target(y_a, y_b, lam, 10)
    expected = F.binary_cross_entropy_with_logits(logits, target, reduction='none').sum(1).mean()
    torch.testing.assert_close(eta_balanced_bce(logits, y_a, y_b, lam, 1.), expected)
    # timm's BCE averages over classes too: scale by the class count
    torch.testing.assert_close(mixup_bce(logits, target) * 10, expected)


def test_eta_zero_ignores_other_classes():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 12, generator=g)
    y_a, y_b = torch.randint(0, 12, (6,), generator=g), torch.randint(0, 12, (6,), generator=g)
    mixed = F.one_hot(y_a, 12).bool() | F.one_hot(y_b, 12).bool()
    other = torch.where(mixed, logits, logits + 5 * torch.randn(6, 12, generator=g))
    loss = eta_balanced_bce(logits, y_a, y_b, 0.3, 0.)
    torch.testing.assert_close(eta_balanced_bce(other, y_a, y_b, 0.3, 0.), loss)
    assert eta_balanced_bce(other, y_a, y_b, 0.3, 0.1) != eta_balanced_bce(logits, y_a, y_b, 0.3, 0.1)
    shifted = torch.where(mixed, logits + 1., logits)
    assert eta_balanced_bce(shifted, y_a, y_b, 0.3, 0.) != loss


def test_mixup_ce():
    logits = torch.tensor([[1.0, 0.0, -1.0]])
    target = torch.tensor([[0.6, 0.4, 0.0]])
    log_z = math.log(math.exp(1.0) + math.exp(0.0) + math.exp(-1.0))
    expected = -(0.6 * (1.0 - log_z) + 0.4 * (0.0 - log_z))
    assert mixup_ce(logits, target).item() == pytest.approx(expected, rel=1e-6)
    hard = torch.tensor([2, 0])
    logits2 = torch.randn(2, 3)
    torch.testing.assert_close(mixup_ce(logits2, F.one_hot(hard, 3).float()), F.cross_entropy(logits2, hard))


def test_mixup_bce_threshold_and_shape():
    target = soft_target(Y_A, Y_B, 0.7, 3)  # (0.7, 0.3, 0), (0, 0, 1)
    expected_soft = (bce(2.0, 0.7) + bce(-1.0, 0.3) + bce(0.5, 0.) + bce(0.0, 0.) + bce(1.0, 0.) + bce(-2.0, 1.)) / 6
    assert mixup_bce(LOGITS, target).item() == pytest.approx(expected_soft, rel=1e-6)
    # threshold 0.2 binarises (0.7, 0.3, 0) -> (1, 1, 0)
    expected_hard = (bce(2.0, 1.) + bce(-1.0, 1.) + bce(0.5, 0.) + bce(0.0, 0.) + bce(1.0, 0.) + bce(-2.0, 1.)) / 6
    assert mixup_bce(LOGITS, target, target_threshold=0.2).item() == pytest.approx(expected_hard, rel=1e-6)
    with pytest.raises(ValueError):
        mixup_bce(LOGITS, Y_A)


def test_mask_losses_hand_values():
    loss_mu, loss_var = mask_losses(torch.full((2, 1, 4, 4), 0.5), 0.5)
    assert loss_mu.item() == 0. and loss_var.item() == 0.

    loss_mu, loss_var = mask_losses(torch.full((2, 1, 4, 4), 0.2), 0.5)
    assert loss_mu.item() == pytest.approx(abs(1 - 0.2 - 0.5) - 0.1)  # 0.2
    assert loss_var.item() == pytest.approx(0.)

    s = torch.zeros(2, 1, 4, 4)
    s[:, :, :2] = 1.  # half 0, half 1: mu = 0.5, mean((s - mu)^2) = 0.25
    loss_mu, loss_var = mask_losses(s, 0.3)
    assert loss_var.item() == pytest.approx(-0.5)
    assert loss_mu.item() == pytest.approx(0.1)  # |1 - 0.5 - 0.3| - 0.1

    # inside the margin -> 0; a custom margin
    assert mask_losses(torch.full((1, 1, 2, 2), 0.45), 0.5)[0].item() == 0.
    assert mask_losses(torch.full((1, 1, 2, 2), 0.2), 0.5, margin=0.)[0].item() == pytest.approx(0.3)


def test_mask_losses_tensor_lam_and_gradient():
    s = torch.full((4, 1, 2, 2), 0.2)
    loss_mu, _ = mask_losses(s, torch.tensor([0.2, 0.4, 0.6, 0.8]))  # mean lam 0.5
    assert loss_mu.item() == pytest.approx(0.2)

    s = torch.tensor([0.3, 0.4, 0.6, 0.7]).view(1, 1, 2, 2).requires_grad_()
    loss_mu, loss_var = mask_losses(s, 0.5)
    assert loss_mu.item() == 0.
    loss_var.backward()
    # l_sigma pushes values away from the mean, towards 0 / 1
    assert (s.grad.flatten()[:2] > 0).all() and (s.grad.flatten()[2:] < 0).all()


def test_per_image_mask_losses_hand_values():
    """§2.6: masks constant per image (image 0 all 0, image 1 all 1) meet the batch-level losses of the reference
    (batch mean 0.5, batch variance 0.25) but get no ℓ_σ credit and the full ℓ_μ penalty per image."""
    s = torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)])
    loss_mu, loss_var = mask_losses(s, 0.5)
    assert loss_mu.item() == 0. and loss_var.item() == pytest.approx(-0.5)
    loss_mu, loss_var = mask_losses(s, 0.5, per_image=True)
    assert loss_var.item() == 0.
    assert loss_mu.item() == pytest.approx(0.4)  # each image: |1 - mu_n - 0.5| - 0.1 = 0.4
    # a half/half mask in each image: mu_n = 0.5, per-image variance 0.25 -> ℓ_σ -0.5, as for the batch form
    half = torch.zeros(2, 1, 4, 4)
    half[:, :, :2] = 1.
    assert mask_losses(half, 0.3, per_image=True)[1].item() == pytest.approx(-0.5)
    # per-sample λ: image n is compared with its own λ_n
    lam = torch.tensor([0.8, 0.2])
    loss_mu, _ = mask_losses(torch.full((2, 1, 2, 2), 0.2), lam, margin=0., per_image=True)
    assert loss_mu.item() == pytest.approx((abs(0.8 - 0.8) + abs(0.8 - 0.2)) / 2)
