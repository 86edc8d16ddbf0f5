"""Every option of every loader and of load_dataset is checked for type, range and finiteness before any
data is read; unknown option keys list the valid ones."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest

from mi_art.data import (DATASETS, MIDataset, Split, canonical_name, check_dataset_options, dataset_options, load_celeba,
                         load_dataset, load_digits_data, load_image_folder, load_mnist)

NAN, INF = float("nan"), float("inf")

OPTIONS = {
    "digits": ("image_size", "channels", "test_fraction", "seed"),
    "image-folder": ("private", "public", "order", "max_per_identity", "exclude", "image_size", "channels",
                     "test_fraction", "crop", "seed", "name", "preset"),
    "mnist": ("image_size", "channels", "private_classes", "public_classes", "max_per_class", "seed"),
    "celeba": ("num_private", "num_public", "image_size", "channels", "test_fraction", "max_public_images", "seed"),
}
OPTIONS["folder"] = OPTIONS["image-folder"]
OPTIONS["fashion-mnist"] = OPTIONS["mnist"]


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_options_lists_the_loader_keywords(name: str) -> None:
    assert dataset_options(name) == OPTIONS[name]
    assert dataset_options(name.upper().replace("-", "_")) == OPTIONS[name]


def test_dataset_options_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; valid names: digits, image-folder, folder"):
        dataset_options("imagenet")
    with pytest.raises(ValueError, match="name must be a dataset name .*got 3"):
        dataset_options(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("key", ["imagesize", "batch_size", "Seed", 3])
def test_unknown_option_keys_list_the_valid_ones(tmp_path: Path, name: str, key: str) -> None:
    valid = ", ".join(OPTIONS[name])
    message = f"unknown option {key!r} for dataset {name!r}; valid options: {valid}"
    with pytest.raises(ValueError, match=re.escape(message)):
        check_dataset_options(name, {key: 1})
    if isinstance(key, str):
        root = None if name == "digits" else tmp_path  # an empty folder: the key is refused before any reading
        with pytest.raises(ValueError, match=re.escape(message)):
            load_dataset(name, root, **{key: 1})


def test_root_as_an_option_says_where_the_folder_goes() -> None:
    with pytest.raises(ValueError, match=r"unknown option 'root' for dataset 'mnist'; valid options: .*; give the "
                                         r"data folder as root \(--data-root\), not as an option"):
        check_dataset_options("mnist", {"root": "/data/mnist"})


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_fashion_is_set_by_the_dataset_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=f"dataset '{name}' sets fashion itself; do not pass it"):
        load_dataset(name, tmp_path, fashion=True)


@pytest.mark.parametrize("value", ["yes", 1, None, 0.0])
def test_load_mnist_fashion_must_be_a_bool(tmp_path: Path, value: Any) -> None:
    with pytest.raises(ValueError, match=re.escape(f"fashion must be True or False, got {value!r}")):
        load_mnist(tmp_path, fashion=value)


def test_canonical_name() -> None:
    assert canonical_name(" Fashion_MNIST ") == "fashion-mnist" and canonical_name("folder") == "folder"
    with pytest.raises(ValueError, match="unknown dataset 'cifar'; valid names: digits"):
        canonical_name("cifar")


def test_check_dataset_options_accepts_good_options() -> None:
    check_dataset_options("digits", {})
    check_dataset_options("image_folder", {"private": 20, "channels": None, "crop": 88, "name": "att"})
    check_dataset_options("mnist", {"private_classes": [3, 1], "public_classes": [7], "max_per_class": 10})
    check_dataset_options("celeba", {"num_private": 300, "max_public_images": 30_000, "channels": 1})
    with pytest.raises(ValueError, match="options must be a mapping"):
        check_dataset_options("digits", [("seed", 1)])  # type: ignore[arg-type]


# (option, bad value, what the message must say is valid)
INTEGER = "must be an integer"
COMMON: List[Tuple[str, Any, str]] = [
    ("image_size", 32.0, INTEGER), ("image_size", True, INTEGER), ("image_size", "32", INTEGER),
    ("image_size", 0, r"must be an integer in \[1, 1024\]"), ("image_size", -4, r"in \[1, 1024\]"),
    ("image_size", 6400, r"in \[1, 1024\]"), ("image_size", NAN, INTEGER),
    ("channels", 2, r"must be 1 \(greyscale\) or 3 \(RGB\)"), ("channels", 3.0, "must be 1"),
    ("channels", True, "must be 1"), ("channels", "3", "must be 1"), ("channels", 0, "must be 1"),
    ("seed", -1, r"must be an integer in \[0, inf\)"), ("seed", 2**32, r"\[0, 4294967295\]"),
    ("seed", 1.0, INTEGER), ("seed", True, INTEGER), ("seed", "0", INTEGER), ("seed", NAN, INTEGER),
]
FRACTION: List[Tuple[str, Any, str]] = [
    ("test_fraction", 0, r"must be in \(0, 1\)"), ("test_fraction", 1, r"in \(0, 1\)"),
    ("test_fraction", 1.5, r"in \(0, 1\)"), ("test_fraction", -0.1, r"in \(0, 1\)"),
    ("test_fraction", NAN, "must be a finite number"), ("test_fraction", INF, "finite number"),
    ("test_fraction", "0.2", "finite number"), ("test_fraction", True, "finite number"),
]
IDENTITIES = r"must be a count of at least 1 \(an integer\), a ratio in \(0, 1\) \(a float\) or a list of identity"
SPECIFIC: Dict[str, List[Tuple[str, Any, str]]] = {
    "digits": FRACTION,
    "image-folder": FRACTION + [
        ("private", 0, IDENTITIES), ("private", -2, IDENTITIES), ("private", 1.5, IDENTITIES),
        ("private", 20.0, IDENTITIES), ("private", NAN, IDENTITIES), ("private", INF, IDENTITIES),
        ("private", True, IDENTITIES), ("private", None, IDENTITIES), ("private", {"s1": 1}, IDENTITIES),
        ("private", "s1", "not a single string"), ("private", [], "identity list is empty"),
        ("private", ["s1", 2], r"private\[1\] must be an identity name \(a non-empty string\)"),
        ("private", ["s1", "s1"], "identity list repeats 's1'"),
        ("public", 0, IDENTITIES + " names, None for all the others"), ("public", 0.0, IDENTITIES),
        ("public", False, IDENTITIES), ("public", "s2", "not a single string"),
        ("crop", "left", "crop must be 'center', None or a positive integer"), ("crop", 0, "crop must be"),
        ("crop", -3, "crop must be"), ("crop", 88.0, "crop must be"), ("crop", True, "crop must be"),
        ("name", "", "name must be None or a non-empty string"), ("name", 3, "name must be None"),
    ],
    "mnist": [
        ("private_classes", "01234", "private_classes must be a list of class 0..9s"),
        ("private_classes", 3, "private_classes must be a list"),
        ("private_classes", (0, 10), r"private_classes must be integers 0\.\.9, got \(0, 10\)"),
        ("private_classes", (0, 1.0), "must be integers 0..9"), ("private_classes", (True,), "integers 0..9"),
        ("private_classes", (), "private_classes is empty"), ("public_classes", (5, 5), "repeats a class"),
        ("public_classes", (4, 5), r"private_classes and public_classes overlap: \[4\]"),
        ("max_per_class", 0, r"max_per_class must be an integer in \[1, inf\), got 0; use None for no limit"),
        ("max_per_class", -5, r"\[1, inf\)"), ("max_per_class", 2.5, INTEGER), ("max_per_class", NAN, INTEGER),
        ("max_per_class", True, INTEGER),
    ],
    "celeba": FRACTION + [
        ("num_private", 0, r"num_private must be an integer in \[1, inf\)"), ("num_private", 1.5, INTEGER),
        ("num_private", 1000.0, INTEGER), ("num_private", True, INTEGER), ("num_private", None, INTEGER),
        ("num_private", "1000", INTEGER), ("num_private", NAN, INTEGER),
        ("num_public", 0, "use None for no limit"), ("num_public", 2.0, INTEGER),
        ("max_public_images", -1, r"\[1, inf\)"), ("max_public_images", INF, INTEGER),
    ],
}
SPECIFIC["folder"] = SPECIFIC["image-folder"]
SPECIFIC["fashion-mnist"] = SPECIFIC["mnist"]
BAD = [(name, *case) for name in DATASETS for case in COMMON + SPECIFIC[name]]
LOADERS = {"digits": load_digits_data, "image-folder": load_image_folder, "folder": load_image_folder,
           "mnist": load_mnist, "fashion-mnist": load_mnist, "celeba": load_celeba}


def _call_loader(name: str, root: Path, option: str, value: Any) -> None:
    loader = LOADERS[name]
    if name == "digits":
        loader(**{option: value})
    else:
        loader(root, **{option: value})


@pytest.mark.parametrize("name, option, value, valid", BAD, ids=[f"{c[0]}-{c[1]}={c[2]!r}" for c in BAD])
def test_bad_option_values_are_refused_before_any_reading(tmp_path: Path, name: str, option: str, value: Any,
                                                          valid: str) -> None:
    missing = tmp_path / "no-such-folder"  # the option error comes first, not "folder does not exist"
    for call in (lambda: check_dataset_options(name, {option: value}),
                 lambda: load_dataset(name, None if name == "digits" else missing, **{option: value}),
                 lambda: _call_loader(name, missing, option, value)):
        with pytest.raises(ValueError) as info:
            call()
        message = str(info.value)
        assert re.search(valid, message), message
        assert option in message
        if not isinstance(value, (list, tuple)):
            assert repr(value) in message or (isinstance(value, str) and value in message), message


@pytest.mark.parametrize(
    "root, message",
    [(3, "root must be the path of the image folder"), ("", "root must be the path"),
     (" ", "root must be the path"), (["a"], "root must be the path")],
)
def test_bad_roots(root: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_dataset("folder", root)


def test_root_must_be_a_folder(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="image path is not a folder"):
        load_image_folder(tmp_path / "file.txt")


def test_digits_test_fraction_must_leave_each_digit_in_train_and_test() -> None:
    with pytest.raises(ValueError, match=r"test_fraction=0\.001 holds out 1 of the 901 private digit images; "
                                         r"test and train need at least 5 each"):
        load_digits_data(test_fraction=0.001)
    with pytest.raises(ValueError, match=r"test_fraction=0\.999 holds out 901 of the 901"):
        load_digits_data(test_fraction=0.999)


def test_channels_none_means_one_for_grey_array_sources() -> None:
    assert load_digits_data(channels=None).input_shape == (1, 8, 8)
    assert load_dataset("digits", channels=None, image_size=4).input_shape == (1, 4, 4)


# --------------------------------------------------------------------------------------------------
# Split and MIDataset
# --------------------------------------------------------------------------------------------------

X = np.zeros((2, 1, 4, 4), np.float32)
Y = np.array([0, 1])


@pytest.mark.parametrize(
    "x, y, message",
    [
        (np.full((2, 1, 4, 4), np.nan, np.float32), Y, "Split.x contains NaN or infinite values"),
        (np.full((2, 1, 4, 4), np.inf, np.float32), Y, "NaN or infinite"),
        (np.full((2, 1, 4, 4), 255.0, np.float32), Y, r"Split.x must hold values in \[0, 1\], got values in "
                                                       r"\[255, 255\] \(divide 8-bit images by 255\)"),
        (np.full((2, 1, 4, 4), -0.5, np.float32), Y, r"values in \[-0.5, -0.5\]"),
        (np.zeros((2, 1, 4, 4), bool), Y, "Split.x must hold numbers, got an array of dtype bool"),
        (X, np.array([0.0, 1.5]), "Split.y must hold integer class indices, got non-integer values"),
        (X, np.array([0.0, np.nan]), "non-integer values"),
        (X, np.array([True, False]), "Split.y must hold integer class indices, got an array of dtype bool"),
        (X, np.eye(2), r"Split.y must have shape \(N,\) \(class indices\)"),
    ],
)
def test_split_refuses_bad_arrays(x: np.ndarray, y: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Split(x, y)


def test_split_accepts_integral_float_labels_and_empty_splits() -> None:
    assert Split(X, np.array([0.0, 1.0])).y.tolist() == [0, 1]
    empty = Split(np.zeros((0, 1, 4, 4)), np.zeros(0))
    assert len(empty) == 0 and empty.y.dtype == np.int64


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"name": ""}, "name must be a non-empty string"),
        ({"name": None}, "name must be a non-empty string"),
        ({"private_identities": ("a", "a")}, "private_identities repeats 'a'"),
        ({"private_identities": (0, 1)}, r"private_identities\[0\] must be an identity name \(a string\), got 0"),
        ({"public_identities": "cd"}, "public_identities must be a tuple of identity names"),
        ({"image_size": 4.0}, "image_size must be an integer, got 4.0"),
        ({"channels": 2}, r"channels must be 1 \(greyscale\) or 3 \(RGB\), got 2"),
        ({"channels": None}, r"channels must be 1 \(greyscale\) or 3 \(RGB\), got None"),
        ({"public": (X, Y)}, "public must be a mi_art.data.Split, got tuple"),
    ],
)
def test_midataset_checks_its_fields(changes: Dict[str, Any], message: str) -> None:
    split = Split(X, Y)
    fields = dict(name="x", private_train=split, private_test=split, public=split, private_identities=("a", "b"),
                  public_identities=("c", "d"), image_size=4, channels=1)
    MIDataset(**fields)
    with pytest.raises(ValueError, match=message):
        MIDataset(**{**fields, **changes})
