"""Which identities leak: each attacked identity's figures in a record (``"per_identity"``, from
:func:`~mi_art.evaluations.metrics.judge_panel` and the independent judge), merged over seeds and ranked, for
the report's section on who is exposed."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .metric_facts import metric_names

__all__ = ["LEAK_FIGURES", "merge_identities", "rank_identities"]

#: The per-identity figures merged over seeds (weighted by each identity's reconstructions): the metrics declared
#: ``per_identity`` (:mod:`~mi_art.evaluations.metric_facts`), read at each use.
LEAK_FIGURES = metric_names(lambda m: m.per_identity)


def _number(value: Any) -> Optional[float]:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def merge_identities(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The ``"per_identity"`` lists of ``rows`` (e.g. one cell's seeds) as one list, in identity order: each
    figure of :data:`LEAK_FIGURES` is the mean over the identity's reconstructions of all rows (each row's value
    weighted by its ``n_reconstructions``); ``n_reconstructions`` summed; ``n_private_train`` and ``name`` as
    recorded. Rows without the list (written before it was kept) and malformed entries are skipped."""
    merged: Dict[int, Dict[str, Any]] = {}
    for row in rows:
        entries = row.get("per_identity")
        if not isinstance(entries, list):
            continue
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("identity"), int):
                continue
            weight = _number(entry.get("n_reconstructions")) or 1.0
            out = merged.setdefault(entry["identity"], {"identity": entry["identity"], "n_reconstructions": 0,
                                                        "_sums": {}})
            out["n_reconstructions"] += int(weight)
            for key in ("n_private_train", "name"):
                if entry.get(key) is not None:
                    out.setdefault(key, entry[key])
            for key in LEAK_FIGURES:
                value = _number(entry.get(key))
                if value is not None:
                    total, weights = out["_sums"].get(key, (0.0, 0.0))
                    out["_sums"][key] = (total + weight * value, weights + weight)
    result = []
    for identity in sorted(merged):
        out = merged[identity]
        sums = out.pop("_sums")
        out.update({key: total / weights for key, (total, weights) in sums.items() if weights > 0})
        result.append(out)
    return result


def rank_identities(identities: Sequence[Dict[str, Any]], n: int = 3) -> Tuple[List[Dict[str, Any]],
                                                                               List[Dict[str, Any]]]:
    """The ``n`` identities that leak most (highest Acc@1, then the closest KNN distance) and the ``n`` that leak
    least (lowest Acc@1, then the farthest), least-leaking first in the second list; no identity is in both, and
    with fewer than ``2 n`` identities the first list takes the leakier half."""
    known = [i for i in identities if _number(i.get("acc@1")) is not None]

    def leak(entry: Dict[str, Any]) -> Tuple[float, float]:
        knn = _number(entry.get("knn_dist"))
        return float(entry["acc@1"]), -(knn if knn is not None else math.inf)

    ranked = sorted(known, key=leak, reverse=True)
    n = min(n, (len(ranked) + 1) // 2)
    most = ranked[:n]
    least = ranked[max(n, len(ranked) - n):][::-1]
    return most, least
