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

from ..features import check_feature_layer, logits_and_features, penultimate_layer
from ..losses import IDENTITY_LOSSES, feature_regulariser, identity_loss
from ..utils import EstimatorModule, as_module, check_output_index, eval_mode, seed_everything
from ..validation import (check_bool, check_choice, check_count, check_finite, check_list, check_number,
                          check_positive, check_seed)

# The papers average their losses over a batch of 60 latents; dividing the per-latent sum by this
# constant keeps their learning rates while making each latent's update independent of batch_size.
REFERENCE_BATCH = 60
#: With ``reg_weight=None`` the regulariser's weight is set, once per ``infer``, so that its mean input-gradient
#: norm on the first prior samples is this fraction of the identity loss's (the ensemble's mean loss under
#: model augmentation). The balance, not the weight, is what transfers between targets: see docs/methods.md.
REG_GRADIENT_RATIO = 0.25
#: the loss is checked for NaN/infinity every so many iterations (and at the last one)
CHECK_EVERY = 50


def _feature_reference(name: str, value: Any, dim: Optional[int], whose: str) -> torch.Tensor:
    """A mean public feature (``p_reg``) as a flat float tensor of ``dim`` finite values (any size when
    ``dim`` is None)."""
    p = torch.as_tensor(np.asarray(value, dtype=np.float32) if not isinstance(value, torch.Tensor)
                        else value.detach().float()).flatten()
    if dim is not None and p.numel() != dim:
        raise ValueError(f"{name} has {p.numel()} values but {whose} penultimate feature has {dim}")
    if not torch.isfinite(p).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return p


def _linear_inputs(model: nn.Module) -> Optional[int]:
    """The penultimate feature size of a model read at its last ``nn.Linear`` (None for another layer)."""
    layer = penultimate_layer(model)
    return layer.in_features if isinstance(layer, nn.Linear) else None


class GANInversionAttack(InferenceAttack, abc.ABC):
    """Base class of the GAN-based model inversion attacks (not used directly)."""

    attack_params = InferenceAttack.attack_params + [
        "identity_loss", "p_reg", "reg_weight", "surrogates", "surrogate_p_reg", "iterations", "learning_rate",
        "n_reconstructions", "batch_size", "id_weight", "feature_layer", "output_index", "seed", "verbose",
    ]
    _estimator_requirements = (BaseEstimator, PyTorchEstimator, ClassifierMixin, ClassGradientsMixin)

    def __init__(self, estimator: Any, generator: nn.Module, discriminator: nn.Module, *,
                 identity_loss: str = "ce", p_reg: Any = None, reg_weight: Optional[float] = None,
                 surrogates: Sequence[Any] = (), surrogate_p_reg: Optional[Sequence[Any]] = None,
                 iterations: int = 2400, learning_rate: float = 0.02,
                 n_reconstructions: int = 5, batch_size: int = 60, id_weight: float = 100.0,
                 feature_layer: Optional[str] = None, output_index: Any = None,
                 seed: Optional[int] = None, verbose: bool = True) -> None:
        super().__init__(estimator=estimator)
        if not isinstance(generator, nn.Module) or not isinstance(discriminator, nn.Module):
            raise ValueError("generator and discriminator must be torch.nn.Module instances")
        self.generator = generator
        self.discriminator = discriminator
        self.identity_loss = identity_loss
        self.p_reg = p_reg
        self.reg_weight = reg_weight
        self.surrogates = list(surrogates) if isinstance(surrogates, (list, tuple)) else surrogates
        self.surrogate_p_reg = (list(surrogate_p_reg) if isinstance(surrogate_p_reg, (list, tuple))
                                else surrogate_p_reg)
        self.iterations = iterations
        self.learning_rate = learning_rate
        self.n_reconstructions = n_reconstructions
        self.batch_size = batch_size
        self.id_weight = id_weight
        self.feature_layer = feature_layer
        self.output_index = output_index
        self.seed = seed
        self.verbose = verbose
        self.labels_: Optional[np.ndarray] = None
        self.reconstruction_index_: Optional[np.ndarray] = None
        self.target_confidence_: Optional[np.ndarray] = None
        self.reg_weight_: Optional[float] = None
        self.reg_weights_: Optional[List[float]] = None
        self._check_params()

    # ------------------------------------------------------------------ ART contract

    def _check_params(self) -> None:
        check_choice("identity_loss", self.identity_loss, IDENTITY_LOSSES)
        for name in ("iterations", "n_reconstructions", "batch_size"):
            check_count(name, getattr(self, name))
        for name in ("learning_rate", "id_weight"):
            check_positive(name, getattr(self, name))
        if self.reg_weight is not None:
            check_number("reg_weight", self.reg_weight, low=0)
        check_bool("verbose", self.verbose)
        check_seed("seed", self.seed)
        check_output_index(self.output_index)
        # the feature layer is looked for only when named or needed (p_reg): no nn.Linear is required otherwise
        layer_name = check_feature_layer(self.feature_layer)
        self._feature_module = None if layer_name is None else penultimate_layer(self.estimator.model, layer_name)
        self._surrogate_modules = [as_module(s, f"surrogates[{i}]") for i, s in
                                   enumerate(check_list("surrogates", self.surrogates, item="model"))]
        self._p_reg_tensor = None
        if self.p_reg is not None:
            self._feature_module = penultimate_layer(self.estimator.model, layer_name)
            self._p_reg_tensor = _feature_reference("p_reg", self.p_reg, self._feature_dim(self._feature_module),
                                                    "the target's")
        self._surrogate_p_reg = None
        if self.surrogate_p_reg is not None:
            refs = check_list("surrogate_p_reg", self.surrogate_p_reg, item="feature reference")
            if self.p_reg is None:
                raise ValueError("surrogate_p_reg regularises the surrogates as p_reg regularises the target: "
                                 "give p_reg too, or leave surrogate_p_reg out")
            if len(refs) != len(self._surrogate_modules):
                raise ValueError(f"surrogate_p_reg has {len(refs)} entries for {len(self._surrogate_modules)} "
                                 "surrogates: give one per surrogate, in the same order")
            self._surrogate_p_reg = [
                _feature_reference(f"surrogate_p_reg[{i}]", ref, _linear_inputs(s), f"surrogates[{i}]'s")
                for i, (ref, s) in enumerate(zip(refs, self._surrogate_modules))]

    def _target_view(self) -> EstimatorModule:
        """The target as the attack sees it (:class:`~mi_art.utils.EstimatorModule`): images in the unit
        space are mapped to its input space by ``from_unit``; ART preprocessing; ``output_index``."""
        return EstimatorModule(self.estimator, output_index=self.output_index, what="target")

    def _feature_dim(self, layer: nn.Module) -> int:
        """Size of the target's penultimate feature: an ``nn.Linear``'s ``in_features``, else measured on
        two blank inputs."""
        if isinstance(layer, nn.Linear):
            return layer.in_features
        view = self._target_view()
        x = torch.zeros(2, *self.estimator.input_shape, device=self._device)
        with torch.no_grad(), eval_mode(self.estimator.model):
            return int(logits_and_features(view, x, layer)[1].shape[1])

    # ------------------------------------------------------------------ the verb

    def infer(self, x: Optional[np.ndarray] = None, y: Optional[np.ndarray] = None, **kwargs: Any) -> np.ndarray:
        """Reconstruct ``n_reconstructions`` images for every identity in ``y``.

        :param x: Not used (the attack starts from the GAN prior); must be None.
        :param y: Identities (class indices, or one-hot rows) to reconstruct.
        :return: Reconstructions of shape ``(len(y) * n_reconstructions, *estimator.input_shape)`` in the
            estimator's input space (its ``clip_values`` range and layout: what ``estimator.predict``
            takes), ordered as ``np.repeat(y, n_reconstructions)``. Afterwards ``labels_``,
            ``reconstruction_index_`` and ``target_confidence_`` (the target's probability of the attacked
            identity for each reconstruction, as ``estimator.predict`` gives it: the softmax of its
            logits, or its own probabilities for a model ending in softmax) describe them.
        """
        if x is not None:
            raise ValueError("x is not used by GAN-based model inversion: pass the identities to attack as y")
        if y is None:
            raise ValueError("y is required: the identities (class indices) to reconstruct")
        labels = self._check_labels(y)
        seed_everything(self.seed)
        self.reg_weight_, self.reg_weights_ = None, None
        target = self._target_view()
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

    def _check_models(self, target: EstimatorModule) -> None:
        """Shapes agree, outputs are logits when the logit loss is asked for (the first forward pass of
        each view also detects a model returning probabilities, see :class:`~mi_art.utils.EstimatorModule`)."""
        device = self._device
        for model in (self.generator, self.discriminator, *self._surrogate_modules):
            model.to(device)
        latent = self._latent_dim
        with torch.no_grad():
            images = self.generator(torch.zeros(2, latent, device=device).uniform_(-1, 1))
            probe = target.from_unit(images)
            expected = tuple(self.estimator.input_shape)
            if tuple(probe.shape[1:]) != expected:
                raise ValueError(f"the generator makes images of shape {tuple(probe.shape[1:])} (in the estimator's "
                                 f"layout) but the estimator expects inputs of shape {expected}")
            out = target(probe)
            if out.shape[1] != self.estimator.nb_classes:
                raise ValueError(f"the estimator returns {out.shape[1]} outputs, nb_classes is {self.estimator.nb_classes}")
            if self.identity_loss == "logit" and target.outputs_probabilities:
                raise ValueError("identity_loss='logit' needs logits, but the estimator returns probabilities "
                                 "(outputs in [0, 1] that sum to 1): remove the final softmax from the model "
                                 "or use identity_loss='ce'")
            for i, s in enumerate(self._surrogate_modules):
                s_out = s(s.from_unit(images))
                if s_out.shape != out.shape:
                    raise ValueError(f"surrogates[{i}] returns outputs of shape {tuple(s_out.shape[1:])}, the "
                                     f"target {tuple(out.shape[1:])}")
                if self.identity_loss == "logit" and s.outputs_probabilities:
                    raise ValueError(f"identity_loss='logit' needs logits, but surrogates[{i}] returns probabilities")
            self._check_discriminator(self.discriminator(images))

    def _check_discriminator(self, scores: torch.Tensor) -> None:
        """The prior's discriminator scores the generator's images as the attack needs (see subclasses)."""

    @property
    def _latent_dim(self) -> int:
        return int(getattr(self.generator, "latent_dim", 100))

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
        """Per-sample identity loss over the model set (the target, then the surrogates).

        Without ``p_reg``: the mean over the models of their CE or logit loss. With ``p_reg`` only (the
        paper's form): that mean plus ``reg_weight_ * ||p - p_reg||^2`` on the target's penultimate feature
        ``p`` (mean over dimensions). With ``surrogate_p_reg`` too: the mean over the models of each one's
        logit loss plus its own regulariser, each model's weight in ``reg_weights_``. The weights are
        ``reg_weight``, or when that is None calibrated on the first images (:meth:`_calibrate_reg_weights`)."""
        x = target.from_unit(images)
        if self._p_reg_tensor is None:  # no feature needed: any head works, nn.Linear or not
            return self._ensemble_identity_loss(target(x), images, labels)
        logits, feats = logits_and_features(target, x, self._feature_module)
        if self.reg_weights_ is None:
            self.reg_weights_ = self._calibrate_reg_weights(target, images, labels)
            self.reg_weight_ = self.reg_weights_[0]
        target_term = self.reg_weight_ * feature_regulariser(feats, self._p_reg_tensor)
        if self._surrogate_p_reg is None:
            return self._ensemble_identity_loss(logits, images, labels) + target_term
        terms = [identity_loss(logits, labels, self.identity_loss) + target_term]
        for s, ref, weight in zip(self._surrogate_modules, self._surrogate_p_reg, self.reg_weights_[1:]):
            s_logits, s_feats = logits_and_features(s, s.from_unit(images))
            terms.append(identity_loss(s_logits, labels, self.identity_loss) + weight * feature_regulariser(s_feats, ref))
        return torch.stack(terms).mean(0)

    def _ensemble_identity_loss(self, logits: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample mean over target (its ``logits``) and surrogates (on unit-space ``images``) of the
        identity loss."""
        losses = [identity_loss(logits, labels, self.identity_loss)]
        losses += [identity_loss(s(s.from_unit(images)), labels, self.identity_loss) for s in self._surrogate_modules]
        return torch.stack(losses).mean(0)

    def _calibrate_reg_weights(self, target: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> List[float]:
        """The regularisers' weights: ``reg_weight`` for every model when it is set; else, on ``images``, the
        weight at which a regulariser's mean input-gradient norm is ``REG_GRADIENT_RATIO`` times that of
        the identity loss it balances: the ensemble's mean identity loss for the target's regulariser in
        the paper's form, each model's own identity loss when every model is regularised
        (``surrogate_p_reg``). Target first, then the surrogates.

        The paper's weight of 1 belongs to its target, whose feature passes through BatchNorm1d; on a
        plain ReLU feature the same weight gives a regulariser whose gradient is 2x the identity
        gradient (AT&T faces), and under model augmentation the mean identity gradient of models that
        disagree shrinks (to 0.66x the target's) while the regulariser's does not. Fixing the ratio of
        the two gradients instead of the weight keeps LOM's balance for any feature scale and under MA."""
        n_models = 1 + (len(self._surrogate_modules) if self._surrogate_p_reg is not None else 0)
        if self.reg_weight is not None:
            return [float(self.reg_weight)] * n_models
        xg = images.detach().requires_grad_(True)
        logits, feats = logits_and_features(target, target.from_unit(xg), self._feature_module)
        if self._surrogate_p_reg is None:
            pairs = [(self._ensemble_identity_loss(logits, xg, labels), feats, self._p_reg_tensor)]
        else:
            pairs = [(identity_loss(logits, labels, self.identity_loss), feats, self._p_reg_tensor)]
            for s, ref in zip(self._surrogate_modules, self._surrogate_p_reg):
                s_logits, s_feats = logits_and_features(s, s.from_unit(xg))
                pairs.append((identity_loss(s_logits, labels, self.identity_loss), s_feats, ref))
        weights = []
        for i, (id_loss, model_feats, ref) in enumerate(pairs):
            g_id, = torch.autograd.grad(id_loss.sum(), xg, retain_graph=True)
            g_reg, = torch.autograd.grad(feature_regulariser(model_feats, ref).sum(), xg, retain_graph=True)
            id_norm = g_id.flatten(1).norm(dim=1).mean()
            reg_norm = g_reg.flatten(1).norm(dim=1).mean()
            if not torch.isfinite(id_norm) or not torch.isfinite(reg_norm) or reg_norm <= 0:
                whose = "p_reg" if i == 0 else f"surrogate_p_reg[{i - 1}]"
                raise ValueError(f"reg_weight=None could not be calibrated: the regulariser of {whose} has no "
                                 "gradient on the prior's samples (the reference equals their features?); pass "
                                 "reg_weight explicitly")
            weights.append(float(REG_GRADIENT_RATIO * id_norm / reg_norm))
        return weights

    def _objective(self, target: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   prior: torch.Tensor, iteration: int = 0) -> torch.Tensor:
        per_sample = prior + self.id_weight * self._identity_objective(target, images, labels)
        loss = per_sample.sum() / REFERENCE_BATCH
        if iteration % CHECK_EVERY == 0 or iteration == self.iterations - 1:  # a check is a device sync
            check_finite(loss, "the attack's loss (a prior, the target or a surrogate returned NaN or infinity)")
        return loss

    @torch.no_grad()
    def _confidence(self, target: EstimatorModule, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The target's probability of ``labels`` for unit-space ``images``: the softmax of its logits (of
        the log-probabilities of a model returning probabilities: its own probabilities)."""
        probs = F.softmax(target(target.from_unit(images)), 1)
        return probs.gather(1, labels.view(-1, 1)).squeeze(1)

    def _progress(self, total: int, desc: str):
        return tqdm(total=total, desc=desc, disable=not self.verbose)

    @abc.abstractmethod
    def _run(self, target: nn.Module, labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Return ``(images, target_confidence)`` ordered as ``np.repeat(labels, n_reconstructions)``."""

