"""Running one cell of a grid (:mod:`mi_art.evaluations.executors` runs them all): under its claim, its attack
through a workbench whose artifact cache is locked across processes, then its images and its row written
atomically, the row last (its file marks the cell done)."""
from __future__ import annotations

import io
import json
import os
import socket
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Union

import numpy as np

from mi_art.threads import set_threads
from mi_art.utils import atomic_file, write_atomic

from .cache import ArtifactCache
from .claims import claim_cell
from .grid_data import load_data
from .grid_specs import Cell
from .metric_facts import metric_facts, row_figures
from .rows import TOP_K, cell_paths, finite_or_none, normalise_row, read_cell
from .stages import StageLog

PathLike = Union[str, Path]


class LockingArtifactCache(ArtifactCache):
    """An :class:`ArtifactCache` whose artifacts are computed under an exclusive file lock
    (``<artifact>.lock``), so that concurrent processes sharing the directory train each once. A record
    is read, set aside or written under its own lock, also when a module checks the records beside it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held: Dict[str, int] = {}  # the locks this process holds: taken again, they are not re-locked

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
        name = f"{kind}-{path.stem.rsplit('-', 1)[-1]}.lock"
        if self._held.get(name):  # flock on a second descriptor of the same file would wait for ourselves
            self._held[name] += 1
            try:
                yield
            finally:
                self._held[name] -= 1
            return
        locks = path.parent / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / name, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._held[name] = 1
            try:
                yield
            finally:
                self._held[name] = 0
                fcntl.flock(handle, fcntl.LOCK_UN)

    def module(self, kind, config, build, train, records=()):  # type: ignore[override]
        with self._locked(kind, config):
            return super().module(kind, config, build, train, records)

    def json(self, kind, config, compute, fields=()):  # type: ignore[override]
        with self._locked(kind + ".json", config):
            return super().json(kind, config, compute, fields)

    def _read_json(self, kind, config, fields=()):  # type: ignore[override]
        with self._locked(kind + ".json", config):
            return super()._read_json(kind, config, fields)

    def store_json(self, kind, config, value):  # type: ignore[override]
        with self._locked(kind + ".json", config):
            super().store_json(kind, config, value)

    def tensor(self, kind, config, compute):  # type: ignore[override]
        with self._locked(kind, config):
            return super().tensor(kind, config, compute)



def _write_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    with atomic_file(path, size=buffer.getbuffer().nbytes) as f:
        f.write(buffer.getbuffer())


def run_cell(cell: Union[Cell, Dict[str, Any]], out_dir: PathLike, cache_dir: Optional[PathLike], *,
             verbose: bool = False, threads: Union[int, str, None] = None, device: Optional[str] = None,
             echo: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Run one cell end to end (shared artifacts from the cache), write its files, return its row.
    ``echo``, when given, receives a line for each stage: every artifact trained (target, judges, prior,
    surrogates, p_reg, ...) with its seconds, and the attack.

    The cell is claimed first (:mod:`mi_art.evaluations.claims`), so that processes sharing ``out_dir`` run
    it once: a cell another process finished meanwhile is not run again (its saved row is returned).

    :raises CellClaimed: Another live process is running the cell."""
    cell = Cell.from_dict(cell) if isinstance(cell, dict) else cell
    with claim_cell(out_dir, cell.id):
        row = read_cell(cell_paths(out_dir, cell.id)[0])
        if row is not None and row["cell_id"] == cell.id:
            return row
        return _attack_cell(cell, out_dir, cache_dir, verbose=verbose, threads=threads, device=device, echo=echo)


def _attack_cell(cell: Cell, out_dir: PathLike, cache_dir: Optional[PathLike], *, verbose: bool,
                 threads: Union[int, str, None], device: Optional[str],
                 echo: Optional[Callable[[str], None]]) -> Dict[str, Any]:
    """:func:`run_cell`'s work, under the cell's claim."""
    import dataclasses

    from .experiment import Workbench, run_attack

    if threads is not None:
        set_threads(threads)
    config = dataclasses.replace(cell.config, verbose=verbose, device=device or cell.config.device)
    start = time.perf_counter()
    stages = StageLog(echo, prefix=f"  {cell.tag}: ")
    data = load_data(config.dataset, config.data_root, config.data_options)
    # the grid checked every value of the cell's config (check_grid): the workbench checks it against the data
    bench = Workbench(config, LockingArtifactCache(cache_dir, stages=stages), data=data, checked=True)
    target, judges = bench.target(), bench.judges()
    result = run_attack(bench, target=target, judges=judges)
    row = _row_columns(cell, config, bench, result, time.perf_counter() - start)
    row.update(_run_details(cell, config, bench, result))
    _write_cell_files(cell, out_dir, bench, result, row)
    return row


def _row_columns(cell: Cell, config: Any, bench: Any, result: Dict[str, Any], seconds: float) -> Dict[str, Any]:
    """The cell's columns of the results table (:data:`~mi_art.evaluations.rows.ROW_KEYS`), normalised: what ran,
    every declared metric, the sizes, and Acc@k against the judge's chance."""
    record = bench.defense_record or {}
    row: Dict[str, Any] = {
        "cell_id": cell.id, "dataset": cell.dataset_label, "dataset_kind": config.dataset, "defense": config.defense,
        "defense_params": dict(config.defense_params), "defense_label": cell.defense_label,
        "epsilon": finite_or_none(record.get("epsilon")), "delta": finite_or_none(record.get("delta")),
        # below white-box the access level is part of the attack's name, so tables and plots keep it apart
        "attack": result["attack"] if config.access == "white-box" else f"{result['attack']}[{config.access}]",
        "variant": result["variant"], "seed": config.attack_seed, "access": config.access,
        "artifact_seed": config.seed, "form": cell.form,
        **row_figures(result),  # every declared metric, under the row's names (metric_facts)
        "n_judges": int(result["n_judges"]),
        "cell_seconds": seconds,
        "n_identities": result["n_identities"], "n_reconstructions": result["n_reconstructions"],
        "n_candidates": result.get("n_candidates"), "search_views": result.get("search_views"),
        "iterations": result["iterations"],
        # the judge's number of classes: Acc@k against chance, and n/a where k >= n_classes
        "n_classes": int(result.get("num_classes", bench.data.num_classes)),
    }
    row.update({f"chance@{k}": result[f"chance@{k}"] for k in TOP_K if result.get(f"chance@{k}") is not None})
    return normalise_row(row)


def _run_details(cell: Cell, config: Any, bench: Any, result: Dict[str, Any]) -> Dict[str, Any]:
    """What the row holds beside its columns: the defense's record, the config, where and when it ran, its threads,
    and what the single run's record holds beside its metrics."""
    record = bench.defense_record or {}
    details: Dict[str, Any] = {"defense_record": record} if record else {}
    details["config"] = {k: v for k, v in config.to_dict().items() if k not in ("verbose",)}
    details["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    details["host"], details["pid"] = socket.gethostname(), os.getpid()
    details.update({k: result[k] for k in ("threads", "thread_setting", "usable_cpus", "independent_judge",
                                           "independent", "independent_shares", "panel_shares") if k in result})
    # every warning the run gave, each surrogate's agreement with the target, the prior's quality; and N, against
    # which the report reads DP's delta
    details["warnings"] = list(result["warnings"])
    details.update({k: result.get(k) for k in ("surrogates", "prior")})
    details["n_train"] = len(bench.data.private_train)
    details["per_identity"] = result.get("per_identity")  # who is exposed: each attacked identity's figures
    details.update(_judge_and_pace_details(result))
    details["index"] = cell.index
    return details


def _judge_and_pace_details(result: Dict[str, Any]) -> Dict[str, Any]:
    """Each trained judge's own figures (``acc@1_judges``, ...; ``judge_test_accuracies``), the independent
    judge's standard error, the seconds per reconstruction and each model's feature norms, as the run gave them: a
    table that gives the spread over judges of the seeds' means (the benchmarks') reads them from the row."""
    lists = (*(f"{m.result_key}_judges" for m in metric_facts(lambda m: m.judged_by_panel)),
             "judge_test_accuracies")
    out: Dict[str, Any] = {k: [finite_or_none(v) for v in result[k]] for k in lists if result.get(k) is not None}
    for key in ("independent_acc@1_se", "seconds_per_reconstruction"):
        if result.get(key) is not None:
            out[key] = finite_or_none(result[key])
    if result.get("feature_norms") is not None:
        out["feature_norms"] = result["feature_norms"]
    return out


def _write_cell_files(cell: Cell, out_dir: PathLike, bench: Any, result: Dict[str, Any], row: Dict[str, Any]) -> None:
    """The cell's images (its reconstructions, two real private images of each attacked identity, the prior's
    samples), then its row: its JSON file marks the cell done."""
    recs, labels = np.asarray(result["reconstructions"], np.float32), np.asarray(result["labels"], np.int64)
    priv = bench.data.private_all()
    keep = np.concatenate([np.flatnonzero(priv.y == k)[:2] for k in np.unique(labels)]).astype(np.int64)
    json_path, npz_path = cell_paths(out_dir, cell.id)
    samples = {} if result.get("prior_samples") is None else {"prior_samples": np.asarray(result["prior_samples"],
                                                                                        np.float32)}
    _write_npz_atomic(npz_path, reconstructions=recs, labels=labels, real_x=priv.x[keep], real_y=priv.y[keep],
                      identity_names=np.asarray(bench.data.private_identities, dtype=str), **samples)
    write_atomic(json_path, json.dumps(row, indent=1, sort_keys=False, default=str))

