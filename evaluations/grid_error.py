"""The error of an invalid grid, in a module of its own so that the modules that check a grid
(:mod:`~mi_art.evaluations.grid_schema`) and rename its earlier keys (:mod:`~mi_art.evaluations.grid_renames`) both
raise it without importing each other."""
from __future__ import annotations

from typing import List, Optional, Sequence

__all__ = ["GridError"]


class GridError(ValueError):
    """An invalid grid: the message names the problem(s); ``problems`` lists them one by one."""

    def __init__(self, message: str, problems: Optional[Sequence[str]] = None) -> None:
        super().__init__(message)
        self.problems: List[str] = list(problems) if problems is not None else [message]
