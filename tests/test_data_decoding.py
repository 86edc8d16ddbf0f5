"""Every PIL mode a user may have maps to [0, 1] with exact values, or is refused by name; an image
folder's channel count is inferred from its images unless given."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pytest
from PIL import Image

from mi_art.data import load_celeba, load_image_folder
from mi_art.data.decoding import infer_channels, read_image, to_array, unit_image

SIDE = 4


def read(path: Path, channels: int) -> np.ndarray:
    """The image as the loaders read it, at its own size (no resize, no crop)."""
    return read_image(path, image_size=SIDE, channels=channels, crop=None)


def constant(mode: str, value, side: int = SIDE) -> Image.Image:
    return Image.new(mode, (side, side), value)


def from_array(values: np.ndarray) -> Image.Image:
    return Image.fromarray(values)


def palette(colour: Sequence[int]) -> Image.Image:
    """A 'P' image every pixel of which is palette entry 1 = ``colour``."""
    image = Image.new("P", (SIDE, SIDE), 1)
    image.putpalette([0, 0, 0, *colour] + [0] * (768 - 6))
    return image


def sixteen_bit(values: Sequence[int]) -> Image.Image:
    """A SIDE x SIDE 'I;16' image whose first row is ``values`` (padded with its last value)."""
    array = np.full((SIDE, SIDE), values[-1], dtype=np.uint16)
    array[0, : len(values)] = values
    return Image.fromarray(array)


# (id, make the image, file name, channels, expected value of pixel (0, 0) per channel)
CASES = [
    ("1-white", lambda: constant("1", 1), "a.png", 1, [1.0]),
    ("1-black", lambda: constant("1", 0), "a.bmp", 1, [0.0]),
    ("L", lambda: constant("L", 128), "a.png", 1, [128 / 255]),
    ("L-as-rgb", lambda: constant("L", 51), "a.pgm", 3, [0.2, 0.2, 0.2]),
    ("P-red", lambda: palette((255, 0, 0)), "a.png", 3, [1.0, 0.0, 0.0]),
    ("P-red-as-grey", lambda: palette((255, 0, 0)), "a.gif", 1, [76 / 255]),  # ITU-R 601 luma of red
    ("LA-alpha-dropped", lambda: constant("LA", (200, 0)), "a.png", 1, [200 / 255]),
    ("RGB", lambda: constant("RGB", (10, 20, 30)), "a.png", 3, [10 / 255, 20 / 255, 30 / 255]),
    ("RGBA-alpha-dropped", lambda: constant("RGBA", (255, 0, 0, 0)), "a.png", 3, [1.0, 0.0, 0.0]),
    ("CMYK-red", lambda: constant("CMYK", (0, 255, 255, 0)), "a.tif", 3, [1.0, 0.0, 0.0]),
    ("CMYK-half-black", lambda: constant("CMYK", (0, 0, 0, 128)), "a.tif", 1, [127 / 255]),
    ("YCbCr-grey", lambda: constant("YCbCr", (128, 128, 128)), "a.tif", 3, [128 / 255] * 3),
    ("I;16-max", lambda: sixteen_bit([65535]), "a.png", 1, [1.0]),
    ("I;16-half", lambda: sixteen_bit([32768]), "a.png", 1, [32768 / 65535]),
    ("I;16-tiff-as-rgb", lambda: sixteen_bit([32768]), "a.tif", 3, [32768 / 65535] * 3),
    ("I-from-16-bit-pgm", lambda: sixteen_bit([65535]), "a.pgm", 1, [1.0]),
    ("I-from-16-bit-pgm-half", lambda: sixteen_bit([32768]), "a.pgm", 1, [32768 / 65535]),
    ("F-in-unit-range", lambda: from_array(np.full((SIDE, SIDE), 0.25, np.float32)), "a.tif", 1, [0.25]),
]


@pytest.mark.parametrize("make, file_name, channels, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_mode_maps_to_unit_range(tmp_path: Path, make: Callable[[], Image.Image], file_name: str, channels: int,
                                 expected: Sequence[float]) -> None:
    path = tmp_path / file_name
    make().save(path)
    x = read(path, channels)
    assert x.dtype == np.float32 and x.shape == (channels, SIDE, SIDE)
    np.testing.assert_allclose(x[:, 0, 0], expected, rtol=0, atol=1e-6)


def test_sixteen_bit_values_are_not_truncated_to_eight_bits(tmp_path: Path) -> None:
    sixteen_bit([0, 1, 32768, 65535]).save(tmp_path / "a.png")
    row = read(tmp_path / "a.png", 1)[0, 0]
    np.testing.assert_allclose(row, [0.0, 1 / 65535, 32768 / 65535, 1.0], rtol=0, atol=1e-7)
    assert row[1] > 0  # 8 bits would round 1/65535 to 0


def test_sixteen_bit_pgm_with_a_small_maxval_is_scaled_by_its_maxval(tmp_path: Path) -> None:
    path = tmp_path / "a.pgm"
    pixels = np.array([0, 500, 1000, 1000], dtype=">u2")
    path.write_bytes(b"P5\n4 1\n1000\n" + np.tile(pixels, 4).tobytes())
    values = read_image(path, image_size=4, channels=1, crop=None)
    np.testing.assert_allclose(values[0, 0], [0.0, 0.5, 1.0, 1.0], atol=1e-4)


def test_sixteen_bit_images_resize_in_floats(tmp_path: Path) -> None:
    sixteen_bit([32768]).save(tmp_path / "a.png")
    x = read_image(tmp_path / "a.png", image_size=2, channels=1, crop="center")
    np.testing.assert_allclose(x, 32768 / 65535, rtol=0, atol=1e-6)


def sixteen_bit_raw(mode: str, value: int) -> Image.Image:
    dtype = ">u2" if mode == "I;16B" else "<u2"
    return Image.frombytes(mode, (SIDE, SIDE), np.full(SIDE * SIDE, value, dtype=dtype).tobytes())


def palette_alpha(colour: Sequence[int], alpha: int) -> Image.Image:
    image = palette(colour).convert("PA")
    image.putalpha(alpha)
    return image


@pytest.mark.parametrize(
    "make, channels, expected",
    [
        (lambda: constant("HSV", (0, 255, 255)), 3, [1.0, 0.0, 0.0]),  # no file format stores HSV
        (lambda: sixteen_bit_raw("I;16B", 32768), 1, [32768 / 65535]),
        (lambda: sixteen_bit_raw("I;16L", 65535), 3, [1.0, 1.0, 1.0]),
        (lambda: constant("RGBX", (0, 51, 255, 0)), 3, [0.0, 0.2, 1.0]),
        (lambda: palette_alpha((0, 255, 0), 0), 3, [0.0, 1.0, 0.0]),  # alpha dropped
    ],
    ids=["HSV", "I;16B", "I;16L", "RGBX", "PA"],
)
def test_in_memory_modes(make: Callable[[], Image.Image], channels: int, expected: Sequence[float]) -> None:
    image = unit_image(make(), channels, "memory")
    np.testing.assert_allclose(to_array(image, channels)[:, 0, 0], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "make, file_name, message",
    [
        (lambda: from_array(np.full((SIDE, SIDE), 70000, np.int32)), "a.tif",
         r"has PIL mode 'I' \(32-bit integer\) in format TIFF: its bit depth is unknown"),
        (lambda: from_array(np.full((SIDE, SIDE), 2.0, np.float32)), "a.tif",
         r"has PIL mode 'F' \(32-bit float\) with values in \[2, 2\]; only float images with values in \[0, 1\]"),
        (lambda: from_array(np.full((SIDE, SIDE), -0.5, np.float32)), "a.tif", r"mode 'F' .* values in \[-0.5, -0.5\]"),
        (lambda: from_array(np.full((SIDE, SIDE), np.nan, np.float32)), "a.tif", r"mode 'F' .* NaN or infinite"),
        (lambda: constant("LAB", (50, 0, 0)), "a.tif", r"has PIL mode 'LAB', which cannot be mapped to \[0, 1\]"),
    ],
    ids=["I-32-bit-tiff", "F-above-1", "F-negative", "F-nan", "LAB"],
)
@pytest.mark.parametrize("channels", [1, 3])
def test_modes_that_cannot_be_mapped_are_refused_by_name(tmp_path: Path, make: Callable[[], Image.Image],
                                                        file_name: str, message: str, channels: int) -> None:
    path = tmp_path / file_name
    make().save(path)
    with pytest.raises(ValueError, match=message) as info:
        read(path, channels)
    assert str(path) in str(info.value)


def test_in_memory_int32_has_no_known_bit_depth() -> None:
    with pytest.raises(ValueError, match=r"mode 'I' \(32-bit integer\) in format None"):
        unit_image(from_array(np.zeros((2, 2), np.int32)), 1, "memory")


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.png"):
        read(path, 1)


# --------------------------------------------------------------------------------------------------
# Whole folders: every mode through load_image_folder
# --------------------------------------------------------------------------------------------------


def write_folder(root: Path, images: Sequence[Image.Image], file_name: str = "{}.png") -> Path:
    """Two identities ``a`` and ``b``, each with every image of ``images``."""
    for identity in ("a", "b"):
        (root / identity).mkdir(parents=True)
        for j, image in enumerate(images):
            image.save(root / identity / file_name.format(j))
    return root


@pytest.mark.parametrize(
    "images, file_name, expected",
    [
        ([sixteen_bit([65535]), sixteen_bit([32768])], "{}.png", [1.0, 32768 / 65535]),
        ([sixteen_bit([0]), sixteen_bit([65535])], "{}.tiff", [0.0, 1.0]),
        ([from_array(np.full((SIDE, SIDE), 0.75, np.float32))] * 2, "{}.tif", [0.75, 0.75]),
        ([constant("CMYK", (0, 0, 0, 255)), constant("CMYK", (0, 0, 0, 0))], "{}.tif", [0.0, 1.0]),
    ],
    ids=["I;16-png", "I;16-tiff", "F-tiff", "CMYK-tiff"],
)
def test_image_folder_reads_high_depth_and_cmyk_files(tmp_path: Path, images, file_name: str,
                                                      expected: Sequence[float]) -> None:
    root = write_folder(tmp_path / "faces", images, file_name)
    data = load_image_folder(root, private=1, image_size=SIDE, crop=None, test_fraction=0.5)
    assert data.channels == 1  # all these images are grey
    np.testing.assert_allclose(np.sort(data.public.x[:, 0, 0, 0]), sorted(expected), rtol=0, atol=1e-6)


def test_image_folder_refuses_an_unmappable_file_by_name(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "faces", [from_array(np.full((SIDE, SIDE), 3.0, np.float32))] * 2, "{}.tif")
    with pytest.raises(ValueError, match=r"0\.tif has PIL mode 'F'"):
        load_image_folder(root, private=1, image_size=SIDE, channels=1)


# --------------------------------------------------------------------------------------------------
# Channel inference
# --------------------------------------------------------------------------------------------------

RED = constant("RGB", (200, 30, 30))
GREY_AS_RGB = constant("RGB", (90, 90, 90))


@pytest.mark.parametrize(
    "images, inferred",
    [
        ([RED, RED], 3),
        ([GREY_AS_RGB, GREY_AS_RGB], 1),  # an RGB file of a grey photo is grey
        ([GREY_AS_RGB, RED, GREY_AS_RGB], 3),  # any colour image makes it colour
        ([constant("L", 90)] * 2, 1),
        ([palette((120, 120, 120))] * 2, 1),
        ([palette((0, 0, 255))] * 2, 3),
        ([constant("RGBA", (0, 255, 0, 128))] * 2, 3),
        ([sixteen_bit([1000])] * 2, 1),
        ([constant("RGB", (90, 91, 92))] * 2, 1),  # within the grey tolerance of 2 levels
    ],
    ids=["rgb-colour", "rgb-grey", "mixed", "L", "P-grey", "P-colour", "RGBA", "I;16", "rgb-near-grey"],
)
def test_channels_are_inferred_from_the_images(tmp_path: Path, caplog: pytest.LogCaptureFixture, images,
                                               inferred: int) -> None:
    root = write_folder(tmp_path / "faces", images)
    with caplog.at_level(logging.INFO, logger="mi_art.data"):
        data = load_image_folder(root, private=1, image_size=SIDE)
    assert data.channels == inferred and data.input_shape == (inferred, SIDE, SIDE)
    lines = [r.getMessage() for r in caplog.records if r.name == "mi_art.data"]
    assert len(lines) == 1 and f"inferred channels={inferred}" in lines[0] and str(root) in lines[0]


def test_colour_photos_stay_colour(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "faces", [RED, RED])
    data = load_image_folder(root, private=1, image_size=SIDE)
    np.testing.assert_allclose(data.public.x[0, :, 0, 0], [200 / 255, 30 / 255, 30 / 255], atol=1e-6)


@pytest.mark.parametrize("channels", [1, 3])
def test_explicit_channels_win_and_are_not_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                  channels: int) -> None:
    root = write_folder(tmp_path / "faces", [RED, RED])
    with caplog.at_level(logging.INFO, logger="mi_art.data"):
        data = load_image_folder(root, private=1, image_size=SIDE, channels=channels)
    assert data.channels == channels
    assert not [r for r in caplog.records if r.name == "mi_art.data"]
    luma = (0.299 * 200 + 0.587 * 30 + 0.114 * 30) / 255
    expected = [luma] if channels == 1 else [200 / 255, 30 / 255, 30 / 255]
    np.testing.assert_allclose(data.public.x[0, :, 0, 0], expected, atol=1 / 255)


def test_inference_samples_evenly_and_stops_at_the_first_colour(tmp_path: Path) -> None:
    grey, red = tmp_path / "grey.png", tmp_path / "red.png"
    GREY_AS_RGB.save(grey)
    RED.save(red)
    many_grey = [grey] * 99 + [red]
    assert infer_channels(many_grey, "x", sample=5) == 3  # the last image is always sampled
    red_at_20 = [grey] * 20 + [red] + [grey] * 79
    assert infer_channels(red_at_20, "x", sample=3) == 1  # images 0, 50 and 99 are sampled
    assert infer_channels(red_at_20, "x", sample=100) == 3
    assert infer_channels([], "x") == 1


def test_celeba_infers_channels_when_asked(tmp_path: Path) -> None:
    (tmp_path / "img_align_celeba").mkdir()
    lines = []
    for k, identity in enumerate((1, 1, 2, 2, 3)):
        name = f"{k:06d}.png"
        constant("RGB", (0, 0, 200), side=120).save(tmp_path / "img_align_celeba" / name)
        lines.append(f"{name} {identity}")
    (tmp_path / "identity_CelebA.txt").write_text("\n".join(lines))
    data = load_celeba(tmp_path, num_private=2, image_size=SIDE, channels=None, test_fraction=0.5)
    assert data.channels == 3
    np.testing.assert_allclose(data.public.x[0, :, 0, 0], [0.0, 0.0, 200 / 255], atol=1e-6)
