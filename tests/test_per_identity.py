"""Which identities leak: each record's per-identity figures (Acc@1 and KNN distance by the judges, Acc@1 by the
independent judge, the identity's private training images) add up to the record's aggregates, and the report
names the most and least exposed identities."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from mi_art.evaluations.experiment import identity_leakage
from mi_art.evaluations.independent import EmbeddingJudge, independent_record
from mi_art.evaluations.leakage import merge_identities, rank_identities
from mi_art.evaluations.metrics import judge_panel
from mi_art.evaluations.report import identity_lines, render_report


def _weighted(rows, key):
    n = np.array([r["n_reconstructions"] for r in rows], dtype=float)
    return float((n * np.array([r[key] for r in rows])).sum() / n.sum())


def test_per_identity_figures_weighted_by_reconstructions_give_the_aggregates(target, digits):
    """Identities with 3, 7, 12, 1 and 9 reconstructions (real test digits, some of another class so that
    Acc@1 differs between identities): their Acc@1 and KNN distance, weighted by reconstructions, are the
    panel's; an unweighted mean would not be."""
    rng = np.random.default_rng(0)
    counts = {0: 3, 1: 7, 2: 12, 3: 1, 4: 9}
    test = digits.private_test
    picks = np.concatenate([rng.choice(np.flatnonzero(test.y == k), n, replace=False) for k, n in counts.items()])
    labels = test.y[picks].copy()
    labels[::4] = (labels[::4] + 1) % 5  # a quarter claim another identity: those are misses
    priv = digits.private_all()
    second = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    torch.manual_seed(0)
    panel = judge_panel([target, second], torch.from_numpy(test.x[picks]), labels, priv.x, priv.y,
                        train_x=digits.private_train.x, train_y=digits.private_train.y)
    rows = panel["per_identity"]
    assert [r["identity"] for r in rows] == sorted(set(labels.tolist()))
    assert sum(r["n_reconstructions"] for r in rows) == len(labels)
    assert [r["n_private_train"] for r in rows] == [int((digits.private_train.y == r["identity"]).sum()) for r in rows]
    assert _weighted(rows, "acc@1") == pytest.approx(panel["acc@1"], abs=1e-12)
    assert _weighted(rows, "knn_dist") == pytest.approx(panel["knn_dist"], rel=1e-12)
    accs = [r["acc@1"] for r in rows]
    assert len(set(accs)) > 1 and np.mean(accs) != pytest.approx(panel["acc@1"])  # the weighting matters here
    json.dumps(rows)


class _MeanColour(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def test_the_independent_judge_per_identity_and_the_record_rows():
    centres = np.stack([[k / 5, 1 - k / 5, 0.5] for k in range(4)])
    y = np.repeat(np.arange(4), 3)
    rng = np.random.default_rng(0)

    def coloured(values):
        return np.clip(values[:, :, None, None] + 0.01 * rng.standard_normal((len(values), 3, 4, 4)), 0, 1
                       ).astype(np.float32)

    judge = EmbeddingJudge(_MeanColour(), coloured(centres[y]), y, 4, name="colour", device="cpu")
    labels = np.array([0, 0, 0, 0, 1, 2, 2, 3, 3, 3])
    shown = labels.copy()
    shown[[1, 4, 7]] = [2, 3, 0]  # these images show another identity
    record = independent_record(judge, nn.Linear(3, 4), coloured(centres[shown]), labels, coloured(centres[y]), y,
                                {"acc@1": 0.5})
    rows = record["independent_per_identity"]
    assert [r["independent_acc@1"] for r in rows] == [0.75, 0.0, 1.0, pytest.approx(2 / 3)]
    assert _weighted(rows, "independent_acc@1") == pytest.approx(record["independent_acc@1"])
    panel_rows = [{"identity": k, "n_reconstructions": n, "n_private_train": 3, "acc@1": 0.5, "knn_dist": 1.0}
                  for k, n in zip(range(4), (4, 1, 2, 3))]
    merged = identity_leakage(panel_rows, rows, ["ann", "bob", "cy", "dee"])
    assert merged[1] == {"identity": 1, "name": "bob", "n_reconstructions": 1, "n_private_train": 3, "acc@1": 0.5,
                         "knn_dist": 1.0, "independent_acc@1": 0.0, "independent_dist": rows[1]["independent_dist"]}
    assert identity_leakage(panel_rows, None) == panel_rows  # no independent judge: the panel's rows


def _identities(accs, knn=None, n_train=None):
    return [{"identity": k, "n_reconstructions": 2, "acc@1": a, "knn_dist": (knn or {}).get(k, 1.0),
             "n_private_train": (n_train or {}).get(k, 5)} for k, a in enumerate(accs)]


def test_ranking_and_merging_over_seeds():
    seed0 = {"per_identity": _identities([1.0, 0.0, 0.5, 0.5])}
    seed1 = {"per_identity": [dict(r, n_reconstructions=6) for r in _identities([0.0, 0.0, 0.5, 1.0])]}
    merged = merge_identities([seed0, seed1, {"acc@1": 0.3}])  # a row without the list is skipped
    assert [m["acc@1"] for m in merged] == [0.25, 0.0, 0.5, 0.875]
    assert [m["n_reconstructions"] for m in merged] == [8] * 4
    most, least = rank_identities(merged, 2)
    assert [m["identity"] for m in most] == [3, 2] and [m["identity"] for m in least] == [1, 0]
    # ties in Acc@1 go to the closer reconstructions (lower KNN distance); no identity is in both lists
    most, least = rank_identities(_identities([0.5, 0.5, 0.5], knn={0: 3.0, 1: 1.0, 2: 2.0}), 2)
    assert [m["identity"] for m in most] == [1, 2] and [m["identity"] for m in least] == [0]


def _cell(cid, index, per_identity=None, acc1=0.6, variant="baseline", defense="none"):
    row = {"cell_id": cid, "index": index, "dataset": "faces", "defense": defense, "defense_params": {},
           "defense_label": defense, "natural_accuracy": 0.9, "attack": "gmi", "variant": variant, "seed": 0,
           "artifact_seed": 0, "acc@1": acc1, "acc@1_std": 0.0, "acc@5": 0.9, "knn_dist": 1.0,
           "fid_eval_features": None, "seconds": 1.0, "judge_test_accuracy": 0.95, "n_classes": 10,
           "n_identities": 4, "n_reconstructions": 2, "n_judges": 1}
    if per_identity is not None:
        row["per_identity"] = per_identity
    return row


def test_the_report_names_the_most_exposed_identity(tmp_path):
    leaky = _identities([0.5, 0.0, 1.0, 0.5], n_train={2: 3})
    leaky[2]["name"] = "Carol*X"
    rows = [_cell("a", 0, leaky, acc1=0.5), _cell("b", 1, _identities([0.0] * 4), acc1=0.1, variant="lomma")]
    lines = identity_lines(rows, n=1)
    table = [line for line in lines if line.startswith("| none |")]
    assert len(table) == 1  # one line per defense: its strongest attack (gmi/baseline, Acc@1 0.5)
    cells = [c.strip() for c in table[0].split("|")]
    assert cells[2] == "gmi/baseline" and cells[3] == "2 (Carol\\*X): 1.00, 3 training images"
    assert cells[4] == "1: 0.00, 5 training images"
    # written into report.md, and an old cell without per-identity figures still renders
    cells_dir = tmp_path / "cells"
    cells_dir.mkdir()
    for row in rows + [_cell("c", 2, None, defense="mid")]:
        (cells_dir / f"{row['cell_id']}.json").write_text(json.dumps(row))
    render_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "### Which identities leak" in md and "2 (Carol\\*X): 1.00" in md
    saved = {r["cell_id"]: r for r in json.loads((tmp_path / "results.json").read_text())}
    assert saved["a"]["per_identity"] == leaky and saved["c"]["per_identity"] is None
    assert identity_lines([_cell("old", 0)]) == []


def test_a_grid_cell_records_prdc_and_who_leaks_and_rolss_trains_in_it(tmp_path):
    """End to end on digits: a RoLSS target (resnet) attacked by a tiny GMI; the cell's row carries PRDC and the
    per-identity figures, whose weighted Acc@1 is the row's, and the report lists the identities."""
    from mi_art.evaluations.executors import evaluate_grid
    from mi_art.evaluations.grid import Grid

    grid = Grid.from_dict({"name": "tiny", "attacks": ["gmi"], "variants": ["baseline"], "seeds": [0],
                           "target_arch": "resnet", "target_epochs": 1, "judge_arch": "cnn-small", "judge_epochs": 1,
                           "iterations": 5, "n_reconstructions": 2, "gmi_steps": 5, "gan_width": 8,
                           "surrogate_archs": ["mlp"], "surrogate_steps": 2, "datasets": [{"name": "digits"}],
                           "defenses": [{"name": "rolss"}]})
    (row,) = evaluate_grid(grid, tmp_path / "out", threads=1, progress=False, echo=lambda s: None)
    assert row["defense_record"]["defense"] == "rolss"
    assert row["defense_record"]["details"]["skipless_blocks"] == ["stages.2"]
    for m in ("precision", "recall", "density", "coverage"):
        assert row[m] is not None and row[m] >= 0
    ids = row["per_identity"]
    assert [r["identity"] for r in ids] == [0, 1, 2, 3, 4] and all(r["n_reconstructions"] == 2 for r in ids)
    assert all(r["n_private_train"] > 0 and "name" in r for r in ids)
    assert _weighted(ids, "acc@1") == pytest.approx(row["acc@1"])
    md = (tmp_path / "out" / "report.md").read_text()
    assert "### Which identities leak" in md and "### Precision:" in md


def test_mi_art_attack_prints_prdc_and_the_exposed_identities():
    from mi_art.evaluations.cli import _prdc_and_exposure_line

    rows = _identities([0.5, 0.0, 1.0])
    rows[2]["name"] = "cy"
    line = _prdc_and_exposure_line({"precision": 0.25, "recall": None, "density": 1.5, "coverage": 0.75,
                                    "per_identity": rows})
    assert line.startswith("precision 0.250, recall n/a, density 1.500, coverage 0.750")
    assert "most exposed identities (Acc@1): cy 1.00 (5 training images); 0 0.50" in line
    assert line.endswith("least: 1 0.00 (5 training images)")
    assert "most exposed identities (Acc@1): -; least: -" in _prdc_and_exposure_line({})  # an old record
