"""Running the cells of a grid: in process, on a local process pool, or on a Ray cluster.

Every cell runs :func:`run_cell`, which writes its result atomically when it finishes:
``<out>/cells/<cell-id>.npz`` (reconstructions and real private images, for the report's figures),
then ``<out>/cells/<cell-id>.json`` (the row; its presence marks the cell done). Running the same
grid again skips finished cells, so an interrupted evaluation (Ctrl-C, ``kill -9``, a lost node)
resumes where it stopped and loses at most the cells that were running. A cell is claimed before it runs
(:mod:`mi_art.evaluations.claims`): two evaluations on one output folder share the cells instead of
running each twice, and each waits for the other's cells at the end, so both write the whole report.

Files are written atomically with the mode the umask gives (:func:`mi_art.utils.atomic_file`); a full disk
stops the grid with a :class:`~mi_art.utils.DiskFullError` naming the file, the finished cells kept.
A local Ray instance (no ``address``) listens on 127.0.0.1 only (:func:`ray_init_settings`).

Trained artifacts (targets, judges, GAN priors, surrogates, p_reg) go through one
:class:`~mi_art.evaluations.cache.ArtifactCache` directory shared by all workers; a file lock per artifact
makes concurrent cells that need the same artifact train it once (the others wait and load it).
On Ray the output and cache directories must be on a file system every node sees.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from mi_art.threads import check_threads, set_threads, usable_cpus
from mi_art.utils import DiskFullError, find_disk_full, write_atomic

# one cell's run (its claim, its attack, its files) is mi_art.evaluations.cell_runner's, importable from here too
from .cell_runner import LockingArtifactCache, _attack_cell, _write_npz_atomic, run_cell  # noqa: F401
from .claims import CLAIM_TIMEOUT_SECONDS, CellClaimed, claim_cell, claim_state, find_claimed  # noqa: F401
from .grid import Cell, Grid
from .rows import ROW_KEYS, cell_paths, completed_cells, normalise_row, pair_label, read_cell
from .stages import format_seconds

# ROW_KEYS, cell_paths, completed_cells and read_cell live in mi_art.evaluations.rows (shared with the report);
# they stay importable from here.

__all__ = ["EXECUTORS", "ROW_KEYS", "CellFailure", "GridInterrupted", "GridRunError", "LockingArtifactCache",
           "cell_paths", "completed_cells", "evaluate_grid", "ray_init_settings", "read_cell", "run_cell"]

EXECUTORS = ("local", "process", "ray")
PathLike = Union[str, Path]


class GridRunError(RuntimeError):
    """Some cells failed; the others are saved and a rerun retries only the failed ones."""


class CellFailure(RuntimeError):
    pass


class GridInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the grid after it said what was kept and how to resume (:func:`evaluate_grid`)."""



def _ray_run_cell(cell: Dict[str, Any], out_dir: str, cache_dir: Optional[str], verbose: bool,
                  threads: Optional[int], device: Optional[str]) -> Dict[str, Any]:
    return run_cell(cell, out_dir, cache_dir, verbose=verbose, threads=threads, device=device)


def _init_worker(threads: Union[int, str, None]) -> None:
    if threads is not None:
        set_threads(threads)


def worker_threads(executor: str, threads: Union[int, str, None] = None, *, workers: Optional[int] = None,
                   cpus_per_task: float = 1.0) -> Union[int, str]:
    """The torch threads each worker of ``executor`` runs: never more than the CPUs it was given.

    ``local``: ``threads``, else the library's policy (``"auto"``, :mod:`mi_art.threads`); ``process``: the
    CPUs this process may use divided among ``workers`` (the pool fills the machine on purpose: each worker
    takes its share); ``ray``: ``cpus_per_task`` (rounded down, at least 1). ``"torch"`` leaves torch's
    default, as asked. A count above a worker's CPUs is refused (threads that wait on each other's busy
    cores make every worker several times slower).

    :raises ValueError: ``threads`` is not a thread setting, or more than a worker's CPUs."""
    if executor not in _RUNNERS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    threads = None if threads is None else check_threads("threads", threads)
    if executor == "local":
        return "auto" if threads is None else threads
    if executor == "process":
        n_workers = max(1, int(workers or usable_cpus()))
        given, what = max(1, usable_cpus() // n_workers), f"{usable_cpus()} usable CPUs / {n_workers} workers"
    else:
        given, what = max(1, int(cpus_per_task)), f"--cpus-per-task {cpus_per_task:g}"
    if threads in (None, "auto"):
        return given
    if threads != "torch" and threads > given:
        raise ValueError(f"threads={threads} is more than the {given} CPU(s) each {executor} worker is given "
                         f"({what}); give --threads {given} or fewer, or more CPUs per worker")
    return threads


# --------------------------------------------------------------------------------------------------
# Executors
# --------------------------------------------------------------------------------------------------

Outcome = Tuple[Cell, Optional[Dict[str, Any]], Optional[BaseException]]


def _run_local(cells: Sequence[Cell], out: str, cache: Optional[str], *, verbose: bool, threads: Optional[int],
               device: Optional[str], echo: Optional[Callable[[str], None]] = None, **_: Any) -> Iterator[Outcome]:
    for cell in cells:
        try:
            yield cell, run_cell(cell, out, cache, verbose=verbose, threads=threads, device=device, echo=echo), None
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as err:  # noqa: BLE001 - a failed cell must not stop the grid
            yield cell, None, err


def _print_line(line: str) -> None:
    """A worker process's stage line, on the standard output it shares with the driver."""
    print(line, flush=True)


def _run_process(cells: Sequence[Cell], out: str, cache: Optional[str], *, verbose: bool, threads: Optional[int],
                 device: Optional[str], workers: Optional[int] = None, echo: Optional[Callable[[str], None]] = None,
                 **_: Any) -> Iterator[Outcome]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    if not cells:  # nothing to run: spawn no worker
        return
    workers = max(1, int(workers or usable_cpus()))
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(threads,))
    try:
        futures = {pool.submit(run_cell, cell.to_dict(), out, cache, verbose=verbose, threads=threads,
                               device=device, echo=None if echo is None else _print_line): cell for cell in cells}
        for future in as_completed(futures):
            err = future.exception()
            yield futures[future], (None if err else future.result()), err
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise RuntimeError("the 'ray' executor needs Ray, an optional dependency: pip install 'mi-art[ray]' "
                           "(or pip install ray)") from err
    return ray


#: Ray's switch between a node that takes this machine's network address (a cluster member: its servers
#: listen on every interface) and one on the loopback address. Ray offers no public bind setting.
RAY_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def ray_init_settings(address: Optional[str], verbose: bool = False) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """The keyword arguments of ``ray.init`` and the environment variables to set while Ray starts.

    Without a cluster address (``address`` None or ``"local"``, and no ``RAY_ADDRESS`` in the environment)
    Ray starts a private instance for this run, and it listens on 127.0.0.1 only: its GCS, raylet, object
    manager, workers and agents are then out of reach of other users and machines (by default Ray takes the
    machine's network address and its servers listen on every interface). Ray has no public setting for
    this: the node address is 127.0.0.1 and ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` stops Ray from replacing
    it by the network address.

    With a cluster address (``"auto"``, ``host:6379``, ``ray://host:10001``) the cluster's own ``ray start``
    decides where it listens, on every interface of its nodes: keep them in a private network or behind a
    firewall that admits only the cluster's nodes, and turn on Ray's token authentication
    (``RAY_AUTH_MODE=token``, Ray >= 2.52) and TLS (``RAY_USE_TLS=1``) on every node; Ray's security
    documentation has the details."""
    kwargs: Dict[str, Any] = {"address": address, "include_dashboard": False, "log_to_driver": verbose,
                              "logging_level": "WARNING"}
    if address in (None, "local") and not os.environ.get("RAY_ADDRESS"):
        kwargs["_node_ip_address"] = "127.0.0.1"
        return kwargs, {RAY_CLUSTER_SWITCH: "0"}
    return kwargs, {}


def _start_ray(ray: Any, address: Optional[str], verbose: bool) -> None:
    """``ray.init`` with :func:`ray_init_settings`; the environment is restored once Ray has started (its
    processes keep the settings)."""
    kwargs, env = ray_init_settings(address, verbose)
    saved = {k: os.environ.get(k) for k in env}
    # ray read the switch when it was imported: set the value it reads now as well
    constants = sys.modules.get("ray._private.ray_constants") if env else None
    switch = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    os.environ.update(env)
    if switch is not None:
        constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(**kwargs)
    finally:
        if switch is not None:
            constants.ENABLE_RAY_CLUSTER = switch
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _run_ray(cells: Sequence[Cell], out: str, cache: Optional[str], *, verbose: bool, threads: Optional[int],
             device: Optional[str], address: Optional[str] = None, gpus_per_task: float = 0.0,
             cpus_per_task: float = 1.0, **_: Any) -> Iterator[Outcome]:
    if not cells:  # nothing to run: do not start (or connect to) Ray
        return
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        _start_ray(ray, address, verbose)
        started = True
    try:
        task = ray.remote(_ray_run_cell).options(num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=1)
        refs = {task.remote(cell.to_dict(), out, cache, verbose, threads, device): cell for cell in cells}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                ref = done[0]
                try:
                    yield refs[ref], ray.get(ref), None
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as err:  # noqa: BLE001 - ray.exceptions.RayTaskError and friends
                    yield refs[ref], None, err
        finally:
            for ref in pending:
                ray.cancel(ref)
    finally:
        if started:
            ray.shutdown()


_RUNNERS: Dict[str, Callable[..., Iterator[Outcome]]] = {"local": _run_local, "process": _run_process,
                                                        "ray": _run_ray}


def _spread(cells: Sequence[Cell]) -> List[Cell]:
    """Round-robin over target groups: concurrent workers start on different targets instead of
    waiting for each other's locks on the same one."""
    groups: Dict[str, List[Cell]] = {}
    for cell in cells:
        groups.setdefault(cell.target_group, []).append(cell)
    out: List[Cell] = []
    queues = list(groups.values())
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


# --------------------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------------------


#: Seconds between two looks at the cells another process runs.
CLAIM_POLL_SECONDS = 10.0


def _wait_for_claims(out: Path, waiting: Dict[str, Cell], finished: Callable[[Cell, Dict[str, Any]], None],
                     write: Callable[[str], None]) -> List[Cell]:
    """Wait until a cell of ``waiting`` (claimed by other processes) is finished (then ``finished`` gets its
    row) or free again (its process stopped without finishing it: then it is returned, to be run here).
    Returns the cells to run, or nothing once no cell is left waiting."""
    if waiting:
        write(f"waiting for {len(waiting)} cell(s) that other processes are running; a cell is taken over here "
              f"once its process stops (on this host) or its claim goes {CLAIM_TIMEOUT_SECONDS / 60:g} min without "
              f"a refresh (delete {out / 'cells'}/<cell-id>.claim to take it over now). Ctrl-C stops waiting: the "
              "finished cells are kept and the same command resumes")
    while waiting:
        free: List[Cell] = []
        for cid, cell in list(waiting.items()):
            row = read_cell(cell_paths(out, cid)[0])
            if row is not None and row["cell_id"] == cid:
                finished(waiting.pop(cid), row)
            elif claim_state(out, cid) is None:
                free.append(waiting.pop(cid))
        if free:
            return free
        if waiting:
            time.sleep(CLAIM_POLL_SECONDS)
    return []


def summary_line(row: Dict[str, Any]) -> str:
    """The console line of a finished cell: its metrics, then each weak-model warning on a line of its own."""
    from .report import row_warnings

    def f(v: Any, spec: str = ".3f") -> str:
        return "n/a" if v is None else format(v, spec)

    row = normalise_row(row)
    eps = "" if row.get("epsilon") is None else f", eps {row['epsilon']:.2f}"
    return (f"{row['dataset']} {row['defense_label']} {pair_label(row)} seed {row['seed']}: "
            f"Acc@1 {f(row['acc@1'])} +- {f(row['acc@1_std'])} (chance {f(row.get('chance@1'))}"
            + (f"; judges +- {f(row.get('acc@1_judge_std'))}" if (row.get("n_judges") or 1) > 1 else "") + "), "
            f"Acc@5 {f(row['acc@5'])} (chance {f(row.get('chance@5'))}), KNN {f(row['knn_dist'])}, "
            f"FID {f(row['fid_eval_features'])}, "
            + ("" if row.get("independent_acc@1") is None else f"independent judge Acc@1 "
               f"{f(row['independent_acc@1'])} (ratio {f(row.get('independent_ratio'), '.2f')}), ")
            + f"natural acc {f(row['natural_accuracy'])}{eps}, "
            f"{row['cell_seconds']:.1f} s" + "".join(f"\n  WARNING: {w}" for w in row_warnings(row)))


def _say_interrupted(out: Path, cells: Sequence[Cell], done: Dict[str, Dict[str, Any]], echo: Callable[[str], None],
                     report: bool) -> None:
    """After Ctrl-C: what was kept, how to resume, each finished cell's Acc@1 and the report of those cells
    (a second Ctrl-C skips the report)."""
    rows = [{**done[c.id], "form": c.form} for c in cells if c.id in done]
    echo(f"interrupted: {len(rows)} of {len(cells)} cells are finished and kept in {out / 'cells'} (a cell that was "
         "running is lost). Run the same command again to resume: finished cells are not run again, and trained "
         "targets, judges, priors and surrogates are loaded from the cache.")
    if not rows:
        return
    echo("finished cells:")
    for row in rows:
        acc, nat = row.get("acc@1"), row.get("natural_accuracy")
        echo(f"  {row['dataset']} {row['defense_label']} {pair_label(row)} seed {row['seed']}: "
             f"Acc@1 {'n/a' if acc is None else format(acc, '.3f')}, "
             f"natural acc {'n/a' if nat is None else format(nat, '.3f')}")
    if not report:
        return
    from .report import render_report

    echo(f"rendering the report of the {len(rows)} finished cells (Ctrl-C again skips it) ...")
    try:
        paths = render_report(out)
    except KeyboardInterrupt:
        echo(f"report skipped: `mi-art report {out}` renders it from the finished cells")
        return
    echo(f"wrote {', '.join(str(p) for p in paths)}")


def evaluate_grid(grid: Grid, out_dir: PathLike, *, cache_dir: Optional[PathLike] = None, executor: str = "local",
                  workers: Optional[int] = None, address: Optional[str] = None, gpus_per_task: float = 0.0,
                  cpus_per_task: float = 1.0, threads: Union[int, str, None] = None,
                  device: Optional[str] = None,
                  verbose: bool = False, progress: bool = True, report: bool = True,
                  echo: Callable[[str], None] = print, validate: bool = True,
                  allow_large: bool = False) -> List[Dict[str, Any]]:
    """Run every unfinished cell of ``grid``, then write the report. Returns the rows in grid order.

    :param out_dir: Results folder: ``cells/``, ``grid.json``, the report; ``cache/`` by default.
    :param cache_dir: Shared artifact cache (default ``<out_dir>/cache``).
    :param executor: "local" (in this process), "process" (``workers`` spawned processes), "ray".
    :param threads: torch threads per worker: a count, "auto" or "torch" (:func:`worker_threads`; default:
        the library's policy in process, the usable CPUs divided among the workers for process, the task's
        CPUs for ray).
    :param allow_large: Let :meth:`Grid.validate` pass a grid too large to finish or fit (the size guard).
    :raises GridError: An invalid grid, before anything is trained.
    :raises GridRunError: Some cells failed (the others are saved; rerun to retry the failed ones).
    """
    from tqdm.auto import tqdm

    threads = worker_threads(executor, threads, workers=workers, cpus_per_task=cpus_per_task)
    if executor == "ray":
        import_ray()  # fail before any training when Ray is missing
    if validate:
        grid.validate(allow_large=allow_large)
    out = Path(out_dir).resolve()
    cache = Path(cache_dir).resolve() if cache_dir is not None else out / "cache"
    cells = grid.cells()
    _write_grid_json(out, grid, cells, cache)
    done = completed_cells(out, [c.id for c in cells])
    todo = [c for c in cells if c.id not in done]
    echo(f"{len(cells)} cells in the grid, {len(done)} already done, {len(todo)} to run "
         f"(executor {executor}, cache {cache})")
    bar = tqdm(total=len(cells), initial=len(done), desc="cells", unit="cell", disable=not progress, dynamic_ncols=True)
    run = _GridRun(out, cells, done, bar, bar.write if progress else echo)
    try:
        run.run(todo if executor == "local" else _spread(todo), executor, str(cache),
                dict(verbose=verbose, threads=threads, device=device, workers=workers, address=address,
                     gpus_per_task=gpus_per_task, cpus_per_task=cpus_per_task))
    except KeyboardInterrupt:
        bar.close()
        _say_interrupted(out, cells, done, echo, report)
        raise GridInterrupted() from None
    finally:
        bar.close()
    run.raise_if_disk_full()
    rows = [{**done[c.id], "form": c.form} for c in cells if c.id in done]
    if report and rows:
        _render_grid_report(out, rows, echo)
    run.raise_if_failed()
    return rows


def _write_grid_json(out: Path, grid: Grid, cells: Sequence[Cell], cache: Path) -> None:
    """``<out>/grid.json``: the grid, each cell's id and what it runs, and the cache it uses."""
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "grid.json", json.dumps({"grid": grid.to_dict(), "cells": [
        {"id": c.id, "index": c.index, "dataset": c.dataset_label, "defense_label": c.defense_label,
         "attack": c.config.attack, "variant": c.config.variant, "seed": c.config.attack_seed, "form": c.form}
        for c in cells],
        "cache_dir": str(cache)}, indent=1))


class _GridRun:
    """The cells of a grid as an executor runs them: the rows done, the failures, the cells other processes hold,
    a full disk, and a line on the console for each."""

    def __init__(self, out: Path, cells: Sequence[Cell], done: Dict[str, Dict[str, Any]], bar: Any,
                 write: Callable[[str], None]) -> None:
        self.out, self.cells, self.done, self.bar, self.write = out, cells, done, bar, write
        self.failures: List[Tuple[Cell, BaseException]] = []
        self.full: Optional[DiskFullError] = None
        self.waiting: Dict[str, Cell] = {}  # claimed by another process
        self.started, self.ran_here = time.perf_counter(), 0

    def run(self, todo: List[Cell], executor: str, cache: str, settings: Dict[str, Any]) -> None:
        """Run ``todo`` on ``executor``, then the cells other processes held and left, until none is left to run
        here or the disk is full."""
        while todo and self.full is None:
            # nothing to run: start no worker pool and no Ray instance
            for cell, row, err in _RUNNERS[executor](todo, str(self.out), cache, **settings, echo=self.write):
                self.take(cell, row, err)
                if self.full is not None:  # every later cell would fail too: stop, keeping what is saved
                    break
            todo = [] if self.full is not None else _wait_for_claims(self.out, self.waiting, self.finished,
                                                                     self.write)

    def take(self, cell: Cell, row: Optional[Dict[str, Any]], err: Optional[BaseException]) -> None:
        """One outcome of the executor: a cell another process holds (waited for), a failure, or a row."""
        claimed = find_claimed(err)
        if claimed is not None:
            self.waiting[cell.id] = cell
            self.write(f"{cell.id}: {claimed}")
            return
        if err is not None:
            self.bar.update(1)
            self.failures.append((cell, err))
            self.write(f"FAILED {cell.tag}: {type(err).__name__}: {err}")
            self.full = find_disk_full(err)
            return
        assert row is not None
        json_path, _ = cell_paths(self.out, cell.id)
        if not json_path.is_file():  # a worker whose file system the driver does not see
            write_atomic(json_path, json.dumps(row, indent=1, default=str))
        self.finished(cell, row)

    def finished(self, cell: Cell, row: Dict[str, Any]) -> None:
        """A cell's row, run here or by another process: its line, and how long the cells left will take."""
        self.bar.update(1)
        self.done[cell.id] = row = {**row, "form": cell.form}  # a saved row of the same work may name another form
        self.ran_here += 1
        self.write(summary_line(row))
        left = len(self.cells) - len(self.done) - len(self.failures)
        if left:
            pace = (time.perf_counter() - self.started) / self.ran_here
            self.write(f"{len(self.done)} of {len(self.cells)} cells done; {left} left, about "
                       f"{format_seconds(pace * left)} at this run's pace so far (cells that share trained artifacts "
                       "go faster)")

    def raise_if_disk_full(self) -> None:
        if self.full is not None:
            raise GridRunError(f"{self.full}. The grid stopped there: {len(self.done)} of {len(self.cells)} cells are "
                               f"finished and saved under {self.out / 'cells'}; the report was not rendered")

    def raise_if_failed(self) -> None:
        if self.failures:
            lines = "\n".join(f"  {c.id} {c.tag}: {type(e).__name__}: {e}" for c, e in self.failures)
            raise GridRunError(f"{len(self.failures)} of {len(self.cells)} cells failed (the others are saved; run "
                               f"the same command again to retry):\n{lines}")


def _render_grid_report(out: Path, rows: List[Dict[str, Any]], echo: Callable[[str], None]) -> None:
    from .report import render_report

    echo(f"rendering the report of {len(rows)} cells (tables, figures, one image grid per cell) ...")
    report_start = time.perf_counter()
    paths = render_report(out)
    echo(f"wrote {', '.join(str(p) for p in paths)} in {time.perf_counter() - report_start:.1f} s")
