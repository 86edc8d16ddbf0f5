"""ART output postprocessors as model inversion "defenses": ReverseSigmoid, HighConfidence, Rounded,
GaussianNoise and ClassLabels from ``art.defences.postprocessor``.

**They do not defend against white-box gradient attacks.** An ART postprocessor changes only what
``PyTorchClassifier.predict`` returns; ``class_gradient``, ``loss_gradient`` and the differentiable
forward pass (``_predict_framework``) that GMI and KEDMI optimise through never see it. GMI and KEDMI
against a postprocessed classifier therefore behave exactly as against the undefended model. They are
offered so that a comparison can show this, and because they do change what black-box / label-only
attacks observe.

The model is trained normally (as defense "none"); the configured postprocessor is returned in the
record and :func:`wrap_with_defense` builds the ART classifier with ``postprocessing_defences=``.
Because the models output logits and ART's postprocessors expect probabilities, the wrapped classifier
first applies :class:`Softmax` (a postprocessor, so again ``predict`` only).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np
from art.defences.postprocessor import ClassLabels, GaussianNoise, HighConfidence, Postprocessor, ReverseSigmoid, Rounded
from torch import nn

from mi_art.validation import check_bool, check_count, check_number, check_positive, is_number

from mi_art.training import train_classifier

from .base import Defense, Trained
from .common import check_keys


class Softmax(Postprocessor):
    """Turn logits into probabilities in ``predict`` (ART's postprocessors expect probabilities)."""

    params: list = []

    def __init__(self) -> None:
        super().__init__(is_fitted=True, apply_fit=False, apply_predict=True)

    def __call__(self, preds: np.ndarray) -> np.ndarray:
        z = preds - preds.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


class RowwiseClassLabels(ClassLabels):
    """ART's ``ClassLabels`` with its batch bug fixed: ART 1.20 writes ``class_labels[:, argmax] = 1``,
    which sets, in *every* row, the columns of *all* rows' predicted classes; here each row gets
    the one-hot vector of its own prediction."""

    def __call__(self, preds: np.ndarray) -> np.ndarray:
        if preds.shape[1] == 1:
            return super().__call__(preds)
        out = np.zeros_like(preds)
        out[np.arange(len(preds)), np.argmax(preds, axis=1)] = 1
        return out


#: defense name -> (postprocessor class, default parameters)
POSTPROCESSORS: Dict[str, Tuple[type, Dict[str, Any]]] = {
    "reverse-sigmoid": (ReverseSigmoid, {"beta": 1.0, "gamma": 0.1}),
    "high-confidence": (HighConfidence, {"cutoff": 0.25}),
    "rounded": (Rounded, {"decimals": 3}),
    "gaussian-noise": (GaussianNoise, {"scale": 0.2}),
    "class-labels": (RowwiseClassLabels, {}),
}


def check_params(defense: str, params: Dict[str, Any]) -> Dict[str, Any]:
    if defense not in POSTPROCESSORS:
        raise ValueError(f"unknown postprocessor {defense!r}; valid names: {', '.join(POSTPROCESSORS)}")
    _, defaults = POSTPROCESSORS[defense]
    check_keys(defense, params, defaults)
    out = {**defaults, **params}
    if defense == "reverse-sigmoid":
        out["beta"] = check_positive("beta", out["beta"], hint=" (perturbation magnitude)")
        out["gamma"] = check_positive("gamma", out["gamma"], hint=" (convergence parameter)")
    elif defense == "high-confidence":
        out["cutoff"] = check_number("cutoff", out["cutoff"], low=0, high=1, low_open=True,
                                     hint=" (probabilities below it are set to 0)")
    elif defense == "rounded":
        out["decimals"] = check_count("decimals", out["decimals"], hint=" (decimal places kept)")
    elif defense == "gaussian-noise":
        out["scale"] = check_positive("scale", out["scale"], hint=" (noise standard deviation)")
    return out


def make_postprocessor(defense: str, params: Dict[str, Any]) -> Postprocessor:
    """The configured ART postprocessor (applied in ``predict`` only, never in training or gradients)."""
    if defense not in POSTPROCESSORS:
        raise ValueError(f"unknown postprocessor {defense!r}; valid names: {', '.join(POSTPROCESSORS)}")
    cls, _ = POSTPROCESSORS[defense]
    return cls(**check_params(defense, dict(params)))


class OutputPostprocessor(Defense):
    """An ART output postprocessor: the model is trained as for "none"; ``predict`` applies the
    postprocessor (:func:`wrap_with_defense`), gradients never see it."""

    def __init__(self, name: str) -> None:
        if name not in POSTPROCESSORS:
            raise ValueError(f"unknown postprocessor {name!r}; valid names: {', '.join(POSTPROCESSORS)}")
        cls, defaults = POSTPROCESSORS[name]
        self.name, self.defaults = name, dict(defaults)
        self.summary = f"ART's {cls.__name__} output postprocessor (predict only; no effect on gradients)"

    def check_params(self, params: Dict[str, Any], n_train: int) -> Dict[str, Any]:
        return check_params(self.name, params)

    def train(self, model: nn.Module, dataset: Any, params: Dict[str, Any], settings: Dict[str, Any]) -> Trained:
        train = dataset.private_train
        model = train_classifier(model, train.x, train.y, desc=self.name, **settings)
        return Trained(model, postprocessor=make_postprocessor(self.name, params))


def wrap_with_defense(model: nn.Module, record: Any, *, clip_values: Optional[Tuple[float, float]] = (0.0, 1.0),
                      probabilities: Optional[bool] = None, loss: Optional[nn.Module] = None):
    """Build the ART ``PyTorchClassifier`` for a model returned by :func:`mi_art.defenses.train_defended_target`.

    :param model: The returned module.
    :param record: Its :class:`mi_art.defenses.DefenseRecord` (input shape, classes, postprocessor).
    :param clip_values: Input range of the classifier.
    :param probabilities: Prepend :class:`Softmax` so ``predict`` returns probabilities. Default: only
        when the record carries a postprocessor (ART's postprocessors expect probabilities).
    :param loss: Training loss for ART (default cross-entropy).
    :return: ``PyTorchClassifier`` with ``postprocessing_defences`` set from the record. Its
        ``class_gradient`` / ``loss_gradient`` and differentiable forward pass are those of the bare
        model: **postprocessors do not affect white-box gradient attacks such as GMI and KEDMI**.
    """
    from art.estimators.classification import PyTorchClassifier

    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be the torch.nn.Module returned by train_defended_target, got "
                         f"{type(model).__name__}")
    for key in ("input_shape", "num_classes"):
        if not hasattr(record, key):
            raise ValueError(f"record must be the DefenseRecord returned by train_defended_target, got "
                             f"{type(record).__name__} (it has no {key!r})")
    if clip_values is not None:
        if not isinstance(clip_values, (list, tuple)) or len(clip_values) != 2 \
                or not all(is_number(v) for v in clip_values) or not clip_values[0] < clip_values[1]:
            raise ValueError(f"clip_values must be None or a pair (min, max) of finite numbers with min < max, "
                             f"got {clip_values!r}")
        clip_values = (float(clip_values[0]), float(clip_values[1]))
    if probabilities is not None:
        probabilities = check_bool("probabilities", probabilities)
    if loss is not None and not isinstance(loss, nn.Module):
        raise ValueError(f"loss must be None (cross-entropy) or a torch.nn.Module loss, got {type(loss).__name__}")
    post = getattr(record, "postprocessor", None)
    if probabilities is None:
        probabilities = post is not None
    chain = ([Softmax()] if probabilities else []) + ([post] if post is not None else [])
    device = next(model.parameters()).device
    return PyTorchClassifier(model=model, loss=loss or nn.CrossEntropyLoss(), input_shape=tuple(record.input_shape),
                             nb_classes=int(record.num_classes), clip_values=clip_values,
                             postprocessing_defences=chain or None,
                             device_type="gpu" if device.type == "cuda" else "cpu")


__all__ = ["POSTPROCESSORS", "OutputPostprocessor", "Softmax", "RowwiseClassLabels", "check_params", "make_postprocessor",
           "wrap_with_defense"]
