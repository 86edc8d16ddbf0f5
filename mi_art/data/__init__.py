"""Datasets for model inversion: private-train, private-test and public splits.

Every model-inversion experiment needs three disjoint pieces of data (see the reference protocol):

* ``private_train``: images of the identities under attack, used to train the target model and the
  evaluation model (the judge);
* ``private_test``: held-out images of the same identities (target and evaluation model accuracy,
  KNN distance, FID), never trained on;
* ``public``: images of *other* identities, for the GAN prior, surrogate models and ``p_reg``.

The loaders below build an :class:`MIDataset` holding all three from data already on disk (or
shipped inside scikit-learn); nothing is ever downloaded. Splits are by identity, and image size and
channel count are parameters. Images are ``float32`` arrays of shape ``(N, C, H, W)`` with values
in ``[0, 1]``; labels are ``int64`` and index the dataset's identity tuples.

Loaders (one module each)
-------------------------
``load_digits_data``  scikit-learn's 8x8 digits: private digits 0-4, public 5-9 (``digits``).
``load_image_folder`` one sub-folder per identity: AT&T/ORL faces, any face folder (``image_folder``).
``load_mnist``        MNIST / Fashion-MNIST IDX files: private and public classes (``idx``).
``load_celeba``       CelebA aligned images with ``identity_CelebA.txt`` (``celeba``).
``load_dataset``      dispatch on a dataset name (see :data:`DATASETS`, :func:`dataset_options`).
``preset_options``    the benchmarks' options for LFW and AT&T faces, by name (``presets``; ``preset="lfw"``).

The shared pieces: :class:`Split` and :class:`MIDataset` (``dataset``), the choice of identities
and their train/test split (``identities``), image decoding of every PIL mode (``decoding``), and
the loaders' argument checks (``checks``, on top of :mod:`mi_art.validation`).
"""
from __future__ import annotations

from .celeba import CELEBA_CROP, load_celeba
from .dataset import MIDataset, Split
from .digits import load_digits_data
from .idx import FASHION_MNIST_DEBIAN_ROOT, load_mnist
from .image_folder import IMAGE_EXTENSIONS, FolderSplit, load_image_folder, split_image_folder
from .presets import IMAGE_FOLDER_PRESETS, LFW_EXCLUDE, preset_options
from .registry import (DATASETS, canonical_name, check_dataset_options, dataset_label, dataset_options, expand_preset,
                       load_dataset, normalise_dataset_name)

__all__ = [
    "CELEBA_CROP",
    "DATASETS",
    "FASHION_MNIST_DEBIAN_ROOT",
    "FolderSplit",
    "IMAGE_EXTENSIONS",
    "IMAGE_FOLDER_PRESETS",
    "LFW_EXCLUDE",
    "MIDataset",
    "Split",
    "canonical_name",
    "check_dataset_options",
    "dataset_label",
    "dataset_options",
    "expand_preset",
    "load_celeba",
    "load_dataset",
    "load_digits_data",
    "load_image_folder",
    "load_mnist",
    "normalise_dataset_name",
    "preset_options",
    "split_image_folder",
]
