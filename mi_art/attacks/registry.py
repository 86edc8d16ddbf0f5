"""Every attack by name (:data:`ATTACK_SPECS`, :func:`register_attack`, :func:`get_attack`): what the pipeline
(:func:`~mi_art.evaluations.experiment.run_attack`, the CLI, the grid files) needs to know of it, declared in
its entry rather than special-cased by name: the prior it searches (:data:`mi_art.priors.PRIORS`, or none),
whether it takes a discriminator, whether it takes the variants' improvements and surrogates, the access levels
it runs under, its iteration budget's config field and how it is run.

A GAN attack (a :class:`~mi_art.attacks.base.GANInversionAttack` subclass) is one line,
``register_attack(AttackSpec.of(name, cls))``, or ``ATTACKS[name] = cls``: :data:`ATTACKS` is the registry's
view of those attacks' classes. An attack of another shape gives its own ``run``
(:mod:`mi_art.attacks.runs`: ART's MIFace, BREP-MI)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, MutableMapping, Optional, Sequence, Tuple, Type

import numpy as np

from ..access import ACCESS_LEVELS
from ..registry import Registry
from .base import GANInversionAttack

__all__ = ["ATTACKS", "ATTACK_NAMES", "ATTACK_SPECS", "AttackJob", "AttackOutcome", "AttackSpec", "get_attack",
           "register_attack", "unregister_attack"]


@dataclass
class AttackJob:
    """What an attack's ``run`` is given: the workbench (``bench``: its ``config``, ``data``, ``device``,
    ``stages``, ``api(target)``, ``prior(name)``, ``prior_budget(name)``), the target's estimator seen as a
    module (``target_view``, an :class:`~mi_art.utils.EstimatorModule`), the target on [0, 1] images
    (``unit_target``), the identities, the attack's seed and its stage line (``stage``: ``(what, budget)`` of
    :meth:`~mi_art.evaluations.stages.StageLog.stage`)."""

    bench: Any
    target_view: Any
    unit_target: Any
    identities: np.ndarray
    seed: int
    stage: Tuple[str, str]


@dataclass
class AttackOutcome:
    """What a run returns: the reconstructions (in the target estimator's input space), their labels, the
    index of each among its identity's reconstructions, and what it adds to the result record."""

    reconstructions: np.ndarray
    labels: np.ndarray
    reconstruction_index: np.ndarray
    record: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AttackSpec:
    """One attack.

    :param name: Its name (``mi-art attack --attack NAME``, grid files).
    :param title: Its name in stage lines, tables and messages.
    :param prior: The prior it searches (a key of :data:`mi_art.priors.PRIORS`), or None.
    :param needs_discriminator: Whether it takes the prior's discriminator.
    :param variants: Whether it takes the variants' improvements (LOM, MA, align) and the surrogates; False:
        "baseline" only.
    :param access_levels: The access levels (:data:`mi_art.access.ACCESS_LEVELS`) it runs under.
    :param access_note: Why it runs under no other (the refusal's words).
    :param attack_class: The attack's class; for a GAN attack, what the pipeline's latent search builds.
    :param run: ``run(job) -> AttackOutcome`` (:class:`AttackJob`); None: the pipeline's GAN attack run with
        ``attack_class`` (its variant's surrogates, p_reg and prior).
    :param iterations_field: The config field holding its iteration budget.
    :param describe: ``describe(config, variant, n_identities)``: its stage line's budget; None: the GAN
        attacks' form.
    :param least_queries: ``(queries, what they pay for)``: what it asks of the target before anything else,
        refused up front when ``max_queries`` is below it.
    """

    name: str
    title: str
    prior: Optional[str] = None
    needs_discriminator: bool = False
    variants: bool = True
    access_levels: Tuple[str, ...] = ACCESS_LEVELS
    access_note: str = ""
    attack_class: Optional[type] = None
    run: Optional[Callable[[AttackJob], AttackOutcome]] = None
    iterations_field: str = "iterations"
    describe: Optional[Callable[[Any, str, int], str]] = None
    least_queries: Optional[Tuple[int, str]] = None

    @classmethod
    def of(cls, name: str, attack_class: Type[GANInversionAttack]) -> "AttackSpec":
        """The entry of a GAN attack class (a :class:`~mi_art.attacks.base.GANInversionAttack` subclass, or a
        class with its ``prior`` and constructor): its prior, discriminator and title are the class's own."""
        if not isinstance(attack_class, type) or not isinstance(getattr(attack_class, "prior", None), str):
            raise ValueError(f"attack {name!r} must be a mi_art.attacks.GANInversionAttack subclass naming its prior, "
                             f"got {attack_class!r}")
        return cls(name, getattr(attack_class, "title", "") or attack_class.__name__, prior=attack_class.prior,
                   needs_discriminator=getattr(attack_class, "needs_discriminator", True), attack_class=attack_class)

    @property
    def gan_search(self) -> bool:
        """Whether the pipeline's GAN attack run runs it (no ``run`` of its own)."""
        return self.run is None


def _check_spec(spec: AttackSpec) -> None:
    if spec.run is None and spec.attack_class is None:
        raise ValueError(f"attack {spec.name!r} needs a run or a GAN attack class (attack_class)")
    if spec.run is None and spec.prior is None:
        raise ValueError(f"GAN attack {spec.name!r} must name the prior it searches (a key of mi_art.priors.PRIORS)")
    if not spec.access_levels or any(level not in ACCESS_LEVELS for level in spec.access_levels):
        raise ValueError(f"attack {spec.name!r}: access_levels must be among {', '.join(ACCESS_LEVELS)}, got "
                         f"{spec.access_levels!r}")


#: Every attack by name, in registration order.
ATTACK_SPECS: Registry[AttackSpec] = Registry("attack", AttackSpec, _check_spec)
#: Every attack's name, read at each use (``mi-art attack --attack`` choices, grid files).
ATTACK_NAMES: Sequence[str] = ATTACK_SPECS.names


def register_attack(spec: AttackSpec, *, replace: bool = False) -> AttackSpec:
    """Make the attack ``spec`` known by its name to ``run_attack``, the CLI and the grid files; returns it."""
    return ATTACK_SPECS.register(spec, replace=replace)


def unregister_attack(name: str) -> None:
    """Forget the attack ``name``."""
    ATTACK_SPECS.unregister(name)


def get_attack(name: str) -> AttackSpec:
    """The registered attack ``name``; a ValueError naming the valid ones otherwise."""
    return ATTACK_SPECS.lookup(name)


class _GANAttacks(MutableMapping):
    """The GAN attacks' classes by name, a view of :data:`ATTACK_SPECS`: setting ``ATTACKS[name] = cls``
    registers (or replaces) ``AttackSpec.of(name, cls)``."""

    def _gan(self) -> Dict[str, AttackSpec]:
        return {name: spec for name, spec in ATTACK_SPECS.items() if spec.gan_search}

    def __getitem__(self, name: str) -> Type[GANInversionAttack]:
        spec = self._gan().get(name)
        if spec is None:
            raise KeyError(f"unknown GAN attack {name!r}; valid GAN attacks: {', '.join(self._gan())}")
        return spec.attack_class  # type: ignore[return-value]

    def __setitem__(self, name: str, attack_class: Type[GANInversionAttack]) -> None:
        register_attack(AttackSpec.of(name, attack_class), replace=True)

    def __delitem__(self, name: str) -> None:
        if name not in self._gan():
            raise KeyError(name)
        unregister_attack(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._gan())

    def __len__(self) -> int:
        return len(self._gan())

    def __repr__(self) -> str:
        return repr({name: spec.attack_class for name, spec in self._gan().items()})


#: The GAN attacks by name (``mi-art attack --attack NAME``): adding one is its module and a line
#: ``ATTACKS[name] = cls`` (or ``register_attack(AttackSpec.of(name, cls))``).
ATTACKS: MutableMapping[str, Type[GANInversionAttack]] = _GANAttacks()
