"""PLG-MI: "Pseudo Label-Guided Model Inversion Attack via Conditional Generative Adversarial Network"
(Yuan et al., AAAI 2023, https://arxiv.org/abs/2302.09814), with LOMMA's improvements available through
``identity_loss``, ``p_reg`` and ``surrogates``."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..priors.networks import ConditionalGenerator
from ..utils import EstimatorModule
from ..validation import check_bool
from .base import GANInversionAttack
from .search import conditional_search


class PLGMI(GANInversionAttack):
    """Pseudo label-guided model inversion: search the latent code of the attacked identity's conditional
    generator ``G(z, y)`` (:func:`mi_art.train_plgmi_prior`) for images the target puts in the identity,
    under random views.

    Each step's loss is the mean over ``views`` random views of the images (:func:`~mi_art.priors.plgmi.random_views`:
    crop, flip, rotation, brightness and contrast; the authors sum them, the same step under Adam) of the identity
    loss, by default the max-margin loss
    ``max_{k != y} l_k - l_y``; one code per reconstruction, ``z ~ N(0, I)``, Adam at ``learning_rate`` 0.1,
    no prior term, as the authors' code (:func:`~mi_art.attacks.search.conditional_search`), except that
    each code is kept on the sphere of radius ``sqrt(latent_dim)``, where ``N(0, I)``'s codes lie
    (``project_codes``): the authors' unconstrained codes leave the prior's faces as the margin grows
    (docs/methods.md, PLG-MI). With ``identity_loss="logit"`` and ``p_reg``, and ``surrogates``: PLG-MI+LOM,
    +MA and LOMMA.

    :param generator: The target's conditional generator (:class:`~mi_art.priors.networks.ConditionalGenerator`
        with the target's number of classes).
    :param discriminator: Not used in the attack (its prior is the generator's conditioning); may be None.
    :param views: Random views of the images per step (the authors' 2; every attack takes it).
    :param project_codes: Rescale each code to norm ``sqrt(latent_dim)`` after every step (default); False
        searches without any constraint, as the authors' code.

    The other parameters are those of every attack (:class:`~mi_art.attacks.base.GANInversionAttack`), with
    ``identity_loss="margin"``, ``learning_rate=0.1`` and ``id_weight=1`` by default.
    """

    attack_params = GANInversionAttack.attack_params + ["project_codes"]
    needs_discriminator = False
    prior = "plgmi"
    title = "PLG-MI"

    def __init__(self, estimator: Any, generator: nn.Module, discriminator: Any = None, *,
                 project_codes: bool = True, **kwargs: Any) -> None:
        self.project_codes = project_codes
        kwargs = {"identity_loss": "margin", "learning_rate": 0.1, "id_weight": 1.0, "views": 2, **kwargs}
        super().__init__(estimator, generator, discriminator, **kwargs)

    def _check_params(self) -> None:
        super()._check_params()
        check_bool("project_codes", self.project_codes)
        if not isinstance(self.generator, ConditionalGenerator) and getattr(self.generator, "num_classes", None) is None:
            raise ValueError("generator must be a class-conditional generator G(z, y) with num_classes "
                             "(mi_art.train_plgmi_prior); a GMI or KEDMI generator takes no class")

    def _check_models(self, target: EstimatorModule) -> None:
        k = getattr(self.generator, "num_classes", None)
        if k is not None and k != self.estimator.nb_classes:
            raise ValueError(f"the conditional generator has {k} classes but the target has "
                             f"{self.estimator.nb_classes}: train the prior against this target")
        super()._check_models(target)

    def _probe(self) -> torch.Tensor:
        z = torch.zeros(2, self._latent_dim, device=self._device).uniform_(-1, 1)
        return self.generator(z, torch.zeros(2, dtype=torch.long, device=self._device))

    def _loss(self, images: torch.Tensor, labels: torch.Tensor, iteration: int) -> torch.Tensor:
        zero = torch.zeros(len(images), device=images.device)
        return self._objective(images, labels, zero, iteration)

    def _run(self, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.repeat_interleave(self._codes_per_identity)
        bar = self._progress(len(labels))
        try:
            return conditional_search(self.generator, labels, self._loss, latent_dim=self._latent_dim,
                                      iterations=self.iterations, learning_rate=self.learning_rate,
                                      batch_size=self.batch_size,
                                      radius=self._latent_dim ** 0.5 if self.project_codes else None, bar=bar)
        finally:
            bar.close()
