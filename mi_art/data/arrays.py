"""Helpers for sources that arrive as arrays (scikit-learn digits, IDX files): resize, repeat the grey
channel, remap class labels."""
from __future__ import annotations

from typing import Sequence

import numpy as np

_RESIZE_BLOCK = 4096  # images resized per torch call


def resize_array(x: np.ndarray, image_size: int) -> np.ndarray:
    """Bilinearly resize ``(N, C, H, W)`` images to ``image_size`` (antialiased), in blocks."""
    if x.shape[-2:] == (image_size, image_size):
        return x
    import torch
    import torch.nn.functional as F

    out = np.empty(x.shape[:2] + (image_size, image_size), dtype=np.float32)
    for start in range(0, len(x), _RESIZE_BLOCK):
        block = torch.from_numpy(np.ascontiguousarray(x[start : start + _RESIZE_BLOCK]))
        resized = F.interpolate(block, size=(image_size, image_size), mode="bilinear", align_corners=False,
                                antialias=True)
        out[start : start + len(block)] = resized.clamp_(0.0, 1.0).numpy()
    return out


def finish_array(images: np.ndarray, *, image_size: int, channels: int) -> np.ndarray:
    """Turn ``(N, H, W)`` images in ``[0, 1]`` into ``(N, channels, image_size, image_size)``."""
    x = resize_array(images[:, None].astype(np.float32, copy=False), image_size)
    return np.repeat(x, channels, axis=1) if channels > 1 else x


def remap(labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Map each label to its position in ``classes``."""
    lookup = np.full(int(max(classes)) + 1, -1, dtype=np.int64)
    lookup[list(classes)] = np.arange(len(classes))
    return lookup[labels]
