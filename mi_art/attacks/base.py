"""What GMI and KEDMI share: the ART contract, the identity loss over an ensemble (model
augmentation) with LOMMA's logit loss and ``p_reg`` regulariser, batching, and result bookkeeping.

LOMMA (Nguyen et al., "Re-thinking Model Inversion Attacks Against Deep Neural Networks",
CVPR 2023, https://arxiv.org/abs/2304.01669) is not a separate attack: ``identity_loss="logit"``
with ``p_reg`` and ``surrogates=[...]`` turn it on for either attack.
"""
from __future__ import annotations

import abc
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from art.attacks.attack import InferenceAttack
from art.estimators.classification.classifier import ClassGradientsMixin, ClassifierMixin
from art.estimators.estimator import BaseEstimator
from art.estimators.pytorch import PyTorchEstimator
from torch import nn
from tqdm.auto import tqdm

from ..features import last_linear, logits_and_features
from ..losses import IDENTITY_LOSSES, PReg, feature_regulariser, identity_loss
from ..utils import EstimatorModule, as_module, seed_everything
from ..validation import (check_bool, check_choice, check_count, check_finite, check_list, check_number,
                          check_positive, check_seed)

# The papers average their losses over a batch of 60 latents; dividing the per-latent sum by this
# constant keeps their learning rates while making each latent's update independent of batch_size.
REFERENCE_BATCH = 60
#: the loss is checked for NaN/infinity every so many iterations (and at the last one)
CHECK_EVERY = 50


class GANInversionAttack(InferenceAttack, abc.ABC):
    """Base class of the GAN-based model inversion attacks (not used directly)."""

    attack_params = InferenceAttack.attack_params + [
        "identity_loss", "p_reg", "reg_weight", "surrogates", "iterations", "learning_rate",
        "n_reconstructions", "batch_size", "id_weight", "seed", "verbose",
    ]
    _estimator_requirements = (BaseEstimator, PyTorchEstimator, ClassifierMixin, ClassGradientsMixin)

    def __init__(self, estimator: Any, generator: nn.Module, discriminator: nn.Module, *,
                 identity_loss: str = "ce", p_reg: Any = None, reg_weight: float = 1.0,
                 surrogates: Sequence[Any] = (), iterations: int = 2400, learning_rate: float = 0.02,
                 n_reconstructions: int = 5, batch_size: int = 60, id_weight: float = 100.0,
                 seed: Optional[int] = None, verbose: bool = True) -> None:
        super().__init__(estimator=estimator)
        if not isinstance(generator, nn.Module) or not isinstance(discriminator, nn.Module):
            raise ValueError("generator and discriminator must be torch.nn.Module instances")
        self.generator = generator
        self.discriminator = discriminator
        self.identity_loss = identity_loss
        self.p_reg = p_reg
        self.reg_weight = reg_weight
        self.surrogates = list(surrogates)
        self.iterations = iterations
        self.learning_rate = learning_rate
        self.n_reconstructions = n_reconstructions
        self.batch_size = batch_size
        self.id_weight = id_weight
        self.seed = seed
        self.verbose = verbose
        self.labels_: Optional[np.ndarray] = None
        self.reconstruction_index_: Optional[np.ndarray] = None
        self.target_confidence_: Optional[np.ndarray] = None
        self._check_params()

    # ------------------------------------------------------------------ ART contract

    def _check_params(self) -> None:
        check_choice("identity_loss", self.identity_loss, IDENTITY_LOSSES)
        for name in ("iterations", "n_reconstructions", "batch_size"):
            check_count(name, getattr(self, name))
        for name in ("learning_rate", "id_weight"):
            check_positive(name, getattr(self, name))
        check_number("reg_weight", self.reg_weight, low=0)
        check_bool("verbose", self.verbose)
        check_seed("seed", self.seed)
        self._surrogate_modules = [as_module(s, f"surrogates[{i}]") for i, s in
                                   enumerate(check_list("surrogates", self.surrogates, item="model"))]
        self._p_reg_tensor, self._p_reg_scale = None, None
        if self.p_reg is not None:
            p_reg = self.p_reg
            mean = p_reg.mean if isinstance(p_reg, PReg) else p_reg
            p = torch.as_tensor(np.asarray(mean, dtype=np.float32) if not isinstance(mean, torch.Tensor)
                                else mean.detach().float()).flatten()
            feat_dim = last_linear(self.estimator.model).in_features
            if p.numel() != feat_dim:
                raise ValueError(f"p_reg has {p.numel()} values but the target's penultimate feature has {feat_dim}")
            if not torch.isfinite(p).all() or (isinstance(p_reg, PReg) and not torch.isfinite(p_reg.std).all()):
                raise ValueError("p_reg contains NaN or infinite values")
            self._p_reg_tensor = p
            self._p_reg_scale = p_reg.scale().detach().float().flatten() if isinstance(p_reg, PReg) else None

    # ------------------------------------------------------------------ the verb

    def infer(self, x: Optional[np.ndarray] = None, y: Optional[np.ndarray] = None, **kwargs: Any) -> np.ndarray:
        """Reconstruct ``n_reconstructions`` images for every identity in ``y``.

        :param x: Not used (the attack starts from the GAN prior); must be None.
        :param y: Identities (class indices, or one-hot rows) to reconstruct.
        :return: Reconstructions of shape ``(len(y) * n_reconstructions, C, H, W)`` in the estimator's
            input range, ordered as ``np.repeat(y, n_reconstructions)``. Afterwards ``labels_``,
            ``reconstruction_index_`` and ``target_confidence_`` (the target's softmax probability of
            the attacked identity for each reconstruction) describe them.
        """
        if x is not None:
            raise ValueError("x is not used by GAN-based model inversion: pass the identities to attack as y")
        if y is None:
            raise ValueError("y is required: the identities (class indices) to reconstruct")
        labels = self._check_labels(y)
        seed_everything(self.seed)
        target = EstimatorModule(self.estimator)
        saved = self._freeze()
        try:
            self._check_models(target)
            images, conf = self._run(target, labels)
        finally:
            self._restore(saved)
        n = self.n_reconstructions
        self.labels_ = np.repeat(labels, n)
        self.reconstruction_index_ = np.tile(np.arange(n), len(labels))
        self.target_confidence_ = conf
        return images

    # ------------------------------------------------------------------ shared machinery

    @property
    def _device(self) -> torch.device:
        return self.estimator.device

    def _check_labels(self, y: Any) -> np.ndarray:
        from ..utils import check_labels

        return check_labels(y, self.estimator.nb_classes)

    def _check_models(self, target: nn.Module) -> None:
        """Shapes agree, outputs are logits when the logit loss is asked for."""
        device = self._device
        for model in (self.generator, self.discriminator, *self._surrogate_modules):
            model.to(device)
        latent = self._latent_dim
        with torch.no_grad():
            probe = self._to_estimator_range(self.generator(torch.zeros(2, latent, device=device).uniform_(-1, 1)))
            expected = tuple(self.estimator.input_shape)
            if tuple(probe.shape[1:]) != expected:
                raise ValueError(f"the generator makes images of shape {tuple(probe.shape[1:])} but the estimator "
                                 f"expects inputs of shape {expected}")
            out = target(probe)
            if out.shape[1] != self.estimator.nb_classes:
                raise ValueError(f"the estimator returns {out.shape[1]} outputs, nb_classes is {self.estimator.nb_classes}")
            if self.identity_loss == "logit" and _looks_like_probabilities(out):
                raise ValueError("identity_loss='logit' needs logits, but the estimator returns probabilities "
                                 "(outputs in [0, 1] that sum to 1): remove the final softmax from the model "
                                 "or use identity_loss='ce'")
            for i, s in enumerate(self._surrogate_modules):
                s_out = s(probe)
                if s_out.shape != out.shape:
                    raise ValueError(f"surrogates[{i}] returns outputs of shape {tuple(s_out.shape[1:])}, the "
                                     f"target {tuple(out.shape[1:])}")
                if self.identity_loss == "logit" and _looks_like_probabilities(s_out):
                    raise ValueError(f"identity_loss='logit' needs logits, but surrogates[{i}] returns probabilities")

    @property
    def _latent_dim(self) -> int:
        return int(getattr(self.generator, "latent_dim", 100))

    def _to_estimator_range(self, images: torch.Tensor) -> torch.Tensor:
        """Map generator output in [0, 1] to the estimator's ``clip_values`` range, if it has one."""
        clip = getattr(self.estimator, "clip_values", None)
        if clip is None:
            return images
        lo, hi = float(np.min(clip[0])), float(np.max(clip[1]))
        return images if (lo, hi) == (0.0, 1.0) else lo + (hi - lo) * images

    def _freeze(self) -> Tuple[List[Tuple[nn.Parameter, bool]], List[Tuple[nn.Module, bool]]]:
        """Put every model in eval mode without parameter gradients; returns what to restore."""
        models = [self.generator, self.discriminator, self.estimator.model, *self._surrogate_modules]
        grads = [(p, p.requires_grad) for m in models for p in m.parameters()]
        modes = [(sub, sub.training) for m in models for sub in m.modules()]
        for p, _ in grads:
            p.requires_grad_(False)
        for m in models:
            m.eval()
        return grads, modes

    @staticmethod
    def _restore(saved: Tuple[List[Tuple[nn.Parameter, bool]], List[Tuple[nn.Module, bool]]]) -> None:
        grads, modes = saved
        for p, flag in grads:
            p.requires_grad_(flag)
        for module, training in modes:
            module.training = training

    def _identity_objective(self, target: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample identity loss: the mean over target and surrogates of the CE or logit loss, the
        target's term carrying ``reg_weight * ||p - p_reg||^2`` when ``p_reg`` is given.

        The regulariser is part of the target's term, so under model augmentation it is averaged with
        the identity losses like the rest of that term. The paper adds it after the mean, which with
        two surrogates whose gradients point elsewhere doubled its weight against the identity term
        (measured on AT&T faces; see ``docs/methods.md``); without surrogates both are the same."""
        x = self._to_estimator_range(images)
        logits, feats = logits_and_features(target, x, last_linear(self.estimator.model))
        losses = [identity_loss(logits, labels, self.identity_loss)]
        losses += [identity_loss(s(x), labels, self.identity_loss) for s in self._surrogate_modules]
        if self._p_reg_tensor is not None:
            losses[0] = losses[0] + self.reg_weight * feature_regulariser(feats, self._p_reg_tensor, self._p_reg_scale)
        return torch.stack(losses).mean(0)

    def _objective(self, target: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   prior: torch.Tensor, iteration: int = 0) -> torch.Tensor:
        per_sample = prior + self.id_weight * self._identity_objective(target, images, labels)
        loss = per_sample.sum() / REFERENCE_BATCH
        if iteration % CHECK_EVERY == 0 or iteration == self.iterations - 1:  # a check is a device sync
            check_finite(loss, "the attack's loss (a prior, the target or a surrogate returned NaN or infinity)")
        return loss

    @torch.no_grad()
    def _confidence(self, target: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        probs = F.softmax(target(self._to_estimator_range(images)), 1)
        return probs.gather(1, labels.view(-1, 1)).squeeze(1)

    def _progress(self, total: int, desc: str):
        return tqdm(total=total, desc=desc, disable=not self.verbose)

    @abc.abstractmethod
    def _run(self, target: nn.Module, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Return ``(images, target_confidence)`` ordered as ``np.repeat(labels, n_reconstructions)``."""


def _looks_like_probabilities(out: torch.Tensor) -> bool:
    return bool(((out >= 0) & (out <= 1)).all() and torch.allclose(out.sum(1), torch.ones(len(out), device=out.device),
                                                                    atol=1e-4))
