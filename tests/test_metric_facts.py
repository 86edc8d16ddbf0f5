"""Metrics declared once (:mod:`mi_art.evaluations.metric_facts`): the report rendered from fixed rows is pinned
(tests/golden/), and a metric registered from outside reaches the row's columns, the report's tables, the grid
cell's row and ``mi-art attack``'s line without editing them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

from mi_art.evaluations.report import render_report

GOLDEN = Path(__file__).resolve().parent / "golden" / "metric_rows"
PINNED = ("report.md", "results.csv", "results.json")


def _identities(acc: float) -> List[Dict[str, Any]]:
    return [{"identity": i, "name": f"person{i}", "n_reconstructions": 2, "n_private_train": 5 + i,
             "acc@1": round(min(1.0, acc * (0.5 + 0.25 * i)), 3), "knn_dist": 10.0 + i,
             "independent_acc@1": round(acc * 0.4 * (1 + i % 2), 3), "independent_dist": 0.5 + 0.05 * i}
            for i in range(4)]


def _row(cid: str, index: int, *, defense: str = "none", label: str = "none", attack: str = "gmi",
         variant: str = "baseline", seed: int = 0, acc1: float = 0.6, natural: float = 0.9, **extra: Any) -> dict:
    row = {"cell_id": cid, "index": index, "dataset": "faces", "dataset_kind": "image-folder", "defense": defense,
           "defense_params": {}, "defense_label": label, "natural_accuracy": natural, "epsilon": None, "delta": None,
           "attack": attack, "variant": variant, "seed": seed, "artifact_seed": seed, "acc@1": acc1,
           "acc@1_std": 0.05, "acc@5": min(1.0, acc1 + 0.2), "acc@5_std": 0.02, "knn_dist": 12.5 - 5 * acc1,
           "fid_eval_features": 80.0 - 40 * acc1, "seconds": 3.0 + seed, "cell_seconds": 4.0 + seed,
           "evaluator_test_accuracy": 0.95, "n_identities": 4, "n_classes": 10, "n_reconstructions": 2,
           "n_candidates": None, "search_views": None, "iterations": 10, "n_judges": 3,
           "acc@1_judge_std": 0.04, "acc@5_judge_std": 0.03, "knn_dist_judge_std": 0.5,
           "fid_eval_features_judge_std": 2.0, "access": "white-box", "queries": None,
           "precision": 0.7 * acc1, "recall": 0.5 * acc1, "density": 1.1 * acc1, "coverage": 0.6 * acc1,
           "precision_judge_std": 0.01, "recall_judge_std": 0.02, "density_judge_std": 0.03,
           "coverage_judge_std": 0.04, "independent_acc@1": 0.8 * acc1, "independent_acc@5": min(1.0, acc1),
           "independent_dist": 0.7 - 0.2 * acc1, "independent_test_accuracy": 0.9, "independent_ratio": 0.8,
           "independent_judge": "dlib", "warnings": ["a recorded warning"], "surrogates": None,
           "prior": {"fid": 55.0, "steps": 100}, "n_train": 200, "per_identity": _identities(acc1)}
    row.update(extra)
    return row


def fixed_rows() -> List[Dict[str, Any]]:
    """Two seeds of an undefended and a DP target attacked white-box, one black-box cell with queries, and an old
    data set's rows without PRDC, independent judge, per-identity figures or number of classes."""
    dp = {"defense": "dp-sgd", "label": "dp-sgd(epsilon=8)", "natural": 0.7, "epsilon": 7.9, "delta": 1e-5,
          "defense_record": {"defense": "dp-sgd", "epsilon": 7.9, "delta": 1e-5, "accountant": "rdp",
                             "details": {"noise_multiplier": 1.1, "sample_rate": 0.05, "steps": 400,
                                         "n_train": 200}}}
    rows = [_row("n0", 0, seed=0, acc1=0.6), _row("n1", 1, seed=1, acc1=0.7),
            _row("n0v", 2, seed=0, variant="lomma", acc1=0.8),
            _row("d0", 3, seed=0, acc1=0.3, **dp), _row("d1", 4, seed=1, acc1=0.2, **dp),
            _row("b0", 5, seed=0, attack="gmi[black-box]", access="black-box", acc1=0.4, queries=5000)]
    old = []
    for i, acc in enumerate((0.5, 0.3)):
        row = _row(f"o{i}", 6 + i, seed=i, acc1=acc, dataset="old", n_judges=1)
        for key in ("precision", "recall", "density", "coverage", "precision_judge_std", "recall_judge_std",
                    "density_judge_std", "coverage_judge_std", "independent_acc@1", "independent_acc@5",
                    "independent_dist", "independent_test_accuracy", "independent_ratio", "independent_judge",
                    "per_identity", "n_classes", "acc@1_judge_std", "acc@5_judge_std", "knn_dist_judge_std",
                    "fid_eval_features_judge_std", "n_judges", "dataset_kind", "n_candidates", "search_views"):
            row.pop(key)
        old.append(row)
    return rows + old


def _render(out: Path, rows: List[Dict[str, Any]]) -> Dict[str, str]:
    (out / "cells").mkdir(parents=True, exist_ok=True)
    for row in rows:
        (out / "cells" / f"{row['cell_id']}.json").write_text(json.dumps(row))
    render_report(out)
    return {name: (out / name).read_text() for name in PINNED}


def test_the_report_of_fixed_rows_is_unchanged(tmp_path):
    """report.md, results.csv and results.json of the fixed rows, byte for byte as rendered before the metrics
    were declared in one place (regenerate with MI_ART_WRITE_GOLDEN=1 only for an intended change)."""
    import os

    texts = _render(tmp_path / "out", fixed_rows())
    if os.environ.get("MI_ART_WRITE_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            (GOLDEN / name).write_text(text)
    for name, text in texts.items():
        assert text == (GOLDEN / name).read_text(), f"{name} differs from tests/golden/metric_rows/{name}"
