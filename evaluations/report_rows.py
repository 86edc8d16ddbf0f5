"""The report's rows: loaded from the saved cells, their warnings, averaged over seeds, and the metrics the report's
tables show (:mod:`mi_art.evaluations.report`)."""
from __future__ import annotations

import json
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from mi_art.quality import weak_model_warnings

from .metric_facts import metric_facts, metric_names
from .rows import completed_cells, form_attack, normalise_row

PathLike = Union[str, Path]


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
        target_accuracy=row.get("natural_accuracy"), judge_accuracy=row.get("judge_test_accuracy"),
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
        out += [f"{where}{w}" for w in weak_model_warnings(judge_accuracy=r.get("judge_test_accuracy"),
                                                           n_classes=r.get("n_classes"))]
    for (label, seed), r in targets.items():
        where = f"{label}" + (f", seed {seed}" if len(seeds) > 1 else "")
        out += [f"{where}: {w}" for w in weak_model_warnings(
            target_accuracy=r.get("natural_accuracy"), n_classes=r.get("n_classes"),
            defended=r.get("defense", "none") != "none") + dp_delta_warnings(r)]
    recorded: Dict[str, None] = {}
    for r in rows:
        said = set(weak_model_warnings(target_accuracy=r.get("natural_accuracy"),
                                       judge_accuracy=r.get("judge_test_accuracy"), n_classes=r.get("n_classes"),
                                       defended=r.get("defense", "none") != "none") + dp_delta_warnings(r))
        where = f"{r.get('defense_label')}" + (f", seed {r.get('artifact_seed')}" if len(seeds) > 1 else "")
        for w in r.get("warnings") or []:
            if isinstance(w, str) and w not in said:
                recorded.setdefault(f"{where}: {w}")
    return out + list(recorded)


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

