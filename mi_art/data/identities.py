"""Choosing the private and public identities, and splitting each private identity into train and test.

Splits are by identity: a private identity's images go to ``private_train`` and ``private_test``,
a public identity's images only to ``public``. The train/test shuffle of an identity depends on the
seed and its name alone, so adding or removing other identities never moves its images.
"""
from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..validation import is_int, is_number, repeated as repeated_values
from .checks import preview

IdentitySpec = Union[int, float, Sequence[str]]


def natural_key(name: str) -> Tuple[object, ...]:
    """Sort key that orders embedded numbers by value: ``s2`` before ``s10``."""
    parts = re.split(r"(\d+)", name)
    key = tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts))
    return key + (name,)


def check_disjoint(private: Sequence[str], public: Sequence[str]) -> None:
    """Raise ``ValueError`` if an identity is both private and public."""
    overlap = sorted(set(private) & set(public), key=natural_key)
    if overlap:
        raise ValueError(f"private and public identities overlap: {preview(overlap)}; "
                         "public data must come from disjoint identities")


def check_identity_spec(what: str, spec: Any, *, allow_none: bool = False) -> None:
    """Check the form of ``private``/``public`` without the data: a count >= 1, a ratio in (0, 1),
    or a non-empty list of distinct identity names (strings); None too where ``allow_none``."""
    if spec is None and allow_none:
        return
    if isinstance(spec, (str, bytes)):
        raise ValueError(f"{what} must be a list of identity names, not a single string {spec!r}: "
                         f"write [{spec!r}]")
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise ValueError(f"{what} identity list is empty: name at least one identity")
        for i, n in enumerate(spec):
            if not isinstance(n, str) or not n:
                raise ValueError(f"{what}[{i}] must be an identity name (a non-empty string), got {n!r}")
        duplicates = sorted(repeated_values(spec), key=natural_key)
        if duplicates:
            raise ValueError(f"{what} identity list repeats {preview(duplicates)}")
        return
    if is_int(spec) and int(spec) >= 1:
        return
    if is_number(spec) and not is_int(spec) and 0.0 < float(spec) < 1.0:
        return
    none = ", None for all the others" if allow_none else ""
    raise ValueError(f"{what} must be a count of at least 1 (an integer), a ratio in (0, 1) (a float) or a "
                     f"list of identity names{none}; got {spec!r}")


def _count(spec: Union[int, float], total: int) -> int:
    """A count, or a ratio of ``total`` rounded (at least 1)."""
    return int(spec) if is_int(spec) else max(1, int(float(spec) * total + 0.5))


def _explicit(spec: Sequence[str], available: Sequence[str], what: str) -> List[str]:
    known = set(available)
    missing = [n for n in spec if n not in known]
    if missing:
        raise ValueError(f"{what} identities not found in the dataset: {preview(missing)}")
    return list(spec)


def _take(candidates: Sequence[str], spec: IdentitySpec, total: int, what: str) -> List[str]:
    """Select identities from ``candidates`` by count, ratio of ``total`` or explicit names."""
    if isinstance(spec, (list, tuple)):
        return _explicit(spec, candidates, what)
    count = _count(spec, total)  # type: ignore[arg-type]
    if count > len(candidates):
        raise ValueError(f"{what} asks for {count} identities but only {len(candidates)} are available "
                         f"({total} identities in all)")
    return list(candidates[:count])


def select_identities(identities: Sequence[str], private: IdentitySpec,
                      public: Optional[IdentitySpec]) -> Tuple[List[str], List[str]]:
    """Choose the private and public identities among ``identities`` (already in order).

    A count or ratio takes identities in order; a public count or ratio is taken from the identities
    left after the private ones (a ratio is a share of *all* identities); None for ``public`` takes
    all of them.

    Returns
    -------
    tuple of list of str
        Private names, then public names (disjoint, both non-empty).
    """
    check_identity_spec("private", private)
    check_identity_spec("public", public, allow_none=True)
    total = len(identities)
    private_names = _take(identities, private, total, "private")
    if isinstance(public, (list, tuple)):
        public_names = _explicit(public, identities, "public")
        check_disjoint(private_names, public_names)
        return private_names, public_names
    chosen = set(private_names)
    rest = [n for n in identities if n not in chosen]
    if not rest:
        raise ValueError(f"no identities left for the public split: private uses all {total} identities")
    public_names = rest if public is None else _take(rest, public, total, "public")
    return private_names, public_names


def identity_rng(seed: int, identity: str, stream: int = 0) -> np.random.Generator:
    """Random generator that depends only on ``seed``, the identity's name and ``stream`` (0: the
    train/test shuffle; 1: the choice of images under a per-identity cap)."""
    key = [seed, zlib.crc32(identity.encode("utf-8"))]
    return np.random.default_rng(key + [stream] if stream else key)


#: How :func:`order_identities` sorts identities before counts and ratios take the first ones.
IDENTITY_ORDERS: Tuple[str, ...] = ("name", "images")


def order_identities(images: Mapping[str, Sequence[Path]], order: str) -> List[str]:
    """Identity names in ``order``: "name" keeps the mapping's (natural) order; "images" puts the
    identities with the most images first, ties in the mapping's order."""
    names = list(images)
    if order == "images":
        rank = {n: i for i, n in enumerate(names)}
        names.sort(key=lambda n: (-len(images[n]), rank[n]))
    return names


def cap_images(items: Sequence[Path], limit: Optional[int], seed: int, identity: str) -> List[Path]:
    """At most ``limit`` of one identity's images (None: all), a seeded choice that depends only on
    ``seed`` and the identity's name, kept in their original order."""
    if limit is None or len(items) <= limit:
        return list(items)
    keep = np.sort(identity_rng(seed, identity, stream=1).choice(len(items), limit, replace=False))
    return [items[i] for i in keep]


def split_items(items: Sequence[Path], test_fraction: float, rng: np.random.Generator,
                identity: str) -> Tuple[List[Path], List[Path]]:
    """Shuffle one identity's images and split them into (train, test), each non-empty."""
    n = len(items)
    if n < 2:
        raise ValueError(f"identity {identity!r} has {n} image(s); at least 2 are needed to split it into "
                         "private train and test")
    n_test = min(n - 1, max(1, int(test_fraction * n + 0.5)))
    order = rng.permutation(n)
    test = sorted(order[:n_test].tolist())
    train = sorted(order[n_test:].tolist())
    return [items[i] for i in train], [items[i] for i in test]


def split_identities(files: Sequence[Sequence[Path]], names: Sequence[str], test_fraction: float,
                     seed: int) -> Tuple[List[List[Path]], List[List[Path]]]:
    """Split every private identity's files: per-identity train lists, then test lists."""
    train_groups, test_groups = [], []
    for items, identity in zip(files, names):
        train, test = split_items(items, test_fraction, identity_rng(seed, identity), identity)
        train_groups.append(train)
        test_groups.append(test)
    return train_groups, test_groups


def flatten(groups: Sequence[Sequence[Path]]) -> Tuple[List[Path], np.ndarray]:
    """Concatenate per-label path lists; label ``i`` for the paths of group ``i``."""
    paths = [p for group in groups for p in group]
    labels = np.repeat(np.arange(len(groups), dtype=np.int64), [len(g) for g in groups])
    return paths, labels
