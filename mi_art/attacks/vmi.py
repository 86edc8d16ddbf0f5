"""VMI: "Variational Model Inversion Attacks" (Wang et al., NeurIPS 2021, https://arxiv.org/abs/2201.10787),
with LOMMA's improvements available through ``identity_loss``, ``p_reg`` and ``surrogates``."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..validation import check_count, check_number
from .base import REFERENCE_BATCH, GANInversionAttack
from .search import gaussian_kl, variational_search


class VMI(GANInversionAttack):
    """Variational model inversion: for each identity a distribution ``q`` over the latent codes of a public
    GAN prior, fitted by maximising the target's log-likelihood of the identity on samples of ``q`` minus
    ``kl_weight`` times ``KL(q || N(0, I))``; the reconstructions are samples of ``q``.

    ``q`` is a full-covariance Gaussian (the authors' Gaussian option; their main one is a Glow flow on a
    StyleGAN's layers), starting as the prior; ``samples`` codes per identity and step, Adam
    (:func:`~mi_art.attacks.search.variational_search`). There is no discriminator term: the KL keeps the
    codes where the prior puts its mass. With ``identity_loss="ce"`` the identity term is the paper's
    negative log-likelihood; "logit" and ``surrogates`` give VMI+LOM, +MA and LOMMA.

    :param generator: The public GAN prior's generator (:func:`mi_art.train_gmi_prior`).
    :param discriminator: Not used (VMI has no prior term but the KL); may be None.
    :param kl_weight: Weight of ``KL(q || N(0, I))`` against the mean identity loss of a sample (the
        authors' 1e-3).
    :param samples: Codes drawn from each identity's ``q`` per step (the authors' 64 on a GPU).

    ``learning_rate`` defaults to 0.005 (Adam on ``m`` and ``L``), not GMI's 0.02: with no clamp and a weak KL,
    0.02 lets ``q`` drift off the prior's faces; 0.005 was the best of the rates tried on AT&T and on LFW
    (docs/methods.md, VMI, measures each).

    The other parameters are those of every attack (:class:`~mi_art.attacks.base.GANInversionAttack`);
    ``batch_size`` counts identities, ``id_weight`` scales the identity loss and the KL together.

    After :meth:`infer`, ``posterior_mean_`` ``(K, d)`` and ``posterior_scale_tril_`` ``(K, d, d)`` hold each
    attacked identity's ``q = N(m, L L^T)`` (in the order of ``y``), to draw more codes from, and
    ``posterior_kl_`` its ``KL(q || N(0, I))``.
    """

    attack_params = GANInversionAttack.attack_params + ["kl_weight", "samples"]
    needs_discriminator = False
    prior = "gmi"

    def __init__(self, estimator: Any, generator: nn.Module, discriminator: Any = None, *, kl_weight: float = 1e-3,
                 samples: int = 4, **kwargs: Any) -> None:
        self.kl_weight, self.samples = kl_weight, samples
        super().__init__(estimator, generator, discriminator, **{"learning_rate": 0.005, **kwargs})

    def _check_params(self) -> None:
        super()._check_params()
        check_number("kl_weight", self.kl_weight, low=0)
        check_count("samples", self.samples)

    def _loss(self, images: torch.Tensor, labels: torch.Tensor, iteration: int) -> torch.Tensor:
        return self._objective(images, labels, torch.zeros(len(images), device=images.device), iteration)

    def _run(self, labels: torch.Tensor) -> torch.Tensor:
        bar = self._progress(len(labels))
        try:  # the KL in the units of one image's identity term of _objective
            images, mean, scale = variational_search(
                self.generator, labels, self._loss, latent_dim=self._latent_dim, iterations=self.iterations,
                learning_rate=self.learning_rate, batch_size=self.batch_size, samples=self.samples,
                kl_weight=self.kl_weight * self.id_weight / REFERENCE_BATCH, n=self._codes_per_identity, bar=bar)
        finally:
            bar.close()
        self.posterior_mean_, self.posterior_scale_tril_ = mean.cpu().numpy(), scale.cpu().numpy()
        self.posterior_kl_ = gaussian_kl(mean, scale).cpu().numpy()
        return images
