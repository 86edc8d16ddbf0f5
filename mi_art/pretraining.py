"""Public pre-training, then private fine-tuning: the offline substitute for ImageNet / MS-Celeb weights.

The papers' targets and evaluation models start from weights trained on other data (VGG16 on ImageNet,
IR-50/IR-152 on MS-Celeb-1M); none can be downloaded here. The public set of the protocol holds other,
disjoint identities with their own labels (``dataset.public.y``, ``dataset.num_public_classes``):

1. :func:`pretrain_classifier`: give the model a classification layer for the public identities and
   train it on them;
2. :func:`fine_tune_classifier`: replace that layer by a fresh one for the private identities and train
   every layer on ``private_train``, starting from the pre-trained body.

:func:`pretrain_and_fine_tune` does both for an :class:`~mi_art.data.MIDataset`. The private data never
reaches step 1, and the public data never reaches step 2. TL-DMI (:mod:`mi_art.defenses.transfer`) uses the same
two steps, with the first layers frozen in step 2.

The classification layer is the model's last ``nn.Linear`` (``fc`` for every model of
:mod:`mi_art.models`); :func:`replace_head` swaps it in place.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
from torch import nn

from .features import last_linear
from .training import train_classifier
from .utils import seed_everything
from .validation import check_count, check_int, check_optional_positive

__all__ = ["MIN_PUBLIC_CLASSES", "fine_tune_classifier", "pretrain_and_fine_tune", "pretrain_classifier",
           "replace_head"]

#: Pre-training needs at least this many public identities: with one class the cross-entropy is zero
#: whatever the weights, so nothing is learned (e.g. FFHQ as public data has no identity labels).
MIN_PUBLIC_CLASSES = 2


def _layer_name(model: nn.Module, layer: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is layer:
            return name
    raise ValueError("the last nn.Linear of the model is not one of its named sub-modules")  # pragma: no cover


def replace_head(model: nn.Module, num_classes: int) -> nn.Linear:
    """Put a fresh ``nn.Linear`` with ``num_classes`` outputs (same input size, bias and device) in place
    of the model's classification layer (its last ``nn.Linear``), in place; returns the new layer. Its
    initial weights come from torch's global random state (seed it first for reproducible runs)."""
    num_classes = check_count("num_classes", num_classes)
    old = last_linear(model)
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None).to(old.weight.device)
    name = _layer_name(model, old)
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return new


def _check_public(x: Any, y: Any, num_classes: Optional[int]) -> int:
    """The number of public classes: ``num_classes``, or one more than the largest label."""
    y = np.asarray(y)
    if num_classes is None:
        if y.size == 0:
            raise ValueError("the public set is empty: public pre-training needs labelled public images")
        num_classes = int(np.max(y)) + 1
    num_classes = check_int("num_public_classes", num_classes, low=1)
    if num_classes < MIN_PUBLIC_CLASSES:
        raise ValueError(f"public pre-training needs at least {MIN_PUBLIC_CLASSES} public identities, got "
                         f"{num_classes} (a public set without identity labels, e.g. FFHQ, cannot pre-train a "
                         "classifier); train from scratch instead (pretrain_epochs=0)")
    return num_classes


def pretrain_classifier(model: nn.Module, public_x: Any, public_y: Any, *, num_classes: Optional[int] = None,
                        desc: str = "pre-train (public)", **train_kwargs: Any) -> nn.Module:
    """Step 1: give ``model`` a classification layer for the public identities (unless its last
    ``nn.Linear`` already has ``num_classes`` outputs) and train every layer on ``(public_x, public_y)``.

    :param model: A classifier whose last ``nn.Linear`` is the classification layer; changed in place.
    :param public_x: Public images ``(N, C, H, W)`` in [0, 1].
    :param public_y: Their identity labels in ``[0, num_classes)``.
    :param num_classes: Number of public identities (default: the largest label + 1); at least
        :data:`MIN_PUBLIC_CLASSES`.
    :param train_kwargs: Keyword arguments of :func:`mi_art.training.train_classifier` (``epochs``,
        ``lr``, ``augment``, ``device``, ``seed``, ...).
    :return: ``model``, trained, in eval mode.
    """
    num_classes = _check_public(public_x, public_y, num_classes)
    if last_linear(model).out_features != num_classes:
        replace_head(model, num_classes)
    return train_classifier(model, public_x, public_y, desc=desc, **train_kwargs)


def fine_tune_classifier(model: nn.Module, x: Any, y: Any, num_classes: int, *, seed: Optional[int] = 0,
                         reseed_head: bool = True, desc: str = "fine-tune (private)",
                         **train_kwargs: Any) -> nn.Module:
    """Step 2: replace the classification layer by a fresh one with ``num_classes`` outputs and train on
    ``(x, y)``, starting from the body ``model`` holds (every layer whose parameters require gradients).

    :param seed: Seed of the training (and of the new layer's initial weights, see ``reseed_head``).
    :param reseed_head: Seed torch with ``seed`` before drawing the new layer; False draws it from the
        current random state (what TL-DMI has always done, kept so that its results do not change).
    :param train_kwargs: Keyword arguments of :func:`mi_art.training.train_classifier`; pass a
        ``loss_fn`` to freeze or regularise parts of the model (TL-DMI does).
    :return: ``model``, trained, in eval mode.
    """
    num_classes = check_count("num_classes", num_classes)
    if reseed_head and seed is not None:
        seed_everything(seed)
    replace_head(model, num_classes)
    return train_classifier(model, x, y, seed=seed, desc=desc, **train_kwargs)


def pretrain_and_fine_tune(model: nn.Module, dataset: Any, *, pretrain_epochs: int, epochs: int = 30,
                           pretrain_lr: Optional[float] = None, seed: Optional[int] = 0,
                           desc: str = "classifier", **train_kwargs: Any) -> nn.Module:
    """Pre-train ``model`` on ``dataset.public`` (its own identities) for ``pretrain_epochs``, then
    replace the classification layer for ``dataset.num_classes`` private identities and fine-tune every
    layer on ``dataset.private_train`` for ``epochs``.

    :param model: A classifier (any number of outputs: its last ``nn.Linear`` is replaced as needed).
    :param dataset: An :class:`mi_art.data.MIDataset` with at least :data:`MIN_PUBLIC_CLASSES` public
        identities.
    :param pretrain_epochs: Epochs on the public set (>= 1; to train from scratch, call
        :func:`mi_art.training.train_classifier` instead).
    :param epochs: Fine-tuning epochs on the private training split.
    :param pretrain_lr: Learning rate of pre-training (default: ``lr`` of ``train_kwargs``, else 1e-3).
    :param seed: Seed of both steps (batching, augmentation, the new classification layers).
    :param train_kwargs: Other keyword arguments of :func:`mi_art.training.train_classifier`, used by
        both steps (``lr``, ``batch_size``, ``weight_decay``, ``optimizer``, ``augment``, ``device``,
        ``verbose``).
    :return: ``model``, fine-tuned, in eval mode, with ``dataset.num_classes`` outputs.
    :raises ValueError: A non-positive epoch count, or a public set with fewer than
        :data:`MIN_PUBLIC_CLASSES` identities.
    """
    pretrain_epochs = check_count("pretrain_epochs", pretrain_epochs)
    epochs = check_count("epochs", epochs)
    pretrain_lr = check_optional_positive("pretrain_lr", pretrain_lr, hint=" (or None: the same as lr)")
    _check_public(dataset.public.x, dataset.public.y, dataset.num_public_classes)
    pre = dict(train_kwargs)
    if pretrain_lr is not None:
        pre["lr"] = pretrain_lr
    model = pretrain_classifier(model, dataset.public.x, dataset.public.y, num_classes=dataset.num_public_classes,
                                epochs=pretrain_epochs, seed=seed, desc=f"{desc}: pre-train (public)", **pre)
    train = dataset.private_train
    return fine_tune_classifier(model, train.x, train.y, dataset.num_classes, epochs=epochs, seed=seed,
                                desc=f"{desc}: fine-tune (private)", **train_kwargs)
