"""One attack run end to end (:func:`run_attack`): what the variant needs of the
:class:`~mi_art.evaluations.workbench.Workbench` (the target, its judges, priors, surrogates, ``p_reg``), the attack
and its metrics, in one record. The configuration is :mod:`~mi_art.evaluations.experiment_config`'s, the artifacts
the Workbench's; their names are importable from here too."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from mi_art.attacks import AttackJob, get_attack
from mi_art.data import MIDataset
from mi_art.priors import get_prior, prior_samples
from mi_art.quality import WEAK_SURROGATE_AGREEMENT, warn_weak, weak_model_warnings, weak_surrogate_warning
from mi_art.renames import Renames
from mi_art.threads import thread_record
from mi_art.utils import as_module, seed_everything
from mi_art.validation import check_labels
from mi_art.variants import attack_kwargs, parse_variant

from .artifact_keys import data_fingerprint, model_fingerprint
from .experiment_config import (CHECKED_ELSEWHERE, DISTILL_BATCH_SIZE, HELD_OUT_PUBLIC, PARAMETER_RULES, SETTINGS,
                                ExperimentConfig, config_defaults, query_budget_problem)
from .independent import FACE_DATASETS, independent_record, panel_shares
from .metrics import judge_panel, natural_accuracy
from .workbench import (DEFENSE_RECORD_FIELDS, FACE_PRIOR_STEPS, JUDGE_SEED_OFFSET, PRIOR_FID_PUBLIC, PRIOR_FID_SAMPLES,
                        PRIOR_GRID_SAMPLES, Workbench, prior_caveat)

__all__ = ["CHECKED_ELSEWHERE", "DEFENSE_RECORD_FIELDS", "DISTILL_BATCH_SIZE", "ExperimentConfig", "FACE_PRIOR_STEPS",
           "HELD_OUT_PUBLIC", "JUDGE_SEED_OFFSET", "PARAMETER_RULES", "PRIOR_FID_PUBLIC", "PRIOR_FID_SAMPLES",
           "PRIOR_GRID_SAMPLES", "SETTINGS", "VariantModels", "WEAK_SURROGATE_AGREEMENT", "Workbench",
           "config_defaults", "data_fingerprint", "feature_norms", "identity_leakage", "model_fingerprint",
           "prior_caveat", "public_record", "query_budget_problem", "run_attack", "variant_models", "wrap_target"]

#: :func:`run_attack`'s renamed arguments (earlier name -> name now).
_RENAMED_ARGUMENTS = Renames("argument", {"evaluator": "judges"})


def wrap_target(model: Any, data: MIDataset, device: torch.device):
    """The target as an ART ``PyTorchClassifier``: an ART estimator is returned as it is (its
    ``preprocessing``, ``clip_values`` and ``channels_first`` are the target's); a bare module is
    wrapped with logits out and inputs in [0, 1], the dataset's range."""
    from art.estimators.classification import PyTorchClassifier
    from art.estimators.pytorch import PyTorchEstimator

    if isinstance(model, PyTorchEstimator):
        if model.nb_classes != data.num_classes:
            raise ValueError(f"target has {model.nb_classes} classes but dataset {data.name!r} has "
                             f"{data.num_classes} private identities")
        return model
    if not isinstance(model, nn.Module):
        raise ValueError(f"target must be an ART PyTorch estimator or a torch.nn.Module, got {type(model).__name__}")
    return PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=data.input_shape,
                             nb_classes=data.num_classes, clip_values=(0.0, 1.0),
                             device_type="gpu" if device.type == "cuda" else "cpu")


@dataclass
class VariantModels:
    """What a variant's improvements are made of, for one target at the workbench's access level."""

    #: What the attack is given: the target's estimator at white-box, its API (:meth:`Workbench.api`) below.
    estimator: Any
    #: The surrogates the loss is also taken over (model augmentation), or below white-box the surrogates learnt
    #: from the target's answers, the first inverted in the target's place.
    surrogates: List[nn.Module]
    #: LOM's mean public feature of the model inverted (the target, or below white-box its first surrogate).
    p_reg: Optional[torch.Tensor]
    #: One mean public feature per other surrogate, for their own regularisers (``regularise_surrogates``).
    surrogate_p_reg: Optional[List[torch.Tensor]]
    #: The record's fields: ``"surrogates"`` (each one's report, "used" set), ``"access"``, ``"query_budget"``.
    record: Dict[str, Any]
    #: Warnings about the surrogates (weak ones; those left out).
    notes: List[str]


def variant_models(bench: Workbench, estimator: Any, unit_target: nn.Module,
                   improvements: Sequence[str]) -> VariantModels:
    """The surrogates, ``p_reg`` and the surrogates' ``p_reg`` that ``improvements`` need (LOM: ``p_reg``; MA: the
    surrogates; both: each surrogate's ``p_reg`` too), made or loaded by ``bench`` only when needed, and what
    the attack inverts (``estimator``, the target's, at white-box). Below white-box the target is reached
    through ``predict`` alone: the surrogates learnt from its answers are what is inverted, the first in the
    target's place, and MA adds the others."""
    c = bench.config
    use_lom, use_ma = "lom" in improvements, "ma" in improvements
    surrogates: List[nn.Module] = []
    surrogate_p_reg = None
    record: Dict[str, Any] = {}
    notes: List[str] = []
    if c.access != "white-box":
        estimator = bench.api(unit_target)
        learnt, queries = bench.answer_surrogates(unit_target)
        record["surrogates"] = bench.surrogate_report(unit_target, learnt)
        for row, q in zip(record["surrogates"], queries):
            row["queries"] = q
        record["access"], record["query_budget"] = c.access, c.max_queries
        surrogates = learnt if use_ma else learnt[:1]
        weak = []
        for i, row in enumerate(record["surrogates"]):
            row["used"] = i < len(surrogates)
            warned = weak_surrogate_warning(row["agreement_public_heldout"], name=f"surrogate {i} ({row['arch']})",
                                            hint="Distil it longer (surrogate_steps) or with more queries "
                                                 "(max_queries)") if row["used"] else None
            weak.extend([warned] if warned else [])
        warn_weak(weak)
        notes.extend(weak)
        p_reg = bench.surrogate_p_reg(unit_target, 0, surrogates[0], c.feature_layer) if use_lom else None
        if use_lom and use_ma and c.regularise_surrogates and len(surrogates) > 1:
            surrogate_p_reg = [bench.surrogate_p_reg(unit_target, i, s) for i, s in enumerate(surrogates) if i]
    else:
        if use_ma:
            surrogates, record["surrogates"], notes = bench.checked_surrogates(unit_target)
            if use_lom and c.regularise_surrogates:
                used = [i for i, row in enumerate(record["surrogates"]) if row["used"]]
                surrogate_p_reg = [bench.surrogate_p_reg(unit_target, i, s) for i, s in zip(used, surrogates)]
        p_reg = bench.p_reg(unit_target) if use_lom else None
    return VariantModels(estimator, surrogates, p_reg, surrogate_p_reg, record, notes)


@dataclass
class _Attacked:
    """What one run attacks and judges with."""

    bench: Workbench
    attack: str
    variant: str
    seed: int
    identities: np.ndarray
    #: The target as given (a module or an ART estimator), as an ART estimator, and as a module in its own input
    #: space (``target_view``) and on the workbench's [0, 1] images (``unit_target``).
    target: Any
    estimator: Any
    target_view: Any
    unit_target: nn.Module
    #: The judges on [0, 1] images; the first judges the priors' quality.
    unit_judges: List[nn.Module]
    #: ``(what, budget)`` of the attack's stage line.
    stage: Tuple[str, str]


@dataclass
class _Reconstructed:
    """What an attack gave: its reconstructions in [0, 1], their labels and index, and the attack's seconds."""

    images: np.ndarray
    labels: Any
    index: Any
    seconds: float


def run_attack(bench: Workbench, *, attack: Optional[str] = None, variant: Optional[str] = None,
               attack_seed: Optional[int] = None, target: Any = None, judges: Any = None,
               target_record: Any = None, evaluator: Any = None) -> Dict[str, Any]:
    """Run one attack variant and measure it. Returns the result record (metrics, timings, settings)
    with the reconstructions under ``"reconstructions"`` and their labels under ``"labels"``.

    Every attack metric is judged by a panel of evaluation models (:func:`~mi_art.evaluations.metrics.judge_panel`):
    ``"acc@1"``, ``"knn_dist"``, ... are means over the judges, ``"acc@1_judges"`` each judge's value and
    ``"acc@1_judge_std"`` the spread over judges; ``"judge_test_accuracy"`` is the judges' mean held-out
    accuracy (``"judge_test_accuracies"`` each judge's). ``"precision"``, ``"recall"``, ``"density"`` and
    ``"coverage"`` compare the reconstructions with the attacked identities' training images on the judges'
    features; ``"per_identity"`` lists each attacked identity's figures (:func:`identity_leakage`).

    ``target`` defaults to the workbench's target, ``judges`` to its panel (:meth:`Workbench.judges`);
    ``judges`` may also be one judge or a list of judges (``evaluator``: its earlier name, reported as
    renamed). Each may be a module or an ART estimator, which is used as it is (never re-wrapped: its
    preprocessing and input range stay). The workbench's
    data is in [0, 1] channels first: everything the attack does not see through the target estimator
    (priors, surrogates, p_reg, the judge, the accuracies) gets it mapped to each model's input space by
    :class:`mi_art.utils.EstimatorModule`, and the reconstructions are returned in [0, 1] too.

    ``target_record`` is the :class:`~mi_art.defenses.record.DefenseRecord` (or its ``to_dict()``) of a
    ``target`` trained elsewhere, e.g. with Opacus (:func:`mi_art.defenses.opacus_record`): the result then
    carries it under ``"defense_record"``, with its ``"defense"``, ``"epsilon"`` and ``"delta"`` beside the
    metrics, and its delta is checked as a DP-SGD target's. Without it, a target the workbench trained under a
    defense has the workbench's record (``bench.defense_record``)."""
    c, d = bench.config, bench.data
    if target_record is not None and target is None:
        raise ValueError("target_record describes a target you give: pass target= too (the workbench's own "
                         "target has its own record, bench.defense_record)")
    given_record = None if target_record is None else _target_record(target_record)
    judges = _judges_given(judges, evaluator)
    attack, variant = attack or c.attack, variant or c.variant
    seed = c.attack_seed if attack_seed is None else attack_seed
    if (attack, variant) != (c.attack, c.variant):  # the workbench checked its config
        dataclasses.replace(c, attack=attack, variant=variant).validate()
    target = target if target is not None else bench.target()
    judges = _judges(bench, judges)
    identities = np.arange(d.num_classes) if c.identities is None else check_labels(c.identities, d.num_classes,
                                                                                    "identities")
    estimator = wrap_target(target, d, bench.device)
    run = _Attacked(bench, attack, variant, seed, identities, target, estimator, as_module(estimator, "target"),
                    _on_unit_images(target, "target"),
                    [_on_unit_images(j, f"judges[{i}]") for i, j in enumerate(judges)],
                    _attack_stage(c, attack, variant, len(identities)))
    extra: Dict[str, Any] = {}
    notes: List[str] = []
    seed_everything(seed)
    reconstructed = (_gan_search if get_attack(attack).gan_search else _own_run)(run, extra, notes)
    panel = _judged(run, reconstructed, extra, notes)
    defended = _defense_facts(bench, given_record, extra, notes)
    return _result(run, panel, reconstructed, defended, extra, notes)


def _judges_given(judges: Any, evaluator: Any) -> Any:
    """``run_attack``'s ``judges``, given under that name or its earlier one ``evaluator`` (reported as renamed;
    both with two values are refused)."""
    if evaluator is None:
        return judges
    if judges is not None and judges is not evaluator:  # (models: their repr would fill the message)
        raise ValueError("run_attack: evaluator and judges are both given: evaluator is the earlier name of judges; "
                         "give judges only")
    _RENAMED_ARGUMENTS.report("evaluator", "run_attack")
    return evaluator


def _judges(bench: Workbench, given: Any) -> List[Any]:
    """The judges a run is scored by: the workbench's panel for None, else the judge or list of judges given."""
    judges = bench.judges() if given is None else (list(given) if isinstance(given, (list, tuple)) else [given])
    if not judges:
        raise ValueError("judges is an empty list: give at least one evaluation model, or None for the "
                         "workbench's panel")
    return judges


def _on_unit_images(model: Any, what: str) -> Any:
    """``model`` taking the workbench's [0, 1] images: a bare module as it is, an estimator through the view that
    maps them to its input space (the one place: EstimatorModule)."""
    return model if isinstance(model, nn.Module) else as_module(model, what, unit_input=True)


def _own_run(run: _Attacked, extra: Dict[str, Any], notes: List[str]) -> _Reconstructed:
    """An attack run its own way (ART's MIFace, BREP-MI): its entry's ``run``; a note for each search setting it
    does not use."""
    c = run.bench.config
    start = time.perf_counter()
    outcome = get_attack(run.attack).run(AttackJob(run.bench, run.target_view, run.unit_target, run.identities,
                                                   run.seed, run.stage))
    extra.update(outcome.record)
    seconds = time.perf_counter() - start
    if c.n_candidates is not None:
        notes.append(f"n_candidates={c.n_candidates} was not used: {run.attack} selects no candidates (the GAN "
                     "attacks do)")
    for name in ("search_views", "id_weight", "feature_layer"):
        if getattr(c, name) is not None:
            notes.append(f"{name}={getattr(c, name)} was not used: {run.attack} searches no GAN prior's codes")
    images = run.target_view.to_unit(np.asarray(outcome.reconstructions, dtype=np.float32))
    return _Reconstructed(images, outcome.labels, outcome.reconstruction_index, seconds)


def _gan_search(run: _Attacked, extra: Dict[str, Any], notes: List[str]) -> _Reconstructed:
    """A GAN attack: what the variant's improvements are made of (:func:`variant_models`) turned into the attack's
    arguments by :func:`mi_art.attack_kwargs`, its prior (with its quality and samples in ``extra``), and the
    search of its codes."""
    bench, c, d = run.bench, run.bench.config, run.bench.data
    spec = get_attack(run.attack)
    improvements = parse_variant(run.variant)
    models = variant_models(bench, run.estimator, run.unit_target, improvements)
    extra.update(models.record)
    notes.extend(models.notes)
    kwargs = _search_arguments(c, improvements, models, run.seed)
    data_note = get_prior(spec.prior).data_note(len(d.public.x), d.num_classes)
    notes.extend([data_note] if data_note else [])
    # a prior made against the target (KEDMI's soft labels, PLG-MI's pseudo-labels and margin loss) is
    # made against the first surrogate when the target answers through predict alone
    prior_target = run.unit_target if c.access == "white-box" else models.surrogates[0]
    g, disc = bench.prior(spec.prior, prior_target)
    extra["prior"] = {**bench.prior_report(get_prior(spec.prior).cache_kind, prior_target, run.unit_judges[0]),
                      **bench.prior_budget(spec.prior)}
    notes.extend([extra["prior"]["caveat"]] if "caveat" in extra["prior"] else [])
    extra["prior_samples"] = prior_samples(g, PRIOR_GRID_SAMPLES, seed=c.seed)
    start = time.perf_counter()  # artifacts above are shared work, not attack time
    runner = spec.attack_class(models.estimator, g, disc, **kwargs)
    with bench.stages.stage(*run.stage):
        recs = runner.infer(None, run.identities)
    if c.access != "white-box":
        extra["queries"] = sum(row["queries"] or 0 for row in extra["surrogates"]) + runner.queries_
    if "lom" in improvements:
        extra["reg_weight"], extra["reg_weights"] = runner.reg_weight_, runner.reg_weights_
    if c.feature_layer is not None:
        extra["feature_layer"] = c.feature_layer
        if "lom" not in improvements:
            notes.append(f"feature_layer={c.feature_layer!r} was not used: the variant {run.variant!r} has no "
                         "p_reg (LOM's regulariser)")
    seconds = time.perf_counter() - start
    images = run.target_view.to_unit(np.asarray(recs, dtype=np.float32))  # the target's input space -> [0, 1]
    extra["feature_norms"] = feature_norms([run.unit_target, *models.surrogates], images, d.public.x)
    extra.update(n_candidates=c.n_candidates, search_views=runner.views, id_weight=runner.id_weight)
    return _Reconstructed(images, runner.labels_, runner.reconstruction_index_, seconds)


def _search_arguments(c: ExperimentConfig, improvements: Any, models: VariantModels, seed: int) -> Dict[str, Any]:
    """The GAN attack's arguments: the variant's (:func:`mi_art.attack_kwargs`) and the configured budgets."""
    kwargs = attack_kwargs(improvements, access=c.access, p_reg=models.p_reg, surrogates=models.surrogates,
                           surrogate_p_reg=models.surrogate_p_reg, views=c.search_views)
    kwargs.update(iterations=c.iterations, n_reconstructions=c.n_reconstructions, n_candidates=c.n_candidates,
                  batch_size=c.batch_size, seed=seed, verbose=c.verbose)
    if c.id_weight is not None:
        kwargs["id_weight"] = c.id_weight
    if c.feature_layer is not None and models.p_reg is not None:
        kwargs["feature_layer"] = c.feature_layer
    return kwargs


def _judged(run: _Attacked, rec: _Reconstructed, extra: Dict[str, Any], notes: List[str]) -> Dict[str, Any]:
    """The panel's figures of the reconstructions (:func:`~mi_art.evaluations.metrics.judge_panel`); beside them in
    ``extra`` the independent judge's and each identity's (:func:`identity_leakage`)."""
    bench, c, d = run.bench, run.bench.config, run.bench.data
    priv = d.private_all()
    independent = bench.independent_judge()
    with bench.stages.stage("judging", f"{len(rec.images)} reconstructions by {len(run.unit_judges)} trained "
                            "judge(s)" + (", and dlib's face recogniser" if independent is not None else "")):
        panel = judge_panel(run.unit_judges, rec.images, rec.labels, priv.x, priv.y, rec_index=rec.index,
                            top_k=(1, 5), train_x=d.private_train.x, train_y=d.private_train.y)
        if independent is not None:
            extra.update(independent_record(independent, run.target, rec.images, rec.labels, d.private_test.x,
                                            d.private_test.y, panel))
    extra["per_identity"] = identity_leakage(panel.pop("per_identity"), extra.pop("independent_per_identity", None),
                                             d.private_identities)
    if independent is not None:
        notes.extend(extra["independent_warnings"])
    elif c.independent_judge == "auto" and c.dataset in FACE_DATASETS:
        notes.append("no independent judge: dlib's face recogniser is not installed (pip install \"mi-art[faces]\"); "
                     "every figure here is the trained judges' alone")
    return panel


def _defense_facts(bench: Workbench, given_record: Optional[Dict[str, Any]], extra: Dict[str, Any],
                   notes: List[str]) -> bool:
    """Whether the target was trained under a defense. Its record's delta is checked (a note when it is too large
    for the training set) and a given target's record goes into ``extra``."""
    record = given_record if given_record is not None else bench.defense_record
    if record is not None:
        from mi_art.defenses.dp import delta_warning

        n_train = (record.get("details") or {}).get("n_train") or len(bench.data.private_train)
        warned = delta_warning(record.get("delta"), n_train)
        notes.extend([warned] if warned else [])
    if given_record is None:
        return bench.config.defense != "none"
    extra.update(defense=given_record.get("defense"), epsilon=given_record.get("epsilon"),
                 delta=given_record.get("delta"), defense_record=given_record)
    return given_record.get("defense", "none") != "none"


def _result(run: _Attacked, panel: Dict[str, Any], rec: _Reconstructed, defended: bool, extra: Dict[str, Any],
            notes: List[str]) -> Dict[str, Any]:
    """The run's record: the panel's figures, the models' accuracies, warnings, timings and settings, then
    ``extra`` and the reconstructions."""
    c, d = run.bench.config, run.bench.data
    target_accuracy = natural_accuracy(run.unit_target, d.private_test.x, d.private_test.y)
    judge_accuracies = [natural_accuracy(j, d.private_test.x, d.private_test.y) for j in run.unit_judges]
    judge_accuracy = float(np.mean(judge_accuracies))
    n = len(run.identities)
    return {
        "dataset": d.name, "attack": run.attack, "variant": run.variant, "attack_seed": run.seed, **panel,
        "target_test_accuracy": target_accuracy, "judge_test_accuracy": judge_accuracy,
        "judge_test_accuracies": judge_accuracies,
        "panel_shares": panel_shares(c.target_arch, c.judge_arch, c.target_pretrain_epochs, c.judge_pretrain_epochs),
        "warnings": weak_model_warnings(target_accuracy=target_accuracy, judge_accuracy=judge_accuracy,
                                        n_classes=panel["num_classes"], defended=defended) + notes,
        "seconds": rec.seconds, "seconds_per_reconstruction": rec.seconds / len(rec.images),
        "n_identities": int(n), "n_reconstructions": int(len(rec.images) // n),
        "iterations": getattr(c, get_attack(run.attack).iterations_field), **thread_record(),
        **extra, "reconstructions": rec.images, "labels": rec.labels,
    }


def _target_record(record: Any) -> Dict[str, Any]:
    """A given target's record as a JSON-safe dict: a :class:`~mi_art.defenses.record.DefenseRecord` or its
    ``to_dict()``."""
    as_dict = record.to_dict() if hasattr(record, "to_dict") else record
    if not isinstance(as_dict, dict) or "defense" not in as_dict:
        raise ValueError("target_record must be a mi_art.defenses.DefenseRecord (e.g. mi_art.defenses.opacus_record) "
                         f"or its to_dict(), got {type(record).__name__}")
    return dict(as_dict)


def _attack_stage(c: ExperimentConfig, attack: str, variant: str, n_identities: int) -> Tuple[str, str]:
    """``(what, budget)`` of the attack's line (:meth:`~mi_art.evaluations.stages.StageLog.stage`): its entry's
    ``describe``, else the GAN attacks' form."""
    spec = get_attack(attack)
    if spec.describe is not None:
        return "attacking", spec.describe(c, variant, n_identities)
    budget = (f"{attack.upper()} {variant}, {c.iterations} iterations, "
              f"{n_identities} identities x {c.n_reconstructions} reconstructions")
    if c.n_candidates is not None:
        budget += f" kept of {c.n_candidates} candidates"
    return "attacking", budget + (f", at most {c.max_queries} queries" if c.max_queries is not None else "")


def feature_norms(models: List[Any], recs: np.ndarray, public_x: np.ndarray,
                  n_public: int = 500) -> List[Optional[Dict[str, float]]]:
    """For each model (the target, then the surrogates): the mean norm of its penultimate feature on (up to
    ``n_public``) public images and on the reconstructions, all in [0, 1] channels first. A look at what the
    logit loss does to each model's features: a norm far above the public one is a feature no real image
    gives. None for a model whose feature cannot be read at its last ``nn.Linear``."""
    from mi_art.features import extract_features

    out: List[Optional[Dict[str, float]]] = []
    for model in models:
        try:
            norm = {name: float(extract_features(model, torch.from_numpy(np.ascontiguousarray(x))).norm(dim=1).mean())
                    for name, x in (("public", public_x[:n_public]), ("reconstructions", recs))}
        except ValueError:
            norm = None
        out.append(norm)
    return out


def identity_leakage(panel_rows: List[Dict[str, Any]], independent_rows: Optional[List[Dict[str, Any]]],
                     names: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    """A record's ``"per_identity"``: the panel's row of each attacked identity (its reconstructions' Acc@1 and
    KNN distance, its number of private training images), with the independent judge's Acc@1 and distance
    where there is one, and the identity's name."""
    independent = {row["identity"]: row for row in independent_rows or []}
    out = []
    for row in panel_rows:
        row = dict(row)
        if names is not None and 0 <= row["identity"] < len(names):
            row["name"] = str(names[row["identity"]])
        extra = independent.get(row["identity"], {})
        row.update({k: v for k, v in extra.items() if k.startswith("independent_")})
        out.append(row)
    return out


def public_record(result: Dict[str, Any]) -> Dict[str, Any]:
    """The JSON-serialisable part of a result (no image arrays)."""
    return {k: (float(v) if isinstance(v, (np.floating,)) else v) for k, v in result.items()
            if k not in ("reconstructions", "labels", "prior_samples")}
