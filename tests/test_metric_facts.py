"""Metrics declared once (:mod:`mi_art.evaluations.metric_facts`): the report rendered from fixed rows is pinned
(tests/golden/), and a metric registered from outside reaches the row's columns, the report's tables, the grid
cell's row and ``mi-art attack``'s line without editing them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
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
           "judge_test_accuracy": 0.95, "n_identities": 4, "n_classes": 10, "n_reconstructions": 2,
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
    data set's rows without PRDC, independent judge, per-identity figures or number of classes, whose judges'
    accuracy is under its earlier key (``evaluator_test_accuracy``)."""
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
        row["evaluator_test_accuracy"] = row.pop("judge_test_accuracy")  # saved before the judges' key was renamed
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


# --------------------------------------------------------------------------------------------------
# A metric registered from outside reaches every table without editing them
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def toy():
    """A metric judged by the panel and optional, registered for the test only."""
    from mi_art.evaluations.metric_facts import MetricFacts, register_metric, unregister_metric

    facts = register_metric(MetricFacts("toy_sharpness", "Toy sharpness of the reconstructions (higher = sharper)",
                                        True, ".2f", judged_by_panel=True, optional=True, help="A test's metric."))
    yield facts
    unregister_metric(facts.name)


def test_a_registered_metric_is_a_column_a_table_and_a_judged_figure(toy):
    from mi_art.evaluations import leakage, metrics, report, rows

    assert tuple(rows.ROW_KEYS)[-2:] == ("toy_sharpness", "toy_sharpness_judge_std")
    # the columns files already have keep their order; the row's own columns added since follow them
    assert tuple(rows.ROW_KEYS)[:-2] == rows._FIRST_COLUMNS + rows._ADDED_COLUMNS
    assert report.METRICS[-1] == ("toy_sharpness", toy.label, ".2f")
    assert "toy_sharpness" in report.JUDGED and "toy_sharpness" in report.OPTIONAL_METRICS
    assert "toy_sharpness" in metrics.PANEL_METRICS and "toy_sharpness" not in leakage.LEAK_FIGURES


def test_forgotten_metric_leaves_every_table():
    from mi_art.evaluations import report, rows
    from mi_art.evaluations.metric_facts import MetricFacts, register_metric, unregister_metric

    register_metric(MetricFacts("toy_gone", "Gone", True))
    unregister_metric("toy_gone")
    assert "toy_gone" not in rows.ROW_KEYS and all(key != "toy_gone" for key, _, _ in report.METRICS)


def test_the_report_has_a_registered_metrics_table_csv_column_and_json_field(tmp_path, toy):
    rows = fixed_rows()
    for i, row in enumerate(rows[:2]):  # the undefended gmi/baseline cell's two seeds
        row.update({"toy_sharpness": 0.5 + 0.1 * i, "toy_sharpness_judge_std": 0.02})
    texts = _render(tmp_path / "out", rows)
    faces = texts["report.md"].split("\n## old\n")
    table = faces[0].split(f"### {toy.label}\n")[1].split("\n### ")[0]
    assert "| none | 0.900 ± 0.000 | - | 0.55 ± 0.07 (judges ± 0.02) | n/a | n/a |" in table
    assert toy.label not in faces[1]  # optional: no row of the old data set has it
    header, first = texts["results.csv"].splitlines()[:2]
    assert header.endswith(",toy_sharpness,toy_sharpness_judge_std") and first.endswith(",0.5,0.02")
    assert json.loads(texts["results.json"])[1]["toy_sharpness"] == 0.6


def _metric_columns():
    from mi_art.evaluations.metric_facts import metric_facts

    return [c for m in metric_facts() for c in m.columns]


def test_a_cells_row_copies_every_declared_metric_under_the_rows_names(toy):
    from mi_art.evaluations.metric_facts import row_figures

    result = {"target_test_accuracy": 0.9, "acc@1": 0.5, "acc@1_std": 0.1, "acc@1_judge_std": 0.01,
              "acc@1_judges": [0.49, 0.51], "queries": np.int64(7), "fid_eval_features": float("nan"),
              "toy_sharpness": np.float32(0.25), "toy_sharpness_judge_std": 0.5}
    figures = row_figures(result)
    assert set(figures) == set(_metric_columns())  # the toy's among them
    assert figures["natural_accuracy"] == 0.9  # the result's target_test_accuracy, under the row's name
    assert figures["toy_sharpness"] == 0.25 and figures["toy_sharpness_judge_std"] == 0.5
    assert figures["queries"] == 7 and isinstance(figures["queries"], int)  # a count stays a count
    assert figures["fid_eval_features"] is None and figures["precision"] is None  # not finite / not measured
    assert "acc@1_judges" not in figures  # each judge's value stays in the result


def test_a_grid_cell_writes_a_registered_metric_in_its_row(tmp_path, monkeypatch, toy):
    """run_cell's row, with the workbench and the attack faked: the toy metric and the declared renames are in it."""
    import types

    from mi_art.evaluations import cell_runner, executors, experiment
    from mi_art.evaluations.experiment import ExperimentConfig
    from mi_art.evaluations.grid import Cell

    split = types.SimpleNamespace(x=np.zeros((2, 1, 4, 4), np.float32), y=np.array([0, 1]))
    data = types.SimpleNamespace(num_classes=2, private_train=[0] * 6, private_identities=["a", "b"],
                                 private_all=lambda: split)

    class Bench:
        def __init__(self, config, cache, data, checked):
            self.config, self.data, self.defense_record = config, data, None

        def target(self):
            return "target"

        def judges(self):
            return ["judge"]

    def fake_attack(bench, target, judges):
        return {"attack": "gmi", "variant": "baseline", "target_test_accuracy": 0.875, "acc@1": 0.5,
                "n_judges": 1, "n_identities": 2, "n_reconstructions": 1, "iterations": 3, "warnings": [],
                "num_classes": 2, "chance@1": 0.5, "toy_sharpness": 0.75, "toy_sharpness_judge_std": 0.0,
                "reconstructions": np.zeros((2, 1, 4, 4), np.float32), "labels": np.array([0, 1])}

    monkeypatch.setattr(cell_runner, "load_data", lambda *a: data)
    monkeypatch.setattr(experiment, "Workbench", Bench)
    monkeypatch.setattr(experiment, "run_attack", fake_attack)
    cell = Cell("c0", ExperimentConfig(dataset="digits", attack="gmi", seed=4, attack_seed=9), "none")
    row = executors.run_cell(cell, tmp_path, None)
    assert row["toy_sharpness"] == 0.75 and row["toy_sharpness_judge_std"] == 0.0
    assert row["natural_accuracy"] == 0.875 and row["seed"] == 9 and row["artifact_seed"] == 4
    assert json.loads((tmp_path / "cells" / "c0.json").read_text())["toy_sharpness"] == 0.75


def test_the_judge_panel_averages_a_registered_metric_its_judges_compute(monkeypatch, toy):
    import torch
    from torch import nn

    from mi_art.evaluations import metrics, panel as panel_module

    measured = metrics.prdc  # the panel's judges compute it beside PRDC
    monkeypatch.setattr(panel_module, "prdc", lambda real, fake: {**measured(real, fake), "toy_sharpness": 0.5})
    torch.manual_seed(0)
    judges = [nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)) for _ in range(2)]
    rng = np.random.default_rng(0)
    x, y = rng.random((12, 1, 4, 4), dtype=np.float32), np.arange(12) % 3
    panel = metrics.judge_panel(judges, x, y, x, y)
    assert panel["toy_sharpness"] == 0.5 and panel["toy_sharpness_judges"] == [0.5, 0.5]
    assert panel["toy_sharpness_judge_std"] == 0.0


def test_mi_art_attacks_line_writes_a_registered_metric(toy):
    from mi_art.evaluations.cli import _prdc_and_exposure_line

    result = {"precision": 0.5, "recall": 0.25, "density": 1.0, "coverage": 0.5, "per_identity": [],
              "queries": 12, "toy_sharpness": 0.123}
    line = _prdc_and_exposure_line(result)
    assert "toy_sharpness 0.12; most exposed" in line and "queries" not in line
    assert "toy_sharpness" not in _prdc_and_exposure_line({**result, "toy_sharpness": None})


def test_a_metric_is_refused_with_a_message_naming_what_is_wrong(toy):
    from mi_art.evaluations.metric_facts import MetricFacts, get_metric, register_metric

    with pytest.raises(ValueError, match="'toy_sharpness' is already registered"):
        register_metric(MetricFacts("toy_sharpness", None, True))
    assert register_metric(toy) is toy and register_metric(replace := MetricFacts("toy_sharpness", None, True),
                                                           replace=True) is replace
    with pytest.raises(ValueError, match="a metric's name must be lower-case.*got 'Bad Name'"):
        register_metric(MetricFacts("Bad Name", None, True))
    with pytest.raises(ValueError, match="fmt must be a format spec.*got 'x!'"):
        register_metric(MetricFacts("toy_fmt", None, True, fmt="x!"))
    with pytest.raises(ValueError, match="unknown metric 'nope'; valid metrics: natural_accuracy, acc@1"):
        get_metric("nope")
    with pytest.raises(ValueError, match="must be a mi_art.evaluations.metric_facts.MetricFacts, got dict"):
        register_metric({"name": "x"})


def test_every_metric_column_files_have_is_declared():
    """The columns results files already have: each measured one is a declared metric's (so the frozen order and
    the declarations cannot drift apart)."""
    from mi_art.evaluations.rows import _ADDED_COLUMNS, _FIRST_COLUMNS, ROW_SOURCES

    declared = set(_metric_columns())
    described = {"cell_id", "dataset", "dataset_kind", "defense", "defense_params", "defense_label", "epsilon",
                 "delta", "attack", "variant", "seed", "artifact_seed", "chance@1", "chance@5", "cell_seconds",
                 "n_identities", "n_classes", "n_reconstructions", "n_candidates", "search_views", "iterations",
                 "n_judges", "access"}
    assert set(_FIRST_COLUMNS) == declared | described and not declared & described
    assert set(ROW_SOURCES) <= set(_FIRST_COLUMNS + _ADDED_COLUMNS)
    assert not set(_ADDED_COLUMNS) & declared
