"""GAN-based model inversion attacks as ART ``InferenceAttack`` classes, each a prior, an identity loss,
a model set and a latent search (see :mod:`mi_art.attacks.base`)."""
from typing import Dict, Type

from .base import GANInversionAttack
from .brepmi import BREPMI
from .gmi import GMI
from .kedmi import KEDMI
from .plgmi import PLGMI
from .vmi import VMI

#: The attacks by name (``mi-art attack --attack NAME``): adding one is its module and a line here.
ATTACKS: Dict[str, Type[GANInversionAttack]] = {"gmi": GMI, "kedmi": KEDMI, "vmi": VMI, "plgmi": PLGMI}

__all__ = ["ATTACKS", "BREPMI", "GANInversionAttack", "GMI", "KEDMI", "PLGMI", "VMI"]
