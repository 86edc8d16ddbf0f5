"""Result rows of a grid evaluation on disk: their columns, where each cell's files live, which cells
are finished, and how a row's attack accuracies read against chance.

Both :mod:`mi_art.evaluations.executors` (which writes the rows) and :mod:`mi_art.evaluations.report` (which reads
them) import this module; neither imports the other at module level.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple, Union

from mi_art.renames import Renames

from .metric_facts import Names

__all__ = ["RENAMED_RECORD_KEYS", "ROW_KEYS", "ROW_SOURCES", "TOP_K", "cell_paths", "completed_cells",
           "finite_or_none", "normalise_row", "form_attack", "pair_label", "read_cell", "record_names_now"]

PathLike = Union[str, Path]

#: The k of the Acc@k columns of a row.
TOP_K = (1, 5)

#: The columns of results.csv as they were when metrics came to be declared in one place, in that order (files
#: already written have it; ``judge_test_accuracy`` was then ``evaluator_test_accuracy``,
#: :data:`RENAMED_RECORD_KEYS`); never extended: a metric registered since
#: (:mod:`~mi_art.evaluations.metric_facts`) adds its columns after these.
_FIRST_COLUMNS = ("cell_id", "dataset", "dataset_kind", "defense", "defense_params", "defense_label",
                  "natural_accuracy", "epsilon", "delta", "attack", "variant", "seed", "artifact_seed", "acc@1",
                  "acc@1_std", "acc@5", "acc@5_std", "chance@1", "chance@5", "knn_dist", "fid_eval_features",
                  "seconds", "cell_seconds", "judge_test_accuracy", "n_identities", "n_classes",
                  "n_reconstructions", "n_candidates", "search_views", "iterations", "n_judges", "acc@1_judge_std",
                  "acc@5_judge_std", "knn_dist_judge_std", "fid_eval_features_judge_std", "access", "queries",
                  "independent_acc@1", "independent_acc@5", "independent_dist", "independent_test_accuracy",
                  "independent_ratio", "precision", "recall", "density", "coverage", "precision_judge_std",
                  "recall_judge_std", "density_judge_std", "coverage_judge_std")


#: Columns a row has gained since :data:`_FIRST_COLUMNS` that are no metric's, in the order they came; after the
#: first columns, before the metrics'. ``form``: the name of the cell's attack form in its grid (None: the grid's
#: one default form; :class:`~mi_art.evaluations.grid.FormSpec`).
_ADDED_COLUMNS = ("form",)


def _row_keys() -> Tuple[str, ...]:
    from .metric_facts import metric_facts

    first = _FIRST_COLUMNS + _ADDED_COLUMNS
    added = [c for m in metric_facts() for c in m.columns if c not in first]
    return first + tuple(dict.fromkeys(added))


#: Columns of a result row, in the order of results.csv: :data:`_FIRST_COLUMNS`, then the columns of every metric
#: registered since (:attr:`~mi_art.evaluations.metric_facts.MetricFacts.columns`), read at each use. ``dataset``
#: is the name the data set's results go under (an image folder's own name, or the ``name`` its options give;
#: :func:`mi_art.data.dataset_label`), ``dataset_kind`` its loader ("image-folder", "digits", ...). ``chance@k`` is
#: the Acc@k of a judge guessing uniformly among its ``n_classes`` classes; ``acc@k`` is None (``n/a``) when
#: ``k >= n_classes``. Attack metrics are means over the cell's ``n_judges`` evaluation models; ``*_judge_std``
#: their spread over judges. Columns named otherwise upstream: :data:`ROW_SOURCES`.
ROW_KEYS: Sequence[str] = Names(_row_keys)

#: Where a row's columns come from when the row calls them otherwise (the row keeps the names results files were
#: written with, but for :data:`RENAMED_RECORD_KEYS`, read under their names now). ``config.X``: the cell's
#: :class:`~mi_art.evaluations.experiment_config.ExperimentConfig` field; ``result.X``: ``run_attack``'s result (what
#: ``mi-art attack`` saves in its results.json); ``cell.X``: the grid's cell. A metric's own renames are its
#: :attr:`~mi_art.evaluations.metric_facts.MetricFacts.source` (``natural_accuracy`` is
#: ``result.target_test_accuracy``). In :func:`~mi_art.evaluations.report.aggregate`'s rows ``seed`` becomes the
#: list ``seeds`` and a metric's ``_std`` its spread over seeds (in a row, Acc@k's is over reconstruction rounds).
ROW_SOURCES: Dict[str, str] = {
    "seed": "config.attack_seed (result.attack_seed): the attack's seed",
    "artifact_seed": "config.seed: the seed of the data split, target, judges and prior",
    "dataset": "cell.dataset_label (result.dataset is the data's name)",
    "dataset_kind": "config.dataset: the data set's loader",
    "defense_label": "cell.defense_label",
    "epsilon": "the target's defense record (result.epsilon only for a target given with its record)",
    "delta": "the target's defense record (result.delta likewise)",
    "attack": "result.attack, with \"[access]\" appended below white-box access (config.access)",
    "n_classes": "result.num_classes: the judges' classes",
    "form": "cell.form: the grid's name for the cell's settings; the grid that shows the row names it (a form's "
            "cell is its configuration's, so a saved row may have been computed under another form's name)",
    "n_judges": "result.n_judges: the panel's trained judges (result.judge_test_accuracies has each one's "
                "accuracy, the row their mean, judge_test_accuracy)",
}

#: Keys of stored records (a grid's rows, ``run_attack``'s result as ``mi-art attack`` and the benchmarks save it)
#: that were renamed: "judge" is the one word for the trained models that score an attack, once also called
#: "evaluator". Records are written under the names now; a record written before is read under them by
#: :func:`record_names_now`, the one place that knows the earlier names.
RENAMED_RECORD_KEYS = Renames("record key", {"evaluator_test_accuracy": "judge_test_accuracy",
                                             "evaluator_test_accuracies": "judge_test_accuracies"})


def record_names_now(record: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of the stored ``record`` with every key of :data:`RENAMED_RECORD_KEYS` under its name now (nothing is
    reported: the user wrote none of them), so that files written before the rename read as files written now."""
    return RENAMED_RECORD_KEYS.keys(record, quiet=True)


def form_attack(row: Dict[str, Any]) -> str:
    """The row's attack under its attack form's name, ``"gmi [paper]"`` (the attack alone for the default form): what
    the report groups and labels rows by, so that two forms of one attack are kept apart as two attacks are (as
    the access level is, written into ``attack`` itself)."""
    form = row.get("form")
    return str(row["attack"]) if form is None else f"{row['attack']} [{form}]"


def pair_label(row: Dict[str, Any]) -> str:
    """``"gmi/lomma"``, or ``"gmi [paper]/lomma"`` for a row of a named attack form (:func:`form_attack`): a row's
    attack and variant in lines and tables."""
    return f"{form_attack(row)}/{row['variant']}"


def finite_or_none(x: Any) -> Optional[float]:
    """A float for JSON and tables, ``None`` for missing or non-finite values."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def cell_paths(out_dir: PathLike, cid: str) -> Tuple[Path, Path]:
    """``(<out>/cells/<id>.json, <out>/cells/<id>.npz)``."""
    folder = Path(out_dir) / "cells"
    return folder / f"{cid}.json", folder / f"{cid}.npz"


def read_cell(path: Path) -> Optional[Dict[str, Any]]:
    """The row saved at ``path`` under the names records have now (:func:`record_names_now`), or None for a
    missing, partial or foreign file."""
    try:
        row = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record_names_now(row) if isinstance(row, dict) and "cell_id" in row else None


def completed_cells(out_dir: PathLike, ids: Optional[Iterable[str]] = None) -> Dict[str, Dict[str, Any]]:
    """Rows of the finished cells under ``<out>/cells`` (only those in ``ids`` when given)."""
    folder = Path(out_dir) / "cells"
    wanted = set(ids) if ids is not None else None
    out: Dict[str, Dict[str, Any]] = {}
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.json")):
        if wanted is not None and path.stem not in wanted:
            continue
        row = read_cell(path)
        if row is not None and row["cell_id"] == path.stem:
            out[path.stem] = row
    return out


def _n_classes(row: Dict[str, Any]) -> Optional[int]:
    k = row.get("n_classes")
    return int(k) if isinstance(k, (int, float)) and not isinstance(k, bool) and k >= 1 else None


def _name_dataset(row: Dict[str, Any]) -> None:
    """Rows written before data sets kept their names called every image folder "image-folder": name them as rows
    are named now, from the folder (or ``name`` option) their configuration holds; fill ``dataset_kind`` in."""
    from mi_art.data import dataset_label

    config = row.get("config") if isinstance(row.get("config"), dict) else {}
    kind = config.get("dataset", row.get("dataset"))
    if row.get("dataset") in ("image-folder", "folder") and config.get("data_root"):
        options = config.get("data_options") if isinstance(config.get("data_options"), dict) else {}
        try:
            row["dataset"] = dataset_label(row["dataset"], config["data_root"], options)
        except ValueError:
            pass
    row.setdefault("dataset_kind", kind)


def _names_now(row: Dict[str, Any]) -> None:
    """Rows written before a setting, an architecture or a defense was renamed hold the earlier names (``prior_steps``
    in their ``config``, the defense ``"nls"`` and its label ``"nls(alpha=-0.05)"``): read them under the names now,
    so that a folder's earlier and later cells are one group of the report (their ids never changed). Nothing is
    reported: the user wrote none of these names."""
    from mi_art.defenses.registry import RENAMED_DEFENSES

    from .experiment_config import SETTINGS

    defense = row.get("defense")
    if defense in RENAMED_DEFENSES:
        row["defense"] = RENAMED_DEFENSES.table[defense]
        label = row.get("defense_label")
        if isinstance(label, str) and (label == defense or label.startswith(f"{defense}(")):
            row["defense_label"] = row["defense"] + label[len(defense):]
    if isinstance(row.get("config"), dict):
        row["config"] = SETTINGS.resolved(SETTINGS.renamed.keys(row["config"], quiet=True), quiet=True)


def normalise_row(row: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of ``row`` whose Acc@k reads against chance: ``acc@k`` and ``acc@k_std`` are None where
    ``k >= n_classes`` (1.0 by construction: not applicable), ``chance@k`` is filled in from
    ``n_classes``. Rows written before these columns existed (no ``n_classes``) keep their values
    and get no chance level (None); rows that call an image folder "image-folder" get the folder's name, and rows
    written under earlier names the names now (their keys: :func:`record_names_now`; the settings, architectures
    and defenses they hold: :func:`_names_now`)."""
    from .metrics import chance_level, topk_applicable

    out = record_names_now(row)
    _name_dataset(out)
    _names_now(out)
    n_classes = _n_classes(row)
    for k in TOP_K:
        if n_classes is None:
            out.setdefault(f"chance@{k}", None)
            continue
        if out.get(f"chance@{k}") is None:
            out[f"chance@{k}"] = chance_level(k, n_classes)
        if not topk_applicable(k, n_classes):
            out[f"acc@{k}"] = out[f"acc@{k}_std"] = out[f"acc@{k}_judge_std"] = None
    return out
