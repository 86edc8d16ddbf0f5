"""The report of a grid evaluation, rendered from the saved cells alone (nothing is recomputed):

* ``results.csv`` / ``results.json``: one row per finished cell (dataset, defense and parameters, the
  target's natural accuracy, DP epsilon, attack, variant, seed, Acc@1, Acc@5 and their chance levels,
  KNN, FID, seconds);
* ``report.md``: per dataset, the grid as tables (mean +- std over seeds), with the chance level of
  Acc@1 and Acc@5, and the figures;
* ``plots/frontier-<dataset>.png``: attack accuracy against natural accuracy per defense (the
  privacy-utility frontier), one panel per attack variant, with the accuracy defenses are compared at
  (:mod:`mi_art.evaluations.utility`: defenses at equal utility, and what an adaptive attack leaves of them);
* ``plots/bars-<dataset>.png``: attack accuracy per defense, one bar per attack variant;
* ``images/<cell-id>.png``: each cell's reconstructions beside real private images.

Acc@k with ``k`` at or above the judge's number of classes is 1 whatever the reconstructions: it is
not applicable, written None in JSON, ``n/a`` in the CSV and the tables, and left out of the plots.

A weak evaluation model or target makes attack numbers mean little: :func:`mi_art.quality.weak_model_warnings`
names them (its thresholds, which the Python API's warnings use too, are in :mod:`mi_art.quality`);
``report.md`` lists the warnings at the top of each dataset, each row of ``results.json`` carries its
own under ``"warnings"`` (with every other warning its run gave: weak surrogates, the prior's data, the
independent judge, DP's delta), and ``mi-art attack`` prints them and saves them in its results.json.
Each row also carries its surrogates' agreement with the target and its prior's quality
(:data:`RECORD_KEYS`), as ``mi-art attack``'s record does.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from mi_art.quality import NEAR_CHANCE_FACTOR, WEAK_JUDGE_ACCURACY, WEAK_TARGET_ACCURACY, weak_model_warnings
from mi_art.utils import write_atomic

from .plots import wrap_title
from .metric_facts import metric_facts, metric_names
from .rows import (ROW_KEYS, TOP_K, cell_paths, completed_cells, finite_or_none, form_attack, normalise_row,
                   pair_label)
from .utility import adaptive_lines, equal_utility_lines, matched_utility

# NEAR_CHANCE_FACTOR, WEAK_JUDGE_ACCURACY, WEAK_TARGET_ACCURACY and weak_model_warnings are mi_art.quality's,
# importable from here as before
__all__ = ["RECORD_KEYS", "aggregate", "dp_delta_warnings", "identity_lines", "load_rows", "markdown_text",
           "privacy_line", "render_report", "row_warnings", "transfer_lines"]


def dp_delta_warnings(row: Dict[str, Any]) -> List[str]:
    """The warning of :func:`mi_art.defenses.dp.delta_warning` for a row's DP-SGD target whose delta is at or
    above 1/(10 N); N is the row's ``n_train`` or its defense record's (rows written before either was kept
    are not checked)."""
    from mi_art.defenses.dp import delta_warning

    details = (row.get("defense_record") or {}).get("details") or {}
    warned = delta_warning(row.get("delta"), row.get("n_train", details.get("n_train")))
    return [warned] if warned else []


def row_warnings(row: Dict[str, Any]) -> List[str]:
    """Every warning of one result row of a grid: those its run recorded (``row["warnings"]``: weak
    surrogates, the prior's data, the independent judge, ...), :func:`weak_model_warnings` and
    :func:`dp_delta_warnings`, each once."""
    recorded = [w for w in row.get("warnings") or [] if isinstance(w, str)]
    return list(dict.fromkeys(recorded + weak_model_warnings(
        target_accuracy=row.get("natural_accuracy"), judge_accuracy=row.get("evaluator_test_accuracy"),
        n_classes=row.get("n_classes"), defended=row.get("defense", "none") != "none") + dp_delta_warnings(row)))


def _dataset_warnings(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """The warnings of one dataset's rows, once per judge (seed) and per target (defense setting, seed), then
    those the cells' runs recorded (weak surrogates, ...), each once per defense setting (and seed)."""
    seeds = sorted({r.get("artifact_seed") for r in rows}, key=str)
    out: List[str] = []
    judges: Dict[Any, Dict[str, Any]] = {}
    targets: Dict[Tuple[Any, Any], Dict[str, Any]] = {}
    for r in rows:
        judges.setdefault(r.get("artifact_seed"), r)
        targets.setdefault((r.get("defense_label"), r.get("artifact_seed")), r)
    for seed, r in judges.items():
        where = f"seed {seed}: " if len(seeds) > 1 else ""
        out += [f"{where}{w}" for w in weak_model_warnings(judge_accuracy=r.get("evaluator_test_accuracy"),
                                                           n_classes=r.get("n_classes"))]
    for (label, seed), r in targets.items():
        where = f"{label}" + (f", seed {seed}" if len(seeds) > 1 else "")
        out += [f"{where}: {w}" for w in weak_model_warnings(
            target_accuracy=r.get("natural_accuracy"), n_classes=r.get("n_classes"),
            defended=r.get("defense", "none") != "none") + dp_delta_warnings(r)]
    recorded: Dict[str, None] = {}
    for r in rows:
        said = set(weak_model_warnings(target_accuracy=r.get("natural_accuracy"),
                                       judge_accuracy=r.get("evaluator_test_accuracy"), n_classes=r.get("n_classes"),
                                       defended=r.get("defense", "none") != "none") + dp_delta_warnings(r))
        where = f"{r.get('defense_label')}" + (f", seed {r.get('artifact_seed')}" if len(seeds) > 1 else "")
        for w in r.get("warnings") or []:
            if isinstance(w, str) and w not in said:
                recorded.setdefault(f"{where}: {w}")
    return out + list(recorded)

PathLike = Union[str, Path]
#: Metrics judged by every evaluation model of a cell (a spread over judges is reported for them): those declared
#: ``judged_by_panel`` (:mod:`~mi_art.evaluations.metric_facts`), read at each use.
JUDGED = metric_names(lambda m: m.judged_by_panel)


class _Tables(Sequence):
    """``(key, title, format)`` of each table of a data set, one per declared metric with a label, read at each
    use."""

    def _read(self) -> Tuple[Tuple[str, str, str], ...]:
        return tuple((m.name, m.label, m.fmt) for m in metric_facts(lambda m: m.label is not None))

    def __getitem__(self, index):  # type: ignore[override]
        return self._read()[index]

    def __len__(self) -> int:
        return len(self._read())


#: ``(key, title, format)`` of each metric's table, in the order of report.md (the declared metrics with a label).
METRICS: Sequence[Tuple[str, str, str]] = _Tables()
#: What results.json carries of a row beside :data:`ROW_KEYS` and its warnings, as ``mi-art attack``'s record
#: does: each surrogate's agreement with the target (``"surrogates"``), the prior's training seconds and
#: quality (``"prior"``: FID to the public images) and the private training images ``"n_train"`` (None in
#: rows written before they were kept, and where the attack has no surrogate or prior).
RECORD_KEYS = ("surrogates", "prior", "n_train", "per_identity")
#: Metrics only some rows have: their table is left out when no row of a data set has them (PRDC: rows written
#: before it was measured); those declared ``optional``.
OPTIONAL_METRICS = metric_names(lambda m: m.optional)
#: Figures :func:`aggregate` averages over seeds beside the declared metrics.
AVERAGED = ("natural_accuracy", "epsilon", "chance@1", "chance@5")
#: Identities named as most and least exposed per defense (:func:`identity_lines`).
EXPOSED_IDENTITIES = 3


#: Characters that start markup wherever they stand; ``]`` only where a link or image would follow (the
#: access level in ``gmi[black-box]`` stays as it is), ``_`` only at a word's edge (handled apart).
_MARKUP = re.compile(r"([\\`*~$#|]|\](?=[(\[]))")
_EDGE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def markdown_text(value: Any) -> str:
    """``value`` as literal text inside a line of markdown, a table cell included: whitespace runs (newlines
    too) become one space, ``|`` and markup characters are escaped, and HTML is written as entities. Every
    string the report takes from cell files (data set names, defense labels, attacks, seeds, records) goes
    through here, so a name cannot break a table or inject markup."""
    text = " ".join(str(value).split())
    text = "".join(_HTML.get(c, c) for c in _MARKUP.sub(r"\\\1", text))
    return _EDGE_UNDERSCORE.sub(r"\\_", text)


def safe_file_name(name: str) -> str:
    """``name`` as one file name: characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_``,
    and no leading dot (``../x`` becomes ``_x``, never a path out of the folder)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip(".") or "_"


def load_rows(out_dir: PathLike) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """The finished rows in grid order (normalised: Acc@k None where not applicable, chance levels
    filled in, see :func:`mi_art.evaluations.rows.normalise_row`), and the grid description (``grid.json``;
    empty without one)."""
    out = Path(out_dir)
    meta: Dict[str, Any] = {}
    if (out / "grid.json").is_file():
        meta = json.loads((out / "grid.json").read_text())
    done = {cid: normalise_row(row) for cid, row in completed_cells(out).items()}
    if meta.get("cells"):
        order = [c["id"] for c in meta["cells"]]
        rows = [done[i] for i in order if i in done]
        for c in meta["cells"]:  # the grid names each cell's form: a saved row may be the same work under another
            if "form" in c and c["id"] in done:
                done[c["id"]]["form"] = c["form"]
    else:
        rows = sorted(done.values(), key=lambda r: (r.get("index", 0), r["cell_id"]))
    return rows, meta


def _mean_std(values: Sequence[Optional[float]]) -> Tuple[Optional[float], Optional[float], int]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None, 0
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return float(np.mean(vals)), std, len(vals)


def aggregate(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Mean and std over seeds per (dataset, defense setting, attack, variant), in first-seen order, an attack
    form's rows apart from the other forms' (``attack`` is :func:`~mi_art.evaluations.rows.form_attack`,
    ``"gmi [paper]"``, beside ``form`` and ``access``; so every table, section and plot keeps forms apart): for each
    declared metric and :data:`AVERAGED` figure ``key``, ``key`` (the mean), ``key + "_std"`` (the sample std over
    seeds, not a row's spread over rounds) and ``key + "_n"`` (the seeds that have it); for each metric judged by
    the panel, ``key + "_judge_std"``, the cells' spread over judges averaged over seeds."""
    groups: "OrderedDict[Tuple[str, str, str, str], List[Dict[str, Any]]]" = OrderedDict()
    for r in rows:
        groups.setdefault((r["dataset"], r["defense_label"], form_attack(r), r["variant"]), []).append(r)
    out = []
    for (dataset, label, attack, variant), rs in groups.items():
        agg: Dict[str, Any] = {"dataset": dataset, "defense_label": label, "defense": rs[0]["defense"],
                               "defense_params": rs[0]["defense_params"], "attack": attack, "variant": variant,
                               "form": rs[0].get("form"), "access": rs[0].get("access"),
                               "seeds": [r["seed"] for r in rs], "n": len(rs)}
        for key in dict.fromkeys((*AVERAGED, *metric_names())):
            agg[key], agg[key + "_std"], agg[key + "_n"] = _mean_std([r.get(key) for r in rs])
        # the spread over judges: each cell's std over its judges, averaged over seeds
        agg["n_judges"] = max(int(r.get("n_judges") or 1) for r in rs)
        for key in JUDGED:
            agg[key + "_judge_std"] = _mean_std([r.get(key + "_judge_std") for r in rs])[0]
        out.append(agg)
    return out


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def _not_applicable(row: Dict[str, Any], key: str) -> bool:
    """Whether ``key`` is an Acc@k column (or its std) that means nothing for ``row``: k >= its classes."""
    n_classes = row.get("n_classes")
    if not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 1:
        return False
    return any(key in (f"acc@{k}", f"acc@{k}_std") and k >= n_classes for k in TOP_K)


def _csv_value(row: Dict[str, Any], key: str) -> Any:
    if key == "defense_params":
        return json.dumps(row.get(key), sort_keys=True)
    if _not_applicable(row, key):
        return "n/a"
    return "" if row.get(key) is None else row.get(key)


def _csv_text(rows: Sequence[Dict[str, Any]]) -> str:
    """One line per row; empty where a value is missing, ``n/a`` where an Acc@k is not applicable."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(ROW_KEYS), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _csv_value(r, k) for k in ROW_KEYS})
    return buffer.getvalue()


def _chance_note(k: int, rows: Sequence[Dict[str, Any]]) -> str:
    """The line under an Acc@k table: its chance level, or why it is not applicable."""
    classes = sorted({r["n_classes"] for r in rows if isinstance(r.get("n_classes"), int)})
    if not classes:
        return f"Chance level of Acc@{k}: unknown (cells saved without their number of classes)."
    parts = []
    for n in classes:
        if k >= n:
            parts.append(f"not applicable with {n} classes: every label is in the judge's top {k}, so Acc@{k} "
                         f"is 1 whatever the reconstructions (n/a)")
        else:
            parts.append(f"chance {min(k, n) / n:.3f} with {n} classes (a judge guessing uniformly)")
    return f"Acc@{k}: " + "; ".join(parts) + "."


def _fmt(mean: Optional[float], std: Optional[float], n: int, spec: str, judge_std: Optional[float] = None) -> str:
    if mean is None:
        return "n/a"
    text = f"{mean:{spec}} ± {std:{spec}}" if n > 1 else f"{mean:{spec}}"
    return text if judge_std is None else f"{text} (judges ± {judge_std:{spec}})"


def _pairs(aggs: Sequence[Dict[str, Any]]) -> List[Tuple[str, str]]:
    return list(dict.fromkeys((a["attack"], a["variant"]) for a in aggs))


def _labels(aggs: Sequence[Dict[str, Any]]) -> List[str]:
    return list(dict.fromkeys(a["defense_label"] for a in aggs))


#: What DP's epsilon bounds, and what it does not, for model inversion: printed wherever a DP target is.
EPSILON_NOTE = (
    "What epsilon means here: (epsilon, delta)-DP bounds how much any *one training image* can change the "
    "trained model, so it limits what an attack can learn about that image beyond what the other images "
    "already reveal. Model inversion reconstructs an *identity's* typical face from everything the model "
    "learned about the class, which comes from many images of that person; DP does not bound that, and a "
    "model that classifies the identity well has, by design, learned it. Read epsilon as a bound on "
    "membership of single images, not as a guarantee against reconstruction: the Acc@1 columns measure "
    "the latter. Measured on a deployed face recogniser (dlib's network frozen, its head trained with DP-SGD "
    "on LFW's 50 persons at delta 1e-5; benchmarks/results/face_recogniser.md): the head kept 0.906 / 0.706 / "
    "0.238 accuracy at epsilon 8 / 3 / 1 against 0.958 without privacy, and the reconstructions of GMI+LOM "
    "(a reduced budget) were named by the target's own backbone 0.93 / 0.63 / 0.10 of the time against 1.00. "
    "GMI+LOMMA (one seed, 30 reconstructions) was named by a judge trained on the same images 0.200 of the time "
    "without privacy, 0.133 at epsilon 8, 0.133 at epsilon 3 and 0.067 at epsilon 1, and by the backbone 1.00 / 0.90 "
    "/ 0.70 / 0.27: at the accuracy a deployment keeps (epsilon 8), DP moved neither judge's figure beyond about "
    "one standard error.")


def identity_lines(rows: Sequence[Dict[str, Any]], n: int = EXPOSED_IDENTITIES) -> List[str]:
    """Which identities leak: per defense setting, the attack that recovers the most (highest mean Acc@1 of its
    cells), and the ``n`` identities it recovers most and least often (their reconstructions' Acc@1 by the
    judges, by the independent judge where there is one, merged over seeds), each with its number of private
    training images. Nothing for rows without per-identity figures (written before they were kept)."""
    from .leakage import merge_identities, rank_identities

    groups: "OrderedDict[Tuple[str, str, str], List[Dict[str, Any]]]" = OrderedDict()
    for r in rows:
        if isinstance(r.get("per_identity"), list) and r["per_identity"]:
            groups.setdefault((r["defense_label"], form_attack(r), r["variant"]), []).append(r)
    best: "OrderedDict[str, Tuple[float, Tuple[str, str], List[Dict[str, Any]]]]" = OrderedDict()
    for (label, attack, variant), rs in groups.items():
        acc = _mean_std([r.get("acc@1") for r in rs])[0]
        acc = -1.0 if acc is None else acc
        if label not in best or acc > best[label][0]:
            best[label] = (acc, (attack, variant), rs)
    if not best:
        return []

    def who(entry: Dict[str, Any]) -> str:
        name = f"{entry['identity']}" + (f" ({entry['name']})" if entry.get("name") is not None else "")
        ind = entry.get("independent_acc@1")
        figures = f"{entry['acc@1']:.2f}" + ("" if ind is None else f", independent {ind:.2f}")
        n_train = entry.get("n_private_train")
        return markdown_text(f"{name}: {figures}" + ("" if n_train is None else f", {n_train} training images"))

    lines = ["### Which identities leak", "",
             "Per defense, the attack that recovers the most, and the identities whose reconstructions the judges "
             "recognise most and least often (Acc@1 of that identity's reconstructions; the independent judge's "
             "beside it where there is one; merged over seeds), with each identity's number of private training "
             "images: an identity that leaks much from few images is the most exposed.", "",
             "| defense | attack/variant | most exposed | least exposed |", "|---|---|---|---|"]
    for label, (_, (attack, variant), rs) in best.items():
        most, least = rank_identities(merge_identities(rs), n)
        lines.append(f"| {markdown_text(label)} | {markdown_text(f'{attack}/{variant}')} | "
                     f"{'; '.join(map(who, most)) or '-'} | {'; '.join(map(who, least)) or '-'} |")
    return lines + [""]


def _dp_targets(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """A table of every DP-SGD target: epsilon, delta, accountant, noise, sample rate, steps, the layers
    trained and natural accuracy (from the defense record each row carries)."""
    seen: "OrderedDict[Tuple[Any, Any], Dict[str, Any]]" = OrderedDict()
    for r in rows:
        if r.get("defense") == "dp-sgd":
            seen.setdefault((r["defense_label"], r.get("artifact_seed")), r)
    if not seen:
        return []
    lines = ["### DP-SGD targets", "", "The accountant's epsilon at delta, and the noise multiplier, Poisson sample "
             "rate and optimiser steps it was computed from (Opacus; recompute it with "
             "`mi_art.defenses.accountant_epsilon`).", "",
             "| defense | seed | natural acc | epsilon | delta | accountant | noise | sample rate | steps | "
             "trained | pre-trained |", "|---|---|---|---|---|---|---|---|---|---|---|"]

    def num(v: Any, spec: str) -> str:
        return "-" if finite_or_none(v) is None else f"{float(v):{spec}}"

    for (label, seed), r in seen.items():
        rec = r.get("defense_record") or {}
        d = rec.get("details") or {}
        trained = d.get("trainable", "all")
        if d.get("trained_parameters") is not None:
            trained = f"{trained} ({d['trained_parameters']} parameters)"
        lines.append(f"| {markdown_text(label)} | {markdown_text(seed)} | {num(r.get('natural_accuracy'), '.3f')} | "
                     f"{num(r.get('epsilon'), '.2f')} | {num(r.get('delta'), '.3g')} | "
                     f"{markdown_text(rec.get('accountant') or '-')} | {num(d.get('noise_multiplier'), '.3f')} | "
                     f"{num(d.get('sample_rate'), '.3f')} | {markdown_text(d.get('steps', '-'))} | "
                     f"{markdown_text(trained)} | {'yes' if d.get('pretrain_epochs') else 'no'} |")
    return lines + ["", EPSILON_NOTE, ""]


def privacy_line(result: Dict[str, Any]) -> Optional[str]:
    """One line on a DP target's privacy, from an attack's result (or record: ``run_attack``'s, a grid row, with
    a ``"defense_record"``) or from a defense record itself: epsilon at delta, the accountant, the noise
    multiplier, sample rate and steps it was computed from, and who trained it. None for a target without DP."""
    rec = result.get("defense_record", result) if isinstance(result, dict) else None
    if not isinstance(rec, dict) or rec.get("defense") != "dp-sgd":
        return None
    d = rec.get("details") or {}

    def num(v: Any, spec: str) -> str:
        if isinstance(v, (list, tuple)):
            return "/".join(num(x, spec) for x in v)
        return "?" if finite_or_none(v) is None else f"{float(v):{spec}}"

    source = {"privacy-engine": "read from its PrivacyEngine", "by hand": "given by hand"}.get(d.get("source"))
    who = f"; trained by the user with Opacus, {source}" if source else ""
    clip = "" if finite_or_none(d.get("max_grad_norm")) is None else f", clipping {num(d['max_grad_norm'], 'g')}"
    return (f"DP-SGD target: epsilon {num(rec.get('epsilon'), '.2f')} at delta {num(rec.get('delta'), '.3g')} "
            f"({rec.get('accountant') or '?'} accountant; noise multiplier {num(d.get('noise_multiplier'), '.3f')}, "
            f"sample rate {num(d.get('sample_rate'), '.4g')}, {d.get('steps', '?')} steps{clip}{who})")


def _access_of(agg: Dict[str, Any]) -> str:
    """An aggregated row's access level: its ``access``, or for rows written without one the level written in the
    attack's name (``gmi[black-box]``), white-box when none is."""
    if agg.get("access"):
        return str(agg["access"])
    attack = agg["attack"]
    return attack[attack.index("[") + 1:-1] if attack.endswith("]") and "[" in attack else "white-box"


#: What an output postprocessor does not change, said wherever one is measured against a white-box attack.
OUTPUT_DEFENSE_NOTE = (
    "It is an output postprocessor: it changes only what the target's predict returns, so the model, its "
    "natural accuracy and the gradients a white-box attack follows are those of the undefended target, and "
    "its white-box rows match the undefended ones by construction; it can matter only to an attack that sees "
    "the answers alone (access black-box or label-only).")


def _is_output_defense(defense: str) -> bool:
    from mi_art.defenses.postprocessing import POSTPROCESSORS

    return defense in POSTPROCESSORS


def _what_it_bought(aggs: Sequence[Dict[str, Any]]) -> List[str]:
    """One sentence per defense setting: its natural accuracy, and for each access level the Acc@1 of the
    strongest attack on it, each against the undefended target of the same grid when there is one."""
    ref = [a for a in aggs if a["defense"] == "none" and a["acc@1"] is not None]
    ref_nat = ref[0]["natural_accuracy"] if ref else None
    ref_acc = {(a["attack"], a["variant"]): a["acc@1"] for a in ref}
    lines = []
    for label in _labels(aggs):
        la = [a for a in aggs if a["defense_label"] == label and a["acc@1"] is not None]
        if not la or la[0]["defense"] == "none":
            continue
        nat = la[0]["natural_accuracy"]
        eps = f" at epsilon {la[0]['epsilon']:.2f}" if la[0].get("epsilon") is not None else ""
        cost = "natural accuracy unknown" if nat is None else f"natural accuracy {nat:.3f}"
        if nat is not None and ref_nat is not None:
            cost += f" ({100 * (nat - ref_nat):+.1f} points against the undefended {ref_nat:.3f})"
        levels = list(dict.fromkeys(_access_of(a) for a in la))
        gains = []
        for level in levels:
            best = max((a for a in la if _access_of(a) == level), key=lambda a: a["acc@1"])
            pair = (best["attack"], best["variant"])
            name = markdown_text(f"{pair[0]}/{pair[1]}")
            gain = (f"the strongest attack on it, {name}, reaches Acc@1 {best['acc@1']:.3f}" if len(levels) == 1
                    else f"{markdown_text(level)}: {name} reaches {best['acc@1']:.3f}")
            if pair in ref_acc:
                gain += f" ({100 * (best['acc@1'] - ref_acc[pair]):+.1f} points against {ref_acc[pair]:.3f} undefended)"
            gains.append(gain)
        chance = la[0].get("chance@1")
        tail = "" if chance is None else f"; chance is {chance:.3f}"
        lines.append(f"- **{markdown_text(label)}**{eps}: {cost}; {'; '.join(gains)}{tail}."
                     + (" " + OUTPUT_DEFENSE_NOTE if _is_output_defense(la[0]["defense"]) and "white-box" in levels
                        else ""))
    if not lines:
        return []
    return ["### What each defense bought and what it cost", ""] + lines + [""]


#: Below this ratio of the independent judge's Acc@1 to the panel's, the panel's figure is not confirmed.
TRANSFER_RATIO = 0.5
#: Two judges disagree on a defense when the shares of the undefended Acc@1 it removes differ by more than this.
DISAGREEMENT = 0.3


def transfer_lines(aggs: Sequence[Dict[str, Any]]) -> List[str]:
    """The transfer table: per defense and attack, the trained panel's Acc@1, the independent judge's and their
    ratio; then one line per defense that looks effective by one judge and not by the other (the share of the
    undefended Acc@1 it removes differs by more than :data:`DISAGREEMENT`). Nothing without an independent
    judge."""
    judged = [a for a in aggs if a.get("independent_acc@1") is not None and a.get("acc@1") is not None]
    if not judged:
        return []
    lines = ["### Transfer: what a judge we did not train confirms", "",
             f"The ratio is the independent judge's Acc@1 over the trained panel's; below {TRANSFER_RATIO} the "
             "panel's figure is not confirmed.", "",
             "| defense | attack/variant | panel Acc@1 | independent Acc@1 | ratio |", "|---|---|---|---|---|"]
    for a in judged:
        ratio = a["independent_acc@1"] / a["acc@1"] if a["acc@1"] > 0 else None
        flag = "" if ratio is None or ratio >= TRANSFER_RATIO else " (not confirmed)"
        lines.append(f"| {a['defense_label']} | {a['attack']}/{a['variant']} | {a['acc@1']:.3f} | "
                     f"{a['independent_acc@1']:.3f} | {'-' if ratio is None else f'{ratio:.2f}'}{flag} |")
    ref = {(a["attack"], a["variant"]): a for a in judged if a["defense"] == "none"}
    verdicts = []
    for a in judged:
        base = ref.get((a["attack"], a["variant"]))
        if a["defense"] == "none" or base is None or base["acc@1"] <= 0 or base["independent_acc@1"] <= 0:
            continue
        panel_cut = 1 - a["acc@1"] / base["acc@1"]
        independent_cut = 1 - a["independent_acc@1"] / base["independent_acc@1"]
        if abs(panel_cut - independent_cut) > DISAGREEMENT:
            verdicts.append(f"- **{a['defense_label']}** against {a['attack']}/{a['variant']}: the trained panel says "
                            f"it removes {100 * panel_cut:.0f}% of the undefended Acc@1, the independent judge "
                            f"{100 * independent_cut:.0f}%: the judges disagree on this defense.")
    return lines + [""] + (verdicts + [""] if verdicts else [])


def _markdown(rows: List[Dict[str, Any]], aggs: List[Dict[str, Any]], meta: Dict[str, Any],
              figures: Dict[str, List[Path]], images: Dict[str, Dict[str, Path]], out: Path) -> str:
    lines = _title_lines(rows, meta, out)
    for dataset in dict.fromkeys(a["dataset"] for a in aggs):
        da = [a for a in aggs if a["dataset"] == dataset]
        dr = [r for r in rows if r["dataset"] == dataset]
        lines += [f"## {markdown_text(dataset)}", ""]
        lines += _judge_lines(dr)
        warned = _dataset_warnings(dr)
        if warned:
            lines += ["**Warnings** (the attack numbers below mean little where these apply):", ""]
            lines += [f"- {markdown_text(w)}" for w in warned] + [""]
        for key, title, spec in METRICS:
            if key in OPTIONAL_METRICS and not any(r.get(key) is not None for r in dr):
                continue  # white-box attacks make no query; no independent judge without its weights
            lines += _metric_table(key, title, spec, da, dr)
        lines += _what_it_bought(da) + transfer_lines(da) + equal_utility_lines(da) + adaptive_lines(da)
        lines += _dp_targets(dr)
        lines += identity_lines(dr)
        lines += _figure_lines(figures.get(dataset), out)
        lines += _reconstruction_lines(dr, images, out)
    return "\n".join(lines)


def _title_lines(rows: List[Dict[str, Any]], meta: Dict[str, Any], out: Path) -> List[str]:
    """The report's title, how many cells finished, the grid's budgets and how to read the tables."""
    grid = meta.get("grid", {})
    n_cells = len(meta.get("cells", [])) or len(rows)
    lines = [f"# Model inversion defense grid: {markdown_text(grid.get('name', out.name))}", ""]
    missing = n_cells - len(rows)
    lines.append(f"{len(rows)} of {n_cells} cells finished" + (f" ({missing} missing: run the same "
                                                                 "`mi-art evaluate` command to finish them)"
                                                                 if missing else "") + ".")
    if grid:
        budgets = {k: v for k, v in grid.items() if k not in ("datasets", "defenses", "name")}
        lines += ["", "Grid: " + markdown_text(", ".join(f"{k}={json.dumps(v)}" for k, v in budgets.items()
                                                         if k != "identities" or v is None)
                                               + (f", identities={len(budgets['identities'])} "
                                                  f"({budgets['identities'][0]}-{budgets['identities'][-1]})"
                                                  if budgets.get("identities") else "")) + "."]
    return lines + ["", "Each value is the mean ± sample std over seeds (one value: a single seed). Natural accuracy "
                    "is the target's test accuracy on held-out private images; epsilon is DP-SGD's (epsilon, delta) "
                    "from Opacus's accountant. Acc@1/Acc@5 are judged by independent evaluation models and mean "
                    "something only above their chance level (given under each table; n/a: not applicable); FID is "
                    "computed on their features, not Inception's. Where several judges score each cell, a value is "
                    "their mean and \"(judges ± s)\" the std over judges, averaged over seeds.", ""]


def _judge_lines(dr: Sequence[Dict[str, Any]]) -> List[str]:
    """A data set's judges: the trained ones' test accuracy against chance, and the independent judge's, with what
    it shares with the target."""
    lines: List[str] = []
    evals = _mean_std(list({r["artifact_seed"]: r.get("evaluator_test_accuracy") for r in dr}.values()))
    if evals[0] is not None:
        classes = sorted({r["n_classes"] for r in dr if isinstance(r.get("n_classes"), int)})
        chance = "" if len(classes) != 1 else f" (chance {1 / classes[0]:.3f} with {classes[0]} classes)"
        n_judges = max(int(r.get("n_judges") or 1) for r in dr)
        what = "Evaluation model" if n_judges == 1 else f"Evaluation models' (mean of {n_judges} judges)"
        lines += [f"{what} test accuracy: {_fmt(*evals, '.3f')}{chance}.", ""]
    independent = _mean_std(list({r["artifact_seed"]: r.get("independent_test_accuracy") for r in dr}.values()))
    if independent[0] is not None:
        shared = sorted({s for r in dr for s in r.get("independent_shares") or []})
        lines += [f"Independent judge ({markdown_text(dr[0].get('independent_judge') or 'dlib')}) accuracy on the "
                  f"real private test images at the attack's resolution: {_fmt(*independent, '.3f')}"
                  + (f"; it shares {markdown_text(', '.join(map(str, shared)))} with the target, so it is not "
                     "independent of it"
                     if shared else "") + ".", ""]
    return lines


def _metric_table(key: str, title: str, spec: str, da: Sequence[Dict[str, Any]],
                  dr: Sequence[Dict[str, Any]]) -> List[str]:
    """One metric's table of a data set: a row per defense (its natural accuracy and epsilon, one value per
    target), a column per attack/variant (the mean over seeds of ``key``)."""
    pairs = _pairs(da)
    lines = [f"### {title}", ""]
    if key.startswith("acc@"):
        lines += [_chance_note(int(key[4:]), dr), ""]
    header = ["defense", "natural acc", "epsilon"] + [markdown_text(f"{a}/{v}") for a, v in pairs]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for label in _labels(da):
        la = [a for a in da if a["defense_label"] == label]
        lr = [r for r in dr if r["defense_label"] == label]
        # natural accuracy: one value per target (seed), not per attack cell
        per_seed = {(r["artifact_seed"]): r.get("natural_accuracy") for r in lr}
        nat = _mean_std(list(per_seed.values()))
        eps = _mean_std(list({r["artifact_seed"]: r.get("epsilon") for r in lr}.values()))
        cells = [markdown_text(label), _fmt(*nat, ".3f"), "-" if eps[0] is None else _fmt(*eps, ".2f")]
        for a, v in pairs:
            match = [x for x in la if (x["attack"], x["variant"]) == (a, v)]
            judge_std = match[0].get(key + "_judge_std") if match and match[0]["n_judges"] > 1 else None
            cells.append(_fmt(match[0][key], match[0][key + "_std"], match[0][key + "_n"], spec, judge_std)
                         if match else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _figure_lines(figures: Optional[List[Path]], out: Path) -> List[str]:
    if not figures:
        return []
    return ["### Figures", ""] + [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in figures] + [""]


def _reconstruction_lines(dr: Sequence[Dict[str, Any]], images: Dict[str, Dict[str, Path]], out: Path) -> List[str]:
    """A data set's table of cells, each linked to its image grid and its prior's samples."""
    lines = ["### Reconstructions (first column: a real private image; last: a sample of the prior searched)",
             "", "| defense | attack/variant | seed | Acc@1 | image | prior samples |", "|---|---|---|---|---|---|"]
    for r in dr:
        img = images.get(r["cell_id"], {})
        link = (f"[{markdown_text(r['cell_id'])}]({img['reconstructions'].relative_to(out).as_posix()})"
                if "reconstructions" in img else "(no saved reconstructions)")
        link += " | " + (f"[prior]({img['prior_samples'].relative_to(out).as_posix()})" if "prior_samples" in img
                         else "-")
        acc = "n/a" if r.get("acc@1") is None else f"{r['acc@1']:.3f}"
        pair = markdown_text(pair_label(r))
        label, seed = markdown_text(r["defense_label"]), markdown_text(r["seed"])
        lines.append(f"| {label} | {pair} | {seed} | {acc} | {link} |")
    return lines + [""]


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _chance_line(ax: Any, aggs: Sequence[Dict[str, Any]]) -> None:
    """A dotted line at the Acc@1 chance level of these cells (one per distinct level)."""
    levels = sorted({round(a["chance@1"], 6) for a in aggs if a.get("chance@1") is not None})
    for i, level in enumerate(levels):
        ax.axhline(level, color="grey", linestyle=":", linewidth=1, label="chance" if i == 0 else None)


def _spread_words(aggs: Sequence[Dict[str, Any]]) -> str:
    """How a figure's points were made: a mean ± std over seeds, or one seed each (no error bars)."""
    return "mean ± std over seeds" if _several_seeds(aggs) else "one seed each: no error bars"


def _several_seeds(aggs: Sequence[Dict[str, Any]]) -> bool:
    """Whether any point of :func:`aggregate`'s rows is a mean over seeds (one seed has no spread to draw)."""
    return any((a.get("acc@1_n", a.get("n")) or 1) > 1 for a in aggs)


def _mark_matched_level(ax: Any, aggs: Sequence[Dict[str, Any]], colors: Dict[str, Any]) -> None:
    """The natural accuracy the report compares defenses at (:func:`mi_art.evaluations.utility.matched_utility`)
    as a dashed line, and each defense's interpolated Acc@1 there as a cross; nothing without a defense of
    several settings."""
    matched = [e for e in matched_utility(aggs) if not e["single"] and e["panel"] is not None]
    if not matched:
        return
    level = matched[0]["level"]
    ax.axvline(level, color="black", linestyle="--", linewidth=0.8, alpha=0.6, label=f"equal utility ({level:.3f})")
    ax.annotate(f"equal utility {level:.3f}", (level, 1.0), xytext=(-3, -3), textcoords="offset points",
                rotation=90, fontsize=7, ha="right", va="top")
    for e in matched:
        ax.plot([level], [e["panel"][1]], marker="X", markersize=8, color=colors[e["defense"]],
                markeredgecolor="black", linestyle="none")


def plot_frontier(path: Path, dataset: str, aggs: List[Dict[str, Any]]) -> Path:
    """The privacy-utility frontier of :func:`aggregate`'s rows: Acc@1 against natural accuracy per defense
    strength, with their spread over seeds, one panel per (attack, variant); DP points labelled by epsilon. Where
    an independent judge scored the cells, its Acc@1 of the same reconstructions is drawn too (hollow markers,
    dotted), so a defense that looks effective by one judge and not the other shows. The natural accuracy the
    report's "Defenses at equal utility" table compares defenses at is a dashed line, each defense's Acc@1 there a
    cross."""
    plt = _pyplot()
    pairs = _pairs(aggs)
    defenses = list(dict.fromkeys(a["defense"] for a in aggs))
    colors = {d: plt.get_cmap("tab10")(i % 10) for i, d in enumerate(defenses)}
    markers = "osD^v<>px*h"
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 3.8), squeeze=False)
    for ax, (attack, variant) in zip(axes[0], pairs):
        pa = [a for a in aggs if (a["attack"], a["variant"]) == (attack, variant)]
        for i, d in enumerate(defenses):
            pts = sorted([a for a in pa if a["defense"] == d and a["natural_accuracy"] is not None
                          and a["acc@1"] is not None], key=lambda a: a["natural_accuracy"])
            if not pts:
                continue
            x = [a["natural_accuracy"] for a in pts]
            y = [a["acc@1"] for a in pts]
            spread = _several_seeds(pts)
            ax.errorbar(x, y, xerr=[a["natural_accuracy_std"] or 0 for a in pts] if spread else None,
                        yerr=[a["acc@1_std"] or 0 for a in pts] if spread else None, color=colors[d],
                        marker=markers[i % len(markers)], linestyle="-" if len(pts) > 1 else "none", capsize=2,
                        label=d)
            independent = [a for a in pts if a.get("independent_acc@1") is not None]
            if independent:  # the same targets judged by a model we did not train: hollow, dotted
                ax.plot([a["natural_accuracy"] for a in independent], [a["independent_acc@1"] for a in independent],
                        color=colors[d], marker=markers[i % len(markers)], markerfacecolor="none",
                        linestyle=":" if len(independent) > 1 else "none", label=f"{d} (independent judge)")
            if len(pts) > 1 or pts[0]["defense_params"]:
                for a in pts:
                    tag = a["defense_label"][len(d):].strip("()") or d
                    if a.get("epsilon") is not None:  # a DP point is read by its privacy budget
                        tag = f"ε={a['epsilon']:.3g}"
                    ax.annotate(tag, (a["natural_accuracy"], a["acc@1"]), fontsize=8, xytext=(3, 3),
                                textcoords="offset points")
        _chance_line(ax, pa)
        _mark_matched_level(ax, pa, colors)
        ax.set_title(f"{attack.upper()} {variant}", fontsize=9)
        ax.set_xlabel("natural accuracy of the target")
        ax.set_ylabel("attack accuracy Acc@1")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7, loc="best")
    title = f"Privacy-utility frontier on {dataset} (up and right: useful but leaky; {_spread_words(aggs)})"
    fig.suptitle(wrap_title(title, 4.2 * len(pairs)), fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bars(path: Path, dataset: str, aggs: List[Dict[str, Any]]) -> Path:
    plt = _pyplot()
    pairs, labels = _pairs(aggs), _labels(aggs)
    width = 0.8 / max(1, len(pairs))
    width_in = max(5.0, 1.0 + 0.9 * len(labels) * max(1, len(pairs)) * 0.5)
    fig, ax = plt.subplots(figsize=(width_in, 3.8))
    x = np.arange(len(labels))
    several = _several_seeds(aggs)
    for j, (attack, variant) in enumerate(pairs):
        means, stds = [], []
        for label in labels:
            m = [a for a in aggs if a["defense_label"] == label and (a["attack"], a["variant"]) == (attack, variant)]
            means.append(m[0]["acc@1"] if m and m[0]["acc@1"] is not None else np.nan)
            stds.append(m[0]["acc@1_std"] if m and m[0]["acc@1_std"] is not None else 0.0)
        ax.bar(x + (j - (len(pairs) - 1) / 2) * width, means, width, yerr=stds if several else None, capsize=2,
               label=f"{attack}/{variant}")
    _chance_line(ax, aggs)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("attack accuracy Acc@1")
    ax.set_ylim(0, 1.22)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.legend(fontsize=7, ncol=min(4, len(pairs)), loc="upper center")
    ax.set_title(wrap_title(f"Attack accuracy per defense and attack variant on {dataset} ({_spread_words(aggs)})",
                            width_in - 1.0), fontsize=9)  # the axes: the figure less its margins
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cell_images(out: Path, row: Dict[str, Any], redraw: bool) -> Dict[str, Path]:
    """A cell's figures under ``images/``: its reconstructions (with a prior sample beside each row) and, when
    the cell saved them, its prior's samples under a title; ``{}`` for a cell without saved images."""
    from .plots import prior_title, save_prior_samples, save_reconstruction_grid

    _, npz = cell_paths(out, row["cell_id"])
    if not npz.is_file():
        return {}
    stem = safe_file_name(str(row["cell_id"]))
    paths = {"reconstructions": out / "images" / f"{stem}.png", "prior_samples": out / "images" / f"{stem}-prior.png"}
    with np.load(npz) as z:
        if "prior_samples" not in z.files:
            del paths["prior_samples"]
        if not redraw and all(p.is_file() and p.stat().st_mtime >= npz.stat().st_mtime for p in paths.values()):
            return paths
        recs, labels, real_x, real_y = z["reconstructions"], z["labels"], z["real_x"], z["real_y"]
        names = [str(n) for n in z["identity_names"]] if "identity_names" in z.files else None
        samples = z["prior_samples"] if "prior_samples" in z.files else None
    acc = "n/a" if row.get("acc@1") is None else f"{row['acc@1']:.2f}"
    if row.get("chance@1") is not None:
        acc += f" (chance {row['chance@1']:.2f})"
    prior = row.get("prior") or {}
    save_reconstruction_grid(paths["reconstructions"], recs, labels, real_x, real_y, identity_names=names,
                             title=f"{row['dataset']} {row['defense_label']}\n{form_attack(row).upper()} "
                                   f"{row['variant']} seed {row['seed']}: Acc@1 {acc} by the judges",
                             prior_samples=None if samples is None else samples[:10], caveat=prior.get("caveat"))
    if samples is not None:
        save_prior_samples(paths["prior_samples"], samples, title=f"{row['dataset']} seed {row.get('artifact_seed')}: "
                           + prior_title({"samples": len(samples), **prior}))
    return paths


def render_report(out_dir: PathLike, *, redraw_images: bool = False) -> List[Path]:
    """Write results.csv, results.json, report.md, the plots and the per-cell image grids from the
    saved cells of ``out_dir``. Image grids already newer than their cell are kept unless
    ``redraw_images``. Returns the main files written."""
    out = Path(out_dir)
    rows, meta = load_rows(out)
    if not rows:
        raise ValueError(f"no finished cells under {out / 'cells'}: nothing to report")
    public = [{**{k: r.get(k) for k in ROW_KEYS}, "warnings": row_warnings(r),
               **{k: r.get(k) for k in RECORD_KEYS}, "config": r.get("config")} for r in rows]  # normalised rows
    csv_path = write_atomic(out / "results.csv", _csv_text(rows))
    aggs = aggregate(rows)
    figures: Dict[str, List[Path]] = {}
    for dataset in dict.fromkeys(a["dataset"] for a in aggs):
        da = [a for a in aggs if a["dataset"] == dataset]
        name = safe_file_name(dataset)  # the name comes from cell files: it must not leave plots/
        figures[dataset] = [plot_frontier(out / "plots" / f"frontier-{name}.png", dataset, da),
                            _bars(out / "plots" / f"bars-{name}.png", dataset, da)]
    images = {r["cell_id"]: p for r in rows if (p := _cell_images(out, r, redraw_images))}
    for row in public:  # the record links each cell's figures
        row["images"] = {k: p.relative_to(out).as_posix() for k, p in images.get(row["cell_id"], {}).items()}
    json_path = write_atomic(out / "results.json", json.dumps(public, indent=1, default=str))
    md_path = write_atomic(out / "report.md", _markdown(rows, aggs, meta, figures, images, out))
    return [csv_path, json_path, md_path, out / "plots"]
