"""TL-DMI: transfer-learning based defense (Ho et al., "Model Inversion Robustness: Can Transfer
Learning Help?", CVPR 2024, https://arxiv.org/abs/2405.05588).

Pre-train the classifier on public data (its own classes), freeze the first layers, replace the
classification layer by one for the private classes and fine-tune only the unfrozen layers on the
private data: the early layers never see private data, which limits what inversion can recover.
The two steps are those of :mod:`mi_art.pretraining` (public pre-training then private fine-tuning,
an option of every target and evaluation model); TL-DMI adds the freezing.

``freeze`` counts *parameterised leaf modules* (modules with their own parameters and no children:
convolutions, normalisation layers, linear layers) in module registration order, excluding the
classification layer (always trained): an int is a count, a float in (0, 1) a fraction (rounded,
at least one). Frozen modules are kept in eval mode while fine-tuning, so their parameters *and*
running statistics (BatchNorm) stay bit-identical to the pre-trained ones.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from mi_art.predictions import natural_accuracy
from mi_art.features import last_linear
from mi_art.pretraining import fine_tune_classifier, pretrain_classifier, replace_head  # noqa: F401 (re-exported)
from mi_art.validation import check_optional_count, check_optional_positive, is_int, is_number

from .base import Defense, Trained
from .common import check_keys, frozen, parameterised_leaves

DEFAULTS: Dict[str, Any] = {"freeze": 0.5, "pretrain_epochs": None, "pretrain_lr": None}


def check_params(params: Dict[str, Any]) -> Dict[str, Any]:
    check_keys("tl", params, DEFAULTS)
    out = {**DEFAULTS, **params}
    out["freeze"] = check_freeze(out["freeze"])
    out["pretrain_epochs"] = check_optional_count("pretrain_epochs", out["pretrain_epochs"],
                                                  hint=" (or None: the same as epochs)")
    out["pretrain_lr"] = check_optional_positive("pretrain_lr", out["pretrain_lr"], hint=" (or None: the same as lr)")
    return out


def check_freeze(freeze: Any) -> Union[int, float]:
    """``freeze``: a non-negative int count of layers, or a fraction in (0, 1)."""
    if is_int(freeze):
        if freeze < 0:
            raise ValueError(f"freeze must be a non-negative count of layers or a fraction in (0, 1), got {freeze!r}")
        return int(freeze)
    if is_number(freeze):
        if not 0 < float(freeze) < 1:
            raise ValueError(f"freeze as a fraction must be in (0, 1) (or give an int count of layers), "
                             f"got {freeze!r}")
        return float(freeze)
    raise ValueError(f"freeze must be an int count of layers or a finite fraction in (0, 1), got {freeze!r}")


def freezable_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """Parameterised leaf modules in module order, the classification layer excluded."""
    head = last_linear(model)
    return [(n, m) for n, m in parameterised_leaves(model) if m is not head]


def resolve_freeze(model: nn.Module, freeze: int | float) -> int:
    """The number of layers ``freeze`` stands for; ValueError if the model has fewer."""
    freeze = check_freeze(freeze)
    n = len(freezable_layers(model))
    if isinstance(freeze, float):
        return max(1, min(n, int(freeze * n + 0.5))) if n else 0
    if freeze > n:
        raise ValueError(f"freeze={freeze} asks to freeze more layers than the model has: it has {n} parameterised "
                         f"layers before the classification layer; use freeze <= {n} or a fraction in (0, 1)")
    return freeze


def frozen_eval_loss(frozen: List[nn.Module]):
    """Cross-entropy ``loss_fn`` that first puts the frozen modules into eval mode (no BatchNorm
    statistics updates, no dropout inside the frozen part)."""

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        for m in frozen:
            m.eval()
        return F.cross_entropy(model(x), y)

    return loss_fn


def pretrain_public(model: nn.Module, dataset: Any, **train_kwargs: Any) -> nn.Module:
    """Step 1: give ``model`` a head for the public classes and train it on ``dataset.public``
    (:func:`mi_art.pretraining.pretrain_classifier`; keyword arguments of
    :func:`mi_art.training.train_classifier`)."""
    return pretrain_classifier(model, dataset.public.x, dataset.public.y, num_classes=dataset.num_public_classes,
                               desc="TL pre-train (public)", **train_kwargs)


def fine_tune_private(model: nn.Module, dataset: Any, freeze: int | float,
                      **train_kwargs: Any) -> Tuple[nn.Module, List[str]]:
    """Step 2: replace the head by one for the private classes, freeze the first ``freeze`` layers and
    fine-tune the rest on ``dataset.private_train`` (:func:`mi_art.pretraining.fine_tune_classifier`).
    The frozen parameters and buffers are left bit-identical; ``requires_grad`` is restored afterwards.
    Returns the model and the frozen layer names."""
    # the head is never among the frozen layers: replacing it after freezing is the same
    layers = freezable_layers(model)[:resolve_freeze(model, freeze)]
    train = dataset.private_train
    with frozen(m for _, m in layers):
        model = fine_tune_classifier(model, train.x, train.y, dataset.num_classes, reseed_head=False,
                                     loss_fn=frozen_eval_loss([m for _, m in layers]),
                                     desc="TL fine-tune (private)", **train_kwargs)
    return model, [n for n, _ in layers]


class TransferLearning(Defense):
    """TL-DMI: public pre-training, the first layers frozen, the rest fine-tuned on the private data."""

    name = "tl"
    summary = "TL-DMI, transfer learning with frozen early layers (https://arxiv.org/abs/2405.05588)"
    defaults = DEFAULTS

    def check_params(self, params: Dict[str, Any], n_train: int) -> Dict[str, Any]:
        return check_params(params)

    def architecture(self, model: nn.Module, num_classes: int, params: Dict[str, Any]) -> nn.Module:
        resolve_freeze(model, params["freeze"])  # a count the model cannot meet is refused before training
        return model  # the head is replaced twice: for the public identities, then for the private ones

    def train(self, model: nn.Module, dataset: Any, params: Dict[str, Any], settings: Dict[str, Any]) -> Trained:
        count = resolve_freeze(model, params["freeze"])
        pre = dict(settings, epochs=params["pretrain_epochs"] or settings["epochs"],
                   lr=params["pretrain_lr"] or settings["lr"])
        model = pretrain_public(model, dataset, **pre)
        public_accuracy = natural_accuracy(model, dataset.public.x, dataset.public.y)
        model, frozen = fine_tune_private(model, dataset, count, **settings)
        return Trained(model, details={
            "public_train_accuracy": public_accuracy, "frozen_layers": frozen, "frozen_count": count,
            "trainable_layers": [n for n, _ in freezable_layers(model)][count:]})
