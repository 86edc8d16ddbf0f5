"""Every artifact's cache key, in one scheme (:class:`ArtifactKeys`): asked for by the kind the cache stores the
artifact under, it holds what made the artifact, so that a change to any of it trains the artifact again and
nothing else does. The keys are those of the artifacts cached before this scheme (tests/test_artifact_keys.py pins
them): a change to one trains every cached artifact of its kind again."""
from __future__ import annotations

import hashlib
import weakref
from typing import Any, Callable, Dict, Optional

import numpy as np
from torch import nn

from mi_art.data import MIDataset, expand_preset
from mi_art.defenses.registry import RENAMED_DEFENSES
from mi_art.face_recognizer import DLIB_WEIGHTS_SHA256
from mi_art.models import PRETRAINED_FACE_ARCHS, RENAMED_ARCHITECTURES
from mi_art.priors import PUBLIC_PRIOR, get_prior
from mi_art.utils import EstimatorModule

#: The evaluation models' initialisation seeds are ``config.seed + JUDGE_SEED_OFFSET + j`` for judge ``j``:
#: other draws than the target's (``config.seed``).
JUDGE_SEED_OFFSET = 1000
#: The kind the judges are cached and keyed under: their first name, "evaluator", which every cached judge's key
#: and file name holds (renaming it would train every cached judge again).
JUDGE_KIND = "evaluator"


class ArtifactKeys:
    """The cache keys of a :class:`~mi_art.evaluations.workbench.Workbench`'s artifacts: ``keys(kind, **parts)``.

    The kinds and their parts:

    * ``"data"``: the data's part of every key: its name, options (not the name a user gives it: renaming a data
      set does not retrain its models) and content;
    * ``"target"``, :data:`JUDGE_KIND`: the recipe of the workbench's target (under its defense) or judge; with
      ``model``, a model the workbench did not make (:meth:`own`) is keyed by its weights instead;
    * ``"pretrained"``: ``arch`` pre-trained ``epochs`` on the public identities from ``seed``, with a defense's
      ``architecture`` tag when its fine-tuning needs another structure;
    * ``"surrogate"``, ``"answer-surrogate"``: surrogate ``index`` distilled from ``target`` (None: the
      workbench's), from its answers below white-box;
    * ``"p-reg"``: the mean public feature of ``target``, or with ``index`` of that surrogate (the answer
      surrogate's below white-box), read at the input of module ``layer`` when one is named;
    * ``"<name>-prior"``: prior ``name`` of :data:`mi_art.priors.PRIORS` (its entry's ``key``), for ``target``
      when it is made per target; ``"<name>-prior-quality"``: its FID judged by ``judge``;
    * ``"independent-descriptors"``: dlib's descriptors of the private training images.

    A record kept beside an artifact (``"defense-record"``, ``"<name>-prior-record"``,
    ``"answer-surrogate-queries"``) is stored under its artifact's key."""

    def __init__(self, bench: Any, data: MIDataset) -> None:
        """``bench``: the workbench (its ``config``, and itself for the priors' entries); ``data``: its data."""
        self._bench = bench
        c = self.config
        self._data = {"dataset": c.dataset,
                      "options": expand_preset(c.dataset, {k: v for k, v in c.data_options.items() if k != "name"}),
                      "content": data_fingerprint(data)}
        # the models the workbench made: artifacts made with them are keyed by their recipes
        self._own: Dict[str, "weakref.WeakSet[nn.Module]"] = {"target": weakref.WeakSet(),
                                                              JUDGE_KIND: weakref.WeakSet()}
        self._kinds: Dict[str, Callable[..., Dict[str, Any]]] = {
            "data": lambda: self._data, "target": self._target, JUDGE_KIND: self._judge,
            "pretrained": self._pretrained, "surrogate": self._surrogate, "answer-surrogate": self._answer_surrogate,
            "p-reg": self._p_reg, "independent-descriptors": self._independent_descriptors}

    @property
    def config(self) -> Any:
        return self._bench.config

    def __call__(self, kind: str, **parts: Any) -> Dict[str, Any]:
        if kind.endswith("-prior-quality"):
            return self._prior_quality(kind[:-len("-quality")], **parts)
        if kind.endswith("-prior"):
            return self._prior(kind[:-len("-prior")], **parts)
        if kind not in self._kinds:
            raise ValueError(f"no cache key for artifacts of kind {kind!r}; valid kinds: {', '.join(self._kinds)}, "
                             "<name>-prior and <name>-prior-quality")
        return self._kinds[kind](**parts)

    def own(self, kind: str, model: nn.Module) -> nn.Module:
        """``model``, noted as the workbench's ``kind`` ("target" or :data:`JUDGE_KIND`): keyed by its recipe."""
        self._own[kind].add(model)
        return model

    def _is_given(self, kind: str, model: Optional[nn.Module]) -> bool:
        return model is not None and model not in self._own[kind]

    # ---------------------------------------------------------------- the classifiers

    def _classifier(self, arch: str, epochs: int, seed: int) -> Dict[str, Any]:
        return {"data": self._data, "arch": _key_name(arch), "epochs": epochs, "augment": self.config.augment,
                "seed": seed}

    def _recipe(self, arch: str) -> Dict[str, Any]:
        """What a trained classifier's key owes to the training code (its BatchNorm statistics re-estimated after
        training, ``train_classifier``'s default: no checkpoint trained before is served), to mixed precision
        (nothing in float32) and to a deployed face recogniser's head input centred on the public images."""
        return {"batch_norm": "re-estimated", **self._precision(),
                **({"embedding": "centred-on-public"} if arch in PRETRAINED_FACE_ARCHS else {})}

    def _precision(self) -> Dict[str, Any]:
        return {"mixed_precision": True} if self.config.mixed_precision else {}

    def _target(self, model: Optional[nn.Module] = None) -> Dict[str, Any]:
        if self._is_given("target", model):
            return {"given-target": model_fingerprint(model)}
        c = self.config
        key = self._classifier(c.target_arch, c.target_epochs, c.seed)
        if c.target_pretrain_epochs:  # only then: the keys of targets trained from scratch stay as they were
            key["pretrain_epochs"] = c.target_pretrain_epochs
        if c.defense != "none":
            from mi_art.defenses import get_defense

            key.update(defense=RENAMED_DEFENSES.old(c.defense), defense_params=c.defense_params,
                       **get_defense(c.defense).defaults_key(c.defense_params))
        return {**key, **self._recipe(c.target_arch)}

    def _judge(self, model: Optional[nn.Module] = None) -> Dict[str, Any]:
        if self._is_given(JUDGE_KIND, model):
            return {f"given-{JUDGE_KIND}": model_fingerprint(model)}
        c = self.config
        key = self._classifier(c.judge_arch, c.judge_epochs, c.seed + JUDGE_SEED_OFFSET)
        if c.judge_pretrain_epochs:  # only then: the keys of judges trained from scratch stay as they were
            key["pretrain_epochs"] = c.judge_pretrain_epochs
        return {**key, **self._recipe(c.judge_arch)}

    def _pretrained(self, arch: str, epochs: int, seed: int, architecture: str = "") -> Dict[str, Any]:
        key = {**self._classifier(arch, epochs, seed), **self._recipe(arch)}
        return {**key, "architecture": architecture} if architecture else key

    # ---------------------------------------------------------------- what is made from a target

    def _surrogate(self, index: int, target: Optional[nn.Module] = None) -> Dict[str, Any]:
        c = self.config
        key = {"target": self._target(target), "arch": _key_name(c.surrogate_archs[index]),
               "steps": c.surrogate_steps, "augment": c.augment, "seed": c.seed + index, "data": c.surrogate_data,
               "version": 3}
        if c.surrogate_data == "public+prior":
            key["prior"] = self._prior(PUBLIC_PRIOR)
        if c.surrogate_pretrain_epochs:  # only then: the keys of surrogates distilled from scratch stay as they were
            key["pretrain_epochs"] = c.surrogate_pretrain_epochs
        return {**key, **self._precision()}

    def _answer_surrogate(self, index: int, target: Optional[nn.Module] = None) -> Dict[str, Any]:
        c = self.config
        return {**self._surrogate(index, target), "access": c.access, "max_queries": c.max_queries,
                "defense": RENAMED_DEFENSES.old(c.defense), "defense_params": dict(c.defense_params)}

    def _p_reg(self, target: Optional[nn.Module] = None, index: Optional[int] = None,
               layer: Optional[str] = None) -> Dict[str, Any]:
        if index is None:
            key = {"target": self._target(target), "version": 3}
        else:
            surrogate = self._surrogate if self.config.access == "white-box" else self._answer_surrogate
            key = {"surrogate": surrogate(index, target), "version": 1}
        return key if layer is None else {**key, "feature_layer": layer}

    def _prior(self, name: str, target: Optional[nn.Module] = None) -> Dict[str, Any]:
        spec = get_prior(name)
        return spec.key(self._bench, target if spec.per_target else None)

    def _prior_quality(self, prior: str, target: Optional[nn.Module] = None,
                       judge: Optional[nn.Module] = None) -> Dict[str, Any]:
        return {"prior": self(prior, target=target), JUDGE_KIND: self._judge(judge)}

    def _independent_descriptors(self) -> Dict[str, Any]:
        return {"data": self._data, "judge": "dlib", "weights": DLIB_WEIGHTS_SHA256}


def _key_name(arch: str) -> str:
    """An architecture's name as artifacts' cache keys spell it: a renamed one under its earlier name
    (``efficientnet_b0``), so that models cached before the rename are found."""
    return RENAMED_ARCHITECTURES.old(arch)


def model_fingerprint(model: nn.Module) -> str:
    """A content hash of a model's parameters and buffers; for an :class:`~mi_art.utils.EstimatorModule`,
    of the wrapped model and of its estimator's preprocessing, clip values and layout too."""
    h = hashlib.sha1()
    if isinstance(model, EstimatorModule):
        if model.estimator is not None:
            e = model.estimator
            h.update(repr((e.preprocessing, e.clip_values, e.channels_first, model.output_index)).encode())
        model = model.model
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def data_fingerprint(data: MIDataset) -> str:
    """A content hash of a dataset's three splits (images, labels) and identity names."""
    h = hashlib.sha256()
    for split in (data.private_train, data.private_test, data.public):
        for arr in (split.x, split.y):
            arr = np.ascontiguousarray(arr)
            h.update(f"{arr.dtype}{arr.shape}".encode())
            h.update(arr.tobytes())
    h.update(repr((data.private_identities, data.public_identities)).encode())
    return h.hexdigest()[:16]
