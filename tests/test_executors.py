"""The executors without training: file locks of the shared artifact cache across processes, and no
Ray instance or process pool started for a grid whose cells are all done."""
from __future__ import annotations

import json
import multiprocessing
import sys
import time
import types
from pathlib import Path

import torch
from torch import nn

from mi_art.evaluations import executors
from mi_art.evaluations.executors import LockingArtifactCache, evaluate_grid
from mi_art.evaluations.grid import Grid

# --------------------------------------------------------------------------------------------------
# File locks
# --------------------------------------------------------------------------------------------------

TRAIN_SECONDS = 0.5  # long enough for the second process to ask for the artifact while the first trains


def _train_log(log: Path, what: str):
    """A "training" that takes TRAIN_SECONDS and leaves one line in ``log``."""
    with open(log, "a") as f:
        f.write(f"{what}\n")
    time.sleep(TRAIN_SECONDS)


def _worker(root: str, log: str, barrier, results) -> None:
    torch.set_num_threads(1)
    cache = LockingArtifactCache(root)
    log_path = Path(log)

    def train_module() -> nn.Module:
        _train_log(log_path, "module")
        layer = nn.Linear(2, 2)
        with torch.no_grad():
            layer.weight.fill_(7.0)
            layer.bias.fill_(-1.0)
        return layer

    def compute_json():
        _train_log(log_path, "json")
        return {"epsilon": 3.5}

    def compute_tensor():
        _train_log(log_path, "tensor")
        return torch.arange(4.0)

    barrier.wait()  # both processes ask for each artifact at the same moment
    module = cache.module("target", {"a": 1}, lambda: nn.Linear(2, 2), train_module)
    record = cache.json("defense-record", {"a": 1}, compute_json)
    tensor = cache.tensor("p-reg", {"a": 1}, compute_tensor)
    results.put((float(module.weight.sum()), float(module.bias.sum()), record, tensor.tolist()))


def test_locking_cache_computes_each_artifact_once_across_processes(tmp_path):
    ctx = multiprocessing.get_context("fork")  # the children need not import torch again
    barrier, results = ctx.Barrier(2), ctx.Queue()
    log = tmp_path / "trainings.log"
    procs = [ctx.Process(target=_worker, args=(str(tmp_path / "cache"), str(log), barrier, results))
             for _ in range(2)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    # without the lock both processes find no checkpoint and train: two lines per artifact
    assert sorted(log.read_text().split()) == ["json", "module", "tensor"]
    # the process that waited loaded what the other one trained
    assert outcomes[0] == outcomes[1] == (28.0, -2.0, {"epsilon": 3.5}, [0.0, 1.0, 2.0, 3.0])
    assert len(list((tmp_path / "cache" / ".locks").glob("*.lock"))) == 3


# --------------------------------------------------------------------------------------------------
# A grid that is already done starts nothing
# --------------------------------------------------------------------------------------------------


def _done_grid(out: Path) -> Grid:
    """A 2-cell grid (never trained) whose cells all have a saved row under ``out/cells``."""
    grid = Grid.from_dict({"name": "done", "attacks": ["gmi"], "variants": ["baseline", "lomma"], "seeds": [0],
                           "datasets": [{"name": "digits"}], "defenses": [{"name": "none"}]})
    (out / "cells").mkdir(parents=True)
    for cell in grid.cells():
        row = {"cell_id": cell.id, "index": cell.index, "dataset": "digits", "defense": "none",
               "defense_params": {}, "defense_label": "none", "attack": "gmi", "variant": cell.config.variant,
               "seed": 0, "artifact_seed": 0, "acc@1": 0.5, "acc@5": None, "n_classes": 5}
        (out / "cells" / f"{cell.id}.json").write_text(json.dumps(row))
    return grid


def _fake_ray(calls: list) -> types.ModuleType:
    """A stand-in for the ``ray`` package that records (and refuses) any attempt to start it."""
    ray = types.ModuleType("ray")

    def refuse(name):
        def call(*args, **kwargs):
            calls.append(name)
            raise RuntimeError(f"ray.{name} called for a grid with nothing to run")
        return call

    ray.is_initialized = lambda: False
    for name in ("init", "remote", "wait", "get", "shutdown", "cancel"):
        setattr(ray, name, refuse(name))
    return ray


def test_ray_executor_does_not_start_ray_when_every_cell_is_done(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "ray", _fake_ray(calls))
    out = tmp_path / "out"
    grid = _done_grid(out)
    lines: list = []
    rows = evaluate_grid(grid, out, executor="ray", validate=False, progress=False, report=False, echo=lines.append)
    assert calls == []
    assert [r["cell_id"] for r in rows] == [c.id for c in grid.cells()]
    assert "2 cells in the grid, 2 already done, 0 to run" in lines[0]
    # the Ray runner itself starts nothing for an empty list of cells
    assert list(executors._run_ray([], str(out), None, verbose=False, threads=None, device=None)) == []
    assert calls == []


def test_process_executor_spawns_no_pool_when_every_cell_is_done(tmp_path, monkeypatch):
    import concurrent.futures

    def no_pool(*args, **kwargs):
        raise RuntimeError("a process pool was started for a grid with nothing to run")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", no_pool)
    out = tmp_path / "out"
    grid = _done_grid(out)
    rows = evaluate_grid(grid, out, executor="process", workers=2, validate=False, progress=False, report=False,
                         echo=lambda s: None)
    assert [r["variant"] for r in rows] == ["baseline", "lomma"]
    assert list(executors._run_process([], str(out), None, verbose=False, threads=None, device=None)) == []
