"""What an attacker can ask of the target: its gradients (white-box), its scores through ``predict``
(black-box) or only the label ``predict`` ranks first (label-only).

A model behind an API answers queries and nothing else: :class:`PredictOracle` is that API, made of any
ART classifier with ``predict`` (``BlackBoxClassifier`` included, its output postprocessors applied). It
counts the queries and refuses to go past a budget, retries the errors an API makes now and then, and
refuses answers that cannot be scores. Black-box and label-only attacks invert surrogates trained from its
answers (:func:`mi_art.distill_surrogate` takes an oracle as its target), as LOKT (Nguyen et al., NeurIPS
2023, https://arxiv.org/abs/2310.19342) does from labels.
"""
from __future__ import annotations

import copy
import time
from typing import Any, Callable, Optional, Tuple, Type

import numpy as np
import torch

from .utils import looks_like_probabilities
from .validation import (check_choice, check_clip_range, check_count, check_images, check_int, check_number,
                         check_optional_count, check_unit_images)

#: The access levels, from most to least an attacker sees.
ACCESS_LEVELS = ("white-box", "black-box", "label-only")


class QueryBudgetError(ValueError):
    """The oracle's query budget would be exceeded."""


class MalformedAnswerError(ValueError):
    """The target's ``predict`` returned something other than one finite score per class for each image."""


class PredictFailedError(RuntimeError):
    """The target's ``predict`` kept failing: every try of one request raised an error taken as transient."""


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
    :param retries: How often a request whose ``predict`` raised one of ``retry_on`` is tried again, after
        ``backoff`` seconds the first time and twice as long each next time; past that,
        :class:`PredictFailedError` (from the last error).
    :param backoff: Seconds before the first retry (0: none).
    :param retry_on: The errors taken as transient. By default ``OSError``: ``ConnectionError``,
        ``TimeoutError`` and the errors of ``requests`` and ``urllib`` are ``OSError``.

    A malformed answer (not numbers, the wrong shape, NaN or infinite scores) is not retried: it raises
    :class:`MalformedAnswerError` naming the API's ``predict`` and what it returned. ``queries`` counts the
    images of every answered request, ``calls`` the requests answered and ``failed_calls`` the tries that
    raised a transient error.
    """

    def __init__(self, estimator: Any, *, access: str = "black-box", max_queries: Optional[int] = None,
                 retries: int = 3, backoff: float = 1.0,
                 retry_on: Tuple[Type[BaseException], ...] = (OSError,)) -> None:
        check_choice("access", access, ACCESS_LEVELS[1:])
        for attr in ("predict", "input_shape", "nb_classes"):
            if not hasattr(estimator, attr):
                raise ValueError(f"the target must be an ART classifier with predict, input_shape and nb_classes "
                                 f"(e.g. art.estimators.classification.BlackBoxClassifier); it has no {attr}")
        self.estimator, self.access = estimator, access
        self.max_queries = check_optional_count("max_queries", max_queries)
        self.retries = check_int("retries", retries, low=0)
        self.backoff = check_number("backoff", backoff, low=0, hint=" (seconds before the first retry)")
        if not (isinstance(retry_on, tuple) and retry_on
                and all(isinstance(e, type) and issubclass(e, Exception) for e in retry_on)):
            raise ValueError(f"retry_on must be a non-empty tuple of exception classes, got {retry_on!r}")
        self.retry_on = retry_on
        self.queries, self.calls, self.failed_calls = 0, 0, 0
        self.nb_classes = check_count("the target's nb_classes", estimator.nb_classes)
        self._predict = self._checked_predict(estimator)

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

    # ------------------------------------------------------------------ asking the API

    @property
    def api(self) -> str:
        """The API's ``predict``, named for messages."""
        fn = getattr(self.estimator, "_predict_fn", None)
        inner = f" around {getattr(fn, '__qualname__', type(fn).__name__)}" if callable(fn) else ""
        return f"the target's predict ({type(self.estimator).__name__}{inner})"

    def _checked_predict(self, estimator: Any) -> Callable[[np.ndarray], Any]:
        """``estimator.predict``; for a ``BlackBoxClassifier`` (an estimator calling a ``_predict_fn``), that of
        a shallow copy whose function's every answer is checked before ART casts it (the user's estimator is
        left as it is): ART would turn a string or a wrong shape into a numpy error of its own."""
        fn = getattr(estimator, "_predict_fn", None)
        if not callable(fn):
            return estimator.predict
        clone = copy.copy(estimator)

        def checked_fn(x: np.ndarray) -> np.ndarray:
            return self._check_answer(fn(x), len(x))

        clone._predict_fn = checked_fn
        return clone.predict

    def _check_answer(self, out: Any, n: int) -> np.ndarray:
        """What the API returned for ``n`` images as a float32 ``(n, nb_classes)`` array of finite scores, or
        a :class:`MalformedAnswerError` saying what it was."""
        expected = f"{n} rows of {self.nb_classes} finite scores (one row per image, one score per class)"
        if isinstance(out, torch.Tensor):
            out = out.detach().cpu().numpy()
        try:
            arr = np.asarray(out)
        except ValueError:  # ragged lists
            arr = np.asarray(out, dtype=object)
        if arr.dtype.kind not in "fiub":
            sample = f" (e.g. {arr.flat[0]!r:.40})" if arr.size else ""
            raise MalformedAnswerError(f"{self.api} returned a {type(out).__name__} of {arr.dtype} values{sample}, "
                                       f"not numbers: it must return {expected}")
        if arr.shape != (n, self.nb_classes):
            raise MalformedAnswerError(f"{self.api} returned an answer of shape {arr.shape} for {n} images: it must "
                                       f"return {expected}, shape ({n}, {self.nb_classes})")
        arr = arr.astype(np.float32)
        bad = ~np.isfinite(arr).all(1)
        if bad.any():
            raise MalformedAnswerError(f"{self.api} returned NaN or infinite scores for {int(bad.sum())} of {n} "
                                       f"images (e.g. {arr[bad][0].tolist()!r:.80}): it must return {expected}")
        return arr

    def _ask(self, x: np.ndarray) -> np.ndarray:
        """The API's checked answer for ``x`` (in its input space), transient errors retried with backoff."""
        attempt = 0
        while True:
            try:
                out = self._predict(x)
            except MalformedAnswerError:
                raise
            except self.retry_on as err:
                self.failed_calls += 1
                if attempt == self.retries:
                    raise PredictFailedError(f"{self.api} failed {attempt + 1} times in a row for {len(x)} images "
                                             f"(retries={self.retries}, backoff={self.backoff:g}s, doubling): "
                                             f"{type(err).__name__}: {err}") from err
                time.sleep(self.backoff * 2 ** attempt)
                attempt += 1
            else:
                return self._check_answer(out, len(x))

    # ------------------------------------------------------------------ the two image spaces

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

    def to_unit(self, x: Any, name: str = "x") -> np.ndarray:
        """Images in the estimator's input space (what ``predict`` takes), checked against its ``input_shape``
        and ``clip_values`` (``name`` in the messages) -> unit space, NCHW in [0, 1]."""
        shape = tuple(self.estimator.input_shape)
        x = check_images(x, name, shape if len(shape) == 3 else None)
        clip = getattr(self.estimator, "clip_values", None)
        if clip is None:  # the estimator takes [0, 1]
            return check_unit_images(x if self.channels_first else x.transpose(0, 3, 1, 2), name,
                                     user=f"{self.api}, without clip_values,",
                                     fix="scale them to [0, 1] (e.g. divide 0..255 images by 255), or give the "
                                         "estimator clip_values=(0, 255)")
        check_clip_range(x, name, clip, "target")
        lo, hi = (np.asarray(v, dtype=np.float32) for v in clip)
        x = np.clip((x - lo) / (hi - lo), 0, 1)
        return x if self.channels_first else x.transpose(0, 3, 1, 2)

    def answers(self, images: Any) -> torch.Tensor:
        """The oracle's answers for unit-space ``images`` (NCHW in [0, 1], checked): probabilities (black-box)
        or one-hot labels (label-only), ``(N, nb_classes)`` float32 on the images' device (the CPU for an
        array)."""
        n = len(images)
        check_unit_images(images, "images", shape=self.unit_shape,
                          user="PredictOracle.answers (it maps [0, 1] to the estimator's clip_values)",
                          fix="give them in [0, 1], or map images in the estimator's input space with oracle.to_unit")
        if self.max_queries is not None and self.queries + n > self.max_queries:
            raise QueryBudgetError(f"the query budget max_queries={self.max_queries} would be exceeded: {self.queries} "
                                   f"queries made, {n} more asked; raise max_queries or ask for fewer images")
        scores = torch.from_numpy(self._ask(self.from_unit(images)))
        self.queries += n
        self.calls += 1
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
