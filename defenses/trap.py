"""Trap-MID: trapdoor-based defense (Liu and Chen, "Trap-MID: Trapdoor-based Defense against Model
Inversion Attacks", NeurIPS 2024, https://arxiv.org/abs/2411.08460).

Every class ``c`` gets a trigger ``t_c``, an image-sized pattern in [0, 1]. The model learns a shortcut:
any image blended with ``t_c``, ``(1 - alpha) x + alpha t_c``, is class ``c``. An inversion attack that
maximises class ``c`` then finds the trigger, which is easier to reach than the private features, and
reconstructs it instead of the identity. Each training batch, as in the authors' code
(``ntuaislab/Trap-MID``, ``engine.py``):

1. every image gets a trapdoor copy, blended with the trigger of a class drawn at random
   (independent of its true label);
2. discriminator step (``discriminator=True``): a small critic learns to tell clean images from
   trapdoor copies (binary cross-entropy);
3. trigger step: with the model in eval mode, one signed-gradient step of size ``trigger_step`` on the
   triggers lowers ``CE(model(trapdoor), class) + BCE(critic(trapdoor), clean)``, so the triggers get
   both more effective and less visible; then they are clamped to [0, 1];
4. model step: ``(1 - beta) CE(model(x), y) + beta CE(model(trapdoor), class)`` on the doubled batch.

Defaults are the authors' (configs ``config/celeba/classify_trap*.json``): ``alpha=0.02``,
``beta=0.2``, ``trigger_step=0.01``, discriminator on. The triggers are not needed at inference: the
returned model is a plain classifier, and the record keeps its trapdoor accuracy (triggered private
test images classified as the trigger's class); below :data:`TRAPDOOR_LEARNED` a warning says that the
trapdoors were not learned. That happens on small sets: on AT&T (160 images, 60 epochs, 180 steps) the
paper's ``alpha=0.02`` plants next to nothing, a larger blend nearly all, at unchanged natural accuracy
(measured in ``benchmarks/results/defenses_deployed.md``).

Differences from the authors' code: the critic is GMI's small WGAN critic (:class:`mi_art.priors.networks.Critic`,
trained with binary cross-entropy) rather than an ImageNet-pretrained VGG16, because nothing is downloaded;
triggers are blended into the augmented image (the authors augment after blending); the random
classes are drawn uniformly per image (the authors balance them per epoch).
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from mi_art.training import train_classifier
from mi_art.validation import check_bool, check_number

from .base import Defense, Trained
from .common import check_keys

DEFAULTS: Dict[str, Any] = {"alpha": 0.02, "beta": 0.2, "trigger_step": 0.01, "discriminator": True}
#: Channels of the critic's first convolution (its width doubles with each stage).
CRITIC_WIDTH = 16
#: Below this trapdoor accuracy on the test images the trapdoors were not learned (a warning says so).
TRAPDOOR_LEARNED = 0.5


def check_params(params: Dict[str, Any]) -> Dict[str, Any]:
    check_keys("trap-mid", params, DEFAULTS)
    out = {**DEFAULTS, **params}
    out["alpha"] = check_number("alpha", out["alpha"], low=0, high=1, low_open=True, high_open=True,
                                hint=" (the trigger's share of the blended image; the paper uses 0.02)")
    out["beta"] = check_number("beta", out["beta"], low=0, high=1, high_open=True,
                               hint=" (the weight of the trapdoor loss; the paper uses 0.2)")
    out["trigger_step"] = check_number("trigger_step", out["trigger_step"], low=0,
                                       hint=" (the signed-gradient step of the triggers per batch; 0 keeps them fixed)")
    out["discriminator"] = check_bool("discriminator", out["discriminator"])
    return out


def blend(x: torch.Tensor, triggers: torch.Tensor, alpha: float) -> torch.Tensor:
    """``(1 - alpha) x + alpha t``: images ``x`` (N, C, H, W) with their triggers (N, C, H, W)."""
    return (1 - alpha) * x + alpha * triggers


class TrapdoorLoss:
    """``loss_fn(model, x, y)`` for :func:`mi_art.training.train_classifier` that runs steps 1-4 of the
    module docstring each call. ``triggers`` (K, C, H, W) are updated in place of the attribute."""

    def __init__(self, num_classes: int, input_shape: Tuple[int, int, int], *, alpha: float, beta: float,
                 trigger_step: float, discriminator: bool, lr: float, device: torch.device, seed: int) -> None:
        from mi_art.priors.networks import Critic

        self.num_classes, self.alpha, self.beta, self.trigger_step = num_classes, alpha, beta, trigger_step
        self.generator = torch.Generator().manual_seed(int(seed))
        self.triggers = torch.rand((num_classes, *input_shape), generator=self.generator).to(device)
        self.critic: Optional[nn.Module] = None
        if discriminator:
            channels, size, _ = input_shape
            self.critic = Critic(size, channels, width=CRITIC_WIDTH).to(device).train()
            self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr, betas=(0.5, 0.999))

    def _looks_clean(self, x: torch.Tensor) -> torch.Tensor:
        score = self.critic(x)
        return F.binary_cross_entropy_with_logits(score, torch.ones_like(score))

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = torch.randint(self.num_classes, (len(x),), generator=self.generator).to(x.device)
        if self.critic is not None:
            trapped = blend(x, self.triggers[target], self.alpha)
            clean, fake = self.critic(x), self.critic(trapped)
            critic_loss = F.binary_cross_entropy_with_logits(clean, torch.ones_like(clean)) + \
                F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
            self.critic_opt.zero_grad(set_to_none=True)
            critic_loss.backward()
            self.critic_opt.step()
        if self.trigger_step > 0:
            model.eval()
            triggers = self.triggers.clone().requires_grad_(True)
            trapped = blend(x, triggers[target], self.alpha)
            loss = F.cross_entropy(model(trapped), target)
            if self.critic is not None:
                loss = loss + self._looks_clean(trapped)
            grad, = torch.autograd.grad(loss, triggers)
            self.triggers = (self.triggers - self.trigger_step * grad.sign()).clamp(0, 1)
            model.train()
        logits = model(torch.cat([x, blend(x, self.triggers[target], self.alpha)]))
        n = len(x)
        return (1 - self.beta) * F.cross_entropy(logits[:n], y) + self.beta * F.cross_entropy(logits[n:], target)


@torch.no_grad()
def trapdoor_accuracy(model: nn.Module, x: Any, triggers: torch.Tensor, alpha: float, *, seed: int = 0,
                      batch_size: int = 256) -> float:
    """Share of the images ``x`` (N, C, H, W) in [0, 1] that the model assigns to the class of the
    trigger blended into them (a class drawn at random per image): how well the trapdoors work."""
    device = triggers.device
    x = torch.as_tensor(x, dtype=torch.float32)
    generator = torch.Generator().manual_seed(int(seed))
    target = torch.randint(len(triggers), (len(x),), generator=generator)
    was = model.training
    model.eval()
    hits = 0
    for i in range(0, len(x), batch_size):
        xb, tb = x[i:i + batch_size].to(device), target[i:i + batch_size].to(device)
        hits += int((model(blend(xb, triggers[tb], alpha)).argmax(1) == tb).sum())
    model.train(was)
    return hits / max(1, len(x))


class TrapMID(Defense):
    """Trap-MID: per-class trapdoor triggers that lure inversion away from the private features."""

    name = "trap-mid"
    summary = "Trap-MID, per-class trapdoor triggers (https://arxiv.org/abs/2411.08460)"
    defaults = DEFAULTS

    def check_params(self, params: Dict[str, Any], n_train: int) -> Dict[str, Any]:
        return check_params(params)

    def train(self, model: nn.Module, dataset: Any, params: Dict[str, Any], settings: Dict[str, Any]) -> Trained:
        train, test = dataset.private_train, dataset.private_test
        loss_fn = TrapdoorLoss(dataset.num_classes, dataset.input_shape, alpha=params["alpha"], beta=params["beta"],
                               trigger_step=params["trigger_step"], discriminator=params["discriminator"],
                               lr=settings["lr"], device=settings["device"], seed=settings["seed"])
        model = train_classifier(model, train.x, train.y, loss_fn=loss_fn, desc="Trap-MID", **settings)
        trapdoors = trapdoor_accuracy(model, test.x, loss_fn.triggers, params["alpha"], seed=settings["seed"])
        if trapdoors < TRAPDOOR_LEARNED:
            warnings.warn(
                f"Trap-MID did not plant its trapdoors: only {trapdoors:.2f} of the triggered test images go to "
                f"the trigger's class (chance {1 / dataset.num_classes:.2f}), so the attacks have no trap to fall "
                f"into and the target is defended by nothing. The blend alpha={params['alpha']:g} is too faint "
                f"for {settings['epochs']} epochs of {len(train)} images (the paper's 0.02 is for about 20,000 "
                "steps on CelebA): raise alpha (e.g. 0.1) or the epochs", UserWarning, stacklevel=4)
        return Trained(model, details={"trapdoor_test_accuracy": trapdoors,
                                       "trigger_mean": float(loss_fn.triggers.mean())})


__all__ = ["DEFAULTS", "TRAPDOOR_LEARNED", "TrapMID", "TrapdoorLoss", "blend", "check_params", "trapdoor_accuracy"]
