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
from pathlib import Path
from typing import Any, Dict, List, Sequence

from mi_art.quality import NEAR_CHANCE_FACTOR, WEAK_JUDGE_ACCURACY, WEAK_TARGET_ACCURACY, weak_model_warnings
from mi_art.utils import write_atomic

# The report's parts, each in a module of its own, are importable from here as before: the rows and their warnings
# (report_rows), the text of report.md (report_text, markdown), the figures (report_plots). NEAR_CHANCE_FACTOR,
# WEAK_JUDGE_ACCURACY, WEAK_TARGET_ACCURACY and weak_model_warnings are mi_art.quality's.
from .markdown import markdown_text, mean_std_text as _fmt, safe_file_name  # noqa: F401
from .report_plots import _bars, _cell_images, _chance_line, _pyplot, plot_frontier  # noqa: F401
from .report_rows import (AVERAGED, EXPOSED_IDENTITIES, JUDGED, METRICS, OPTIONAL_METRICS, RECORD_KEYS,  # noqa: F401
                          PathLike, _dataset_warnings, _mean_std, aggregate, dp_delta_warnings, load_rows,
                          row_warnings)
from .report_text import (DISAGREEMENT, EPSILON_NOTE, OUTPUT_DEFENSE_NOTE, TRANSFER_RATIO, _markdown,  # noqa: F401
                          identity_lines, privacy_line, transfer_lines)
from .rows import ROW_KEYS, TOP_K, cell_paths, completed_cells, finite_or_none, normalise_row  # noqa: F401

__all__ = ["RECORD_KEYS", "aggregate", "dp_delta_warnings", "identity_lines", "load_rows", "markdown_text",
           "privacy_line", "render_report", "row_warnings", "transfer_lines"]


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
