"""GMI: "The Secret Revealer: Generative Model-Inversion Attacks Against Deep Neural Networks"
(Zhang et al., CVPR 2020, https://arxiv.org/abs/1911.07135), with LOMMA's improvements available
through ``identity_loss``, ``p_reg`` and ``surrogates``."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..priors.gmi import wgan_prior_loss
from ..priors.networks import KEDMIDiscriminator
from ..validation import check_number
from .base import GANInversionAttack
from .search import point_search


class GMI(GANInversionAttack):
    """Generative model inversion: optimise latent codes of a public WGAN-GP prior so that the
    generated images are judged real by the critic and classified as the attacked identity.

    Minimises ``-D(G(z)) + id_weight * L_id(T(G(z)), y)`` over ``z`` with Nesterov SGD (momentum
    0.9), clamping ``z`` to [-1, 1] after each step (:func:`~mi_art.attacks.search.point_search`). Each of
    the ``n_reconstructions`` per identity is an independent random restart; all requested identities are
    optimised together in batches of ``batch_size`` latent codes.

    :param generator: GMI generator (latent -> NCHW image in [0, 1]); see :func:`mi_art.train_gmi_prior`.
    :param discriminator: Its WGAN-GP critic (one score per image), on [0, 1] images.
    :param momentum: Momentum of the SGD search (Nesterov when > 0).

    The other parameters are those of every attack (:class:`~mi_art.attacks.base.GANInversionAttack`).
    """

    attack_params = GANInversionAttack.attack_params + ["momentum"]
    prior = "gmi"

    def __init__(self, estimator: Any, generator: nn.Module, discriminator: nn.Module, *, momentum: float = 0.9,
                 **kwargs: Any) -> None:
        self.momentum = momentum
        super().__init__(estimator, generator, discriminator, **kwargs)

    def _check_params(self) -> None:
        super()._check_params()
        check_number("momentum", self.momentum, low=0, high=1, high_open=True)
        if isinstance(self.discriminator, KEDMIDiscriminator):
            raise ValueError("discriminator is a KEDMIDiscriminator (K class logits): GMI needs the WGAN-GP critic of "
                             "its prior (mi_art.train_gmi_prior); use mi_art.KEDMI with a KEDMI prior")

    def _check_discriminator(self, images: torch.Tensor) -> None:
        scores = self.discriminator(images)
        if scores.numel() != len(scores):
            raise ValueError(f"the discriminator returns scores of shape {tuple(scores.shape)}: GMI needs a WGAN-GP "
                             "critic with one score per image (mi_art.train_gmi_prior)")

    def _loss(self, images: torch.Tensor, labels: torch.Tensor, iteration: int) -> torch.Tensor:
        return self._objective(images, labels, wgan_prior_loss(self.discriminator(images)), iteration)

    def _run(self, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.repeat_interleave(self._codes_per_identity)
        bar = self._progress(len(labels))
        try:
            return point_search(self.generator, labels, self._loss, latent_dim=self._latent_dim,
                                iterations=self.iterations, learning_rate=self.learning_rate, momentum=self.momentum,
                                batch_size=self.batch_size, bar=bar)
        finally:
            bar.close()
