"""Claims on the cells of a results folder: two runs on one folder (``mi-art evaluate`` twice with the same
``--out``, or machines sharing it) attack each cell once and share the work.

A cell is claimed before it is run: ``<out>/cells/<cell-id>.claim`` is created with ``O_CREAT | O_EXCL``
(atomic, NFS included), holding the host, pid and start time of the process that runs it. While the cell
runs its claim is refreshed (its modification time) every :data:`HEARTBEAT_SECONDS`; when the cell ends,
finished or failed, the claim is removed. A claim is stale, and taken over, when its process is gone (same
host, pid not running) or when it was not refreshed for :data:`CLAIM_TIMEOUT_SECONDS` (a process on another
host that died, a machine that went down). Taking over happens under a file lock, so two processes that find
the same stale claim do not both take it.
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple, Union

__all__ = ["CLAIM_TIMEOUT_SECONDS", "HEARTBEAT_SECONDS", "CellClaimed", "claim_cell", "claim_path", "claim_state",
           "find_claimed"]

PathLike = Union[str, Path]

#: A claim not refreshed for this long is stale (its process stopped without removing it). Generous: far
#: above :data:`HEARTBEAT_SECONDS` and any clock skew between machines sharing a folder.
CLAIM_TIMEOUT_SECONDS = 30 * 60.0

#: How often a running cell refreshes its claim.
HEARTBEAT_SECONDS = 60.0


class CellClaimed(RuntimeError):
    """Another live process runs this cell (it holds the cell's claim)."""

    def __init__(self, cell_id: str, holder: Dict[str, Any]) -> None:
        who = (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('started', '?')}"
               if holder else "a process that is writing its claim")
        super().__init__(f"cell {cell_id} is being run by {who}")
        self.cell_id, self.holder = cell_id, dict(holder)

    def __reduce__(self) -> Tuple[Any, ...]:  # through process pools and Ray with its fields
        return type(self), (self.cell_id, self.holder)


def find_claimed(err: Optional[BaseException]) -> Optional[CellClaimed]:
    """The :class:`CellClaimed` behind ``err`` (itself, or the ``cause`` of a Ray task error), else None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if type(err) is CellClaimed:  # not isinstance: Ray's task errors subclass their cause without its fields
            return err
        err = getattr(err, "cause", None) or err.__cause__
    return None


def claim_path(out_dir: PathLike, cell_id: str) -> Path:
    """``<out>/cells/<cell-id>.claim``."""
    return Path(out_dir) / "cells" / f"{cell_id}.claim"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, as another user's
        return True
    return True


def _read(path: Path) -> Optional[Tuple[Dict[str, Any], os.stat_result]]:
    """The claim at ``path`` (``{}`` while its creator is still writing it) and its stat; None when absent."""
    try:
        st = path.stat()
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        holder = {}
    return (holder if isinstance(holder, dict) else {}), st


def _stale(holder: Dict[str, Any], st: os.stat_result, timeout: float) -> bool:
    if time.time() - st.st_mtime > timeout:
        return True
    pid = holder.get("pid")
    return holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _alive(pid)


def claim_state(out_dir: PathLike, cell_id: str, *,
                timeout: Optional[float] = None) -> Optional[Dict[str, Any]]:
    """Who holds the cell's claim (host, pid, started), or None when nobody does (no claim, or a stale one)."""
    found = _read(claim_path(out_dir, cell_id))
    if found is None or _stale(*found, CLAIM_TIMEOUT_SECONDS if timeout is None else timeout):
        return None
    return found[0]


@contextmanager
def _claims_lock(folder: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: two takers of one stale claim may both run the cell
        yield
        return
    with open(folder / ".claims.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _create(path: Path, holder: Dict[str, Any]) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(holder))
    return True


def _acquire(path: Path, cell_id: str, timeout: float) -> Dict[str, Any]:
    """Create the claim at ``path`` or take over a stale one; :class:`CellClaimed` when a live one is there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = {"host": socket.gethostname(), "pid": os.getpid(),
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "token": secrets.token_hex(8)}
    while True:
        if _create(path, holder):
            return holder
        found = _read(path)
        if found is None:  # released in between: try again
            continue
        if not _stale(*found, timeout):
            raise CellClaimed(cell_id, found[0])
        with _claims_lock(path.parent):
            again = _read(path)
            # still the stale claim we judged (not one another process took over meanwhile): remove it
            if again is not None and (again[0], again[1].st_ino, again[1].st_mtime_ns) == \
                    (found[0], found[1].st_ino, found[1].st_mtime_ns):
                os.remove(path)
            if _create(path, holder):
                return holder


def _release(path: Path, token: str) -> None:
    found = _read(path)
    if found is not None and found[0].get("token") == token:  # not a claim another process took over
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


@contextmanager
def claim_cell(out_dir: PathLike, cell_id: str, *, timeout: Optional[float] = None,
               heartbeat: Optional[float] = None) -> Iterator[Dict[str, Any]]:
    """Hold the claim of cell ``cell_id`` of ``out_dir`` while the body runs; yields the claim's content.

    :param timeout: Seconds without a refresh after which a claim is stale (default :data:`CLAIM_TIMEOUT_SECONDS`).
    :param heartbeat: Seconds between refreshes (default :data:`HEARTBEAT_SECONDS`, at most a quarter of
        ``timeout``).
    :raises CellClaimed: Another live process holds the claim."""
    timeout = CLAIM_TIMEOUT_SECONDS if timeout is None else float(timeout)
    heartbeat = min(HEARTBEAT_SECONDS, timeout / 4) if heartbeat is None else float(heartbeat)
    if not 0 < heartbeat < timeout:
        raise ValueError(f"heartbeat={heartbeat} must be positive and below timeout={timeout} (seconds), or a "
                         "running cell's claim goes stale")
    path = claim_path(out_dir, cell_id)
    holder = _acquire(path, cell_id, timeout)
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(heartbeat):
            try:
                os.utime(path)
            except OSError:  # removed or unreachable: nothing to refresh
                return

    thread = threading.Thread(target=refresh, name=f"claim-{cell_id}", daemon=True)
    thread.start()
    try:
        yield holder
    finally:
        stop.set()
        thread.join()
        _release(path, holder["token"])
