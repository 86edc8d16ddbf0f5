"""The rules :class:`~mi_art.evaluations.experiment_config.ExperimentConfig`'s fields declare (each field names its own,
:func:`~mi_art.evaluations.settings.setting`), and the choices they check against. :data:`PARAMETER_RULES` (field ->
rule, like scikit-learn's ``_parameter_constraints``) is derived from those declarations; the config's ``validate``
and the grid files' checks both apply it, through the shared helpers of :mod:`mi_art.validation`, so a value is
refused with the same message wherever it is given, and the commands parse it with the rule's click type."""
from __future__ import annotations

from functools import partial
from typing import Any, Optional, Sequence, Tuple

import click

from mi_art.attacks import ATTACK_NAMES, get_attack
from mi_art.data import normalise_dataset_name
from mi_art.features import check_feature_layer
from mi_art.models import ARCHITECTURES, RENAMED_ARCHITECTURES
from mi_art.priors import PUBLIC_PRIOR, priors_needed
from mi_art.renames import Renames
from mi_art.training import AUGMENTATIONS
from mi_art.variants import ALIGN_VIEWS, VARIANTS, parse_variant
from mi_art.validation import (check_bool, check_choice, check_count, check_int, check_list, check_number,
                               check_optional_count, check_positive, check_seed)

from .independent import FACE_DATASETS, INDEPENDENT_JUDGES
from .settings import Rule

__all__ = ["ARCHITECTURE", "ARCHITECTURE_LIST", "ATTACK", "ATTACKS", "CHECKED_ELSEWHERE", "COUNT",
           "FLAG", "GAN_AUGMENTATIONS", "ID_WEIGHT", "INDEPENDENT_JUDGE", "KEDMI_INITS", "MIRROR_SAFE_DATASETS",
           "PARAMETER_RULES",
           "PRETRAIN_EPOCHS", "SEARCH_VIEWS", "SEED", "SHARE", "SURROGATE_DATA", "VARIANT", "VARIANTS", "check_field",
           "choice", "gan_augment_for", "needs_gmi_prior", "optional_count"]

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
    returned as it is. The one place "auto" is decided: :class:`~mi_art.evaluations.experiment_config.ExperimentConfig`
    calls it when it is made, so cache keys and grid cell ids hold the resolved value."""
    if gan_augment != "auto":
        return gan_augment
    return "flip" if normalise_dataset_name(dataset) in MIRROR_SAFE_DATASETS else "none"

def needs_gmi_prior(config: Any) -> bool:
    """Whether a run of ``config`` (an :class:`~mi_art.evaluations.experiment_config.ExperimentConfig`) trains or loads
    the public (GMI) prior (:data:`mi_art.priors.PUBLIC_PRIOR`): when its attack searches it (GMI, VMI, BREP-MI)
    or a prior started from it (KEDMI with ``kedmi_init="gmi"``, PLG-MI), and when surrogates distilled on
    "public+prior" learn on its samples."""
    spec = get_attack(config.attack)
    if PUBLIC_PRIOR in priors_needed(spec.prior, config):
        return True
    surrogates = spec.variants and ("ma" in parse_variant(config.variant) or config.access != "white-box")
    return surrogates and bool(config.surrogate_archs) and config.surrogate_data == "public+prior"


def _check_choice(name: str, value: Any, *, choices: Tuple[str, ...]) -> Any:
    return check_choice(name, value, choices)


class RenamedChoice(click.Choice):
    """A ``click.Choice`` that also takes the earlier names of ``renames`` (not listed in ``--help``), each as its
    name now, reported as renamed."""

    def __init__(self, choices: Sequence[str], renames: Renames) -> None:
        super().__init__(list(choices))
        self.renames = renames

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        if value in self.renames:
            flag = param.opts[0] if param is not None and param.opts else ""
            value = self.renames.new(value, flag)
        return super().convert(value, param, ctx)


def choice(choices: Sequence[str], renames: Optional[Renames] = None) -> Rule:
    """One of ``choices`` (on the command line: a ``click.Choice``), or one of their earlier names (``renames``)."""
    cli = click.Choice(list(choices)) if renames is None else RenamedChoice(choices, renames)
    return Rule(partial(_check_choice, choices=tuple(choices)), cli, renames)


def optional_count(hint: str) -> Rule:
    """A count, or None (``hint`` says what None means)."""
    return Rule(partial(check_optional_count, hint=hint), COUNT.cli)


def _check_names(name: str, value: Any, *, choices: Tuple[str, ...]) -> list:
    """A list of names among ``choices`` (an empty list is allowed: no surrogate)."""
    for i, item in enumerate(check_list(name, value, item="name")):
        check_choice(f"{name}[{i}]", item, choices)
    return list(value)


def _independent_judge(name: str, value: Any) -> str:
    """One of :data:`~mi_art.evaluations.independent.INDEPENDENT_JUDGES`; "dlib" needs its weights installed."""
    from .independent import dlib_weights_installed

    value = check_choice(name, value, INDEPENDENT_JUDGES)
    if value == "dlib":
        dlib_weights_installed(required=True)
    return value


def _id_weight(name: str, value: Any) -> Any:
    return None if value is None else check_positive(name, value, hint=" (None: each attack's own, GMI's 100)")


def _search_views(name: str, value: Any) -> Any:
    return None if value is None else check_int(
        name, value, low=0, hint=" (0: the images as generated; None: each attack's own, "
        f"or {ALIGN_VIEWS} under '+align', which needs >= 2)")


# The rules the config's fields declare (evaluations/experiment.py); each refuses a value with a ValueError
# naming the field, the value and what is valid, and carries the click type the commands read it with.
#: A count (epochs, steps, iterations, sizes): an integer >= 1.
COUNT = Rule(check_count, click.IntRange(min=1))
#: Epochs of public pre-training: an integer >= 0 (0: from scratch).
PRETRAIN_EPOCHS = Rule(partial(check_int, low=0, hint=" (0 trains from scratch)"), click.IntRange(min=0))
#: A seed: an integer >= 0.
SEED = Rule(check_seed, click.IntRange(min=0))
#: On or off.
FLAG = Rule(check_bool, bool)
#: A share in [0, 1].
SHARE = Rule(partial(check_number, low=0, high=1), click.FloatRange(0, 1))
#: An architecture's name (an earlier one is taken as its name now).
ARCHITECTURE = choice(sorted(ARCHITECTURES), RENAMED_ARCHITECTURES)
#: An attack's name, checked against the registry at each use (attacks registered later count).
ATTACK = Rule(lambda name, value: check_choice(name, value, ATTACK_NAMES), click.Choice(list(ATTACK_NAMES)))
#: A variant's name, checked against :data:`mi_art.variants.VARIANTS` at each use (improvements registered later
#: count).
VARIANT = Rule(lambda name, value: check_choice(name, value, VARIANTS), click.Choice(list(VARIANTS)))
#: A list of architectures (empty: none).
ARCHITECTURE_LIST = Rule(partial(_check_names, choices=tuple(sorted(ARCHITECTURES))), ARCHITECTURE.cli,
                         RENAMED_ARCHITECTURES)
#: Random views of each image (0: none; None: each attack's own).
SEARCH_VIEWS = Rule(_search_views, click.IntRange(min=0))
#: An optional weight > 0 (None: the attack's own).
ID_WEIGHT = Rule(_id_weight, click.FloatRange(min=0, min_open=True))
#: An optional layer name (None: the model's last nn.Linear).
FEATURE_LAYER = Rule(lambda name, value: check_feature_layer(value, name), click.STRING)
INDEPENDENT_JUDGE = Rule(_independent_judge, click.Choice(INDEPENDENT_JUDGES))


def __getattr__(name: str) -> Any:
    """:data:`PARAMETER_RULES` (field -> rule) and :data:`CHECKED_ELSEWHERE` (field -> what checks it), derived
    from the config's declarations (:data:`mi_art.evaluations.experiment_config.SETTINGS`)."""
    if name in ("PARAMETER_RULES", "CHECKED_ELSEWHERE"):
        from .experiment_config import CHECKED_ELSEWHERE, PARAMETER_RULES

        return {"PARAMETER_RULES": PARAMETER_RULES, "CHECKED_ELSEWHERE": CHECKED_ELSEWHERE}[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_field(name: str, field: str, value: Any) -> Any:
    """Check ``value`` for the config field ``field`` by its rule; ``name`` is what the message calls it
    (the field, or where a grid file sets it)."""
    from .experiment_config import PARAMETER_RULES

    return PARAMETER_RULES[field](name, value)
