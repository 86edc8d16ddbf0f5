"""`mi-art evaluate` / `mi-art report`: the defense grid end to end, resume after SIGKILL, cache keys,
the Ray executor, and invalid grids. Sized for a shared 2-core machine (tiny budgets on digits)."""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from evaluations.cache import ArtifactCache, config_key
from evaluations.cli import main
from evaluations.executors import ROW_KEYS, evaluate_grid
from evaluations.experiment import ExperimentConfig, Workbench
from evaluations.grid import Grid, GridError, cell_id, grid_to_toml, load_grid_file
from evaluations.presets import PRESETS
from mi_art.data import load_digits_data

# 2 defenses x 2 variants x 1 seed. The budgets make every cell train something the one before it did
# not (target, surrogates, the MID target), so a run can be killed between two cells.
TINY = """
name = "tiny"
attacks = ["gmi"]
variants = ["baseline", "lomma"]
seeds = [0]
target_epochs = 4
eval_epochs = 2
iterations = 20
n_reconstructions = 2
prior_steps = 5
kedmi_steps = 5
gan_width = 8
surrogate_archs = ["mlp"]
surrogate_epochs = 2

[[datasets]]
name = "digits"

[[defenses]]
name = "none"

[[defenses]]
name = "mid"
params = [{ beta = 0.01 }]
"""
METRIC_KEYS = ("natural_accuracy", "acc@1", "acc@1_std", "acc@5", "knn_dist", "fid_eval_features",
               "evaluator_test_accuracy")


def _csv_rows(path: Path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _cell_rows(out: Path):
    return {p.stem: json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))}


def _same_metrics(a, b):
    for k in METRIC_KEYS:
        if a[k] is None or b[k] is None:
            assert a[k] is b[k], k
        else:
            assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12), (k, a["cell_id"])


@pytest.fixture(scope="module")
def grid_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("grid") / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, grid_file):
    """The tiny grid through the CLI, in process, with the local executor."""
    out = tmp_path_factory.mktemp("local") / "out"
    result = CliRunner().invoke(main, ["evaluate", "--config", str(grid_file), "--out", str(out), "--threads", "1",
                                       "--no-progress"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out, result.output


def test_end_to_end_report_matches_results(local_run, grid_file):
    out, output = local_run
    expected = Grid.from_dict(load_grid_file(grid_file)).cells()
    assert len(expected) == 4
    assert "4 cells in the grid, 0 already done, 4 to run" in output
    cells = _cell_rows(out)
    assert sorted(cells) == sorted(c.id for c in expected)
    for name in ("results.csv", "results.json", "report.md", "grid.json", "plots/frontier-digits.png",
                 "plots/bars-digits.png"):
        assert (out / name).is_file(), name
    for c in expected:
        assert (out / "images" / f"{c.id}.png").is_file()
        with np.load(out / "cells" / f"{c.id}.npz") as z:
            assert z["reconstructions"].shape == (5 * 2, 1, 8, 8)
            assert sorted(set(z["labels"].tolist())) == [0, 1, 2, 3, 4]

    csv_rows = _csv_rows(out / "results.csv")
    json_rows = json.loads((out / "results.json").read_text())
    assert [r["cell_id"] for r in csv_rows] == [c.id for c in expected]  # grid order, one row per cell
    assert [r["cell_id"] for r in json_rows] == [c.id for c in expected]
    assert list(csv_rows[0]) == list(ROW_KEYS)
    for c, r_csv, r_json in zip(expected, csv_rows, json_rows):
        cell = cells[c.id]
        assert (r_json["defense"], r_json["attack"], r_json["variant"], r_json["seed"]) == (
            c.config.defense, c.config.attack, c.config.variant, c.config.attack_seed)
        assert r_json["defense_params"] == c.config.defense_params
        assert json.loads(r_csv["defense_params"]) == c.config.defense_params
        for k in METRIC_KEYS + ("seconds",):
            assert r_json[k] == cell[k]
            assert float(r_csv[k]) == pytest.approx(cell[k], rel=1e-12)
        assert 0.0 <= cell["acc@1"] <= 1.0 and cell["knn_dist"] > 0 and cell["seconds"] > 0
        assert r_csv["epsilon"] == ""  # no DP in this grid
    # the two variants of a defense share one target: same natural accuracy; MID's target is another
    by_label = {}
    for r in json_rows:
        by_label.setdefault(r["defense_label"], set()).add(r["natural_accuracy"])
    assert set(by_label) == {"none", "mid(beta=0.01)"}
    assert all(len(v) == 1 for v in by_label.values())

    # report.md: one table row per defense setting with each cell's Acc@1 (single seed: the value itself)
    md = (out / "report.md").read_text()
    assert "4 of 4 cells finished" in md
    for label in ("none", "mid(beta=0.01)"):
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {label} |"))
        for variant in ("baseline", "lomma"):
            row = next(r for r in json_rows if r["defense_label"] == label and r["variant"] == variant)
            assert f"{row['acc@1']:.3f}" in line
        assert f"{by_label[label].pop():.3f}" in line

    # artifacts were shared: one evaluator, one GMI prior, two targets for four cells
    cache = out / "cache"
    assert len(list(cache.glob("evaluator-*.pt"))) == 1
    assert len(list(cache.glob("gmi-prior-*.pt"))) == 1
    assert len(list(cache.glob("target-*.pt"))) == 2

    # `mi-art report` re-renders everything from the saved cells without recomputing any
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    csv_before = (out / "results.csv").read_text()
    for name in ("results.csv", "results.json", "report.md"):
        (out / name).unlink()
    for p in (out / "images").iterdir():
        p.unlink()
    result = CliRunner().invoke(main, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "results.csv").read_text() == csv_before
    assert (out / "report.md").read_text() == md
    assert len(list((out / "images").glob("*.png"))) == 4
    assert {p: p.stat().st_mtime_ns for p in (out / "cells").iterdir()} == mtimes


def test_resume_after_sigkill(tmp_path, grid_file, local_run):
    """Kill -9 the CLI after its first cell file appears; the same command finishes the others only."""
    out, cache = tmp_path / "out", tmp_path / "cache"  # its own cache: the cells really train
    cmd = [sys.executable, "-m", "evaluations.cli", "evaluate", "--config", str(grid_file), "--out", str(out),
           "--cache-dir", str(cache), "--threads", "1", "--no-progress"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    cells_dir = out / "cells"
    deadline = time.monotonic() + 120
    try:
        while not list(cells_dir.glob("*.json")):
            assert proc.poll() is None, "the CLI exited before finishing a cell"
            assert time.monotonic() < deadline, "no cell finished within 120 s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in cells_dir.glob("*.json")}
    assert 1 <= len(before) < 4, f"killed after {len(before)} of 4 cells: not mid-grid"
    assert not (out / "results.csv").exists()

    result = CliRunner().invoke(main, cmd[3:])  # the same command again
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"4 cells in the grid, {len(before)} already done, {4 - len(before)} to run" in result.output
    # finished cells were not recomputed: same files, untouched
    for name, (mtime, blob) in before.items():
        p = cells_dir / name
        assert p.stat().st_mtime_ns == mtime and p.read_bytes() == blob
    # none missing, none duplicated, and the same rows as an uninterrupted run
    expected = [c.id for c in Grid.from_dict(load_grid_file(grid_file)).cells()]
    assert sorted(p.stem for p in cells_dir.glob("*.json")) == sorted(expected)
    rows = json.loads((out / "results.json").read_text())
    assert [r["cell_id"] for r in rows] == expected
    reference = {r["cell_id"]: r for r in json.loads((local_run[0] / "results.json").read_text())}
    for r in rows:
        _same_metrics(r, reference[r["cell_id"]])
    # a third run has nothing left to do
    again = CliRunner().invoke(main, cmd[3:])
    assert again.exit_code == 0 and "4 already done, 0 to run" in again.output


class _RecordingCache(ArtifactCache):
    """Records the key of every artifact asked for; trains nothing."""

    def __init__(self):
        super().__init__(None)
        self.keys = {}

    def _note(self, kind, config):
        self.keys.setdefault(kind, []).append(config_key(config))

    def module(self, kind, config, build, train):
        self._note(kind, config)
        return build()

    def json(self, kind, config, compute):
        self._note(kind, config)
        return {"test_accuracy": 0.5, "epsilon": None}

    def tensor(self, kind, config, compute):
        self._note(kind, config)
        return torch.zeros(1)


def _artifact_keys(config, data):
    cache = _RecordingCache()
    bench = Workbench(config, cache, data=data)
    target = bench.target()
    bench.evaluator()
    bench.gmi_prior()
    bench.kedmi_prior(target)
    bench.surrogates(target)
    bench.p_reg(target)
    return {k: tuple(v) for k, v in cache.keys.items()}


TARGET_AND_DEPENDENTS = {"target", "kedmi-prior", "surrogate", "p-reg"}


@pytest.mark.parametrize("change, affected", [
    ({"iterations": 7}, set()),
    ({"n_reconstructions": 3}, set()),
    ({"attack": "kedmi"}, set()),
    ({"variant": "baseline"}, set()),
    ({"attack_seed": 5}, set()),
    ({"batch_size": 7}, set()),
    ({"identities": [0, 1]}, set()),
    ({"miface_iterations": 9}, set()),
    ({"target_epochs": 3}, TARGET_AND_DEPENDENTS),
    ({"target_arch": "cnn-small"}, TARGET_AND_DEPENDENTS),
    ({"defense": "mid", "defense_params": {"beta": 0.01}}, TARGET_AND_DEPENDENTS | {"defense-record"}),
    ({"eval_epochs": 3}, {"evaluator"}),
    ({"eval_arch": "cnn"}, {"evaluator"}),
    ({"prior_steps": 3}, {"gmi-prior"}),
    ({"kedmi_steps": 3}, {"kedmi-prior"}),
    ({"gan_width": 16}, {"gmi-prior", "kedmi-prior"}),
    ({"gan_augment": "flip"}, {"gmi-prior", "kedmi-prior"}),
    ({"surrogate_epochs": 3}, {"surrogate"}),
    ({"surrogate_archs": ("mlp", "cnn-small")}, {"surrogate"}),
    ({"augment": "none"}, TARGET_AND_DEPENDENTS | {"evaluator"}),
    ({"seed": 1}, TARGET_AND_DEPENDENTS | {"evaluator", "gmi-prior"}),
    ({"data_options": {"test_fraction": 0.3}}, TARGET_AND_DEPENDENTS | {"evaluator", "gmi-prior"}),
])
def test_cache_key_changes_exactly_with_what_the_artifact_depends_on(change, affected):
    base = ExperimentConfig(target_epochs=2, eval_epochs=2, surrogate_archs=("mlp",), gan_width=8, device="cpu")
    if "defense" in change:  # a defended base, so that the record's key is compared too
        base_def = dataclasses.replace(base, defense="mid", defense_params={"beta": 0.003})
        new_def = dataclasses.replace(base, **change)
        old_keys = _artifact_keys(base_def, load_digits_data())
        new_keys = _artifact_keys(new_def, load_digits_data())
    else:
        changed = dataclasses.replace(base, **change)
        old_keys = _artifact_keys(base, load_digits_data(**base.data_options))
        new_keys = _artifact_keys(changed, load_digits_data(**changed.data_options))
    assert set(old_keys) == set(new_keys)
    differ = {kind for kind in old_keys if old_keys[kind] != new_keys[kind]}
    assert differ == affected
    # a cell's id covers its whole configuration, but not how it runs (device, verbose)
    cfg = dataclasses.replace(base, **change)
    assert cell_id(cfg) != cell_id(base)
    assert cell_id(dataclasses.replace(cfg, device="cuda", verbose=True)) == cell_id(cfg)


def test_ray_executor_gives_the_local_rows(local_run, grid_file, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'mi-art[ray]')")
    out, _ = local_run
    grid = Grid.from_dict(load_grid_file(grid_file))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        rows = evaluate_grid(grid, tmp_path / "ray", cache_dir=out / "cache", executor="ray", threads=1,
                             progress=False, report=False, echo=lambda s: None)
    finally:
        ray.shutdown()
    local = {r["cell_id"]: r for r in json.loads((out / "results.json").read_text())}
    assert [r["cell_id"] for r in rows] == list(local)
    assert {p.stem for p in (tmp_path / "ray" / "cells").glob("*.json")} == set(local)
    for r in rows:
        assert r["pid"] != os.getpid()  # computed in a Ray worker
        _same_metrics(r, local[r["cell_id"]])
        for k in ("dataset", "defense", "defense_params", "defense_label", "attack", "variant", "seed"):
            assert r[k] == local[r["cell_id"]][k]


@pytest.mark.parametrize("extra, args, message", [
    ("", ["--defense", "nonsense"], "unknown defense 'nonsense'"),
    ("", ["--defense", "mid:beta=-1"], "beta"),
    ("", ["--defense", "mid:gamma=1"], "unknown parameter(s) 'gamma' for defense 'mid'"),
    ("", ["--defense", "dp-sgd"], "exactly one of target_epsilon"),
    ("", ["--defense", "tl:freeze=99"], "freeze=99"),
    ('attacks = ["gmi", "fgsm"]\n', [], "unknown attack 'fgsm'"),
    ('variants = ["lomm"]\n', [], "unknown variant 'lomm'"),
    ('seeds = []\n', [], "no seeds"),
    ('iterations = 0\n', [], "iterations must be >= 1"),
    ('iteration = 5\n', [], "unknown key(s) 'iteration'"),
    ('[[datasets]]\nname = "cifar"\n', [], "unknown dataset 'cifar'"),
    ('[[datasets]]\nname = "image-folder"\nroot = "/nonexistent/faces"\n', [], "/nonexistent/faces"),
    ('[[datasets]]\nname = "mnist"\n', [], "dataset 'mnist' needs a data folder"),
    ('[[datasets]]\nname = "digits"\noptions = { test_fraction = 2.0 }\n', [], "test_fraction"),
])
def test_invalid_grids_fail_before_any_training(tmp_path, extra, args, message):
    config = tmp_path / "bad.toml"
    config.write_text(extra + '[[defenses]]\nname = "none"\n' if not args else extra)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["evaluate", "--config", str(config), "--out", str(out),
                                       "--target-epochs", "1", *args])
    assert result.exit_code != 0
    assert "invalid grid" in result.output and message in result.output, result.output
    assert not out.exists()  # nothing trained, nothing written


def test_grid_file_errors_and_executor_without_ray(tmp_path, monkeypatch):
    bad = tmp_path / "bad.toml"
    bad.write_text("seeds = [0,\n")
    with pytest.raises(GridError, match="invalid TOML"):
        load_grid_file(bad)
    with pytest.raises(GridError, match="does not exist"):
        load_grid_file(tmp_path / "missing.toml")
    # without Ray the ray executor stops before any training, naming the extra to install
    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["evaluate", "--executor", "ray", "--out", str(out), "--target-epochs", "1"])
    assert result.exit_code != 0 and "mi-art[ray]" in result.output
    assert not (out / "cache").exists()


def test_presets_validate_and_print(tmp_path):
    # paper: CelebA on a GPU; printable with --dry-run here, where the data folder is missing
    result = CliRunner().invoke(main, ["evaluate", "--preset", "paper", "--dry-run", "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert "80 cells" in result.output and "needs a data folder" in result.output
    text = result.output.split("grid file (TOML; save it and pass it to --config):\n", 1)[1]
    saved = tmp_path / "paper.toml"
    saved.write_text(text)
    paper = Grid.from_dict(load_grid_file(saved))
    assert [c.id for c in paper.cells()] == [c.id for c in Grid.from_dict(PRESETS["paper"]).cells()]
    c = paper.cells()[0].config
    assert (c.target_arch, c.eval_arch, c.iterations, c.n_reconstructions, c.batch_size) == (
        "vgg16bn", "ir50", 2400, 5, 60)
    assert c.identities == list(range(300)) and c.data_options["image_size"] == 64
    assert {s.name for s in paper.defenses} == {"none", "mid", "bido", "nls", "tl", "dp-sgd"}
    # a real run needs the CelebA folder
    result = CliRunner().invoke(main, ["evaluate", "--preset", "paper", "--out", str(tmp_path / "p")])
    assert result.exit_code != 0 and "needs a data folder" in result.output
    # quick: fully valid here (datasets load, defended architectures build)
    quick = Grid.from_dict(PRESETS["quick"])
    assert quick.validate() == []
    assert len(quick.cells()) == 24
    assert grid_to_toml(quick.to_dict()).count("[[defenses]]") == 3
