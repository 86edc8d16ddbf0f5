"""A panel of judges: every figure of the reconstructions judged by several independently trained evaluation
models and averaged over them, and each attacked identity's figures (:mod:`mi_art.evaluations.metrics`)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from mi_art.utils import EstimatorModule

from .accuracy import attack_accuracy, topk_applicable
from .distributions import PenultimateFeatures, fid_eval_features, prdc
from .knn import knn_distance
from .metric_facts import metric_names
from .metric_inputs import ArrayLike, ModelLike, checked_images


def per_identity_figures(labels: ArrayLike, per_sample: Dict[str, ArrayLike],
                         train_y: Optional[ArrayLike] = None) -> List[Dict[str, Any]]:
    """One row per attacked identity, in identity order: ``"identity"``, ``"n_reconstructions"``, the mean
    of each per-sample figure of ``per_sample`` over that identity's reconstructions (e.g. ``"acc@1"`` from
    the judges' top-1 hits, ``"knn_dist"``), and with ``train_y`` ``"n_private_train"``, its number of
    private training images. Weighted by ``n_reconstructions``, the rows average to the figures' mean over
    all reconstructions. JSON-safe (plain ints and floats)."""
    labels = np.asarray(labels).astype(np.int64)
    values = {name: np.asarray(v, dtype=np.float64) for name, v in per_sample.items()}
    for name, v in values.items():
        if v.shape != labels.shape:
            raise ValueError(f"per_sample[{name!r}] has shape {v.shape}, the labels {labels.shape}")
    train = None if train_y is None else np.asarray(train_y).astype(np.int64)
    rows = []
    for identity in np.unique(labels):
        mask = labels == identity
        row: Dict[str, Any] = {"identity": int(identity), "n_reconstructions": int(mask.sum())}
        if train is not None:
            row["n_private_train"] = int((train == identity).sum())
        row.update({name: float(v[mask].mean()) for name, v in values.items()})
        rows.append(row)
    return rows



# --------------------------------------------------------------------------------------------------
# A panel of judges
# --------------------------------------------------------------------------------------------------
#: The metrics :func:`judge_panel` averages over its judges (with the default ``top_k``): those declared
#: ``judged_by_panel`` (:mod:`~mi_art.evaluations.metric_facts`), read at each use.
PANEL_METRICS = metric_names(lambda m: m.judged_by_panel)


def _mean_over_judges(values: Sequence[Optional[float]]) -> Tuple[Optional[float], Optional[float]]:
    """Mean and population std of the judges' values that are defined (None where none is)."""
    defined = np.array([v for v in values if v is not None], dtype=np.float64)
    if not len(defined):
        return None, None
    return float(defined.mean()), float(defined.std())


def _as_panel(judges: Union[ModelLike, Sequence[ModelLike]]) -> List[ModelLike]:
    """``judges`` as a non-empty list: one model given alone is a panel of one."""
    if isinstance(judges, (nn.Module, EstimatorModule)) or not isinstance(judges, (list, tuple)):
        judges = [judges]
    if not judges:
        raise ValueError("judges is empty: give at least one evaluation model")
    return list(judges)


def _training_images(private_images: torch.Tensor, private_labels: np.ndarray, train_x: Optional[ArrayLike],
                     train_y: Optional[ArrayLike]) -> Tuple[torch.Tensor, np.ndarray]:
    """The private training images and their identities, checked: ``train_x``/``train_y`` (given together), else
    all the private images."""
    if (train_x is None) != (train_y is None):
        raise ValueError("give train_x and train_y together (the private training images and their identities), "
                         "or neither")
    train_images = private_images if train_x is None else checked_images(train_x, "train_x")
    train_labels = private_labels if train_y is None else np.asarray(train_y)
    if len(train_labels) != len(train_images):
        raise ValueError(f"train_y has {len(train_labels)} labels for {len(train_images)} images in train_x")
    return train_images, train_labels


def _of_identities(images: torch.Tensor, labels: np.ndarray, identities: np.ndarray) -> torch.Tensor:
    """The images whose label is one of ``identities``."""
    return images[torch.from_numpy(np.isin(labels, identities))]


def _judge_figures(judge: ModelLike, index: int, num_classes: Optional[int], images: torch.Tensor,
                   labels: np.ndarray, private_images: torch.Tensor, private_labels: np.ndarray,
                   real: torch.Tensor, train_real: torch.Tensor, *, rec_index: Optional[ArrayLike],
                   top_k: Sequence[int], batch_size: int) -> Tuple[Dict[str, Any], np.ndarray, np.ndarray]:
    """One judge's figures of the reconstructions (:func:`attack_accuracy`'s, None for Acc@k not applicable;
    ``knn_dist``; ``fid_eval_features`` of its successes against ``real``; :func:`prdc` against
    ``train_real``), with its per-reconstruction top-1 hits and KNN distances. ``num_classes``: the panel's
    (its first judge's), which this judge, ``judges[index]``, must have; None for the first."""
    acc = attack_accuracy(judge, images, labels, rec_index=rec_index, top_k=top_k, batch_size=batch_size)
    if num_classes is not None and acc["num_classes"] != num_classes:
        raise ValueError(f"judges[{index}] has {acc['num_classes']} classes, judges[0] {num_classes}: "
                         "every judge must classify the same private identities")
    for k in top_k:
        if not topk_applicable(k, acc["num_classes"]):
            acc[f"acc@{k}"] = acc[f"acc@{k}_std"] = None
    success = acc["per_sample_top1"]
    knn = knn_distance(judge, images, labels, private_images, private_labels, batch_size=batch_size)
    acc["knn_dist"] = knn["knn_dist"]
    acc["fid_eval_features"] = (fid_eval_features(judge, images[torch.from_numpy(success)], real,
                                                  batch_size=batch_size) if success.sum() >= 2 else None)
    features = PenultimateFeatures(judge, batch_size=batch_size)
    with torch.no_grad():
        acc.update(prdc(features(train_real), features(images)))
    return acc, success, knn["per_sample"]


def _panel_means(per_judge: List[Dict[str, Any]], top_k: Sequence[int]) -> Dict[str, Any]:
    """The panel's figures from its judges': their number, the classes and chance levels, the spread over rounds
    averaged, and for Acc@k and every other metric declared judged by the panel that the judges computed, the
    mean, the std over judges and each judge's value."""
    out: Dict[str, Any] = {"n_judges": len(per_judge), "num_classes": per_judge[0]["num_classes"]}
    for k in top_k:
        out[f"chance@{k}"] = per_judge[0][f"chance@{k}"]
        out[f"acc@{k}_std"] = _mean_over_judges([j[f"acc@{k}_std"] for j in per_judge])[0]
    judged = [m for m in PANEL_METRICS if not m.startswith("acc@") and m in per_judge[0]]
    for metric in [f"acc@{k}" for k in top_k] + judged:
        values = [j[metric] for j in per_judge]
        out[metric], out[f"{metric}_judge_std"] = _mean_over_judges(values)
        out[f"{metric}_judges"] = values
    return out


def judge_panel(judges: Sequence[ModelLike], x: ArrayLike, y: ArrayLike, private_x: ArrayLike, private_y: ArrayLike,
                *, rec_index: Optional[ArrayLike] = None, top_k: Sequence[int] = (1, 5), batch_size: int = 256,
                train_x: Optional[ArrayLike] = None, train_y: Optional[ArrayLike] = None) -> Dict[str, Any]:
    """Attack accuracy, KNN distance, FID and precision / recall / density / coverage judged by several
    independently trained evaluation models, and their mean; and the figures of each attacked identity.

    One judge is itself a draw: on AT&T faces three judges of one recipe, with the same held-out
    accuracy, scored the same reconstructions far apart (``benchmarks/results/attack_variants.md``). A panel
    averages that draw out and measures it.

    Parameters
    ----------
    judges : sequence of ART PyTorch estimators or nn.Modules
        The evaluation models (at least one), all with the same classes.
    x, y, rec_index, top_k, batch_size
        As for :func:`attack_accuracy`.
    private_x, private_y : arrays
        Private images (all splits) and their identities, as for :func:`knn_distance`; the FID's real
        images are those of the attacked identities.
    train_x, train_y : arrays, optional
        The private *training* images and their identities: :func:`prdc`'s real images are those of the
        attacked identities, and each identity's row counts them (default: ``private_x``, ``private_y``).

    Returns
    -------
    dict
        For every metric ``m`` (``acc@k`` for each ``k`` of ``top_k``, ``knn_dist``, ``fid_eval_features``:
        :data:`PANEL_METRICS` with the default ``top_k``): ``m``, the mean over judges; ``m + "_judges"``,
        each judge's value; ``m + "_judge_std"``, the population std over judges. ``"acc@k_std"`` is the
        spread over reconstruction rounds (:func:`attack_accuracy`), averaged over judges. Acc@k with
        ``k`` at or above the number of classes is None (not applicable, :func:`topk_applicable`); FID is
        None for a judge that accepts fewer than 2 reconstructions, and the mean is over the judges
        where it is defined. ``precision``, ``recall``, ``density``, ``coverage`` (:func:`prdc`, k = 5) compare
        all the reconstructions with the training images of the attacked identities in each judge's feature
        space. Also ``"chance@k"``, ``"num_classes"`` and ``"n_judges"``; and ``"per_identity"``
        (:func:`per_identity_figures`): per attacked identity, its reconstructions' Acc@1 and KNN distance
        (means over judges) and its number of training images.

    Raises
    ------
    ValueError
        On an empty panel, judges with different numbers of classes, or any error of the metrics.
    """
    judges = _as_panel(judges)
    images = checked_images(x, "x")
    labels = np.asarray(y)
    private_images = checked_images(private_x, "private_x")
    private_labels = np.asarray(private_y)
    train_images, train_labels = _training_images(private_images, private_labels, train_x, train_y)
    attacked = np.unique(labels)
    real = _of_identities(private_images, private_labels, attacked)
    train_real = _of_identities(train_images, train_labels, attacked)
    per_judge, hits, distances = _each_judges_figures(judges, images, labels, private_images, private_labels, real,
                                                      train_real, rec_index=rec_index, top_k=top_k,
                                                      batch_size=batch_size)
    out = _panel_means(per_judge, top_k)
    out["per_identity"] = per_identity_figures(labels, {"acc@1": np.mean(hits, axis=0),
                                                        "knn_dist": np.mean(distances, axis=0)}, train_labels)
    return out


def _each_judges_figures(judges: List[ModelLike], images: torch.Tensor, labels: np.ndarray,
                         private_images: torch.Tensor, private_labels: np.ndarray, real: torch.Tensor,
                         train_real: torch.Tensor, **options: Any
                         ) -> Tuple[List[Dict[str, Any]], List[np.ndarray], List[np.ndarray]]:
    """Every judge's figures (:func:`_judge_figures`, each judge held to the first one's classes), with its
    per-reconstruction top-1 hits (as floats) and KNN distances."""
    per_judge: List[Dict[str, Any]] = []
    hits, distances = [], []
    for i, judge in enumerate(judges):
        figures, success, knn_per_sample = _judge_figures(
            judge, i, per_judge[0]["num_classes"] if per_judge else None, images, labels, private_images,
            private_labels, real, train_real, **options)
        hits.append(success.astype(np.float64))
        distances.append(knn_per_sample)
        per_judge.append(figures)
    return per_judge, hits, distances
