"""The identity loss of an attack: what makes a reconstruction the attacked identity for a model set.

Cross-entropy (GMI, KEDMI, VMI), the raw logit of LOMMA's logit maximisation (Nguyen et al., CVPR 2023,
https://arxiv.org/abs/2304.01669) with its feature regulariser ``||p - p_reg||^2`` and ``p_reg``, the
mean penultimate feature of public images, and PLG-MI's max-margin loss (Yuan et al., AAAI 2023,
https://arxiv.org/abs/2302.09814). :class:`IdentityObjective` puts them together over the target and its
surrogates, with the regulariser's weight calibrated to the identity loss's gradient.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .features import extract_features, logits_and_features
from .utils import DeviceLike, EstimatorModule, as_module, resolve_device
from .validation import check_count, check_finite, check_images

IDENTITY_LOSSES = ("ce", "logit", "margin")


def identity_loss(logits: torch.Tensor, y: torch.Tensor, kind: str = "ce") -> torch.Tensor:
    """Per-sample identity loss: cross-entropy (GMI, KEDMI, VMI), the negative raw logit of class ``y``
    (LOMMA's logit maximisation; bias included as in the authors' code) or PLG-MI's max-margin loss
    ``max_{k != y} l_k - l_y`` (raw logits, as in the authors' code). Shape ``(N,)``."""
    if kind == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    if kind == "logit":
        return -logits.gather(1, y.view(-1, 1)).squeeze(1)
    if kind == "margin":  # PLG-MI: the best other logit minus the attacked one, unbounded below
        own = logits.gather(1, y.view(-1, 1)).squeeze(1)
        return logits.scatter(1, y.view(-1, 1), float("-inf")).max(1).values - own
    raise ValueError(f"identity_loss must be one of {IDENTITY_LOSSES}, got {kind!r}")


def feature_regulariser(features: torch.Tensor, p_reg: torch.Tensor) -> torch.Tensor:
    """LOMMA's ``||p - p_reg||^2`` averaged over feature dimensions: shape ``(N,)``."""
    return (features - p_reg.to(features)).pow(2).flatten(1).mean(1)


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
    if isinstance(model, EstimatorModule):
        model.check_input_range(x, "public_x")
    device = resolve_device(device) if device is not None else None
    feats = check_finite(extract_features(model, torch.from_numpy(x), batch_size, device, layer=feature_layer),
                         "the target's features")
    return feats.mean(0)


#: With ``reg_weight=None`` the regulariser's weight is set, once per ``infer``, so that its mean input-gradient
#: norm on the first prior samples is this fraction of the identity loss's (the ensemble's mean loss under
#: model augmentation). The balance, not the weight, is what transfers between targets: see docs/methods.md.
REG_GRADIENT_RATIO = 0.25


def feature_reference(name: str, value: Any, dim: Optional[int], whose: str) -> torch.Tensor:
    """A mean public feature (``p_reg``) as a flat float tensor of ``dim`` finite values (any size when
    ``dim`` is None)."""
    p = torch.as_tensor(np.asarray(value, dtype=np.float32) if not isinstance(value, torch.Tensor)
                        else value.detach().float()).flatten()
    if dim is not None and p.numel() != dim:
        raise ValueError(f"{name} has {p.numel()} values but {whose} penultimate feature has {dim}")
    if not torch.isfinite(p).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return p


class IdentityObjective:
    """The identity part of an attack's loss, per reconstruction, over a model set (the target, then its
    surrogates: views taking unit-space images, :class:`~mi_art.surrogates.ModelSet`).

    Without ``p_reg``: the mean over the models of their ``kind`` loss (:func:`identity_loss`). With
    ``p_reg`` only (the paper's form): that mean plus ``reg_weights[0] * ||p - p_reg||^2`` on the target's
    penultimate feature ``p`` (mean over dimensions; read at ``feature_module``). With ``surrogate_p_reg``
    too: the mean over the models of each one's loss plus its own regulariser. The weights are
    ``reg_weight`` for every model, or when that is None calibrated on the first images the objective
    sees (:meth:`calibrate`); ``reg_weights`` holds them afterwards (the target's first).
    """

    def __init__(self, models: Sequence[nn.Module], kind: str, *, feature_module: Optional[nn.Module] = None,
                 p_reg: Optional[torch.Tensor] = None, surrogate_p_reg: Optional[Sequence[torch.Tensor]] = None,
                 reg_weight: Optional[float] = None) -> None:
        self.target, self.surrogates = models[0], list(models[1:])
        self.kind, self.feature_module = kind, feature_module
        self.p_reg, self.surrogate_p_reg, self.reg_weight = p_reg, surrogate_p_reg, reg_weight
        self.reg_weights: Optional[List[float]] = None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        target = self.target
        x = target.from_unit(images)
        if self.p_reg is None:  # no feature needed: any head works, nn.Linear or not
            return self.ensemble_loss(target(x), images, labels)
        logits, feats = logits_and_features(target, x, self.feature_module)
        if self.reg_weights is None:
            self.reg_weights = self.calibrate(images, labels)
        target_term = self.reg_weights[0] * feature_regulariser(feats, self.p_reg)
        if self.surrogate_p_reg is None:
            return self.ensemble_loss(logits, images, labels) + target_term
        terms = [identity_loss(logits, labels, self.kind) + target_term]
        for s, ref, weight in zip(self.surrogates, self.surrogate_p_reg, self.reg_weights[1:]):
            s_logits, s_feats = logits_and_features(s, s.from_unit(images))
            terms.append(identity_loss(s_logits, labels, self.kind) + weight * feature_regulariser(s_feats, ref))
        return torch.stack(terms).mean(0)

    def ensemble_loss(self, logits: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample mean over target (its ``logits``) and surrogates (on unit-space ``images``) of the
        identity loss."""
        losses = [identity_loss(logits, labels, self.kind)]
        losses += [identity_loss(s(s.from_unit(images)), labels, self.kind) for s in self.surrogates]
        return torch.stack(losses).mean(0)

    def calibrate(self, images: torch.Tensor, labels: torch.Tensor) -> List[float]:
        """The regularisers' weights: ``reg_weight`` for every model when it is set; else, on ``images``, the
        weight at which a regulariser's mean input-gradient norm is ``REG_GRADIENT_RATIO`` times that of
        the identity loss it balances: the ensemble's mean identity loss for the target's regulariser in
        the paper's form, each model's own identity loss when every model is regularised
        (``surrogate_p_reg``). Target first, then the surrogates.

        The paper's weight of 1 belongs to its target, whose feature passes through BatchNorm1d; on a
        plain ReLU feature the same weight gives a regulariser whose gradient is larger than the identity
        gradient, and under model augmentation the mean identity gradient of models that disagree is
        shorter than the target's while the regulariser's is not (both measured on AT&T faces in
        docs/methods.md, LOM and MA). Fixing the ratio of
        the two gradients instead of the weight keeps LOM's balance for any feature scale and under MA."""
        n_models = 1 + (len(self.surrogates) if self.surrogate_p_reg is not None else 0)
        if self.reg_weight is not None:
            return [float(self.reg_weight)] * n_models
        xg = images.detach().requires_grad_(True)
        target = self.target
        logits, feats = logits_and_features(target, target.from_unit(xg), self.feature_module)
        if self.surrogate_p_reg is None:
            pairs = [(self.ensemble_loss(logits, xg, labels), feats, self.p_reg)]
        else:
            pairs = [(identity_loss(logits, labels, self.kind), feats, self.p_reg)]
            for s, ref in zip(self.surrogates, self.surrogate_p_reg):
                s_logits, s_feats = logits_and_features(s, s.from_unit(xg))
                pairs.append((identity_loss(s_logits, labels, self.kind), s_feats, ref))
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
