"""The one shape of the library's registries of named parts (attacks, priors): a dict of entries by name, a
``register`` that refuses a taken name unless told to replace it, and a lookup whose error names the valid
keys, as Opacus's ``register_grad_sampler`` and :mod:`mi_art.defenses.registry` do. Each entry has a
``name``; the registry is a read-only mapping (``registry[name]``, ``name in registry``, iteration in
registration order), read at each use, so an entry registered after import is everywhere at once."""
from __future__ import annotations

from typing import Callable, Dict, Generic, Iterator, Mapping, Optional, Sequence, TypeVar

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Mapping[str, T], Generic[T]):
    """Entries of type ``entry_type`` by their ``name``; ``what`` is what an entry is called in messages
    ("attack", "prior"). ``check(entry)`` raises a ValueError for an entry that cannot be registered."""

    def __init__(self, what: str, entry_type: type, check: Optional[Callable[[T], None]] = None) -> None:
        self.what = what
        self.entry_type = entry_type
        self._check = check
        self._entries: Dict[str, T] = {}

    def register(self, entry: T, *, replace: bool = False) -> T:
        """Make ``entry`` known by its ``name``; returns it. A name already taken is refused unless
        ``replace=True`` (the entry then keeps its place in the order)."""
        if not isinstance(entry, self.entry_type):
            raise ValueError(f"{_article(self.what)} {self.what} entry must be a {self.entry_type.__module__}."
                             f"{self.entry_type.__name__}, got {type(entry).__name__}")
        if self._check is not None:  # first: its message says what this registry's names may be
            self._check(entry)
        name = getattr(entry, "name", None)
        if not isinstance(name, str) or not name or name != name.strip().lower() or " " in name:
            raise ValueError(f"{_article(self.what)} {self.what}'s name must be a non-empty lower-case string without spaces, got {name!r}")
        if name in self._entries and not replace and self._entries[name] is not entry:
            raise ValueError(f"{_article(self.what)} {self.what} named {name!r} is already registered; pick another name, or pass "
                             "replace=True")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Forget the entry ``name`` (tests and plug-ins that register one for a while)."""
        self._entries.pop(self.lookup(name).name)  # type: ignore[attr-defined]

    def lookup(self, name: str) -> T:
        """The entry ``name``; a ValueError naming the valid names otherwise."""
        if not isinstance(name, str) or name not in self._entries:
            raise ValueError(f"unknown {self.what} {name!r}; valid {self.what}s: {', '.join(self._entries)}")
        return self._entries[name]

    def __getitem__(self, name: str) -> T:
        if name not in self._entries:
            raise KeyError(f"unknown {self.what} {name!r}; valid {self.what}s: {', '.join(self._entries)}")
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self._entries)})"

    @property
    def names(self) -> Sequence[str]:
        """The registered names, read at each use (a live sequence: an entry registered later is in it)."""
        return _Names(self._entries)


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


class _Names(Sequence):
    """The keys of a registry's dict, read at each use."""

    def __init__(self, entries: Dict[str, object]) -> None:
        self._entries = entries

    def __getitem__(self, index):  # type: ignore[override]
        return tuple(self._entries)[index]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return repr(tuple(self._entries))
