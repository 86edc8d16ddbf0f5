"""The benchmark scripts' own logic (their runs are benchmarks, not tests)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_speed_charges_each_artifact_its_own_seconds(tmp_path, monkeypatch):
    """A stage that needs another (a target that needs its pre-training) is charged its own time only."""
    import speed

    clock = iter([0.0, 1.0, 3.0, 10.0])  # target starts, pre-training starts, ends, target ends
    monkeypatch.setattr(speed.time, "perf_counter", lambda: next(clock))
    cache = speed.TimingCache(tmp_path)
    assert cache._made("target", lambda: cache._made("pretrained", lambda: "body") + "+head") == "body+head"
    assert cache.seconds == {"pre-training (public)": 2.0, "target": 8.0}


def test_speed_table_gives_shares_and_speed_ups():
    import speed

    before = {"stages": {"target": 30.0, "GMI prior": 70.0}, "total": 100.0}
    after = {"stages": {"target": 10.0, "GMI prior": 70.0}, "total": 80.0, "peak_gflops": {"conv": 100.0},
             "rates": {"target": {"images_per_s": 500.0, "gflops": 50.0}}}
    table = speed.table(after, before)
    assert "| target | 10.0 | 12% | 500 | 50.0 | 50% | 30.0 | 3.0x |" in table
    assert "| GMI prior | 70.0 | 88% | - | - | - | 70.0 | 1.0x |" in table
    assert "| **total** | 80.0 | 100% | | | | 100.0 | 1.2x |" in table


def test_plgmi_prior_measures_accuracy_on_the_condition_and_feature_norm():
    """A sampler that draws each identity's own image scores 1.0 on the condition with both models and the
    public images' feature norm; one that draws the next identity's image scores 0."""
    import torch
    from torch import nn

    import plgmi_prior

    k = 4
    eye = torch.eye(k).view(k, 1, 1, k)  # identity y's image: a one-hot row

    def model() -> nn.Module:
        first, last = nn.Linear(k, k), nn.Linear(k, k)
        for layer in (first, last):
            nn.init.eye_(layer.weight), nn.init.zeros_(layer.bias)
        return nn.Sequential(nn.Flatten(), first, last)

    right = lambda z, y: eye[y]  # noqa: E731
    wrong = lambda z, y: eye[(y + 1) % k]  # noqa: E731
    metrics, samples = plgmi_prior.measure(right, 3, model(), model(), eye, k)
    assert len(samples) == k * plgmi_prior.SAMPLES_PER_IDENTITY
    assert metrics["target_acc"] == metrics["judge_acc"] == 1.0
    assert metrics["feature_norm"] == pytest.approx(1.0)
    metrics, _ = plgmi_prior.measure(wrong, 3, model(), model(), eye, k)
    assert metrics["target_acc"] == metrics["judge_acc"] == 0.0


def test_defenses_grid_scores_each_cell_with_every_judge_and_draws_its_frontier(tmp_path, monkeypatch):
    """``--judges 3``: each attack is scored by the panel of three judges (not the first alone); the records
    give the frontier one point per defense strength, the mean over attack seeds, DP points with epsilon."""
    import json
    import types

    import defenses

    seen = []

    class FakeWorkbench:
        def __init__(self, config, cache, data=None):
            self.config = config
            self.data = types.SimpleNamespace(private_train=[0] * 10, private_test=types.SimpleNamespace(x=0, y=0))
            dp = config.defense == "dp-sgd"
            self.defense_record = {"epsilon": config.defense_params.get("target_epsilon"), "delta": 0.1} if dp else {}

        def target(self):
            return "target"

        def evaluator(self):
            return "judge-0"

        def evaluators(self):
            return [f"judge-{j}" for j in range(self.config.judges)]

        def prior(self, *args):
            return None

        def surrogates(self, target):
            return []

    def fake_run_attack(bench, *, attack, attack_seed, target, evaluator, variant):
        seen.append(evaluator)
        acc = 0.9 - 0.1 * attack_seed if bench.config.defense == "none" else 0.2
        return {"dataset": "fake", "attack": attack, "variant": variant, "attack_seed": attack_seed, "acc@1": acc,
                "knn_dist": 1.0, "seconds": 0.0, "n_judges": len(evaluator), "chance@1": 0.1,
                "evaluator_test_accuracy": 0.9, "evaluator_test_accuracies": [0.9] * len(evaluator)}

    monkeypatch.setattr(defenses, "Workbench", FakeWorkbench)
    monkeypatch.setattr(defenses, "run_attack", fake_run_attack)
    monkeypatch.setattr(defenses, "public_record", dict)
    monkeypatch.setattr(defenses, "natural_accuracy", lambda *a: 0.8)
    out = tmp_path / "cells.json"
    monkeypatch.setattr(sys, "argv", ["defenses.py", "--deployed", "--only", "none,dp-sgd", "--seeds", "2",
                                      "--judges", "3", "--attacks", "gmi", "--cache-dir", str(tmp_path),
                                      "--out", str(out)])
    defenses.main()
    assert seen and all(judges == ["judge-0", "judge-1", "judge-2"] for judges in seen)
    done = json.loads(out.read_text())
    points = defenses.frontier_rows(done, defenses._rows(defenses.deployed_grid(10)))
    undefended = next(p for p in points if p["defense"] == "none")
    assert undefended["acc@1"] == pytest.approx(0.85) and undefended["n"] == 2
    assert sorted(p["epsilon"] for p in points if p["defense"] == "dp-sgd") == [1.0, 3.0, 8.0]


def test_attack_variants_keeps_each_cells_reconstructions_for_later_judges(tmp_path):
    import attack_variants

    result = {"reconstructions": np.random.rand(4, 1, 8, 8).astype(np.float32), "labels": np.array([0, 0, 1, 1])}
    path = attack_variants._keep_reconstructions(tmp_path / "variants.json", "GMI+LOMMA/seed2", result)
    assert path.parent == tmp_path / "variants.reconstructions" and path.name == "GMI_LOMMA-seed2.npz"
    kept = np.load(path)
    assert np.array_equal(kept["reconstructions"], result["reconstructions"])
    assert kept["labels"].tolist() == [0, 0, 1, 1]
