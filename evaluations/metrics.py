"""Metrics of the model inversion protocol (GMI, KEDMI, LOMMA).

Every figure is judged by an evaluation model ``E``: a classifier trained on the private data only,
never attacked and never used in an attack loss. The metrics are

* attack accuracy (Acc@1, Acc@5): share of reconstructions that ``E`` classifies as the attacked
  identity, reported as mean +- std over reconstruction rounds, beside its chance level (a judge
  guessing uniformly among its ``K`` classes scores ``min(k, K) / K`` at Acc@k). Acc@k with ``k >= K``
  is 1 whatever the reconstructions are: it is not applicable (see :func:`topk_applicable`);
* KNN distance: squared L2 distance, in ``E``'s penultimate feature space, from each reconstruction
  to the nearest private image of the same identity;
* FID between reconstructions and private images. Inception weights cannot be downloaded here, so
  :func:`fid_eval_features` computes it on ``E``'s penultimate features (name it so when reporting);
  :func:`fid` accepts any feature extractor, Inception included;
* precision, recall, density and coverage (Naeem et al., "Reliable Fidelity and Diversity Metrics for
  Generative Models", ICML 2020, https://arxiv.org/abs/2002.09797) of the reconstructions against the
  private training images of the attacked identities, on ``E``'s penultimate features (:func:`prdc`);
* per identity (:func:`per_identity_figures`): Acc@1 and KNN distance of each attacked identity's
  reconstructions, with its number of private training images: who is exposed;
* natural (test) accuracy of a classifier: the utility side of every defense trade-off.

Models are ART PyTorch estimators (``PyTorchClassifier``) or ``torch.nn.Module``. Images are float
arrays or tensors in the model's input space: for an estimator, what its ``predict`` takes (its
``clip_values`` range, its layout); its ``preprocessing`` is applied exactly as ``predict`` applies it,
through :class:`mi_art.utils.EstimatorModule`, the one place where images meet a model (a metric given
the estimator equals the metric computed on ``predict``; output postprocessors are not applied). A bare
module takes ``(N, C, H, W)`` images in ``[0, 1]``. Labels are integer class indices. A model returns
logits (or probabilities: only their ranking is used); ``output_index`` picks them out of a tuple or
dict output. The penultimate feature is the input of the model's last ``nn.Linear``, or of the module
named by ``feature_layer`` (see :mod:`mi_art.features`).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors
from torch import nn

from mi_art.features import extract_features, penultimate_layer
from mi_art.predictions import check_model_labels, natural_accuracy, predict_logits
from mi_art.quality import warn_weak, weak_model_warnings
from mi_art.utils import EstimatorModule, as_module, device_for, eval_mode
from mi_art.validation import check_count, check_images, check_index_vector

from .metric_facts import metric_names

__all__ = [
    "predict_logits",
    "attack_accuracy",
    "chance_level",
    "topk_applicable",
    "knn_distance",
    "fid",
    "fid_eval_features",
    "natural_accuracy",
    "judge_panel",
    "per_identity_figures",
    "prdc",
    "PANEL_METRICS",
    "PRDC_METRICS",
    "PenultimateFeatures",
]

ArrayLike = Union[np.ndarray, torch.Tensor]
DeviceLike = Optional[Union[str, torch.device]]
#: an ART PyTorch estimator or a ``torch.nn.Module``
ModelLike = Any


# --------------------------------------------------------------------------------------------------
# Input validation helpers
# --------------------------------------------------------------------------------------------------
def _check_images(x: ArrayLike, name: str = "x") -> torch.Tensor:
    """``x`` checked by the shared :func:`~mi_art.validation.check_images`, as a float32 CPU tensor."""
    return torch.as_tensor(check_images(x, name))


# --------------------------------------------------------------------------------------------------
# Predictions and accuracies
# --------------------------------------------------------------------------------------------------
def attack_accuracy(
    model: ModelLike,
    x: ArrayLike,
    y: ArrayLike,
    *,
    rec_index: Optional[ArrayLike] = None,
    top_k: Sequence[int] = (1, 5),
    batch_size: int = 256,
    device: DeviceLike = None,
    output_index: Any = None,
    test_x: Optional[ArrayLike] = None,
    test_y: Optional[ArrayLike] = None,
    target: ModelLike = None,
    target_defended: bool = False,
) -> Dict[str, Any]:
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
    images = _check_images(x, "x")
    n = len(images)
    check_index_vector("y", y, length=n, length_name="x", low=None)  # before the forward passes
    ks = _check_top_k(top_k)
    rounds = None if rec_index is None else check_index_vector("rec_index", rec_index, length=n, length_name="x")
    if (test_x is None) != (test_y is None):
        raise ValueError("give test_x and test_y together (held-out private images and their labels), or neither")
    if target is not None and test_x is None:
        raise ValueError("target's accuracy is measured on test_x and test_y: give them too")
    logits = predict_logits(model, images, batch_size=batch_size, device=device, output_index=output_index)
    num_classes = logits.shape[1]
    labels = check_model_labels(y, num_classes, length=n)

    attacked = torch.as_tensor(labels)
    max_k = min(max(ks), num_classes)
    ranked = logits.topk(max_k, dim=1).indices  # (N, max_k), best first
    hits = ranked == attacked[:, None]  # at most one True per row
    if rounds is None:
        rounds = np.zeros(n, dtype=np.int64)
    round_ids = np.unique(rounds)

    result: Dict[str, Union[float, np.ndarray]] = {}
    for k in ks:
        k_eff = min(k, num_classes)
        correct = hits[:, :k_eff].any(dim=1).numpy()
        per_round = np.array([correct[rounds == r].mean() for r in round_ids], dtype=np.float64)
        result[f"acc@{k}"] = float(per_round.mean())
        result[f"acc@{k}_std"] = float(per_round.std())
        result[f"chance@{k}"] = chance_level(k, num_classes)
    result["num_classes"] = int(num_classes)
    result["per_sample_top1"] = hits[:, 0].numpy().astype(bool)
    if test_x is not None:
        result.update(_weak_models(model, test_x, test_y, num_classes, target, target_defended,
                                   batch_size=batch_size, device=device, output_index=output_index))
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


# --------------------------------------------------------------------------------------------------
# KNN distance
# --------------------------------------------------------------------------------------------------
def knn_distance(
    model: ModelLike,
    x: ArrayLike,
    y: ArrayLike,
    private_x: ArrayLike,
    private_y: ArrayLike,
    *,
    batch_size: int = 256,
    device: DeviceLike = None,
    feature_layer: Optional[str] = None,
    output_index: Any = None,
) -> Dict[str, Union[float, np.ndarray]]:
    """KNN distance: squared L2 distance, in ``E``'s penultimate feature space, from every
    reconstruction to the nearest private image of the same identity.

    Parameters
    ----------
    model : ART PyTorch estimator or nn.Module
        Evaluation model ``E``; its penultimate feature is the input of its last ``nn.Linear`` or of
        ``feature_layer``.
    x : np.ndarray or torch.Tensor
        Reconstructions in ``E``'s input space.
    y : array-like of int
        Attacked identity of every reconstruction, shape ``(N,)``.
    private_x : np.ndarray or torch.Tensor
        Private images in ``E``'s input space.
    private_y : array-like of int
        Identity of every private image, shape ``(M,)``.
    batch_size : int, default 256
        Images per forward pass.
    device : str or torch.device, optional
        Where ``E`` runs; defaults to the model's device.
    feature_layer : str, optional
        Name of the module whose input is ``E``'s penultimate feature (default: its last ``nn.Linear``).
    output_index : int or str, optional
        Position (tuple output) or key (dict output) of ``E``'s logits.

    Returns
    -------
    dict
        ``"knn_dist"``: mean over reconstructions; ``"knn_dist_std"``: population std over
        reconstructions; ``"per_sample"``: float64 array of shape ``(N,)``. Lower is closer.

    Raises
    ------
    ValueError
        On empty input, wrong ndim, NaN in images, length mismatch, labels outside the model's outputs,
        or an identity in ``y`` without any private image.
    """
    check_count("batch_size", batch_size)
    images = _check_images(x, "x")
    private = _check_images(private_x, "private_x")
    view = as_module(model, "model", output_index=output_index)
    num_classes = predict_logits(view, images[:1], device=device).shape[1]
    labels = check_model_labels(y, num_classes, length=len(images))
    private_labels = check_model_labels(private_y, num_classes, "private_y", length=len(private),
                                        length_name="private_x")
    missing = sorted(set(np.unique(labels).tolist()) - set(np.unique(private_labels).tolist()))
    if missing:
        raise ValueError(
            f"no private image for identity {missing[0]}" + (f" (nor for {missing[1:]})" if len(missing) > 1 else "")
            + ": the KNN distance needs private images of every attacked identity"
        )
    device = device_for(view, device)
    attacked = np.isin(private_labels, labels)  # the other identities' images can be nobody's nearest
    private, private_labels = private[torch.from_numpy(attacked)], private_labels[attacked]
    with eval_mode(view):
        feats = extract_features(view, images, batch_size, device, layer=feature_layer).double().numpy()
        private_feats = extract_features(view, private, batch_size, device, layer=feature_layer).double().numpy()

    per_sample = np.empty(len(images), dtype=np.float64)
    for identity in np.unique(labels):
        rec_mask = labels == identity
        ref = private_feats[private_labels == identity]
        nn_index = NearestNeighbors(n_neighbors=1).fit(ref).kneighbors(feats[rec_mask], return_distance=False)
        nearest = ref[nn_index[:, 0]]
        # recompute the squared distance exactly rather than squaring sklearn's rounded square root
        per_sample[rec_mask] = ((feats[rec_mask] - nearest) ** 2).sum(axis=1)
    return {
        "knn_dist": float(per_sample.mean()),
        "knn_dist_std": float(per_sample.std()),
        "per_sample": per_sample,
    }


# --------------------------------------------------------------------------------------------------
# FID
# --------------------------------------------------------------------------------------------------
class PenultimateFeatures(nn.Module):
    """Feature extractor mapping images to a classifier's penultimate feature (the input of its last
    ``nn.Linear``, or of ``feature_layer``), for FID on the evaluation model's features.

    Parameters
    ----------
    model : ART PyTorch estimator or nn.Module
        The classifier (typically the evaluation model ``E``).
    batch_size : int, default 256
        Images per forward pass.
    device : str or torch.device, optional
        Where the model runs; defaults to the model's device.
    feature_layer : str, optional
        Name of the module whose input is the penultimate feature (default: the last ``nn.Linear``).
    output_index : int or str, optional
        Position (tuple output) or key (dict output) of the logits.

    Notes
    -----
    Inputs are float images in the model's input space and pass through unchanged (no rescaling to
    ``uint8``); an estimator's preprocessing is applied. Features come back on the CPU, shape ``(N, D)``.
    """

    def __init__(self, model: ModelLike, batch_size: int = 256, device: DeviceLike = None,
                 feature_layer: Optional[str] = None, output_index: Any = None) -> None:
        super().__init__()
        check_count("batch_size", batch_size)
        self.model = as_module(model, "model", output_index=output_index)
        self.batch_size = int(batch_size)
        self.device = device_for(self.model, device)
        self.feature_layer = feature_layer
        penultimate_layer(self.model, feature_layer)  # a wrong name fails here, not inside torchmetrics

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return extract_features(self.model, x, batch_size=self.batch_size, device=self.device,
                                layer=self.feature_layer)


class _FidFeatureAdapter(nn.Module):
    """Wraps a feature extractor for torchmetrics: eval mode, no gradients, device placement,
    ``(N, D)`` float64 output on the CPU, and an integer ``num_features`` so that torchmetrics does not
    probe the extractor with a random ``(1, 3, 299, 299)`` image."""

    def __init__(self, extractor: nn.Module, device: torch.device, probe: torch.Tensor) -> None:
        super().__init__()
        self.extractor = extractor
        self.device = device
        self.num_features = int(self.forward(probe).shape[1])

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with eval_mode(self.extractor):
            feats = self.extractor(x.to(self.device))
        if not isinstance(feats, torch.Tensor):
            raise ValueError(f"feature_extractor must return a tensor, got {type(feats).__name__}")
        feats = feats.detach().reshape(len(x), -1).to("cpu", torch.float64)
        if not bool(torch.isfinite(feats).all()):
            raise ValueError("feature_extractor returned NaN or infinite features")
        return feats


def fid(
    fake_x: ArrayLike,
    real_x: ArrayLike,
    *misplaced: Any,
    feature_extractor: Optional[nn.Module] = None,
    batch_size: int = 256,
    device: DeviceLike = None,
) -> float:
    """Fréchet distance between the feature distributions of two image sets.

    Computed by ``torchmetrics.image.fid.FrechetInceptionDistance`` with ``feature_extractor`` as its
    feature network; statistics are accumulated in float64. Pass an Inception network for the
    standard FID, or see :func:`fid_eval_features` for the evaluation model's features.

    Parameters
    ----------
    fake_x : np.ndarray or torch.Tensor
        Generated images (e.g. successful reconstructions) ``(N, C, H, W)``, float in ``[0, 1]``.
    real_x : np.ndarray or torch.Tensor
        Real images (e.g. private images of the attacked identities) ``(M, C, H, W)``.
    feature_extractor : nn.Module
        Maps a float image batch (values in ``[0, 1]``, passed unchanged) to features ``(batch, D)``
        (other output shapes are flattened per sample). Run in eval mode without gradients.
    batch_size : int, default 256
        Images per call of the extractor.
    device : str or torch.device, optional
        Where the extractor runs; defaults to its parameters' device (CPU if it has none).

    Returns
    -------
    float
        The FID, clamped at 0 (tiny negative values come from numerics).

    Raises
    ------
    ValueError
        On wrong ndim, NaN in images, or fewer than 2 images on either side.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    if misplaced or isinstance(fake_x, nn.Module) or hasattr(fake_x, "predict") or feature_extractor is None:
        raise ValueError("fid(fake_x, real_x, feature_extractor=...) takes the images first; for the FID on a "
                         "model's features, model first as every other metric, use fid_eval_features(model, "
                         "fake_x, real_x)")
    check_count("batch_size", batch_size)
    fake = _check_images(fake_x, "fake_x")
    real = _check_images(real_x, "real_x")
    for name, imgs in (("fake_x", fake), ("real_x", real)):
        if len(imgs) < 2:
            raise ValueError(f"FID needs at least 2 images on each side; {name} has {len(imgs)}")
    if not isinstance(feature_extractor, nn.Module):
        raise ValueError(f"feature_extractor must be a torch nn.Module, got {type(feature_extractor).__name__}")
    device = device_for(feature_extractor, device)
    adapter = _FidFeatureAdapter(feature_extractor, device, real[:1])
    # normalize=True: float images are expected; with a custom feature network torchmetrics passes them
    # through unchanged (no conversion to uint8).
    metric = FrechetInceptionDistance(feature=adapter, normalize=True, reset_real_features=True)
    for imgs, is_real in ((real, True), (fake, False)):
        for start in range(0, len(imgs), batch_size):
            metric.update(imgs[start:start + batch_size], real=is_real)
    value = float(metric.compute().item())
    if np.isnan(value):
        raise ValueError("FID is NaN: the feature statistics are degenerate")
    return max(value, 0.0)


def fid_eval_features(
    model: ModelLike,
    fake_x: ArrayLike,
    real_x: ArrayLike,
    *,
    batch_size: int = 256,
    device: DeviceLike = None,
    feature_layer: Optional[str] = None,
    output_index: Any = None,
) -> float:
    """FID on the evaluation model's penultimate features (key ``"fid_eval_features"``).

    The offline substitute for Inception-based FID: Inception weights cannot be downloaded here, so
    the features are those of ``E`` (input of its last ``nn.Linear``). Values are not comparable with
    published Inception FIDs; report them under this name.

    Parameters
    ----------
    model : ART PyTorch estimator or nn.Module
        Evaluation model ``E``.
    fake_x : np.ndarray or torch.Tensor
        Reconstructions in ``E``'s input space.
    real_x : np.ndarray or torch.Tensor
        Private images of the attacked identities, in ``E``'s input space.
    batch_size : int, default 256
        Images per forward pass.
    device : str or torch.device, optional
        Where ``E`` runs; defaults to the model's device.
    feature_layer : str, optional
        Name of the module whose input is ``E``'s penultimate feature (default: its last ``nn.Linear``).
    output_index : int or str, optional
        Position (tuple output) or key (dict output) of ``E``'s logits.

    Returns
    -------
    float
        The FID in ``E``'s feature space, clamped at 0.

    Raises
    ------
    ValueError
        On wrong ndim, NaN in images, fewer than 2 images on either side, or a model without ``nn.Linear``
        and no ``feature_layer``.
    """
    extractor = PenultimateFeatures(model, batch_size=batch_size, device=device, feature_layer=feature_layer,
                                    output_index=output_index)
    return fid(fake_x, real_x, feature_extractor=extractor, batch_size=batch_size, device=extractor.device)


# --------------------------------------------------------------------------------------------------
# Precision, recall, density, coverage
# --------------------------------------------------------------------------------------------------
#: The four figures of :func:`prdc`, in its order.
PRDC_METRICS = ("precision", "recall", "density", "coverage")
#: The k of the k-nearest-neighbour balls (Naeem et al. use 5).
PRDC_K = 5
#: At most this many features a side (a seeded sample beyond): the pairwise distances grow as the product.
PRDC_MAX_SAMPLES = 5000


def _pairwise_distances(a: np.ndarray, b: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Euclidean distances ``(len(a), len(b))`` in float64, a block of rows at a time."""
    b_sq = (b ** 2).sum(1)
    out = np.empty((len(a), len(b)))
    for start in range(0, len(a), chunk):
        rows = a[start:start + chunk]
        sq = (rows ** 2).sum(1)[:, None] + b_sq[None, :] - 2.0 * rows @ b.T
        out[start:start + chunk] = np.sqrt(np.maximum(sq, 0.0))
    return out


def _kth_neighbour_radii(features: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Distance from each point to its ``k``-th nearest other point (the point itself, at 0, not counted)."""
    return np.concatenate([np.partition(_pairwise_distances(features[start:start + chunk], features), k, axis=1)[:, k]
                           for start in range(0, len(features), chunk)])


def _at_most(features: np.ndarray, n: int, seed: int) -> np.ndarray:
    if len(features) <= n:
        return features
    return features[np.sort(np.random.default_rng(seed).choice(len(features), n, replace=False))]


def prdc(real_features: ArrayLike, fake_features: ArrayLike, *, k: int = PRDC_K,
         max_samples: int = PRDC_MAX_SAMPLES, seed: int = 0) -> Dict[str, Optional[float]]:
    """Precision, recall, density and coverage of ``fake_features`` against ``real_features`` (Naeem et al.,
    "Reliable Fidelity and Diversity Metrics for Generative Models", ICML 2020,
    https://arxiv.org/abs/2002.09797), exactly as their reference code (``prdc``) computes them.

    Around every real point a ball reaches its ``k``-th nearest real neighbour (radius ``r_i``), around every
    fake point its ``k``-th nearest fake neighbour (``s_j``); distances are Euclidean, comparisons strict:

    * precision: share of fake points inside some real ball (fidelity: how many reconstructions look real);
    * recall: share of real points inside some fake ball (diversity: how much of the real set is reached);
    * density: the real balls containing each fake point, averaged over fake points and divided by ``k``
      (about 1 for a fake set distributed as the real one; above 1 where fakes crowd round real points);
    * coverage: share of real points whose ball contains a fake point.

    Higher is closer to the real images for all four (density is not bounded by 1). Features are rows of
    ``(N, D)`` arrays; a side with more than ``max_samples`` rows is subsampled (seeded by ``seed``).

    Returns
    -------
    dict
        ``"precision"``, ``"recall"``, ``"density"``, ``"coverage"``: floats; None where a side has ``k`` or
        fewer points (no ``k``-th neighbour): precision, density and coverage need ``k + 1`` real points,
        recall ``k + 1`` fake points.

    Raises
    ------
    ValueError
        On features that are not finite 2-D arrays of the same width, or a non-positive ``k``.
    """
    k = check_count("k", k)
    check_count("max_samples", max_samples)
    sides = []
    for name, value in (("real_features", real_features), ("fake_features", fake_features)):
        arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
            raise ValueError(f"{name} must be a finite 2-D array of features (N, D), got shape {arr.shape}")
        sides.append(_at_most(arr.astype(np.float64), max_samples, seed))
    real, fake = sides
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real_features and fake_features must have the same width, got {real.shape[1]} and "
                         f"{fake.shape[1]}")
    out: Dict[str, Optional[float]] = dict.fromkeys(PRDC_METRICS)
    if not len(fake) or not len(real):
        return out
    cross = _pairwise_distances(real, fake)  # (real, fake)
    if len(real) > k:
        radii = _kth_neighbour_radii(real, k)
        inside = cross < radii[:, None]
        out["precision"] = float(inside.any(axis=0).mean())
        out["density"] = float(inside.sum(axis=0).mean() / k)
        out["coverage"] = float((cross.min(axis=1) < radii).mean())
    if len(fake) > k:
        out["recall"] = float((cross < _kth_neighbour_radii(fake, k)[None, :]).any(axis=1).mean())
    return out


# --------------------------------------------------------------------------------------------------
# Per identity
# --------------------------------------------------------------------------------------------------
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
    train_images = private_images if train_x is None else _check_images(train_x, "train_x")
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


def judge_panel(
    judges: Sequence[ModelLike],
    x: ArrayLike,
    y: ArrayLike,
    private_x: ArrayLike,
    private_y: ArrayLike,
    *,
    rec_index: Optional[ArrayLike] = None,
    top_k: Sequence[int] = (1, 5),
    batch_size: int = 256,
    train_x: Optional[ArrayLike] = None,
    train_y: Optional[ArrayLike] = None,
) -> Dict[str, Any]:
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
    images = _check_images(x, "x")
    labels = np.asarray(y)
    private_images = _check_images(private_x, "private_x")
    private_labels = np.asarray(private_y)
    train_images, train_labels = _training_images(private_images, private_labels, train_x, train_y)
    attacked = np.unique(labels)
    real = _of_identities(private_images, private_labels, attacked)
    train_real = _of_identities(train_images, train_labels, attacked)
    per_judge: List[Dict[str, Any]] = []
    hits, distances = [], []
    for i, judge in enumerate(judges):
        figures, success, knn_per_sample = _judge_figures(
            judge, i, per_judge[0]["num_classes"] if per_judge else None, images, labels, private_images,
            private_labels, real, train_real, rec_index=rec_index, top_k=top_k, batch_size=batch_size)
        hits.append(success.astype(np.float64))
        distances.append(knn_per_sample)
        per_judge.append(figures)
    out = _panel_means(per_judge, top_k)
    out["per_identity"] = per_identity_figures(labels, {"acc@1": np.mean(hits, axis=0),
                                                        "knn_dist": np.mean(distances, axis=0)}, train_labels)
    return out
