"""mi-art: model inversion attacks and defenses for the Adversarial Robustness Toolbox.

GMI and KEDMI as ART inference attacks, each with the logit loss + ``p_reg`` and the model
augmentation of "Re-thinking Model Inversion Attacks Against Deep Neural Networks" (Nguyen et al.,
CVPR 2023, https://arxiv.org/abs/2304.01669).
"""
from .attacks import GMI, KEDMI, GANInversionAttack
from .features import extract_features, last_linear, logits_and_features
from .models import (ARCHITECTURES, CNN, Critic, Generator, KEDMIDiscriminator, MLP, ResNet, VGG16BN, IRNet,
                     make_classifier)
from .training import (distill_surrogate, estimate_p_reg, top1_agreement, train_classifier, train_gmi_prior,
                       train_kedmi_prior)
from .utils import load_checkpoint, resolve_device, save_checkpoint, seed_everything

__version__ = "0.1.0"

__all__ = [
    "GMI", "KEDMI", "GANInversionAttack", "extract_features", "last_linear", "logits_and_features",
    "ARCHITECTURES", "CNN", "Critic", "Generator", "KEDMIDiscriminator", "MLP", "ResNet", "VGG16BN", "IRNet",
    "make_classifier", "distill_surrogate", "estimate_p_reg", "top1_agreement", "train_classifier", "train_gmi_prior",
    "train_kedmi_prior", "load_checkpoint", "resolve_device", "save_checkpoint", "seed_everything",
]
