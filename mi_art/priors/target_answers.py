"""What a prior made against a target (KEDMI's, PLG-MI's) takes from it before training: the target as a
module and its softmax on the public images, which the GAN then sees in [0, 1] channels first."""
from __future__ import annotations

from typing import Any, Tuple

import torch
import torch.nn.functional as F

from ..utils import DeviceLike, EstimatorModule, as_module, batched_logits
from ..validation import check_finite, check_images


def public_through_target(target: Any, public_x: Any, *, output_index: Any = None,
                          device: DeviceLike = None) -> Tuple[EstimatorModule, torch.Tensor, torch.Tensor]:
    """``target`` (an ART estimator or a module) as an eval-mode view on ``device``, the public images
    (given in its input space, as for ``predict``) mapped to [0, 1] channels first, and its softmax on them."""
    view = as_module(target, "target", output_index=output_index).to(device).eval()
    x = torch.from_numpy(check_images(public_x, "public_x")).to(device)
    view.check_input_range(x, "public_x")
    probs = F.softmax(check_finite(batched_logits(view, x), "the target's outputs on public_x"), 1)
    return view, view.to_unit(x), probs
