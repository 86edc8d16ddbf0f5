"""How many CPU threads torch's operators use: one policy for the library, its commands and workers.

torch starts one intra-op thread per core, and its threads spin while they wait for each other. When another
process holds a core (a browser, a CI job, a second audit, another worker on the node), every parallel region
waits for a thread that is not running, and a job runs several times slower than on one thread; on an idle
machine the same threads make it faster. Measured on 2 cores (``benchmarks/threads.py``,
``benchmarks/results/threads.md``): torch's default is faster than one thread idle, several times slower with
the other core busy, and slower still beside another torch job.

The policy, ``"auto"``: the CPUs this process may use (its CPU affinity, capped by the cgroup's CPU quota) that
other processes leave idle when the policy is applied (their load measured over 0.15 s from ``/proc/stat``),
at least one. It is applied when :mod:`mi_art` is imported and when a command or a grid worker starts; a job
keeps its threads after that, so jobs you start together on one machine should be given ``--threads``
(grid workers are: each runs on the CPUs it was given, never more).

Unless the user already chose: set ``MI_ART_THREADS`` (a count, ``"auto"``, or ``"torch"`` to leave torch's
default) or ``OMP_NUM_THREADS`` before starting Python, or call :func:`set_threads` (or
:func:`torch.set_num_threads`) after importing. Only CPU work is affected: on a GPU the kernels run on the
device whatever the thread count.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Dict, Optional, Tuple, Union

#: Environment variable that chooses the thread count before the library is imported.
THREADS_ENV = "MI_ART_THREADS"

#: ``set_threads``'s named settings: the library's policy, and torch's own default left alone.
THREAD_SETTINGS = ("auto", "torch")

_applied: Dict[str, Any] = {"setting": "torch", "threads": None}


def cgroup_cpu_quota() -> Optional[float]:
    """CPUs the cgroup lets this process use (``cpu.max`` of cgroup v2, ``cfs_quota_us / cfs_period_us`` of
    v1), or None without a quota."""
    candidates = (("/sys/fs/cgroup/cpu.max", None),
                  ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"))
    for quota_path, period_path in candidates:
        try:
            with open(quota_path) as f:
                fields = f.read().split()
            if period_path is None:
                quota, period = fields[0], (fields[1] if len(fields) > 1 else "100000")
            else:
                with open(period_path) as f:
                    quota, period = fields[0], f.read().strip()
        except (OSError, IndexError):
            continue
        if quota in ("max", "-1") or float(period) <= 0:
            return None
        return float(quota) / float(period)
    return None


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by the cgroup's CPU quota (rounded up)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def other_cpu_load(interval: float = 0.15) -> Optional[float]:
    """CPUs that other processes keep busy, measured over ``interval`` seconds: the machine's busy time in
    ``/proc/stat`` less this process's own (``/proc/self/stat``), in CPUs. None where ``/proc`` is missing."""
    def snapshot() -> Tuple[int, int, int]:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
        return sum(ticks), ticks[3] + ticks[4], int(own[11]) + int(own[12])  # total, idle, own utime + stime

    try:
        total0, idle0, own0 = snapshot()
        time.sleep(interval)
        total1, idle1, own1 = snapshot()
    except (OSError, ValueError, IndexError):
        return None
    elapsed = total1 - total0
    if elapsed <= 0:
        return None
    busy = max(0, (elapsed - (idle1 - idle0)) - (own1 - own0))
    return busy / elapsed * (os.cpu_count() or 1)


def auto_threads(cpus: Optional[int] = None, others: Optional[float] = None, total: Optional[int] = None) -> int:
    """The policy's thread count: the ``cpus`` this process may use (default :func:`usable_cpus`) that are idle,
    of the machine's ``total`` (default ``os.cpu_count()``) less the CPUs ``others`` keep busy (default: measured
    now, :func:`other_cpu_load`), at least one."""
    cpus = usable_cpus() if cpus is None else int(cpus)
    others = other_cpu_load() if others is None else others
    total = (os.cpu_count() or cpus) if total is None else int(total)
    idle = cpus if others is None else min(cpus, int(round(total - others)))
    return max(1, idle)


def check_threads(name: str, value: Any) -> Union[int, str]:
    """A thread setting: a positive integer, ``"auto"`` or ``"torch"`` (a numeric string is a count)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in THREAD_SETTINGS:
            return text
        if text.isdigit() and int(text) >= 1:
            return int(text)
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(f"{name} must be a positive number of threads, 'auto' (the usable CPUs that other processes "
                     f"leave idle, at least 1) or 'torch' (torch's default), got {value!r}")


def set_threads(threads: Union[int, str, None] = "auto") -> int:
    """Set torch's intra-op CPU threads: a count, ``"auto"`` (the policy, see the module docstring), or
    ``"torch"`` / None (leave torch's current setting). Returns the threads torch now uses."""
    import torch

    setting = "torch" if threads is None else check_threads("threads", threads)
    if setting != "torch":
        torch.set_num_threads(auto_threads() if setting == "auto" else setting)
    _applied.update(setting=setting, threads=torch.get_num_threads())
    return torch.get_num_threads()


def apply_default_threads() -> int:
    """What importing :mod:`mi_art` does: ``MI_ART_THREADS`` when set; else torch's own setting when
    ``OMP_NUM_THREADS`` is set (the user chose); else the ``"auto"`` policy."""
    chosen = os.environ.get(THREADS_ENV)
    if chosen is not None and chosen.strip():
        threads = set_threads(check_threads(THREADS_ENV, chosen))
        _applied["setting"] = f"{THREADS_ENV}={chosen.strip()}"
    elif os.environ.get("OMP_NUM_THREADS", "").strip():
        threads = set_threads("torch")
        _applied["setting"] = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS'].strip()}"
    else:
        threads = set_threads("auto")
    return threads


def thread_record() -> Dict[str, Any]:
    """What a results record says about threads: the count torch uses now, the setting that chose it and
    the CPUs this process may use."""
    import torch

    setting = _applied["setting"]
    if _applied["threads"] is not None and torch.get_num_threads() != _applied["threads"]:
        setting = "set outside mi_art"  # torch.set_num_threads called by the user after ours
    return {"threads": torch.get_num_threads(), "thread_setting": setting, "usable_cpus": usable_cpus()}
