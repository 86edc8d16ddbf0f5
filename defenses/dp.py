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
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mi_art.training import augment_batch, make_optimizer
from mi_art.utils import check_images, check_labels, seed_everything
from mi_art.validation import (check_bool, check_choice, check_count, check_finite, check_int, check_number,
                               check_optional_count, check_positive)

from .common import check_keys

DEFAULTS: Dict[str, Any] = {"target_epsilon": None, "noise_multiplier": None, "max_grad_norm": 1.0, "delta": None,
                            "allow_large_delta": False,
                            "accountant": "rdp", "max_physical_batch_size": None}
ACCOUNTANTS = ("rdp", "prv", "gdp")


def check_params(params: Dict[str, Any], n_train: int) -> Dict[str, Any]:
    """Validate DP parameters (defaults filled; ``delta`` defaults to ``1 / n_train``)."""
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
    if out["delta"] is None:
        out["delta"] = 1.0 / n_train
    out["delta"] = check_number("delta", out["delta"], low=0, high=1, low_open=True, high_open=True,
                                hint=f" (should be below 1/N = {1.0 / n_train:.3g})")
    out["allow_large_delta"] = check_bool("allow_large_delta", out["allow_large_delta"])
    if out["delta"] > 1.0 / n_train * (1 + 1e-9) and not out["allow_large_delta"]:
        raise ValueError(f"delta={out['delta']:g} is above 1/N = {1.0 / n_train:.3g} for N={n_train} training images: "
                         "(epsilon, delta)-DP with delta >= 1/N allows releasing a training image outright, so the "
                         "epsilon would mean nothing; give delta <= 1/N (the default is 1/N), or "
                         "allow_large_delta=True to accept it")
    out["accountant"] = check_choice("accountant", out["accountant"], ACCOUNTANTS)
    out["max_physical_batch_size"] = check_optional_count(
        "max_physical_batch_size", out["max_physical_batch_size"], hint=" (or None: the batch size)")
    return out


def make_private_compatible(model: nn.Module) -> Tuple[nn.Module, bool]:
    """``ModuleValidator.fix`` if needed; ValueError listing what Opacus still cannot handle."""
    from opacus.validators import ModuleValidator

    fixed = False
    if ModuleValidator.validate(model, strict=False):
        model = ModuleValidator.fix(model)
        fixed = True
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ValueError(f"Opacus cannot train this model even after ModuleValidator.fix: {errors}")
    return model, fixed


def train_dp(model: nn.Module, x: Any, y: Any, num_classes: int, *, epochs: int, batch_size: int, lr: float,
             weight_decay: float, optimizer: str, augment: str, device: torch.device, seed: int, verbose: bool,
             params: Dict[str, Any]) -> Tuple[nn.Module, Dict[str, Any]]:
    """Train ``model`` with DP-SGD; returns the plain module (eval mode) and the privacy facts."""
    from opacus import PrivacyEngine
    from opacus.utils.batch_memory_manager import BatchMemoryManager
    from tqdm.auto import trange

    epochs, batch_size = check_count("epochs", epochs), check_count("batch_size", batch_size)
    lr = check_positive("lr", lr)
    weight_decay = check_number("weight_decay", weight_decay, low=0)
    x = torch.from_numpy(check_images(x))
    y = torch.from_numpy(check_labels(y, num_classes, length=len(x)))
    params = check_params(dict(params), len(x))
    seed_everything(seed)
    model, fixed = make_private_compatible(model)
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
                **common, target_epsilon=params["target_epsilon"], target_delta=params["delta"], epochs=epochs)
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
                    bar.set_postfix(eps=f"{engine.get_epsilon(params['delta']):.2f}")
    finally:
        plain = dp_model.to_standard_module()
    history = list(getattr(engine.accountant, "history", []))
    facts = {
        "noise_multiplier": float(dp_opt.noise_multiplier),
        "sample_rate": float(1.0 / len(dp_loader)),
        "steps": int(sum(h[2] for h in history)),
        "max_grad_norm": float(params["max_grad_norm"]),
        "max_physical_batch_size": int(physical),
        "module_validator_fixed": fixed,
        "epsilon": nonnegative_epsilon(engine.get_epsilon(params["delta"])),
    }
    for p in plain.parameters():
        p.grad = None
    return plain.eval(), facts


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
    return a slightly negative number when the noise is so large that the privacy loss is nil (measured:
    -0.69 for noise 1e6 and delta 0.5, -0.02 for noise 50 and delta 1/30)."""
    return max(0.0, float(epsilon))


__all__ = ["DEFAULTS", "ACCOUNTANTS", "check_params", "train_dp", "accountant_epsilon", "make_private_compatible"]
