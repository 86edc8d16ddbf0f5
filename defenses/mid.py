"""MID: Mutual Information regularisation based Defense (Wang et al., "Improving Robustness to Model
Inversion Attacks via Mutual Information Regularization", AAAI 2021, https://arxiv.org/abs/2009.05241).

A variational information bottleneck replaces the classifier's last layer: ``[mu, s] = W h(x)``,
``sigma = softplus(s - 5)``, ``z = mu + sigma * eps`` while training (``z = mu`` in eval mode) and
``logits = W_fc z``. Training minimises ``CE + beta * KL(N(mu, sigma^2) || N(0, I))``, which bounds the
mutual information between input and output.

Units: as in the authors' code (``info_loss ... .div(math.log(2))``) the KL term of the loss is in
bits, so ``beta`` has the paper's scale (0.003, 0.005, 0.01, 0.02); :func:`gaussian_kl` itself returns
nats unless ``bits=True``.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from mi_art.features import last_linear
from mi_art.validation import check_bool, check_count, check_number, check_optional_count

from mi_art.training import train_classifier

from .base import Defense, Trained
from .common import check_keys, last_linear_name, replace_module

DEFAULTS: Dict[str, Any] = {"beta": 0.003, "bottleneck_dim": None}


def gaussian_kl(mu: torch.Tensor, sigma: torch.Tensor, *, bits: bool = False) -> torch.Tensor:
    """``KL(N(mu, diag sigma^2) || N(0, I))`` summed over the feature dimension, averaged over the batch.

    Closed form per sample: ``0.5 * sum(mu^2 + sigma^2 - 1 - log sigma^2)`` (nats; divided by ln 2 if
    ``bits``). ``mu`` and ``sigma`` have shape (N, k) (or (k,) for one sample)."""
    check_bool("bits", bits)
    if not isinstance(mu, torch.Tensor) or not isinstance(sigma, torch.Tensor):
        raise ValueError(f"mu and sigma must be torch tensors, got {type(mu).__name__} and {type(sigma).__name__}")
    if mu.shape != sigma.shape:
        raise ValueError(f"mu and sigma must have the same shape, got {tuple(mu.shape)} and {tuple(sigma.shape)}")
    if mu.dim() == 0:
        raise ValueError("mu and sigma must have shape (N, k) or (k,)")
    mu, sigma = mu.reshape(-1, mu.shape[-1]), sigma.reshape(-1, sigma.shape[-1])
    kl = 0.5 * (mu.pow(2) + sigma.pow(2) - 1 - 2 * torch.log(sigma)).sum(1).mean()
    return kl / math.log(2) if bits else kl


class VIBHead(nn.Module):
    """The MID bottleneck that replaces a classifier's last linear layer.

    ``encoder`` maps the old penultimate feature to ``[mu, s]`` (2k values); ``fc`` maps ``z`` (k values)
    to logits, so ``z`` is the new penultimate feature (the input of the model's last ``nn.Linear``).
    After each forward pass in training mode, ``last_mu`` and ``last_sigma`` hold the statistics that
    the KL term needs; in eval mode nothing is stored and ``z = mu``.
    """

    def __init__(self, in_features: int, num_classes: int, bottleneck_dim: Optional[int] = None) -> None:
        super().__init__()
        in_features = check_count("in_features", in_features)
        num_classes = check_count("num_classes", num_classes)
        bottleneck_dim = check_optional_count("bottleneck_dim", bottleneck_dim, hint=" (or None: in_features // 2)")
        self.k = bottleneck_dim if bottleneck_dim is not None else max(1, in_features // 2)
        self.encoder = nn.Linear(in_features, 2 * self.k)
        self.fc = nn.Linear(self.k, num_classes)
        self.last_mu: Optional[torch.Tensor] = None
        self.last_sigma: Optional[torch.Tensor] = None

    @property
    def out_features(self) -> int:
        return self.fc.out_features

    @property
    def in_features(self) -> int:
        return self.encoder.in_features

    def statistics(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, sigma)`` of the bottleneck for features ``h``."""
        stats = self.encoder(h)
        mu, s = stats[:, :self.k], stats[:, self.k:]
        return mu, F.softplus(s - 5)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        mu, sigma = self.statistics(h)
        if self.training:
            z = mu + sigma * torch.randn_like(sigma)
            self.last_mu, self.last_sigma = mu, sigma
        else:
            z = mu
            self.last_mu = self.last_sigma = None
        return self.fc(z)


def check_params(params: Dict[str, Any]) -> Dict[str, Any]:
    check_keys("mid", params, DEFAULTS)
    out = {**DEFAULTS, **params}
    out["beta"] = check_number("beta", out["beta"], low=0,
                               hint=" (the weight of the KL term; the paper uses 0.003-0.02)")
    out["bottleneck_dim"] = check_optional_count("bottleneck_dim", out["bottleneck_dim"],
                                                 hint=" (or None: half the feature size)")
    return out


def add_vib_head(model: nn.Module, num_classes: int, bottleneck_dim: Optional[int] = None) -> VIBHead:
    """Replace ``model``'s last ``nn.Linear`` by a fresh :class:`VIBHead` in place; returns the head."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    old = last_linear(model)
    head = VIBHead(old.in_features, num_classes, bottleneck_dim).to(old.weight.device)
    replace_module(model, last_linear_name(model), head)
    return head


def mid_loss(head: VIBHead, beta: float):
    """``loss_fn(model, x, y)`` for :func:`mi_art.training.train_classifier`: CE + beta * KL (bits)."""
    if not isinstance(head, VIBHead):
        raise ValueError(f"head must be a VIBHead, got {type(head).__name__}")
    beta = check_number("beta", beta, low=0)

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if beta > 0:
            loss = loss + beta * gaussian_kl(head.last_mu, head.last_sigma, bits=True)
        return loss

    return loss_fn


def clear(head: VIBHead) -> None:
    """Drop the stored training statistics (so the returned model holds no stale tensors)."""
    head.last_mu = head.last_sigma = None


class MID(Defense):
    """MID: the classification layer becomes a variational information bottleneck (:class:`VIBHead`)."""

    name = "mid"
    summary = "mutual information regularisation, a variational bottleneck (https://arxiv.org/abs/2009.05241)"
    defaults = DEFAULTS

    def check_params(self, params: Dict[str, Any], n_train: int) -> Dict[str, Any]:
        return check_params(params)

    def architecture(self, model: nn.Module, num_classes: int, params: Dict[str, Any]) -> nn.Module:
        add_vib_head(model, num_classes, params["bottleneck_dim"])
        return model

    def train(self, model: nn.Module, dataset: Any, params: Dict[str, Any], settings: Dict[str, Any]) -> Trained:
        heads = [m for m in model.modules() if isinstance(m, VIBHead)]
        head = heads[-1] if heads else add_vib_head(model, dataset.num_classes, params["bottleneck_dim"])
        train = dataset.private_train
        model = train_classifier(model, train.x, train.y, loss_fn=mid_loss(head, params["beta"]), desc="MID",
                                 **settings)
        clear(head)
        return Trained(model, details={"bottleneck_dim": head.k})
