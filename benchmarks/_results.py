"""A benchmark's results file: one JSON object whose keys are finished cells (``"GMI+LOMMA/seed0"``) and whose
values are their records. Every resumable script loads it, skips the keys it holds, stores each cell as it
finishes (atomically: a script stopped mid-write keeps the file it had) and merges other processes' files
(``--also``) into its table. The format is the one the scripts have always written, so earlier files resume; a
record's renamed keys are read under their names now (:func:`~mi_art.evaluations.rows.record_names_now`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

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

    def merged(self, also: Iterable[Path | str] = ()) -> Dict[str, Any]:
        """These records with those of the files ``also`` (other processes' ``--out``; a later file's key wins);
        a file not written yet is named on the console and left out."""
        merged = dict(self.records)
        for extra in also:
            if not Path(extra).is_file():
                print(f"(no result file {extra}: its rows are missing)")
                continue
            merged.update(load_results(extra))
        return merged


def add_also_argument(parser: Any) -> None:
    """``--also``: other result files merged into the table."""
    parser.add_argument("--also", nargs="*", default=(), help="more result files to merge into the table (another "
                                                              "process's --out, e.g. for a second CPU core)")
