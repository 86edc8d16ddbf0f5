"""Predictions of a classifier and its accuracy on labelled images: the one way the library and the
harness run a model on a batch (an ART estimator through :class:`~mi_art.utils.EstimatorModule`, its
preprocessing applied as ``predict`` applies it; a bare module on ``(N, C, H, W)`` images in [0, 1]).
Defenses report their target's utility with :func:`natural_accuracy`; :mod:`mi_art.evaluations.metrics`
builds the attack metrics on :func:`predict_logits`."""
from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np
import torch

from mi_art.utils import EstimatorModule, as_module, device_for, eval_mode
from mi_art.validation import check_count, check_images, check_index_vector, check_labels

__all__ = ["check_model_labels", "natural_accuracy", "predict_logits"]

ArrayLike = Union[np.ndarray, torch.Tensor]
DeviceLike = Optional[Union[str, torch.device]]
#: an ART PyTorch estimator or a ``torch.nn.Module``
ModelLike = Any


def check_model_labels(y: Any, num_classes: int, name: str = "y", *, length: int,
                       length_name: str = "x") -> np.ndarray:
    """:func:`~mi_art.validation.check_labels` for labels of images a model with ``num_classes`` outputs
    classifies (the message says where the range comes from)."""
    return check_labels(y, num_classes, name, length, length_name=length_name,
                        classes=f" (the model has {num_classes} outputs)")


@torch.no_grad()
def predict_logits(model: ModelLike, x: ArrayLike, *, batch_size: int = 256,
                   device: DeviceLike = None, output_index: Any = None) -> torch.Tensor:
    """Logits of ``model`` on ``x``, computed in eval mode without gradients, in batches.

    Parameters
    ----------
    model : ART PyTorch estimator or nn.Module
        Classifier returning logits of shape ``(batch, num_classes)`` (probabilities: their logarithm
        is returned).
    x : np.ndarray or torch.Tensor
        Images in the model's input space (see the module docstring).
    batch_size : int, default 256
        Images per forward pass.
    device : str or torch.device, optional
        Where the forward passes run; defaults to the model's device.
    output_index : int or str, optional
        Position (tuple output) or key (dict output) of the logits.

    Returns
    -------
    torch.Tensor
        Float32 logits of shape ``(N, num_classes)``, on the CPU.

    Raises
    ------
    ValueError
        If ``x`` is empty, not 4-d or contains NaN, or the model does not return 2-d logits.
    """
    check_count("batch_size", batch_size)
    images = torch.as_tensor(check_images(x, "x"))
    view = as_module(model, "model", output_index=output_index)
    if isinstance(view, EstimatorModule):
        view.check_input_range(images, "x")
    device = device_for(view, device)
    out = []
    with eval_mode(view):
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size].to(device)
            out.append(view(batch).detach().float().cpu())
    return torch.cat(out)


def natural_accuracy(model: ModelLike, x: ArrayLike, y: ArrayLike, *, batch_size: int = 256,
                     device: DeviceLike = None, output_index: Any = None) -> float:
    """Top-1 accuracy of ``model`` on labelled test images (the utility of a target or defense).

    Parameters
    ----------
    model : ART PyTorch estimator or nn.Module
        Classifier returning logits (or probabilities).
    x : np.ndarray or torch.Tensor
        Test images in the model's input space (for an estimator, what its ``predict`` takes).
    y : array-like of int
        True labels, shape ``(N,)``.
    batch_size : int, default 256
        Images per forward pass.
    device : str or torch.device, optional
        Where the model runs; defaults to the model's device.
    output_index : int or str, optional
        Position (tuple output) or key (dict output) of the logits.

    Returns
    -------
    float
        Share of images whose arg-max logit is the label.

    Raises
    ------
    ValueError
        On empty input, wrong ndim, NaN in images, length mismatch or labels outside the model's outputs.
    """
    images = torch.as_tensor(check_images(x, "x"))
    check_index_vector("y", y, length=len(images), length_name="x", low=None)  # before the forward passes
    logits = predict_logits(model, images, batch_size=batch_size, device=device, output_index=output_index)
    labels = check_model_labels(y, logits.shape[1], length=len(images))
    return float((logits.argmax(dim=1).numpy() == labels).mean())
