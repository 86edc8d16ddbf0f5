"""Argument checks proper to the data loaders: folders, image sizes, channels, crops, seeds.

Generic checks (integers, numbers, choices, booleans) come from :mod:`mi_art.validation`; this
module only adds what is specific to reading data, with the same kind of message: the parameter,
the value, and what would be valid.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ..validation import check_count, check_int, check_number, is_int

#: Largest ``image_size`` accepted (a typo such as 6400 for 64 would otherwise exhaust memory).
MAX_IMAGE_SIZE = 1024

#: Largest loader ``seed`` (what NumPy's legacy seeding and scikit-learn accept).
MAX_SEED = 2**32 - 1

Crop = Union[str, int, None]
PathLike = Union[str, "os.PathLike[str]"]


def check_image_size(value: Any) -> int:
    """Height and width of the output images: an integer in ``[1, MAX_IMAGE_SIZE]``."""
    return check_int("image_size", value, low=1, high=MAX_IMAGE_SIZE)


def check_channels(value: Any, *, allow_none: bool = True) -> Optional[int]:
    """1 (greyscale), 3 (RGB), or None (infer from the images) where ``allow_none``."""
    if value is None and allow_none:
        return None
    if not is_int(value) or int(value) not in (1, 3):
        infer = ", or None to infer it from the images" if allow_none else ""
        raise ValueError(f"channels must be 1 (greyscale) or 3 (RGB){infer}, got {value!r}")
    return int(value)


def check_test_fraction(value: Any) -> float:
    """Share of each private identity's images held out: a number in ``(0, 1)``."""
    return check_number("test_fraction", value, low=0, high=1, low_open=True, high_open=True)


def check_loader_seed(value: Any) -> int:
    """Seed of a loader's shuffles: an integer in ``[0, MAX_SEED]``."""
    seed = check_int("seed", value, low=0)
    if seed > MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], got {value!r}")
    return seed


def check_optional_limit(name: str, value: Any) -> Optional[int]:
    """None (no limit) or a positive integer."""
    return None if value is None else check_count(name, value, hint="; use None for no limit")


def check_crop(value: Any) -> Crop:
    """``"center"`` (largest centred square), None (no crop) or a positive integer side."""
    if value is None or (isinstance(value, str) and value == "center"):
        return value
    if is_int(value) and int(value) >= 1:
        return int(value)
    raise ValueError(f"crop must be 'center', None or a positive integer (the side of a centred square), "
                     f"got {value!r}")


def check_name(value: Any) -> Optional[str]:
    """A dataset name: None (use the default) or a non-empty string."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"name must be None or a non-empty string, got {value!r}")
    return value


def check_root(root: Any, what: str) -> Path:
    """``root`` must name an existing folder; returns it with ``~`` expanded."""
    if not isinstance(root, (str, os.PathLike)) or (isinstance(root, str) and not root.strip()):
        raise ValueError(f"root must be the path of the {what} folder (a non-empty str or pathlib.Path), "
                         f"got {root!r}")
    path = Path(root).expanduser()
    if not path.exists():
        raise ValueError(f"{what} folder does not exist: {path}")
    if not path.is_dir():
        raise ValueError(f"{what} path is not a folder: {path}")
    return path


def preview(names: Sequence[Any], limit: int = 5) -> str:
    """Format at most ``limit`` names for an error message."""
    shown = ", ".join(repr(n) for n in list(names)[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
