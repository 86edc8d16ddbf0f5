"""MNIST and Fashion-MNIST from their IDX files, split by class (GMI's small protocol)."""
from __future__ import annotations

import gzip
from functools import partial
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from ..validation import check_bool, check_list, is_int
from .arrays import finish_array, remap
from .checks import PathLike, check_channels, check_image_size, check_loader_seed, check_optional_limit, check_root
from .dataset import MIDataset, Split

#: Where Debian's ``dataset-fashion-mnist`` package installs the Fashion-MNIST IDX files.
FASHION_MNIST_DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"

_IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}  # unsigned-byte data, 1-d labels / 3-d images


def find_idx_file(root: Path, base: str, fashion: bool) -> Path:
    """Find ``base`` (raw or ``.gz``) in ``root``, ``root/raw`` or torchvision's layout."""
    folders = [root, root / "raw", root / ("FashionMNIST" if fashion else "MNIST") / "raw"]
    names = [base, base + ".gz", base.replace("-idx", ".idx"), base.replace("-idx", ".idx") + ".gz"]
    for folder in folders:
        for file_name in names:
            if (folder / file_name).is_file():
                return folder / file_name
    raise ValueError(f"IDX file {base!r} (raw or .gz) not found in {root}")


def read_idx(path: Path, ndim: int) -> np.ndarray:
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
        raise ValueError(f"{path} is not an unsigned-byte {ndim}-d IDX file: magic number {found}, "
                         f"expected {expected:#010x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: IDX header is truncated")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if len(data) - header != int(np.prod(dims)):
        raise ValueError(f"{path}: IDX dimensions {dims} need {int(np.prod(dims))} bytes of data, "
                         f"file has {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_pair(root: Path, prefix: str, fashion: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Read the images and labels of one MNIST split ("train" or "t10k")."""
    images = read_idx(find_idx_file(root, f"{prefix}-images-idx3-ubyte", fashion), 3)
    labels = read_idx(find_idx_file(root, f"{prefix}-labels-idx1-ubyte", fashion), 1)
    if len(images) != len(labels):
        raise ValueError(f"{prefix} split has {len(images)} images but {len(labels)} labels in {root}")
    if len(labels) and labels.max() > 9:
        bad = np.unique(labels[labels > 9])[:5].tolist()
        raise ValueError(f"{prefix} split in {root} has labels {bad} outside MNIST's classes 0-9: the labels file "
                         "is damaged or belongs to another data set")
    return images, labels.astype(np.int64)


def check_classes(private_classes: Any, public_classes: Any) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """MNIST class lists: non-empty lists of distinct integers 0..9, disjoint."""
    checked = []
    for what, classes in (("private_classes", private_classes), ("public_classes", public_classes)):
        values = check_list(what, classes, item="class 0..9")
        if not values:
            raise ValueError(f"{what} is empty: give at least one class 0..9")
        if not all(is_int(c) and 0 <= int(c) <= 9 for c in values):
            raise ValueError(f"{what} must be integers 0..9, got {tuple(values)}")
        if len(set(values)) != len(values):
            raise ValueError(f"{what} repeats a class: {tuple(values)}")
        checked.append(tuple(int(c) for c in values))
    overlap = sorted(set(checked[0]) & set(checked[1]))
    if overlap:
        raise ValueError(f"private_classes and public_classes overlap: {overlap}")
    return checked[0], checked[1]


def check_options(*, fashion: Any, image_size: Any, channels: Any, private_classes: Any, public_classes: Any,
                  max_per_class: Any, seed: Any) -> Tuple[bool, int, int, Tuple[int, ...], Tuple[int, ...],
                                                           Optional[int], int]:
    """Check every option of :func:`load_mnist`; ``channels=None`` means 1 (the files are greyscale)."""
    private_classes, public_classes = check_classes(private_classes, public_classes)
    return (check_bool("fashion", fashion), check_image_size(image_size), check_channels(channels) or 1,
            private_classes, public_classes, check_optional_limit("max_per_class", max_per_class),
            check_loader_seed(seed))


def _class_indices(labels: np.ndarray, classes: Sequence[int], max_per_class: Optional[int],
                   rng: np.random.Generator) -> np.ndarray:
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
    channels: Optional[int] = 1,
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
        Height and width; images are resized bilinearly (antialiased) when not 28. The default keeps
        the native size: every model, GAN parts included, works at 28x28.
    channels : {1, 3, None}, default 1
        1, or 3 to repeat the grey channel; None means 1.
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
        If an argument has the wrong type or range, the folder or a file is missing, a file is not
        a valid IDX file (magic number, size), or the class lists are invalid or overlap.
    """
    fashion, image_size, channels, private_classes, public_classes, max_per_class, seed = check_options(
        fashion=fashion, image_size=image_size, channels=channels, private_classes=private_classes,
        public_classes=public_classes, max_per_class=max_per_class, seed=seed)
    folder = check_root(root, "Fashion-MNIST" if fashion else "MNIST")
    finish = partial(finish_array, image_size=image_size, channels=channels)

    def subset(images: np.ndarray, labels: np.ndarray, classes: Sequence[int], stream: int) -> Split:
        rng = np.random.default_rng([seed, stream])
        idx = _class_indices(labels, classes, max_per_class, rng)
        return Split(finish(images[idx].astype(np.float32) / 255.0), remap(labels[idx], classes))

    train_images, train_labels = read_idx_pair(folder, "train", fashion)
    private_train = subset(train_images, train_labels, private_classes, 0)
    public = subset(train_images, train_labels, public_classes, 1)
    del train_images
    test_images, test_labels = read_idx_pair(folder, "t10k", fashion)
    private_test = subset(test_images, test_labels, private_classes, 2)
    return MIDataset(
        name="fashion-mnist" if fashion else "mnist",
        private_train=private_train,
        private_test=private_test,
        public=public,
        private_identities=tuple(str(c) for c in private_classes),
        public_identities=tuple(str(c) for c in public_classes),
        image_size=image_size,
        channels=channels,
    )
