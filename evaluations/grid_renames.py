"""A grid's earlier names under their names now, each reported as renamed: its settings', its dataset tables' keys,
its architectures' and its defenses'. Applied where a grid is read (:mod:`mi_art.evaluations.grid_files`) or built
(:class:`~mi_art.evaluations.grid.Grid`), before :func:`~mi_art.evaluations.grid_schema.check_grid`."""
from __future__ import annotations

from typing import Any, Dict, Mapping

from mi_art.renames import Renames

from .experiment_config import SETTINGS
from .grid_error import GridError

__all__ = ["renamed_dataset_keys", "renamed_grid"]

#: The settings a grid may set globally, per dataset or per form (the config declares them ``budget``).
_BUDGET_KEYS = SETTINGS.budgets
_RENAMED_DATASET_KEYS = Renames("grid key", {"root": "data_root", "options": "data_options"})


def renamed_dataset_keys(item: Any, where: str = "dataset") -> Any:
    """``item`` (a dataset table of a grid file) with the keys of earlier grid files, ``root`` and
    ``options``, under their names now, ``data_root`` and ``data_options`` (reported as renamed); both
    names with two values is an error. Anything but a table is returned as it is."""
    if not isinstance(item, Mapping):
        return item
    return _RENAMED_DATASET_KEYS.keys(item, where, error=GridError)


def renamed_grid(d: Any, where: str = "the grid") -> Any:
    """A grid dictionary with every earlier name under its name now, each reported as renamed
    (:class:`~mi_art.renames.RenamedWarning`): a setting's (``prior_steps``, at the top, in a dataset's table or in a
    form), a dataset table's keys (``root``, ``options``), a setting's values (an architecture's) and a defense's
    name (``nls``). Two names of one setting with two values are refused (:class:`GridError`). ``d`` itself when it
    holds no earlier name (a :class:`CheckedGrid` stays one); anything but a mapping as it is (:func:`check_grid`
    names it)."""
    from mi_art.defenses.registry import RENAMED_DEFENSES

    if not isinstance(d, Mapping):
        return d

    def settings(table: Mapping[str, Any], at: str) -> Dict[str, Any]:
        table = SETTINGS.renamed.keys(table, at, error=GridError)
        return {**table, **SETTINGS.resolved({k: v for k, v in table.items() if k in _BUDGET_KEYS}, at)}

    out = settings(d, where)
    if isinstance(out.get("datasets"), list):
        out["datasets"] = [settings(renamed_dataset_keys(x, f"{where}, dataset {x.get('name')!r}"),
                                    f"{where}, dataset {x.get('name')!r}") if isinstance(x, Mapping) else x
                           for x in out["datasets"]]
    if isinstance(out.get("forms"), list):
        out["forms"] = [settings(x, f"{where}, form {x.get('name')!r}") if isinstance(x, Mapping) else x
                        for x in out["forms"]]
    if isinstance(out.get("defenses"), list):
        out["defenses"] = [{**x, "name": RENAMED_DEFENSES.new(x["name"], where)}
                           if isinstance(x, Mapping) and "name" in x else RENAMED_DEFENSES.new(x, where)
                           for x in out["defenses"]]
    return d if out == dict(d) else out
