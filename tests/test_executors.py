"""The executors without training: file locks of the shared artifact cache across processes, and no
Ray instance or process pool started for a grid whose cells are all done."""
from __future__ import annotations

import json
import multiprocessing
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mi_art.evaluations import cell_runner, executors
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


# --------------------------------------------------------------------------------------------------
# What evaluate_grid says and returns, pinned
# --------------------------------------------------------------------------------------------------

_PINNED_GRID = {"name": "pinned", "attacks": ["gmi"], "variants": ["baseline", "lomma"], "seeds": [0, 1, 2],
                "datasets": [{"name": "digits"}], "defenses": [{"name": "none"}]}


def _pinned_row(cell, acc1: float) -> dict:
    from mi_art.evaluations.rows import ROW_KEYS

    return {**dict.fromkeys(ROW_KEYS), "cell_id": cell.id, "index": cell.index, "dataset": "digits",
            "defense": "none", "defense_params": {}, "defense_label": "none", "attack": "gmi",
            "variant": cell.config.variant, "seed": cell.config.attack_seed, "artifact_seed": 0, "acc@1": acc1,
            "acc@1_std": 0.1, "n_classes": 5, "natural_accuracy": 0.9, "cell_seconds": 1.5,
            "warnings": ["a weak judge"] if acc1 < 0.3 else []}


def _pinned_attacks(outcomes: dict):
    """A stand-in for each cell's attack, by the cell's position in the grid: its Acc@1 (the row saved as the real
    one is), an error raised, ("finished elsewhere", Acc@1): another process holds the cell and saves its row
    meanwhile, or ("left", Acc@1): another process holds the cell and stops without finishing it."""
    from mi_art.evaluations.claims import CellClaimed
    from mi_art.utils import write_atomic

    seen = set()

    def attack(cell, out_dir, cache_dir, **kwargs):
        outcome = outcomes[cell.index]
        json_path, _ = executors.cell_paths(out_dir, cell.id)
        if isinstance(outcome, BaseException):
            raise outcome
        if isinstance(outcome, tuple) and (outcome[0] == "finished elsewhere" or cell.id not in seen):
            seen.add(cell.id)
            if outcome[0] == "finished elsewhere":
                write_atomic(json_path, json.dumps(_pinned_row(cell, outcome[1])))
            raise CellClaimed(cell.id, {"pid": 4242, "host": "elsewhere", "started": "then"})
        row = _pinned_row(cell, outcome[1] if isinstance(outcome, tuple) else outcome)
        write_atomic(json_path, json.dumps(row))
        return row

    return attack


def _transcript(tmp_path, monkeypatch, name: str, outcomes: dict, done: tuple = (), executor: str = "local"):
    """evaluate_grid on the pinned grid: its lines (timings masked, paths relative), what it raised, the rows it
    returned, grid.json, and the reports it rendered."""
    import re

    from mi_art.evaluations import report as report_module

    out = tmp_path / name
    grid = Grid.from_dict(_PINNED_GRID)
    (out / "cells").mkdir(parents=True)
    for cell in grid.cells():
        if cell.index in done:
            (out / "cells" / f"{cell.id}.json").write_text(json.dumps(_pinned_row(cell, 0.5)))
    monkeypatch.setattr(cell_runner, "_attack_cell", _pinned_attacks(outcomes))
    monkeypatch.setattr(executors, "CLAIM_POLL_SECONDS", 0.0)
    rendered: list = []

    def render_report(folder):
        rendered.append(len(list(Path(folder, "cells").glob("*.json"))))
        return [Path(folder) / "report.md"]

    monkeypatch.setattr(report_module, "render_report", render_report)
    lines: list = []
    raised, rows = None, None
    try:
        rows = evaluate_grid(grid, out, executor=executor, validate=False, progress=False, echo=lines.append)
    except (Exception, KeyboardInterrupt) as err:  # noqa: BLE001 - what it raises is pinned
        raised = f"{type(err).__name__}: {err}"

    def masked(text: str) -> str:
        text = text.replace(str(out.resolve()), "<out>").replace(str(tmp_path.resolve()), "<tmp>")
        text = re.sub(r"about .+? at this run's pace", "about <t> at this run's pace", text)
        return re.sub(r" in \d+\.\d s$", " in <t> s", text)

    grid_json = json.loads((out / "grid.json").read_text())
    grid_json["cache_dir"] = masked(grid_json["cache_dir"])
    return {"lines": [masked(line) for line in lines], "raised": raised and masked(raised),
            "rows": rows and [{k: r[k] for k in ("cell_id", "form", "acc@1")} for r in rows], "grid.json": grid_json,
            "rendered": rendered}


def test_what_evaluate_grid_says_and_returns_is_pinned(tmp_path, monkeypatch):
    """evaluate_grid's lines, rows, errors, grid.json and report, on stand-in attacks: a resumed grid with a cell
    that fails, one another process finishes and one it left unfinished; the same grid finished; a full disk;
    Ctrl-C; a grid with nothing to run; and the cells spread over target groups for another executor. Pinned in
    tests/golden/evaluate_grid.json."""
    from conftest import assert_matches_golden

    from mi_art.utils import DiskFullError

    disk_full = DiskFullError(tmp_path / "full" / "cell.json", 1234, 0)
    got = {
        "failures, claims": _transcript(tmp_path, monkeypatch, "a", {1: 0.6, 2: ValueError("bad cell"),
                                                                     3: ("finished elsewhere", 0.7), 4: 0.2,
                                                                     5: ("left", 0.8)},
                                        done=(0,)),
        "finished": _transcript(tmp_path, monkeypatch, "b", {2: 0.4, 5: 0.8}, done=(0, 1, 3, 4)),
        "disk full": _transcript(tmp_path, monkeypatch, "c", {0: 0.6, 1: disk_full, 2: 0.1}),
        "ctrl-c": _transcript(tmp_path, monkeypatch, "d", {1: 0.6, 2: KeyboardInterrupt()}, done=(0,)),
        "process, nothing to run": _transcript(tmp_path, monkeypatch, "e", {}, done=tuple(range(6)),
                                               executor="process"),
    }
    monkeypatch.setitem(executors._RUNNERS, "process", executors._run_local)  # in this process, in its order
    got["process, spread"] = _transcript(tmp_path, monkeypatch, "f", {i: 0.1 * i for i in range(6)},
                                         executor="process")
    assert_matches_golden(got, "evaluate_grid.json")


# --------------------------------------------------------------------------------------------------
# A cell's row and images, pinned
# --------------------------------------------------------------------------------------------------


class _PinnedSplit:
    def __init__(self, x, y) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)


class _PinnedData:
    """What a cell reads of its data: the private identities' names, images and training split."""

    num_classes = 3
    private_identities = ["ann", "bob", "cy"]

    def __init__(self) -> None:
        y = np.repeat(np.arange(3), 4)
        self.private_train = _PinnedSplit(None, y[:9])
        self._all = _PinnedSplit(np.arange(12 * 4, dtype=np.float32).reshape(12, 1, 2, 2) / 48, y)

    def private_all(self):
        return self._all


def _pinned_result(samples: bool) -> dict:
    """What run_attack returns, every declared metric included (figures by their order), with a NaN among them."""
    from mi_art.evaluations.metric_facts import metric_facts

    result = {}
    for i, m in enumerate(metric_facts()):
        for j, column in enumerate(m.columns):
            result[m.result_key + column[len(m.name):]] = round(0.01 * (i + 1) + 0.001 * j, 4)
    result[metric_facts()[3].result_key] = float("nan")
    result.update(attack="gmi", variant="lomma", n_judges=2, n_identities=2, n_reconstructions=4, n_candidates=3,
                  iterations=7, num_classes=3, threads=1, thread_setting="1", usable_cpus=2,
                  warnings=["weak judge"], surrogates=[{"agreement": 0.5}], prior={"fid": 40.0},
                  per_identity=[{"identity": 0, "acc@1": 1.0}], reconstructions=np.full((4, 1, 2, 2), 0.25),
                  judge_test_accuracies=[0.9, np.float32(0.75)], seconds_per_reconstruction=0.5,
                  **{"independent_acc@1_se": np.float64(0.05)},
                  feature_norms=[{"public": 2.0, "reconstructions": 3.0}, None],
                  **{"acc@1_judges": [np.float64(0.01), 0.03], "knn_dist_judges": [float("nan"), 1.0]},
                  labels=np.array([0, 0, 2, 2]), **{"chance@1": 0.34})
    if samples:
        result["prior_samples"] = np.full((2, 1, 2, 2), 0.5)
    return result


def _pinned_cell(tmp_path, monkeypatch, name: str, *, access: str, record: dict, samples: bool, threads=None):
    """_attack_cell on a stand-in workbench and attack: its row (the host, process and times masked), the row it
    saved, its images, and how it built the workbench."""
    import dataclasses

    from mi_art.evaluations import experiment

    calls: dict = {}

    class Bench:
        def __init__(self, config, cache, data, checked):
            changed = {k: v for k, v in config.to_dict().items() if cell.config.to_dict().get(k, "absent") != v}
            calls["bench"] = {"config changed": changed, "cache": type(cache).__name__, "checked": checked}
            self.data, self.defense_record = data, record

        def target(self):
            return "target"

        def judges(self):
            return ["judge"]

    def run_attack(bench, target, judges):
        calls["run_attack"] = [target, judges]
        return _pinned_result(samples)

    monkeypatch.setattr(experiment, "Workbench", Bench)
    monkeypatch.setattr(experiment, "run_attack", run_attack)
    monkeypatch.setattr(cell_runner, "load_data", lambda *args: calls.setdefault("load_data", list(args))
                        and _PinnedData())
    monkeypatch.setattr(cell_runner, "set_threads", lambda value: calls.setdefault("set_threads", value))
    cell = Grid.from_dict(_PINNED_GRID).cells()[1]
    cell = dataclasses.replace(cell, config=dataclasses.replace(cell.config, access=access), form="paper")
    config = {**cell.config.to_dict(), "device": "cpu"}  # the row's config: the cell's on the device, no verbose
    config.pop("verbose")
    out = tmp_path / name
    row = cell_runner._attack_cell(cell, out, tmp_path / "cache", verbose=True, threads=threads, device="cpu",
                                 echo=None)
    json_path, npz_path = cell_runner.cell_paths(out, cell.id)
    saved = json.loads(json_path.read_text())
    masked = {}
    for key, value in row.items():
        assert key not in ("cell_seconds", "finished_at", "host", "pid") or value is not None, key
        masked[key] = f"<{type(value).__name__}>" if key in ("cell_seconds", "finished_at", "host", "pid") else value
    assert row["config"] == config
    masked["config"] = "<the cell's config on the device>"
    with np.load(npz_path) as npz:
        images = {k: [str(v.dtype), list(v.shape), v.tolist() if v.dtype.kind in "iU" else float(v.sum())]
                  for k, v in npz.items()}
    return {"row": masked, "saved is the row": saved == json.loads(json.dumps(row, default=str)),
            "images": images, "calls": calls}


def test_a_cells_row_and_images_are_pinned(tmp_path, monkeypatch):
    """_attack_cell's row (every key in order, the declared metrics copied, chance and n/a by the judge's classes, the
    access level in the attack's name, the defense's record), the JSON it saves and the images beside it, on a
    stand-in workbench and attack. Pinned in tests/golden/attack_cell.json."""
    from conftest import assert_matches_golden

    dp = {"defense": "dp-sgd", "epsilon": 3.5, "delta": 1e-5, "accountant": "rdp"}
    got = {"white-box": _pinned_cell(tmp_path, monkeypatch, "a", access="white-box", record={}, samples=False),
           "black-box, DP, prior samples": _pinned_cell(tmp_path, monkeypatch, "b", access="black-box", record=dp,
                                                        samples=True, threads=2)}
    assert_matches_golden(got, "attack_cell.json")
