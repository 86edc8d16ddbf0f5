"""The record every defended training returns: what was trained, how, and at what utility/privacy."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import numpy as np


def _plain(value: Any) -> Any:
    """Convert numpy scalars/arrays, tuples and non-finite floats into JSON-safe Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf" / "nan": JSON has no literal for them
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


@dataclass
class DefenseRecord:
    """What :func:`mi_art.defenses.train_defended_target` did.

    :param defense: Defense name ("none", "dp-sgd", "mid", ...).
    :param params: The defense's parameters, defaults filled in.
    :param test_accuracy: Natural top-1 accuracy on ``dataset.private_test`` (eval mode, no postprocessor); None
        where it was not measured (:func:`mi_art.defenses.opacus_record` without the dataset).
    :param train_time_s: Wall-clock training time in seconds (TL: pre-training included); None where mi-art did
        not train it.
    :param architecture: Architecture name, or the class name of a user module.
    :param num_classes: Private classes (outputs of the returned model).
    :param input_shape: ``(C, H, W)`` of one input.
    :param training: The generic training settings (epochs, batch size, learning rate, seed, ...).
    :param epsilon: DP-SGD only: epsilon spent, from Opacus's accountant at ``delta``.
    :param delta: DP-SGD only.
    :param accountant: DP-SGD only: "rdp", "prv" or "gdp".
    :param details: Defense-specific facts (DP: noise multiplier, sample rate, optimiser steps; TL: the
        frozen modules and public pre-training accuracy; ...).
    :param postprocessor: ART output postprocessors only: the configured
        ``art.defences.postprocessor.Postprocessor``; see :func:`mi_art.defenses.wrap_with_defense`.
    """

    defense: str
    params: Dict[str, Any]
    test_accuracy: Optional[float]
    train_time_s: Optional[float]
    architecture: str
    num_classes: int
    input_shape: Tuple[int, int, int]
    training: Dict[str, Any] = field(default_factory=dict)
    epsilon: Optional[float] = None
    delta: Optional[float] = None
    accountant: Optional[str] = None
    details: Dict[str, Any] = field(default_factory=dict)
    postprocessor: Any = None

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-serialisable dict (the postprocessor as its class name and parameters)."""
        post = None
        if self.postprocessor is not None:
            names = list(getattr(self.postprocessor, "params", []))
            post = {"class": type(self.postprocessor).__name__,
                    "params": {n: getattr(self.postprocessor, n) for n in names}}
        out = {
            "defense": self.defense, "params": self.params, "test_accuracy": self.test_accuracy,
            "train_time_s": self.train_time_s, "architecture": self.architecture, "num_classes": self.num_classes,
            "input_shape": self.input_shape, "training": self.training, "epsilon": self.epsilon,
            "delta": self.delta, "accountant": self.accountant, "details": self.details, "postprocessor": post,
        }
        return _plain(out)
