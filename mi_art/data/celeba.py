"""CelebA aligned images with ``identity_CelebA.txt``: the identities with most images are private."""
from __future__ import annotations

import re
from pathlib import Path, PureWindowsPath
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..validation import check_count
from .checks import (PathLike, check_channels, check_image_size, check_loader_seed, check_optional_limit,
                     check_root, check_test_fraction)
from .dataset import MIDataset
from .decoding import image_dataset
from .identities import natural_key, select_identities, split_identities

#: Side of the centred square cut from each CelebA image before resizing (GMI/KEDMI protocol).
CELEBA_CROP = 108

_IDENTITY = re.compile(r"[0-9]+")


def _leaves_folder(file_name: str) -> bool:
    """Whether ``file_name`` is not a plain name inside the image folder (separator, ``..``, drive)."""
    return ("/" in file_name or "\\" in file_name or file_name in (".", "..")
            or bool(PureWindowsPath(file_name).drive) or "\x00" in file_name)


def read_identity_file(path: Path) -> Dict[int, List[str]]:
    """Parse ``identity_CelebA.txt`` ("000001.jpg 2880" per line) into id -> sorted file names.

    Raises
    ------
    ValueError
        Naming the file and line: a malformed line, a file name that would leave the image folder
        (absolute path, ``..``, a path separator), or a file listed twice.
    """
    files: Dict[int, List[str]] = {}
    first_line: Dict[str, int] = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = list(f)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not a UTF-8 text file: {exc}") from exc
    for lineno, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not _IDENTITY.fullmatch(parts[1]):
            raise ValueError(f"{path}:{lineno}: expected '<image file> <identity>', got {line.strip()!r}")
        name = parts[0]
        if _leaves_folder(name):
            raise ValueError(f"{path}:{lineno}: image file name {name!r} would leave the image folder; "
                             "only plain file names (no '/', '\\', '..' or drive) are allowed")
        if name in first_line:
            raise ValueError(f"{path}:{lineno}: image {name!r} is listed again (first on line "
                             f"{first_line[name]}); each image belongs to one identity")
        first_line[name] = lineno
        files.setdefault(int(parts[1]), []).append(name)
    if not files:
        raise ValueError(f"{path} lists no images")
    return {i: sorted(names, key=natural_key) for i, names in files.items()}


def image_folder(root: Path) -> Path:
    """``root/img_align_celeba`` (or the nested copy some archives unpack to)."""
    folder = root / "img_align_celeba"
    if not folder.is_dir():
        raise ValueError(f"CelebA image folder does not exist: {folder}")
    nested = folder / "img_align_celeba"
    return nested if nested.is_dir() else folder


def _subsample_public(groups: List[List[Path]], names: List[str], limit: Optional[int],
                      seed: int) -> Tuple[List[List[Path]], List[str]]:
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


def check_options(*, num_private: Any, num_public: Any, image_size: Any, channels: Any, test_fraction: Any,
                  max_public_images: Any, seed: Any) -> Tuple[int, Optional[int], int, Optional[int], float,
                                                               Optional[int], int]:
    """Check every option of :func:`load_celeba` that can be checked without the data."""
    return (check_count("num_private", num_private), check_optional_limit("num_public", num_public),
            check_image_size(image_size), check_channels(channels), check_test_fraction(test_fraction),
            check_optional_limit("max_public_images", max_public_images), check_loader_seed(seed))


def load_celeba(
    root: PathLike,
    *,
    num_private: int = 1000,
    num_public: Optional[int] = None,
    image_size: int = 64,
    channels: Optional[int] = 3,
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
    channels : {3, 1, None}, default 3
        3 for RGB, 1 for greyscale, None to infer it from the images (as :func:`load_image_folder`).
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
        If an argument has the wrong type or range, a file or folder is missing, the identity file
        is malformed or names a file outside the image folder, there are too few identities, a
        private identity has fewer than 2 images, or an image cannot be read.
    """
    num_private, num_public, image_size, channels, test_fraction, max_public_images, seed = check_options(
        num_private=num_private, num_public=num_public, image_size=image_size, channels=channels,
        test_fraction=test_fraction, max_public_images=max_public_images, seed=seed)
    folder = check_root(root, "CelebA")
    id_file = folder / "identity_CelebA.txt"
    if not id_file.is_file():
        raise ValueError(f"CelebA identity file does not exist: {id_file}")
    images = image_folder(folder)
    files = read_identity_file(id_file)
    ranking = [str(i) for i in sorted(files, key=lambda i: (-len(files[i]), i))]
    private_names, public_names = select_identities(ranking, num_private, num_public)
    paths = {name: [images / f for f in files[int(name)]] for name in private_names + public_names}
    train_groups, test_groups = split_identities([paths[n] for n in private_names], private_names, test_fraction,
                                                 seed)
    public_groups, public_names = _subsample_public([paths[n] for n in public_names], public_names,
                                                    max_public_images, seed)
    return image_dataset("celeba", folder, (train_groups, test_groups, public_groups), (private_names, public_names),
                         image_size=image_size, channels=channels, crop=CELEBA_CROP)
