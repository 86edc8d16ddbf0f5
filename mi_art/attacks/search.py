"""The latent searches of the attacks: how each one looks for the GAN prior's codes of an identity.

Each search takes the generator, the labels of the reconstructions, the attack's loss of a batch
(``loss(images, labels, iteration) -> scalar``: the prior's term and the identity loss over the model set,
see :meth:`~mi_art.attacks.base.GANInversionAttack._objective`) and its own settings, and returns the
reconstructions in [0, 1] (the generator's space), on the device, in the order of ``labels`` repeated
``n`` times each (:func:`torch.repeat_interleave`).

- :func:`point_search`: GMI's, one code per reconstruction, SGD with (Nesterov) momentum, clamped to [-1, 1];
- :func:`gaussian_search`: KEDMI's, a diagonal Gaussian per identity, one sample a step, Adam; afterwards
  ``n`` samples;
- :func:`variational_search`: VMI's, a full-covariance Gaussian per identity, several samples a step, its
  KL divergence to the prior N(0, I) in the loss;
- :func:`conditional_search`: PLG-MI's, one code per reconstruction of the identity's conditional generator
  ``G(z, y)``, Adam, kept on the sphere where ``N(0, I)``'s codes lie (or, as the authors' code, not at all).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch
from torch import nn

from ..training import show_progress

Loss = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def _tick(bar: Optional[object], images: int) -> None:
    """One step of the search on the progress bar, with the images a second it synthesises."""
    if bar is not None:
        bar.update(1)
        show_progress(bar, images)


def _new_batch(bar: Optional[object], start: int, n: int, batch_size: int) -> None:
    """The bar counts one batch's ``iterations`` (what the user asked for), not the sum over batches: from the
    second batch on it starts again, and with several batches its title says which one runs."""
    count = -(-n // batch_size)
    if bar is None or count == 1:
        return
    if start:
        bar.reset()
    title = getattr(bar, "search_title", "")
    bar.set_description(f"{title} batch {start // batch_size + 1}/{count}".strip(), refresh=False)


def _step(loss: torch.Tensor, params: List[torch.Tensor], opt: torch.optim.Optimizer) -> None:
    grads = torch.autograd.grad(loss, params)
    for p, g in zip(params, grads):
        p.grad = g
    opt.step()


def point_search(generator: nn.Module, labels: torch.Tensor, loss: Loss, *, latent_dim: int, iterations: int,
                 learning_rate: float, momentum: float, batch_size: int, bar: Optional[object] = None) -> torch.Tensor:
    """GMI (https://arxiv.org/abs/1911.07135): for every entry of ``labels`` (already one per reconstruction)
    a code ``z ~ N(0, I)`` clamped to [-1, 1], optimised with SGD (Nesterov momentum) and clamped again after
    each step; ``batch_size`` codes at a time."""
    device = labels.device
    images = []
    for start in range(0, len(labels), batch_size):
        y = labels[start:start + batch_size]
        _new_batch(bar, start, len(labels), batch_size)
        z = torch.randn(len(y), latent_dim, device=device).clamp_(-1, 1).requires_grad_(True)
        opt = torch.optim.SGD([z], lr=learning_rate, momentum=momentum, nesterov=momentum > 0)
        for it in range(iterations):
            _step(loss(generator(z), y, it), [z], opt)
            with torch.no_grad():
                z.clamp_(-1, 1)
            _tick(bar, len(y))
        with torch.no_grad():
            images.append(generator(z))
    return torch.cat(images)


def gaussian_search(generator: nn.Module, labels: torch.Tensor, loss: Loss, *, latent_dim: int, iterations: int,
                    learning_rate: float, batch_size: int, n: int, bar: Optional[object] = None) -> torch.Tensor:
    """KEDMI (https://arxiv.org/abs/2010.04092): for every identity of ``labels`` a diagonal Gaussian over the
    codes (mean 0, log-variance 1), optimised with Adam on one clamped sample per identity and step;
    afterwards ``n`` samples each. ``batch_size`` identities at a time."""
    device = labels.device
    images = []
    for start in range(0, len(labels), batch_size):
        y = labels[start:start + batch_size]
        _new_batch(bar, start, len(labels), batch_size)
        mu = torch.zeros(len(y), latent_dim, device=device, requires_grad=True)
        log_var = torch.ones(len(y), latent_dim, device=device, requires_grad=True)
        opt = torch.optim.Adam([mu, log_var], lr=learning_rate)
        for it in range(iterations):
            z = (mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)).clamp(-1, 1)
            _step(loss(generator(z), y, it), [mu, log_var], opt)
            _tick(bar, len(y))
        with torch.no_grad():
            std = torch.exp(0.5 * log_var)
            z = (mu.repeat_interleave(n, 0) + std.repeat_interleave(n, 0) * torch.randn(len(y) * n, latent_dim,
                                                                                     device=device)).clamp(-1, 1)
            images.append(generator(z))
    return torch.cat(images)


def gaussian_kl(mean: torch.Tensor, scale_tril: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean, L L^T) || N(0, I))`` per row, closed form, for lower-triangular ``L`` (``(B, d, d)``)."""
    d = mean.shape[1]
    trace = scale_tril.pow(2).sum((1, 2))
    log_det = 2 * scale_tril.diagonal(dim1=1, dim2=2).abs().log().sum(1)
    return 0.5 * (trace + mean.pow(2).sum(1) - d - log_det)


def variational_search(generator: nn.Module, labels: torch.Tensor, loss: Loss, *, latent_dim: int,
                       iterations: int, learning_rate: float, batch_size: int, samples: int, kl_weight: float,
                       n: int, bar: Optional[object] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """VMI (https://arxiv.org/abs/2201.10787): for every identity of ``labels`` a full-covariance Gaussian
    ``q = N(m, L L^T)`` over the codes (``m`` 0, ``L`` the identity: ``q`` starts as the prior), fitted with
    Adam to the attack loss of ``samples`` codes per identity and step, divided by ``samples`` (``loss`` sums
    over its images: this is the mean per identity), plus ``kl_weight`` times ``KL(q || N(0, I))`` of each
    identity, in the units of ``loss``'s per-image term; afterwards ``n`` samples each.
    Codes are not clamped: the KL term keeps them where the prior is. ``batch_size`` identities at a time.
    Returns the images and each identity's fitted ``m`` ``(K, d)`` and ``L`` ``(K, d, d)``."""
    device = labels.device
    images, means, scales = [], [], []
    for start in range(0, len(labels), batch_size):
        y = labels[start:start + batch_size]
        _new_batch(bar, start, len(labels), batch_size)
        k = len(y)
        mean = torch.zeros(k, latent_dim, device=device, requires_grad=True)
        tril = torch.eye(latent_dim, device=device).repeat(k, 1, 1).requires_grad_(True)
        opt = torch.optim.Adam([mean, tril], lr=learning_rate)
        y_rep = y.repeat_interleave(samples)
        for it in range(iterations):
            scale = torch.tril(tril)
            eps = torch.randn(k, samples, latent_dim, device=device)
            z = mean[:, None, :] + eps @ scale.transpose(1, 2)
            attack = loss(generator(z.reshape(k * samples, latent_dim)), y_rep, it) / samples
            _step(attack + kl_weight * gaussian_kl(mean, scale).sum(), [mean, tril], opt)
            _tick(bar, k * samples)
        with torch.no_grad():
            scale = torch.tril(tril)
            eps = torch.randn(k, n, latent_dim, device=device)
            z = mean[:, None, :] + eps @ scale.transpose(1, 2)
            images.append(generator(z.reshape(k * n, latent_dim)))
            means.append(mean.detach())
            scales.append(scale)
    return torch.cat(images), torch.cat(means), torch.cat(scales)


def conditional_search(generator: nn.Module, labels: torch.Tensor, loss: Loss, *, latent_dim: int, iterations: int,
                       learning_rate: float, batch_size: int, radius: Optional[float] = None,
                       bar: Optional[object] = None) -> torch.Tensor:
    """PLG-MI (https://arxiv.org/abs/2302.09814): for every entry of ``labels`` (one per reconstruction) a code
    ``z ~ N(0, I)`` of the conditional generator ``G(z, y)``, optimised with Adam; with ``radius`` each code is
    rescaled to that norm after every step (the sphere of radius ``sqrt(latent_dim)`` is where ``N(0, I)``'s
    codes lie), without it the codes are not constrained at all (the authors' code). ``batch_size`` codes at a
    time."""
    device = labels.device
    images = []
    for start in range(0, len(labels), batch_size):
        y = labels[start:start + batch_size]
        _new_batch(bar, start, len(labels), batch_size)
        z = torch.randn(len(y), latent_dim, device=device).requires_grad_(True)
        opt = torch.optim.Adam([z], lr=learning_rate)
        for it in range(iterations):
            _step(loss(generator(z, y), y, it), [z], opt)
            if radius is not None:
                with torch.no_grad():
                    z.mul_(radius / z.norm(dim=1, keepdim=True).clamp_min(1e-12))
            _tick(bar, len(y))
        with torch.no_grad():
            images.append(generator(z, y))
    return torch.cat(images)
