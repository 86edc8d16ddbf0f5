"""Attack variants by name: what "baseline", "lom", "ma", "lomma" and their "+align" forms mean as the keyword
arguments of a GAN attack (:class:`~mi_art.attacks.base.GANInversionAttack`), in one call::

    attack = mi_art.GMI(classifier, generator, critic, iterations=300,
                        **mi_art.attack_kwargs("lomma+align", p_reg=p_reg, surrogates=surrogates))

A variant is a set of **improvements** (:data:`IMPROVEMENTS`, :func:`register_improvement`,
:func:`get_improvement`), each changing one part of the attack:

* ``"ma"`` (model set): model augmentation (Nguyen et al., CVPR 2023, https://arxiv.org/abs/2304.01669), the
  surrogates are inverted with the target;
* ``"lom"`` (identity loss): the logit loss with LOMMA's ``p_reg`` regulariser (same paper), and one regulariser
  per inverted surrogate when their references (``surrogate_p_reg``) are given;
* ``"align"`` (search): gradient alignment, the identity loss averaged over :data:`ALIGN_VIEWS` random geometric
  views of each image at every step (AlignMI's training-free variant, TAA; Peng et al., NeurIPS 2025,
  https://arxiv.org/abs/2509.20177; :func:`mi_art.views.alignment_views`).

A name joins improvements with "+" in registration order, "lom+ma" spelt "lomma" (the paper's name), "baseline"
for none: :data:`VARIANTS` lists them all. Below white-box access the target is not inverted: the first surrogate
(distilled from its answers) stands in for it whatever the variant, and ``"ma"`` adds the others.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, Iterator, List, Optional, Sequence, Tuple

from .access import ACCESS_LEVELS
from .registry import Registry
from .validation import check_choice, check_int, check_list

__all__ = ["ALIGN_VIEWS", "IMPROVEMENTS", "Improvement", "Inputs", "PARTS", "VARIANTS", "Variant", "attack_kwargs",
           "get_improvement", "parse_variant", "register_improvement", "unregister_improvement"]

#: Random views per step of the "align" improvement: the K of AlignMI's TAA (its code averages 30).
ALIGN_VIEWS = 30
#: The parts of an attack an improvement changes, in the order their improvements are applied: which models are
#: inverted, then the loss on them, then how the search uses it.
PARTS = ("model set", "identity loss", "search")
#: Names standing for several improvements: the paper's "lomma" is "lom" and "ma".
ALIASES: Dict[str, Tuple[str, ...]] = {"lomma": ("lom", "ma")}
BASELINE = "baseline"


@dataclass(frozen=True)
class Inputs:
    """What a variant's improvements are made of (the arguments of :func:`attack_kwargs`)."""

    variant: str
    access: str
    p_reg: Any
    surrogates: Optional[List[Any]]
    surrogate_p_reg: Optional[List[Any]]
    views: Optional[int]

    @property
    def first_regularised(self) -> int:
        """The index of the first surrogate ``surrogate_p_reg`` holds a reference for: below white-box,
        surrogates[0] stands in for the target and ``p_reg`` is its reference."""
        return 0 if self.access == "white-box" else 1


@dataclass(frozen=True)
class Improvement:
    """One improvement: its ``name`` in variant names, the ``part`` of the attack it changes (one of
    :data:`PARTS`), a one-line ``summary``, and ``apply(kwargs, inputs)``, which updates the attack's keyword
    arguments in place (``inputs``: an :class:`Inputs`) and raises a ValueError naming what it lacks."""

    name: str
    part: str
    summary: str
    apply: Callable[[Dict[str, Any], Inputs], None]


def _check_improvement(improvement: Improvement) -> None:
    name = improvement.name
    if not isinstance(name, str) or not name.isalnum() or name != name.lower() or name in (BASELINE, *ALIASES):
        raise ValueError(f"an improvement's name must be a lower-case word of letters and digits, other than "
                         f"{BASELINE!r} and {', '.join(map(repr, ALIASES))}, got {name!r}")
    check_choice("improvement.part", improvement.part, PARTS)


_REGISTRY: Registry[Improvement] = Registry("improvement", Improvement, check=_check_improvement)


def register_improvement(improvement: Improvement, *, replace: bool = False) -> Improvement:
    """Make ``improvement`` part of the variant names (:data:`VARIANTS`, :func:`parse_variant`,
    :func:`attack_kwargs`); returns it. A name already taken is refused unless ``replace=True``."""
    return _REGISTRY.register(improvement, replace=replace)


def unregister_improvement(name: str) -> None:
    """Forget the improvement ``name`` (tests and plug-ins that register one for a while)."""
    _REGISTRY.unregister(name)


def get_improvement(name: str) -> Improvement:
    """The registered improvement ``name``; a ValueError listing the valid names otherwise."""
    return _REGISTRY.lookup(name)


#: The registered improvements' names, in registration order (the order they take in variant names).
IMPROVEMENTS: Sequence[str] = _REGISTRY.names


@dataclass(frozen=True)
class Variant:
    """A set of registered improvements; :attr:`name` is its one spelling. ``"lom" in variant`` asks whether
    it has one."""

    improvements: FrozenSet[str]

    @property
    def name(self) -> str:
        if not self.improvements:
            return BASELINE
        tokens = [i for i in _REGISTRY if i in self.improvements]
        for alias, parts in ALIASES.items():
            if all(part in tokens for part in parts):
                at = tokens.index(parts[0])
                tokens = [t for t in tokens if t not in parts]
                tokens.insert(at, alias)
        return "+".join(tokens)

    def __contains__(self, improvement: object) -> bool:
        return improvement in self.improvements

    def __str__(self) -> str:
        return self.name


def _all_variants() -> List[str]:
    names = list(_REGISTRY)
    subsets = [frozenset(n for bit, n in enumerate(names) if mask >> bit & 1) for mask in range(2 ** len(names))]
    return [Variant(s).name for s in subsets]


class _Variants(Sequence):
    """Every variant name, read at each use (an improvement registered later adds its own)."""

    def __getitem__(self, index):  # type: ignore[override]
        return tuple(_all_variants())[index]

    def __len__(self) -> int:
        return 2 ** len(_REGISTRY)

    def __iter__(self) -> Iterator[str]:
        return iter(_all_variants())

    def __contains__(self, name: object) -> bool:
        try:
            parse_variant(name)
        except ValueError:
            return False
        return True

    def __repr__(self) -> str:
        return repr(tuple(_all_variants()))


#: Every variant name: "baseline", "lom", "ma", "lomma", "align", "lom+align", "ma+align", "lomma+align" (and
#: those of improvements registered later).
VARIANTS: Sequence[str] = _Variants()


def parse_variant(variant: Any) -> Variant:
    """The :class:`Variant` a name means (a :class:`Variant` is returned as it is). One ValueError, listing the
    valid names, for anything else: an unknown improvement, one named twice, "baseline" with others, or
    improvements in another order than :data:`VARIANTS` spells them."""
    if isinstance(variant, Variant):
        return variant
    valid = f"valid variants: {', '.join(VARIANTS)}"
    if not isinstance(variant, str):
        raise ValueError(f"variant must be a name, got {type(variant).__name__} {variant!r:.80}; {valid}")
    if variant == BASELINE:
        return Variant(frozenset())
    tokens = variant.split("+")
    if BASELINE in tokens:
        raise ValueError(f"variant {variant!r}: {BASELINE!r} is the variant without improvements, it takes none; "
                         f"{valid}")
    named: List[str] = [i for token in tokens for i in ALIASES.get(token, (token,))]
    unknown = [t for t in tokens if t not in ALIASES and t not in _REGISTRY]
    if unknown:
        raise ValueError(f"unknown variant {variant!r}: {', '.join(map(repr, unknown))} is not an improvement "
                         f"({', '.join(_REGISTRY)}); {valid}")
    twice = sorted({i for i in named if named.count(i) > 1})
    if twice:
        raise ValueError(f"variant {variant!r} names {', '.join(map(repr, twice))} twice; {valid}")
    parsed = Variant(frozenset(named))
    if parsed.name != variant:
        raise ValueError(f"variant {variant!r} is spelt {parsed.name!r}; {valid}")
    return parsed


def attack_kwargs(variant: Any, *, access: str = "white-box", p_reg: Any = None,
                  surrogates: Optional[Sequence[Any]] = None, surrogate_p_reg: Optional[Sequence[Any]] = None,
                  views: Optional[int] = None) -> Dict[str, Any]:
    """The keyword arguments of a GAN attack (:data:`mi_art.attacks.ATTACKS`) that make it ``variant`` (a name
    of :data:`VARIANTS` or a :class:`Variant`), from what has been made for it; what the variant does not use is
    left out, so one set of inputs serves every variant.

    :param access: What the attack may ask of the target (:data:`mi_art.access.ACCESS_LEVELS`). Below white-box,
        ``surrogates[0]`` (distilled from the target's answers) is inverted in the target's place.
    :param p_reg: The target's mean public feature (:func:`mi_art.estimate_p_reg`; below white-box,
        ``surrogates[0]``'s): needed by "lom".
    :param surrogates: Models distilled from the target (:func:`mi_art.distill_surrogate`): all inverted under
        "ma"; otherwise none at white-box, ``surrogates[:1]`` below. Needed by "ma" and below white-box (an empty
        list is allowed under "ma" at white-box: every surrogate left out, the target alone).
    :param surrogate_p_reg: One mean public feature per surrogate (after ``surrogates[0]`` below white-box), each
        surrogate's own regulariser under "lom" with "ma"; None: the target's regulariser alone (the paper's form).
    :param views: Random views per search step: under "align" its number (None: :data:`ALIGN_VIEWS`); without
        it, None keeps the attack's own (PLG-MI 2, the others 0).
    :returns: ``access``, ``p_reg``, ``surrogates`` and ``surrogate_p_reg`` always; ``identity_loss`` under "lom";
        ``views`` when ``views`` is given or under "align", which sets ``view_transform`` too.
    """
    parsed = parse_variant(variant)
    check_choice("access", access, ACCESS_LEVELS)
    if views is not None:
        check_int("views", views, low=0, hint=" (0: the images as generated)")
    inputs = Inputs(variant=parsed.name, access=access, p_reg=p_reg,
                    surrogates=None if surrogates is None else check_list("surrogates", surrogates, item="model"),
                    surrogate_p_reg=None if surrogate_p_reg is None else check_list(
                        "surrogate_p_reg", surrogate_p_reg, item="feature reference"), views=views)
    if access != "white-box" and not inputs.surrogates:
        raise ValueError(f"variant {parsed.name!r} at access={access!r} needs surrogates=[...], at least one: it "
                         "inverts surrogates distilled from the target's answers (mi_art.distill_surrogate with a "
                         f"mi_art.PredictOracle), the first in the target's place; got {surrogates!r:.80}")
    kwargs: Dict[str, Any] = {"p_reg": None, "surrogates": [] if access == "white-box" else inputs.surrogates[:1],
                              "surrogate_p_reg": None, "access": access}
    if views is not None:
        kwargs["views"] = views
    improvements = [_REGISTRY[name] for name in _REGISTRY if name in parsed]
    for part in PARTS:
        for improvement in improvements:
            if improvement.part == part:
                improvement.apply(kwargs, inputs)
    return kwargs


def _require(inputs: Inputs, name: str, improvement: str, why: str) -> Any:
    value = getattr(inputs, name)
    if value is None:
        raise ValueError(f"variant {inputs.variant!r} needs {name} (for {improvement!r}): {why}")
    return value


def _model_augmentation(kwargs: Dict[str, Any], inputs: Inputs) -> None:
    kwargs["surrogates"] = _require(inputs, "surrogates", "ma", "model augmentation inverts them with the "
                                    "target (mi_art.distill_surrogate)")


def _logit_loss(kwargs: Dict[str, Any], inputs: Inputs) -> None:
    kwargs["p_reg"] = _require(inputs, "p_reg", "lom", "the logit loss's regulariser pulls the feature to it "
                               "(mi_art.estimate_p_reg of the target; below white-box, of surrogates[0])")
    kwargs["identity_loss"] = "logit"
    # the surrogates' own references go with them: left out where no surrogate is inverted beside the target (or,
    # below white-box, beside surrogates[0], its stand-in), i.e. without "ma"
    regularised = kwargs["surrogates"][inputs.first_regularised:]
    if inputs.surrogate_p_reg is not None and (regularised or not inputs.surrogate_p_reg):
        kwargs["surrogate_p_reg"] = list(inputs.surrogate_p_reg)


def _gradient_alignment(kwargs: Dict[str, Any], inputs: Inputs) -> None:
    kwargs["views"] = ALIGN_VIEWS if inputs.views is None else inputs.views
    kwargs["view_transform"] = "alignmi"


for _improvement in (
        Improvement("lom", "identity loss", "the logit loss with LOMMA's p_reg regulariser", _logit_loss),
        Improvement("ma", "model set", "model augmentation: the surrogates inverted with the target",
                    _model_augmentation),
        Improvement("align", "search", f"gradient alignment: the identity loss averaged over {ALIGN_VIEWS} random "
                                       "geometric views (AlignMI's TAA)", _gradient_alignment)):
    register_improvement(_improvement)
