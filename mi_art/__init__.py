"""mi-art: model inversion attacks and defenses for the Adversarial Robustness Toolbox.

GMI, KEDMI, VMI and PLG-MI as ART inference attacks, each with the logit loss + ``p_reg`` and the model
augmentation of "Re-thinking Model Inversion Attacks Against Deep Neural Networks" (Nguyen et al.,
CVPR 2023, https://arxiv.org/abs/2304.01669). An attack is four parts: a prior (:mod:`mi_art.priors`), an
identity loss (:mod:`mi_art.identity`), a model set (:mod:`mi_art.surrogates`) and a latent search
(:mod:`mi_art.attacks.search`).
"""
from .threads import apply_default_threads, set_threads

apply_default_threads()  # before any work: see mi_art.threads (MI_ART_THREADS or OMP_NUM_THREADS override it)

from .access import ACCESS_LEVELS, MalformedAnswerError, PredictFailedError, PredictOracle, QueryBudgetError
from . import attacks
from .attacks import *  # noqa: F401,F403 (the registry module's attacks: adding one does not touch this file)
from .features import extract_features, last_linear, logits_and_features
from .identity import estimate_p_reg
from .models import ARCHITECTURES, CNN, MLP, VGG16BN, IRNet, ResNet, make_classifier
from .priors import (PRIORS, ConditionalGenerator, Critic, Generator, KEDMIDiscriminator, ProjectionDiscriminator,
                     prior_samples, train_gmi_prior, train_kedmi_prior, train_plgmi_prior)
from .surrogates import ModelSet, distill_surrogate, top1_agreement
from .training import train_classifier
from .utils import load_checkpoint, resolve_device, save_checkpoint, seed_everything
from .variants import ALIGN_VIEWS, VARIANTS, attack_kwargs, parse_variant

__version__ = "0.1.0"

__all__ = [
    *attacks.__all__, "ACCESS_LEVELS", "MalformedAnswerError", "PredictFailedError", "PredictOracle",
    "QueryBudgetError", "extract_features", "last_linear",
    "logits_and_features", "ARCHITECTURES", "CNN", "Critic", "Generator", "KEDMIDiscriminator", "MLP", "ResNet",
    "VGG16BN", "IRNet", "ConditionalGenerator", "ProjectionDiscriminator", "PRIORS", "ModelSet", "make_classifier",
    "distill_surrogate", "estimate_p_reg", "prior_samples", "top1_agreement", "train_classifier", "train_gmi_prior",
    "train_kedmi_prior", "train_plgmi_prior", "load_checkpoint", "resolve_device", "save_checkpoint",
    "seed_everything", "set_threads", "ALIGN_VIEWS", "VARIANTS", "attack_kwargs", "parse_variant",
]
