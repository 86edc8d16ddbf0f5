"""What the metrics take: the types of their inputs (images, models, devices) and the one check of their images.

See :mod:`mi_art.evaluations.metrics` for what the images and models are and where they meet."""
from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np
import torch

from mi_art.validation import check_images

ArrayLike = Union[np.ndarray, torch.Tensor]
DeviceLike = Optional[Union[str, torch.device]]
#: an ART PyTorch estimator or a ``torch.nn.Module``
ModelLike = Any


def checked_images(x: ArrayLike, name: str = "x") -> torch.Tensor:
    """``x`` checked by the shared :func:`~mi_art.validation.check_images`, as a float32 CPU tensor."""
    return torch.as_tensor(check_images(x, name))
