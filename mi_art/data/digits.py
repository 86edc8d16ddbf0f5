"""scikit-learn's 8x8 digits (shipped with scikit-learn): private digits 0-4, public digits 5-9."""
from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import numpy as np

from .arrays import finish_array
from .checks import check_channels, check_image_size, check_loader_seed, check_test_fraction
from .dataset import MIDataset, Split


def check_options(*, image_size: Any, channels: Any, test_fraction: Any, seed: Any) -> Tuple[int, int, float, int]:
    """Check every option of :func:`load_digits_data`; ``channels=None`` means 1 (the digits are grey)."""
    return (check_image_size(image_size), check_channels(channels) or 1, check_test_fraction(test_fraction),
            check_loader_seed(seed))


def _check_stratifiable(test_fraction: float, n: int, classes: int = 5) -> None:
    """Each private digit needs a train and a test image: test and train sizes of at least ``classes``."""
    n_test = math.ceil(test_fraction * n)
    if n_test < classes or n - n_test < classes:
        raise ValueError(f"test_fraction={test_fraction!r} holds out {n_test} of the {n} private digit images; "
                         f"test and train need at least {classes} each (one image of every digit)")


def load_digits_data(
    *, image_size: int = 8, channels: Optional[int] = 1, test_fraction: float = 0.25, seed: int = 0
) -> MIDataset:
    """Load scikit-learn's 8x8 digits: private digits 0-4, public digits 5-9.

    Parameters
    ----------
    image_size : int, default 8
        Height and width; images are resized bilinearly when not 8.
    channels : {1, 3, None}, default 1
        1, or 3 to repeat the grey channel; None means 1.
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
        On an ``image_size``, ``channels``, ``test_fraction`` or ``seed`` of the wrong type or range.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    image_size, channels, test_fraction, seed = check_options(image_size=image_size, channels=channels,
                                                              test_fraction=test_fraction, seed=seed)
    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    labels = digits.target.astype(np.int64)
    x = finish_array(images, image_size=image_size, channels=channels)
    private = np.flatnonzero(labels < 5)
    public = np.flatnonzero(labels >= 5)
    _check_stratifiable(test_fraction, len(private))
    train, test = train_test_split(private, test_size=test_fraction, stratify=labels[private], random_state=seed)
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
