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

import mi_art as M
from mi_art.evaluations.cache import ArtifactCache, config_key
from mi_art.evaluations.cli import main
from mi_art.evaluations.executors import ROW_KEYS, evaluate_grid
from mi_art.evaluations.experiment import ExperimentConfig, Workbench
from mi_art.evaluations.grid import Grid, GridError, cell_id, grid_to_toml, load_grid_file
from mi_art.evaluations.presets import PRESETS
from mi_art.data import load_digits_data
from mi_art.evaluations.report import markdown_text

# 2 defenses x 2 variants x 1 seed. The budgets make every cell train something the one before it did
# not (target, surrogates, the MID target), so a run can be killed between two cells.
TINY = """
name = "tiny"
attacks = ["gmi"]
variants = ["baseline", "lomma"]
seeds = [0]
target_epochs = 4
judge_arch = "cnn-small"
judge_epochs = 1
iterations = 20
n_reconstructions = 2
gmi_steps = 5
kedmi_steps = 5
gan_width = 8
surrogate_archs = ["mlp"]
surrogate_steps = 2

[[datasets]]
name = "digits"

[[defenses]]
name = "none"

[[defenses]]
name = "mid"
params = [{ beta = 0.01 }]
"""
METRIC_KEYS = ("natural_accuracy", "acc@1", "acc@1_std", "acc@5", "knn_dist", "fid_eval_features",
               "judge_test_accuracy")


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


def _penultimate(model, x: np.ndarray) -> np.ndarray:
    """The input of the model's last nn.Linear, by a forward hook (not through mi_art.features)."""
    from mi_art.features import last_linear

    seen = []
    handle = last_linear(model).register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    try:
        with torch.no_grad():
            model.eval()(torch.as_tensor(x))
    finally:
        handle.remove()
    return seen[0].double().numpy()


def _check_metrics_by_hand(out: Path, cell, row) -> None:
    """A cell's Acc@1, KNN distance and natural accuracy, recomputed from its saved reconstructions
    with the cached judge and target (loaded, not trained: the run cached them)."""
    data = load_digits_data()
    bench = Workbench(dataclasses.replace(cell.config, device="cpu"), ArtifactCache(out / "cache"), data=data)
    judge, target = bench.judge(), bench.target()
    with np.load(out / "cells" / f"{cell.id}.npz") as z:
        recs, labels = z["reconstructions"], z["labels"]
    with torch.no_grad():
        top1 = judge.eval()(torch.as_tensor(recs)).argmax(1).numpy()
        natural = (target.eval()(torch.as_tensor(data.private_test.x)).argmax(1).numpy() == data.private_test.y)
    # rounds of equal size (every identity once per round): the mean over rounds is the pooled mean
    assert row["acc@1"] == pytest.approx((top1 == labels).mean(), abs=1e-12), cell.id
    private = data.private_all()
    f_rec, f_priv = _penultimate(judge, recs), _penultimate(judge, private.x)
    nearest = [((f_priv[private.y == k] - f) ** 2).sum(1).min() for f, k in zip(f_rec, labels)]
    assert row["knn_dist"] == pytest.approx(np.mean(nearest), rel=1e-4), cell.id
    assert row["natural_accuracy"] == pytest.approx(natural.mean(), abs=1e-12), cell.id


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
        for k in METRIC_KEYS + ("seconds", "chance@1", "chance@5", "n_classes"):
            assert r_json[k] == cell[k]
            if cell[k] is None:  # n/a: not applicable (Acc@5 of 5 classes); empty: missing (e.g. FID)
                assert r_csv[k] == ("n/a" if k in ("acc@5", "acc@5_std") else ""), k
            else:
                assert float(r_csv[k]) == pytest.approx(cell[k], rel=1e-12)
        assert r_csv["epsilon"] == ""  # no DP in this grid
        # 5 private digits: Acc@5 is 1 whatever the images, so not applicable; Acc@1's chance is 1/5
        assert cell["n_classes"] == 5 and cell["acc@5"] is None and cell["acc@5_std"] is None
        assert cell["chance@1"] == pytest.approx(0.2) and cell["chance@5"] == 1.0
        assert r_csv["acc@5"] == "n/a"
        _check_metrics_by_hand(out, c, cell)
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

    # artifacts were shared: one judge, one GMI prior, two targets for four cells
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
    assert len(list((out / "images").glob("*.png"))) == 4 * 2  # each cell's reconstructions and prior samples
    assert {p: p.stat().st_mtime_ns for p in (out / "cells").iterdir()} == mtimes


def test_resume_after_sigkill(tmp_path, grid_file, local_run):
    """Kill -9 the CLI after its first cell file appears; the same command finishes the others only."""
    out, cache = tmp_path / "out", tmp_path / "cache"  # its own cache: the cells really train
    cmd = [sys.executable, "-m", "mi_art.evaluations.cli", "evaluate", "--config", str(grid_file), "--out", str(out),
           "--cache-dir", str(cache), "--threads", "1", "--no-progress"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    cells_dir = out / "cells"
    try:
        while not list(cells_dir.glob("*.json")):
            assert proc.poll() is None, "the CLI exited before finishing a cell"
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

    def module(self, kind, config, build, train, records=()):
        self._note(kind, config)
        return build()

    def json(self, kind, config, compute, fields=()):
        self._note(kind, config)
        return {"test_accuracy": 0.5, "epsilon": None}

    def tensor(self, kind, config, compute):
        self._note(kind, config)
        return torch.zeros(2, 1)  # p_reg: mean and spread


def _artifact_keys(config, data):
    cache = _RecordingCache()
    bench = Workbench(config, cache, data=data)
    target = bench.target()
    bench.judge()
    bench.prior("gmi")
    bench.prior("kedmi", target)
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
    ({"judge_epochs": 3}, {"evaluator"}),
    ({"judge_arch": "cnn"}, {"evaluator"}),
    # the KEDMI generator starts from the GMI prior's, and surrogates are distilled on its samples
    ({"gmi_steps": 3}, {"gmi-prior", "kedmi-prior", "surrogate"}),
    ({"kedmi_steps": 3}, {"kedmi-prior"}),
    ({"kedmi_init": "none"}, {"kedmi-prior"}),
    ({"surrogate_data": "public"}, {"surrogate"}),
    ({"gan_width": 16}, {"gmi-prior", "kedmi-prior", "surrogate"}),
    ({"gan_augment": "flip"}, {"gmi-prior", "kedmi-prior", "surrogate"}),
    ({"surrogate_steps": 3}, {"surrogate"}),
    ({"surrogate_archs": ("mlp", "cnn-small")}, {"surrogate"}),
    ({"augment": "none"}, TARGET_AND_DEPENDENTS | {"evaluator"}),
    ({"seed": 1}, TARGET_AND_DEPENDENTS | {"evaluator", "gmi-prior"}),
    ({"data_options": {"test_fraction": 0.3}}, TARGET_AND_DEPENDENTS | {"evaluator", "gmi-prior"}),
])
def test_cache_key_changes_exactly_with_what_the_artifact_depends_on(change, affected):
    base = ExperimentConfig(target_epochs=2, judge_epochs=2, surrogate_archs=("mlp",), gan_width=8, device="cpu")
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


def test_cache_keys_follow_the_data_content_not_its_name():
    """Two datasets under one name and options (data passed in, e.g. a folder whose images changed)
    share no artifact; the same content loaded twice shares all of them."""
    base = ExperimentConfig(target_epochs=2, judge_epochs=2, surrogate_archs=("mlp",), gan_width=8, device="cpu")
    data = load_digits_data()
    same = _artifact_keys(base, load_digits_data())
    assert _artifact_keys(base, data) == same
    changed = load_digits_data()
    changed.public.x[0, 0, 0, 0] += 0.5
    keys = _artifact_keys(base, changed)
    assert {kind for kind in keys if keys[kind] != same[kind]} == set(same)


def test_ray_executor_gives_the_local_rows(local_run, grid_file, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'mi-art[ray]')")
    out, _ = local_run
    grid = Grid.from_dict(load_grid_file(grid_file))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        rows = evaluate_grid(grid, tmp_path / "ray", cache_dir=out / "cache", executor="ray", cpus_per_task=1,
                             progress=False, report=False, echo=lambda s: None)
    finally:
        ray.shutdown()
    local = {r["cell_id"]: r for r in json.loads((out / "results.json").read_text())}
    assert [r["cell_id"] for r in rows] == list(local)
    assert {p.stem for p in (tmp_path / "ray" / "cells").glob("*.json")} == set(local)
    for r in rows:
        assert r["pid"] != os.getpid()  # computed in a Ray worker
        assert r["threads"] == 1  # from --cpus-per-task 1, never more
        _same_metrics(r, local[r["cell_id"]])
        for k in ("dataset", "defense", "defense_params", "defense_label", "attack", "variant", "seed"):
            assert r[k] == local[r["cell_id"]][k]


def _tiny_grid(**changes) -> dict:
    """The TINY grid's dictionary with ``changes``."""
    import tomllib

    return {**tomllib.loads(TINY), **changes}


def test_lom_and_ma_variants_through_the_cli(local_run, grid_file, tmp_path, monkeypatch):
    """`--variant lom --variant ma`: LOM attacks with the logit loss and p_reg and no surrogate, MA with
    cross-entropy and the surrogates and no p_reg (artifacts from the local run's cache: only the
    attacks run)."""
    made = []

    class RecordingGMI(M.GMI):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append({**kwargs, "identity_loss": self.identity_loss})  # MA: the attack's own loss, CE

    monkeypatch.setitem(M.ATTACKS, "gmi", RecordingGMI)  # the registry every run looks the attack up in
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["evaluate", "--config", str(grid_file), "--defense", "none", "--variant", "lom",
                                       "--variant", "ma", "--out", str(out), "--cache-dir", str(local_run[0] / "cache"),
                                       "--threads", "1", "--no-progress"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "2 cells in the grid, 0 already done, 2 to run" in result.output
    rows = json.loads((out / "results.json").read_text())
    assert [r["variant"] for r in rows] == ["lom", "ma"]
    lom, ma = made
    assert lom["identity_loss"] == "logit" and lom["p_reg"] is not None and list(lom["surrogates"]) == []
    assert ma["identity_loss"] == "ce" and ma["p_reg"] is None and len(ma["surrogates"]) == 1  # surrogate_archs
    for r in rows:
        assert r["acc@5"] is None and r["chance@1"] == pytest.approx(0.2)
        assert (out / "images" / f"{r['cell_id']}.png").is_file()
    md = (out / "report.md").read_text()
    assert "gmi/lom" in md and "gmi/ma" in md
    # nothing was trained: the local run's target, judge, prior, surrogate and p_reg were reused
    local = {r["variant"]: r for r in json.loads((local_run[0] / "results.json").read_text())
             if r["defense"] == "none"}
    assert {r["natural_accuracy"] for r in rows} == {local["lomma"]["natural_accuracy"]}


def test_process_executor_gives_the_local_rows(local_run, grid_file, tmp_path):
    """Two spawned worker processes (sharing the cache through its file locks) give the rows of the
    in-process run (its undefended cells)."""
    out, _ = local_run
    grid = Grid.from_dict(_tiny_grid(defenses=[{"name": "none"}]))
    rows = evaluate_grid(grid, tmp_path / "proc", cache_dir=out / "cache", executor="process", workers=2, threads=1,
                         progress=False, report=False, echo=lambda s: None)
    local = {r["cell_id"]: r for r in json.loads((out / "results.json").read_text()) if r["defense"] == "none"}
    assert [r["cell_id"] for r in rows] == list(local) and len(rows) == 2
    assert {p.stem for p in (tmp_path / "proc" / "cells").glob("*.json")} == set(local)
    pids = {r["pid"] for r in rows}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2  # computed in the worker processes
    for r in rows:
        _same_metrics(r, local[r["cell_id"]])
        assert r["variant"] == local[r["cell_id"]]["variant"]


def test_seed_scope_attack_shares_artifacts_across_seeds(tmp_path, monkeypatch):
    """seed_scope = "attack": two seeds attack one target (trained once, with artifact_seed) and differ
    only in the attack's seed; seed_scope = "all" gives each seed its own artifacts."""
    import mi_art.evaluations.workbench as workbench

    spec = _tiny_grid(variants=["baseline"], defenses=[{"name": "none"}], seeds=[0, 1])
    everything = Grid.from_dict({**spec, "seed_scope": "all"}).cells()
    assert [(c.config.seed, c.config.attack_seed) for c in everything] == [(0, 0), (1, 1)]
    grid = Grid.from_dict({**spec, "seed_scope": "attack", "artifact_seed": 3})
    cells = grid.cells()
    assert [(c.config.seed, c.config.attack_seed) for c in cells] == [(3, 0), (3, 1)]

    counts = {"train_classifier": 0, "train_gmi_prior": 0}
    for name, owner, attribute in (("train_classifier", workbench, "train_classifier"),
                                   ("train_gmi_prior", M.PRIORS["gmi"], "train")):  # the prior's registry entry
        original = getattr(owner, attribute)

        def counted(*args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(owner, attribute, counted)
    rows = evaluate_grid(grid, tmp_path / "out", threads=1, progress=False, report=False, echo=lambda s: None)
    # one target and one judge, one GMI prior, for both seeds ("all" would train each twice)
    assert counts == {"train_classifier": 2, "train_gmi_prior": 1}
    assert [(r["seed"], r["artifact_seed"]) for r in rows] == [(0, 3), (1, 3)]
    assert rows[0]["natural_accuracy"] == rows[1]["natural_accuracy"]
    with np.load(tmp_path / "out" / "cells" / f"{cells[0].id}.npz") as a, \
            np.load(tmp_path / "out" / "cells" / f"{cells[1].id}.npz") as b:
        assert not np.array_equal(a["reconstructions"], b["reconstructions"])  # the attack seed differs


@pytest.mark.parametrize("extra, args, message", [
    ("", ["--defense", "nonsense"], "unknown defense 'nonsense'"),
    ("", ["--defense", "mid:beta=-1"], "beta"),
    ("", ["--defense", "mid:gamma=1"], "unknown parameter(s) 'gamma' for defense 'mid'"),
    ("", ["--defense", "dp-sgd"], "exactly one of target_epsilon"),
    ("", ["--defense", "tl:freeze=99"], "freeze=99"),
    ('attacks = ["gmi", "fgsm"]\n', [], "unknown attack 'fgsm'"),
    ('variants = ["lomm"]\n', [], "unknown variant 'lomm'"),
    ('seeds = []\n', [], "no seeds"),
    ('iterations = 0\n', [], "iterations must be an integer in [1, inf), got 0"),
    ('iteration = 5\n', [], "unknown key(s) 'iteration'"),
    ('max_iter = 5\n', [], "'max_iter' is ART's name: give 'iterations'"),
    ('[[datasets]]\nname = "cifar"\n', [], "unknown dataset 'cifar'"),
    ('[[datasets]]\nname = "image-folder"\nroot = "/nonexistent/faces"\n', [], "/nonexistent/faces"),
    ('[[datasets]]\nname = "mnist"\n', [], "dataset 'mnist' needs a data folder"),
    ('[[datasets]]\nname = "image-folder"\ndata_root = "/nonexistent/faces"\n', [], "/nonexistent/faces"),
    ('[[datasets]]\nname = "digits"\ndata_options = { test_fraction = 2.0 }\n', [], "test_fraction"),
    ('[[datasets]]\nname = "digits"\noptions = { test_fraction = 2.0 }\n', [], "test_fraction"),
    ('[[datasets]]\nname = "digits"\noptions = { test_fraction = 0.3 }\ndata_options = {}\n', [],
     "'options' ({'test_fraction': 0.3}) and 'data_options' ({}) are both given"),
])
def test_invalid_grids_fail_before_any_training(tmp_path, extra, args, message):
    config = tmp_path / "bad.toml"
    config.write_text(extra + '[[defenses]]\nname = "none"\n' if not args else extra)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["evaluate", "--config", str(config), "--out", str(out),
                                       "--target-epochs", "1", *args])
    assert result.exit_code != 0
    # grid keys: "invalid grid"; a bad --defense option: a usage error naming the option
    assert "invalid grid" in result.output or "Invalid value for '--defense'" in result.output, result.output
    assert message in result.output, result.output
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


@pytest.mark.parametrize("attack, variant, kedmi_init, priors", [
    ("kedmi", "baseline", "gmi", 1), ("kedmi", "baseline", "none", 0), ("kedmi", "lomma", "none", 1),
    ("plgmi", "baseline", "gmi", 1), ("miface", "baseline", "gmi", 0)])
def test_the_dry_run_counts_the_gmi_prior_every_attack_starts_from(attack, variant, kedmi_init, priors):
    """A KEDMI-only grid once said "0 GMI prior(s)" though KEDMI's GAN starts from the GMI prior's generator
    (and PLG-MI's does, and LOMMA's surrogates learn on its samples)."""
    grid = Grid.from_dict({"attacks": [attack], "variants": [variant], "kedmi_init": kedmi_init, "seeds": [0]})
    assert f"{priors} GMI prior(s)" in grid.summary()


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
    assert (c.target_arch, c.judge_arch, c.iterations, c.n_reconstructions, c.batch_size) == (
        "vgg16bn", "ir50", 2400, 5, 60)
    assert c.identities == list(range(300)) and c.data_options["image_size"] == 64
    assert {s.name for s in paper.defenses} == {"none", "mid", "bido", "negative-label-smoothing", "tl", "dp-sgd"}
    # a real run needs the CelebA folder
    result = CliRunner().invoke(main, ["evaluate", "--preset", "paper", "--out", str(tmp_path / "p")])
    assert result.exit_code != 0 and "needs a data folder" in result.output
    # quick: fully valid here (datasets load, defended architectures build)
    quick = Grid.from_dict(PRESETS["quick"])
    assert quick.validate() == []
    assert len(quick.cells()) == 24
    assert grid_to_toml(quick.to_dict()).count("[[defenses]]") == 3


def test_grid_files_name_the_data_as_the_config_does_and_accept_the_old_names():
    """``data_root``/``data_options`` as in ExperimentConfig and the CLI; the earlier ``root``/``options``
    still load, with a FutureWarning that names the new key, into the same grid."""
    new = {"datasets": [{"name": "image-folder", "data_root": "/faces", "data_options": {"image_size": 32}}]}
    old = {"datasets": [{"name": "image-folder", "root": "/faces", "options": {"image_size": 32}}]}
    grid = Grid.from_dict(new)
    with pytest.warns(FutureWarning, match="'root' is now called 'data_root'"):
        legacy = Grid.from_dict(old)
    assert (legacy.datasets[0].root, legacy.datasets[0].options) == ("/faces", {"image_size": 32})
    assert [c.id for c in legacy.cells()] == [c.id for c in grid.cells()]
    assert grid.datasets[0].to_dict() == new["datasets"][0]  # written back under the new names
    assert "data_root" in grid_to_toml(grid.to_dict())


def test_evaluate_says_which_stage_runs_and_warns_on_the_cells_line(local_run):
    """Under the default --quiet, each long step is named with its budget on a line of its own before it runs
    (the GMI prior once trained under "attacking (200 iterations)" for minutes), then its seconds; a cell's
    weak-model warnings follow its result line (not only in report.md)."""
    from mi_art.evaluations.report import row_warnings

    out, output = local_run
    order = ["training the target (cnn, 4 epochs)", "training the target: done in",
             "training a judge (cnn-small, 1 epochs)", "training the GMI prior (5 steps of WGAN-GP)",
             "training the GMI prior: done in", "attacking (GMI baseline, 20 iterations, 5 identities x 2 "
             "reconstructions)", "attacking: done in", "judging (10 reconstructions by 1 trained judge(s))",
             "rendering the report of 4 cells"]
    at = [output.find(line) for line in order]
    assert all(i >= 0 for i in at), [line for line, i in zip(order, at) if i < 0]
    assert at == sorted(at), "each step is named before the next starts"
    assert "distilling the surrogate mlp (2 steps)" in output
    assert "cells done; " in output and " left, about " in output  # the time left of the grid
    rows = json.loads((out / "results.json").read_text())
    warned = [w for r in rows for w in row_warnings(r)]
    assert warned, "the tiny grid's 1-epoch cnn-small judge is weak: its warning is what this test looks for"
    assert all(f"WARNING: {w}" in output for w in warned)


def test_ctrl_c_says_what_was_kept_how_to_resume_and_reports_the_finished_cells(tmp_path, local_run, grid_file,
                                                                                 monkeypatch):
    """Ctrl-C during the second cell: the command says how many cells are kept and that the same command resumes,
    lists the finished cell's Acc@1 and renders the report of it, and exits 130 without click's bare "Aborted!";
    the same command then runs only the cells left."""
    import mi_art.evaluations.executors as executors

    cached, _ = local_run
    run_cell, calls = executors.run_cell, []

    def interrupted_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return run_cell(*args, **kwargs)

    monkeypatch.setattr(executors, "run_cell", interrupted_second)
    out = tmp_path / "out"
    command = ["evaluate", "--config", str(grid_file), "--out", str(out), "--cache-dir", str(cached / "cache"),
               "--threads", "1", "--no-progress"]
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 130, result.output
    assert "interrupted: 1 of 4 cells are finished and kept in" in result.output
    assert "Run the same command again to resume" in result.output
    assert "finished cells:\n  digits none gmi/baseline seed 0: Acc@1 " in result.output
    assert "Aborted!" not in result.output
    assert "1 of 4 cells finished (3 missing" in (out / "report.md").read_text()
    monkeypatch.setattr(executors, "run_cell", run_cell)
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 0 and "4 cells in the grid, 1 already done, 3 to run" in result.output


def test_grid_rows_carry_the_single_runs_surrogates_prior_and_warnings(local_run, grid_file):
    """A results.json row holds what `mi-art attack`'s record holds beside the metrics: each surrogate's
    agreement with the target, the prior's quality and every warning the run gave (rows once had the
    weak-model warnings alone: a weak surrogate was said on stderr only)."""
    from mi_art.evaluations.experiment import run_attack

    out, _ = local_run
    rows = {r["cell_id"]: r for r in json.loads((out / "results.json").read_text())}
    cell = next(c for c in Grid.from_dict(load_grid_file(grid_file)).cells()
                if c.config.defense == "none" and c.config.variant == "lomma")
    with pytest.warns(UserWarning):  # the 2-step surrogate is weak: the single run warns of it
        result = run_attack(Workbench(dataclasses.replace(cell.config), ArtifactCache(out / "cache")))
    row = rows[cell.id]
    assert row["surrogates"] == result["surrogates"] and len(row["surrogates"]) == 1
    assert 0 <= row["surrogates"][0]["agreement_public_heldout"] <= 1 and row["surrogates"][0]["used"]
    assert row["prior"] == result["prior"] and row["prior"]["fid_public"] > 0
    assert any("surrogate" in w for w in result["warnings"])  # a warning beyond the weak-model ones
    assert set(result["warnings"]) <= set(row["warnings"])
    assert row["n_train"] == len(load_digits_data().private_train)
    baseline = next(r for r in rows.values() if r["defense"] == "none" and r["variant"] == "baseline")
    assert baseline["surrogates"] is None and baseline["prior"]["fid_public"] == row["prior"]["fid_public"]


def test_a_dp_cell_records_the_delta_warning_its_run_gave(tmp_path):
    """A DP-SGD cell at delta = 1/(5 N) (>= 1/(10 N)) keeps its run's warning, naming delta and N, in its row and in
    results.json; the grid's undefended cells say nothing of delta."""
    n = len(load_digits_data().private_train)
    grid = Grid.from_dict(_tiny_grid(variants=["baseline"], target_epochs=1, defenses=[
        {"name": "none"}, {"name": "dp-sgd", "params": [{"noise_multiplier": 1.0, "target_delta": 1 / (5 * n)}]}]))
    rows = evaluate_grid(grid, tmp_path / "out", threads=1, progress=False, echo=lambda s: None)
    plain, private = rows
    said = [w for w in private["warnings"] if "delta" in w]  # the run's own (run_cell's row)
    assert len(said) == 1 and f"N={n}" in said[0] and f"delta={1 / (5 * n):.3g}" in said[0]
    assert not any("delta" in w for w in plain["warnings"])
    public = {r["defense"]: r for r in json.loads((tmp_path / "out" / "results.json").read_text())}
    assert said[0] in public["dp-sgd"]["warnings"] and public["dp-sgd"]["n_train"] == n
    assert markdown_text(said[0]) in (tmp_path / "out" / "report.md").read_text()  # escaped, as all cell text


def test_a_grid_file_in_json_reads_like_toml(tmp_path):
    import json

    from mi_art.evaluations.grid import GridError, load_grid_file

    spec = {"name": "g", "attacks": ["gmi"], "variants": ["baseline"], "seeds": [0], "iterations": 5,
            "datasets": [{"name": "digits"}], "defenses": [{"name": "none"}]}
    (tmp_path / "grid.json").write_text(json.dumps(spec))
    toml = tmp_path / "grid.toml"
    toml.write_text('name = "g"\nattacks = ["gmi"]\nvariants = ["baseline"]\nseeds = [0]\niterations = 5\n'
                    '[[datasets]]\nname = "digits"\n[[defenses]]\nname = "none"\n')
    assert load_grid_file(tmp_path / "grid.json") == load_grid_file(toml)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(GridError, match="invalid JSON"):
        load_grid_file(tmp_path / "bad.json")


# ------------------------------------------------------------------------- attack forms: a named axis of cells

FORMS = [{"name": "paper", "regularise_surrogates": False, "iterations": 7},
         {"name": "label-only", "access": "label-only"}]


def test_forms_multiply_the_cells_each_with_its_settings_over_the_datasets_and_the_grids():
    import tomllib

    from mi_art.evaluations.grid import Cell

    plain = _tiny_grid()
    formed = _tiny_grid(forms=FORMS, datasets=[{"name": "digits", "iterations": 9}])
    cells = Grid.from_dict(formed).cells()
    assert len(cells) == 2 * len(Grid.from_dict(plain).cells()) == 2 * Grid.from_dict(plain).n_cells()
    assert Grid.from_dict(formed).n_cells() == len(cells)
    # order: dataset, seed, defense, strength, form, attack, variant
    assert [(c.defense_label, c.form, c.config.variant) for c in cells[:4]] == [
        ("none", "paper", "baseline"), ("none", "paper", "lomma"),
        ("none", "label-only", "baseline"), ("none", "label-only", "lomma")]
    for c in cells:
        paper = c.form == "paper"
        # the form's settings override the dataset's (iterations = 9), which override the grid's (20)
        assert (c.config.regularise_surrogates, c.config.iterations) == ((False, 7) if paper else (True, 9))
        assert c.config.access == ("white-box" if paper else "label-only")
    # a cell carries its form to the workers and back; the grid file written from the grid gives the same cells
    assert Cell.from_dict(cells[2].to_dict()) == cells[2]
    again = Grid.from_dict(tomllib.loads(grid_to_toml(Grid.from_dict(formed).to_dict())))
    assert [(c.id, c.form) for c in again.cells()] == [(c.id, c.form) for c in cells]


def test_a_form_that_changes_nothing_is_the_default_cell_and_two_forms_of_one_configuration_are_refused():
    plain = Grid.from_dict(_tiny_grid()).cells()
    named = Grid.from_dict(_tiny_grid(forms=[{"name": "as-is"}, FORMS[0]])).cells()
    # a cell's id is its configuration's: the form that changes nothing finds the grid's finished cells
    assert [c.id for c in named if c.form == "as-is"] == [c.id for c in plain]
    assert not {c.id for c in named if c.form == "paper"} & {c.id for c in plain}
    # ... so a second form giving the same configuration (here: the grid's own iterations) would be the same work
    with pytest.raises(GridError, match="forms 'as-is' and 'same' give the same configuration"):
        Grid.from_dict(_tiny_grid(forms=[{"name": "as-is"}, {"name": "same", "iterations": 20}])).cells()


def test_bad_forms_are_refused_at_once_each_by_its_fields_own_rule(tmp_path):
    from mi_art.evaluations.config_rules import check_field

    bad = {"forms": [{"name": "a", "iterations": -1}, {"access": "psychic", "steps": 3}, {"name": "a"}, {"name": ""},
                     "b"]}
    with pytest.raises(GridError) as err:
        Grid.from_dict(bad)
    problems = err.value.problems
    for field, value, where in (("iterations", -1, "forms[0].iterations"), ("access", "psychic", "forms[1].access")):
        with pytest.raises(ValueError) as own:
            check_field(where, field, value)
        assert str(own.value) in problems  # the field's own message, where the grid sets it
    assert any("unknown key(s) 'steps' in forms[1]" in p for p in problems)
    assert any("forms[1] has no 'name'" in p for p in problems)
    assert any("forms[3].name must be a non-empty string" in p for p in problems)
    assert any("forms repeat the name(s) 'a'" in p for p in problems)
    assert len(problems) == 6  # "b": a named form that changes nothing is valid
    for value, message in (([], "forms is empty"), ({"name": "a"}, "wrap it in a list"),
                           ([3], r"forms\[0\] must be a table")):
        with pytest.raises(GridError, match=message):
            Grid.from_dict({"forms": value})
    # a form's settings against the rest of its cells (check_relations), named with the form
    grid = Grid.from_dict(_tiny_grid(forms=[{"name": "few", "n_candidates": 1}]))
    with pytest.raises(GridError, match="dataset .digits., form .few.: n_candidates=1 is below n_reconstructions=2"):
        grid.validate(check_data=False, load_data=False)
    assert Grid.from_dict(_tiny_grid()).validate(check_data=False, load_data=False) == []


def test_the_dry_run_shows_the_forms(tmp_path):
    config = tmp_path / "forms.toml"
    config.write_text(TINY + '\n[[forms]]\nname = "paper"\nregularise_surrogates = false\n'
                      '\n[[forms]]\nname = "label-only"\naccess = "label-only"\n')
    result = CliRunner().invoke(main, ["evaluate", "--config", str(config), "--dry-run", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "8 cells = 1 dataset(s) x 2 defense setting(s) x 1 seed(s) x 2 form(s)" in out
    assert "form 'paper': regularise_surrogates=False" in out and "form 'label-only': access=label-only" in out
    assert "gmi [label-only]/lomma" in out and "[[forms]]" in out
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY + '\n[[forms]]\nname = "x"\niterations = 0\n')
    result = CliRunner().invoke(main, ["evaluate", "--config", str(bad), "--dry-run", "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "invalid grid" in result.output and "forms[0].iterations" in result.output


def test_the_form_reaches_the_row_and_a_finished_cell_is_reported_under_the_grids_name(tmp_path):
    """Two MIFace forms (no prior to train: seconds); then a grid naming the same configurations otherwise runs
    nothing and reports them under its own names."""
    small = {"attacks": ["miface"], "seeds": [0], "target_epochs": 1, "judge_arch": "cnn-small", "judge_epochs": 1,
             "n_reconstructions": 1, "identities": [0, 1]}
    out = tmp_path / "out"
    rows = evaluate_grid(Grid.from_dict({**small, "forms": [{"name": "short", "miface_iterations": 1},
                                                            {"name": "long", "miface_iterations": 2}]}),
                         out, progress=False, echo=lambda s: None)
    assert [r["form"] for r in rows] == ["short", "long"]
    assert sorted(r["form"] for r in _cell_rows(out).values()) == ["long", "short"]
    assert {r["cell_id"]: r["form"] for r in _csv_rows(out / "results.csv")} == {r["cell_id"]: r["form"]
                                                                                  for r in rows}
    report = (out / "report.md").read_text()
    assert "miface [short]/baseline" in report and "miface [long]/baseline" in report
    lines: list = []
    renamed = evaluate_grid(Grid.from_dict({**small, "forms": [{"name": "one", "miface_iterations": 1},
                                                               {"name": "two", "miface_iterations": 2}]}),
                            out, progress=False, echo=lines.append)
    assert "0 to run" in lines[0]
    assert [r["form"] for r in renamed] == ["one", "two"]
    report = (out / "report.md").read_text()
    assert "miface [one]/baseline" in report and "miface [short]/baseline" not in report


def test_a_form_may_run_its_own_attacks_and_variants(tmp_path):
    """The rows a benchmark adds in another form (LOMMA in its paper's form, through the target's labels) need not
    multiply every attack and variant of the grid."""
    grid = Grid.from_dict(_tiny_grid(attacks=["gmi", "miface"], forms=[
        {"name": "as-is"}, {"name": "label-only", "access": "label-only", "variants": ["lomma"], "attacks": ["gmi"]}]))
    cells = grid.cells()
    assert [(c.form, c.config.attack, c.config.variant) for c in cells if c.defense_label == "none"] == [
        ("as-is", "gmi", "baseline"), ("as-is", "gmi", "lomma"), ("as-is", "miface", "baseline"),
        ("label-only", "gmi", "lomma")]
    assert grid.n_cells() == len(cells) == 8
    assert [c.id for c in Grid.from_dict(tomllib_loads(grid_to_toml(grid.to_dict()))).cells()] == [c.id for c in cells]
    # --adaptive adds the aligned form of the form's own variants too
    path = tmp_path / "forms.toml"
    path.write_text(grid_to_toml(grid.to_dict()))
    result = CliRunner().invoke(main, ["evaluate", "--config", str(path), "--adaptive", "--dry-run",
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "gmi [label-only]/lomma+align" in result.output and "gmi [as-is]/lomma+align" in result.output
    with pytest.raises(GridError) as err:
        Grid.from_dict({"forms": [{"name": "x", "attacks": ["gmi", "nope"], "variants": "lomma"}]})
    assert any("forms[0].attacks[1]: unknown attack 'nope'" in p for p in err.value.problems)
    assert any("forms[0].variants must be a list of variant names" in p for p in err.value.problems)


def test_a_form_may_run_some_of_the_grids_seeds():
    """A deterministic attack (MIFace from its grey start) runs at the first seed alone, in a form of its own, while
    the other forms run every seed; its cells are those of the grid that runs it at every seed."""
    grid = Grid.from_dict(_tiny_grid(attacks=["gmi", "miface"], seeds=[0, 1, 2], forms=[
        {"name": "gan", "attacks": ["gmi"], "variants": ["lomma"]}, {"name": "once", "attacks": ["miface"],
                                                                     "seeds": [1]}]))
    cells = [c for c in grid.cells() if c.defense_label == "none"]
    assert [(c.form, c.config.attack, c.config.attack_seed) for c in cells] == [
        ("gan", "gmi", 0), ("gan", "gmi", 1), ("once", "miface", 1), ("gan", "gmi", 2)]
    assert grid.n_cells() == len(grid.cells()) == 8
    every_seed = Grid.from_dict(_tiny_grid(attacks=["miface"], seeds=[0, 1, 2])).cells()
    assert cells[2].id in {c.id for c in every_seed}
    assert [c.id for c in Grid.from_dict(tomllib_loads(grid_to_toml(grid.to_dict()))).cells()] == [
        c.id for c in grid.cells()]
    assert "seeds = [1]" in grid_to_toml(grid.to_dict())
    with pytest.raises(GridError) as err:
        Grid.from_dict(_tiny_grid(seeds=[0, 1], forms=[{"name": "a", "seeds": [1, 3]}, {"name": "b", "seeds": []},
                                                       {"name": "c", "seeds": "0"}]))
    assert err.value.problems == [
        "forms[1].seeds is empty: leave it out to run the grid's seeds, or give at least one of them",
        "forms[2].seeds must be a list of non-negative integers, got the string '0'; write ['0']",
        "forms[0].seeds [3] are not among the grid's seeds [0, 1]: a form runs some of the grid's seeds; add them to "
        "the grid's seeds or drop them from the form's"]


def tomllib_loads(text: str) -> dict:
    import tomllib

    return tomllib.loads(text)


def test_a_forms_earlier_setting_and_architecture_names_are_read_as_renamed():
    from mi_art.renames import RenamedWarning

    with pytest.warns(RenamedWarning, match="form 'a': the setting 'prior_steps' is now called 'gmi_steps'"):
        grid = Grid.from_dict({"attacks": ["gmi"], "variants": ["baseline"],
                               "forms": [{"name": "a", "prior_steps": 7},
                                         {"name": "b", "surrogate_archs": ["efficientnet_b0"]}]})
    assert [(c.form, c.config.gmi_steps, c.config.surrogate_archs[0]) for c in grid.cells()] == [
        ("a", 7, "cnn-small"), ("b", 300, "efficientnet-b0")]
