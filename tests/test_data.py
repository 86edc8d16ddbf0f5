"""Tests of mi_art.data: package layout, splits, shapes, identity selection and error messages.

Image modes and channel inference: test_data_decoding.py; option checks: test_data_options.py; CelebA
identity files: test_data_celeba.py; the judge's training data: test_data_judge.py."""
from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import pytest
from PIL import Image

from mi_art.data import (
    DATASETS,
    LFW_EXCLUDE,
    MIDataset,
    Split,
    check_dataset_options,
    dataset_options,
    expand_preset,
    load_celeba,
    load_dataset,
    load_digits_data,
    load_image_folder,
    load_mnist,
    preset_options,
    split_image_folder,
)


# --------------------------------------------------------------------------------------------------
# Package layout
# --------------------------------------------------------------------------------------------------


def test_one_module_per_source_and_the_public_names_at_the_top() -> None:
    import mi_art.data as data
    from mi_art.data import celeba, dataset, decoding, digits, identities, idx, image_folder, registry

    assert data.load_digits_data is digits.load_digits_data
    assert data.load_image_folder is image_folder.load_image_folder
    assert data.load_mnist is idx.load_mnist
    assert data.load_celeba is celeba.load_celeba
    assert data.load_dataset is registry.load_dataset and data.dataset_options is registry.dataset_options
    assert data.Split is dataset.Split and data.MIDataset is dataset.MIDataset
    assert callable(identities.select_identities) and callable(decoding.unit_image)
    names = {"DATASETS", "IMAGE_EXTENSIONS", "MIDataset", "Split", "load_celeba", "load_dataset",
             "load_digits_data", "load_image_folder", "load_mnist", "CELEBA_CROP", "FASHION_MNIST_DEBIAN_ROOT",
             "dataset_options", "check_dataset_options", "canonical_name", "normalise_dataset_name", "expand_preset",
             "preset_options", "IMAGE_FOLDER_PRESETS", "LFW_EXCLUDE", "split_image_folder", "FolderSplit",
             "dataset_label"}
    assert set(data.__all__) == names
    assert all(hasattr(data, n) for n in data.__all__)


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def shared_data(name: str) -> Path:
    """Path of ``shared/data/<name>``; skip the test when it is absent."""
    env = os.environ.get("MI_ART_SHARED")
    shared = Path(env) if env else Path(__file__).resolve().parents[2] / "shared"
    path = shared / "data" / name
    if not path.is_dir():
        pytest.skip(f"../shared/data/{name} not found: {path} (set MI_ART_SHARED to the shared folder)")
    return path


def check_split(split: Split, shape: Sequence[int], num_classes: int) -> None:
    """Common invariants of a split: dtypes, shape, value range, label range."""
    assert split.x.dtype == np.float32
    assert split.y.dtype == np.int64
    assert split.x.shape == (len(split),) + tuple(shape)
    assert split.y.shape == (len(split),)
    assert split.x.min() >= 0.0 and split.x.max() <= 1.0
    assert split.y.min() >= 0 and split.y.max() < num_classes


def image_means(split: Split) -> np.ndarray:
    """Mean pixel value of each image."""
    return split.x.reshape(len(split), -1).mean(axis=1)


def grey(value: int, size=(12, 12)) -> Image.Image:
    return Image.new("L", size, color=value)


def value_of(identity_index: int, image_index: int) -> int:
    """Grey level of image ``image_index`` of identity ``identity_index`` in the synthetic folder."""
    return 10 + 40 * identity_index + 5 * image_index


# Natural order is id1, id2, id3, id10 (plain string order would put id10 second).
SYNTHETIC_IDS = ("id1", "id2", "id3", "id10")


@pytest.fixture(scope="module")
def synthetic_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four identities x five constant grey images, in PNG, JPEG, PGM, BMP and mixed-case names."""
    root = tmp_path_factory.mktemp("faces")
    formats = {
        "id1": ["png"] * 5,
        "id2": ["jpg"] * 5,
        "id3": ["pgm"] * 5,
        "id10": ["PNG", "JpEg", "bmp", "PGM", "png"],
    }
    for k, identity in enumerate(SYNTHETIC_IDS):
        folder = root / identity
        folder.mkdir()
        for j, ext in enumerate(formats[identity]):
            image = grey(value_of(k, j))
            fmt = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "pgm": "PPM", "bmp": "BMP"}[ext.lower()]
            image.save(folder / f"{j}.{ext}", format=fmt, **({"quality": 100} if fmt == "JPEG" else {}))
        (folder / "notes.txt").write_text("not an image")
    (root / "README").write_text("ignored")
    (root / "empty").mkdir()  # no images: not an identity
    hidden = root / ".cache"
    hidden.mkdir()
    grey(0).save(hidden / "0.png")
    return root


def identity_values(split: Split, label: int) -> np.ndarray:
    """Grey levels (0..255) of the images with ``label``, sorted."""
    return np.sort(np.round(image_means(split)[split.y == label] * 255))


# --------------------------------------------------------------------------------------------------
# scikit-learn digits
# --------------------------------------------------------------------------------------------------


def _rows(x: np.ndarray, y: np.ndarray) -> Counter:
    return Counter((xi.tobytes(), int(yi)) for xi, yi in zip(x, y))


def test_digits_splits_cover_the_private_and_public_digits() -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    target = digits.target
    data = load_digits_data()

    assert data.name == "digits" and data.input_shape == (1, 8, 8)
    assert data.private_identities == ("0", "1", "2", "3", "4")
    assert data.public_identities == ("5", "6", "7", "8", "9")
    assert not set(data.private_identities) & set(data.public_identities)
    for split in (data.private_train, data.private_test, data.public):
        check_split(split, (1, 8, 8), 5)
    assert data.private_train.x.max() == 1.0  # pixel values were divided by 16

    private = target < 5
    n_private = int(private.sum())
    assert len(data.private_test) == math.ceil(0.25 * n_private)
    # train and test together are exactly the private images, with their digit as label
    train, test = data.private_train, data.private_test
    together = _rows(train.x, train.y) + _rows(test.x, test.y)
    assert together == _rows(images[private], target[private])
    # public digits 5..9 are relabelled 0..4
    assert _rows(data.public.x, data.public.y) == _rows(images[~private], target[~private] - 5)
    # stratified: each digit's test share is within one image of 25 %
    per_class = np.bincount(target[private], minlength=5)
    assert np.all(np.abs(np.bincount(data.private_test.y, minlength=5) - 0.25 * per_class) <= 1)
    assert len(data.private_all()) == n_private


def test_digits_split_depends_on_seed_only() -> None:
    a, b, c = load_digits_data(seed=0), load_digits_data(seed=0), load_digits_data(seed=1)
    assert np.array_equal(a.private_test.x, b.private_test.x)
    assert np.array_equal(a.private_test.y, b.private_test.y)
    assert not np.array_equal(a.private_test.x, c.private_test.x)


def test_digits_resize_and_three_channels() -> None:
    data = load_digits_data(image_size=16, channels=3)
    assert data.input_shape == (3, 16, 16)
    for split in (data.private_train, data.private_test, data.public):
        check_split(split, (3, 16, 16), 5)
        assert np.array_equal(split.x[:, 0], split.x[:, 1])
        assert np.array_equal(split.x[:, 0], split.x[:, 2])
    small = load_digits_data()
    # resizing keeps the ink: mean brightness per image barely changes
    assert np.allclose(image_means(data.public), image_means(small.public), atol=0.02)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"channels": 2}, "channels"),
        ({"channels": 4}, "channels"),
        ({"image_size": 0}, "image_size"),
        ({"test_fraction": 0.0}, "test_fraction"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"test_fraction": 1.5}, "test_fraction"),
        ({"seed": -1}, "seed"),
    ],
)
def test_digits_rejects_bad_arguments(kwargs: Dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_digits_data(**kwargs)


# --------------------------------------------------------------------------------------------------
# Synthetic image folder
# --------------------------------------------------------------------------------------------------


def test_image_folder_natural_order_and_labels(synthetic_folder: Path) -> None:
    data = load_image_folder(synthetic_folder, private=2, image_size=6, test_fraction=0.2)
    assert data.name == synthetic_folder.name
    assert data.private_identities == ("id1", "id2")
    assert data.public_identities == ("id3", "id10")
    assert data.input_shape == (1, 6, 6)
    check_split(data.private_train, (1, 6, 6), 2)
    check_split(data.private_test, (1, 6, 6), 2)
    check_split(data.public, (1, 6, 6), 2)
    # 5 images per identity, 20 % test -> 1 test and 4 train each
    assert np.bincount(data.private_test.y).tolist() == [1, 1]
    assert np.bincount(data.private_train.y).tolist() == [4, 4]
    # labels point at the right folders (constant images: grey level identifies the image);
    # id10 has upper-case and mixed-case extensions and a .bmp, and all 5 are read
    for label, k in ((0, 0), (1, 1)):
        everything = identity_values(data.private_all(), label)
        assert np.allclose(everything, [value_of(k, j) for j in range(5)], atol=1)
    for label, k in ((0, 2), (1, 3)):
        assert np.allclose(identity_values(data.public, label), [value_of(k, j) for j in range(5)], atol=1)


def test_image_folder_ignores_hidden_empty_and_non_image_entries(synthetic_folder: Path) -> None:
    data = load_image_folder(synthetic_folder, private=1)
    assert data.private_identities + data.public_identities == SYNTHETIC_IDS
    assert len(data.public) == 15  # notes.txt files are not read


def test_image_folder_seeded_split(synthetic_folder: Path) -> None:
    def test_values(seed: int) -> np.ndarray:
        data = load_image_folder(synthetic_folder, private=3, image_size=4, seed=seed)
        return np.round(image_means(data.private_test) * 255)

    assert np.array_equal(test_values(0), test_values(0))
    assert any(not np.array_equal(test_values(0), test_values(s)) for s in range(1, 6))


def test_image_folder_split_of_an_identity_does_not_depend_on_the_others(synthetic_folder: Path) -> None:
    both = load_image_folder(synthetic_folder, private=2, image_size=4, seed=3)
    alone = load_image_folder(synthetic_folder, private=["id2"], image_size=4, seed=3)
    assert np.array_equal(identity_values(both.private_test, 1), identity_values(alone.private_test, 0))


def test_image_folder_explicit_lists_keep_their_order(synthetic_folder: Path) -> None:
    data = load_image_folder(synthetic_folder, private=["id10", "id1"], public=["id3"], image_size=4)
    assert data.private_identities == ("id10", "id1")
    assert data.public_identities == ("id3",)
    all_private = data.private_all()
    assert np.allclose(identity_values(all_private, 0), [value_of(3, j) for j in range(5)], atol=1)
    assert np.allclose(identity_values(data.public, 0), [value_of(2, j) for j in range(5)], atol=1)


def test_image_folder_public_count_and_ratio_count_after_private(synthetic_folder: Path) -> None:
    by_count = load_image_folder(synthetic_folder, private=1, public=2, image_size=4)
    by_ratio = load_image_folder(synthetic_folder, private=0.25, public=0.5, image_size=4)
    assert by_count.public_identities == by_ratio.public_identities == ("id2", "id3")
    assert np.array_equal(by_count.public.x, by_ratio.public.x)
    # a public ratio is a share of all identities, not of those left after the private ones
    assert load_image_folder(synthetic_folder, private=1, public=0.75, image_size=4).num_public_classes == 3


def test_image_folder_test_fraction_rounds_but_keeps_one_of_each(synthetic_folder: Path) -> None:
    small = load_image_folder(synthetic_folder, private=2, test_fraction=0.01, image_size=4)
    large = load_image_folder(synthetic_folder, private=2, test_fraction=0.99, image_size=4)
    assert np.bincount(small.private_test.y).tolist() == [1, 1]
    assert np.bincount(large.private_train.y).tolist() == [1, 1]
    half = load_image_folder(synthetic_folder, private=2, test_fraction=0.6, image_size=4)
    assert np.bincount(half.private_test.y).tolist() == [3, 3]
    rounded = load_image_folder(synthetic_folder, private=2, test_fraction=0.35, image_size=4)
    assert np.bincount(rounded.private_test.y).tolist() == [2, 2]  # 1.75 rounds to 2


@pytest.fixture()
def striped_folder(tmp_path: Path) -> Path:
    """40x20 images: black 10-pixel bands left and right of a white 20x20 centre."""
    stripes = np.zeros((20, 40), dtype=np.uint8)
    stripes[:, 10:30] = 255
    for identity, count in (("a", 2), ("b", 1)):
        (tmp_path / identity).mkdir()
        for j in range(count):
            Image.fromarray(stripes).save(tmp_path / identity / f"{j}.png")
    return tmp_path


def test_image_folder_crop_modes(striped_folder: Path) -> None:
    centre = load_image_folder(striped_folder, private=1, image_size=8, crop="center")
    assert np.allclose(centre.private_all().x, 1.0)  # the centred square is all white
    squashed = load_image_folder(striped_folder, private=1, image_size=8, crop=None)
    assert abs(float(squashed.private_all().x.mean()) - 0.5) < 0.05  # whole image: half white
    assert squashed.private_all().x.min() == 0.0
    fixed = load_image_folder(striped_folder, private=1, image_size=8, crop=10)
    assert np.allclose(fixed.private_all().x, 1.0)
    with pytest.raises(ValueError, match="larger than image"):
        load_image_folder(striped_folder, private=1, image_size=8, crop=30)
    with pytest.raises(ValueError, match="crop"):
        load_image_folder(striped_folder, private=1, crop="left")


def test_image_folder_channels(tmp_path: Path) -> None:
    for identity in ("a", "b"):
        (tmp_path / identity).mkdir()
        for j in range(2):
            Image.new("RGB", (10, 10), (255, 0, 0)).save(tmp_path / identity / f"{j}.png")
    rgb = load_image_folder(tmp_path, private=1, channels=3, image_size=5)
    assert rgb.input_shape == (3, 5, 5)
    assert np.allclose(rgb.public.x[:, 0], 1.0) and np.allclose(rgb.public.x[:, 1:], 0.0)
    grey_data = load_image_folder(tmp_path, private=1, channels=1, image_size=5)
    assert grey_data.input_shape == (1, 5, 5)
    assert np.allclose(grey_data.public.x, 76 / 255)  # ITU-R 601 luma of pure red
    inferred = load_image_folder(tmp_path, private=1, image_size=5)  # channels=None: colour stays colour
    assert inferred.input_shape == (3, 5, 5) and np.array_equal(inferred.public.x, rgb.public.x)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"private": 5}, "asks for 5 identities but only 4"),
        ({"private": 3, "public": 2}, "only 1 are available"),
        ({"private": ["id1", "id2"], "public": ["id2", "id3"]}, "overlap"),
        ({"private": ["id1", "nobody"]}, "not found.*nobody"),
        ({"private": ["id1", "id1"]}, "repeats"),
        ({"private": 4}, "no identities left"),
        ({"private": 1.5}, "ratio"),
        ({"private": 0}, "at least 1"),
        ({"private": "id1"}, "single string"),
        ({"channels": 2}, "channels"),
        ({"image_size": -3}, "image_size"),
        ({"test_fraction": 0}, "test_fraction"),
        ({"test_fraction": 1.0}, "test_fraction"),
    ],
)
def test_image_folder_rejects_bad_arguments(
    synthetic_folder: Path, kwargs: Dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        load_image_folder(synthetic_folder, **kwargs)


def test_image_folder_rejects_missing_folder_and_small_identities(
    tmp_path: Path, striped_folder: Path
) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    empty = tmp_path / "no_identities"
    empty.mkdir()
    with pytest.raises(ValueError, match="no identity sub-folders"):
        load_image_folder(empty)
    with pytest.raises(ValueError, match="identity 'b' has 1 image"):
        load_image_folder(striped_folder, private=["b"], public=["a"])


def test_split_and_dataset_validate_their_contents() -> None:
    with pytest.raises(ValueError, match="labels"):
        Split(np.zeros((3, 1, 4, 4), np.float32), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        Split(np.zeros((3, 4, 4), np.float32), np.zeros(3, np.int64))
    split = Split(np.zeros((2, 1, 4, 4)), [0, 1])
    assert split.x.dtype == np.float32 and split.y.dtype == np.int64
    with pytest.raises(ValueError, match="overlap"):
        MIDataset("x", split, split, split, ("a", "b"), ("b", "c"), 4, 1)
    with pytest.raises(ValueError, match="labels must lie in 0..0"):
        MIDataset("x", split, split, split, ("a", "b"), ("c",), 4, 1)
    with pytest.raises(ValueError, match="expected"):
        MIDataset("x", split, split, split, ("a", "b"), ("c", "d"), 8, 1)


# --------------------------------------------------------------------------------------------------
# AT&T faces (shared data)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def att_faces() -> Path:
    return shared_data("att_faces")


@pytest.fixture(scope="module")
def lfw() -> Path:
    return shared_data("lfw")


def test_att_faces_standard_split(att_faces: Path) -> None:
    data = load_image_folder(att_faces, private=20)
    assert data.private_identities == tuple(f"s{i}" for i in range(1, 21))
    assert data.public_identities == tuple(f"s{i}" for i in range(21, 41))
    assert data.input_shape == (1, 32, 32)
    check_split(data.private_train, (1, 32, 32), 20)
    check_split(data.private_test, (1, 32, 32), 20)
    check_split(data.public, (1, 32, 32), 20)
    assert np.bincount(data.private_train.y).tolist() == [8] * 20
    assert np.bincount(data.private_test.y).tolist() == [2] * 20
    assert np.bincount(data.public.y).tolist() == [10] * 20
    assert data.private_train.x.std() > 0.1  # real faces, not blank images
    # no private image is also a test image
    train = {x.tobytes() for x in data.private_train.x}
    assert not any(x.tobytes() in train for x in data.private_test.x)


@pytest.fixture(scope="module")
def uneven_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Identities with 3, 9, 5 and 9 images (a, b, c, d): grey level 10 * identity + image index."""
    root = tmp_path_factory.mktemp("uneven")
    for k, (identity, count) in enumerate((("a", 3), ("b", 9), ("c", 5), ("d", 9))):
        (root / identity).mkdir()
        for j in range(count):
            grey(40 * k + 3 * j).save(root / identity / f"{identity}_{j:04d}.png")
    return root


def test_order_by_images_takes_the_best_documented_identities_first(uneven_folder: Path) -> None:
    data = load_image_folder(uneven_folder, private=2, order="images", image_size=8)
    assert data.private_identities == ("b", "d")  # 9 images each, tie kept in name order
    assert data.public_identities == ("c", "a")
    assert load_image_folder(uneven_folder, private=2, image_size=8).private_identities == ("a", "b")


def test_max_per_identity_caps_every_identity_with_a_seeded_choice(uneven_folder: Path) -> None:
    data = load_image_folder(uneven_folder, private=2, order="images", max_per_identity=4, image_size=8)
    counts = np.bincount(data.private_train.y) + np.bincount(data.private_test.y)
    assert counts.tolist() == [4, 4]
    assert np.bincount(data.public.y).tolist() == [4, 3]  # c capped, a has only 3
    again = load_image_folder(uneven_folder, private=2, order="images", max_per_identity=4, image_size=8)
    np.testing.assert_array_equal(again.private_train.x, data.private_train.x)
    other = load_image_folder(uneven_folder, private=2, order="images", max_per_identity=4, image_size=8, seed=1)
    assert not np.array_equal(other.public.x, data.public.x)  # another seed, another choice
    # the cap is applied after ranking: b and d keep their rank although each has 4 images now
    assert data.private_identities == ("b", "d")


def test_exclude_leaves_named_images_out_and_refuses_unknown_ones(uneven_folder: Path) -> None:
    full = load_image_folder(uneven_folder, private=["a"], image_size=8)
    data = load_image_folder(uneven_folder, private=["a"], exclude=["a/a_0001.png", "d/d_0000.png"], image_size=8)
    assert len(data.private_train) + len(data.private_test) == 2
    assert len(data.public) == len(full.public) - 1
    means = np.concatenate([image_means(data.private_train), image_means(data.private_test)]) * 255
    assert not np.isclose(means, 3, atol=1).any()  # a_0001 (grey level 3) is gone
    ranked = load_image_folder(uneven_folder, private=1, order="images", exclude=["b/b_0000.png"], image_size=8)
    assert ranked.private_identities == ("d",)  # b has 8 images left, d 9
    with pytest.raises(ValueError, match=r"exclude names images that are not in .*'a/a_0099.png'"):
        load_image_folder(uneven_folder, private=1, exclude=["a/a_0099.png"])
    with pytest.raises(ValueError, match=r"exclude\[0\] must be 'identity/file'"):
        load_image_folder(uneven_folder, private=1, exclude=["a_0001.png"])
    with pytest.raises(ValueError, match="exclude must be None or a list"):
        load_image_folder(uneven_folder, private=1, exclude="a/a_0001.png")
    with pytest.raises(ValueError, match="order must be one of 'name', 'images', got 'size'"):
        load_image_folder(uneven_folder, private=1, order="size")
    with pytest.raises(ValueError, match="max_per_identity"):
        load_image_folder(uneven_folder, private=1, max_per_identity=0)


#: The LFW data folder's near-duplicate pairs (its NOTICE.md): the same photo re-encoded.
LFW_NEAR_DUPLICATES = (("Ari_Fleischer", 6, 11), ("George_W_Bush", 16, 39), ("George_W_Bush", 177, 194),
                       ("George_W_Bush", 130, 206), ("George_W_Bush", 407, 409), ("George_W_Bush", 235, 261),
                       ("Renee_Zellweger", 10, 13), ("Julie_Gerberding", 4, 6), ("Serena_Williams", 2, 16),
                       ("Serena_Williams", 29, 31))


def split_digest(split) -> str:
    """A digest of which file goes where in a :class:`~mi_art.data.FolderSplit` (identities and files, in order)."""
    rel = lambda groups: [[f"{p.parent.name}/{p.name}" for p in g] for g in groups]  # noqa: E731
    doc = {"private": split.private_identities, "public": split.public_identities, "train": rel(split.private_train),
           "test": rel(split.private_test), "public_files": rel(split.public)}
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:16]


def test_lfw_preset_is_the_benchmark_split(lfw: Path) -> None:
    """The "lfw" preset gives the split benchmarks/_settings.py defined before it moved into mi_art (same persons,
    same files on each side: the digest was taken from that definition), and keeps each near-duplicate pair
    off the two sides of the train/test split."""
    split = split_image_folder(lfw, **{k: v for k, v in preset_options("lfw").items()
                                       if k not in ("crop", "image_size", "channels")})
    assert split_digest(split) == "d4e6a20b634fec98"
    assert [sum(map(len, s)) for s in (split.private_train, split.private_test, split.public)] == [1135, 286, 1547]
    assert split.private_identities[:3] == ("George_W_Bush", "Colin_Powell", "Tony_Blair")
    assert len(split.private_identities) == 50 and len(split.public_identities) == 108
    train = {p.name for g in split.private_train for p in g}
    test = {p.name for g in split.private_test for p in g}
    for person, a, b in LFW_NEAR_DUPLICATES:
        pair = {f"{person}_{a:04d}.jpg", f"{person}_{b:04d}.jpg"}
        assert not (pair & train and pair & test), f"{sorted(pair)} is split between train and test"
    plain = split_image_folder(lfw)  # the loader's defaults: what the preset is for
    assert len(plain.private_identities) == 79


def test_lfw_preset_through_load_dataset(lfw: Path) -> None:
    """``preset="lfw"`` as --data-option / a grid gives it: the benchmark's crop, size and colour; options
    beside it win."""
    data = load_dataset("image-folder", lfw, preset="lfw", image_size=16)
    assert data.input_shape == (3, 16, 16) and len(data.private_identities) == 50
    assert data.private_identities == split_image_folder(lfw, private=50, order="images", max_per_identity=30,
                                                         exclude=list(LFW_EXCLUDE)).private_identities
    assert data.private_train.x.std() > 0.1


def test_att_preset_is_the_benchmark_split(att_faces: Path) -> None:
    split = split_image_folder(att_faces, **{k: v for k, v in preset_options("att").items()
                                             if k not in ("image_size", "channels")})
    assert split_digest(split) == "5d0172e99316445d"
    assert split.private_identities == tuple(f"s{i}" for i in range(1, 21))


def test_presets_are_data_options() -> None:
    """``preset`` is an image folder's option: checked without data, refused by name where it does not apply."""
    assert "preset" in dataset_options("image-folder") and "preset" not in dataset_options("digits")
    assert expand_preset("folder", {"preset": "att", "image_size": 64}) == {
        "private": 20, "image_size": 64, "channels": 1, "test_fraction": 0.2}
    assert expand_preset("image-folder", {"image_size": 8}) == {"image_size": 8}
    check_dataset_options("image-folder", {"preset": "lfw", "crop": 100})
    with pytest.raises(ValueError, match="preset must be one of 'lfw', 'att', got 'celeba'"):
        check_dataset_options("image-folder", {"preset": "celeba"})
    with pytest.raises(ValueError, match="dataset 'digits' has no presets"):
        check_dataset_options("digits", {"preset": "att"})
    options = preset_options("lfw")
    options["exclude"].clear()  # a copy: the preset itself is untouched
    assert len(preset_options("lfw")["exclude"]) == len(LFW_EXCLUDE)


def test_a_preset_keys_artifacts_as_its_options() -> None:
    """A run with preset="att" shares the cached artifacts of the benchmark's runs, which give its options."""
    from mi_art.evaluations.experiment import ExperimentConfig, Workbench

    data = load_digits_data()  # stands in for the folder: the key also holds the data's content

    def key(options: Dict) -> Dict:
        config = ExperimentConfig(dataset="image-folder", data_root="unused", data_options=options)
        return Workbench(config, data=data).key("target")

    assert key({"preset": "att"}) == key(preset_options("att")) != key({"preset": "att", "image_size": 16})


def test_the_cli_takes_a_preset_as_a_data_option(tmp_path: Path) -> None:
    """``--data-option preset=NAME`` is checked before any work, as every other data option."""
    from click.testing import CliRunner

    from mi_art.evaluations.cli import main

    result = CliRunner().invoke(main, ["attack", "--dataset", "image-folder", "--data-root", str(tmp_path),
                                       "--data-option", "preset=orl", "--quiet"])
    assert result.exit_code == 2
    assert "Invalid value for '--data-option': preset must be one of 'lfw', 'att', got 'orl'" in result.output


def test_att_faces_count_ratio_and_list_agree(att_faces: Path) -> None:
    by_count = load_image_folder(att_faces, private=20, image_size=16)
    by_ratio = load_image_folder(att_faces, private=0.5, image_size=16)
    by_list = load_image_folder(
        att_faces,
        private=[f"s{i}" for i in range(1, 21)],
        public=[f"s{i}" for i in range(21, 41)],
        image_size=16,
    )
    for other in (by_ratio, by_list):
        assert other.private_identities == by_count.private_identities
        assert other.public_identities == by_count.public_identities
        for name in ("private_train", "private_test", "public"):
            assert np.array_equal(getattr(other, name).x, getattr(by_count, name).x)
            assert np.array_equal(getattr(other, name).y, getattr(by_count, name).y)


# --------------------------------------------------------------------------------------------------
# MNIST: synthetic IDX files and the shared copy
# --------------------------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def mnist_value(label: int) -> int:
    return 25 * label + 1


@pytest.fixture()
def tiny_mnist(tmp_path: Path) -> Path:
    """Train split gzipped, t10k split raw; every image is constant at ``mnist_value(label)``."""
    for prefix, repeats, suffix in (("train", 4, ".gz"), ("t10k", 3, "")):
        labels = np.tile(np.arange(10), repeats)
        images = np.stack([np.full((28, 28), mnist_value(c)) for c in labels])
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", images, 0x803)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", labels, 0x801)
    return tmp_path


def test_mnist_classes_are_remapped(tiny_mnist: Path) -> None:
    data = load_mnist(tiny_mnist, private_classes=(3, 1), public_classes=(7,), image_size=14)
    assert data.name == "mnist"
    assert data.private_identities == ("3", "1") and data.public_identities == ("7",)
    check_split(data.private_train, (1, 14, 14), 2)
    check_split(data.private_test, (1, 14, 14), 2)
    check_split(data.public, (1, 14, 14), 1)
    assert len(data.private_train) == 8 and len(data.private_test) == 6 and len(data.public) == 4
    for split in (data.private_train, data.private_test):
        assert np.allclose(split.x[split.y == 0], mnist_value(3) / 255, atol=1e-6)
        assert np.allclose(split.x[split.y == 1], mnist_value(1) / 255, atol=1e-6)
    assert np.allclose(data.public.x, mnist_value(7) / 255, atol=1e-6)


def test_mnist_max_per_class_and_channels(tiny_mnist: Path) -> None:
    data = load_mnist(tiny_mnist, max_per_class=2, channels=3)
    assert data.input_shape == (3, 28, 28)
    assert np.bincount(data.private_train.y).tolist() == [2] * 5
    assert np.bincount(data.private_test.y).tolist() == [2] * 5
    assert np.bincount(data.public.y).tolist() == [2] * 5
    fashion = load_dataset("fashion-mnist", tiny_mnist, max_per_class=1)
    assert fashion.name == "fashion-mnist" and len(fashion.public) == 5


def test_mnist_rejects_bad_files(tiny_mnist: Path) -> None:
    write_idx(tiny_mnist / "t10k-labels-idx1-ubyte", np.arange(30) % 10, 0x803)  # image magic
    with pytest.raises(ValueError, match="magic number 0x00000803, expected 0x00000801"):
        load_mnist(tiny_mnist)
    truncated = b"\x00\x00\x08\x01" + (30).to_bytes(4, "big") + b"\x01"  # 30 labels announced, 1 given
    (tiny_mnist / "t10k-labels-idx1-ubyte").write_bytes(truncated)
    with pytest.raises(ValueError, match="need 30 bytes"):
        load_mnist(tiny_mnist)
    (tiny_mnist / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ValueError, match="'t10k-labels-idx1-ubyte'.*not found"):
        load_mnist(tiny_mnist)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"private_classes": (0, 1, 5), "public_classes": (5, 6)}, "overlap"),
        ({"private_classes": (0, 10)}, "0..9"),
        ({"public_classes": ()}, "empty"),
        ({"max_per_class": 0}, "max_per_class"),
        ({"channels": 2}, "channels"),
    ],
)
def test_mnist_rejects_bad_arguments(tiny_mnist: Path, kwargs: Dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_mnist(tiny_mnist, **kwargs)


def test_mnist_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="MNIST folder does not exist"):
        load_mnist(tmp_path / "nowhere")


def test_shared_mnist() -> None:
    data = load_mnist(shared_data("mnist"), max_per_class=50)
    assert data.input_shape == (1, 28, 28)
    check_split(data.private_train, (1, 28, 28), 5)
    check_split(data.private_test, (1, 28, 28), 5)
    check_split(data.public, (1, 28, 28), 5)
    for split in (data.private_train, data.private_test, data.public):
        assert np.bincount(split.y).tolist() == [50] * 5
    assert data.private_train.x.max() == 1.0
    # labels are the digits: a "1" has much less ink than a "0"
    ink = image_means(data.private_train)
    assert ink[data.private_train.y == 1].mean() < 0.7 * ink[data.private_train.y == 0].mean()
    # public label 0 is digit 5, not digit 0: their mean images differ clearly
    mean5 = data.public.x[data.public.y == 0].mean(axis=0)
    mean0 = data.private_train.x[data.private_train.y == 0].mean(axis=0)
    assert np.abs(mean5 - mean0).mean() > 0.05
    again = load_mnist(shared_data("mnist"), max_per_class=50)
    assert np.array_equal(again.private_test.x, data.private_test.x)


# --------------------------------------------------------------------------------------------------
# CelebA (synthetic layout)
# --------------------------------------------------------------------------------------------------

# identity -> number of images. Ranking by count, ties by id: 3, 10, 7, 1, 5, 2, 9.
CELEBA_COUNTS = {10: 4, 3: 4, 7: 3, 1: 2, 5: 2, 2: 1, 9: 1}


def celeba_colour(identity: int) -> tuple:
    return (20 * identity, 100, 250 - 20 * identity)


@pytest.fixture(scope="module")
def tiny_celeba(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """178x218 JPEGs, black except the central 108x108 square in the identity's colour."""
    root = tmp_path_factory.mktemp("celeba")
    (root / "img_align_celeba").mkdir()
    lines, number = [], 0
    for identity, count in CELEBA_COUNTS.items():
        for _ in range(count):
            number += 1
            name = f"{number:06d}.jpg"
            image = np.zeros((218, 178, 3), dtype=np.uint8)
            image[55:163, 35:143] = celeba_colour(identity)
            Image.fromarray(image).save(root / "img_align_celeba" / name, quality=95)
            lines.append(f"{name} {identity}")
    (root / "identity_CelebA.txt").write_text("\n".join(lines) + "\n")
    return root


def test_celeba_ranks_identities_and_crops(tiny_celeba: Path) -> None:
    data = load_celeba(tiny_celeba, num_private=2, image_size=16, test_fraction=0.25)
    assert data.name == "celeba"
    assert data.private_identities == ("3", "10")
    assert data.public_identities == ("7", "1", "5", "2", "9")
    check_split(data.private_train, (3, 16, 16), 2)
    check_split(data.private_test, (3, 16, 16), 2)
    check_split(data.public, (3, 16, 16), 5)
    assert np.bincount(data.private_train.y).tolist() == [3, 3]
    assert np.bincount(data.private_test.y).tolist() == [1, 1]
    assert np.bincount(data.public.y).tolist() == [3, 2, 2, 1, 1]
    # the 108x108 centre crop holds only the identity's colour: no black border is left
    groups = ((data.private_all(), data.private_identities), (data.public, data.public_identities))
    for split, names in groups:
        for label, identity in enumerate(names):
            colour = split.x[split.y == label].mean(axis=(0, 2, 3))
            assert np.allclose(colour, np.array(celeba_colour(int(identity))) / 255, atol=0.03)


def test_celeba_public_limits(tiny_celeba: Path) -> None:
    few = load_celeba(tiny_celeba, num_private=2, num_public=2, image_size=8, channels=1)
    assert few.public_identities == ("7", "1") and len(few.public) == 5
    assert few.input_shape == (1, 8, 8)
    capped = load_celeba(tiny_celeba, num_private=2, max_public_images=3, image_size=8, seed=4)
    assert len(capped.public) == 3
    assert set(capped.public_identities) <= {"7", "1", "5", "2", "9"}
    assert np.bincount(capped.public.y, minlength=capped.num_public_classes).min() >= 1
    again = load_celeba(tiny_celeba, num_private=2, max_public_images=3, image_size=8, seed=4)
    assert again.public_identities == capped.public_identities
    assert np.array_equal(again.public.x, capped.public.x)


def test_celeba_errors(tiny_celeba: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="identity '2' has 1 image"):
        load_celeba(tiny_celeba, num_private=6, image_size=8)
    with pytest.raises(ValueError, match="asks for 8 identities but only 7"):
        load_celeba(tiny_celeba, num_private=8, image_size=8)
    with pytest.raises(ValueError, match="identity_CelebA.txt"):
        load_celeba(tmp_path)
    (tmp_path / "identity_CelebA.txt").write_text("000001.jpg\n")
    (tmp_path / "img_align_celeba").mkdir()
    with pytest.raises(ValueError, match="expected '<image file> <identity>'"):
        load_celeba(tmp_path)


# --------------------------------------------------------------------------------------------------
# Dispatcher
# --------------------------------------------------------------------------------------------------


def test_load_dataset_dispatches(synthetic_folder: Path) -> None:
    assert set(DATASETS) == {"digits", "image-folder", "folder", "mnist", "fashion-mnist", "celeba"}
    assert load_dataset("digits", image_size=4).input_shape == (1, 4, 4)
    direct = load_image_folder(synthetic_folder, private=2, image_size=4)
    for name in ("image-folder", "folder", "Image_Folder"):
        via = load_dataset(name, synthetic_folder, private=2, image_size=4)
        assert via.private_identities == direct.private_identities
        assert np.array_equal(via.private_train.x, direct.private_train.x)
    # the folder loader's own ``name`` option passes through (load_dataset's name is positional)
    assert load_dataset("folder", synthetic_folder, private=2, image_size=4, name="faces").name == "faces"
    assert load_dataset("folder", root=synthetic_folder, private=2, image_size=4).name == synthetic_folder.name


def test_load_dataset_errors(synthetic_folder: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; valid names: digits, image-folder"):
        load_dataset("imagenet")
    for name in ("mnist", "fashion-mnist", "celeba", "folder"):
        with pytest.raises(ValueError, match="root is required"):
            load_dataset(name)
    with pytest.raises(ValueError, match="takes no root"):
        load_dataset("digits", synthetic_folder)
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset("folder", synthetic_folder / "missing")


def test_mnist_labels_out_of_range_are_a_clear_error(tmp_path):
    """A damaged labels file (values 10-19) used to load as an empty data set."""
    from test_data import write_idx

    from mi_art.data import load_mnist

    for prefix in ("train", "t10k"):
        labels = np.tile(np.arange(10, 20), 3)
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", np.zeros((len(labels), 28, 28)), 0x803)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", labels, 0x801)
    with pytest.raises(ValueError, match=r"labels \[10, 11, 12, 13, 14\] outside MNIST's classes 0-9"):
        load_mnist(tmp_path)
