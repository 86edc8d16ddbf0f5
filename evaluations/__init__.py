"""Model inversion evaluation metrics: attack accuracy, KNN distance, FID and natural accuracy."""
from mi_art.evaluations.metrics import (
    PenultimateFeatures,
    attack_accuracy,
    fid,
    fid_eval_features,
    knn_distance,
    natural_accuracy,
    predict_logits,
)

__all__ = [
    "predict_logits",
    "attack_accuracy",
    "knn_distance",
    "fid",
    "fid_eval_features",
    "natural_accuracy",
    "PenultimateFeatures",
]
