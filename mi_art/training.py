"""Training of classifiers (targets, evaluation models) and the batching and augmentation every training
loop of mi-art shares. The GAN priors train in :mod:`mi_art.priors`, the surrogates in
:mod:`mi_art.surrogates`."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import trange

from .utils import DeviceLike, channels_last_on_cpu, eval_mode, module_device, resolve_device, seed_everything
from .validation import (check_bool, check_count, check_finite, check_images, check_labels, check_module_finite,
                         check_number, check_positive, check_unit_images)

AUGMENTATIONS = ("none", "shift", "flip", "flip-shift")
#: Optimizers of :func:`make_optimizer`.
OPTIMIZERS = ("adam", "sgd")
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def augment_batch(x: torch.Tensor, mode: str) -> torch.Tensor:
    """Random horizontal flips and/or shifts of up to 1/8 of the image side (reflect padding)."""
    if mode not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {mode!r}")
    if "flip" in mode:
        flip = torch.rand(x.size(0), device=x.device) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    if "shift" in mode:
        n, _, h, w = x.shape
        pad = max(1, h // 8)
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect" if pad < h else "replicate")
        dy, dx = np.random.randint(0, 2 * pad + 1, size=2)
        x = padded[:, :, dy:dy + h, dx:dx + w]
    return x


def mixed_precision_context(enabled: bool, device: torch.device) -> ContextManager:
    """bfloat16 autocast for a training step's forward pass when ``enabled`` (CPU or CUDA), else nothing.

    bfloat16 keeps float32's exponent range, so no loss scaling is needed; weights, gradients and the
    optimizer's state stay float32. On CPUs with AVX-512 BF16 or AMX and on recent GPUs its matrix
    products run faster; elsewhere it can be slower (``benchmarks/speed.py`` measures it)."""
    check_bool("mixed_precision", enabled)
    if not enabled:
        return contextlib.nullcontext()
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"mixed_precision=True runs on 'cpu' or 'cuda', got device {str(device)!r}: use "
                         "mixed_precision=False there")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"mixed_precision=True needs bfloat16, which the GPU {str(device)!r} does not support: "
                         "use mixed_precision=False")
    return torch.autocast(device.type, dtype=torch.bfloat16)


def show_progress(bar: Any, images_per_step: int, **values: Any) -> None:
    """Put ``values`` (strings as they are; numbers and one-element tensors to 4 significant digits) and the
    images per second (the bar's steps per second times ``images_per_step``) in a progress bar's postfix.
    Nothing for a disabled bar (``verbose=False``): no tensor is read, so no device is synchronised."""
    if bar.disable:
        return
    rate = bar.format_dict.get("rate")
    shown = {k: v if isinstance(v, str) else f"{float(v.detach() if torch.is_tensor(v) else v):.4g}"
             for k, v in values.items()}
    bar.set_postfix(**shown, img_s="-" if not rate else f"{rate * images_per_step:.0f}", refresh=False)


def _batches(n: int, batch_size: int, shuffle: bool = True) -> Iterator[torch.Tensor]:
    """Index batches, shuffled or in order; a trailing batch of one sample joins the previous one (BatchNorm
    needs two)."""
    perm = torch.randperm(n) if shuffle else torch.arange(n)
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    for i, start in enumerate(starts):
        yield perm[start:starts[i + 1] if i + 1 < len(starts) else n]


def infinite_batches(x: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Shuffled batches of ``x`` for ever (a new permutation each pass; a short last batch is skipped)."""
    while True:
        perm = torch.randperm(len(x))
        for start in range(0, len(x) - batch_size + 1, batch_size):
            yield x[perm[start:start + batch_size]]


def _cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def make_optimizer(model: nn.Module, optimizer: str, *, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """"adam", or "sgd" with momentum 0.9, over the model's parameters."""
    if optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    if optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")


def train_classifier(model: nn.Module, x: Any, y: Any, *, epochs: int = 30, batch_size: int = 64,
                     lr: float = 1e-3, weight_decay: float = 5e-4, optimizer: str = "adam",
                     augment: str = "shift", loss_fn: Optional[LossFn] = None, mixed_precision: bool = False,
                     reestimate_batch_norm: bool = True, device: DeviceLike = None, seed: Optional[int] = 0,
                     verbose: bool = False, desc: str = "classifier") -> nn.Module:
    """Train ``model`` on ``(x, y)`` with cross-entropy (or ``loss_fn(model, x, y)``); returns it in eval mode.

    ``x``: images in [0, 1], channels first (a bare module takes them so, as the priors and attacks give them);
    ``y``: class indices (or one-hot rows) below the number of the model's outputs.

    ``optimizer`` is "adam" or "sgd" (momentum 0.9); the learning rate follows a cosine schedule.
    ``mixed_precision`` runs the forward passes in bfloat16 (:func:`mixed_precision_context`).
    ``reestimate_batch_norm``: after training, the running statistics of every trained BatchNorm are
    recomputed on ``x`` with the final weights (:func:`reestimate_batch_norm_statistics`): the running
    averages kept during training mix the statistics of earlier weights, and after a short run the model
    in eval mode is far weaker than its weights (a resnet10 after one epoch on digits, measured in
    docs/concepts.md).
    """
    epochs, batch_size = check_count("epochs", epochs), check_count("batch_size", batch_size)
    lr, weight_decay = check_positive("lr", lr), check_number("weight_decay", weight_decay, low=0)
    check_bool("reestimate_batch_norm", reestimate_batch_norm)
    seed_everything(seed)
    device = resolve_device(device)
    precision = mixed_precision_context(mixed_precision, device)  # checked before any work
    x = torch.from_numpy(check_unit_images(x, "x", user="train_classifier",
                                           fix="scale them to [0, 1] (e.g. divide 0..255 images by 255): a bare "
                                               "module takes images in [0, 1], as the priors and attacks give them"))
    classes = _output_count(model.to(device), x[:1].to(device))
    y = torch.from_numpy(check_labels(y, classes or int(np.max(y)) + 1, length=len(x),
                                      classes=f" (the model has {classes} outputs)" if classes else ""))
    model.train()
    with channels_last_on_cpu(model, device):
        _fit(model, x, y, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
             optimizer=optimizer, augment=augment, loss_fn=loss_fn or _cross_entropy, precision=precision,
             device=device, verbose=verbose, desc=desc)
        if reestimate_batch_norm:
            _reestimate_batch_norm(model, x, batch_size, device)
    check_module_finite(model, f"the {desc}")
    return model.eval()


def _output_count(model: nn.Module, image: torch.Tensor) -> Optional[int]:
    """How many classes ``model`` scores: its outputs on one image (eval mode, no gradients); None for a model
    that returns something other than a 2-d tensor (its own ``loss_fn`` reads it)."""
    with eval_mode(model), torch.no_grad():
        out = model(image)
    return int(out.shape[1]) if isinstance(out, torch.Tensor) and out.ndim == 2 else None


def _fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, batch_size: int, lr: float,
         weight_decay: float, optimizer: str, augment: str, loss_fn: LossFn, precision: ContextManager,
         device: torch.device, verbose: bool, desc: str) -> None:
    """:func:`train_classifier`'s epochs, on checked arguments."""
    opt = make_optimizer(model, optimizer, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-len(x) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    bar = trange(epochs, desc=f"train {desc}", disable=not verbose)
    for _ in bar:
        total = torch.zeros((), device=device)  # summed on the device: read once an epoch, not every step
        for idx in _batches(len(x), batch_size):
            xb = augment_batch(x[idx].to(device), augment)
            with precision:
                loss = loss_fn(model, xb, y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach() * len(idx)
        check_finite(total, f"the training loss of the {desc}")
        show_progress(bar, len(x), loss=total / len(x))
    opt.zero_grad(set_to_none=True)


def reestimate_batch_norm_statistics(model: nn.Module, x: Any, *, batch_size: int = 256,
                                     device: DeviceLike = None) -> nn.Module:
    """Recompute the running mean and variance of every trained BatchNorm of ``model`` as the plain average
    over ``x`` (images it takes, unaugmented; a seeded sample of :data:`BATCH_NORM_SAMPLE` of a larger set) with
    its current weights; returns ``model`` in eval mode.

    A BatchNorm whose affine parameters are frozen (``requires_grad=False``, e.g. TL-DMI's first layers)
    keeps its statistics, and every other module runs in eval mode during the pass (what
    :func:`torch.optim.swa_utils.update_bn` does not allow: it resets every BatchNorm and runs dropout).
    A model without such a BatchNorm is returned as it is."""
    batch_size = check_count("batch_size", batch_size)
    x = torch.as_tensor(check_images(x.cpu().numpy() if torch.is_tensor(x) else x))
    return _reestimate_batch_norm(model, x, batch_size, resolve_device(device) if device is not None else None)


#: Images the BatchNorm statistics are re-estimated on after training at most (a seeded sample of the training
#: images beyond that): the estimate's error is already far below the statistics' spread between batches, and a
#: full pass over a large set (MNIST's 30,596 private images) costs as much as another epoch's forward passes.
BATCH_NORM_SAMPLE = 4096


def _reestimate_batch_norm(model: nn.Module, x: torch.Tensor, batch_size: int,
                           device: Optional[torch.device]) -> nn.Module:
    """:func:`reestimate_batch_norm_statistics` on images already checked (a CPU tensor), at most
    :data:`BATCH_NORM_SAMPLE` of them."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and all(p.requires_grad for p in m.parameters())]
    model.eval()
    if not norms:
        return model
    device = device if device is not None else module_device(model)
    momenta = {m: m.momentum for m in norms}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
        m.train()
    if len(x) > BATCH_NORM_SAMPLE:
        x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:BATCH_NORM_SAMPLE]]
    try:
        with torch.no_grad():
            for idx in _batches(len(x), batch_size, shuffle=False):
                model(x[idx].to(device))
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        model.eval()
    return model


