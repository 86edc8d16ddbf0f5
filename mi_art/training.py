"""Training of targets, evaluation models, GAN priors and surrogates; p_reg estimation.

GMI prior: WGAN-GP (https://arxiv.org/abs/1911.07135). KEDMI prior: the inversion-specific GAN
trained with the target's soft labels (https://arxiv.org/abs/2010.04092). Surrogates and p_reg:
model augmentation and the logit loss of LOMMA (https://arxiv.org/abs/2304.01669).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import trange

from .features import extract_features
from .losses import distillation_loss, entropy, gradient_penalty, kedmi_discriminator_loss
from .models import LATENT_DIM, Critic, Generator, KEDMIDiscriminator
from .utils import DeviceLike, check_images, check_labels, resolve_device, seed_everything, as_module

AUGMENTATIONS = ("none", "shift", "flip", "flip-shift")
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def augment_batch(x: torch.Tensor, mode: str) -> torch.Tensor:
    """Random horizontal flips and/or shifts of up to 1/8 of the image side (reflect padding)."""
    if mode not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {mode!r}")
    if "flip" in mode:
        flip = torch.rand(x.size(0), device=x.device) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    if "shift" in mode:
        n, _, h, w = x.shape
        pad = max(1, h // 8)
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect" if pad < h else "replicate")
        dy, dx = np.random.randint(0, 2 * pad + 1, size=2)
        x = padded[:, :, dy:dy + h, dx:dx + w]
    return x


def _batches(n: int, batch_size: int) -> Iterator[torch.Tensor]:
    """Shuffled index batches; a trailing batch of one sample joins the previous one (BatchNorm needs two)."""
    perm = torch.randperm(n)
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    for i, start in enumerate(starts):
        yield perm[start:starts[i + 1] if i + 1 < len(starts) else n]


def _infinite(x: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    while True:
        perm = torch.randperm(len(x))
        for start in range(0, len(x) - batch_size + 1, batch_size):
            yield x[perm[start:start + batch_size]]


def _cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def make_optimizer(model: nn.Module, optimizer: str, *, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """"adam", or "sgd" with momentum 0.9, over the model's parameters."""
    if optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    if optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")


def train_classifier(model: nn.Module, x: Any, y: Any, *, epochs: int = 30, batch_size: int = 64,
                     lr: float = 1e-3, weight_decay: float = 5e-4, optimizer: str = "adam",
                     augment: str = "shift", loss_fn: Optional[LossFn] = None, device: DeviceLike = None,
                     seed: Optional[int] = 0, verbose: bool = False, desc: str = "classifier") -> nn.Module:
    """Train ``model`` on ``(x, y)`` with cross-entropy (or ``loss_fn(model, x, y)``); returns it in eval mode.

    ``optimizer`` is "adam" or "sgd" (momentum 0.9); the learning rate follows a cosine schedule.
    """
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"epochs, batch_size and lr must be positive, got {epochs}, {batch_size}, {lr}")
    seed_everything(seed)
    device = resolve_device(device)
    x = torch.from_numpy(check_images(x))
    out_dim = getattr(getattr(model, "fc", None), "out_features", None)
    y = torch.from_numpy(check_labels(y, out_dim or int(np.max(y)) + 1, length=len(x)))
    model.to(device).train()
    opt = make_optimizer(model, optimizer, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-len(x) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    loss_fn = loss_fn or _cross_entropy
    bar = trange(epochs, desc=f"train {desc}", disable=not verbose)
    for _ in bar:
        total = 0.0
        for idx in _batches(len(x), batch_size):
            xb = augment_batch(x[idx].to(device), augment)
            loss = loss_fn(model, xb, y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        bar.set_postfix(loss=f"{total / len(x):.4f}")
    opt.zero_grad(set_to_none=True)
    return model.eval()


def train_gmi_prior(public_x: Any, *, steps: int = 1500, batch_size: int = 64, n_critic: int = 5,
                    gp_weight: float = 10.0, lr: float = 2e-4, betas: Tuple[float, float] = (0.5, 0.999),
                    augment: str = "none", width: int = 32, latent_dim: int = LATENT_DIM,
                    device: DeviceLike = None, seed: Optional[int] = 0,
                    verbose: bool = False) -> Tuple[Generator, Critic]:
    """GMI's general prior: WGAN-GP on public images (``n_critic`` critic steps per generator step)."""
    if steps < 1 or n_critic < 1:
        raise ValueError(f"steps and n_critic must be >= 1, got {steps} and {n_critic}")
    seed_everything(seed)
    device = resolve_device(device)
    x = torch.from_numpy(check_images(public_x, "public_x")).to(device)
    _, c, s, _ = x.shape
    batch_size = min(batch_size, len(x))
    gen, critic = Generator(s, c, latent_dim, width).to(device), Critic(s, c, width).to(device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(critic.parameters(), lr=lr, betas=betas)
    data = _infinite(x, batch_size)
    bar = trange(steps, desc="train GMI prior (WGAN-GP)", disable=not verbose)
    for step in bar:
        for _ in range(n_critic):
            real = augment_batch(next(data), augment)
            with torch.no_grad():
                fake = gen(torch.randn(batch_size, latent_dim, device=device))
            d_loss = critic(fake).mean() - critic(real).mean() + gp_weight * gradient_penalty(critic, real, fake)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        g_loss = -critic(gen(torch.randn(batch_size, latent_dim, device=device))).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if step % 50 == 0:
            bar.set_postfix(d=f"{d_loss.item():.3f}", g=f"{g_loss.item():.3f}")
    return gen.eval(), critic.eval()


@torch.no_grad()
def _soft_labels(target: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    return torch.cat([F.softmax(target(x[i:i + batch_size]), 1) for i in range(0, len(x), batch_size)])


def train_kedmi_prior(target: Any, public_x: Any, *, steps: int = 3000, batch_size: int = 64,
                      lr: float = 2e-4, betas: Tuple[float, float] = (0.5, 0.999), augment: str = "none",
                      width: int = 32, latent_dim: int = LATENT_DIM, entropy_weight: float = 1e-4,
                      device: DeviceLike = None, seed: Optional[int] = 0,
                      verbose: bool = False) -> Tuple[Generator, KEDMIDiscriminator]:
    """KEDMI's inversion-specific GAN: a K-logit discriminator learns the target's soft labels on public
    data plus the semi-supervised real/fake terms; the generator matches the discriminator's mean
    features of public images (L1) with an entropy term. ``target`` is an ART estimator or a module."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    seed_everything(seed)
    device = resolve_device(device)
    target = as_module(target, "target").to(device).eval()
    x = torch.from_numpy(check_images(public_x, "public_x")).to(device)
    _, c, s, _ = x.shape
    batch_size = min(batch_size, len(x))
    probs = _soft_labels(target, x)
    num_classes = probs.shape[1]
    gen = Generator(s, c, latent_dim, width).to(device)
    disc = KEDMIDiscriminator(num_classes, s, c, width).to(device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=betas)
    idx_stream = _infinite(torch.arange(len(x)), batch_size)
    bar = trange(steps, desc="train KEDMI prior", disable=not verbose)
    for step in bar:
        lab, unl = next(idx_stream), next(idx_stream)
        x_lab, x_unl = augment_batch(x[lab], augment), augment_batch(x[unl], augment)
        fake = gen(torch.randn(batch_size, latent_dim, device=device))
        d_loss = kedmi_discriminator_loss(disc(x_lab), probs[lab], disc(x_unl), disc(fake.detach()))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        fake = gen(torch.randn(batch_size, latent_dim, device=device))
        feat_fake, logits_fake = disc(fake, return_features=True)
        with torch.no_grad():
            feat_real, _ = disc(augment_batch(x[next(idx_stream)], augment), return_features=True)
        g_loss = (feat_fake.mean(0) - feat_real.mean(0)).abs().mean() + entropy_weight * entropy(logits_fake)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if step % 50 == 0:
            bar.set_postfix(d=f"{d_loss.item():.3f}", g=f"{g_loss.item():.3f}")
    return gen.eval(), disc.eval()


def distill_surrogate(target: Any, student: nn.Module, public_x: Any, *, epochs: int = 50,
                      batch_size: int = 64, lr: float = 0.01, momentum: float = 0.9,
                      weight_decay: float = 1e-4, lr_step: int = 20, temperature: float = 1.0,
                      augment: str = "shift", device: DeviceLike = None, seed: Optional[int] = 0,
                      verbose: bool = False) -> nn.Module:
    """Model augmentation: distil ``target`` into ``student`` on public data only (KL at ``temperature``,
    SGD with momentum, learning rate halved every ``lr_step`` epochs). Returns the student in eval mode."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    seed_everything(seed)
    device = resolve_device(device)
    teacher = as_module(target, "target").to(device).eval()
    x = torch.from_numpy(check_images(public_x, "public_x"))
    student.to(device).train()
    opt = torch.optim.SGD(student.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=lr_step, gamma=0.5)
    bar = trange(epochs, desc=f"distil {type(student).__name__}", disable=not verbose)
    for _ in bar:
        for idx in _batches(len(x), batch_size):
            xb = augment_batch(x[idx].to(device), augment)
            with torch.no_grad():
                teacher_logits = teacher(xb)
            loss = distillation_loss(student(xb), teacher_logits, temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        bar.set_postfix(kl=f"{loss.item():.4f}")
    return student.eval()


def estimate_p_reg(target: Any, public_x: Any, *, n: int = 5000, batch_size: int = 256,
                   device: DeviceLike = None, seed: Optional[int] = 0) -> torch.Tensor:
    """LOMMA's ``p_reg``: the mean penultimate feature of up to ``n`` public images through the target
    (eval mode). ``target`` is an ART estimator or a module; returns a CPU tensor of the feature size."""
    x = check_images(public_x, "public_x")
    if len(x) > n:
        x = x[np.random.default_rng(seed).choice(len(x), n, replace=False)]
    model = as_module(target, "target")
    device = resolve_device(device) if device is not None else None
    return extract_features(model, torch.from_numpy(x), batch_size, device).mean(0)
