"""Every defense by name: :func:`get_defense`, :func:`register_defense`, :func:`check_defense_params` and
:data:`DEFENSES`, the live sequence of names. Adding a defense touches its own module and one line of
:data:`_BUILT_IN` (or one :func:`register_defense` call from user code)."""
from __future__ import annotations

from typing import Any, Dict, Iterator, Optional, Sequence

from mi_art.renames import Renames

from .base import Defense, Undefended
from .bido import BiDO
from .dp import DPSGD
from .label_smoothing import NegativeLabelSmoothing
from .mid import MID
from .rolss import RoLSS
from .postprocessing import POSTPROCESSORS, OutputPostprocessor
from .transfer import TransferLearning
from .trap import TrapMID

_REGISTRY: Dict[str, Defense] = {}
#: Earlier names of defenses, still accepted wherever a defense is named (reported as renamed); grid cells' ids
#: and targets' cache keys keep them (:meth:`~mi_art.renames.Renames.old`).
RENAMED_DEFENSES = Renames("defense", {"nls": "negative-label-smoothing"})


def register_defense(defense: Defense, *, replace: bool = False) -> Defense:
    """Make ``defense`` known by its ``name`` to :func:`mi_art.defenses.train_defended_target`, the grid
    and the CLI. Returns it. A name already taken is refused unless ``replace=True``."""
    if not isinstance(defense, Defense):
        raise ValueError(f"defense must be an instance of mi_art.defenses.Defense, got {type(defense).__name__}")
    name = defense.name
    if not isinstance(name, str) or not name or name != name.strip().lower() or "_" in name:
        raise ValueError(f"a defense's name must be a non-empty lower-case string without spaces or underscores "
                         f"(use dashes), got {name!r}")
    if name in RENAMED_DEFENSES:  # get_defense reads it as the defense's name now
        raise ValueError(f"{name!r} is the earlier name of the defense {RENAMED_DEFENSES.table[name]!r}; pick another "
                         "name")
    if name in _REGISTRY and not replace and _REGISTRY[name] is not defense:
        raise ValueError(f"a defense named {name!r} is already registered ({_REGISTRY[name]!r}); pick another "
                         "name, or pass replace=True")
    _REGISTRY[name] = defense
    return defense


def unregister_defense(name: str) -> None:
    """Forget the defense ``name`` (tests and plug-ins that register one for a while)."""
    _REGISTRY.pop(get_defense(name).name)


def get_defense(defense: Any) -> Defense:
    """The registered :class:`Defense` of that name (case and ``_``/``-`` forgiven; an earlier name of
    :data:`RENAMED_DEFENSES` is reported as renamed), or the object itself when it is a registered defense;
    ValueError listing the valid names otherwise."""
    if isinstance(defense, Defense) and _REGISTRY.get(defense.name) is defense:
        return defense
    name = RENAMED_DEFENSES.new(defense_name(defense)) if isinstance(defense, str) else None
    if name not in _REGISTRY:
        raise ValueError(f"unknown defense {defense!r}; valid names: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def defense_name(name: str) -> str:
    """``name`` in the form of the registry's names (case and surrounding spaces dropped, "-" for "_"), an earlier
    name left as it is (:data:`RENAMED_DEFENSES` resolves it)."""
    return name.strip().lower().replace("_", "-")


def check_defense_params(defense: Any, params: Optional[Dict[str, Any]] = None, *,
                         n_train: int = 1000) -> Dict[str, Any]:
    """The parameters of ``defense`` checked (names, types, ranges) with its defaults filled in, as
    :func:`mi_art.defenses.train_defended_target` would check them; ``n_train`` stands for the number of
    private training images where a parameter depends on it (DP's default delta, and delta <= 1/N)."""
    if params is not None and not isinstance(params, dict):
        raise ValueError(f"the parameters of defense {defense!r} must be a dict of name -> value, got "
                         f"{type(params).__name__}")
    return get_defense(defense).check_params(dict(params or {}), max(1, int(n_train)))


def check_defense_architecture(defense: Any, architecture: str) -> None:
    """The architecture name ``architecture`` refused when ``defense`` cannot apply to it (RoLSS: only residual
    networks), before anything is trained: a ValueError naming both and the architectures it applies to."""
    get_defense(defense).check_architecture(architecture)


def defense_defaults(defense: Any) -> Dict[str, Any]:
    """The parameters of ``defense`` and their defaults (``None``: derived, see the defense's module)."""
    return dict(get_defense(defense).defaults)


class _Names(Sequence):
    """The registered names, read at each use (a defense registered later is in it)."""

    def __getitem__(self, index):  # type: ignore[override]
        return tuple(_REGISTRY)[index]

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(_REGISTRY))

    def __contains__(self, name: object) -> bool:
        return name in _REGISTRY

    def __repr__(self) -> str:
        return repr(tuple(_REGISTRY))


#: Every defense name :func:`mi_art.defenses.train_defended_target` accepts, in registration order.
DEFENSES: Sequence[str] = _Names()

_BUILT_IN = (Undefended(), DPSGD(), MID(), BiDO(), NegativeLabelSmoothing(), TransferLearning(), TrapMID(), RoLSS(),
             *(OutputPostprocessor(name) for name in POSTPROCESSORS))
for _defense in _BUILT_IN:
    register_defense(_defense)

__all__ = ["DEFENSES", "RENAMED_DEFENSES", "check_defense_architecture", "check_defense_params", "defense_defaults",
           "defense_name", "get_defense", "register_defense", "unregister_defense"]
