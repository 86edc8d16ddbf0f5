"""Loss functions of the attacks and of the GAN priors.

References: GMI (Zhang et al., CVPR 2020, https://arxiv.org/abs/1911.07135), KEDMI (Chen et al.,
ICCV 2021, https://arxiv.org/abs/2010.04092), LOMMA (Nguyen et al., CVPR 2023,
https://arxiv.org/abs/2304.01669).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IDENTITY_LOSSES = ("ce", "logit")


def identity_loss(logits: torch.Tensor, y: torch.Tensor, kind: str = "ce") -> torch.Tensor:
    """Per-sample identity loss: cross-entropy (GMI, KEDMI) or the negative raw logit of class ``y``
    (LOMMA's logit maximisation; bias included as in the authors' code). Shape ``(N,)``."""
    if kind == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    if kind == "logit":
        return -logits.gather(1, y.view(-1, 1)).squeeze(1)
    raise ValueError(f"identity_loss must be one of {IDENTITY_LOSSES}, got {kind!r}")


def feature_regulariser(features: torch.Tensor, p_reg: torch.Tensor) -> torch.Tensor:
    """LOMMA's ``||p - p_reg||^2`` averaged over feature dimensions: shape ``(N,)``."""
    return (features - p_reg.to(features)).pow(2).flatten(1).mean(1)


def kedmi_prior_loss(d_logits: torch.Tensor) -> torch.Tensor:
    """KEDMI prior, per sample: ``softplus(LSE(l)) - LSE(l) = -log(Z / (Z + 1))``, Z = sum_k exp(l_k)."""
    lse = torch.logsumexp(d_logits, dim=1)
    return F.softplus(lse) - lse


def wgan_prior_loss(critic_scores: torch.Tensor) -> torch.Tensor:
    """GMI prior, per sample: ``-D(G(z))``."""
    return -critic_scores.view(-1)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP penalty ``E[(||grad D(x_hat)||_2 - 1)^2]`` on random interpolates of real and fake."""
    alpha = torch.rand(real.size(0), 1, 1, 1, device=real.device)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    grad, = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against soft labels (KEDMI's discriminator on the target's softmax)."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(1).mean()


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean entropy of ``softmax(logits)`` over the batch."""
    return -(F.softmax(logits, 1) * F.log_softmax(logits, 1)).sum(1).mean()


def kedmi_discriminator_loss(logits_public_labelled: torch.Tensor, target_probs: torch.Tensor,
                             logits_public: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """KEDMI's discriminator loss: soft CE on the target's labels + semi-supervised GAN terms
    ``0.5 * [E softplus(LSE(l_real)) - E LSE(l_real) + E softplus(LSE(l_fake))]``."""
    lse_real = torch.logsumexp(logits_public, 1)
    lse_fake = torch.logsumexp(logits_fake, 1)
    unsupervised = 0.5 * (F.softplus(lse_real).mean() - lse_real.mean() + F.softplus(lse_fake).mean())
    return soft_cross_entropy(logits_public_labelled, target_probs) + unsupervised


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) at ``temperature``, scaled by T^2 (Hinton et al.)."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                    reduction="batchmean", log_target=True) * t * t
