"""How the reconstructions are distributed against the real private images in a feature space: the Fréchet
distance (:func:`fid`, :func:`fid_eval_features` on the judge's penultimate features) and precision, recall,
density and coverage (:func:`prdc`) (:mod:`mi_art.evaluations.metrics`)."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

from mi_art.features import extract_features, penultimate_layer
from mi_art.utils import as_module, device_for, eval_mode
from mi_art.validation import check_count

from .metric_inputs import ArrayLike, DeviceLike, ModelLike, checked_images


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


def fid(fake_x: ArrayLike, real_x: ArrayLike, *misplaced: Any, feature_extractor: Optional[nn.Module] = None,
        batch_size: int = 256, device: DeviceLike = None) -> float:
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

    _check_fid_call(fake_x, misplaced, feature_extractor)
    check_count("batch_size", batch_size)
    fake = checked_images(fake_x, "fake_x")
    real = checked_images(real_x, "real_x")
    for name, imgs in (("fake_x", fake), ("real_x", real)):
        if len(imgs) < 2:
            raise ValueError(f"FID needs at least 2 images on each side; {name} has {len(imgs)}")
    if not isinstance(feature_extractor, nn.Module):
        raise ValueError(f"feature_extractor must be a torch nn.Module, got {type(feature_extractor).__name__}")
    adapter = _FidFeatureAdapter(feature_extractor, device_for(feature_extractor, device), real[:1])
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


def _check_fid_call(fake_x: Any, misplaced: Tuple[Any, ...], feature_extractor: Optional[nn.Module]) -> None:
    """:func:`fid` takes the images first and the extractor by name; a model first (as the other metrics take
    it) is pointed to :func:`fid_eval_features`."""
    if misplaced or isinstance(fake_x, nn.Module) or hasattr(fake_x, "predict") or feature_extractor is None:
        raise ValueError("fid(fake_x, real_x, feature_extractor=...) takes the images first; for the FID on a "
                         "model's features, model first as every other metric, use fid_eval_features(model, "
                         "fake_x, real_x)")


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
