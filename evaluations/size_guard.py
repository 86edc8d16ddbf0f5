"""Work too large to finish or to fit in memory, refused before it starts: a reconstruction count, a seed range or a
grid whose size is stated in seconds and bytes. Each limit can be lifted on purpose (``--allow-large`` on the command
line, ``allow_large=True`` in Python): a guard stops a typo (``--seeds 0-99999999``), not a plan."""
from __future__ import annotations

import math
import os
from typing import Optional

__all__ = ["MAX_CELLS", "MAX_LIST_VALUES", "MAX_SECONDS", "SizeError", "check_size", "grid_size_problem",
           "list_size_problem", "machine_memory", "reconstruction_problem"]

#: Cells a grid may have without ``allow_large``: at one minute per cell (a small CPU cell), a week of work.
MAX_CELLS = 10_000
#: Values a range (``--seeds 0-N``, ``identities = "0-N"``) may expand to without ``allow_large``.
MAX_LIST_VALUES = 1_000_000
#: The longest work a guard lets through without ``allow_large``: 30 days.
MAX_SECONDS = 30 * 24 * 3600
#: What one cell costs at the very least: a second of work (the smallest test cell takes more), and the memory of
#: its configuration, id and row in the plan (measured: about 3 kB).
CELL_SECONDS, CELL_BYTES = 1.0, 3_000
#: An attack step at the very least (a forward and a backward pass of a batch through a generator and a target).
STEP_SECONDS = 1e-3
#: Copies of the reconstructions a run holds at once (the attack's, the mapped ones, the judges' inputs).
RECONSTRUCTION_COPIES = 3
LATENT_FLOATS = 100
OVERRIDE = "pass --allow-large (allow_large=True in Python) to run it anyway"


class SizeError(ValueError):
    """Work that cannot finish or fit, refused before it starts; the message says how large and how to insist."""


def machine_memory() -> Optional[int]:
    """This machine's physical memory in bytes (None where the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _seconds(s: float) -> str:
    days = s / 86400
    return f"{s:,.0f} s" + (f" ({days:,.0f} days)" if days >= 1 else "")


def reconstruction_problem(n_reconstructions: int, n_candidates: Optional[int], n_identities: int, image_floats: int,
                           iterations: int, batch_size: int, where: str = "") -> Optional[str]:
    """Why ``n_reconstructions`` (or ``n_candidates``, when more) of each of ``n_identities`` identities, images of
    ``image_floats`` values, cannot fit in memory or finish; None when they can. ``where`` starts the message."""
    what = f"{where}n_reconstructions={n_reconstructions}" + (f" with n_candidates={n_candidates}"
                                                               if n_candidates else "")
    count = n_identities * max(n_reconstructions, n_candidates or 0)
    need = count * (RECONSTRUCTION_COPIES * image_floats + LATENT_FLOATS) * 4
    seconds = iterations * math.ceil(count / batch_size) * STEP_SECONDS
    memory = machine_memory()
    too_big = memory is not None and need > memory
    if not too_big and seconds <= MAX_SECONDS:
        return None
    return (f"{what} for {n_identities} identit{'y' if n_identities == 1 else 'ies'} is {count:,} reconstructions: "
            f"at least {_bytes(need)} of memory" + (f" (this machine has {_bytes(memory)})" if memory else "")
            + f" and {_seconds(seconds)} of attack steps at {STEP_SECONDS * 1000:g} ms each "
            f"(the guard's limits: the memory, {_seconds(MAX_SECONDS)}); give fewer, or {OVERRIDE}")


def grid_size_problem(n_cells: int, shape: str) -> Optional[str]:
    """Why a grid of ``n_cells`` (made of ``shape``, e.g. "1 dataset x 3 defense settings x ...") is refused."""
    if n_cells <= MAX_CELLS:
        return None
    return (f"the grid has {n_cells:,} cells ({shape}): at {CELL_SECONDS:g} s per cell at the very least "
            f"{_seconds(n_cells * CELL_SECONDS)} of work, and its plan alone about {_bytes(n_cells * CELL_BYTES)} of "
            f"memory (the guard's limit: {MAX_CELLS:,} cells); give fewer seeds, defenses, attacks or variants, or "
            f"{OVERRIDE}")


def list_size_problem(name: str, text: str, n_values: int) -> Optional[str]:
    """Why ``name`` given as ``text`` (a range like "0-99999999") is refused: it expands to ``n_values``."""
    if n_values <= MAX_LIST_VALUES:
        return None
    return (f"{name} {text!r} is {n_values:,} values: about {_bytes(n_values * 36)} of memory before any work, and "
            f"at least {_seconds(n_values * CELL_SECONDS)} of work at {CELL_SECONDS:g} s each (the guard's limit: "
            f"{MAX_LIST_VALUES:,} values); give a shorter range, or {OVERRIDE}")


def check_size(problem: Optional[str], allow_large: bool) -> None:
    """Raise :class:`SizeError` with ``problem`` unless there is none or ``allow_large``."""
    if problem is not None and not allow_large:
        raise SizeError(problem)
