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
from .losses import distillation_loss, entropy, gradient_penalty, kedmi_discriminator_loss, kedmi_prior_loss
from .models import LATENT_DIM, Critic, Generator, KEDMIDiscriminator
from .utils import DeviceLike, as_module, eval_mode, module_device, resolve_device, seed_everything
from .validation import (check_count, check_finite, check_images, check_labels, check_module_finite, check_number,
                         check_optional_count, check_positive)

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
    epochs, batch_size = check_count("epochs", epochs), check_count("batch_size", batch_size)
    lr, weight_decay = check_positive("lr", lr), check_number("weight_decay", weight_decay, low=0)
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
            loss = check_finite(loss_fn(model, xb, y[idx].to(device)), f"the training loss of the {desc}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        bar.set_postfix(loss=f"{total / len(x):.4f}")
    opt.zero_grad(set_to_none=True)
    check_module_finite(model, f"the {desc}")
    return model.eval()


def train_gmi_prior(public_x: Any, *, steps: int = 1500, batch_size: int = 64, n_critic: int = 5,
                    gp_weight: float = 10.0, lr: float = 2e-4, betas: Tuple[float, float] = (0.5, 0.999),
                    augment: str = "none", width: int = 32, latent_dim: int = LATENT_DIM,
                    device: DeviceLike = None, seed: Optional[int] = 0,
                    verbose: bool = False) -> Tuple[Generator, Critic]:
    """GMI's general prior: WGAN-GP on public images (``n_critic`` critic steps per generator step)."""
    steps, n_critic = check_count("steps", steps), check_count("n_critic", n_critic)
    batch_size, lr = check_count("batch_size", batch_size), check_positive("lr", lr)
    check_number("gp_weight", gp_weight, low=0)
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
            check_finite(d_loss, "the WGAN-GP critic's loss")
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        g_loss = check_finite(-critic(gen(torch.randn(batch_size, latent_dim, device=device))).mean(),
                              "the WGAN-GP generator's loss")
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if step % 50 == 0:
            bar.set_postfix(d=f"{d_loss.item():.3f}", g=f"{g_loss.item():.3f}")
    return gen.eval(), critic.eval()


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


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
    target = as_module(target, "target", output_index=output_index).to(device).eval()
    x = torch.from_numpy(check_images(public_x, "public_x")).to(device)
    probs = F.softmax(check_finite(_logits(target, x), "the target's outputs on public_x"), 1)
    x = target.to_unit(x)  # the GAN (generator and discriminator) works in [0, 1], channels first
    _, c, s, _ = x.shape
    batch_size = min(batch_size, len(x))
    num_classes = probs.shape[1]
    gen = Generator(s, c, latent_dim, width)
    if init_generator is not None:
        gen = _copy_generator(init_generator, gen)
    gen, disc = gen.to(device), KEDMIDiscriminator(num_classes, s, c, width).to(device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=betas)
    idx_stream = _infinite(torch.arange(len(x)), batch_size)
    gen.train()
    bar = trange(steps, desc="train KEDMI prior", disable=not verbose)
    for step in bar:
        for _ in range(n_critic):
            lab, unl = next(idx_stream), next(idx_stream)
            x_lab, x_unl = augment_batch(x[lab], augment), augment_batch(x[unl], augment)
            with torch.no_grad():
                fake = gen(torch.randn(batch_size, latent_dim, device=device))
            d_loss = kedmi_discriminator_loss(disc(x_lab), probs[lab], disc(x_unl), disc(fake))
            check_finite(d_loss, "the KEDMI discriminator's loss")
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        feat_fake, logits_fake = disc(gen(torch.randn(batch_size, latent_dim, device=device)), return_features=True)
        with torch.no_grad():
            feat_real, _ = disc(augment_batch(x[next(idx_stream)], augment), return_features=True)
        g_loss = ((feat_fake.mean(0) - feat_real.mean(0)).abs().mean()
                  + entropy_weight * entropy(logits_fake) * len(logits_fake)
                  + adversarial_weight * kedmi_prior_loss(logits_fake).mean())
        check_finite(g_loss, "the KEDMI generator's loss")
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if step % 50 == 0:
            bar.set_postfix(d=f"{d_loss.item():.3f}", g=f"{g_loss.item():.3f}")
    return gen.eval(), disc.eval()


def top1_agreement(model_a: Any, model_b: Any, x: Any, *, batch_size: int = 256, output_index: Any = None,
                   device: DeviceLike = None) -> float:
    """Share of images in ``x`` on which two classifiers (ART estimators or modules) predict the same class.

    ``x`` is in ``model_a``'s input space (what its ``predict`` takes); ``model_b`` sees the same images
    mapped to its own (a bare module: [0, 1] channels first). ``output_index`` applies to a model
    returning a tuple or dict."""
    x = torch.from_numpy(check_images(x, "x"))
    a = as_module(model_a, "model_a", output_index=output_index)
    b = as_module(model_b, "model_b", output_index=output_index)
    device = resolve_device(device) if device is not None else module_device(a)
    x = x.to(device)
    with eval_mode(a), eval_mode(b):
        pa = _logits(a, x, batch_size).argmax(1)
        pb = _logits(b, b.from_unit(a.to_unit(x)), batch_size).argmax(1)
    return float((pa == pb).float().mean())


def distill_surrogate(target: Any, student: nn.Module, public_x: Any, *, generator: Optional[nn.Module] = None,
                      val_x: Any = None, val_fraction: float = 0.1, steps: int = 3000, batch_size: int = 64,
                      lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 1e-4,
                      lr_step: Optional[int] = None, temperature: float = 1.0, augment: str = "shift",
                      eval_every: int = 100, patience: int = 5, output_index: Any = None,
                      device: DeviceLike = None, seed: Optional[int] = 0, verbose: bool = False) -> nn.Module:
    """Model augmentation (https://arxiv.org/abs/2304.01669): distil ``target`` into ``student`` on public
    data only, with KL divergence at ``temperature`` and SGD with momentum (the paper's settings).

    The paper distils on 30k-70k public images; with a few hundred the student learns too little of the
    target to help the attack. So, as a documented deviation:

    - with ``generator`` (a GAN prior trained on the public images), every batch adds as many fresh
      prior samples as public images: the student learns the target on the images the attack explores;
    - the budget is counted in optimiser ``steps`` (at most), with the learning rate constant as in the
      paper's 20-epoch schedule, or halved every ``lr_step`` steps; every ``eval_every`` steps the KL on
      held-out public images (``val_x``, or a ``val_fraction`` of ``public_x`` set aside) is measured, the
      best student is kept, and training stops once it has not improved for ``patience`` evaluations.

    ``target`` is an ART estimator or a module (``output_index``: where its logits are in a tuple or dict
    output); ``public_x`` (and ``val_x``) are images it takes, in its input space (as for ``predict``).
    The student learns on them mapped to [0, 1] channels first, where the generator's images are and
    where the attacks feed a bare-module surrogate (:class:`mi_art.utils.EstimatorModule`); the target
    sees every batch mapped back to its own input space, through its preprocessing. Returns the student
    in eval mode.
    """
    steps, batch_size = check_count("steps", steps), check_count("batch_size", batch_size)
    eval_every, patience = check_count("eval_every", eval_every), check_count("patience", patience)
    lr, temperature = check_positive("lr", lr), check_positive("temperature", temperature)
    check_number("momentum", momentum, low=0, high=1, high_open=True)
    check_number("weight_decay", weight_decay, low=0)
    lr_step = check_optional_count("lr_step", lr_step)
    seed_everything(seed)
    device = resolve_device(device)
    teacher = as_module(target, "target", output_index=output_index).to(device).eval()
    x = check_images(public_x, "public_x")
    if val_x is None:
        check_number("val_fraction", val_fraction, low=0, high=1, low_open=True, high_open=True)
        n_val = max(1, int(round(val_fraction * len(x))))
        if len(x) - n_val < 2:
            raise ValueError(f"public_x has {len(x)} images: too few to set {n_val} aside for validation; pass val_x")
        perm = np.random.default_rng(seed).permutation(len(x))
        x, val = x[perm[n_val:]], x[perm[:n_val]]
    else:
        val = check_images(val_x, "val_x", shape=x.shape[1:])
    x, val = torch.from_numpy(x).to(device), torch.from_numpy(val).to(device)
    val_teacher = check_finite(_logits(teacher, val), "the target's outputs on public_x")
    x, val = teacher.to_unit(x), teacher.to_unit(val)  # the student's space: [0, 1], channels first
    teacher = teacher.unit_view()  # from now on the teacher takes the student's images
    if generator is not None:
        generator = generator.to(device).eval()
        latent = int(getattr(generator, "latent_dim", LATENT_DIM))
    student.to(device).train()
    opt = torch.optim.SGD(student.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=lr_step or steps + 1, gamma=0.5)
    data = _infinite(x, min(batch_size, len(x)))
    best, best_state, stale = float("inf"), None, 0
    bar = trange(steps, desc=f"distil {type(student).__name__}", disable=not verbose)
    for step in bar:
        xb = augment_batch(next(data), augment)
        if generator is not None:
            with torch.no_grad():
                fake = generator(torch.randn(len(xb), latent, device=device).clamp(-1, 1))
            xb = torch.cat([xb, fake])
        with torch.no_grad():
            teacher_logits = teacher(xb)
        loss = check_finite(distillation_loss(student(xb), teacher_logits, temperature), "the distillation loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            with eval_mode(student):
                val_kl = distillation_loss(_logits(student, val), val_teacher, temperature).item()
            bar.set_postfix(kl=f"{loss.item():.4f}", val_kl=f"{val_kl:.4f}")
            if val_kl < best:
                best, stale = val_kl, 0
                best_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
            else:
                stale += 1
                if stale >= patience:
                    break
    if best_state is not None:
        student.load_state_dict(best_state)
    check_module_finite(student, f"distilled {type(student).__name__}")
    return student.eval()


def estimate_p_reg(target: Any, public_x: Any, *, n: int = 5000, batch_size: int = 256,
                   feature_layer: Optional[str] = None, output_index: Any = None,
                   device: DeviceLike = None, seed: Optional[int] = 0) -> torch.Tensor:
    """LOMMA's ``p_reg``: the mean penultimate feature of up to ``n`` public images through the target
    (eval mode), a 1-D tensor. ``target`` is an ART estimator or a module and ``public_x`` images it takes (its input space, as for
    ``predict``); ``feature_layer`` names the module whose input is the penultimate feature (default: the
    last ``nn.Linear``; give the attack the same); ``output_index`` says where the logits are in a tuple
    or dict output. The tensor is on the CPU."""
    n, batch_size = check_count("n", n), check_count("batch_size", batch_size)
    x = check_images(public_x, "public_x")
    if len(x) > n:
        x = x[np.random.default_rng(seed).choice(len(x), n, replace=False)]
    model = as_module(target, "target", output_index=output_index)
    device = resolve_device(device) if device is not None else None
    feats = check_finite(extract_features(model, torch.from_numpy(x), batch_size, device, layer=feature_layer),
                         "the target's features")
    return feats.mean(0)
