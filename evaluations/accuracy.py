"""Attack accuracy (Acc@k over reconstruction rounds) and what it reads against: the judge's chance level, and
whether Acc@k can tell reconstructions apart at all (:mod:`mi_art.evaluations.metrics`)."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch

from mi_art.predictions import check_model_labels, natural_accuracy, predict_logits
from mi_art.quality import warn_weak, weak_model_warnings
from mi_art.validation import check_index_vector

from .metric_inputs import ArrayLike, DeviceLike, ModelLike, checked_images


def attack_accuracy(model: ModelLike, x: ArrayLike, y: ArrayLike, *, rec_index: Optional[ArrayLike] = None,
                    top_k: Sequence[int] = (1, 5), batch_size: int = 256, device: DeviceLike = None,
                    output_index: Any = None, test_x: Optional[ArrayLike] = None, test_y: Optional[ArrayLike] = None,
                    target: ModelLike = None, target_defended: bool = False) -> Dict[str, Any]:
    """Attack accuracy: share of reconstructions that the evaluation model puts in the attacked class.

    Following the protocol, accuracy is computed separately for every reconstruction round (e.g. each
    of the 5 random restarts of GMI), then reported as mean and population std over rounds.

    Parameters
    ----------
    model : ART PyTorch estimator or nn.Module
        Evaluation model ``E`` returning logits.
    x : np.ndarray or torch.Tensor
        Reconstructions in ``E``'s input space (``attack.infer``'s output when ``E`` takes what the
        target takes).
    y : array-like of int
        Attacked identity of every reconstruction, shape ``(N,)``.
    rec_index : array-like of int, optional
        Reconstruction round (``0..R-1``) of every sample, shape ``(N,)``. ``None`` treats all samples
        as one round (std 0).
    top_k : sequence of int, default (1, 5)
        The ``k`` of every Acc@k reported. A ``k`` above the number of classes is clipped to it (the key
        keeps the requested ``k``); see Returns for ``k`` at or above the number of classes.
    batch_size : int, default 256
        Images per forward pass.
    device : str or torch.device, optional
        Where ``E`` runs; defaults to the model's device.
    output_index : int or str, optional
        Position (tuple output) or key (dict output) of ``E``'s logits.
    test_x, test_y : np.ndarray or torch.Tensor, and array-like of int, optional
        Held-out private images (in ``E``'s input space) and their labels. Given, ``E``'s accuracy on them
        is returned as ``"judge_test_accuracy"``, and a :class:`mi_art.quality.WeakModelWarning` is issued
        when it is below :data:`mi_art.quality.WEAK_JUDGE_ACCURACY` or near chance: Acc@k then measures
        the judge's errors as much as the attack.
    target : ART PyTorch estimator or nn.Module, optional
        The attacked target, taking ``test_x`` as ``E`` does (one pipeline). Given with ``test_x``, its
        accuracy is returned as ``"target_test_accuracy"``, with a warning for a weak target (below
        :data:`mi_art.quality.WEAK_TARGET_ACCURACY`, unless ``target_defended``, or near chance).
    target_defended : bool, default False
        The target is defended: its lost accuracy is the defense's cost, so only near chance is warned of.

    Returns
    -------
    dict
        ``"acc@k"`` and ``"acc@k_std"`` (floats) for every ``k`` in ``top_k``; ``"chance@k"``: the
        Acc@k of a judge guessing uniformly, ``min(k, K) / K`` (:func:`chance_level`); ``"num_classes"``:
        ``K``, the number of ``E``'s outputs; and ``"per_sample_top1"``: boolean array of shape ``(N,)``,
        True where ``E``'s top-1 is ``y``. For ``k >= K`` every label is in the top ``k``: ``acc@k`` is
        1.0 by construction and measures nothing. Report it as not applicable
        (``topk_applicable(k, result["num_classes"])`` is False), never as a success rate. With ``test_x``:
        ``"judge_test_accuracy"`` (and ``"target_test_accuracy"`` with ``target``) and ``"warnings"``, the
        weak-model warnings issued (:func:`mi_art.quality.weak_model_warnings`, as the pipeline gives them).

    Raises
    ------
    ValueError
        On empty input, wrong ndim, NaN in images, length mismatch, labels outside the model's outputs,
        a negative ``rec_index`` or a non-positive ``k``.
    """
    images = checked_images(x, "x")
    n = len(images)
    check_index_vector("y", y, length=n, length_name="x", low=None)  # before the forward passes
    ks = _check_top_k(top_k)
    rounds = None if rec_index is None else check_index_vector("rec_index", rec_index, length=n, length_name="x")
    _check_held_out(test_x, test_y, target)
    logits = predict_logits(model, images, batch_size=batch_size, device=device, output_index=output_index)
    labels = check_model_labels(y, logits.shape[1], length=n)
    result = _accuracy_over_rounds(logits, torch.as_tensor(labels), ks, np.zeros(n, dtype=np.int64)
                                   if rounds is None else rounds)
    if test_x is not None:
        result.update(_weak_models(model, test_x, test_y, logits.shape[1], target, target_defended,
                                   batch_size=batch_size, device=device, output_index=output_index))
    return result


def _check_held_out(test_x: Optional[ArrayLike], test_y: Optional[ArrayLike], target: ModelLike) -> None:
    """The held-out images and labels come together, and the target's accuracy only with them."""
    if (test_x is None) != (test_y is None):
        raise ValueError("give test_x and test_y together (held-out private images and their labels), or neither")
    if target is not None and test_x is None:
        raise ValueError("target's accuracy is measured on test_x and test_y: give them too")


def _accuracy_over_rounds(logits: torch.Tensor, attacked: torch.Tensor, ks: Sequence[int],
                          rounds: np.ndarray) -> Dict[str, Any]:
    """Acc@k of every ``k`` in each reconstruction round, as their mean and population std, beside its chance
    level; the number of classes, and each reconstruction's top-1 hit."""
    num_classes = logits.shape[1]
    ranked = logits.topk(min(max(ks), num_classes), dim=1).indices  # (N, max_k), best first
    hits = ranked == attacked[:, None]  # at most one True per row
    round_ids = np.unique(rounds)
    result: Dict[str, Union[float, np.ndarray]] = {}
    for k in ks:
        correct = hits[:, :min(k, num_classes)].any(dim=1).numpy()
        per_round = np.array([correct[rounds == r].mean() for r in round_ids], dtype=np.float64)
        result[f"acc@{k}"] = float(per_round.mean())
        result[f"acc@{k}_std"] = float(per_round.std())
        result[f"chance@{k}"] = chance_level(k, num_classes)
    result["num_classes"] = int(num_classes)
    result["per_sample_top1"] = hits[:, 0].numpy().astype(bool)
    return result


def _weak_models(judge: ModelLike, test_x: ArrayLike, test_y: ArrayLike, num_classes: int, target: ModelLike,
                 target_defended: bool, **predict: Any) -> Dict[str, Any]:
    """The judge's (and the target's) accuracy on held-out private images, and the weak-model warnings they
    give, each issued once (for :func:`attack_accuracy`)."""
    out: Dict[str, Any] = {"judge_test_accuracy": natural_accuracy(judge, test_x, test_y, **predict)}
    if target is not None:
        out["target_test_accuracy"] = natural_accuracy(target, test_x, test_y, batch_size=predict["batch_size"],
                                                       device=predict["device"])
    out["warnings"] = weak_model_warnings(judge_accuracy=out["judge_test_accuracy"],
                                          target_accuracy=out.get("target_test_accuracy"), n_classes=num_classes,
                                          defended=bool(target_defended))
    warn_weak(out["warnings"])
    return out


def _check_k_and_classes(k: int, num_classes: int) -> None:
    for name, value in (("k", k), ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def chance_level(k: int, num_classes: int) -> float:
    """Acc@k of a judge that ranks its ``num_classes`` classes at random: ``min(k, K) / K``.

    Attack accuracy means something only above this level (0.2 at Acc@1 with 5 classes).

    Raises
    ------
    ValueError
        If ``k`` or ``num_classes`` is not a positive integer.
    """
    _check_k_and_classes(k, num_classes)
    return min(int(k), int(num_classes)) / int(num_classes)


def topk_applicable(k: int, num_classes: int) -> bool:
    """Whether Acc@k can tell reconstructions apart: False when ``k >= num_classes``, where every label
    is in the judge's top ``k`` and Acc@k is 1.0 whatever the images (report it as "n/a").

    Raises
    ------
    ValueError
        If ``k`` or ``num_classes`` is not a positive integer.
    """
    _check_k_and_classes(k, num_classes)
    return int(k) < int(num_classes)


def _check_top_k(top_k: Sequence[int]) -> list:
    if isinstance(top_k, (int, np.integer)):
        top_k = (int(top_k),)
    ks = list(top_k)
    if not ks:
        raise ValueError("top_k is empty: give at least one k")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"top_k entries must be positive integers, got {k!r}")
    return [int(k) for k in ks]


