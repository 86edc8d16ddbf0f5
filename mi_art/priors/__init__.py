"""GAN priors of the attacks, one module each: the networks (:mod:`~mi_art.priors.networks`), and for every
prior its training, its losses and the term the attack adds to its loss.

- ``gmi`` (:mod:`~mi_art.priors.gmi`): a WGAN-GP on public images, independent of the target (GMI, VMI);
- ``kedmi`` (:mod:`~mi_art.priors.kedmi`): a GAN whose discriminator learns the target's soft labels on
  public images, one per target (KEDMI);
- ``plgmi`` (:mod:`~mi_art.priors.plgmi`): a class-conditional GAN on public images pseudo-labelled by the
  target, one per target (PLG-MI).

:data:`PRIORS` names them; :func:`~mi_art.priors.sampling.prior_samples` draws images from any of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional

from .gmi import gradient_penalty, train_gmi_prior, wgan_prior_loss
from .kedmi import entropy, kedmi_discriminator_loss, kedmi_prior_loss, soft_cross_entropy, train_kedmi_prior
from .networks import (LATENT_DIM, MIN_GAN_SIZE, ConditionalBatchNorm, ConditionalGenerator, Critic, Generator,
                       KEDMIDiscriminator, MinibatchDiscrimination, ProjectionDiscriminator, Resize)
from .plgmi import (PSEUDO_LABELS_PER_CLASS, few_public_images_note, random_views, select_pseudo_labels,
                    train_plgmi_prior)
from .sampling import prior_samples, save_sample_grid


@dataclass(frozen=True)
class PriorSpec:
    """What the pipeline needs to know of a prior: whether it is trained against a target (then cached per
    target), its training function, and what it says of the public data it learns from
    (``data_note(n_public_images, n_classes)``: a sentence for every result record, or None)."""

    per_target: bool
    train: Callable
    data_note: Callable[[int, int], Optional[str]] = lambda n_public, n_classes: None


#: The priors by name (the ``prior`` attribute of each attack class).
PRIORS: Dict[str, PriorSpec] = {
    "gmi": PriorSpec(per_target=False, train=train_gmi_prior),
    "kedmi": PriorSpec(per_target=True, train=train_kedmi_prior),
    "plgmi": PriorSpec(per_target=True, train=train_plgmi_prior, data_note=few_public_images_note),
}

__all__ = ["LATENT_DIM", "MIN_GAN_SIZE", "PRIORS", "PSEUDO_LABELS_PER_CLASS", "ConditionalBatchNorm",
           "ConditionalGenerator", "Critic", "Generator", "KEDMIDiscriminator", "MinibatchDiscrimination", "PriorSpec",
           "ProjectionDiscriminator", "Resize", "entropy", "gradient_penalty", "kedmi_discriminator_loss",
           "kedmi_prior_loss", "prior_samples", "random_views", "save_sample_grid", "select_pseudo_labels",
           "soft_cross_entropy", "train_gmi_prior", "train_kedmi_prior", "train_plgmi_prior", "wgan_prior_loss"]
