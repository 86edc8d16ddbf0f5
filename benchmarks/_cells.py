"""The attack benchmarks' cells as data, and the one loop that runs them.

A cell is one attack run: its key in the results file, the attack, its variant, its seed and the configuration
fields it changes from its group's (``{"access": "label-only"}``, ``{"search_views": 4}``,
``{"regularise_surrogates": False}``). A group is the cells that share a workbench (its target, judges and
cached artifacts): ``attack_variants.py`` has one, ``defenses.py`` one per defended target.
:func:`run_attack_cells` runs a group's cells that its :class:`~_results.Results` does not hold yet."""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from mi_art.attacks import ATTACKS
from mi_art.evaluations.experiment import Workbench, public_record, run_attack
from mi_art.variants import parse_variant

from _results import Results


@dataclasses.dataclass(frozen=True)
class AttackCell:
    """One attack run of a benchmark: ``key`` in the results file, the :func:`run_attack` arguments, and the
    configuration fields that differ from the group's workbench (none: the group's own workbench runs it)."""

    key: str
    attack: str
    variant: str
    seed: int
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def white_box(self, base_access: str) -> bool:
        """Whether the cell sees the target's gradients (its prior and surrogates are then made before it runs
        and timed apart, as the group's artifacts); below white-box the surrogates are learnt from queries."""
        return self.config.get("access", base_access) == "white-box"


def _prepare(bench: Any, target: Any, cell: AttackCell) -> None:
    """Train (or load) what the white-box cell's attack needs from the cache: its prior, its surrogates."""
    if cell.attack in ATTACKS:
        bench.prior(ATTACKS[cell.attack].prior, target)
    if "ma" in parse_variant(cell.variant):
        bench.surrogates(target)


def run_attack_cells(results: Results, cells: Sequence[AttackCell], bench: Any, target: Any, judges: Any, *,
                     describe: Callable[[str, Dict[str, Any]], str],
                     annotate: Optional[Callable[[AttackCell, Dict[str, Any]], Dict[str, Any]]] = None) -> None:
    """Run every cell of ``cells`` not in ``results`` on the group's workbench ``bench`` (its ``target``; a cell
    with configuration changes on a workbench of its own sharing ``bench``'s data and cache), judged by
    ``judges``; store each record as it finishes and print ``describe(key, record)``.

    The record is :func:`public_record` of the run with ``artifact_seconds`` (the seconds its prior and
    surrogates took to make or load) and whatever ``annotate(cell, result)`` returns."""
    for cell in cells:
        if cell.key in results:
            continue
        start = time.perf_counter()
        if cell.white_box(bench.config.access):
            _prepare(bench, target, cell)
        prep = time.perf_counter() - start
        runner, attacked = bench, target
        if cell.config:  # the same data, cache and artifacts (its own target is the same cached one)
            runner = Workbench(dataclasses.replace(bench.config, **cell.config), bench.cache, data=bench.data)
            attacked = runner.target()
        result = run_attack(runner, attack=cell.attack, variant=cell.variant, attack_seed=cell.seed,
                            target=attacked, judges=judges)
        record = public_record(result)
        record["artifact_seconds"] = prep
        if annotate is not None:
            record.update(annotate(cell, result))
        results.store(cell.key, record)
        print(describe(cell.key, record), flush=True)
