"""KNN distance: how close each reconstruction comes to a private image of its identity, in the judge's
penultimate feature space (:mod:`mi_art.evaluations.metrics`)."""
from __future__ import annotations

from typing import Any, Dict, Optional, Union

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors

from mi_art.features import extract_features
from mi_art.predictions import check_model_labels, predict_logits
from mi_art.utils import as_module, device_for, eval_mode
from mi_art.validation import check_count

from .metric_inputs import ArrayLike, DeviceLike, ModelLike, checked_images


def knn_distance(model: ModelLike, x: ArrayLike, y: ArrayLike, private_x: ArrayLike, private_y: ArrayLike, *,
                 batch_size: int = 256, device: DeviceLike = None, feature_layer: Optional[str] = None,
                 output_index: Any = None) -> Dict[str, Union[float, np.ndarray]]:
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
    images = checked_images(x, "x")
    private = checked_images(private_x, "private_x")
    view = as_module(model, "model", output_index=output_index)
    num_classes = predict_logits(view, images[:1], device=device).shape[1]
    labels = check_model_labels(y, num_classes, length=len(images))
    private_labels = check_model_labels(private_y, num_classes, "private_y", length=len(private),
                                        length_name="private_x")
    _check_every_identity_has_private_images(labels, private_labels)
    device = device_for(view, device)
    attacked = np.isin(private_labels, labels)  # the other identities' images can be nobody's nearest
    private, private_labels = private[torch.from_numpy(attacked)], private_labels[attacked]
    with eval_mode(view):
        feats = extract_features(view, images, batch_size, device, layer=feature_layer).double().numpy()
        private_feats = extract_features(view, private, batch_size, device, layer=feature_layer).double().numpy()
    per_sample = _nearest_squared_distances(feats, labels, private_feats, private_labels)
    return {"knn_dist": float(per_sample.mean()), "knn_dist_std": float(per_sample.std()), "per_sample": per_sample}


def _check_every_identity_has_private_images(labels: np.ndarray, private_labels: np.ndarray) -> None:
    missing = sorted(set(np.unique(labels).tolist()) - set(np.unique(private_labels).tolist()))
    if missing:
        raise ValueError(
            f"no private image for identity {missing[0]}" + (f" (nor for {missing[1:]})" if len(missing) > 1 else "")
            + ": the KNN distance needs private images of every attacked identity"
        )


def _nearest_squared_distances(feats: np.ndarray, labels: np.ndarray, private_feats: np.ndarray,
                               private_labels: np.ndarray) -> np.ndarray:
    """For every feature row of ``feats``, the squared L2 distance to the nearest private one of its identity."""
    per_sample = np.empty(len(feats), dtype=np.float64)
    for identity in np.unique(labels):
        rec_mask = labels == identity
        ref = private_feats[private_labels == identity]
        nn_index = NearestNeighbors(n_neighbors=1).fit(ref).kneighbors(feats[rec_mask], return_distance=False)
        nearest = ref[nn_index[:, 0]]
        # recompute the squared distance exactly rather than squaring sklearn's rounded square root
        per_sample[rec_mask] = ((feats[rec_mask] - nearest) ** 2).sum(axis=1)
    return per_sample
