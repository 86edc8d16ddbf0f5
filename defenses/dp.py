"""DP-SGD with Opacus (Abadi et al., "Deep Learning with Differential Privacy", CCS 2016,
https://arxiv.org/abs/1607.00133; Opacus, https://opacus.ai).

Per-sample gradient clipping to ``max_grad_norm`` plus Gaussian noise, with Poisson sampling through
the data loader that ``PrivacyEngine.make_private[_with_epsilon]`` returns (what the accountant
assumes) and ``BatchMemoryManager`` to split large logical batches into physical ones of at most
``max_physical_batch_size``. Models Opacus cannot train (BatchNorm) are fixed with
``ModuleValidator.fix`` (BatchNorm -> GroupNorm). The (epsilon, delta) reported is the accountant's
(``accountant="rdp"`` by default, or "prv" / "gdp"). The returned model is the plain module
(``to_standard_module()``: no Opacus hooks, no ``_module.`` prefix), so ART's gradients work.

Opacus runs without ``secure_mode`` (its warning about that is silenced): the noise comes from torch's
seeded generator, which is right for experiments and reproducibility, not for a production release.
With ``target_epsilon`` Opacus picks the noise multiplier for ``epochs`` epochs at the sample rate
``1 / ceil(N / batch_size)``; the epsilon reported is always the accountant's after training.

``target_delta`` (Opacus's name; the earlier ``delta`` is still accepted, with a ``DeprecationWarning``) defaults
to ``min(1e-5, 1 / (100 N))`` for ``N`` private training images (:func:`default_delta`).
An (epsilon, delta)-DP mechanism may, with probability delta, do anything, including releasing one of
the ``N`` training images outright, so delta must be far below 1/N (Dwork and Roth, "The Algorithmic
Foundations of Differential Privacy", section 2.3, https://www.cis.upenn.edu/~aaroth/Papers/privacybook.pdf).
1e-5 is the delta of Opacus's examples and of Abadi et al.; the cap keeps it two orders of magnitude below
1/N on larger data, one below the 1/(10 N) at which :func:`delta_warning` warns.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mi_art.training import AUGMENTATIONS, OPTIMIZERS, augment_batch, make_optimizer, show_progress
from mi_art.utils import check_images, check_labels, seed_everything
from mi_art.validation import (check_bool, check_choice, check_count, check_finite, check_int, check_number,
                               check_optional_count, check_optional_positive, check_positive, is_int, renamed)

from .base import Defense, Trained
from .common import (check_keys, check_output_classes, frozen, last_linear_name, parameterised_leaves,
                     replace_module)

DEFAULTS: Dict[str, Any] = {"target_epsilon": None, "noise_multiplier": None, "max_grad_norm": 1.0,
                            "target_delta": None, "allow_large_delta": False,
                            "accountant": "rdp", "max_physical_batch_size": None, "trainable": "all",
                            "dp_epochs": None, "dp_lr": None, "dp_optimizer": None, "dp_batch_size": None,
                            "dp_augment": None, "batch_norm": "group-norm"}
#: What becomes of BatchNorm, which Opacus cannot train: "group-norm" replaces it by GroupNorm (a model that
#: is pre-trained for DP should then be pre-trained with GroupNorm, :func:`private_architecture`); "freeze"
#: turns each BatchNorm into the fixed per-channel affine map it computes in eval mode
#: (:class:`FrozenBatchNorm`), which keeps a BatchNorm-pre-trained model's normalisation exactly.
BATCH_NORM = ("group-norm", "freeze")
#: ``dp_<setting>`` parameters: the DP-SGD run's own training settings (None: the target's). DP-SGD wants
#: other settings than plain training (large batches, a large learning rate, no plain augmentation: De et
#: al. 2022, https://arxiv.org/abs/2204.13650), and a grid or a Workbench passes one recipe for all targets.
OWN_SETTINGS = ("epochs", "lr", "optimizer", "batch_size", "augment")
ACCOUNTANTS = ("rdp", "prv", "gdp")
#: The default delta: Opacus's examples' 1e-5, capped at 1 / (DEFAULT_DELTA_FACTOR x N).
DEFAULT_DELTA = 1e-5
DEFAULT_DELTA_FACTOR = 100
#: A delta at or above 1 / (LARGE_DELTA_FACTOR x N) is warned about (:func:`delta_warning`).
LARGE_DELTA_FACTOR = 10
#: Written into the cache key and the grid cell id of a DP-SGD target that leaves delta to its default, so
#: that a target made under the earlier default (1/N) is never served for this one (its epsilon, and with
#: target_epsilon its noise, were computed at that delta).
DEFAULT_DELTA_RULE = "min(1e-5, 1/(100N))"
#: ``trainable`` names: every layer, or the classification layer only (an int: that many last layers).
TRAINABLE = ("all", "head")


def default_delta(n_train: int) -> float:
    """The delta DP-SGD uses when none is given: ``min(1e-5, 1 / (100 n_train))`` (see the module's docstring)."""
    n_train = check_count("n_train", n_train, hint=" (the number of private training images)")
    return min(DEFAULT_DELTA, 1.0 / (DEFAULT_DELTA_FACTOR * n_train))


def delta_warning(delta: Any, n_train: Any) -> Optional[str]:
    """A warning when ``delta`` is at or above ``1 / (10 n_train)``, else None (also when either is unknown):
    (epsilon, delta)-DP lets a mechanism release a training image with probability about delta per image, so
    near 1/N the epsilon bounds little."""
    try:
        delta, n_train = float(delta), int(n_train)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(delta) and n_train >= 1) or delta < 1.0 / (LARGE_DELTA_FACTOR * n_train):
        return None
    return (f"DP-SGD's delta={delta:.3g} is at or above 1/(10 N) = {1.0 / (LARGE_DELTA_FACTOR * n_train):.3g} for "
            f"N={n_train} training images ({delta * n_train:.2g} x 1/N): (epsilon, delta)-DP allows a training image "
            f"to be released outright with probability about delta each, so this epsilon bounds little; give "
            f"target_delta <= {default_delta(n_train):.3g} (the default)")


def check_params(params: Dict[str, Any], n_train: int) -> Dict[str, Any]:
    """Validate DP parameters (defaults filled; ``target_delta`` defaults to :func:`default_delta` of ``n_train``;
    the earlier name ``delta`` is renamed, with a ``DeprecationWarning``)."""
    params = renamed(params, "delta", "target_delta", "DP-SGD", ", as Opacus calls it")
    check_keys("dp-sgd", params, DEFAULTS)
    out = {**DEFAULTS, **params}
    eps, sigma = out["target_epsilon"], out["noise_multiplier"]
    if (eps is None) == (sigma is None):
        raise ValueError("give exactly one of target_epsilon (the privacy budget; Opacus finds the noise) or "
                         f"noise_multiplier (the noise; the accountant reports epsilon), got target_epsilon={eps!r}, "
                         f"noise_multiplier={sigma!r}")
    if eps is not None:
        out["target_epsilon"] = check_number("target_epsilon", eps, low=0, low_open=True,
                                             hint=" (epsilon must be > 0; smaller is more private)")
    if sigma is not None:
        out["noise_multiplier"] = check_number("noise_multiplier", sigma, low=0, low_open=True,
                                               hint=" (the noise standard deviation relative to max_grad_norm)")
    out["max_grad_norm"] = check_number("max_grad_norm", out["max_grad_norm"], low=0, low_open=True,
                                        hint=" (the per-sample clipping bound)")
    if out["target_delta"] is None:
        out["target_delta"] = default_delta(n_train)
    out["target_delta"] = check_number("target_delta", out["target_delta"], low=0, high=1, low_open=True,
                                       high_open=True, hint=f" (should be far below 1/N = {1.0 / n_train:.3g}; None: "
                                                            f"{default_delta(n_train):.3g})")
    out["allow_large_delta"] = check_bool("allow_large_delta", out["allow_large_delta"])
    if out["target_delta"] > 1.0 / n_train * (1 + 1e-9) and not out["allow_large_delta"]:
        raise ValueError(f"target_delta={out['target_delta']:g} is above 1/N = {1.0 / n_train:.3g} for N={n_train} "
                         "training images: (epsilon, delta)-DP with delta >= 1/N allows releasing a training image "
                         "outright, so the epsilon would mean nothing; give target_delta far below 1/N (None: the "
                         "default, "
                         f"{default_delta(n_train):.3g}), or "
                         "allow_large_delta=True to accept it")
    out["accountant"] = check_choice("accountant", out["accountant"], ACCOUNTANTS)
    out["max_physical_batch_size"] = check_optional_count(
        "max_physical_batch_size", out["max_physical_batch_size"], hint=" (or None: the batch size)")
    out["trainable"] = check_trainable(out["trainable"])
    out["batch_norm"] = check_choice("batch_norm", out["batch_norm"], BATCH_NORM)
    hint = " (or None: the target's setting)"
    out["dp_epochs"] = check_optional_count("dp_epochs", out["dp_epochs"], hint=hint)
    out["dp_batch_size"] = check_optional_count("dp_batch_size", out["dp_batch_size"], hint=hint)
    out["dp_lr"] = check_optional_positive("dp_lr", out["dp_lr"], hint=hint)
    if out["dp_optimizer"] is not None:
        out["dp_optimizer"] = check_choice("dp_optimizer", out["dp_optimizer"], OPTIMIZERS)
    if out["dp_augment"] is not None:
        out["dp_augment"] = check_choice("dp_augment", out["dp_augment"], AUGMENTATIONS)
    return out


def own_settings(params: Dict[str, Any], settings: Dict[str, Any]) -> Dict[str, Any]:
    """The training ``settings`` with the DP run's own ``dp_<setting>`` parameters put in where given."""
    return {**settings, **{k: params[f"dp_{k}"] for k in OWN_SETTINGS if params.get(f"dp_{k}") is not None}}


def check_trainable(trainable: Any) -> Union[str, int]:
    """``trainable``: "all" (every layer), "head" (the classification layer) or a count of last layers."""
    if is_int(trainable):
        return check_count("trainable", trainable, hint=" (the number of last parameterised layers DP-SGD trains; "
                                                        "or 'all' / 'head')")
    return check_choice("trainable", trainable, TRAINABLE)


def trained_layers(model: nn.Module, trainable: Union[str, int]) -> List[str]:
    """Names of the parameterised layers DP-SGD trains: all, the last ``nn.Linear`` (``"head"``), or the
    last ``trainable`` layers in module order (the classification layer among them)."""
    layers = parameterised_leaves(model)
    if trainable == "all":
        return [n for n, _ in layers]
    if trainable == "head":
        return [last_linear_name(model)]
    if trainable > len(layers):
        raise ValueError(f"trainable={trainable} asks to train more layers than the model has: it has {len(layers)} "
                         f"parameterised layers; use trainable <= {len(layers)} or 'all'")
    return [n for n, _ in layers[len(layers) - trainable:]]


class FrozenBatchNorm(nn.Module):
    """A BatchNorm layer frozen into the affine map it computes in eval mode,
    ``x * weight / sqrt(running_var + eps) + (bias - running_mean * weight / sqrt(running_var + eps))`` per
    channel, held as buffers: each sample is normalised by the pre-trained statistics alone (no batch
    statistics mix samples, as DP-SGD's per-sample gradients need), and nothing in it is trained."""

    def __init__(self, norm: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        with torch.no_grad():
            var = norm.running_var if norm.running_var is not None else torch.ones(norm.num_features)
            mean = norm.running_mean if norm.running_mean is not None else torch.zeros(norm.num_features)
            weight = norm.weight if norm.weight is not None else torch.ones_like(var)
            bias = norm.bias if norm.bias is not None else torch.zeros_like(var)
            scale = weight / torch.sqrt(var + norm.eps)
            self.register_buffer("scale", scale.detach().clone())
            self.register_buffer("shift", (bias - mean * scale).detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.view(shape) + self.shift.view(shape)


def freeze_batch_norm(model: nn.Module) -> List[str]:
    """Replace every BatchNorm of ``model`` (in place) by its :class:`FrozenBatchNorm`; returns their names."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for name in names:
        replace_module(model, name, FrozenBatchNorm(model.get_submodule(name)))
    return names


def make_private_compatible(model: nn.Module) -> Tuple[nn.Module, bool]:
    """``ModuleValidator.fix`` if needed; ValueError listing what Opacus still cannot handle."""
    from opacus.validators import ModuleValidator

    was_training = model.training
    model.train()  # Opacus validates the structure in training mode; a model fresh from training is in eval mode
    fixed = False
    if ModuleValidator.validate(model, strict=False):
        model = ModuleValidator.fix(model)
        fixed = True
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ValueError(f"Opacus cannot train this model even after ModuleValidator.fix: {errors}")
    return model.train(was_training), fixed


def _dp_sgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: Dict[str, Any], *, epochs: int,
            batch_size: int, lr: float, weight_decay: float, optimizer: str, augment: str, device: torch.device,
            seed: int, verbose: bool) -> Tuple[nn.Module, Any, Any, Any]:
    """The DP-SGD run of :func:`train_dp` on checked inputs: (the plain module, the DP optimizer, the
    Poisson loader, the privacy engine)."""
    from opacus import PrivacyEngine
    from opacus.utils.batch_memory_manager import BatchMemoryManager
    from tqdm.auto import trange

    model.to(device).train()
    opt = make_optimizer(model, optimizer, lr=lr, weight_decay=weight_decay)
    generator = torch.Generator()
    if seed is not None:
        generator.manual_seed(int(seed))
    else:
        generator.seed()
    loader = DataLoader(TensorDataset(x, y), batch_size=min(batch_size, len(x)), shuffle=True, generator=generator)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")
        engine = PrivacyEngine(accountant=params["accountant"])
    common = dict(module=model, optimizer=opt, data_loader=loader, max_grad_norm=params["max_grad_norm"],
                  poisson_sampling=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Full backward hook.*")
        if params["target_epsilon"] is not None:
            dp_model, dp_opt, dp_loader = engine.make_private_with_epsilon(
                **common, target_epsilon=params["target_epsilon"], target_delta=params["target_delta"], epochs=epochs)
        else:
            dp_model, dp_opt, dp_loader = engine.make_private(**common, noise_multiplier=params["noise_multiplier"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(dp_opt.original_optimizer, epochs)
    physical = params["max_physical_batch_size"] or batch_size
    bar = trange(epochs, desc="train DP-SGD", disable=not verbose)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Full backward hook.*")
            for _ in bar:
                with BatchMemoryManager(data_loader=dp_loader, max_physical_batch_size=physical,
                                        optimizer=dp_opt) as mem_loader:
                    for xb, yb in mem_loader:
                        xb, yb = xb.to(device), yb.to(device)
                        if len(xb):
                            xb = augment_batch(xb, augment)
                        loss = F.cross_entropy(dp_model(xb), yb) if len(xb) else dp_model(xb).sum() * 0.0
                        check_finite(loss, "the DP-SGD training loss")
                        dp_opt.zero_grad(set_to_none=True)
                        loss.backward()
                        dp_opt.step()
                sched.step()
                if verbose:
                    show_progress(bar, len(dp_loader.dataset), eps=f"{engine.get_epsilon(params['target_delta']):.2f}")
    finally:
        plain = dp_model.to_standard_module()  # Opacus's hooks removed, also when training failed
    return plain, dp_opt, dp_loader, engine


def train_dp(model: nn.Module, x: Any, y: Any, num_classes: int, *, epochs: int, batch_size: int, lr: float,
             weight_decay: float, optimizer: str, augment: str, device: torch.device, seed: int, verbose: bool,
             params: Dict[str, Any]) -> Tuple[nn.Module, Dict[str, Any]]:
    """Train ``model`` with DP-SGD; returns the plain module (eval mode) and the privacy facts."""
    epochs, batch_size = check_count("epochs", epochs), check_count("batch_size", batch_size)
    lr = check_positive("lr", lr)
    weight_decay = check_number("weight_decay", weight_decay, low=0)
    x = torch.from_numpy(check_images(x))
    y = torch.from_numpy(check_labels(y, num_classes, length=len(x)))
    params = check_params(dict(params), len(x))
    seed_everything(seed)
    model, fixed = make_private_compatible(model)
    trained = set(trained_layers(model, params["trainable"]))
    with frozen(m for n, m in parameterised_leaves(model) if n not in trained):
        plain, dp_opt, dp_loader, engine = _dp_sgd(model, x, y, params, epochs=epochs, batch_size=batch_size,
                                                   lr=lr, weight_decay=weight_decay, optimizer=optimizer,
                                                   augment=augment, device=device, seed=seed, verbose=verbose)
    history = list(getattr(engine.accountant, "history", []))
    facts = {
        "noise_multiplier": float(dp_opt.noise_multiplier),
        "sample_rate": float(1.0 / len(dp_loader)),
        "steps": int(sum(h[2] for h in history)),
        "max_grad_norm": float(params["max_grad_norm"]),
        "max_physical_batch_size": int(params["max_physical_batch_size"] or batch_size),
        "module_validator_fixed": fixed,
        "trainable": params["trainable"],
        "trained_layers": len(trained),
        "trained_parameters": int(sum(p.numel() for n, m in parameterised_leaves(plain) if n in trained
                                      for p in m.parameters())),
        "epsilon": nonnegative_epsilon(engine.get_epsilon(params["target_delta"])),
    }
    for p in plain.parameters():
        p.grad = None
    return plain.eval(), facts


def private_architecture(model: nn.Module) -> nn.Module:
    """``model`` in the structure Opacus trains (BatchNorm -> GroupNorm, :func:`make_private_compatible`):
    pre-train this one on public data, and DP fine-tuning starts from every pre-trained weight."""
    return make_private_compatible(model)[0]


class DPSGD(Defense):
    """DP-SGD with Opacus, from scratch or as fine-tuning of a publicly pre-trained model (pass the
    pre-trained module as ``model``; ``trainable`` picks the layers DP-SGD trains)."""

    name = "dp-sgd"
    summary = "DP-SGD with Opacus (https://arxiv.org/abs/1607.00133)"
    defaults = DEFAULTS

    def check_params(self, params: Dict[str, Any], n_train: int) -> Dict[str, Any]:
        return check_params(params, n_train)

    def architecture(self, model: nn.Module, num_classes: int, params: Dict[str, Any]) -> nn.Module:
        check_output_classes(model, num_classes)
        if params["batch_norm"] == "freeze":
            freeze_batch_norm(model)
        trained_norms = [n for n, m in model.named_modules()
                         if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.num_batches_tracked is not None
                         and int(m.num_batches_tracked) > 0]
        model, _ = make_private_compatible(model)
        trained_layers(model, params["trainable"])  # a count the model cannot meet is refused before training
        if trained_norms:
            warnings.warn(f"the model's trained BatchNorm layers ({', '.join(trained_norms[:3])}"
                          f"{', ...' if len(trained_norms) > 3 else ''}) were replaced by fresh GroupNorm layers, "
                          "because Opacus cannot train BatchNorm: their pre-trained weights are lost. Pre-train "
                          "mi_art.defenses.dp.private_architecture(model) instead, so that DP fine-tuning starts "
                          "from every pre-trained weight", UserWarning, stacklevel=4)
        return model

    def pretraining_tag(self, params: Dict[str, Any]) -> str:
        return "groupnorm" if params["batch_norm"] == "group-norm" else ""

    def defaults_key(self, params: Dict[str, Any]) -> Dict[str, Any]:
        given = params.get("target_delta", params.get("delta"))  # delta: the earlier name
        return {"default_delta": DEFAULT_DELTA_RULE} if given is None else {}

    def pretraining_architecture(self, model: nn.Module, params: Dict[str, Any]) -> nn.Module:
        return private_architecture(model) if params["batch_norm"] == "group-norm" else model

    def train(self, model: nn.Module, dataset: Any, params: Dict[str, Any], settings: Dict[str, Any]) -> Trained:
        train = dataset.private_train
        settings = own_settings(params, settings)
        model, facts = train_dp(model, train.x, train.y, dataset.num_classes, params=params, **settings)
        facts["training"] = {k: settings[k] for k in OWN_SETTINGS}
        facts["n_train"] = len(train)
        warned = delta_warning(params["target_delta"], len(train))
        if warned:
            warnings.warn(warned, UserWarning, stacklevel=4)
        return Trained(model, details=facts, epsilon=facts.pop("epsilon"), delta=params["target_delta"],
                       accountant=params["accountant"])


def accountant_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                       accountant: str = "rdp") -> float:
    """Epsilon of ``steps`` DP-SGD steps at ``noise_multiplier`` and ``sample_rate`` from a fresh Opacus
    accountant (for checks and planning)."""
    from opacus.accountants import create_accountant

    noise_multiplier = check_positive("noise_multiplier", noise_multiplier)
    sample_rate = check_number("sample_rate", sample_rate, low=0, high=1, low_open=True)
    steps = check_int("steps", steps, low=0)
    delta = check_number("delta", delta, low=0, high=1, low_open=True, high_open=True)
    accountant = check_choice("accountant", accountant, ACCOUNTANTS)
    acc = create_accountant(mechanism=accountant)
    acc.history = [(noise_multiplier, sample_rate, steps)]
    return nonnegative_epsilon(acc.get_epsilon(delta))


def nonnegative_epsilon(epsilon: float) -> float:
    """The accountant's epsilon, at least 0: epsilon >= 0 by definition, and the RDP-to-DP conversion can
    return a slightly negative number when the noise is so large that the privacy loss is nil (the cases of
    ``tests/test_dp.py::test_epsilon_is_never_negative``)."""
    return max(0.0, float(epsilon))


__all__ = ["ACCOUNTANTS", "BATCH_NORM", "DEFAULTS", "DEFAULT_DELTA", "DEFAULT_DELTA_RULE", "DPSGD", "FrozenBatchNorm",
           "LARGE_DELTA_FACTOR", "TRAINABLE", "accountant_epsilon", "check_params", "check_trainable", "default_delta",
           "delta_warning", "freeze_batch_norm", "make_private_compatible", "private_architecture",
           "train_dp", "trained_layers"]
