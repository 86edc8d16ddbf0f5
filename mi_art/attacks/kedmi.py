"""KEDMI: "Knowledge-Enriched Distributional Model Inversion Attacks" (Chen et al., ICCV 2021,
https://arxiv.org/abs/2010.04092), with LOMMA's improvements available through ``identity_loss``,
``p_reg`` and ``surrogates``."""
from __future__ import annotations

import torch

from ..priors.kedmi import kedmi_prior_loss
from ..priors.networks import Critic
from ..utils import EstimatorModule
from .base import GANInversionAttack
from .search import gaussian_search


class KEDMI(GANInversionAttack):
    """Distributional model inversion with an inversion-specific GAN prior.

    For each identity a Gaussian over the latent space (mean ``mu``, init 0; log-variance, init 1)
    is learned with Adam: each step samples ``z = mu + exp(logvar / 2) * eps`` (clamped to [-1, 1])
    and minimises ``-log(Z/(Z+1)) + id_weight * L_id`` where ``Z = sum_k exp(D_k(G(z)))``
    (:func:`~mi_art.attacks.search.gaussian_search`). Afterwards ``n_reconstructions`` samples per
    identity are drawn. Identities are optimised together in batches of ``batch_size`` identities.

    :param generator: KEDMI generator (NCHW images in [0, 1]); see :func:`mi_art.train_kedmi_prior`.
    :param discriminator: Its K-logit discriminator (K = the target's number of classes), trained on
        [0, 1] images; a GMI ``Critic`` is refused.

    The other parameters are those of every attack (:class:`~mi_art.attacks.base.GANInversionAttack`).
    """

    prior = "kedmi"

    def _check_params(self) -> None:
        super()._check_params()
        if isinstance(self.discriminator, Critic):
            raise ValueError("discriminator is GMI's WGAN-GP Critic (one score per image): KEDMI needs a "
                             "KEDMIDiscriminator with K class logits, trained against this target by "
                             "mi_art.train_kedmi_prior; use mi_art.GMI with the Critic")

    def _check_discriminator(self, images: torch.Tensor) -> None:
        scores = self.discriminator(images)
        k = self.estimator.nb_classes
        if scores.ndim != 2 or scores.shape[1] != k:
            raise ValueError(f"the KEDMI discriminator returns scores of shape {tuple(scores.shape)}: KEDMI needs K={k} "
                             "class logits per image (a KEDMIDiscriminator from mi_art.train_kedmi_prior)")

    def _check_models(self, target: EstimatorModule) -> None:
        super()._check_models(target)
        k = getattr(self.discriminator, "num_classes", None)
        if k is not None and k != self.estimator.nb_classes:
            raise ValueError(f"the KEDMI discriminator has {k} class logits but the target has "
                             f"{self.estimator.nb_classes} classes: train the prior against this target")

    def _loss(self, images: torch.Tensor, labels: torch.Tensor, iteration: int) -> torch.Tensor:
        return self._objective(images, labels, kedmi_prior_loss(self.discriminator(images)), iteration)

    def _run(self, labels: torch.Tensor) -> torch.Tensor:
        bar = self._progress(len(labels))
        try:
            return gaussian_search(self.generator, labels, self._loss, latent_dim=self._latent_dim,
                                   iterations=self.iterations, learning_rate=self.learning_rate,
                                   batch_size=self.batch_size, n=self._codes_per_identity, bar=bar)
        finally:
            bar.close()
