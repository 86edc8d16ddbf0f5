"""The rule of every checked :class:`~mi_art.evaluations.experiment.ExperimentConfig` field, in one table
(:data:`PARAMETER_RULES`, like scikit-learn's ``_parameter_constraints``). The config's ``validate`` and the
grid files' checks both apply it, through the shared helpers of :mod:`mi_art.validation`, so a value is
refused with the same message wherever it is given."""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Dict, Sequence, Tuple

from mi_art.attacks import ATTACK_NAMES, get_attack
from mi_art.access import ACCESS_LEVELS
from mi_art.models import ARCHITECTURES
from mi_art.priors import PUBLIC_PRIOR, priors_needed
from mi_art.training import AUGMENTATIONS
from mi_art.variants import VARIANTS, parse_variant
from mi_art.validation import (check_bool, check_choice, check_count, check_int, check_list, check_number,
                               check_optional_count, check_seed)

from .independent import FACE_DATASETS

__all__ = ["ATTACKS", "CHECKED_ELSEWHERE", "GAN_AUGMENTATIONS", "KEDMI_INITS", "MIRROR_SAFE_DATASETS",
           "PARAMETER_RULES", "SURROGATE_DATA", "VARIANTS", "check_field", "gan_augment_for",
           "needs_gmi_prior"]

#: Every registered attack's name (:data:`mi_art.attacks.ATTACK_NAMES`, read at each use): the GAN attacks, ART's
#: MIFace and BREP-MI; whether one takes variants is its entry's ``variants``.
ATTACKS = ATTACK_NAMES
#: "gmi": the KEDMI generator starts from the (target-independent) GMI prior's; "none": from scratch.
KEDMI_INITS = ("gmi", "none")
#: what surrogates are distilled on: public images alone, or public images plus fresh GMI-prior samples.
SURROGATE_DATA = ("public+prior", "public")
#: Augmentations of the public images the GAN priors train on; "auto" is resolved per dataset by
#: :func:`gan_augment_for` (the config's, the grid's and both commands' default).
GAN_AUGMENTATIONS = ("auto", *AUGMENTATIONS)
#: Datasets whose mirrored images are images of the data too (faces), where gan_augment "auto" flips.
MIRROR_SAFE_DATASETS = FACE_DATASETS


def gan_augment_for(dataset: str, gan_augment: str) -> str:
    """``gan_augment`` for ``dataset`` with "auto" resolved: "flip" for face folders and CelebA
    (:data:`MIRROR_SAFE_DATASETS`: a mirrored face is a face; without flips KEDMI's prior on a few hundred
    public faces turns to noise), "none" elsewhere (a mirrored digit is not a digit). Any other value is
    returned as it is. The one place "auto" is decided: :class:`~mi_art.evaluations.experiment.ExperimentConfig`
    calls it when it is made, so cache keys and grid cell ids hold the resolved value."""
    if gan_augment != "auto":
        return gan_augment
    name = dataset.strip().lower().replace("_", "-") if isinstance(dataset, str) else dataset
    return "flip" if name in MIRROR_SAFE_DATASETS else "none"

def needs_gmi_prior(config: Any) -> bool:
    """Whether a run of ``config`` (an :class:`~mi_art.evaluations.experiment.ExperimentConfig`) trains or loads
    the public (GMI) prior (:data:`mi_art.priors.PUBLIC_PRIOR`): when its attack searches it (GMI, VMI, BREP-MI)
    or a prior started from it (KEDMI with ``kedmi_init="gmi"``, PLG-MI), and when surrogates distilled on
    "public+prior" learn on its samples."""
    spec = get_attack(config.attack)
    if PUBLIC_PRIOR in priors_needed(spec.prior, config):
        return True
    surrogates = spec.variants and ("ma" in parse_variant(config.variant) or config.access != "white-box")
    return surrogates and bool(config.surrogate_archs) and config.surrogate_data == "public+prior"


Rule = Callable[[str, Any], Any]


def _choice(choices: Sequence[str]) -> Rule:
    return partial(_check_choice, choices=tuple(choices))


def _check_choice(name: str, value: Any, *, choices: Tuple[str, ...]) -> Any:
    return check_choice(name, value, choices)


def _check_names(name: str, value: Any, *, choices: Tuple[str, ...]) -> list:
    """A list of names among ``choices`` (an empty list is allowed: no surrogate)."""
    for i, item in enumerate(check_list(name, value, item="name")):
        check_choice(f"{name}[{i}]", item, choices)
    return list(value)


_ARCHITECTURE = _choice(sorted(ARCHITECTURES))


def _independent_judge(name: str, value: Any) -> str:
    """One of :data:`~mi_art.evaluations.independent.INDEPENDENT_JUDGES`; "dlib" needs its weights installed."""
    from .independent import INDEPENDENT_JUDGES, dlib_weights_installed

    value = check_choice(name, value, INDEPENDENT_JUDGES)
    if value == "dlib":
        dlib_weights_installed(required=True)
    return value


_PRETRAIN_EPOCHS = partial(check_int, low=0, hint=" (0 trains from scratch)")

#: field -> ``rule(name, value)``, which raises a ValueError naming ``name``, the value and what is valid.
PARAMETER_RULES: Dict[str, Rule] = {
    "attack": lambda name, value: check_choice(name, value, ATTACK_NAMES),  # read at each use: register_attack
    "variant": lambda name, value: check_choice(name, value, VARIANTS),  # read at each use: see mi_art.variants
    "target_arch": _ARCHITECTURE,
    "eval_arch": _ARCHITECTURE,
    "surrogate_archs": partial(_check_names, choices=tuple(sorted(ARCHITECTURES))),
    **{key: check_count for key in ("target_epochs", "eval_epochs", "iterations", "n_reconstructions", "batch_size",
                                    "prior_steps", "kedmi_steps", "plgmi_steps", "surrogate_steps",
                                    "miface_iterations", "gan_width", "judges")},
    **{key: _PRETRAIN_EPOCHS for key in ("target_pretrain_epochs", "eval_pretrain_epochs",
                                         "surrogate_pretrain_epochs")},
    "augment": _choice(AUGMENTATIONS),
    "gan_augment": _choice(GAN_AUGMENTATIONS),
    "kedmi_init": _choice(KEDMI_INITS),
    "surrogate_data": _choice(SURROGATE_DATA),
    "min_surrogate_agreement": partial(check_number, low=0, high=1),
    "regularise_surrogates": check_bool,
    "mixed_precision": check_bool,
    "verbose": check_bool,
    "access": _choice(ACCESS_LEVELS),
    "independent_judge": _independent_judge,
    "max_queries": partial(check_optional_count, hint=" (None: no limit)"),
    "n_candidates": partial(check_optional_count, hint=" (None: no selection)"),
    "search_views": lambda name, value: None if value is None else check_int(
        name, value, low=0, hint=" (0: the images as generated; None: each attack's own)"),
    "seed": check_seed,
    "attack_seed": check_seed,
}

#: Fields without a rule here, and where they are checked: against the data or the machine, not alone.
CHECKED_ELSEWHERE: Dict[str, str] = {
    "dataset": "load_dataset (mi_art.data), with the data folder",
    "data_root": "load_dataset (mi_art.data): the folder must exist",
    "data_options": "load_dataset (mi_art.data): the loader's own arguments",
    "defense": "the defense registry (mi_art.defenses.get_defense)",
    "defense_params": "the defense's own parameter check (mi_art.defenses.check_defense_params)",
    "identities": "the Workbench, against the data's number of identities",
    "device": "mi_art.utils.resolve_device, against this machine's GPUs",
}


def check_field(name: str, field: str, value: Any) -> Any:
    """Check ``value`` for the config field ``field`` by its rule; ``name`` is what the message calls it
    (the field, or where a grid file sets it)."""
    return PARAMETER_RULES[field](name, value)
