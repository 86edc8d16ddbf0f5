"""Negative label smoothing (Struppek et al., "Be Careful What You Smooth For: Label Smoothing Can Be a
Privacy Shield but Also a Catalyst for Model Inversion Attacks", ICLR 2024,
https://arxiv.org/abs/2310.06549).

Targets ``(1 - alpha) * onehot + alpha / C`` with a *negative* ``alpha`` (default -0.05) make the
model's confidence surface less informative to gradient-based inversion. Schedule (the authors'
warm-up): ``alpha = 0`` for the first half of the epochs, then ramped linearly to ``alpha`` over the
next quarter and held there. The authors' scheduler jumps from half to full ``alpha`` at 75% of the
epochs; this one ramps without the jump.

Positive ``alpha`` (ordinary label smoothing) is accepted with a warning: the paper shows that
positive smoothing *increases* model inversion leakage.

Formula note: the targets follow the paper's formula (``alpha / C`` on every class, the true class
gets ``1 - alpha + alpha / C``); the authors' code puts ``alpha / (C - 1)`` on the wrong classes and
``1 - alpha`` on the true one.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from mi_art.validation import check_count, check_int, check_number

from mi_art.training import train_classifier

from .base import Defense, Trained
from .common import check_keys

DEFAULTS: Dict[str, Any] = {"alpha": -0.05, "warmup": 0.5, "ramp": 0.25}


def smoothed_targets(labels: torch.Tensor, num_classes: int, alpha: float) -> torch.Tensor:
    """``(1 - alpha) * onehot(labels) + alpha / num_classes``, shape (N, num_classes); rows sum to 1."""
    num_classes = check_count("num_classes", num_classes)
    alpha = check_number("alpha", alpha, low=-1, high=1, high_open=True)
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point():
        what = f"a {labels.dtype} tensor of shape {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) \
            else type(labels).__name__
        raise ValueError(f"labels must be a 1-D integer tensor of class indices, got {what}")
    onehot = F.one_hot(labels.long(), num_classes).float()
    return (1 - alpha) * onehot + alpha / num_classes


def smoothing_factor(epoch: int, epochs: int, *, warmup: float = 0.5, ramp: float = 0.25) -> float:
    """Share of the final ``alpha`` used in ``epoch`` (0-based) of ``epochs``: 0 during the first
    ``warmup`` fraction of the epochs, then linear up to 1 over the next ``ramp`` fraction, then 1.
    With ``ramp = 0`` the full ``alpha`` starts right after the warm-up."""
    epochs = check_count("epochs", epochs)
    epoch = check_int("epoch", epoch, low=0)
    warmup = check_number("warmup", warmup, low=0, high=1, high_open=True)
    ramp = check_number("ramp", ramp, low=0, high=1)
    start = warmup * epochs
    if epoch < start:
        return 0.0
    length = ramp * epochs
    if length <= 0:
        return 1.0
    return float(min(1.0, (epoch + 1 - start) / length))


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``mean_i sum_k -t_ik log softmax(logits)_ik`` (negative targets allowed)."""
    return -(targets * F.log_softmax(logits, 1)).sum(1).mean()


def check_params(params: Dict[str, Any]) -> Dict[str, Any]:
    check_keys(NegativeLabelSmoothing.name, params, DEFAULTS)
    out = {**DEFAULTS, **params}
    out["alpha"] = check_number("alpha", out["alpha"], low=-1, high=1, high_open=True,
                                hint=" (the smoothing factor; negative label smoothing uses e.g. -0.05)")
    out["warmup"] = check_number("warmup", out["warmup"], low=0, high=1, high_open=True,
                                 hint=" (fraction of the epochs trained with alpha = 0)")
    out["ramp"] = check_number("ramp", out["ramp"], low=0, high=1,
                               hint=" (fraction of the epochs over which alpha is ramped in)")
    if out["alpha"] > 0:
        warnings.warn(f"alpha={out['alpha']} is positive label smoothing, which increases model inversion "
                      "leakage (Struppek et al., ICLR 2024); use a negative alpha such as -0.05 to defend",
                      UserWarning, stacklevel=4)
    return out


class NegativeLabelSmoothingLoss:
    """``loss_fn(model, x, y)`` for :func:`mi_art.training.train_classifier` with the warm-up schedule.

    ``train_classifier`` calls the loss once per batch and makes ``ceil(n / batch_size)`` batches per
    epoch, so the epoch is ``calls // steps_per_epoch``. ``history`` records the ``alpha`` used per epoch.
    """

    def __init__(self, num_classes: int, alpha: float, epochs: int, steps_per_epoch: int, *,
                 warmup: float = 0.5, ramp: float = 0.25) -> None:
        num_classes, epochs = check_count("num_classes", num_classes), check_count("epochs", epochs)
        steps_per_epoch = check_count("steps_per_epoch", steps_per_epoch)
        alpha = check_number("alpha", alpha, low=-1, high=1, high_open=True)
        warmup = check_number("warmup", warmup, low=0, high=1, high_open=True)
        ramp = check_number("ramp", ramp, low=0, high=1)
        self.num_classes, self.alpha, self.epochs = num_classes, alpha, epochs
        self.steps_per_epoch, self.warmup, self.ramp = max(1, steps_per_epoch), warmup, ramp
        self.calls = 0
        self.history: List[float] = []

    def current_alpha(self) -> float:
        epoch = self.calls // self.steps_per_epoch
        return self.alpha * smoothing_factor(epoch, self.epochs, warmup=self.warmup, ramp=self.ramp)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        alpha = self.current_alpha()
        if self.calls % self.steps_per_epoch == 0:
            self.history.append(alpha)
        self.calls += 1
        return soft_cross_entropy(model(x), smoothed_targets(y, self.num_classes, alpha))


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Batches per epoch of ``n`` samples: ``ceil(n / batch_size)``."""
    n, batch_size = check_count("n", n), check_count("batch_size", batch_size)
    return math.ceil(n / batch_size)


class NegativeLabelSmoothing(Defense):
    """Negative label smoothing with the warm-up schedule."""

    name = "negative-label-smoothing"
    summary = "negative label smoothing (https://arxiv.org/abs/2310.06549)"
    defaults = DEFAULTS

    def check_params(self, params: Dict[str, Any], n_train: int) -> Dict[str, Any]:
        return check_params(params)

    def train(self, model: nn.Module, dataset: Any, params: Dict[str, Any], settings: Dict[str, Any]) -> Trained:
        train = dataset.private_train
        loss_fn = NegativeLabelSmoothingLoss(dataset.num_classes, params["alpha"], settings["epochs"],
                                             steps_per_epoch(len(train), settings["batch_size"]),
                                             warmup=params["warmup"], ramp=params["ramp"])
        model = train_classifier(model, train.x, train.y, loss_fn=loss_fn, desc="NLS", **settings)
        return Trained(model, details={"alpha_per_epoch": list(loss_fn.history)})
