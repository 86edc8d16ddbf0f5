"""The benchmark scripts' own logic (their runs are benchmarks, not tests)."""
from __future__ import annotations

import sys
from pathlib import Path

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
