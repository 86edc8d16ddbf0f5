"""Candidate selection as Plug & Play Attacks does it (Struppek et al., ICML 2022,
https://arxiv.org/abs/2201.12179, Sec. 4.3): search more candidates per identity than are wanted, then keep
those the target still recognises when the image is cropped, flipped and slightly rotated.

A reconstruction that holds the target's decision only at one exact position of its pixels has found a
weakness of the target, not the person; one that survives small changes of framing carries features a
different model is likelier to recognise too. Every attack takes it (``n_candidates``,
:class:`~mi_art.attacks.base.GANInversionAttack`).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

#: Random views each candidate is scored on (PPA uses 100 on 224 px faces; 16 already rank 32 px candidates
#: consistently, and each view is a forward pass of the target).
SELECTION_VIEWS = 16
#: The views' ranges: the kept fraction of the side (a random resized crop), the rotation in degrees, and a
#: horizontal flip with probability 1/2.
CROP_SCALE = (0.8, 1.0)
MAX_ROTATION = 5.0


def random_views(images: torch.Tensor, views: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``views`` random views of each image (NCHW, in [0, 1]), ordered view-major (``views * N`` images): a
    crop of :data:`CROP_SCALE` of the side at a random place, resized back, rotated by up to
    :data:`MAX_ROTATION` degrees and flipped horizontally half the time (one affine resampling)."""
    n = len(images)
    shape = (views, n)
    rand = lambda: torch.rand(shape, generator=generator).to(images.device)  # noqa: E731
    scale = CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * rand()
    angle = math.radians(MAX_ROTATION) * (2 * rand() - 1)
    flip = torch.where(rand() < 0.5, -1.0, 1.0)
    shift_x, shift_y = (1 - scale) * (2 * rand() - 1), (1 - scale) * (2 * rand() - 1)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos * flip, -sin, shift_x], -1),
                         torch.stack([sin * flip, cos, shift_y], -1)], -2).reshape(views * n, 2, 3)
    batch = images.repeat(views, 1, 1, 1)
    grid = F.affine_grid(theta.to(images.dtype), list(batch.shape), align_corners=False)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


@torch.no_grad()
def robust_confidence(confidence: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], images: torch.Tensor,
                      labels: torch.Tensor, views: int = SELECTION_VIEWS, seed: Optional[int] = None,
                      batch_size: int = 256) -> torch.Tensor:
    """Each image's mean ``confidence(views_of_images, labels)`` over ``views`` :func:`random_views`."""
    generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
    scores = torch.zeros(len(images), device=images.device)
    for start in range(0, len(images), batch_size):
        chunk, y = images[start:start + batch_size], labels[start:start + batch_size]
        seen = random_views(chunk, views, generator)
        scores[start:start + batch_size] = confidence(seen, y.repeat(views)).view(views, -1).mean(0)
    return scores


def keep_best(scores: torch.Tensor, per_identity: int, keep: int) -> torch.Tensor:
    """Indices of the ``keep`` highest ``scores`` of each identity's ``per_identity`` consecutive candidates
    (the candidates are ordered identity by identity), best first within each identity."""
    table = scores.view(-1, per_identity)
    best = table.topk(keep, dim=1).indices
    return (best + per_identity * torch.arange(len(table), device=scores.device).view(-1, 1)).reshape(-1)
