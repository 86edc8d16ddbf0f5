"""Model inversion defenses behind one call, :func:`train_defended_target`.

Training-time defenses: DP-SGD with Opacus (:mod:`mi_art.defenses.dp`), MID (:mod:`mi_art.defenses.mid`), BiDO
(:mod:`mi_art.defenses.bido`), negative label smoothing (:mod:`mi_art.defenses.label_smoothing`), TL-DMI
(:mod:`mi_art.defenses.transfer`), Trap-MID (:mod:`mi_art.defenses.trap`), RoLSS
(:mod:`mi_art.defenses.rolss`, residual networks without their last stage's skip connections). Output postprocessors from ART (:mod:`mi_art.defenses.postprocessing`), which
change ``predict`` only and leave white-box gradient attacks such as GMI and KEDMI unaffected.

Example::

    from mi_art.data import load_digits_data
    from mi_art.defenses import train_defended_target, wrap_with_defense

    data = load_digits_data()
    model, record = train_defended_target("dp-sgd", data, epochs=10, noise_multiplier=1.0)
    print(record.test_accuracy, record.epsilon, record.delta)
    classifier = wrap_with_defense(model, record)   # an ART PyTorchClassifier

A model you trained with Opacus yourself gets the same record from :func:`opacus_record` (its
``PrivacyEngine``, or the facts by hand), for the attack's record (``run_attack(..., target_record=record)``).

Each defense is one :class:`Defense` object in its own module, looked up by name in
:mod:`mi_art.defenses.registry`; :func:`register_defense` adds one (see :mod:`mi_art.defenses.base`).
"""
from .api import defended_architecture, train_defended_target
from .base import Defense, Trained
from .bido import coco, gaussian_kernel, hsic, linear_kernel
from .dp import accountant_epsilon
from .label_smoothing import smoothed_targets, smoothing_factor
from .mid import VIBHead, gaussian_kl
from .opacus_record import opacus_record
from .postprocessing import wrap_with_defense
from .record import DefenseRecord
from .registry import DEFENSES, check_defense_architecture, check_defense_params, defense_defaults, get_defense, register_defense, unregister_defense

__all__ = [
    "DEFENSES", "Defense", "DefenseRecord", "Trained", "check_defense_architecture", "check_defense_params", "get_defense", "register_defense",
    "unregister_defense", "defended_architecture", "VIBHead", "accountant_epsilon", "coco", "defense_defaults", "gaussian_kernel",
    "gaussian_kl", "hsic", "linear_kernel", "opacus_record", "smoothed_targets", "smoothing_factor",
    "train_defended_target", "wrap_with_defense",
]
