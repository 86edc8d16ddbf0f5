"""A judge we did not train: a public pretrained face recogniser's embedding scores the reconstructions.

The trained judges (:func:`~mi_art.evaluations.metrics.judge_panel`) are classifiers of the library's own
recipe, trained on the private images: attacks overfit to such judges, whose false positives transfer
between models of one recipe. An embedding judge is trained on nothing here. dlib's face recogniser
(:mod:`mi_art.face_recognizer`, ~3 million faces of 7,485 identities, none of LFW) maps each image to a 128-D
descriptor; a reconstruction of identity ``k`` counts as recognised (Acc@1) when the nearest of the private
identities' centroids (each the mean descriptor of that identity's private *training* images) is ``k``'s, and
within the top 5 for Acc@5. Beside it, the distance from each reconstruction to the nearest training image of
its identity in that embedding (dlib's same-person threshold is 0.6).

Its own accuracy on the real private *test* images, at the attack's resolution (the recogniser upsamples
32 px images to its 150 px inside), says how competent it is at that size; it is reported in every record.

It is never averaged into the trained panel. It is independent of a target only when it shares nothing with
it: a target built on the same recogniser (``dlib-head``, ``dlib-finetune``) is optimised in exactly that
embedding, so the record then says what is shared and calls the judge not independent.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from mi_art.face_recognizer import DlibResNet, load_dlib_face_recognizer
from mi_art.utils import resolve_device
from mi_art.validation import check_images, check_labels

#: ``independent_judge`` settings: "auto" (dlib's recogniser for face data when its weights are installed),
#: "dlib", "none".
INDEPENDENT_JUDGES = ("auto", "dlib", "none")
#: Data sets of faces, where "auto" asks for the face recogniser.
FACE_DATASETS = ("image-folder", "folder", "celeba")
#: dlib's same-person distance in its descriptor space.
DLIB_SAME_PERSON = 0.6


@torch.no_grad()
def embed_images(embedder: nn.Module, x: Any, *, batch_size: int = 64, device: Any = None) -> np.ndarray:
    """``embedder``'s descriptors of ``x`` (images in [0, 1]) as float64, in batches on ``device``."""
    images = check_images(x.cpu().numpy() if torch.is_tensor(x) else np.asarray(x), "x")
    device = resolve_device(device)
    embedder.to(device).eval()
    out = [embedder(torch.from_numpy(images[i:i + batch_size]).to(device)).double().cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0))


class EmbeddingJudge:
    """Nearest-centroid identification in a pretrained embedding, against the private training images.

    :param embedder: Maps ``[0, 1]`` images ``(N, C, H, W)`` to descriptors ``(N, D)`` (e.g.
        :class:`mi_art.face_recognizer.DlibResNet`); it is not trained.
    :param train_x: The private training images, in [0, 1].
    :param train_y: Their identities, ``0 .. num_classes - 1``.
    :param name: How records name it.
    :param train_features: ``embed(train_x)``, when already computed (e.g. cached): not computed again.
    """

    def __init__(self, embedder: nn.Module, train_x: Any, train_y: Any, num_classes: int, *, name: str = "dlib",
                 batch_size: int = 64, device: Any = None, train_features: Optional[np.ndarray] = None) -> None:
        self.embedder = embedder.eval()
        self.name = name
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.embedder.to(self.device)
        self.num_classes = int(num_classes)
        self.train_y = check_labels(train_y, self.num_classes, "train_y", length=len(train_x))
        missing = sorted(set(range(self.num_classes)) - set(np.unique(self.train_y).tolist()))
        if missing:
            raise ValueError(f"the embedding judge needs training images of every identity; none for {missing[:5]}")
        self.train_features = self.embed(train_x) if train_features is None else np.asarray(train_features, np.float64)
        if self.train_features.shape[0] != len(self.train_y):
            raise ValueError(f"train_features has {self.train_features.shape[0]} rows for {len(self.train_y)} images")
        self.centroids = np.stack([self.train_features[self.train_y == k].mean(0) for k in range(self.num_classes)])

    def embed(self, x: Any) -> np.ndarray:
        """Descriptors of ``x`` (images in [0, 1]) as float64."""
        return embed_images(self.embedder, x, batch_size=self.batch_size, device=self.device)

    def rank(self, features: np.ndarray) -> np.ndarray:
        """Identities by distance to their centroid, nearest first, ``(N, num_classes)``."""
        dist = ((features[:, None, :] - self.centroids[None, :, :]) ** 2).sum(-1)
        return np.argsort(dist, axis=1, kind="stable")

    def accuracy(self, x: Any, y: Any) -> float:
        """Top-1 nearest-centroid accuracy on real images (its competence at their resolution)."""
        labels = check_labels(y, self.num_classes, "y", length=len(x))
        return float((self.rank(self.embed(x))[:, 0] == labels).mean())

    def score(self, x: Any, y: Any, top_k: Sequence[int] = (1, 5)) -> Dict[str, Any]:
        """``acc@k`` (None where ``k >= num_classes``) with its binomial standard error ``acc@k_se``, and ``dist``:
        the mean (``dist_std`` spread) Euclidean distance from each image to the nearest training image of its
        identity; per image, ``per_sample_top1`` (recognised) and ``per_sample_dist`` (arrays)."""
        labels = check_labels(y, self.num_classes, "y", length=len(x))
        features = self.embed(x)
        ranked = self.rank(features)
        out: Dict[str, Any] = {}
        for k in top_k:
            if k >= self.num_classes:
                out[f"acc@{k}"], out[f"acc@{k}_se"] = None, None
                continue
            hit = (ranked[:, :k] == labels[:, None]).any(1)
            p = float(hit.mean())
            out[f"acc@{k}"], out[f"acc@{k}_se"] = p, math.sqrt(p * (1 - p) / len(hit))
        nearest = np.empty(len(features))
        for k in np.unique(labels):
            own = self.train_features[self.train_y == k]
            rows = labels == k
            nearest[rows] = np.sqrt(((features[rows, None, :] - own[None]) ** 2).sum(-1)).min(1)
        out["dist"], out["dist_std"] = float(nearest.mean()), float(nearest.std())
        out["per_sample_top1"], out["per_sample_dist"] = ranked[:, 0] == labels, nearest
        return out


def shared_with_target(judge: EmbeddingJudge, target: Any) -> List[str]:
    """What the judge shares with ``target`` (a module or an ART estimator): "architecture and weights"
    when the target contains the judge's own recogniser (a deployed target on dlib's network), else nothing."""
    module = getattr(target, "model", target)
    if not isinstance(module, nn.Module):
        return []
    if isinstance(judge.embedder, DlibResNet) and any(isinstance(m, DlibResNet) for m in module.modules()):
        return ["architecture", "weights (dlib's recogniser is the target's backbone)"]
    return []


def panel_shares(target_arch: str, judge_arch: str, target_pretrain_epochs: int = 0,
                 judge_pretrain_epochs: int = 0) -> List[str]:
    """What the trained judges share with the target: always the private training images they are trained on;
    the architecture when it is the target's; the public identities when both are pre-trained on them. A panel
    sharing all of this is the target's own recipe, whose errors the attack can share (issue 40)."""
    shared = ["training data (the private training images)"]
    if judge_arch == target_arch:
        shared.insert(0, f"architecture ({judge_arch})")
    if target_pretrain_epochs and judge_pretrain_epochs:
        shared.append("pre-training data (the public identities)")
    return shared


def make_dlib_judge(train_x: Any, train_y: Any, num_classes: int, *, device: Any = None) -> EmbeddingJudge:
    """The dlib embedding judge of the private training images (weights from ``face_recognition_models``,
    their sha256 checked: the judge is exactly dlib's published network)."""
    return EmbeddingJudge(load_dlib_face_recognizer(device="cpu"), train_x, train_y, num_classes, name="dlib",
                          device=device)


def dlib_weights_installed(required: bool = False) -> bool:
    """Whether dlib's weights can be found; with ``required`` a ValueError saying how to install them instead
    of False."""
    from mi_art.face_recognizer import dlib_weights_path

    try:
        dlib_weights_path()
    except FileNotFoundError as err:
        if required:
            raise ValueError(f"independent_judge='dlib': {err}") from None
        return False
    return True


def resolve_independent_judge(setting: str, dataset: str) -> Optional[str]:
    """``"dlib"`` or None for ``setting`` on ``dataset`` ("auto": dlib for face data when its weights are
    installed). Raises ValueError for "dlib" without its weights, saying how to install them."""
    if setting not in INDEPENDENT_JUDGES:
        raise ValueError(f"independent_judge must be one of {', '.join(INDEPENDENT_JUDGES)}, got {setting!r}")
    if setting == "none" or (setting == "auto" and dataset not in FACE_DATASETS):
        return None
    return "dlib" if dlib_weights_installed(required=setting == "dlib") else None


def independent_record(judge: EmbeddingJudge, target: Any, recs: Any, labels: Any, test_x: Any, test_y: Any,
                       panel: Dict[str, Any]) -> Dict[str, Any]:
    """The record's independent-judge fields: ``independent_acc@1`` / ``@5`` (with standard errors),
    ``independent_dist``, the judge's own ``independent_test_accuracy`` on the real private test images,
    ``independent_ratio`` (its Acc@1 over the trained panel's), what it shares with the target and whether it
    is independent, and ``independent_warnings``: the ratio below 0.5, or the two judges apart beyond their
    spreads (twice the combined standard error and spread over the panel's judges); and
    ``independent_per_identity``: per attacked identity, its reconstructions' ``independent_acc@1`` and
    ``independent_dist`` (:func:`~mi_art.evaluations.metrics.per_identity_figures`)."""
    from .metrics import per_identity_figures

    scores = judge.score(recs, labels)
    shares = shared_with_target(judge, target)
    test_accuracy = judge.accuracy(test_x, test_y)
    ind, pan = scores["acc@1"], panel.get("acc@1")
    ratio = None if ind is None or not pan else ind / pan
    label = judge.name if not shares else f"{judge.name} (shares {', '.join(shares)} with the target: not independent)"
    warnings: List[str] = []
    if ratio is not None and ratio < 0.5:
        warnings.append(f"the trained judges' figure is not confirmed: the {label} judge recognises {ind:.3f} of the "
                        f"reconstructions against the panel's {pan:.3f} (ratio {ratio:.2f} < 0.5; the {judge.name} "
                        f"judge identifies {test_accuracy:.3f} of real private test images at this size)")
    elif ind is not None and pan is not None:
        n = len(np.asarray(labels))
        spread = math.sqrt(scores["acc@1_se"] ** 2 + pan * (1 - pan) / max(n, 1)
                           + (panel.get("acc@1_judge_std") or 0.0) ** 2)
        if abs(ind - pan) > 2 * spread:
            warnings.append(f"the {label} judge ({ind:.3f}) and the trained panel ({pan:.3f}) disagree beyond their "
                            f"spreads (2 x {spread:.3f})")
    return {"independent_judge": judge.name, "independent": not shares, "independent_shares": shares,
            "independent_acc@1": ind, "independent_acc@1_se": scores["acc@1_se"],
            "independent_acc@5": scores["acc@5"], "independent_acc@5_se": scores["acc@5_se"],
            "independent_dist": scores["dist"], "independent_dist_std": scores["dist_std"],
            "independent_test_accuracy": test_accuracy, "independent_ratio": ratio,
            "independent_warnings": warnings,
            "independent_per_identity": per_identity_figures(labels, {
                "independent_acc@1": scores["per_sample_top1"], "independent_dist": scores["per_sample_dist"]})}
