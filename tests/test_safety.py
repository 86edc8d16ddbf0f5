"""Safe to run on a shared machine (issue 35): results readable as the umask allows, a full disk named
clearly without losing what was written, report text from cell files escaped, every torch.load restricted
to weights, a private Ray instance on the loopback interface only, and a cell claimed before it is attacked
so that two runs on one folder attack each cell once."""
from __future__ import annotations

import ast
import errno
import json
import multiprocessing
import os
import stat
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mi_art.evaluations.rows import ROW_KEYS
from mi_art.utils import DiskFullError, find_disk_full, load_checkpoint, save_checkpoint, write_atomic

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def umask():
    """Set the process's umask for one test and restore it after."""
    old = os.umask(0o022)
    os.umask(old)

    def set_umask(mask: int) -> None:
        os.umask(mask)

    yield set_umask
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------------------------------
# File modes
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_results_cells_and_checkpoints_get_the_mode_the_umask_gives(tmp_path, umask, mask, mode):
    from mi_art.evaluations.cache import ArtifactCache
    from mi_art.evaluations.executors import _write_npz_atomic

    umask(mask)
    files = [write_atomic(tmp_path / "results.json", "{}"),
             save_checkpoint(nn.Linear(2, 2), tmp_path / "target.pt")]
    _write_npz_atomic(tmp_path / "cells" / "c.npz", x=np.zeros(3))
    files.append(tmp_path / "cells" / "c.npz")
    ArtifactCache(tmp_path / "cache").tensor("p-reg", {"a": 1}, lambda: torch.zeros(2))
    files += list((tmp_path / "cache").glob("*.pt"))
    assert len(files) == 4
    # tempfile.mkstemp's 0o600 would make a shared results folder unreadable to colleagues
    assert {str(f.relative_to(tmp_path)): oct(_mode(f)) for f in files} == \
        {str(f.relative_to(tmp_path)): oct(mode) for f in files}


# --------------------------------------------------------------------------------------------------
# A full disk
# --------------------------------------------------------------------------------------------------


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_names_the_file_and_keeps_its_previous_content(tmp_path, monkeypatch):
    path = write_atomic(tmp_path / "results.json", "finished results")
    monkeypatch.setattr(os, "fsync", _no_space)
    with pytest.raises(DiskFullError) as info:
        write_atomic(path, "x" * 1000)
    message = str(info.value)
    assert message.startswith(f"no space left on device while writing {path} (1,000 bytes needed")
    assert "run the same command again" in message
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert path.read_text() == "finished results"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temporary file left behind


def test_torchs_failed_write_on_a_full_disk_is_a_full_disk(tmp_path, monkeypatch):
    import mi_art.utils as utils

    def torch_save(obj, f):
        f.write(b"PK partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 832 vs 726")

    monkeypatch.setattr(utils.torch, "save", torch_save)
    monkeypatch.setattr(utils, "_free_bytes", lambda folder: 0)
    with pytest.raises(DiskFullError, match="no space left on device while writing .*target.pt .*16 bytes needed"):
        save_checkpoint(nn.Linear(1, 2), tmp_path / "target.pt")  # 2 weights and 2 biases of 4 bytes
    assert list(tmp_path.iterdir()) == []
    # with room on the disk the same error is torch's, not a full disk
    monkeypatch.setattr(utils, "_free_bytes", lambda folder: 1 << 40)
    with pytest.raises(RuntimeError, match="inline_container"):
        save_checkpoint(nn.Linear(1, 2), tmp_path / "target.pt")


def test_a_full_disk_is_found_behind_other_errors_and_is_not_called_a_bug(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from mi_art.evaluations import cli

    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.png"))
        except OSError as err:
            raise RuntimeError("while rendering") from err
    except RuntimeError as err:
        found = find_disk_full(err)
    assert found is not None and found.path == tmp_path / "x.png"
    assert find_disk_full(ValueError("no")) is None

    def report(out_dir, redraw_images=True):
        raise DiskFullError(Path(out_dir) / "report.md", 120, 0)

    monkeypatch.setattr("mi_art.evaluations.report.render_report", report)
    result = CliRunner().invoke(cli.main, ["report", str(tmp_path)])
    assert result.exit_code == 1
    assert f"no space left on device while writing {tmp_path / 'report.md'} (120 bytes needed" in result.output
    assert "a bug" not in result.output and "traceback" not in result.output


# --------------------------------------------------------------------------------------------------
# torch.load
# --------------------------------------------------------------------------------------------------


def _torch_loads(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
            owner = ast.unparse(node.func.value)
            if owner in ("torch", "torch.serialization"):
                yield node


def test_every_torch_load_in_the_repository_loads_weights_only():
    """torch < 2.6 unpickles arbitrary objects by default (code execution from a crafted file); the project
    allows torch >= 2.2, so every call says weights_only=True."""
    found, unsafe = 0, []
    for folder in ("mi_art", "evaluations", "defenses", "benchmarks", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for call in _torch_loads(ast.parse(path.read_text(), str(path))):
                found += 1
                weights_only = [k.value for k in call.keywords if k.arg == "weights_only"]
                if not (weights_only and isinstance(weights_only[0], ast.Constant) and weights_only[0].value is True):
                    unsafe.append(f"{path.relative_to(ROOT)}:{call.lineno}")
    assert found >= 3  # the scan sees the calls it checks
    assert unsafe == [], f"torch.load without weights_only=True at {', '.join(unsafe)}"


def test_the_torch_load_scan_catches_a_call_without_weights_only():
    tree = ast.parse("import torch\nx = torch.load(p, map_location='cpu')\ny = torch.load(p, weights_only=True)\n")
    calls = list(_torch_loads(tree))
    assert [[k.arg for k in c.keywords] for c in calls] == [["map_location"], ["weights_only"]]


# --------------------------------------------------------------------------------------------------
# The report escapes what cell files say
# --------------------------------------------------------------------------------------------------

HOSTILE_LABEL = "mid|beta\n<b>bold</b>"
HOSTILE_DATASET = "digits|x\n<b>set</b>"


def _hostile_cell(out: Path, cid: str, index: int, label: str, defense: str) -> None:
    row = {"cell_id": cid, "index": index, "dataset": HOSTILE_DATASET, "defense": defense, "defense_params": {},
           "defense_label": label, "natural_accuracy": 0.9, "epsilon": None, "delta": None, "attack": "gmi",
           "variant": "lomma", "seed": 0, "artifact_seed": 0, "acc@1": 0.5, "acc@1_std": 0.0, "acc@5": 0.9,
           "acc@5_std": 0.0, "knn_dist": 1.0, "fid_eval_features": None, "seconds": 1.0, "cell_seconds": 1.0,
           "judge_test_accuracy": 0.95, "n_identities": 2, "n_reconstructions": 2, "iterations": 1,
           "n_classes": 10}
    (out / "cells").mkdir(parents=True, exist_ok=True)
    (out / "cells" / f"{cid}.json").write_text(json.dumps(row))


def test_report_escapes_labels_and_dataset_names_from_cell_files(tmp_path):
    from mi_art.evaluations.report import markdown_text, render_report

    out = tmp_path / "out"
    _hostile_cell(out, "a", 0, "none", "none")
    _hostile_cell(out, "b", 1, HOSTILE_LABEL, "mid")
    render_report(out)
    md = (out / "report.md").read_text()
    assert "<b>" not in md and "\nbold" not in md and "\nset" not in md
    assert f"## {markdown_text(HOSTILE_DATASET)}\n" in md
    assert markdown_text(HOSTILE_LABEL) == r"mid\|beta &lt;b&gt;bold&lt;/b&gt;"
    # every table keeps its columns: a row has as many unescaped | as its header
    for block in md.split("\n\n"):
        table = [ln for ln in block.splitlines() if ln.startswith("|")]
        if table:
            widths = {ln.replace("\\|", "").count("|") for ln in table}
            assert len(widths) == 1, table
    rows = [ln for ln in md.splitlines() if ln.startswith("| mid")]
    assert rows and all(ln.startswith(r"| mid\|beta &lt;b&gt;bold&lt;/b&gt; |") for ln in rows)
    assert r"- **mid\|beta &lt;b&gt;bold&lt;/b&gt;**" in md  # what the defense bought


@pytest.mark.parametrize("text, escaped", [
    ("mid(beta=0.01)", "mid(beta=0.01)"),
    ("dp-sgd(target_epsilon=8.0)", "dp-sgd(target_epsilon=8.0)"),  # labels read as they are
    ("*a* _b_ [c](d) ![e][f] `g` $h$ ~~i~~ # \\", r"\*a\* \_b\_ [c\](d) ![e\][f] \`g\` \$h\$ \~\~i\~\~ \# \\"),
    ("gmi[black-box]/lomma", "gmi[black-box]/lomma"),
    ("a &amp; <script>", "a &amp;amp; &lt;script&gt;"),
    ("two\r\nlines\tand  spaces", "two lines and spaces"),
])
def test_markdown_text(text, escaped):
    from mi_art.evaluations.report import markdown_text

    assert markdown_text(text) == escaped


# --------------------------------------------------------------------------------------------------
# Ray listens on the loopback interface unless given a cluster
# --------------------------------------------------------------------------------------------------


def test_a_private_ray_instance_listens_on_loopback_only(monkeypatch):
    from mi_art.evaluations.executors import RAY_CLUSTER_SWITCH, ray_init_settings

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for address in (None, "local"):
        kwargs, env = ray_init_settings(address)
        assert kwargs["_node_ip_address"] == "127.0.0.1" and env == {RAY_CLUSTER_SWITCH: "0"}
        assert kwargs["include_dashboard"] is False
    # a cluster: its own `ray start` settings decide, nothing is forced on it
    for address in ("auto", "10.0.0.1:6379", "ray://head:10001"):
        kwargs, env = ray_init_settings(address)
        assert "_node_ip_address" not in kwargs and env == {} and kwargs["address"] == address
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    assert ray_init_settings(None)[1] == {}


def test_the_ray_executor_starts_ray_with_the_loopback_settings(tmp_path, monkeypatch):
    """Ray read its switch when it was imported: the executor sets it for the start and restores it after."""
    from mi_art.evaluations import executors
    from mi_art.evaluations.grid import Grid

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(executors.RAY_CLUSTER_SWITCH, raising=False)
    constants = types.ModuleType("ray._private.ray_constants")
    constants.ENABLE_RAY_CLUSTER = True
    monkeypatch.setitem(sys.modules, "ray._private.ray_constants", constants)
    seen = []

    def init(**kwargs):
        seen.append((kwargs, os.environ.get(executors.RAY_CLUSTER_SWITCH), constants.ENABLE_RAY_CLUSTER))
        raise RuntimeError("stop here")

    ray = types.ModuleType("ray")
    ray.is_initialized, ray.init = (lambda: False), init
    monkeypatch.setitem(sys.modules, "ray", ray)
    cell = Grid.from_dict(_GRID).cells()[0]
    with pytest.raises(RuntimeError, match="stop here"):
        list(executors._run_ray([cell], str(tmp_path), None, verbose=False, threads=None, device=None))
    assert seen == [({"address": None, "include_dashboard": False, "log_to_driver": False,
                      "logging_level": "WARNING", "_node_ip_address": "127.0.0.1"}, "0", False)]
    assert constants.ENABLE_RAY_CLUSTER is True and executors.RAY_CLUSTER_SWITCH not in os.environ


# --------------------------------------------------------------------------------------------------
# Cells are claimed: two runs on one folder attack each cell once
# --------------------------------------------------------------------------------------------------

_GRID = {"name": "claims", "attacks": ["gmi"], "variants": ["baseline", "lomma"], "seeds": [0, 1],
         "datasets": [{"name": "digits"}], "defenses": [{"name": "none"}]}
ATTACK_SECONDS = 0.3


def _stub_attack(log: Path, fail_on: int = -1):
    """A stand-in for the attack of a cell: a line in ``log``, ATTACK_SECONDS of work, the cell's row saved
    as the real one is (or a full disk on the ``fail_on``-th call)."""
    calls = []

    def attack(cell, out_dir, cache_dir, **kwargs):
        from mi_art.evaluations.executors import cell_paths

        calls.append(cell.id)
        with open(log, "a") as f:
            f.write(f"{cell.id} {os.getpid()}\n")
        time.sleep(ATTACK_SECONDS)
        json_path, _ = cell_paths(out_dir, cell.id)
        if len(calls) - 1 == fail_on:
            raise DiskFullError(json_path, 1234, 0)
        row = {**dict.fromkeys(ROW_KEYS), "cell_id": cell.id, "index": cell.index, "dataset": "digits",
               "defense": "none", "defense_params": {}, "defense_label": "none", "attack": "gmi",
               "variant": cell.config.variant, "seed": cell.config.attack_seed, "artifact_seed": 0, "acc@1": 0.5,
               "n_classes": 5, "natural_accuracy": 0.9, "cell_seconds": ATTACK_SECONDS}
        write_atomic(json_path, json.dumps(row))
        return row

    return attack


def _evaluate(out: str, barrier, results) -> None:
    from mi_art.evaluations.executors import evaluate_grid
    from mi_art.evaluations.grid import Grid

    barrier.wait()  # both runs start on the same folder at the same moment
    rows = evaluate_grid(Grid.from_dict(_GRID), out, executor="local", validate=False, progress=False, report=False,
                         echo=lambda line: None)
    results.put(sorted(r["cell_id"] for r in rows))


def test_two_runs_on_one_folder_attack_each_cell_once(tmp_path, monkeypatch):
    from mi_art.evaluations import cell_runner, executors
    from mi_art.evaluations.grid import Grid

    log = tmp_path / "attacks.log"
    monkeypatch.setattr(cell_runner, "_attack_cell", _stub_attack(log))
    monkeypatch.setattr(executors, "CLAIM_POLL_SECONDS", 0.05)
    ctx = multiprocessing.get_context("fork")  # the children keep the stub
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_evaluate, args=(str(tmp_path / "out"), barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    outcomes = [results.get(timeout=5) for _ in procs]
    ids = sorted(c.id for c in Grid.from_dict(_GRID).cells())
    attacked = [line.split()[0] for line in log.read_text().splitlines()]
    # without claims both runs attack all 4 cells (8 lines); with them each cell once, the work shared
    assert sorted(attacked) == ids
    assert len({line.split()[1] for line in log.read_text().splitlines()}) == 2
    assert outcomes == [ids, ids]  # each run waited for the other's cells and returns the whole grid
    assert list((tmp_path / "out" / "cells").glob("*.claim")) == []  # released when done


def test_a_stale_claim_is_taken_over_and_a_live_one_is_not(tmp_path):
    import socket
    import subprocess

    from mi_art.evaluations.claims import CellClaimed, claim_cell, claim_path

    path = claim_path(tmp_path, "c")
    path.parent.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here, elsewhere = socket.gethostname(), "another-host"
    live = [{"host": here, "pid": os.getpid(), "started": "t0", "token": "a"},
            {"host": elsewhere, "pid": dead.pid, "started": "t0", "token": "b"}]  # another host: only time tells
    for holder in live:
        path.write_text(json.dumps(holder))
        with pytest.raises(CellClaimed, match=f"cell c is being run by pid {holder['pid']} on {holder['host']}"):
            with claim_cell(tmp_path, "c", timeout=60):
                pass
        assert json.loads(path.read_text()) == holder  # left alone
    stale = [({"host": here, "pid": dead.pid, "token": "c"}, 0),  # its process is gone
             ({"host": elsewhere, "pid": 1, "token": "d"}, 120)]  # not refreshed for longer than the timeout
    for holder, age in stale:
        path.write_text(json.dumps(holder))
        os.utime(path, (time.time() - age, time.time() - age))
        with claim_cell(tmp_path, "c", timeout=60) as mine:
            assert json.loads(path.read_text()) == mine and mine["pid"] == os.getpid() and mine["host"] == here
        assert not path.exists()


def test_a_running_cell_refreshes_its_claim(tmp_path):
    from mi_art.evaluations.claims import claim_cell, claim_path

    with claim_cell(tmp_path, "c", timeout=10, heartbeat=0.05):
        path = claim_path(tmp_path, "c")
        os.utime(path, (time.time() - 5, time.time() - 5))
        time.sleep(0.3)
        assert time.time() - path.stat().st_mtime < 1
    with pytest.raises(ValueError, match="heartbeat=20.0 must be positive and below timeout=10.0"):
        with claim_cell(tmp_path, "c", timeout=10, heartbeat=20):
            pass


def test_a_full_disk_stops_the_grid_and_keeps_the_finished_cells(tmp_path, monkeypatch):
    from mi_art.evaluations import cell_runner
    from mi_art.evaluations.executors import GridRunError, evaluate_grid
    from mi_art.evaluations.grid import Grid

    log = tmp_path / "attacks.log"
    monkeypatch.setattr(cell_runner, "_attack_cell", _stub_attack(log, fail_on=1))
    out = tmp_path / "out"
    with pytest.raises(GridRunError) as info:
        evaluate_grid(Grid.from_dict(_GRID), out, executor="local", validate=False, progress=False,
                      echo=lambda line: None)
    message = str(info.value)
    assert message.startswith("no space left on device while writing ") and "(1,234 bytes needed" in message
    assert "1 of 4 cells are finished and saved" in message
    assert len(log.read_text().splitlines()) == 2  # the cells after the full disk were not attempted
    assert len(list((out / "cells").glob("*.json"))) == 1 and not list((out / "cells").glob("*.claim"))
    assert not (out / "report.md").exists()
