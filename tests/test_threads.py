"""The thread policy (:mod:`mi_art.threads`): applied when mi_art is imported unless the user chose, taken by
``mi-art attack --threads``, given to grid workers from the CPUs they have (never more), and written into
every results record."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from mi_art import threads
from mi_art.evaluations.cli import main
from mi_art.evaluations.executors import worker_threads
from mi_art.threads import auto_threads, cgroup_cpu_quota, check_threads, other_cpu_load, set_threads, usable_cpus

TINY = ["--iterations", "2", "--target-epochs", "1", "--judge-epochs", "1", "--gmi-steps", "2", "--kedmi-steps", "2",
        "--surrogate-steps", "2", "--n-reconstructions", "1", "--miface-iterations", "2", "--quiet"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def _threads_in_fresh_python(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MI_ART_THREADS")}
    code = "import torch; torch.set_num_threads(97); import mi_art; print(torch.get_num_threads())"
    done = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_import_applies_the_policy_unless_the_user_chose():
    # torch was told 97 threads before mi_art's import: the policy replaces it, a user's environment does not
    assert 1 <= int(_threads_in_fresh_python()) <= usable_cpus()
    assert _threads_in_fresh_python(MI_ART_THREADS="3") == "3"
    assert _threads_in_fresh_python(MI_ART_THREADS="torch") == "97"
    assert _threads_in_fresh_python(OMP_NUM_THREADS="2") == "97"  # OMP_NUM_THREADS set: torch's own setting stays


def test_auto_takes_the_usable_cpus_others_leave_idle(monkeypatch):
    assert auto_threads(2, others=0.0, total=2) == 2
    assert auto_threads(2, others=1.1, total=2) == 1  # the other core busy: one thread, never a spinning second
    assert auto_threads(2, others=2.0, total=2) == 1
    assert auto_threads(4, others=3.0, total=16) == 4  # busy cores outside this process's affinity
    assert auto_threads(16, others=12.4, total=16) == 4
    monkeypatch.setattr(threads, "other_cpu_load", lambda *args: None)
    assert auto_threads(2, total=2) == 2  # no /proc to read the load from: the usable CPUs
    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    assert quota is None or quota > 0


def test_the_load_of_other_processes_is_measured():
    others = other_cpu_load(0.3)
    if others is None:
        pytest.skip("no /proc/stat on this system")
    if others > (os.cpu_count() or 1) - 1:
        pytest.skip(f"other processes already keep {others:.1f} of {os.cpu_count()} CPUs busy: no idle CPU for a new load")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        loaded = other_cpu_load(0.5)
    finally:
        spinner.kill()
        spinner.wait()
    assert loaded >= others + 0.6  # one more busy CPU (give or take the machine's other work)


def test_thread_settings_are_checked():
    assert check_threads("threads", "4") == 4 and check_threads("threads", " Auto ") == "auto"
    for bad in (0, -1, "many", 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            check_threads("threads", bad)
    before = set_threads(2)
    assert before == 2
    assert set_threads(1) == 1


def test_grid_workers_never_get_more_threads_than_cpus():
    assert worker_threads("ray", None, cpus_per_task=1) == 1
    assert worker_threads("ray", "auto", cpus_per_task=3.5) == 3
    assert worker_threads("process", None, workers=2) == max(1, usable_cpus() // 2)
    assert worker_threads("local", None) == "auto"
    with pytest.raises(ValueError, match="more than the 1 CPU"):
        worker_threads("ray", 2, cpus_per_task=1)
    result = CliRunner().invoke(main, ["evaluate", "--preset", "quick", "--executor", "ray", "--cpus-per-task", "1",
                                       "--threads", "4", "--dry-run"])
    assert result.exit_code != 0 and "--threads" in result.output and "Traceback" not in result.output


def test_attack_reports_the_threads_it_ran(tmp_path, cache_dir):
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MI_ART_THREADS")}
    done = subprocess.run([sys.executable, "-m", "mi_art.evaluations.cli", "attack", "--out", str(out), "--cache-dir",
                           cache_dir, *TINY], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    record = json.loads((out / "results.json").read_text())
    assert 1 <= record["threads"] <= usable_cpus() and record["thread_setting"] == "auto"
    assert record["usable_cpus"] == usable_cpus()
    result = CliRunner().invoke(main, ["attack", "--threads", "2", "--out", str(tmp_path / "two"), "--cache-dir",
                                       cache_dir, *TINY])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "two" / "results.json").read_text())["threads"] == 2
    set_threads(1)
    bad = CliRunner().invoke(main, ["attack", "--threads", "lots", "--out", str(tmp_path / "bad"), *TINY])
    assert bad.exit_code != 0 and "threads" in bad.output
