"""Random views of generated images, over which a GAN attack averages its identity loss at every search step
(``views`` and ``view_transform`` of :class:`~mi_art.attacks.base.GANInversionAttack`). Two transforms, by name
(:data:`VIEW_TRANSFORMS`):

* ``"plgmi"`` (every attack's default), :func:`mi_art.priors.plgmi.random_views`: PLG-MI's augmentation, a square
  crop of 0.8 to 1 of the area, a flip, a rotation of up to 5 degrees half the time, and a brightness and contrast
  jitter half the time;
* ``"alignmi"``, :func:`alignment_views`: the transformations of AlignMI's training-free alignment (TAA; Peng
  et al., NeurIPS 2025, https://arxiv.org/abs/2509.20177, code ``AlanPeng0897/AlignMI``), geometric only: a
  random resized crop of 0.8 to 1 of the area with an aspect ratio of 0.9 to 1.1, a flip, and a rotation of up
  to 5 degrees every time. No colour change: the averaged gradient is meant to follow the image's geometry
  (the data manifold's tangent directions), not its photometry.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F

__all__ = ["ALIGNMI_AREA", "ALIGNMI_ASPECT", "ALIGNMI_DEGREES", "VIEW_TRANSFORMS", "alignment_views"]

#: The names ``view_transform`` takes: PLG-MI's views (the default) and AlignMI's.
VIEW_TRANSFORMS: Tuple[str, ...] = ("plgmi", "alignmi")
#: AlignMI's crop: the fraction of the image's area kept (its KEDMI TAA; its GMI TAA keeps 0.9 to 1).
ALIGNMI_AREA = (0.8, 1.0)
#: AlignMI's crop: the range of its width over its height.
ALIGNMI_ASPECT = (0.9, 1.1)
#: AlignMI's rotation: uniform in plus or minus this many degrees (its KEDMI TAA; its GMI TAA rotates 3).
ALIGNMI_DEGREES = 5.0


def alignment_views(x: torch.Tensor) -> torch.Tensor:
    """A random view of each image in [0, 1] (N, C, H, W), differentiable, as AlignMI's TAA transforms: a crop of
    :data:`ALIGNMI_AREA` of the area with an aspect ratio in :data:`ALIGNMI_ASPECT` (log-uniform, as torchvision's
    ``RandomResizedCrop``) at a uniform position, resized back; a horizontal flip (p 0.5); a rotation uniform in
    plus or minus :data:`ALIGNMI_DEGREES`.

    Deviations from the authors' torchvision pipeline, none changing what the views test: each image gets its
    own draw (torchvision draws one transformation per batch); the corners a rotation uncovers are filled from
    the image around the crop (reflected at its border) rather than black; a crop wider or taller than the
    image is cut to it rather than drawn again; the images are not min-max rescaled afterwards."""
    n, device = len(x), x.device
    area = torch.empty(n, device=device).uniform_(*ALIGNMI_AREA)
    log_aspect = torch.empty(n, device=device).uniform_(math.log(ALIGNMI_ASPECT[0]), math.log(ALIGNMI_ASPECT[1]))
    width = (area * log_aspect.exp()).sqrt().clamp(max=1.0)  # of the image's width
    height = (area / log_aspect.exp()).sqrt().clamp(max=1.0)
    shift_x = (1 - width) * torch.empty(n, device=device).uniform_(-1, 1)
    shift_y = (1 - height) * torch.empty(n, device=device).uniform_(-1, 1)
    angle = torch.empty(n, device=device).uniform_(-ALIGNMI_DEGREES, ALIGNMI_DEGREES) * math.pi / 180
    flip = torch.where(torch.rand(n, device=device) < 0.5, -torch.ones(n, device=device), torch.ones(n, device=device))
    cos, sin = torch.cos(angle), torch.sin(angle)
    # an output point p samples the image at crop(flip(rotate(p))): the crop scales each axis and shifts
    theta = torch.stack([torch.stack([width * flip * cos, width * flip * sin, shift_x], 1),
                         torch.stack([-height * sin, height * cos, shift_y], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
