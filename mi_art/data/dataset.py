"""The containers every loader returns: :class:`Split` (images and labels) and :class:`MIDataset`
(private train, private test and public splits of one experiment)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Tuple

import numpy as np

from ..validation import as_numpy, check_int, repeated as repeated_values
from .checks import check_channels, preview
from .identities import check_disjoint


def _images(x: Any) -> np.ndarray:
    x = as_numpy(x)
    if x.dtype.kind not in "fiu":
        raise ValueError(f"Split.x must hold numbers, got an array of dtype {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"Split.x must have shape (N, C, H, W), got shape {x.shape}")
    x = x.astype(np.float32, copy=False)
    if x.size:
        if not np.isfinite(x).all():
            raise ValueError("Split.x contains NaN or infinite values; images must be finite numbers in [0, 1]")
        low, high = float(x.min()), float(x.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(f"Split.x must hold values in [0, 1], got values in [{low:g}, {high:g}] "
                             "(divide 8-bit images by 255)")
    return x


def _labels(y: Any) -> np.ndarray:
    y = as_numpy(y)
    if y.ndim != 1:
        raise ValueError(f"Split.y must have shape (N,) (class indices), got shape {y.shape}")
    if y.size and y.dtype.kind == "f" and (not np.isfinite(y).all() or (y != np.round(y)).any()):
        raise ValueError("Split.y must hold integer class indices, got non-integer values")
    if y.size and y.dtype.kind not in "iuf":
        raise ValueError(f"Split.y must hold integer class indices, got an array of dtype {y.dtype}")
    return y.astype(np.int64)


@dataclass(frozen=True, eq=False, repr=False)
class Split:
    """Images and labels of one split.

    Parameters
    ----------
    x : numpy.ndarray
        Images of shape ``(N, C, H, W)`` with finite values in ``[0, 1]``; stored as ``float32``.
    y : numpy.ndarray
        Integer class indices of shape ``(N,)``; stored as ``int64``.

    Raises
    ------
    ValueError
        If ``x`` is not 4-dimensional, holds NaN, infinite or out-of-range values, ``y`` is not a
        1-dimensional array of integer indices, or their lengths differ.
    """

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        x, y = _images(self.x), _labels(self.y)
        if len(x) != len(y):
            raise ValueError(f"Split.x has {len(x)} images but Split.y has {len(y)} labels")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __repr__(self) -> str:
        return f"Split(n={len(self)}, image_shape={tuple(self.x.shape[1:])})"


def _names(field: str, names: Any) -> Tuple[str, ...]:
    if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple)):
        raise ValueError(f"{field} must be a tuple of identity names (strings), got {names!r:.80}")
    for i, n in enumerate(names):
        if not isinstance(n, str):
            raise ValueError(f"{field}[{i}] must be an identity name (a string), got {n!r}")
    repeated = sorted(repeated_values(names))
    if repeated:
        raise ValueError(f"{field} repeats {preview(repeated)}: each label needs its own identity")
    return tuple(names)


def _check_split(name: str, split: Any, input_shape: Tuple[int, int, int], num: int) -> None:
    """Raise ``ValueError`` if ``split`` is not a Split of the right image shape and label range."""
    if not isinstance(split, Split):
        raise ValueError(f"{name} must be a mi_art.data.Split, got {type(split).__name__}")
    if tuple(split.x.shape[1:]) != input_shape:
        raise ValueError(f"{name} images have shape {tuple(split.x.shape[1:])}, expected {input_shape}")
    if len(split) and (split.y.min() < 0 or split.y.max() >= num):
        raise ValueError(f"{name} labels must lie in 0..{num - 1}, got {split.y.min()}..{split.y.max()}")


@dataclass(frozen=True, eq=False, repr=False)
class MIDataset:
    """Private and public data of one model-inversion experiment.

    Parameters
    ----------
    name : str
        Short name of the dataset (used in reports and run folders).
    private_train, private_test : Split
        Images of the private identities; labels ``0..K-1`` index ``private_identities``.
    public : Split
        Images of disjoint identities; labels ``0..M-1`` index ``public_identities``.
    private_identities, public_identities : tuple of str
        Names of the identities (folder names, digit classes, CelebA ids), each named once.
    image_size : int
        Height and width of every image.
    channels : int
        1 (greyscale) or 3 (RGB).

    Raises
    ------
    ValueError
        If an argument has the wrong type, a split's image shape is not
        ``(channels, image_size, image_size)``, a label is out of range, an identity is named twice,
        or the private and public identities overlap.
    """

    name: str
    private_train: Split
    private_test: Split
    public: Split
    private_identities: Tuple[str, ...]
    public_identities: Tuple[str, ...]
    image_size: int
    channels: int

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        object.__setattr__(self, "private_identities", _names("private_identities", self.private_identities))
        object.__setattr__(self, "public_identities", _names("public_identities", self.public_identities))
        object.__setattr__(self, "image_size", check_int("image_size", self.image_size, low=1))
        object.__setattr__(self, "channels", check_channels(self.channels, allow_none=False))
        check_disjoint(self.private_identities, self.public_identities)
        splits = (
            ("private_train", self.private_train, self.num_classes),
            ("private_test", self.private_test, self.num_classes),
            ("public", self.public, self.num_public_classes),
        )
        for split_name, split, num in splits:
            _check_split(split_name, split, self.input_shape, num)

    @property
    def num_classes(self) -> int:
        """Number of private identities ``K``."""
        return len(self.private_identities)

    @property
    def num_public_classes(self) -> int:
        """Number of public identities ``M``."""
        return len(self.public_identities)

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image."""
        return (self.channels, self.image_size, self.image_size)

    def private_all(self) -> Split:
        """Return the private train and test images concatenated (train first).

        This is the reference set of the KNN-distance metric (every known image of each private
        identity). Never train the evaluation model (the judge) on it: the judge is trained on
        ``private_train`` only, and ``private_test`` measures its accuracy and the target's; training
        on ``private_all`` would leak the test images into the judge.

        Returns
        -------
        Split
            All private images, labels ``0..K-1``.
        """
        x = np.concatenate([self.private_train.x, self.private_test.x])
        y = np.concatenate([self.private_train.y, self.private_test.y])
        return Split(x, y)

    def __repr__(self) -> str:
        return (
            f"MIDataset(name={self.name!r}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, num_public_classes={self.num_public_classes}, "
            f"private_train={len(self.private_train)}, private_test={len(self.private_test)}, "
            f"public={len(self.public)})"
        )
