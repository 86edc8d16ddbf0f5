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
