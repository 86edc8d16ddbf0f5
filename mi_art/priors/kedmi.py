"""KEDMI's inversion-specific prior (Chen et al., ICCV 2021, https://arxiv.org/abs/2010.04092): a GAN
whose discriminator learns the target's soft labels on public images, its losses, and the prior term
of the KEDMI attack (``-log(Z/(Z+1))``)."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import trange

from ..training import augment_batch, infinite_batches, show_progress
from ..utils import DeviceLike, resolve_device, seed_everything
from ..validation import check_count, check_finite_at, check_number, check_positive
from .networks import LATENT_DIM, Generator, KEDMIDiscriminator
from .target_answers import public_through_target


def kedmi_prior_loss(d_logits: torch.Tensor) -> torch.Tensor:
    """KEDMI prior, per sample: ``softplus(LSE(l)) - LSE(l) = -log(Z / (Z + 1))``, Z = sum_k exp(l_k)."""
    lse = torch.logsumexp(d_logits, dim=1)
    return F.softplus(lse) - lse


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against soft labels (KEDMI's discriminator on the target's softmax)."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(1).mean()


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean entropy of ``softmax(logits)`` over the batch."""
    return -(F.softmax(logits, 1) * F.log_softmax(logits, 1)).sum(1).mean()


def kedmi_discriminator_loss(logits_public_labelled: torch.Tensor, target_probs: torch.Tensor,
                             logits_public: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """KEDMI's discriminator loss: soft CE on the target's labels + semi-supervised GAN terms
    ``0.5 * [E softplus(LSE(l_real)) - E LSE(l_real) + E softplus(LSE(l_fake))]``."""
    lse_real = torch.logsumexp(logits_public, 1)
    lse_fake = torch.logsumexp(logits_fake, 1)
    unsupervised = 0.5 * (F.softplus(lse_real).mean() - lse_real.mean() + F.softplus(lse_fake).mean())
    return soft_cross_entropy(logits_public_labelled, target_probs) + unsupervised


def _copy_generator(source: nn.Module, fresh: Generator) -> Generator:
    """``fresh`` with the weights of ``source`` (same architecture), for a warm start."""
    try:
        fresh.load_state_dict(source.state_dict())
    except RuntimeError as err:
        raise ValueError("init_generator must have the architecture train_kedmi_prior builds (same image size, "
                         f"channels, width and latent_dim): {str(err).splitlines()[0]}") from None
    return fresh


def train_kedmi_prior(target: Any, public_x: Any, *, steps: int = 600, n_critic: int = 5, batch_size: int = 64,
                      lr: float = 2e-4, betas: Tuple[float, float] = (0.5, 0.999), augment: str = "none",
                      width: int = 32, latent_dim: int = LATENT_DIM, entropy_weight: float = 1e-4,
                      adversarial_weight: float = 1.0, init_generator: Optional[nn.Module] = None,
                      output_index: Any = None, device: DeviceLike = None, seed: Optional[int] = 0,
                      verbose: bool = False) -> Tuple[Generator, KEDMIDiscriminator]:
    """KEDMI's inversion-specific GAN (https://arxiv.org/abs/2010.04092).

    The K-logit discriminator learns the target's soft labels on public images plus the semi-supervised
    real/fake terms, on every step; the generator is updated after every ``n_critic`` discriminator steps
    (``steps`` counts generator updates). The generator's loss is, as in the authors' code, the L1 distance
    between the batch means of the discriminator's convolutional features on generated and on public
    images, plus ``entropy_weight`` times the entropy of its class logits summed over the batch.

    Two deviations make it work on a few hundred public images instead of the paper's 30k (measured on
    AT&T faces, 200 public images; see ``docs/methods.md``):

    - ``adversarial_weight`` adds the generator's semi-supervised GAN term ``softplus(LSE(l)) - LSE(l)``
      on generated images (0 gives the authors' loss, which produced noise there);
    - ``init_generator`` warm-starts the generator from a trained generator of the same architecture,
      typically the GMI prior's, which does not depend on the target: a grid of defended targets then
      fine-tunes one public generator instead of training a GAN per target.

    ``target`` is an ART estimator or a module (``output_index``: where its logits are in a tuple or dict
    output); ``public_x`` are images it takes, in its input space (as for ``predict``: its ``clip_values``
    range and layout). The target labels them through its preprocessing; the GAN, discriminator
    included, works on them mapped to [0, 1] channels first, the range of the generator's images
    (:class:`mi_art.utils.EstimatorModule`). Returns ``(generator, discriminator)`` in eval mode.
    """
    steps, n_critic = check_count("steps", steps), check_count("n_critic", n_critic)
    batch_size = check_count("batch_size", batch_size)
    lr = check_positive("lr", lr)
    check_number("entropy_weight", entropy_weight, low=0)
    check_number("adversarial_weight", adversarial_weight, low=0)
    seed_everything(seed)
    device = resolve_device(device)
    # the GAN (generator and discriminator) works in [0, 1], channels first
    _, x, probs = public_through_target(target, public_x, output_index=output_index, device=device)
    batch_size = min(batch_size, len(x))
    gen, disc = _kedmi_networks(x, probs.shape[1], latent_dim, width, init_generator, device)
    update = _KEDMIUpdates(gen, disc, x, probs, batch_size=batch_size, latent_dim=latent_dim, augment=augment,
                           lr=lr, betas=betas, entropy_weight=entropy_weight, adversarial_weight=adversarial_weight,
                           device=device)
    gen.train()
    bar = trange(steps, desc="train KEDMI prior", disable=not verbose)
    for step in bar:
        for _ in range(n_critic):
            d_loss = update.discriminator(step, steps)
        g_loss = update.generator(step, steps)
        if step % 50 == 0:
            show_progress(bar, (n_critic + 1) * batch_size, d=d_loss, g=g_loss)
    return gen.eval(), disc.eval()


def _kedmi_networks(x: torch.Tensor, num_classes: int, latent_dim: int, width: int,
                    init_generator: Optional[nn.Module], device: torch.device) -> Tuple[Generator, KEDMIDiscriminator]:
    """KEDMI's generator (fresh, or a copy of ``init_generator``) and its K-logit discriminator, for images shaped
    as ``x``, on ``device``."""
    _, c, s, _ = x.shape
    gen = Generator(s, c, latent_dim, width)
    if init_generator is not None:
        gen = _copy_generator(init_generator, gen)
    return gen.to(device), KEDMIDiscriminator(num_classes, s, c, width).to(device)


class _KEDMIUpdates:
    """One update of KEDMI's discriminator or generator, on the public images ``x`` (unit space) and the target's
    soft labels ``probs`` of them, drawn from one stream of shuffled batches."""

    def __init__(self, gen: Generator, disc: KEDMIDiscriminator, x: torch.Tensor, probs: torch.Tensor, *,
                 batch_size: int, latent_dim: int, augment: str, lr: float, betas: Tuple[float, float],
                 entropy_weight: float, adversarial_weight: float, device: torch.device) -> None:
        self.gen, self.disc, self.x, self.probs, self.device = gen, disc, x, probs, device
        self.batch_size, self.latent_dim, self.augment = batch_size, latent_dim, augment
        self.entropy_weight, self.adversarial_weight = entropy_weight, adversarial_weight
        self.opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=betas)
        self.opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=betas)
        self.idx_stream = infinite_batches(torch.arange(len(x)), batch_size)

    def _codes(self) -> torch.Tensor:
        return torch.randn(self.batch_size, self.latent_dim, device=self.device)

    def discriminator(self, step: int, steps: int) -> torch.Tensor:
        """The soft labels of a labelled batch, the real/fake terms of an unlabelled one and of generated images."""
        lab, unl = next(self.idx_stream), next(self.idx_stream)
        x_lab, x_unl = augment_batch(self.x[lab], self.augment), augment_batch(self.x[unl], self.augment)
        with torch.no_grad():
            fake = self.gen(self._codes())
        d_loss = kedmi_discriminator_loss(self.disc(x_lab), self.probs[lab], self.disc(x_unl), self.disc(fake))
        check_finite_at(d_loss, "the KEDMI discriminator's loss", step, steps)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        return d_loss

    def generator(self, step: int, steps: int) -> torch.Tensor:
        """Feature matching against a public batch, the entropy of the generated images' classes and the
        semi-supervised GAN term."""
        feat_fake, logits_fake = self.disc(self.gen(self._codes()), return_features=True)
        with torch.no_grad():
            feat_real, _ = self.disc(augment_batch(self.x[next(self.idx_stream)], self.augment),
                                     return_features=True)
        g_loss = ((feat_fake.mean(0) - feat_real.mean(0)).abs().mean()
                  + self.entropy_weight * entropy(logits_fake) * len(logits_fake)
                  + self.adversarial_weight * kedmi_prior_loss(logits_fake).mean())
        check_finite_at(g_loss, "the KEDMI generator's loss", step, steps)
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        return g_loss
