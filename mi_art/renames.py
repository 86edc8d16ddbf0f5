"""Earlier names that still work. Each registry or set of settings keeps one table of the names it renamed
(earlier name -> name now, a :class:`Renames`), and every place that reads such a name resolves it through that
table: an earlier name is accepted under its name now and reported as renamed, once (a :class:`RenamedWarning`;
Python shows it once per line that gives the name, and the command line as a one-line ``note:``). An earlier
name given beside its new one with another value is refused, naming both.

What is stored under a name -- a grid cell's id, an artifact's cache key -- keeps the earlier spelling
(:meth:`Renames.old`), so that a rename changes no id and no key: finished cells are not rerun, cached models are
found.

>>> sizes = Renames("setting", {"width": "channels"})
>>> sizes.old("channels"), sizes.new("depth")
('width', 'depth')
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Set, Type

from .validation import user_stacklevel

__all__ = ["RenamedWarning", "Renames", "renames_reported_by"]


#: Where earlier names are reported instead of warnings while :func:`renames_reported_by` holds.
_REPORTER: ContextVar[Optional[Callable[[str], None]]] = ContextVar("mi_art_renames_reporter", default=None)


@contextmanager
def renames_reported_by(reporter: Callable[[str], None]) -> Iterator[None]:
    """Within the block, each earlier name is reported by calling ``reporter`` with its one line (the command
    line's ``note:``), once per line of text, instead of as a warning."""
    said: Set[str] = set()

    def once(note: str) -> None:
        if note not in said:
            said.add(note)
            reporter(note)

    token = _REPORTER.set(once)
    try:
        yield
    finally:
        _REPORTER.reset(token)


class RenamedWarning(FutureWarning):
    """An earlier name was given: it still works, under its name now. A ``FutureWarning``, which Python shows to
    users by default (once per line of their code that gives the name)."""


def _quoted(name: str) -> str:
    return repr(name)


@dataclass(frozen=True, eq=False)  # compared and hashed as itself: a rule holding one stays hashable
class Renames:
    """The names one registry (architectures, defenses) or one set of settings renamed.

    :param what: What the names are, for the messages ("architecture", "defense", "setting").
    :param table: Earlier name -> its name now.
    """

    what: str
    table: Mapping[str, str]
    _earlier: Dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        twice = sorted(set(self.table) & set(self.table.values()))
        if twice:
            raise ValueError(f"{', '.join(twice)}: a name is either an earlier name or a name now, not both")
        object.__setattr__(self, "_earlier", {new: old for old, new in self.table.items()})

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is an earlier name."""
        return isinstance(name, str) and name in self.table

    def note(self, old: str, where: str = "", shown: Callable[[str], str] = _quoted) -> str:
        """The one line that reports ``old`` as renamed (``shown`` writes a name as the user gave it: a command
        line's ``--prior-steps``)."""
        head = f"{where}: " if where else ""
        return (f"{head}the {self.what} {shown(old)} is now called {shown(self.table[old])}; the earlier name still "
                f"works")

    def report(self, old: str, where: str = "", shown: Callable[[str], str] = _quoted) -> None:
        """Say that ``old`` was given: to the reporter of :func:`renames_reported_by` when there is one, else as a
        :class:`RenamedWarning` naming the user's line."""
        note, reporter = self.note(old, where, shown), _REPORTER.get()
        if reporter is not None:
            reporter(note)
        else:
            warnings.warn(note, RenamedWarning, stacklevel=user_stacklevel())

    def new(self, name: Any, where: str = "", *, quiet: bool = False) -> Any:
        """``name`` under its name now, reported when it is an earlier one (not when ``quiet``: stored data the user
        did not write); any other value as it is (the registry's own check names an unknown one)."""
        if name not in self:
            return name
        if not quiet:
            self.report(name, where)
        return self.table[name]

    def old(self, name: Any) -> Any:
        """The earlier name of ``name`` when it was renamed (the spelling ids and cache keys keep), else ``name``
        as it is. Nothing is reported: the user gave no earlier name."""
        return self._earlier.get(name, name) if isinstance(name, str) else name

    def keys(self, given: Mapping[str, Any], where: str = "", *, error: Type[Exception] = ValueError,
             shown: Callable[[str], str] = _quoted, quiet: bool = False) -> Dict[str, Any]:
        """``given`` (keyword arguments, a grid's keys) with every earlier key under its name now, each reported
        (not when ``quiet``: stored data the user did not write). An earlier key beside its new one is accepted
        when both hold the same value, and refused with ``error``, naming both, when they differ."""
        head = f"{where}: " if where else ""
        for old, new in self.table.items():
            if old in given and new in given and given[old] != given[new]:
                raise error(f"{head}{shown(old)} ({given[old]!r}) and {shown(new)} ({given[new]!r}) are both given: "
                            f"{shown(old)} is the earlier name of the {self.what} {shown(new)}; give {shown(new)} only")
        out: Dict[str, Any] = {}
        for key, value in given.items():  # in the order given: a grid written back keeps its keys' order
            if key in self.table and not quiet:
                self.report(key, where, shown)
            out.setdefault(self.table.get(key, key), value)
        return out
