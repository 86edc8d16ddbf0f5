"""GMI's general prior (Zhang et al., CVPR 2020, https://arxiv.org/abs/1911.07135): a WGAN-GP on public
images, its losses, and the prior term of the GMI attack (``-D(G(z))``)."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import nn
from tqdm.auto import trange

from ..training import augment_batch, infinite_batches, show_progress
from ..utils import DeviceLike, resolve_device, seed_everything
from ..validation import check_count, check_finite_at, check_number, check_positive, check_unit_images
from .networks import LATENT_DIM, Critic, Generator


def wgan_prior_loss(critic_scores: torch.Tensor) -> torch.Tensor:
    """GMI prior, per sample: ``-D(G(z))``."""
    return -critic_scores.view(-1)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP penalty ``E[(||grad D(x_hat)||_2 - 1)^2]`` on random interpolates of real and fake."""
    alpha = torch.rand(real.size(0), 1, 1, 1, device=real.device)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    grad, = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()


def train_gmi_prior(public_x: Any, *, steps: int = 1500, batch_size: int = 64, n_critic: int = 5,
                    gp_weight: float = 10.0, lr: float = 2e-4, betas: Tuple[float, float] = (0.5, 0.999),
                    augment: str = "none", width: int = 32, latent_dim: int = LATENT_DIM,
                    clip_values: Optional[Tuple[float, float]] = None, device: DeviceLike = None,
                    seed: Optional[int] = 0, verbose: bool = False) -> Tuple[Generator, Critic]:
    """GMI's general prior: WGAN-GP on public images (``n_critic`` critic steps per generator step).

    ``public_x`` are NCHW images in [0, 1], where the generator's sigmoid puts its samples, or in
    ``clip_values`` ``(lo, hi)`` (e.g. ``(0, 255)``, a target estimator's range), mapped to [0, 1] here."""
    steps, n_critic = check_count("steps", steps), check_count("n_critic", n_critic)
    batch_size, lr = check_count("batch_size", batch_size), check_positive("lr", lr)
    check_number("gp_weight", gp_weight, low=0)
    seed_everything(seed)
    device = resolve_device(device)
    x = torch.from_numpy(check_unit_images(public_x, "public_x", clip_values)).to(device)
    _, c, s, _ = x.shape
    batch_size = min(batch_size, len(x))
    gen, critic = Generator(s, c, latent_dim, width).to(device), Critic(s, c, width).to(device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(critic.parameters(), lr=lr, betas=betas)
    data = infinite_batches(x, batch_size)
    bar = trange(steps, desc="train GMI prior (WGAN-GP)", disable=not verbose)
    for step in bar:
        for _ in range(n_critic):
            real = augment_batch(next(data), augment)
            with torch.no_grad():
                fake = gen(torch.randn(batch_size, latent_dim, device=device))
            d_loss = critic(fake).mean() - critic(real).mean() + gp_weight * gradient_penalty(critic, real, fake)
            check_finite_at(d_loss, "the WGAN-GP critic's loss", step, steps)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        g_loss = check_finite_at(-critic(gen(torch.randn(batch_size, latent_dim, device=device))).mean(),
                                 "the WGAN-GP generator's loss", step, steps)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if step % 50 == 0:
            show_progress(bar, (n_critic + 1) * batch_size, d=d_loss, g=g_loss)
    return gen.eval(), critic.eval()
