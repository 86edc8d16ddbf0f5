"""A benchmark's results file: one JSON object whose keys are finished cells (``"GMI+LOMMA/seed0"``) and whose
values are their records. Every resumable script that is not a grid (the grids, ``attack_variants.py`` and
``defenses.py``, resume in their folders: ``_grid_run.py``) loads it, skips the keys it holds and stores each cell
as it finishes (atomically: a script stopped mid-write keeps the file it had). The format is the one the scripts
have always written, so earlier files resume; a record's renamed keys are read under their names now
(:func:`~mi_art.evaluations.rows.record_names_now`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

from mi_art.evaluations.rows import record_names_now
from mi_art.utils import write_atomic


def load_results(path: Path | str) -> Dict[str, Any]:
    """The records of the results file ``path`` (key -> record), each under the names records have now (a file
    written before a rename holds the earlier ones: ``evaluator_test_accuracy`` for ``judge_test_accuracy``)."""
    records = json.loads(Path(path).read_text())
    return {key: record_names_now(record) if isinstance(record, dict) else record for key, record in records.items()}


class Results:
    """The results file ``path``: its records (empty, or ``empty``, when there is no file yet), which keys are
    done, and :meth:`store` to add one finished cell.

    :param indent: JSON indentation of the file (the scripts' own: 1, precision.py's 2).
    :param empty: The records of a file not written yet (default ``{}``; precision.py's ``{"models": {}}``)."""

    def __init__(self, path: Path | str, *, indent: int = 1, empty: Optional[Dict[str, Any]] = None) -> None:
        self.path = Path(path)
        self.indent = indent
        self.records: Dict[str, Any] = load_results(self.path) if self.path.is_file() else dict(empty or {})

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def store(self, key: str, record: Any) -> None:
        """Add ``key``'s finished record and write the file at once."""
        self.records[key] = record
        self.save()

    def save(self) -> None:
        """Write the records (atomically; values JSON cannot hold are written as their text)."""
        write_atomic(self.path, json.dumps(self.records, indent=self.indent, default=str))
