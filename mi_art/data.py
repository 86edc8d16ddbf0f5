"""Datasets for model inversion: private-train, private-test and public splits.

Every model-inversion experiment needs three disjoint pieces of data (see the reference protocol):

* ``private_train``: images of the identities under attack, used to train the target model;
* ``private_test``: held-out images of the same identities (target and evaluation model accuracy,
  KNN distance, FID);
* ``public``: images of *other* identities, for the GAN prior, surrogate models and ``p_reg``.

The loaders below build an :class:`MIDataset` holding all three from data already on disk (or
shipped inside scikit-learn); nothing is ever downloaded. Splits are by identity, and image size and
channel count are parameters. Images are ``float32`` arrays of shape ``(N, C, H, W)`` with values
in ``[0, 1]``; labels are ``int64`` and index the dataset's identity tuples.

Loaders
-------
``load_digits_data``  scikit-learn's 8x8 digits: private digits 0-4, public 5-9.
``load_image_folder`` one sub-folder per identity (AT&T/ORL faces, any face folder).
``load_mnist``        MNIST / Fashion-MNIST IDX files: private and public classes.
``load_celeba``       CelebA aligned images with ``identity_CelebA.txt``.
``load_dataset``      dispatch on a dataset name (see :data:`DATASETS`).
"""
from __future__ import annotations

import gzip
import os
import re
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

__all__ = [
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "MIDataset",
    "Split",
    "load_celeba",
    "load_dataset",
    "load_digits_data",
    "load_image_folder",
    "load_mnist",
]

#: Names accepted by :func:`load_dataset` ("folder" is an alias of "image-folder").
DATASETS: Tuple[str, ...] = ("digits", "image-folder", "folder", "mnist", "fashion-mnist", "celeba")

#: File extensions (lower case) read by :func:`load_image_folder`; matching is case-insensitive.
IMAGE_EXTENSIONS: Tuple[str, ...] = (".pgm", ".ppm", ".pnm", ".png", ".jpg", ".jpeg", ".bmp")

#: Side of the centred square cut from each CelebA image before resizing (GMI/KEDMI protocol).
CELEBA_CROP = 108

#: Where Debian's ``dataset-fashion-mnist`` package installs the Fashion-MNIST IDX files.
FASHION_MNIST_DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"

IdentitySpec = Union[int, float, Sequence[str]]
Crop = Union[str, int, None]
PathLike = Union[str, "os.PathLike[str]"]

_IO_BLOCK = 1024  # images decoded per batch of thread-pool work
_RESIZE_BLOCK = 4096  # images resized per torch call


# --------------------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class Split:
    """Images and labels of one split.

    Parameters
    ----------
    x : numpy.ndarray
        ``float32`` images of shape ``(N, C, H, W)`` with values in ``[0, 1]``.
    y : numpy.ndarray
        ``int64`` labels of shape ``(N,)``.

    Raises
    ------
    ValueError
        If ``x`` is not 4-dimensional, ``y`` not 1-dimensional, or their lengths differ.
    """

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        x = np.asarray(self.x, dtype=np.float32)
        y = np.asarray(self.y, dtype=np.int64)
        if x.ndim != 4:
            raise ValueError(f"Split.x must have shape (N, C, H, W), got shape {x.shape}")
        if y.ndim != 1:
            raise ValueError(f"Split.y must have shape (N,), got shape {y.shape}")
        if len(x) != len(y):
            raise ValueError(f"Split.x has {len(x)} images but Split.y has {len(y)} labels")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __repr__(self) -> str:
        return f"Split(n={len(self)}, image_shape={tuple(self.x.shape[1:])})"


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
        Names of the identities (folder names, digit classes, CelebA ids).
    image_size : int
        Height and width of every image.
    channels : int
        1 (grayscale) or 3 (RGB).

    Raises
    ------
    ValueError
        If a split's image shape is not ``(channels, image_size, image_size)``, a label is out of
        range, or the private and public identities overlap.
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
        object.__setattr__(self, "private_identities", tuple(self.private_identities))
        object.__setattr__(self, "public_identities", tuple(self.public_identities))
        _check_disjoint(self.private_identities, self.public_identities)
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

        Returns
        -------
        Split
            All private images, e.g. for training the evaluation model or the KNN reference set.
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


def _check_disjoint(private: Sequence[str], public: Sequence[str]) -> None:
    """Raise ``ValueError`` if an identity is both private and public."""
    overlap = sorted(set(private) & set(public), key=_natural_key)
    if overlap:
        raise ValueError(
            f"private and public identities overlap: {_preview(overlap)}; "
            "public data must come from disjoint identities"
        )


def _check_split(name: str, split: Split, input_shape: Tuple[int, int, int], num: int) -> None:
    """Raise ``ValueError`` if ``split`` has the wrong image shape or out-of-range labels."""
    if tuple(split.x.shape[1:]) != input_shape:
        raise ValueError(f"{name} images have shape {tuple(split.x.shape[1:])}, expected {input_shape}")
    if len(split) and (split.y.min() < 0 or split.y.max() >= num):
        raise ValueError(
            f"{name} labels must lie in 0..{num - 1}, got {split.y.min()}..{split.y.max()}"
        )


# --------------------------------------------------------------------------------------------------
# Argument validation
# --------------------------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    """Return True for Python/numpy integers, but not for booleans."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_image_size(image_size: object) -> int:
    if not _is_int(image_size) or int(image_size) < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    return int(image_size)


def _check_channels(channels: object) -> int:
    if not _is_int(channels) or int(channels) not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    return int(channels)


def _check_test_fraction(test_fraction: object) -> float:
    if _is_int(test_fraction) or not isinstance(test_fraction, (float, int, np.floating)):
        raise ValueError(f"test_fraction must be a float in (0, 1), got {test_fraction!r}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1) (exclusive), got {test_fraction!r}")
    return float(test_fraction)


def _check_seed(seed: object) -> int:
    if not _is_int(seed) or int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_optional_count(value: object, what: str) -> Optional[int]:
    if value is None:
        return None
    if not _is_int(value) or int(value) < 1:
        raise ValueError(f"{what} must be None or a positive integer, got {value!r}")
    return int(value)


def _check_crop(crop: object) -> Crop:
    if crop is None or crop == "center":
        return crop  # type: ignore[return-value]
    if _is_int(crop) and int(crop) >= 1:
        return int(crop)
    raise ValueError(f"crop must be 'center', None or a positive integer, got {crop!r}")


def _check_folder(root: PathLike, what: str) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise ValueError(f"{what} folder does not exist: {path}")
    if not path.is_dir():
        raise ValueError(f"{what} path is not a folder: {path}")
    return path


def _preview(names: Sequence[str], limit: int = 5) -> str:
    """Format at most ``limit`` names for an error message."""
    shown = ", ".join(repr(n) for n in list(names)[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


# --------------------------------------------------------------------------------------------------
# Identity selection and splitting
# --------------------------------------------------------------------------------------------------


def _natural_key(name: str) -> Tuple[object, ...]:
    """Sort key that orders embedded numbers by value: ``s2`` before ``s10``."""
    parts = re.split(r"(\d+)", name)
    key = tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts))
    return key + (name,)


def _resolve_count(spec: Union[int, float], total: int, what: str) -> int:
    """Turn a count (int) or a ratio of ``total`` (float in (0, 1)) into a count >= 1."""
    if _is_int(spec):
        count = int(spec)
        if count < 1:
            raise ValueError(f"{what} count must be at least 1, got {count}")
        return count
    if isinstance(spec, (float, np.floating)):
        if not 0.0 < float(spec) < 1.0:
            raise ValueError(f"{what} ratio must be in (0, 1) (exclusive), got {spec!r}")
        return max(1, int(float(spec) * total + 0.5))
    raise ValueError(
        f"{what} must be a count (int), a ratio in (0, 1) (float) or a list of identity names, "
        f"got {spec!r}"
    )


def _explicit_identities(spec: Sequence[str], available: Sequence[str], what: str) -> List[str]:
    """Validate an explicit list of identity names against the available ones."""
    names = [str(n) for n in spec]
    if not names:
        raise ValueError(f"{what} identity list is empty")
    duplicates = sorted({n for n in names if names.count(n) > 1}, key=_natural_key)
    if duplicates:
        raise ValueError(f"{what} identity list repeats {_preview(duplicates)}")
    known = set(available)
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(f"{what} identities not found in the dataset: {_preview(missing)}")
    return names


def _take(candidates: Sequence[str], spec: IdentitySpec, total: int, what: str) -> List[str]:
    """Select identities from ``candidates`` by count, ratio of ``total`` or explicit names."""
    if isinstance(spec, (str, bytes)):
        raise ValueError(f"{what} must be a list of identity names, not a single string {spec!r}")
    if isinstance(spec, (list, tuple)):
        return _explicit_identities(spec, candidates, what)
    count = _resolve_count(spec, total, what)  # type: ignore[arg-type]
    if count > len(candidates):
        raise ValueError(
            f"{what} asks for {count} identities but only {len(candidates)} are available "
            f"({total} identities in all)"
        )
    return list(candidates[:count])


def _select_identities(
    identities: Sequence[str], private: IdentitySpec, public: Optional[IdentitySpec]
) -> Tuple[List[str], List[str]]:
    """Choose the private and public identities among ``identities`` (already in order).

    Returns
    -------
    tuple of list of str
        Private names, then public names (disjoint, both non-empty).
    """
    total = len(identities)
    private_names = _take(identities, private, total, "private")
    if isinstance(public, (list, tuple)):
        public_names = _explicit_identities(public, identities, "public")
        _check_disjoint(private_names, public_names)
        return private_names, public_names
    chosen = set(private_names)
    rest = [n for n in identities if n not in chosen]
    if not rest:
        raise ValueError(
            f"no identities left for the public split: private uses all {total} identities"
        )
    public_names = rest if public is None else _take(rest, public, total, "public")
    return private_names, public_names


def _identity_rng(seed: int, identity: str) -> np.random.Generator:
    """Random generator that depends only on ``seed`` and the identity's name."""
    return np.random.default_rng([seed, zlib.crc32(identity.encode("utf-8"))])


def _split_items(
    items: Sequence[Path], test_fraction: float, rng: np.random.Generator, identity: str
) -> Tuple[List[Path], List[Path]]:
    """Shuffle one identity's images and split them into (train, test), each non-empty."""
    n = len(items)
    if n < 2:
        raise ValueError(
            f"identity {identity!r} has {n} image(s); at least 2 are needed to split it into "
            "private train and test"
        )
    n_test = min(n - 1, max(1, int(test_fraction * n + 0.5)))
    order = rng.permutation(n)
    test = sorted(order[:n_test].tolist())
    train = sorted(order[n_test:].tolist())
    return [items[i] for i in train], [items[i] for i in test]


def _flatten(groups: Sequence[Sequence[Path]]) -> Tuple[List[Path], np.ndarray]:
    """Concatenate per-label path lists; label ``i`` for the paths of group ``i``."""
    paths = [p for group in groups for p in group]
    labels = np.repeat(np.arange(len(groups), dtype=np.int64), [len(g) for g in groups])
    return paths, labels


# --------------------------------------------------------------------------------------------------
# Image reading
# --------------------------------------------------------------------------------------------------


def _list_images(folder: Path) -> List[Path]:
    """Image files directly inside ``folder``, in natural order (hidden files skipped)."""
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _list_identities(root: Path) -> Dict[str, List[Path]]:
    """Map each identity sub-folder holding at least one image to its images, in natural order."""
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    identities: Dict[str, List[Path]] = {}
    for folder in sorted(folders, key=lambda p: _natural_key(p.name)):
        images = _list_images(folder)
        if images:
            identities[folder.name] = images
    return identities


def _crop_box(width: int, height: int, crop: Crop, path: Path) -> Optional[Tuple[int, int, int, int]]:
    """Box ``(left, top, right, bottom)`` of the centred crop, or None for no crop."""
    if crop is None:
        return None
    side = min(width, height) if crop == "center" else int(crop)
    if side > width or side > height:
        raise ValueError(f"crop {side} is larger than image {path} ({width}x{height})")
    left, top = (width - side) // 2, (height - side) // 2
    return (left, top, left + side, top + side)


def _load_image(path: Path, *, image_size: int, channels: int, crop: Crop) -> np.ndarray:
    """Read one image as ``float32`` ``(C, image_size, image_size)`` in ``[0, 1]``.

    The image is converted to 'L' or 'RGB', centre-cropped as ``crop`` says and resized with PIL's
    bilinear filter (antialiased when shrinking).
    """
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
    except OSError as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc
    box = _crop_box(img.width, img.height, crop, path)
    if box is not None:
        img = img.crop(box)
    if img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), Image.BILINEAR)
    array = np.asarray(img, dtype=np.float32) / 255.0
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def _read_images(paths: Sequence[Path], *, image_size: int, channels: int, crop: Crop) -> np.ndarray:
    """Read many images into one preallocated ``(N, C, H, W)`` array (threads decode in parallel)."""
    out = np.empty((len(paths), channels, image_size, image_size), dtype=np.float32)
    load = partial(_load_image, image_size=image_size, channels=channels, crop=crop)
    workers = min(8, os.cpu_count() or 1)
    if len(paths) < 64 or workers == 1:
        for i, path in enumerate(paths):
            out[i] = load(path)
        return out
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(paths), _IO_BLOCK):
            block = paths[start : start + _IO_BLOCK]
            for i, image in enumerate(pool.map(load, block)):
                out[start + i] = image
    return out


def _image_split(
    groups: Sequence[Sequence[Path]], *, image_size: int, channels: int, crop: Crop
) -> Split:
    """Build a :class:`Split` from per-label lists of image paths."""
    paths, labels = _flatten(groups)
    x = _read_images(paths, image_size=image_size, channels=channels, crop=crop)
    return Split(x, labels)


# --------------------------------------------------------------------------------------------------
# Array helpers (digits, MNIST)
# --------------------------------------------------------------------------------------------------


def _resize_array(x: np.ndarray, image_size: int) -> np.ndarray:
    """Bilinearly resize ``(N, C, H, W)`` images to ``image_size`` (antialiased), in blocks."""
    if x.shape[-2:] == (image_size, image_size):
        return x
    import torch
    import torch.nn.functional as F

    out = np.empty(x.shape[:2] + (image_size, image_size), dtype=np.float32)
    for start in range(0, len(x), _RESIZE_BLOCK):
        block = torch.from_numpy(np.ascontiguousarray(x[start : start + _RESIZE_BLOCK]))
        resized = F.interpolate(
            block, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True
        )
        out[start : start + len(block)] = resized.clamp_(0.0, 1.0).numpy()
    return out


def _finish_array(images: np.ndarray, *, image_size: int, channels: int) -> np.ndarray:
    """Turn ``(N, H, W)`` images in ``[0, 1]`` into ``(N, channels, image_size, image_size)``."""
    x = _resize_array(images[:, None].astype(np.float32, copy=False), image_size)
    return np.repeat(x, channels, axis=1) if channels > 1 else x


def _remap(labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Map each label to its position in ``classes``."""
    lookup = np.full(int(max(classes)) + 1, -1, dtype=np.int64)
    lookup[list(classes)] = np.arange(len(classes))
    return lookup[labels]


# --------------------------------------------------------------------------------------------------
# scikit-learn digits
# --------------------------------------------------------------------------------------------------


def load_digits_data(
    *, image_size: int = 8, channels: int = 1, test_fraction: float = 0.25, seed: int = 0
) -> MIDataset:
    """Load scikit-learn's 8x8 digits: private digits 0-4, public digits 5-9.

    Parameters
    ----------
    image_size : int, default 8
        Height and width; images are resized bilinearly when not 8.
    channels : int, default 1
        1, or 3 to repeat the grey channel.
    test_fraction : float, default 0.25
        Share of the private images held out as ``private_test`` (stratified by digit).
    seed : int, default 0
        Seed of the train/test split.

    Returns
    -------
    MIDataset
        ``name="digits"``; private labels 0..4 are digits 0..4, public labels 0..4 are digits 5..9.

    Raises
    ------
    ValueError
        On a bad ``image_size``, ``channels``, ``test_fraction`` or ``seed``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    image_size, channels = _check_image_size(image_size), _check_channels(channels)
    test_fraction, seed = _check_test_fraction(test_fraction), _check_seed(seed)
    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    labels = digits.target.astype(np.int64)
    x = _finish_array(images, image_size=image_size, channels=channels)
    private = np.flatnonzero(labels < 5)
    public = np.flatnonzero(labels >= 5)
    train, test = train_test_split(
        private, test_size=test_fraction, stratify=labels[private], random_state=seed
    )
    train, test = np.sort(train), np.sort(test)
    return MIDataset(
        name="digits",
        private_train=Split(x[train], labels[train]),
        private_test=Split(x[test], labels[test]),
        public=Split(x[public], labels[public] - 5),
        private_identities=tuple(str(d) for d in range(5)),
        public_identities=tuple(str(d) for d in range(5, 10)),
        image_size=image_size,
        channels=channels,
    )


# --------------------------------------------------------------------------------------------------
# Image folder (AT&T faces and the like)
# --------------------------------------------------------------------------------------------------


def load_image_folder(
    root: PathLike,
    *,
    private: IdentitySpec = 0.5,
    public: Optional[IdentitySpec] = None,
    image_size: int = 32,
    channels: int = 1,
    test_fraction: float = 0.2,
    crop: Crop = "center",
    seed: int = 0,
    name: Optional[str] = None,
) -> MIDataset:
    """Load a folder with one sub-folder of images per identity.

    Identity folders (those holding at least one PGM/PPM/PNG/JPEG/BMP file, extensions matched
    case-insensitively; hidden entries and other folders are ignored) are taken in natural order:
    ``s2`` before ``s10``.

    Parameters
    ----------
    root : str or path
        The folder holding the identity sub-folders.
    private : int, float or list of str, default 0.5
        The private identities: the first ``private`` identities (int), that ratio of all
        identities (float in (0, 1), rounded, at least 1), or the folder names themselves (list;
        labels follow the list's order).
    public : int, float, list of str or None, default None
        The public identities: None for all identities that are not private; a count, or a ratio
        of all identities, taken in order from the non-private identities; or folder names
        (must not overlap ``private``).
    image_size : int, default 32
        Height and width of the output images.
    channels : int, default 1
        1 reads images as grayscale ('L'), 3 as 'RGB'.
    test_fraction : float, default 0.2
        Share of each private identity's images that go to ``private_test`` (rounded; at least one
        test and one train image per identity). The shuffle depends on ``seed`` and the identity's
        name only.
    crop : {"center"}, int or None, default "center"
        "center" cuts the largest centred square, an int a centred square of that side (CelebA:
        108), None resizes the whole image (aspect ratio not kept).
    seed : int, default 0
        Seed of the train/test shuffle.
    name : str, optional
        Dataset name; defaults to the folder's name.

    Returns
    -------
    MIDataset
        Private labels index ``private_identities``; public labels index ``public_identities``.

    Raises
    ------
    ValueError
        If the folder does not exist or holds no identities, too many identities are asked for, an
        explicit name is unknown or repeated, private and public overlap, no identity is left for
        the public split, a private identity has fewer than 2 images, an image cannot be read or is
        smaller than ``crop``, or ``image_size``/``channels``/``test_fraction``/``crop``/``seed``
        is invalid.
    """
    image_size, channels = _check_image_size(image_size), _check_channels(channels)
    test_fraction, seed, crop = _check_test_fraction(test_fraction), _check_seed(seed), _check_crop(crop)
    folder = _check_folder(root, "image")
    identities = _list_identities(folder)
    if not identities:
        raise ValueError(
            f"image folder {folder} has no identity sub-folders with images "
            f"({', '.join(IMAGE_EXTENSIONS)})"
        )
    private_names, public_names = _select_identities(list(identities), private, public)
    train_groups, test_groups = [], []
    for identity in private_names:
        rng = _identity_rng(seed, identity)
        train, test = _split_items(identities[identity], test_fraction, rng, identity)
        train_groups.append(train)
        test_groups.append(test)
    read = partial(_image_split, image_size=image_size, channels=channels, crop=crop)
    return MIDataset(
        name=name if name is not None else folder.resolve().name,
        private_train=read(train_groups),
        private_test=read(test_groups),
        public=read([identities[n] for n in public_names]),
        private_identities=tuple(private_names),
        public_identities=tuple(public_names),
        image_size=image_size,
        channels=channels,
    )


# --------------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST
# --------------------------------------------------------------------------------------------------

_IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}  # unsigned-byte data, 1-d labels / 3-d images


def _find_idx_file(root: Path, base: str, fashion: bool) -> Path:
    """Find ``base`` (raw or ``.gz``) in ``root``, ``root/raw`` or torchvision's layout."""
    folders = [root, root / "raw", root / ("FashionMNIST" if fashion else "MNIST") / "raw"]
    names = [base, base + ".gz", base.replace("-idx", ".idx"), base.replace("-idx", ".idx") + ".gz"]
    for folder in folders:
        for file_name in names:
            if (folder / file_name).is_file():
                return folder / file_name
    raise ValueError(f"IDX file {base!r} (raw or .gz) not found in {root}")


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file of ``ndim`` dimensions (gzipped when named ``*.gz``)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"cannot read IDX file {path}: {exc}") from exc
    expected = _IDX_MAGIC[ndim]
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if magic != expected:
        found = "none (file too short)" if magic is None else f"{magic:#010x}"
        raise ValueError(
            f"{path} is not an unsigned-byte {ndim}-d IDX file: magic number {found}, "
            f"expected {expected:#010x}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: IDX header is truncated")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if len(data) - header != int(np.prod(dims)):
        raise ValueError(
            f"{path}: IDX dimensions {dims} need {int(np.prod(dims))} bytes of data, "
            f"file has {len(data) - header}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _read_idx_pair(root: Path, prefix: str, fashion: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Read the images and labels of one MNIST split ("train" or "t10k")."""
    images = _read_idx(_find_idx_file(root, f"{prefix}-images-idx3-ubyte", fashion), 3)
    labels = _read_idx(_find_idx_file(root, f"{prefix}-labels-idx1-ubyte", fashion), 1)
    if len(images) != len(labels):
        raise ValueError(f"{prefix} split has {len(images)} images but {len(labels)} labels in {root}")
    return images, labels.astype(np.int64)


def _check_classes(private_classes: Sequence[int], public_classes: Sequence[int]) -> None:
    """Validate MNIST class lists: integers 0-9, non-empty, no repeats, disjoint."""
    for what, classes in (("private_classes", private_classes), ("public_classes", public_classes)):
        values = list(classes)
        if not values:
            raise ValueError(f"{what} is empty")
        if not all(_is_int(c) and 0 <= int(c) <= 9 for c in values):
            raise ValueError(f"{what} must be integers 0..9, got {tuple(values)}")
        if len(set(values)) != len(values):
            raise ValueError(f"{what} repeats a class: {tuple(values)}")
    overlap = sorted(set(private_classes) & set(public_classes))
    if overlap:
        raise ValueError(f"private_classes and public_classes overlap: {overlap}")


def _class_indices(
    labels: np.ndarray, classes: Sequence[int], max_per_class: Optional[int], rng: np.random.Generator
) -> np.ndarray:
    """Sorted indices of the images of ``classes``, at most ``max_per_class`` per class (seeded)."""
    chosen = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if max_per_class is not None and len(idx) > max_per_class:
            idx = rng.choice(idx, size=max_per_class, replace=False)
        chosen.append(idx)
    return np.sort(np.concatenate(chosen))


def load_mnist(
    root: PathLike,
    *,
    fashion: bool = False,
    image_size: int = 28,
    channels: int = 1,
    private_classes: Sequence[int] = (0, 1, 2, 3, 4),
    public_classes: Sequence[int] = (5, 6, 7, 8, 9),
    max_per_class: Optional[int] = None,
    seed: int = 0,
) -> MIDataset:
    """Load MNIST (or Fashion-MNIST) IDX files split by class (GMI's small protocol).

    Parameters
    ----------
    root : str or path
        Folder with ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, raw or gzipped (``.gz``); also
        looked for in ``root/raw`` and torchvision's ``root/MNIST/raw`` (``FashionMNIST/raw``).
    fashion : bool, default False
        Fashion-MNIST (same format): only the dataset name and messages change.
    image_size : int, default 28
        Height and width; images are resized bilinearly (antialiased) when not 28.
    channels : int, default 1
        1, or 3 to repeat the grey channel.
    private_classes, public_classes : sequence of int
        Disjoint classes 0..9; labels are remapped to their positions in these sequences.
    max_per_class : int, optional
        Keep at most this many images of each class in each split (seeded), for speed.
    seed : int, default 0
        Seed of the subsampling.

    Returns
    -------
    MIDataset
        ``private_train``: train split of the private classes; ``private_test``: t10k split of the
        private classes; ``public``: train split of the public classes.

    Raises
    ------
    ValueError
        If the folder or a file is missing, a file is not a valid IDX file (magic number, size),
        the class lists are invalid or overlap, or another argument is invalid.
    """
    image_size, channels, seed = _check_image_size(image_size), _check_channels(channels), _check_seed(seed)
    max_per_class = _check_optional_count(max_per_class, "max_per_class")
    _check_classes(private_classes, public_classes)
    label = "Fashion-MNIST" if fashion else "MNIST"
    folder = _check_folder(root, label)
    finish = partial(_finish_array, image_size=image_size, channels=channels)

    def subset(images: np.ndarray, labels: np.ndarray, classes: Sequence[int], stream: int) -> Split:
        rng = np.random.default_rng([seed, stream])
        idx = _class_indices(labels, classes, max_per_class, rng)
        return Split(finish(images[idx].astype(np.float32) / 255.0), _remap(labels[idx], classes))

    train_images, train_labels = _read_idx_pair(folder, "train", fashion)
    private_train = subset(train_images, train_labels, private_classes, 0)
    public = subset(train_images, train_labels, public_classes, 1)
    del train_images
    test_images, test_labels = _read_idx_pair(folder, "t10k", fashion)
    private_test = subset(test_images, test_labels, private_classes, 2)
    return MIDataset(
        name="fashion-mnist" if fashion else "mnist",
        private_train=private_train,
        private_test=private_test,
        public=public,
        private_identities=tuple(str(int(c)) for c in private_classes),
        public_identities=tuple(str(int(c)) for c in public_classes),
        image_size=image_size,
        channels=channels,
    )


# --------------------------------------------------------------------------------------------------
# CelebA
# --------------------------------------------------------------------------------------------------


def _read_celeba_identities(path: Path) -> Dict[int, List[str]]:
    """Parse ``identity_CelebA.txt`` ("000001.jpg 2880" per line) into id -> sorted file names."""
    files: Dict[int, List[str]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].isdigit():
                raise ValueError(f"{path}:{lineno}: expected '<image file> <identity>', got {line.strip()!r}")
            files.setdefault(int(parts[1]), []).append(parts[0])
    if not files:
        raise ValueError(f"{path} lists no images")
    return {i: sorted(names, key=_natural_key) for i, names in files.items()}


def _celeba_image_dir(root: Path) -> Path:
    """``root/img_align_celeba`` (or the nested copy some archives unpack to)."""
    folder = root / "img_align_celeba"
    if not folder.is_dir():
        raise ValueError(f"CelebA image folder does not exist: {folder}")
    nested = folder / "img_align_celeba"
    return nested if nested.is_dir() else folder


def _subsample_public(
    groups: List[List[Path]], names: List[str], limit: Optional[int], seed: int
) -> Tuple[List[List[Path]], List[str]]:
    """Keep at most ``limit`` public images (seeded); drop identities left without images."""
    total = sum(len(g) for g in groups)
    if limit is None or total <= limit:
        return groups, names
    keep = np.zeros(total, dtype=bool)
    keep[np.random.default_rng([seed, 3]).choice(total, size=limit, replace=False)] = True
    kept_groups, kept_names, offset = [], [], 0
    for group, name in zip(groups, names):
        mask = keep[offset : offset + len(group)]
        offset += len(group)
        if mask.any():
            kept_groups.append([p for p, k in zip(group, mask) if k])
            kept_names.append(name)
    return kept_groups, kept_names


def load_celeba(
    root: PathLike,
    *,
    num_private: int = 1000,
    num_public: Optional[int] = None,
    image_size: int = 64,
    channels: int = 3,
    test_fraction: float = 0.1,
    max_public_images: Optional[int] = None,
    seed: int = 0,
) -> MIDataset:
    """Load CelebA: the identities with most images are private, the others public.

    Each image is centre-cropped to 108x108 and resized to ``image_size`` (the GMI/KEDMI protocol).

    Parameters
    ----------
    root : str or path
        Folder holding ``img_align_celeba/*.jpg`` and ``identity_CelebA.txt``.
    num_private : int, default 1000
        Number of private identities: those with the most images (ties by smaller id).
    num_public : int, optional
        Number of public identities, taken next in the same ranking; None for all the others.
    image_size : int, default 64
        Height and width of the output images.
    channels : int, default 3
        3 for RGB, 1 for grayscale.
    test_fraction : float, default 0.1
        Share of each private identity's images held out as ``private_test`` (at least one).
    max_public_images : int, optional
        Keep at most this many public images (seeded); identities left without images are dropped.
    seed : int, default 0
        Seed of the train/test shuffle and of the public subsampling.

    Returns
    -------
    MIDataset
        ``name="celeba"``; identity names are the CelebA ids as strings.

    Raises
    ------
    ValueError
        If a file or folder is missing, the identity file is malformed, there are too few
        identities, a private identity has fewer than 2 images, an image cannot be read, or an
        argument is invalid.
    """
    image_size, channels = _check_image_size(image_size), _check_channels(channels)
    test_fraction, seed = _check_test_fraction(test_fraction), _check_seed(seed)
    max_public_images = _check_optional_count(max_public_images, "max_public_images")
    folder = _check_folder(root, "CelebA")
    id_file = folder / "identity_CelebA.txt"
    if not id_file.is_file():
        raise ValueError(f"CelebA identity file does not exist: {id_file}")
    image_dir = _celeba_image_dir(folder)
    files = _read_celeba_identities(id_file)
    ranking = [str(i) for i in sorted(files, key=lambda i: (-len(files[i]), i))]
    if not _is_int(num_private):
        raise ValueError(f"num_private must be a positive integer, got {num_private!r}")
    if num_public is not None and not _is_int(num_public):
        raise ValueError(f"num_public must be None or a positive integer, got {num_public!r}")
    private_names, public_names = _select_identities(ranking, num_private, num_public)
    paths = {name: [image_dir / f for f in files[int(name)]] for name in private_names + public_names}
    train_groups, test_groups = [], []
    for identity in private_names:
        train, test = _split_items(paths[identity], test_fraction, _identity_rng(seed, identity), identity)
        train_groups.append(train)
        test_groups.append(test)
    public_groups, public_names = _subsample_public(
        [paths[n] for n in public_names], public_names, max_public_images, seed
    )
    read = partial(_image_split, image_size=image_size, channels=channels, crop=CELEBA_CROP)
    return MIDataset(
        name="celeba",
        private_train=read(train_groups),
        private_test=read(test_groups),
        public=read(public_groups),
        private_identities=tuple(private_names),
        public_identities=tuple(public_names),
        image_size=image_size,
        channels=channels,
    )


# --------------------------------------------------------------------------------------------------
# Dispatcher
# --------------------------------------------------------------------------------------------------


def load_dataset(name: str, root: Optional[PathLike] = None, **kwargs: object) -> MIDataset:
    """Load a dataset by name.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`: "digits", "image-folder" (alias "folder"), "mnist",
        "fashion-mnist", "celeba" (case-insensitive; "_" may stand for "-").
    root : str or path, optional
        Data folder; required by every dataset but "digits", which takes none.
    **kwargs
        Keyword arguments of the dataset's loader (:func:`load_digits_data`,
        :func:`load_image_folder`, :func:`load_mnist`, :func:`load_celeba`).

    Returns
    -------
    MIDataset

    Raises
    ------
    ValueError
        If ``name`` is unknown, ``root`` is missing where required or given to "digits", or the
        loader rejects its arguments.
    """
    key = str(name).strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    if key == "digits":
        if root is not None:
            raise ValueError("dataset 'digits' ships with scikit-learn and takes no root")
        return load_digits_data(**kwargs)  # type: ignore[arg-type]
    if root is None:
        hint = ""
        if key == "fashion-mnist":
            hint = f" (Debian's dataset-fashion-mnist installs it in {FASHION_MNIST_DEBIAN_ROOT})"
        raise ValueError(f"dataset {key!r} needs a data folder: root is required{hint}")
    if key in ("image-folder", "folder"):
        return load_image_folder(root, **kwargs)  # type: ignore[arg-type]
    if key in ("mnist", "fashion-mnist"):
        if "fashion" in kwargs:
            raise ValueError(f"dataset {key!r} sets fashion itself; do not pass it")
        return load_mnist(root, fashion=key == "fashion-mnist", **kwargs)  # type: ignore[arg-type]
    return load_celeba(root, **kwargs)  # type: ignore[arg-type]
