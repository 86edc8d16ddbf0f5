"""PLG-MI's prior (Yuan et al., "Pseudo Label-Guided Model Inversion Attack via Conditional Generative
Adversarial Network", AAAI 2023, https://arxiv.org/abs/2302.09814): a class-conditional GAN trained on
public images that the target pseudo-labels, with the max-margin inversion loss against the target in its
generator's loss; and the random views both its training and its attack take of generated images.

As in the authors' code (``LetheSec/PLG-MI-Attack``): per class, the ``top_n`` public images with the
highest softmax probability of that class are its pseudo-labelled images (an image may serve several
classes); hinge loss; the generator's loss adds ``alpha`` (0.2) times the margin loss of the target on a
random view of its images, with labels drawn uniformly; Adam with betas (0, 0.9); ``n_critic`` (5)
discriminator steps per generator step. Deviations, for a few hundred public images and steps on a CPU
instead of 30k+ of each on a GPU (``docs/methods.md``): the networks are the GMI prior's DCGAN layers
(class-conditional batch norm; a spectral-normalised projection discriminator) instead of SN-ResNets; the
generator can start from a trained GMI generator (``init_generator``); ``top_n`` defaults to at most the
public images per class; Adam's learning rate is 1e-3, not 2e-4: on digits 300 steps at 1e-3 teach the
discriminator the pseudo-labels better than 1000 steps at 2e-4 (docs/methods.md, PLG-MI, measures both).
"""
from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import trange

from ..identity import identity_loss
from ..training import infinite_batches, show_progress
from ..utils import DeviceLike, resolve_device, seed_everything
from ..validation import check_count, check_finite_at, check_number, check_positive
from .networks import LATENT_DIM, ConditionalGenerator, Generator, ProjectionDiscriminator
from .target_answers import public_through_target

#: The authors' number of pseudo-labelled public images per class (``--top_n=30``).
PSEUDO_LABELS_PER_CLASS = 30


def few_public_images_note(n_public: int, num_classes: int) -> Optional[str]:
    """A warning, or None: fewer public images than PLG-MI's ``PSEUDO_LABELS_PER_CLASS`` per class leave its
    pseudo-labels little to choose from (AT&T, 10 per class: the conditional samples were far from faces;
    LFW, 30 per class: faces the judge put in their identity about half the time; docs/methods.md, PLG-MI)."""
    if n_public >= PSEUDO_LABELS_PER_CLASS * num_classes:
        return None
    return (f"PLG-MI's prior pseudo-labels {n_public} public images for {num_classes} classes "
            f"({n_public / num_classes:.1f} per class, under the authors' {PSEUDO_LABELS_PER_CLASS}): on AT&T faces "
            "(10 per class) its conditional samples were not faces and PLG-MI was the weakest attack. Give it more "
            "public images, or prefer GMI or KEDMI (docs/methods.md, PLG-MI)")


def select_pseudo_labels(probs: torch.Tensor, top_n: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """PLG-MI's top-n selection: for every class, the ``top_n`` public images to which the target gives that
    class the highest probability. ``probs`` is the target's softmax on the public images, ``(N, K)``.

    :param top_n: Images per class; None: ``min(PSEUDO_LABELS_PER_CLASS, N // K)``, at least 1 (the
        authors' 30 was set for 30k+ public images and 1000 classes; with fewer public images per class
        than that, most of a class's images would be other classes' best ones too).
    :return: ``(indices, labels)``: the public images' indices and their pseudo labels, ``top_n * K`` of each,
        class by class; an image can appear under several classes.
    """
    n, k = probs.shape
    top_n = max(1, min(PSEUDO_LABELS_PER_CLASS, n // k)) if top_n is None else check_count("top_n", top_n)
    if top_n > n:
        raise ValueError(f"top_n={top_n} is more than the {n} public images")
    indices = probs.topk(top_n, dim=0).indices.t().reshape(-1)  # (K * top_n,), class by class
    labels = torch.arange(k, device=probs.device).repeat_interleave(top_n)
    return indices, labels


def random_views(x: torch.Tensor) -> torch.Tensor:
    """A random view of each image in [0, 1], differentiable, as PLG-MI's augmentations: a square crop of
    0.8 to 1 of the area resized back, a horizontal flip (p 0.5), a rotation of up to 5 degrees (p 0.5),
    and a brightness and contrast jitter of up to 0.2 (p 0.5), clamped to [0, 1]."""
    n, device = len(x), x.device
    scale = torch.empty(n, device=device).uniform_(0.8, 1.0).sqrt()  # the crop's side, of the image's
    shift = (1 - scale)[:, None] * torch.empty(n, 2, device=device).uniform_(-1, 1)
    angle = torch.empty(n, device=device).uniform_(-5, 5) * math.pi / 180
    angle = torch.where(torch.rand(n, device=device) < 0.5, angle, torch.zeros_like(angle))
    flip = torch.where(torch.rand(n, device=device) < 0.5, -torch.ones(n, device=device), torch.ones(n, device=device))
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    jitter = torch.rand(n, 1, 1, 1, device=device) < 0.5
    brightness = torch.empty(n, 1, 1, 1, device=device).uniform_(0.8, 1.2)
    contrast = torch.empty(n, 1, 1, 1, device=device).uniform_(0.8, 1.2)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    jittered = ((x * brightness - mean) * contrast + mean).clamp(0, 1)
    return torch.where(jitter, jittered, x)


def train_plgmi_prior(target: Any, public_x: Any, *, steps: int = 1000, n_critic: int = 5, batch_size: int = 64,
                      lr: float = 1e-3, betas: Tuple[float, float] = (0.0, 0.9), alpha: float = 0.2,
                      top_n: Optional[int] = None, width: int = 32, latent_dim: int = LATENT_DIM,
                      init_generator: Optional[nn.Module] = None, output_index: Any = None,
                      device: DeviceLike = None, seed: Optional[int] = 0,
                      verbose: bool = False) -> Tuple[ConditionalGenerator, ProjectionDiscriminator]:
    """PLG-MI's pseudo-label guided conditional GAN (https://arxiv.org/abs/2302.09814), one per target.

    ``target`` is an ART estimator or a module (``output_index``: where its logits are in a tuple or dict
    output); ``public_x`` are images it takes, in its input space (as for ``predict``). The target
    pseudo-labels them (:func:`select_pseudo_labels`, ``top_n`` per class); the GAN works on them mapped
    to [0, 1] channels first. Each of the ``steps`` generator steps (hinge loss, plus ``alpha`` times the
    target's max-margin loss on a random view of its images, classes drawn uniformly) is followed by
    ``n_critic`` discriminator steps (hinge loss on pseudo-labelled public images against fresh generated
    ones). ``init_generator``: a trained :class:`~mi_art.priors.networks.Generator` of the same size,
    channels, width and latent size that every class starts from. Returns ``(generator, discriminator)``
    in eval mode.
    """
    steps, n_critic = check_count("steps", steps), check_count("n_critic", n_critic)
    batch_size, lr = check_count("batch_size", batch_size), check_positive("lr", lr)
    check_number("alpha", alpha, low=0)
    seed_everything(seed)
    device = resolve_device(device)
    # the GAN works in [0, 1], channels first
    target, x, probs = public_through_target(target, public_x, output_index=output_index, device=device)
    num_classes = probs.shape[1]
    note = few_public_images_note(len(x), num_classes)
    if note:
        warnings.warn(note, stacklevel=2)
    picked, pseudo = select_pseudo_labels(probs, top_n)
    gen, disc = _plgmi_networks(x, num_classes, latent_dim, width, init_generator, device)
    with _frozen(target):  # gradients reach the generator only
        update = _PLGMIUpdates(gen, disc, target, x, picked, pseudo, num_classes=num_classes, batch_size=batch_size,
                               latent_dim=latent_dim, lr=lr, betas=betas, alpha=alpha, device=device)
        gen.train()
        bar = trange(steps, desc="train PLG-MI prior", disable=not verbose)
        for step in bar:
            g_loss, inversion = update.generator(step, steps)
            for _ in range(n_critic):
                d_loss = update.discriminator(step, steps)
            if step % 50 == 0:
                show_progress(bar, (n_critic + 1) * batch_size, d=d_loss, g=g_loss, margin=inversion)
    return gen.eval(), disc.eval()


def _plgmi_networks(x: torch.Tensor, num_classes: int, latent_dim: int, width: int,
                    init_generator: Optional[nn.Module],
                    device: torch.device) -> Tuple[ConditionalGenerator, ProjectionDiscriminator]:
    """PLG-MI's conditional generator (every class started from ``init_generator``, a GMI generator, if given) and
    its projection discriminator, for images shaped as ``x``, on ``device``."""
    _, c, s, _ = x.shape
    gen = ConditionalGenerator(s, c, num_classes, latent_dim, width)
    if init_generator is not None:
        if not isinstance(init_generator, Generator):
            raise ValueError(f"init_generator must be a GMI Generator (mi_art.train_gmi_prior), got "
                             f"{type(init_generator).__name__}")
        gen.start_from(init_generator)
    return gen.to(device), ProjectionDiscriminator(s, c, num_classes, width).to(device)


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """``model``'s parameters without gradients for the block, then as they were."""
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)


class _PLGMIUpdates:
    """One update of PLG-MI's generator (against the discriminator, plus ``alpha`` times the target's margin on a
    random view of its images) or of its discriminator (the pseudo-labelled public images ``x[picked]``, labels
    ``pseudo``, against fresh generated ones), classes drawn uniformly."""

    def __init__(self, gen: ConditionalGenerator, disc: ProjectionDiscriminator, target: Any, x: torch.Tensor,
                 picked: torch.Tensor, pseudo: torch.Tensor, *, num_classes: int, batch_size: int, latent_dim: int,
                 lr: float, betas: Tuple[float, float], alpha: float, device: torch.device) -> None:
        self.gen, self.disc, self.target = gen, disc, target
        self.x, self.picked, self.pseudo = x, picked, pseudo
        self.num_classes, self.batch_size, self.latent_dim = num_classes, batch_size, latent_dim
        self.alpha, self.device = alpha, device
        self.opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=betas)
        self.opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=betas)
        self.real_stream = infinite_batches(torch.arange(len(picked), device=device), min(batch_size, len(picked)))

    def fake_batch(self) -> Tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(self.num_classes, (self.batch_size,), device=self.device)
        return self.gen(torch.randn(self.batch_size, self.latent_dim, device=self.device), y), y

    def generator(self, step: int, steps: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The generator's update; its loss and the target's margin loss in it."""
        fake, y = self.fake_batch()
        inversion = identity_loss(self.target(self.target.from_unit(random_views(fake))), y, "margin").mean()
        g_loss = check_finite_at(-self.disc(fake, y).mean() + self.alpha * inversion, "the PLG-MI generator's loss",
                                 step, steps)
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        return g_loss, inversion

    def discriminator(self, step: int, steps: int) -> torch.Tensor:
        """The discriminator's hinge-loss update."""
        idx = next(self.real_stream)
        with torch.no_grad():
            fake, y = self.fake_batch()
        d_loss = (F.relu(1 - self.disc(self.x[self.picked[idx]], self.pseudo[idx])).mean()
                  + F.relu(1 + self.disc(fake, y)).mean())
        check_finite_at(d_loss, "the PLG-MI discriminator's loss", step, steps)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        return d_loss
