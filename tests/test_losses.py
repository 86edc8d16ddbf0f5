"""The losses of the four parts of an attack (identity, priors, surrogates) on small examples computed by hand."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mi_art.identity import feature_regulariser, identity_loss
from mi_art.priors import (entropy, gradient_penalty, kedmi_discriminator_loss, kedmi_prior_loss, soft_cross_entropy,
                           wgan_prior_loss)
from mi_art.surrogates import distillation_loss


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


# --------------------------------------------------------------------------- identity losses


def test_identity_loss_ce_per_sample():
    logits = t([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([0, 2])
    expected = [
        -math.log(math.e ** 1 / (math.e ** 1 + math.e ** 2 + math.e ** 3)),
        math.log(3.0),
    ]
    out = identity_loss(logits, y, "ce")
    assert out.shape == (2,)
    torch.testing.assert_close(out, t(expected))
    torch.testing.assert_close(identity_loss(logits, y), out)  # "ce" is the default


def test_identity_loss_logit_is_minus_raw_logit_with_bias():
    fc = nn.Linear(2, 3).double()
    with torch.no_grad():
        fc.weight.copy_(t([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]))
        fc.bias.copy_(t([0.5, -1.0, 10.0]))
    p = t([[3.0, 4.0], [1.0, -1.0]])
    y = torch.tensor([1, 2])
    # -(w_y . p + b_y): sample 0 -> -(2*4 - 1) = -7; sample 1 -> -(1 - 1 + 10) = -10
    out = identity_loss(fc(p), y, "logit")
    torch.testing.assert_close(out, t([-7.0, -10.0]))
    # The logit loss is unbounded below, unlike CE (which is >= 0).
    assert (out < 0).all()


def test_identity_loss_unknown_kind():
    with pytest.raises(ValueError, match="identity_loss"):
        identity_loss(t([[0.0, 1.0]]), torch.tensor([0]), "poincare")


def test_feature_regulariser_mean_over_feature_dims():
    feats = t([[1.0, 2.0], [3.0, 4.0]])
    p_reg = t([1.0, 1.0])
    # ((0)^2 + (1)^2) / 2 = 0.5 ; ((2)^2 + (3)^2) / 2 = 6.5
    torch.testing.assert_close(feature_regulariser(feats, p_reg), t([0.5, 6.5]))


def test_feature_regulariser_flattens_and_casts_p_reg():
    feats = torch.ones(1, 2, 2, dtype=torch.float64)  # 4 feature values, all 1
    p_reg = torch.tensor([[1.0, 3.0], [1.0, 1.0]], dtype=torch.float32)
    out = feature_regulariser(feats, p_reg)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, t([1.0]))  # (0 + 4 + 0 + 0) / 4


def test_wgan_prior_loss():
    torch.testing.assert_close(wgan_prior_loss(t([[2.0], [-3.0]])), t([-2.0, 3.0]))


# --------------------------------------------------------------------------- KEDMI


def test_kedmi_prior_loss_is_minus_log_real_probability():
    logits = t([[0.0, math.log(2.0)], [math.log(0.25), math.log(0.25)], [1.0, -2.0]])
    z = logits.exp().sum(1)
    expected = -torch.log(z / (z + 1))
    out = kedmi_prior_loss(logits)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out[:2], t([math.log(4 / 3), math.log(3.0)]))  # Z = 3 and Z = 0.5


def test_kedmi_prior_loss_is_numerically_stable():
    out = kedmi_prior_loss(torch.tensor([[100.0, 100.0], [-100.0, -100.0]]))
    assert torch.isfinite(out).all()
    assert out[0] < 1e-6  # Z huge: certainly real
    torch.testing.assert_close(out[1], torch.tensor(100.0 - math.log(2.0)), rtol=1e-5, atol=1e-4)


def test_kedmi_discriminator_loss_hand_case():
    labelled = t([[0.0, 0.0], [math.log(1.0), math.log(3.0)]])
    target_probs = t([[1.0, 0.0], [0.5, 0.5]])
    public = t([[0.0, 0.0]])                      # LSE = log 2
    fake = t([[math.log(0.5), math.log(0.5)]])    # LSE = 0
    # soft CE: row 0 -> log 2; row 1 -> 0.5 * (-log 0.25) + 0.5 * (-log 0.75)
    soft = 0.5 * (math.log(2.0) + 0.5 * math.log(4.0) + 0.5 * math.log(4 / 3))
    # 0.5 * [softplus(log 2) - log 2 + softplus(0)] = 0.5 * [log 3 - log 2 + log 2]
    unsup = 0.5 * math.log(3.0)
    out = kedmi_discriminator_loss(labelled, target_probs, public, fake)
    torch.testing.assert_close(out, torch.tensor(soft + unsup, dtype=torch.float64))


def test_kedmi_discriminator_loss_rewards_separating_real_from_fake():
    labelled, probs = t([[0.0, 0.0]]), t([[0.5, 0.5]])
    good = kedmi_discriminator_loss(labelled, probs, t([[5.0, 5.0]]), t([[-5.0, -5.0]]))
    bad = kedmi_discriminator_loss(labelled, probs, t([[-5.0, -5.0]]), t([[5.0, 5.0]]))
    assert good < bad


# --------------------------------------------------------------------------- soft labels, entropy, distillation


def test_soft_cross_entropy():
    logits = t([[0.0, 0.0], [0.0, math.log(3.0)]])
    probs = t([[0.3, 0.7], [1.0, 0.0]])
    # row 0: log 2 whatever the target; row 1: -log 0.25
    torch.testing.assert_close(soft_cross_entropy(logits, probs), t(0.5 * (math.log(2.0) + math.log(4.0))))


def test_soft_cross_entropy_matches_hard_ce_for_one_hot():
    torch.manual_seed(0)
    logits = torch.randn(6, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    one_hot = torch.nn.functional.one_hot(y, 4).double()
    torch.testing.assert_close(soft_cross_entropy(logits, one_hot), identity_loss(logits, y, "ce").mean())


@pytest.mark.parametrize("k", [2, 5, 10])
def test_entropy_of_uniform_is_log_k(k):
    torch.testing.assert_close(entropy(torch.full((3, k), 1.7, dtype=torch.float64)), t(math.log(k)))


def test_entropy_of_peaked_is_near_zero():
    assert entropy(t([[50.0, 0.0, 0.0]])) < 1e-10


def test_distillation_loss_zero_for_identical_logits():
    torch.manual_seed(0)
    logits = torch.randn(8, 5, dtype=torch.float64)
    torch.testing.assert_close(distillation_loss(logits, logits.clone()), t(0.0))
    torch.testing.assert_close(distillation_loss(logits, logits.clone(), temperature=4.0), t(0.0))
    # Shifting all logits by a constant does not change the softmax.
    torch.testing.assert_close(distillation_loss(logits + 3.0, logits), t(0.0))


def test_distillation_loss_is_kl_teacher_student():
    student = t([[0.0, math.log(3.0)]])  # q = [0.25, 0.75]
    teacher = t([[0.0, 0.0]])            # p = [0.5, 0.5]
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    torch.testing.assert_close(distillation_loss(student, teacher), t(kl))
    # Direction matters: KL(q || p) differs.
    assert not torch.isclose(distillation_loss(teacher, student), t(kl))
    # Temperature 2 halves the logits; the loss is scaled by T^2 = 4.
    q2 = torch.softmax(student / 2, 1)[0]
    kl2 = (0.5 * torch.log(0.5 / q2)).sum()
    torch.testing.assert_close(distillation_loss(student, teacher, temperature=2.0), 4 * kl2)


# --------------------------------------------------------------------------- gradient penalty


class LinearCritic(nn.Module):
    def __init__(self, weight):
        super().__init__()
        self.lin = nn.Linear(len(weight), 1).double()
        with torch.no_grad():
            self.lin.weight.copy_(t([weight]))
            self.lin.bias.fill_(-7.0)

    def forward(self, x):
        return self.lin(x.flatten(1)).view(-1)


@pytest.mark.parametrize("weight,norm", [([3.0, 4.0, 0.0, 0.0], 5.0), ([0.6, 0.0, 0.8, 0.0], 1.0),
                                         ([0.0, 0.0, 0.0, 0.5], 0.5)])
def test_gradient_penalty_of_linear_critic(weight, norm):
    torch.manual_seed(0)
    critic = LinearCritic(weight)
    real = torch.rand(6, 1, 2, 2, dtype=torch.float64)
    fake = torch.rand(6, 1, 2, 2, dtype=torch.float64)
    gp = gradient_penalty(critic, real, fake)
    # The input gradient of a linear critic is its weight everywhere: penalty (||w|| - 1)^2.
    torch.testing.assert_close(gp, t((norm - 1.0) ** 2))


def test_gradient_penalty_is_differentiable_in_critic_weights():
    critic = LinearCritic([3.0, 4.0, 0.0, 0.0])
    real = torch.rand(4, 1, 2, 2, dtype=torch.float64)
    fake = torch.rand(4, 1, 2, 2, dtype=torch.float64)
    gradient_penalty(critic, real, fake).backward()
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w|| = 2 * 4 * [0.6, 0.8, 0, 0]
    torch.testing.assert_close(critic.lin.weight.grad, t([[4.8, 6.4, 0.0, 0.0]]))


def test_margin_loss_is_the_best_other_logit_minus_the_attacked_one():
    logits = torch.tensor([[3.0, 1.0, 2.5], [0.0, 4.0, -1.0]])
    y = torch.tensor([0, 2])
    assert torch.allclose(identity_loss(logits, y, "margin"), torch.tensor([2.5 - 3.0, 4.0 - (-1.0)]))
    # unlike cross-entropy it does not saturate: its gradient on the attacked logit stays -1
    x = logits.clone().requires_grad_(True)
    identity_loss(x * 100, y, "margin").sum().backward()
    assert x.grad[0, 0] == -100 and x.grad[1, 2] == -100
