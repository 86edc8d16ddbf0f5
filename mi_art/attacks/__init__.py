"""GAN-based model inversion attacks as ART ``InferenceAttack`` classes."""
from .base import GANInversionAttack
from .gmi import GMI
from .kedmi import KEDMI

__all__ = ["GANInversionAttack", "GMI", "KEDMI"]
