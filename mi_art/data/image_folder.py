"""A folder with one sub-folder of images per identity (AT&T/ORL faces, FFHQ chunks, any face folder)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ..validation import check_choice, repeated as repeated_values
from .checks import (Crop, PathLike, check_channels, check_crop, check_image_size, check_loader_seed, check_name,
                     check_optional_limit, check_root, check_test_fraction, preview)
from .dataset import MIDataset
from .decoding import image_dataset
from .identities import (IDENTITY_ORDERS, IdentitySpec, cap_images, check_identity_spec, natural_key,
                         order_identities, select_identities, split_identities)

#: File extensions (lower case) read by :func:`load_image_folder`; matching is case-insensitive.
IMAGE_EXTENSIONS: Tuple[str, ...] = (".pgm", ".ppm", ".pnm", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff",
                                     ".gif")


def list_images(folder: Path) -> List[Path]:
    """Image files directly inside ``folder``, in natural order (hidden files skipped)."""
    files = [p for p in folder.iterdir()
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: natural_key(p.name))


def list_identities(root: Path) -> Dict[str, List[Path]]:
    """Map each identity sub-folder holding at least one image to its images, in natural order."""
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    identities: Dict[str, List[Path]] = {}
    for folder in sorted(folders, key=lambda p: natural_key(p.name)):
        images = list_images(folder)
        if images:
            identities[folder.name] = images
    return identities


def check_exclude(value: Any) -> Tuple[str, ...]:
    """None, or a list of distinct image paths relative to the folder (``"identity/file.jpg"``)."""
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ValueError(f"exclude must be None or a list of image paths relative to the folder, like "
                         f"['Some_Person/Some_Person_0004.jpg'], got {value!r}")
    for i, item in enumerate(value):
        if not isinstance(item, str) or item.count("/") != 1 or not all(item.split("/")):
            raise ValueError(f"exclude[{i}] must be 'identity/file' (one identity folder, one file name), "
                             f"got {item!r}")
    repeated = sorted(repeated_values(value))
    if repeated:
        raise ValueError(f"exclude lists {preview(repeated)} more than once")
    return tuple(value)


def check_options(*, private: Any, public: Any, order: Any, max_per_identity: Any, exclude: Any, image_size: Any,
                  channels: Any, test_fraction: Any, crop: Any, seed: Any, name: Any
                  ) -> Tuple[str, Optional[int], Tuple[str, ...], int, Optional[int], float, Crop, int, Optional[str]]:
    """Check every option of :func:`load_image_folder` that can be checked without the data."""
    check_identity_spec("private", private)
    check_identity_spec("public", public, allow_none=True)
    return (check_choice("order", order, IDENTITY_ORDERS), check_optional_limit("max_per_identity", max_per_identity),
            check_exclude(exclude), check_image_size(image_size), check_channels(channels),
            check_test_fraction(test_fraction), check_crop(crop), check_loader_seed(seed), check_name(name))


def _without(identities: Dict[str, List[Path]], exclude: Tuple[str, ...], folder: Path) -> Dict[str, List[Path]]:
    """``identities`` less the images named in ``exclude``; every name must be one of its images.
    An identity left with no image is dropped."""
    if not exclude:
        return identities
    known = {f"{n}/{p.name}" for n, paths in identities.items() for p in paths}
    missing = [e for e in exclude if e not in known]
    if missing:
        raise ValueError(f"exclude names images that are not in {folder}: {preview(missing)}")
    gone = set(exclude)
    kept = {n: [p for p in paths if f"{n}/{p.name}" not in gone] for n, paths in identities.items()}
    return {n: paths for n, paths in kept.items() if paths}


def load_image_folder(
    root: PathLike,
    *,
    private: IdentitySpec = 0.5,
    public: Optional[IdentitySpec] = None,
    order: str = "name",
    max_per_identity: Optional[int] = None,
    exclude: Optional[Sequence[str]] = None,
    image_size: int = 32,
    channels: Optional[int] = None,
    test_fraction: float = 0.2,
    crop: Crop = "center",
    seed: int = 0,
    name: Optional[str] = None,
) -> MIDataset:
    """Load a folder with one sub-folder of images per identity.

    Identity folders (those holding at least one PGM/PPM/PNM, PNG, JPEG, BMP, TIFF or GIF file,
    extensions matched case-insensitively; hidden entries and other folders are ignored) are taken in
    natural order: ``s2`` before ``s10``. Every PIL mode is mapped to ``[0, 1]`` or refused by name
    (8-bit, palette, alpha, CMYK, 16-bit and float greyscale: see :mod:`mi_art.data.decoding`).

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
    order : {"name", "images"}, default "name"
        The order in which a count or ratio takes identities: "name" (natural order of the folder
        names) or "images" (the identities with the most images first, ties by name): with
        ``private=50``, the 50 best-documented persons are private and the rest public, as the papers
        choose CelebA's private identities. Labels follow this order.
    max_per_identity : int, optional
        At most this many images of any identity (private or public), chosen at random but
        reproducibly (by ``seed`` and the identity's name), so that a few identities with hundreds
        of images (LFW's George_W_Bush: 530) do not dominate training and test. ``order="images"``
        ranks identities by their images before the cap.
    exclude : list of str, optional
        Images to leave out, as paths relative to ``root`` (``"identity/file.jpg"``): known label
        errors, or one image of each near-duplicate pair (so that no pair is split between
        train and test). A name that is not an image of the folder is an error.
    image_size : int, default 32
        Height and width of the output images.
    channels : {None, 1, 3}, default None
        1 reads images as greyscale, 3 as RGB. None infers it: 3 if any of up to 32 images spread
        over the dataset shows colour, else 1; the choice is logged (logger ``mi_art.data``, INFO).
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
        If an argument has the wrong type or range, the folder does not exist or holds no
        identities, too many identities are asked for, an explicit name is unknown, private and
        public overlap, no identity is left for the public split, a private identity has fewer than
        2 images, or an image cannot be read, has a mode that cannot be mapped to [0, 1] or is
        smaller than ``crop``.
    """
    order, max_per_identity, exclude, image_size, channels, test_fraction, crop, seed, name = check_options(
        private=private, public=public, order=order, max_per_identity=max_per_identity, exclude=exclude,
        image_size=image_size, channels=channels, test_fraction=test_fraction, crop=crop, seed=seed, name=name)
    folder = check_root(root, "image")
    split = _split(folder, private=private, public=public, order=order, max_per_identity=max_per_identity,
                   exclude=exclude, test_fraction=test_fraction, seed=seed)
    return image_dataset(name if name is not None else folder.resolve().name, folder,
                         (split.private_train, split.private_test, split.public),
                         (split.private_identities, split.public_identities),
                         image_size=image_size, channels=channels, crop=crop)


class FolderSplit(NamedTuple):
    """Which image files go where (:func:`split_image_folder`): one list of paths per identity."""

    private_train: List[List[Path]]
    private_test: List[List[Path]]
    public: List[List[Path]]
    private_identities: Tuple[str, ...]
    public_identities: Tuple[str, ...]


def split_image_folder(root: PathLike, *, private: IdentitySpec = 0.5, public: Optional[IdentitySpec] = None,
                       order: str = "name", max_per_identity: Optional[int] = None,
                       exclude: Optional[Sequence[str]] = None, test_fraction: float = 0.2,
                       seed: int = 0) -> FolderSplit:
    """The files :func:`load_image_folder` would read for each split, with the same options, without reading
    any image: to check a split (no near-duplicate pair across train and test, say) in a second."""
    order, max_per_identity, exclude, *_ = check_options(
        private=private, public=public, order=order, max_per_identity=max_per_identity, exclude=exclude,
        image_size=32, channels=None, test_fraction=test_fraction, crop="center", seed=seed, name=None)
    return _split(check_root(root, "image"), private=private, public=public, order=order,
                  max_per_identity=max_per_identity, exclude=exclude, test_fraction=test_fraction, seed=seed)


def _split(folder: Path, *, private: IdentitySpec, public: Optional[IdentitySpec], order: str,
           max_per_identity: Optional[int], exclude: Tuple[str, ...], test_fraction: float, seed: int) -> FolderSplit:
    """The split of a checked folder by checked options (see :func:`load_image_folder`)."""
    identities = list_identities(folder)
    if not identities:
        raise ValueError(f"image folder {folder} has no identity sub-folders with images "
                         f"({', '.join(IMAGE_EXTENSIONS)})")
    identities = _without(identities, exclude, folder)
    private_names, public_names = select_identities(order_identities(identities, order), private, public)
    identities = {n: cap_images(identities[n], max_per_identity, seed, n) for n in (*private_names, *public_names)}
    train_groups, test_groups = split_identities([identities[n] for n in private_names], private_names,
                                                 test_fraction, seed)
    return FolderSplit([list(g) for g in train_groups], [list(g) for g in test_groups],
                       [list(identities[n]) for n in public_names], tuple(private_names), tuple(public_names))
