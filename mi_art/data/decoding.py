"""Image decoding: every PIL mode a user may have is mapped to ``[0, 1]`` or refused by name.

============================  ==========================================================================
PIL mode                      how it is read
============================  ==========================================================================
``1``, ``L``                  bilevel / 8-bit grey: divided by 255 (``1`` gives exactly 0 or 1)
``P``                         palette: the palette's colours, divided by 255
``RGB``, ``RGBX``, ``RGBa``   divided by 255 (``RGBa``: premultiplied alpha undone, then dropped)
``LA``, ``RGBA``, ``PA``      as ``L``, ``RGB``, ``P``; the alpha band is **dropped** (not composited
                              on black): a transparent pixel keeps the colour stored under it
``CMYK``, ``YCbCr``, ``HSV``  PIL's conversion to RGB, then divided by 255
``I;16`` (``B``/``L``/``N``)  16-bit grey: divided by 65535 (65535 -> 1.0, 32768 -> 0.50001)
``I``                         32-bit integer: read only from PNG and PGM/PPM files, which hold at most
                              16 bits per sample (Pillow scales a PGM's ``maxval`` to 65535): divided
                              by 65535. From any other format (e.g. a 32-bit TIFF) its bit depth is
                              unknown, so it is refused by name.
``F``                         32-bit float: used as is when every value lies in ``[0, 1]``, else refused
anything else (``LAB``, ...)  refused by name
============================  ==========================================================================

An image is then converted to the channels asked for: colour to grey by ITU-R 601 luma
(``L = 0.299 R + 0.587 G + 0.114 B``, PIL's ``convert("L")``), grey to colour by repeating the
channel. 8-bit images are cropped and resized by PIL in 8 bits (the values of earlier versions);
16-bit, 32-bit and float images in 32-bit floats, never truncated to 8 bits.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import PIL
from PIL import Image

from .checks import Crop
from .dataset import MIDataset, Split
from .identities import flatten

logger = logging.getLogger("mi_art.data")

#: Modes read through PIL's own 8-bit conversion to 'L' or 'RGB' (alpha and padding bands dropped).
EIGHT_BIT_MODES: Tuple[str, ...] = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr",
                                    "HSV")
#: 16-bit greyscale modes, divided by 65535.
SIXTEEN_BIT_MODES: Tuple[str, ...] = ("I;16", "I;16L", "I;16B", "I;16N")
#: Every mode :func:`unit_image` reads.
SUPPORTED_MODES: Tuple[str, ...] = EIGHT_BIT_MODES + SIXTEEN_BIT_MODES + ("I", "F")
#: Modes that cannot hold colour (no need to decode to tell).
GREY_MODES: Tuple[str, ...] = ("1", "L", "LA", "I", "F") + SIXTEEN_BIT_MODES
#: File formats whose mode-'I' images hold at most 16 bits per sample.
SIXTEEN_BIT_I_FORMATS: Tuple[str, ...] = ("PNG", "PPM")
#: Pillow scales a PGM's ``maxval`` to 65535 since 9.3; before, a 16-bit PGM's values are raw.
_PILLOW_SCALES_PGM = tuple(int(p) for p in PIL.__version__.split(".")[:2]) >= (9, 3)
#: Largest channel spread (max - min of R, G, B, in 0..255) of a pixel still counted as grey.
GREY_TOLERANCE = 2
#: Images decoded to infer the channel count.
INFER_SAMPLE = 32

_IO_BLOCK = 1024  # images decoded per batch of thread-pool work


def _float_image(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(values, dtype=np.float32))  # 2-D float32: mode 'F'


def _from_int32(image: Image.Image, source: str) -> np.ndarray:
    if image.format not in SIXTEEN_BIT_I_FORMATS:
        raise ValueError(f"image {source} has PIL mode 'I' (32-bit integer) in format {image.format}: its bit "
                         "depth is unknown, so it cannot be mapped to [0, 1]; save it as 8-bit ('L') or 16-bit "
                         "('I;16') greyscale")
    if image.format == "PPM" and not _PILLOW_SCALES_PGM:
        raise ValueError(f"image {source} is a 16-bit PGM/PPM and Pillow {PIL.__version__} does not scale its "
                         "maxval to 16 bits: upgrade Pillow to 9.3 or later, or save it as 16-bit PNG")
    values = np.asarray(image, dtype=np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ValueError(f"image {source} has PIL mode 'I' with values in [{values.min()}, {values.max()}], "
                         "outside the 16-bit range [0, 65535] its format allows")
    return values.astype(np.float32) / 65535.0


def _from_float(image: Image.Image, source: str) -> np.ndarray:
    values = np.asarray(image, dtype=np.float32)
    if not np.isfinite(values).all():
        raise ValueError(f"image {source} has PIL mode 'F' (32-bit float) with NaN or infinite values; only "
                         "float images with values in [0, 1] can be read")
    if values.size and (values.min() < 0.0 or values.max() > 1.0):
        raise ValueError(f"image {source} has PIL mode 'F' (32-bit float) with values in "
                         f"[{values.min():g}, {values.max():g}]; only float images with values in [0, 1] can "
                         "be read: rescale it to [0, 1] or save it as 8-bit")
    return values


def unit_image(image: Image.Image, channels: int, source: str) -> Image.Image:
    """Convert ``image`` for reading into ``[0, 1]``.

    Parameters
    ----------
    image : PIL.Image.Image
        An opened image, of any mode of :data:`SUPPORTED_MODES`.
    channels : int
        1 or 3: the channels wanted (8-bit images are converted to 'L' or 'RGB').
    source : str
        Where the image comes from, for error messages.

    Returns
    -------
    PIL.Image.Image
        An 8-bit 'L' or 'RGB' image (0..255 stand for [0, 1]) or a one-band 'F' image with values
        in [0, 1] (greyscale of 16 or more bits; :func:`to_array` repeats it for 3 channels).

    Raises
    ------
    ValueError
        If the mode cannot be mapped to [0, 1] (see the module's table), naming the mode.
    """
    mode = image.mode
    if mode in EIGHT_BIT_MODES:
        return image.convert("L" if channels == 1 else "RGB")
    if mode in SIXTEEN_BIT_MODES:
        return _float_image(np.asarray(image).astype(np.float32) / 65535.0)
    if mode == "I":
        return _float_image(_from_int32(image, source))
    if mode == "F":
        return _float_image(_from_float(image, source))
    raise ValueError(f"image {source} has PIL mode {mode!r}, which cannot be mapped to [0, 1]; supported "
                     f"modes: {', '.join(SUPPORTED_MODES)} (convert it to 'L' or 'RGB' first)")


def to_array(image: Image.Image, channels: int) -> np.ndarray:
    """``float32`` array ``(channels, H, W)`` in ``[0, 1]`` from an image made by :func:`unit_image`."""
    if image.mode == "F":
        grey = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)[None]
        return np.repeat(grey, channels, axis=0) if channels == 3 else grey
    array = np.asarray(image, dtype=np.float32) / 255.0
    return array[None] if image.mode == "L" else array.transpose(2, 0, 1)


def crop_box(width: int, height: int, crop: Crop, path: Path) -> Optional[Tuple[int, int, int, int]]:
    """Box ``(left, top, right, bottom)`` of the centred crop, or None for no crop."""
    if crop is None:
        return None
    side = min(width, height) if crop == "center" else int(crop)
    if side > width or side > height:
        raise ValueError(f"crop {side} is larger than image {path} ({width}x{height})")
    left, top = (width - side) // 2, (height - side) // 2
    return (left, top, left + side, top + side)


def _open(path: Path, channels: int) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return unit_image(image, channels, str(path))
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc


def read_image(path: Path, *, image_size: int, channels: int, crop: Crop) -> np.ndarray:
    """Read one image as ``float32`` ``(channels, image_size, image_size)`` in ``[0, 1]``.

    The image is mapped to ``[0, 1]`` by :func:`unit_image`, centre-cropped as ``crop`` says and
    resized with PIL's bilinear filter (antialiased when shrinking).
    """
    image = _open(path, channels)
    box = crop_box(image.width, image.height, crop, path)
    if box is not None:
        image = image.crop(box)
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.BILINEAR)
    return to_array(image, channels)


def read_images(paths: Sequence[Path], *, image_size: int, channels: int, crop: Crop) -> np.ndarray:
    """Read many images into one preallocated ``(N, C, H, W)`` array (threads decode in parallel)."""
    out = np.empty((len(paths), channels, image_size, image_size), dtype=np.float32)
    load = partial(read_image, image_size=image_size, channels=channels, crop=crop)
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


def image_split(groups: Sequence[Sequence[Path]], *, image_size: int, channels: int, crop: Crop) -> Split:
    """Build a :class:`Split` from per-label lists of image paths."""
    paths, labels = flatten(groups)
    return Split(read_images(paths, image_size=image_size, channels=channels, crop=crop), labels)


def image_dataset(name: str, folder: Path, groups: Tuple[Sequence[Sequence[Path]], ...],
                  identities: Tuple[Sequence[str], Sequence[str]], *, image_size: int, channels: Optional[int],
                  crop: Crop) -> MIDataset:
    """Read the ``(private train, private test, public)`` per-identity path groups of an image source into
    an :class:`MIDataset`; ``channels=None`` infers them from the images (:func:`infer_channels`)."""
    if channels is None:
        channels = infer_channels([p for split in groups for group in split for p in group], str(folder))
    train, test, public = (image_split(split, image_size=image_size, channels=channels, crop=crop)
                           for split in groups)
    private_names, public_names = identities
    return MIDataset(name=name, private_train=train, private_test=test, public=public,
                     private_identities=tuple(private_names), public_identities=tuple(public_names),
                     image_size=image_size, channels=channels)


def is_colour(image: Image.Image, source: str) -> bool:
    """Whether ``image`` shows colour: some pixel's R, G, B differ by more than :data:`GREY_TOLERANCE`
    (an RGB file of a greyscale photo is grey)."""
    if image.mode in GREY_MODES:
        return False
    if image.mode not in SUPPORTED_MODES:
        unit_image(image, 1, source)  # refuses the mode by name
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    return bool((rgb.max(axis=2) - rgb.min(axis=2) > GREY_TOLERANCE).any())


def _file_is_colour(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            return is_colour(image, str(path))
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc


def infer_channels(paths: Sequence[Path], source: str, sample: int = INFER_SAMPLE) -> int:
    """3 if any of ``sample`` images spread evenly over ``paths`` shows colour, else 1; logs the choice.

    Parameters
    ----------
    paths : sequence of Path
        The images of the dataset.
    source : str
        The dataset's folder, for the log line.
    sample : int, default INFER_SAMPLE
        Number of images decoded at most.
    """
    if not paths:
        return 1
    picks = np.unique(np.linspace(0, len(paths) - 1, min(sample, len(paths))).round().astype(int))
    colour = next((paths[i] for i in picks if _file_is_colour(paths[i])), None)
    if colour is not None:
        logger.info("%s: channels=None, inferred channels=3 (colour images, e.g. %s); pass channels=1 for "
                    "greyscale", source, colour.name)
        return 3
    logger.info("%s: channels=None, inferred channels=1 (%d sampled images are all greyscale); pass "
                "channels=3 for RGB", source, len(picks))
    return 1
