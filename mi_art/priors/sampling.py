"""Samples of a GAN prior: the images the attacks start from, and a grid of them to look at."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..utils import atomic_file, eval_mode
from .networks import LATENT_DIM


def prior_samples(generator: nn.Module, n: int, *, seed: int = 0, batch_size: int = 256) -> np.ndarray:
    """``n`` images of a GAN prior from latents drawn as the attacks start (N(0, 1) clamped to [-1, 1]); a
    class-conditional generator (one with ``num_classes``) gets classes drawn uniformly."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, int(getattr(generator, "latent_dim", LATENT_DIM)), generator=gen).clamp(-1, 1)
    classes = getattr(generator, "num_classes", None)
    y = None if classes is None else torch.randint(int(classes), (n,), generator=gen)
    device = next(generator.parameters()).device
    with torch.no_grad(), eval_mode(generator):
        return torch.cat([(generator(z[i:i + batch_size].to(device)) if y is None else
                           generator(z[i:i + batch_size].to(device), y[i:i + batch_size].to(device))).cpu()
                          for i in range(0, n, batch_size)]).numpy()


def save_sample_grid(generator: nn.Module, path: Path, *, n: int = 64, seed: int = 0) -> Path:
    """A PNG grid of ``n`` samples of a GAN prior (8 per row), written atomically through a temporary file of
    this writer's own, so that processes sharing a cache may write the same grid at once."""
    from torchvision.utils import save_image

    with atomic_file(path) as f:
        save_image(torch.from_numpy(prior_samples(generator, n, seed=seed)), f, format="png", nrow=8, padding=1)
    return path
