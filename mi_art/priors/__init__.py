"""GAN priors of the attacks, one module each: the networks (:mod:`~mi_art.priors.networks`), and for every
prior its training, its losses and the term the attack adds to its loss.

- ``gmi`` (:mod:`~mi_art.priors.gmi`): a WGAN-GP on public images, independent of the target (GMI, VMI);
- ``kedmi`` (:mod:`~mi_art.priors.kedmi`): a GAN whose discriminator learns the target's soft labels on
  public images, one per target (KEDMI);
- ``plgmi`` (:mod:`~mi_art.priors.plgmi`): a class-conditional GAN on public images pseudo-labelled by the
  target, one per target (PLG-MI).

:data:`PRIORS` names them (:mod:`~mi_art.priors.registry`: each entry owns how its prior is built, trained,
keyed and checked; :func:`register_prior` adds one); :func:`~mi_art.priors.sampling.prior_samples` draws images
from any of them.
"""
from __future__ import annotations

from .gmi import gradient_penalty, train_gmi_prior, wgan_prior_loss
from .kedmi import entropy, kedmi_discriminator_loss, kedmi_prior_loss, soft_cross_entropy, train_kedmi_prior
from .networks import (LATENT_DIM, MIN_GAN_SIZE, ConditionalBatchNorm, ConditionalGenerator, Critic, Generator,
                       KEDMIDiscriminator, MinibatchDiscrimination, ProjectionDiscriminator, Resize)
from .plgmi import (PSEUDO_LABELS_PER_CLASS, few_public_images_note, random_views, select_pseudo_labels,
                    train_plgmi_prior)
from .registry import PRIORS, PUBLIC_PRIOR, PriorSpec, get_prior, priors_needed, register_prior, unregister_prior
from .sampling import prior_samples, save_sample_grid

__all__ = ["LATENT_DIM", "MIN_GAN_SIZE", "PRIORS", "PSEUDO_LABELS_PER_CLASS", "PUBLIC_PRIOR", "ConditionalBatchNorm",
           "ConditionalGenerator", "Critic", "Generator", "KEDMIDiscriminator", "MinibatchDiscrimination", "PriorSpec",
           "ProjectionDiscriminator", "Resize", "entropy", "gradient_penalty", "kedmi_discriminator_loss",
           "kedmi_prior_loss", "prior_samples", "random_views", "save_sample_grid", "select_pseudo_labels",
           "soft_cross_entropy", "get_prior", "priors_needed", "register_prior", "train_gmi_prior", "train_kedmi_prior",
           "train_plgmi_prior", "unregister_prior", "wgan_prior_loss"]
