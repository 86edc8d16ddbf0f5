"""Model inversion attacks as ART ``InferenceAttack`` classes: the GAN attacks, each a prior, an identity loss,
a model set and a latent search (see :mod:`mi_art.attacks.base`), and BREP-MI; with ART's MIFace, every attack
is an entry of the registry (:mod:`mi_art.attacks.registry`)."""
from .base import GANInversionAttack
from .brepmi import BREPMI
from .gmi import GMI
from .kedmi import KEDMI
from .plgmi import PLGMI
from .registry import (ATTACK_NAMES, ATTACK_SPECS, ATTACKS, AttackJob, AttackOutcome, AttackSpec, get_attack,
                       register_attack, unregister_attack)
from .runs import BREP_MI, MIFACE
from .vmi import VMI

# the attacks by name (``mi-art attack --attack NAME``), in this order: adding one is its module and a line here
for _spec in (AttackSpec.of("gmi", GMI), AttackSpec.of("kedmi", KEDMI), AttackSpec.of("vmi", VMI),
              AttackSpec.of("plgmi", PLGMI), MIFACE, BREP_MI):
    register_attack(_spec)

__all__ = ["ATTACKS", "ATTACK_NAMES", "ATTACK_SPECS", "AttackJob", "AttackOutcome", "AttackSpec", "BREPMI",
           "GANInversionAttack", "GMI", "KEDMI", "PLGMI", "VMI", "get_attack", "register_attack", "unregister_attack"]
