"""What an attacker can ask of the target: its gradients (white-box), its scores through ``predict``
(black-box) or only the label ``predict`` ranks first (label-only).

A model behind an API answers queries and nothing else: :class:`PredictOracle` is that API, made of any
ART classifier with ``predict`` (``BlackBoxClassifier`` included, its output postprocessors applied). It
counts the queries and refuses to go past a budget. Black-box and label-only attacks invert surrogates
trained from its answers (:func:`mi_art.distill_surrogate` takes an oracle as its target), as LOKT
(Nguyen et al., NeurIPS 2023, https://arxiv.org/abs/2310.19342) does from labels.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
import torch

from .utils import looks_like_probabilities
from .validation import check_choice, check_optional_count

#: The access levels, from most to least an attacker sees.
ACCESS_LEVELS = ("white-box", "black-box", "label-only")


class QueryBudgetError(ValueError):
    """The oracle's query budget would be exceeded."""


class PredictOracle:
    """The target as an API: unit-space images in ([0, 1], NCHW, as the GAN priors and surrogates use), the
    estimator's ``predict`` answers out, every image counted as one query.

    :param estimator: Any ART classifier with ``predict``, ``input_shape`` and ``nb_classes`` (a
        ``BlackBoxClassifier`` wrapping a remote API, a ``PyTorchClassifier`` with postprocessors, ...).
        Images reach it in its input space: its ``clip_values`` range (``[0, 1]`` without) and its layout
        (``channels_first`` where it says, else read off ``input_shape``: channels last when the last axis
        has 1 or 3 entries and the first does not).
    :param access: ``"black-box"``: :meth:`answers` are the scores ``predict`` returns, as probabilities
        (non-negative scores that do not sum to 1, as a postprocessor leaves them, are normalised; other
        scores are taken as logits and passed through a softmax); ``"label-only"``: one-hot rows of
        the class ``predict`` ranks first, nothing else of the scores.
    :param max_queries: The budget: images the oracle answers in all (None: no limit). A request that would
        go past it raises :class:`QueryBudgetError` without querying.
    """

    def __init__(self, estimator: Any, *, access: str = "black-box", max_queries: Optional[int] = None) -> None:
        check_choice("access", access, ACCESS_LEVELS[1:])
        for attr in ("predict", "input_shape", "nb_classes"):
            if not hasattr(estimator, attr):
                raise ValueError(f"the target must be an ART classifier with predict, input_shape and nb_classes "
                                 f"(e.g. art.estimators.classification.BlackBoxClassifier); it has no {attr}")
        self.estimator, self.access = estimator, access
        self.max_queries = check_optional_count("max_queries", max_queries)
        self.queries = 0
        self.nb_classes = int(estimator.nb_classes)

    @property
    def channels_first(self) -> bool:
        if hasattr(self.estimator, "channels_first"):
            return bool(self.estimator.channels_first)
        shape = tuple(self.estimator.input_shape)
        return not (len(shape) == 3 and shape[-1] in (1, 3) and shape[0] not in (1, 3))

    @property
    def unit_shape(self) -> Tuple[int, ...]:
        """The estimator's input shape in the unit space's layout (C, H, W)."""
        shape = tuple(self.estimator.input_shape)
        return shape if self.channels_first or len(shape) != 3 else (shape[2], shape[0], shape[1])

    def from_unit(self, images: Any) -> np.ndarray:
        """Unit-space images (tensor or array, NCHW in [0, 1]) -> the estimator's input space, as an array."""
        x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
        x = x.astype(np.float32, copy=False)
        if not self.channels_first:
            x = x.transpose(0, 2, 3, 1)
        clip = getattr(self.estimator, "clip_values", None)
        if clip is not None:
            lo, hi = (np.asarray(v, dtype=np.float32) for v in clip)
            x = lo + (hi - lo) * x
        return x

    def to_unit(self, x: Any) -> np.ndarray:
        """Images in the estimator's input space (what ``predict`` takes) -> unit space, NCHW in [0, 1]."""
        x = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
        clip = getattr(self.estimator, "clip_values", None)
        if clip is not None:
            lo, hi = (np.asarray(v, dtype=np.float32) for v in clip)
            x = (x - lo) / (hi - lo)
        return x if self.channels_first else x.transpose(0, 3, 1, 2)

    def answers(self, images: Any) -> torch.Tensor:
        """The oracle's answers for unit-space ``images``: probabilities (black-box) or one-hot labels
        (label-only), ``(N, nb_classes)`` float32 on the images' device (the CPU for an array)."""
        n = len(images)
        if self.max_queries is not None and self.queries + n > self.max_queries:
            raise QueryBudgetError(f"the query budget max_queries={self.max_queries} would be exceeded: {self.queries} "
                                   f"queries made, {n} more asked; raise max_queries or ask for fewer images")
        out = np.asarray(self.estimator.predict(self.from_unit(images)), dtype=np.float32)
        self.queries += n
        if out.shape != (n, self.nb_classes) or not np.isfinite(out).all():
            raise ValueError(f"the target's predict must return finite scores of shape ({n}, {self.nb_classes}), "
                             f"got shape {out.shape}")
        scores = torch.from_numpy(out)
        if self.access == "label-only":
            answer = torch.nn.functional.one_hot(scores.argmax(1), self.nb_classes).float()
        elif looks_like_probabilities(scores):
            answer = scores
        elif ((scores >= 0) & (scores <= 1)).all():  # probabilities a postprocessor cut or rounded
            total = scores.sum(1, keepdim=True)
            answer = torch.where(total > 0, scores / total.clamp_min(1e-12), torch.full_like(scores, 1 / self.nb_classes))
        else:  # logits
            answer = scores.softmax(1)
        return answer.to(images.device) if isinstance(images, torch.Tensor) else answer

    def remaining(self) -> Optional[int]:
        """Queries left in the budget (None: no limit)."""
        return None if self.max_queries is None else self.max_queries - self.queries
