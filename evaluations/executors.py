"""Running the cells of a grid: in process, on a local process pool, or on a Ray cluster.

Every cell runs :func:`run_cell`, which writes its result atomically when it finishes:
``<out>/cells/<cell-id>.npz`` (reconstructions and real private images, for the report's figures),
then ``<out>/cells/<cell-id>.json`` (the row; its presence marks the cell done). Running the same
grid again skips finished cells, so an interrupted evaluation (Ctrl-C, ``kill -9``, a lost node)
resumes where it stopped and loses at most the cells that were running.

Trained artifacts (targets, evaluators, GAN priors, surrogates, p_reg) go through one
:class:`~mi_art.evaluations.cache.ArtifactCache` directory shared by all workers; a file lock per artifact
makes concurrent cells that need the same artifact train it once (the others wait and load it).
On Ray the output and cache directories must be on a file system every node sees.
"""
from __future__ import annotations

import io
import json
import os
import socket
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from mi_art.threads import check_threads, set_threads, usable_cpus
from mi_art.utils import write_atomic

from .cache import ArtifactCache
from .grid import Cell, Grid, load_data
from .rows import ROW_KEYS, TOP_K, cell_paths, completed_cells, finite_or_none, normalise_row, read_cell

# ROW_KEYS, cell_paths, completed_cells and read_cell live in mi_art.evaluations.rows (shared with the report);
# they stay importable from here.

__all__ = ["EXECUTORS", "ROW_KEYS", "CellFailure", "GridRunError", "LockingArtifactCache", "cell_paths",
           "completed_cells", "evaluate_grid", "read_cell", "run_cell"]

EXECUTORS = ("local", "process", "ray")
PathLike = Union[str, Path]


class GridRunError(RuntimeError):
    """Some cells failed; the others are saved and a rerun retries only the failed ones."""


class CellFailure(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------------
# Shared artifacts
# --------------------------------------------------------------------------------------------------


class LockingArtifactCache(ArtifactCache):
    """An :class:`ArtifactCache` whose artifacts are computed under an exclusive file lock
    (``<artifact>.lock``), so that concurrent processes sharing the directory train each once."""

    @contextmanager
    def _locked(self, kind: str, config: Dict[str, Any]) -> Iterator[None]:
        path = self.path(kind, config)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no locking, at worst duplicated work
            fcntl = None  # type: ignore[assignment]
        if path is None or fcntl is None:
            yield
            return
        locks = path.parent / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{kind}-{path.stem.rsplit('-', 1)[-1]}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def module(self, kind, config, build, train):  # type: ignore[override]
        with self._locked(kind, config):
            return super().module(kind, config, build, train)

    def json(self, kind, config, compute):  # type: ignore[override]
        with self._locked(kind + ".json", config):
            return super().json(kind, config, compute)

    def tensor(self, kind, config, compute):  # type: ignore[override]
        with self._locked(kind, config):
            return super().tensor(kind, config, compute)


# --------------------------------------------------------------------------------------------------
# One cell
# --------------------------------------------------------------------------------------------------


def _write_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(buffer.getvalue())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def run_cell(cell: Union[Cell, Dict[str, Any]], out_dir: PathLike, cache_dir: Optional[PathLike], *,
             verbose: bool = False, threads: Union[int, str, None] = None, device: Optional[str] = None,
             echo: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Run one cell end to end (shared artifacts from the cache), write its files, return its row.
    ``echo``, when given, receives a line for each stage: every artifact trained (target, judges, prior,
    surrogates, p_reg, ...) with its seconds, and the attack."""
    import dataclasses

    from .experiment import Workbench, run_attack

    if threads is not None:
        set_threads(threads)
    cell = Cell.from_dict(cell) if isinstance(cell, dict) else cell
    config = dataclasses.replace(cell.config, verbose=verbose, device=device or cell.config.device)
    start = time.perf_counter()
    tag = f"{config.dataset} {cell.defense_label} {config.attack}/{config.variant} seed {config.attack_seed}"

    def made(kind: str, seconds: float) -> None:
        if echo is not None:
            echo(f"  {tag}: made the {kind.replace('-', ' ')} in {seconds:.1f} s")

    data = load_data(config.dataset, config.data_root, config.data_options)
    bench = Workbench(config, LockingArtifactCache(cache_dir, on_made=made), data=data)
    target, judges = bench.target(), bench.evaluators()
    if echo is not None:
        echo(f"  {tag}: attacking ({config.iterations if config.attack != 'miface' else config.miface_iterations} "
             f"iterations)")
    attack_start = time.perf_counter()
    result = run_attack(bench, target=target, evaluator=judges)
    if echo is not None:
        echo(f"  {tag}: attack and its metrics done in {time.perf_counter() - attack_start:.1f} s")
    record = bench.defense_record or {}
    row: Dict[str, Any] = {
        "cell_id": cell.id, "dataset": config.dataset, "defense": config.defense,
        "defense_params": dict(config.defense_params), "defense_label": cell.defense_label,
        "natural_accuracy": finite_or_none(result["target_test_accuracy"]),
        "epsilon": finite_or_none(record.get("epsilon")), "delta": finite_or_none(record.get("delta")),
        # below white-box the access level is part of the attack's name, so tables and plots keep it apart
        "attack": result["attack"] if config.access == "white-box" else f"{result['attack']}[{config.access}]",
        "variant": result["variant"], "seed": config.attack_seed, "access": config.access,
        "queries": result.get("queries"),
        "artifact_seed": config.seed,
        **{k: finite_or_none(result[k]) for k in ("acc@1", "acc@1_std", "acc@5", "acc@5_std", "knn_dist",
                                                  "fid_eval_features", "seconds", "evaluator_test_accuracy",
                                                  "acc@1_judge_std", "acc@5_judge_std", "knn_dist_judge_std",
                                                  "fid_eval_features_judge_std")},
        "n_judges": int(result["n_judges"]),
        "cell_seconds": time.perf_counter() - start,
        "n_identities": result["n_identities"], "n_reconstructions": result["n_reconstructions"],
        "n_candidates": result.get("n_candidates"), "iterations": result["iterations"],
        # the judge's number of classes: Acc@k against chance, and n/a where k >= n_classes
        "n_classes": int(result.get("num_classes", bench.data.num_classes)),
        **{k: finite_or_none(result.get(k)) for k in ("independent_acc@1", "independent_acc@5", "independent_dist",
                                                       "independent_test_accuracy", "independent_ratio")},
    }
    row.update({f"chance@{k}": result[f"chance@{k}"] for k in TOP_K if result.get(f"chance@{k}") is not None})
    row = normalise_row(row)
    if record:
        row["defense_record"] = record
    row["config"] = {k: v for k, v in config.to_dict().items() if k not in ("verbose",)}
    row["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    row["host"], row["pid"] = socket.gethostname(), os.getpid()
    row.update({k: result[k] for k in ("threads", "thread_setting", "usable_cpus", "independent_judge", "independent",
                                       "independent_shares", "panel_shares") if k in result})
    row["index"] = cell.index

    # reconstructions and a few real private images of the attacked identities, for the figures
    recs, labels = np.asarray(result["reconstructions"], np.float32), np.asarray(result["labels"], np.int64)
    priv = bench.data.private_all()
    keep = np.concatenate([np.flatnonzero(priv.y == k)[:2] for k in np.unique(labels)]).astype(np.int64)
    json_path, npz_path = cell_paths(out_dir, cell.id)
    _write_npz_atomic(npz_path, reconstructions=recs, labels=labels, real_x=priv.x[keep], real_y=priv.y[keep],
                      identity_names=np.asarray(bench.data.private_identities, dtype=str))
    write_atomic(json_path, json.dumps(row, indent=1, sort_keys=False, default=str))
    return row


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


def _run_process(cells: Sequence[Cell], out: str, cache: Optional[str], *, verbose: bool, threads: Optional[int],
                 device: Optional[str], workers: Optional[int] = None, **_: Any) -> Iterator[Outcome]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    if not cells:  # nothing to run: spawn no worker
        return
    workers = max(1, int(workers or usable_cpus()))
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(threads,))
    try:
        futures = {pool.submit(run_cell, cell.to_dict(), out, cache, verbose=verbose, threads=threads,
                               device=device): cell for cell in cells}
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


def _run_ray(cells: Sequence[Cell], out: str, cache: Optional[str], *, verbose: bool, threads: Optional[int],
             device: Optional[str], address: Optional[str] = None, gpus_per_task: float = 0.0,
             cpus_per_task: float = 1.0, **_: Any) -> Iterator[Outcome]:
    if not cells:  # nothing to run: do not start (or connect to) Ray
        return
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=verbose, logging_level="WARNING")
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


def summary_line(row: Dict[str, Any]) -> str:
    """The console line of a finished cell: its metrics, then each weak-model warning on a line of its own."""
    from .report import row_warnings

    def f(v: Any, spec: str = ".3f") -> str:
        return "n/a" if v is None else format(v, spec)

    row = normalise_row(row)
    eps = "" if row.get("epsilon") is None else f", eps {row['epsilon']:.2f}"
    return (f"{row['dataset']} {row['defense_label']} {row['attack']}/{row['variant']} seed {row['seed']}: "
            f"Acc@1 {f(row['acc@1'])} +- {f(row['acc@1_std'])} (chance {f(row.get('chance@1'))}"
            + (f"; judges +- {f(row.get('acc@1_judge_std'))}" if (row.get("n_judges") or 1) > 1 else "") + "), "
            f"Acc@5 {f(row['acc@5'])} (chance {f(row.get('chance@5'))}), KNN {f(row['knn_dist'])}, "
            f"FID {f(row['fid_eval_features'])}, "
            + ("" if row.get("independent_acc@1") is None else f"independent judge Acc@1 "
               f"{f(row['independent_acc@1'])} (ratio {f(row.get('independent_ratio'), '.2f')}), ")
            + f"natural acc {f(row['natural_accuracy'])}{eps}, "
            f"{row['cell_seconds']:.1f} s" + "".join(f"\n  WARNING: {w}" for w in row_warnings(row)))


def evaluate_grid(grid: Grid, out_dir: PathLike, *, cache_dir: Optional[PathLike] = None, executor: str = "local",
                  workers: Optional[int] = None, address: Optional[str] = None, gpus_per_task: float = 0.0,
                  cpus_per_task: float = 1.0, threads: Union[int, str, None] = None,
                  device: Optional[str] = None,
                  verbose: bool = False, progress: bool = True, report: bool = True,
                  echo: Callable[[str], None] = print, validate: bool = True) -> List[Dict[str, Any]]:
    """Run every unfinished cell of ``grid``, then write the report. Returns the rows in grid order.

    :param out_dir: Results folder: ``cells/``, ``grid.json``, the report; ``cache/`` by default.
    :param cache_dir: Shared artifact cache (default ``<out_dir>/cache``).
    :param executor: "local" (in this process), "process" (``workers`` spawned processes), "ray".
    :param threads: torch threads per worker: a count, "auto" or "torch" (:func:`worker_threads`; default:
        the library's policy in process, the usable CPUs divided among the workers for process, the task's
        CPUs for ray).
    :raises GridError: An invalid grid, before anything is trained.
    :raises GridRunError: Some cells failed (the others are saved; rerun to retry the failed ones).
    """
    from tqdm.auto import tqdm

    threads = worker_threads(executor, threads, workers=workers, cpus_per_task=cpus_per_task)
    if executor == "ray":
        import_ray()  # fail before any training when Ray is missing
    if validate:
        grid.validate()
    out = Path(out_dir).resolve()
    cache = Path(cache_dir).resolve() if cache_dir is not None else out / "cache"
    cells = grid.cells()
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "grid.json", json.dumps({"grid": grid.to_dict(), "cells": [
        {"id": c.id, "index": c.index, "dataset": c.config.dataset, "defense_label": c.defense_label,
         "attack": c.config.attack, "variant": c.config.variant, "seed": c.config.attack_seed} for c in cells],
        "cache_dir": str(cache)}, indent=1))
    done = completed_cells(out, [c.id for c in cells])
    todo = [c for c in cells if c.id not in done]
    echo(f"{len(cells)} cells in the grid, {len(done)} already done, {len(todo)} to run "
         f"(executor {executor}, cache {cache})")
    if executor != "local":
        todo = _spread(todo)
    failures: List[Tuple[Cell, BaseException]] = []
    bar = tqdm(total=len(cells), initial=len(done), desc="cells", unit="cell", disable=not progress, dynamic_ncols=True)
    write = bar.write if progress else echo
    try:
        # nothing to run: start no worker pool and no Ray instance
        runner = _RUNNERS[executor](todo, str(out), str(cache), verbose=verbose, threads=threads, device=device,
                                    workers=workers, address=address, gpus_per_task=gpus_per_task,
                                    cpus_per_task=cpus_per_task, echo=write) if todo else iter(())
        for cell, row, err in runner:
            bar.update(1)
            if err is not None:
                failures.append((cell, err))
                write(f"FAILED {cell.config.dataset} {cell.defense_label} {cell.config.attack}/{cell.config.variant} "
                      f"seed {cell.config.attack_seed}: {type(err).__name__}: {err}")
                continue
            assert row is not None
            json_path, _ = cell_paths(out, cell.id)
            if not json_path.is_file():  # a worker whose file system the driver does not see
                write_atomic(json_path, json.dumps(row, indent=1, default=str))
            done[cell.id] = row
            write(summary_line(row))
    finally:
        bar.close()
    rows = [done[c.id] for c in cells if c.id in done]
    if report and rows:
        from .report import render_report

        echo(f"rendering the report of {len(rows)} cells (tables, figures, one image grid per cell) ...")
        report_start = time.perf_counter()
        paths = render_report(out)
        echo(f"wrote {', '.join(str(p) for p in paths)} in {time.perf_counter() - report_start:.1f} s")
    if failures:
        lines = "\n".join(f"  {c.id} {c.config.dataset} {c.defense_label} {c.config.attack}/{c.config.variant} "
                          f"seed {c.config.attack_seed}: {type(e).__name__}: {e}" for c, e in failures)
        raise GridRunError(f"{len(failures)} of {len(cells)} cells failed (the others are saved; run the same "
                           f"command again to retry):\n{lines}")
    return rows
