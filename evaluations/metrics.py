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

Each metric is in a module of its own, and every name is importable from here: attack accuracy and chance levels
(:mod:`~mi_art.evaluations.accuracy`), the KNN distance (:mod:`~mi_art.evaluations.knn`), FID and PRDC
(:mod:`~mi_art.evaluations.distributions`), the panel of judges and the per-identity figures
(:mod:`~mi_art.evaluations.panel`); what they take, :mod:`~mi_art.evaluations.metric_inputs`.
"""
from __future__ import annotations

from mi_art.predictions import natural_accuracy, predict_logits

from .accuracy import attack_accuracy, chance_level, topk_applicable
from .distributions import (PRDC_K, PRDC_MAX_SAMPLES, PRDC_METRICS, PenultimateFeatures, fid,  # noqa: F401
                            fid_eval_features, prdc)
from .knn import knn_distance
from .metric_inputs import ArrayLike, DeviceLike, ModelLike  # noqa: F401 - the metrics' input types, named here too
from .panel import PANEL_METRICS, judge_panel, per_identity_figures

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
