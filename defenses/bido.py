"""BiDO: Bilateral Dependency Optimization (Peng et al., "Bilateral Dependency Optimization: Defending
Against Model-inversion Attacks", KDD 2022, https://arxiv.org/abs/2206.05483).

Training loss: ``CE + sum_j [lambda_x * d(X, Z_j) - lambda_y * d(Z_j, Y)]`` over hidden layers ``Z_j``:
weaken the dependency between inputs and latent representations (what inversion exploits) while
keeping the dependency between representations and labels (what classification needs).

``d`` is the normalised HSIC (``measure="hsic"``, the paper's CelebA setting lambda_x=0.05,
lambda_y=0.5) or COCO, the constrained covariance (``measure="coco"``, the paper's MNIST setting
lambda_x=1, lambda_y=50; here the defaults stay 0.05/0.5 for both measures, pass the weights you want).
Kernels as in the authors' code: Gaussian ``exp(-||a - b||^2 / (2 sigma^2 d))`` (``d`` the flattened
dimension, sigma 5) on inputs and features, linear on one-hot labels.

Differences from the authors' code, on purpose: the normalised HSIC here is
``tr(K~ L~) / sqrt(tr(K~ K~) tr(L~ L~))`` with doubly centred Gram matrices (bounded in [0, 1], 1 for
identical inputs), whereas their ``hsic_normalized_cca`` sums ``K_c (K_c + 1e-5 m I)^-1`` products of
one-sided centred kernels (unbounded, batch-size dependent). COCO here is Gretton et al.'s
``sqrt(||K~ L~||_2) / m`` with the spectral norm; their code takes the Frobenius norm. The lambda
values of the paper were tuned for their scales, so they are starting points, not parity settings.

Hidden layers: by default the output of every activation module (``nn.ReLU``, ``nn.LeakyReLU``,
``nn.PReLU``, ``nn.ELU``, ``nn.GELU``, ``nn.SiLU``, ...), flattened: for :class:`mi_art.models.CNN` that is
each conv block plus the penultimate feature. A model without such modules uses its penultimate
feature (the input of its last ``nn.Linear``). ``layers=[names]`` picks sub-modules by name instead.
The hooks are removed when training ends.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mi_art.features import last_linear
from mi_art.validation import check_choice, check_count, check_number, check_positive

from mi_art.training import train_classifier

from .base import Defense, Trained
from .common import check_keys

DEFAULTS: Dict[str, Any] = {"lambda_x": 0.05, "lambda_y": 0.5, "measure": "hsic", "sigma": 5.0, "layers": None}
MEASURES = ("hsic", "coco")
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish)
_EPS = 1e-10


# --------------------------------------------------------------------------- kernels and measures


def gaussian_kernel(x: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
    """Gaussian Gram matrix of the rows of ``x`` (flattened), width scaled by the dimension as in
    BiDO's code: ``exp(-||a - b||^2 / (2 sigma^2 d))``."""
    _check_tensor("x", x)
    sigma = check_positive("sigma", sigma, hint=" (the Gaussian kernel width)")
    x = x.flatten(1).float()
    sq = (x * x).sum(1)
    dist = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(0)
    return torch.exp(-dist / (2 * sigma ** 2 * x.shape[1]))


def linear_kernel(x: torch.Tensor) -> torch.Tensor:
    """Linear Gram matrix ``x x^T`` of the rows of ``x`` (flattened); for one-hot labels: same class."""
    _check_tensor("x", x)
    x = x.flatten(1).float()
    return x @ x.T


def _check_tensor(name: str, x: object) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] == 0:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a non-empty torch tensor of shape (N, ...), got {shape}")


def _check_pair(x: object, y: object) -> None:
    _check_tensor("x", x)
    _check_tensor("y", y)
    if x.shape[0] != y.shape[0]:  # type: ignore[union-attr]
        raise ValueError(f"x and y need the same number of samples, got {x.shape[0]} and {y.shape[0]}")  # type: ignore


def _center(k: torch.Tensor) -> torch.Tensor:
    """``H K H`` with ``H = I - 11^T / m``."""
    return k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()


def _kernel(x: torch.Tensor, kind: str, sigma: float) -> torch.Tensor:
    if kind == "gaussian":
        return gaussian_kernel(x, sigma)
    if kind == "linear":
        return linear_kernel(x)
    raise ValueError(f"kernel must be 'gaussian' or 'linear', got {kind!r}")


def normalized_hsic_from_kernels(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """``tr(K~ L~) / sqrt(tr(K~ K~) tr(L~ L~))`` with centred Gram matrices (in [0, 1]; 1 for equal
    kernels, ~0 for independent samples)."""
    kc, lc = _center(k), _center(l)
    num = (kc * lc).sum()
    den = torch.sqrt((kc * kc).sum() * (lc * lc).sum())
    return num / (den + _EPS)


def coco_from_kernels(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """COCO (Gretton et al., 2005): ``sqrt(||K~ L~||_2) / m``, the largest singular value of the
    empirical cross-covariance operator between the two RKHSs."""
    m = k.shape[0]
    prod = _center(k) @ _center(l)
    return torch.sqrt(torch.linalg.matrix_norm(prod, ord=2) + _EPS) / m


def hsic(x: torch.Tensor, y: torch.Tensor, *, kernel_x: str = "gaussian", kernel_y: str = "gaussian",
         sigma: float = 5.0) -> torch.Tensor:
    """Normalised HSIC between the rows of ``x`` and ``y`` (same batch size, any shapes)."""
    _check_pair(x, y)
    return normalized_hsic_from_kernels(_kernel(x, kernel_x, sigma), _kernel(y, kernel_y, sigma))


def coco(x: torch.Tensor, y: torch.Tensor, *, kernel_x: str = "gaussian", kernel_y: str = "gaussian",
         sigma: float = 5.0) -> torch.Tensor:
    """COCO between the rows of ``x`` and ``y`` (same batch size, any shapes)."""
    _check_pair(x, y)
    return coco_from_kernels(_kernel(x, kernel_x, sigma), _kernel(y, kernel_y, sigma))


# --------------------------------------------------------------------------- training pieces


def check_params(params: Dict[str, Any]) -> Dict[str, Any]:
    check_keys("bido", params, DEFAULTS)
    out = {**DEFAULTS, **params}
    out["lambda_x"] = check_number("lambda_x", out["lambda_x"], low=0, hint=" (weight of d(X, Z))")
    out["lambda_y"] = check_number("lambda_y", out["lambda_y"], low=0, hint=" (weight of d(Z, Y))")
    out["sigma"] = check_positive("sigma", out["sigma"], hint=" (the Gaussian kernel width)")
    out["measure"] = check_choice("measure", out["measure"], MEASURES)
    layers = out["layers"]
    if layers is not None:
        if not isinstance(layers, (list, tuple)) or not layers or not all(isinstance(n, str) and n for n in layers):
            raise ValueError(f"layers must be None (every activation) or a non-empty list of sub-module names, "
                             f"got {layers!r}")
        out["layers"] = list(layers)
    return out


def hidden_modules(model: nn.Module, layers: Optional[Sequence[str]] = None) -> List[str]:
    """Names of the modules whose outputs BiDO regularises ("" stands for the penultimate feature)."""
    modules = dict(model.named_modules())
    if layers is not None:
        if not isinstance(layers, (list, tuple)) or not all(isinstance(n, str) for n in layers):
            raise ValueError(f"layers must be None (every activation) or a list of sub-module names, got {layers!r}")
        missing = [n for n in layers if n not in modules or n == ""]
        if missing:
            raise ValueError(f"layers: the model has no sub-module named {', '.join(map(repr, missing))}; "
                             f"some of its modules: {[n for n in modules if n][:20]}")
        return list(layers)
    names = [n for n, m in modules.items() if isinstance(m, ACTIVATIONS)]
    return names or [""]


@contextmanager
def capture_hidden(model: nn.Module, names: Sequence[str]) -> Iterator[List[torch.Tensor]]:
    """While active, each forward pass appends the (flattened) outputs of the named modules ("" = the
    input of the last linear layer) to the yielded list. Hooks are removed on exit."""
    store: List[torch.Tensor] = []
    handles = []
    modules = dict(model.named_modules())
    for name in names:
        if name == "":
            handles.append(last_linear(model).register_forward_pre_hook(
                lambda _m, inputs: store.append(inputs[0].flatten(1))))
        else:
            handles.append(modules[name].register_forward_hook(
                lambda _m, _inputs, output: store.append(output.flatten(1))))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def bido_loss(store: List[torch.Tensor], num_classes: int, *, lambda_x: float, lambda_y: float,
              measure: str = "hsic", sigma: float = 5.0):
    """``loss_fn(model, x, y)`` for :func:`mi_art.training.train_classifier` reading the hidden
    outputs captured by :func:`capture_hidden` into ``store``."""
    num_classes = check_count("num_classes", num_classes)
    lambda_x = check_number("lambda_x", lambda_x, low=0)
    lambda_y = check_number("lambda_y", lambda_y, low=0)
    measure = check_choice("measure", measure, MEASURES)
    sigma = check_positive("sigma", sigma)
    dep = normalized_hsic_from_kernels if measure == "hsic" else coco_from_kernels

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        store.clear()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if len(x) > 1 and (lambda_x > 0 or lambda_y > 0):
            kx = gaussian_kernel(x, sigma)
            ky = linear_kernel(F.one_hot(y, num_classes))
            for z in store:
                kz = gaussian_kernel(z, sigma)
                loss = loss + lambda_x * dep(kx, kz) - lambda_y * dep(kz, ky)
        store.clear()
        return loss

    return loss_fn


class BiDO(Defense):
    """BiDO: cross-entropy plus the bilateral dependency terms on the hidden layers."""

    name = "bido"
    summary = "bilateral dependency optimisation (https://arxiv.org/abs/2206.05483)"
    defaults = DEFAULTS

    def check_params(self, params: Dict[str, Any], n_train: int) -> Dict[str, Any]:
        return check_params(params)

    def train(self, model: nn.Module, dataset: Any, params: Dict[str, Any], settings: Dict[str, Any]) -> Trained:
        names = hidden_modules(model, params["layers"])
        train = dataset.private_train
        with capture_hidden(model, names) as store:
            loss_fn = bido_loss(store, dataset.num_classes, lambda_x=params["lambda_x"], lambda_y=params["lambda_y"],
                                measure=params["measure"], sigma=params["sigma"])
            model = train_classifier(model, train.x, train.y, loss_fn=loss_fn, desc="BiDO", **settings)
        return Trained(model, details={"hidden_layers": [n or "<penultimate>" for n in names]})
