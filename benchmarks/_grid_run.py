"""The benchmarks that are grids: their grid from their configuration, its run by the library's grid runner, and
its finished cells read back for their tables.

A script builds its :class:`~mi_art.evaluations.grid.Grid` from its command line (:func:`config_grid`: its forms
over its configuration) and calls :func:`run_benchmark_grid`: the unfinished cells run in the results folder
``--out`` (``<out>/cells/<cell-id>.json``, the row, and ``.npz``, the reconstructions; finished cells are skipped;
processes running the same grid in one folder share its cells, each run once under its claim, and each waits for
the others' before its table), then the script's table gets the finished rows, also those of the folders
``--also``, and also when some cells failed. (Processes with different grids may share a folder too, but its
``grid.json``, which ``mi-art report`` orders the rows by, is the last one's.)"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence

from mi_art.evaluations.executors import GridRunError, evaluate_grid
from mi_art.evaluations.experiment import ExperimentConfig
from mi_art.evaluations.experiment_config import config_defaults
from mi_art.evaluations.grid import DatasetSpec, DefenseSpec, FormSpec, Grid, load_data
from mi_art.evaluations.grid_schema import BUDGET_KEYS, GridError
from mi_art.evaluations.rows import completed_cells


def add_grid_out_arguments(parser: Any, default_out: str) -> None:
    """``--out`` (the grid's results folder) and ``--also`` (other folders whose cells join the table)."""
    parser.add_argument("--out", default=None,
                        help=f"results folder: the grid's finished cells, <out>/cells/<cell-id>.json and .npz "
                             f"(default {default_out}); processes may share one")
    parser.add_argument("--also", nargs="*", default=(),
                        help="more results folders whose finished cells join the table (another process's --out, "
                             "e.g. for a second CPU core; this --out too, for the rows other processes ran there)")


def out_folder(path: Path | str) -> Path:
    """``--out``: the grid's results folder; a results file of the scripts' earlier versions is refused, named."""
    path = Path(path)
    if path.is_file():
        raise SystemExit(f"--out {path} is a file (the results file of an earlier version of this script): give a "
                         "folder; the finished cells go under <out>/cells")
    return path


def benchmark_data(config: ExperimentConfig) -> Any:
    """The benchmark's data, loaded once (the grid's cells share it), or an exit naming ``--data-root``."""
    try:
        return load_data(config.dataset, config.data_root, config.data_options)
    except (ValueError, OSError) as err:
        raise SystemExit(f"--data-root {config.data_root}: {err}") from None


def config_grid(config: ExperimentConfig, forms: Sequence[FormSpec], seeds: Sequence[int], name: str,
                defenses: Sequence[DefenseSpec] = ()) -> Grid:
    """The grid of ``forms`` over ``config`` (its data, its settings; its defense unless ``defenses`` are given), at
    the attack seeds ``seeds``: the artifacts (target, judges, priors, surrogates) use the configuration's seed."""
    defaults = config_defaults()
    budgets = {k: getattr(config, k) for k in BUDGET_KEYS if getattr(config, k) != defaults[k]}
    attacks = [a for f in forms for a in f.attacks or [config.attack]]
    variants = [v for f in forms for v in f.variants or [config.variant]]
    return Grid(datasets=[DatasetSpec(config.dataset, config.data_root, dict(config.data_options))],
                defenses=list(defenses) or [DefenseSpec(config.defense, [dict(config.defense_params)])],
                attacks=list(dict.fromkeys(attacks)), variants=list(dict.fromkeys(variants)), seeds=list(seeds),
                budgets=budgets, seed_scope="attack", artifact_seed=config.seed, name=name, device=config.device,
                forms=list(forms))


def run_benchmark_grid(grids: Sequence[Grid], out: Path, table: Callable[[List[Dict[str, Any]]], None], *,
                       cache_dir: str, threads: Any, also: Sequence[str] = ()) -> None:
    """Run the unfinished cells of each of ``grids`` in ``out`` (in this process; ``threads`` None: torch's setting
    as it is), then give ``table`` the finished rows of them all (:func:`finished_rows`), also after some cells
    failed (then exit naming them). An invalid grid exits before anything is trained."""
    failed = []
    for grid in grids:
        try:
            evaluate_grid(grid, out, cache_dir=cache_dir, threads="torch" if threads is None else threads,
                          progress=False, report=False)
        except GridError as err:
            raise SystemExit(f"invalid benchmark grid: {err}") from None
        except GridRunError as err:  # the finished cells are tabled first
            failed.append(str(err))
    rows = [r for grid in grids for r in finished_rows(grid, out)] + also_rows(also)
    if rows:
        table(rows)
    else:
        print("no finished cells yet")
    if failed:
        raise SystemExit("\n".join(failed))


def finished_rows(grid: Grid, out: Path) -> List[Dict[str, Any]]:
    """The rows of ``grid``'s finished cells in ``out``, each under its form in this grid."""
    cells = grid.cells()
    finished: Mapping[str, Dict[str, Any]] = completed_cells(out, [c.id for c in cells])
    return [{**finished[c.id], "form": c.form} for c in cells if c.id in finished]


def also_rows(also: Sequence[str]) -> List[Dict[str, Any]]:
    """Every finished cell of the folders ``also`` (a folder without cells is named on the console)."""
    rows: List[Dict[str, Any]] = []
    for folder in also:
        more = completed_cells(folder)
        if not more:
            print(f"(no finished cells in {folder}: its rows are missing)")
        rows += more.values()
    return rows
