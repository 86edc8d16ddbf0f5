"""The grid file's schema: its keys, and the load-time checks of every key's type and range, which report
all problems of a grid at once in one :class:`GridError` (:func:`check_grid`). The grid itself, its cells
and its preflight are in :mod:`mi_art.evaluations.grid`; reading and writing grid files in
:mod:`mi_art.evaluations.grid_files`."""
from __future__ import annotations

import copy
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from mi_art.attacks.params import ART_NAMES

from .config_rules import PRETRAIN_EPOCHS
from .experiment_config import SETTINGS
from .grid_error import GridError
from .grid_renames import renamed_dataset_keys, renamed_grid

__all__ = ["BUDGET_KEYS", "CheckedGrid", "GridError", "SEED_SCOPES", "ZERO_OK_KEYS", "check_device_form", "check_grid",
           "data_option_keys", "data_option_problems"]

#: ExperimentConfig fields a grid may set globally or per dataset (those declared ``budget``).
BUDGET_KEYS: Tuple[str, ...] = SETTINGS.budgets
#: Integer budgets for which 0 is valid and means "off" (the others are counts, >= 1).
ZERO_OK_KEYS: Tuple[str, ...] = SETTINGS.with_rule(PRETRAIN_EPOCHS)
_GRID_KEYS = ("name", "datasets", "defenses", "forms", "attacks", "variants", "seeds", "seed_scope", "artifact_seed",
              "device", *BUDGET_KEYS)
_DATASET_KEYS = ("name", "data_root", "data_options", *BUDGET_KEYS)
#: Dataset keys of earlier grid files and their names now (the names of the config and the CLI).
_DEFENSE_KEYS = ("name", "params")
#: Keys of an attack form: its name (a label), the attacks, variants and seeds it runs (default: the grid's) and the
#: settings it changes.
_FORM_KEYS = ("name", "attacks", "variants", "seeds", *BUDGET_KEYS)
SEED_SCOPES = ("all", "attack")
#: Keys of a cell's configuration left out of its id (declared ``in_id="never"``).
_NOT_IN_ID = SETTINGS.not_in_id
#: Keys left out of a cell's id while they hold their default (declared ``in_id="when-set"``), so that adding
#: them did not change the ids of the cells of existing grids (which would rerun every finished cell).
_IN_ID_WHEN_SET: Dict[str, Any] = SETTINGS.in_id_when_set


class CheckedGrid(dict):
    """A grid dictionary :func:`check_grid` has passed (what :func:`~mi_art.evaluations.grid_files.load_grid_file`
    returns), with a copy of what it held then: while it holds the same, checking it again is skipped, so that each
    value of a grid file is checked once on its way to the cells (``Grid.from_dict(load_grid_file(path))``)."""

    def __init__(self, checked: Mapping[str, Any]) -> None:
        super().__init__(checked)
        self._as_checked = copy.deepcopy(dict(checked))

    def unchanged(self) -> bool:
        """Whether it holds what was checked."""
        return dict(self) == self._as_checked


def _as_list(value: Any, what: str) -> List[Any]:
    if value is None:
        return []
    if isinstance(value, (str, dict)):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise GridError(f"{what} must be a list, got {value!r}")


def _check_keys(d: Mapping[str, Any], valid: Sequence[str], where: str) -> None:
    unknown = sorted(str(k) for k in d if k not in valid)
    if unknown:
        renamed = [f"{k!r} is ART's name: give {ART_NAMES[k]!r}" for k in unknown if ART_NAMES.get(k) in valid]
        raise GridError(f"unknown key(s) {', '.join(map(repr, unknown))} in {where}"
                        + (f" ({'; '.join(renamed)})" if renamed else "") + f"; valid keys: {', '.join(valid)}")


def _identities(value: Any) -> Any:
    """``"0-299"`` -> ``[0, ..., 299]``; lists and None unchanged."""
    if isinstance(value, str):
        lo, sep, hi = value.partition("-")
        try:
            return list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
        except ValueError:
            raise GridError(f"identities must be a list of integers or a range like \"0-299\", got {value!r}") from None
    return value


def _compact_identities(value: Any) -> Any:
    ids = list(value) if isinstance(value, (list, tuple)) else value
    if isinstance(ids, list) and len(ids) > 2 and all(isinstance(i, int) for i in ids) \
            and ids == list(range(ids[0], ids[0] + len(ids))):
        return f"{ids[0]}-{ids[-1]}"
    return ids


# --------------------------------------------------------------------------------------------------
# Load-time checks: every key's type and range, all problems reported at once
# --------------------------------------------------------------------------------------------------


class _Problems:
    """Collects the problems of a grid so that one error lists them all (as Opacus's
    ``ModuleValidator.validate`` does for a model)."""

    def __init__(self) -> None:
        self.items: List[str] = []

    def add(self, message: str) -> None:
        self.items.append(message)

    def run(self, check: Any, *args: Any, **kwargs: Any) -> Any:
        """Call a :mod:`mi_art.validation` helper; record its ``ValueError`` instead of raising it."""
        try:
            return check(*args, **kwargs)
        except ValueError as err:
            self.add(str(err))
            return None


def _list_problem(name: str, value: Any, items: str) -> Optional[str]:
    """A message if ``value`` is not a list (a string is not a list of one)."""
    if not isinstance(value, (list, tuple)):
        if isinstance(value, str):
            shown = f"the string {value!r}; write [{value!r}]"
        elif isinstance(value, Mapping):
            shown = f"a single table {value!r:.60}; wrap it in a list (in TOML: [[{name}]])"
        else:
            shown = f"{type(value).__name__} {value!r:.60}"
        return f"{name} must be a list of {items}, got {shown}"
    return None


def _check_names(p: _Problems, name: str, value: Any, choices: Sequence[str], kind: str, *,
                 allow_empty: bool = False) -> None:
    """A list (not a string) of distinct ``kind`` names among ``choices``."""
    from mi_art.validation import repeated as repeated_values

    problem = _list_problem(name, value, f"{kind} names")
    if problem is not None:
        p.add(problem)
        return
    if not value and not allow_empty:
        p.add(f"{name} is empty: the grid has no {kind}s; give at least one of {', '.join(choices)}")
    for i, v in enumerate(value):
        if not isinstance(v, str) or v not in choices:
            p.add(f"{name}[{i}]: unknown {kind} {v!r}; choose one of {', '.join(choices)}")
    repeated = sorted(v for v in repeated_values(v for v in value if isinstance(v, str)))
    if repeated:
        p.add(f"{name} repeats {', '.join(map(repr, repeated))}: list each once")


def _check_identities(p: _Problems, name: str, value: Any) -> None:
    """None (all), a range string "0-299" or "7", or a non-empty list of distinct indices >= 0."""
    from mi_art.validation import check_int

    from .size_guard import MAX_LIST_VALUES

    if value is None:
        return
    if isinstance(value, str):
        lo, sep, hi = value.partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            a, b = -1, -1
        if not (0 <= a <= b):
            p.add(f"{name} must be a list of class indices or a range like \"0-299\", got {value!r}")
        elif b - a + 1 > MAX_LIST_VALUES:  # refused before the range is made into a list
            p.add(f"{name} {value!r} is {b - a + 1:,} identities: more than any data set has (the range may hold at "
                  f"most {MAX_LIST_VALUES:,}); give the identities to attack")
        return
    problem = _list_problem(name, value, "class indices (or a range like \"0-299\")")
    if problem is not None:
        p.add(problem)
        return
    if not value:
        p.add(f"{name} is empty: leave it out to attack every identity, or list some")
    for i, v in enumerate(value):
        p.run(check_int, f"{name}[{i}]", v, low=0)
    ints = [v for v in value if isinstance(v, int)]
    if len(set(ints)) != len(ints):
        p.add(f"{name} repeats an identity: list each once")


def _check_budget(p: _Problems, name: str, key: str, value: Any) -> None:
    """One ``ExperimentConfig`` budget by the config's own rule
    (:data:`~mi_art.evaluations.config_rules.PARAMETER_RULES`); identities and surrogate architectures, which
    a grid file may write in other forms, report every problem of their list."""
    from mi_art.models import ARCHITECTURES

    from .config_rules import check_field

    if key == "identities":
        _check_identities(p, name, value)
    elif key == "surrogate_archs":
        _check_names(p, name, value, sorted(ARCHITECTURES), "architecture", allow_empty=True)
    else:
        p.run(check_field, name, key, value)


def _check_data_options(p: _Problems, name: str, dataset: str, options: Any) -> None:
    if not isinstance(options, Mapping):
        p.add(f"{name} must be a table of loader arguments (e.g. {{ image_size = 32 }}), got {options!r}")
        return
    valid = data_option_keys(dataset)
    unknown = sorted(str(k) for k in options if k not in valid)
    if unknown:
        p.add(f"{name}: unknown option(s) {', '.join(map(repr, unknown))} for dataset {dataset!r}; valid options: "
              f"{', '.join(valid)}")
    for problem in data_option_problems(dataset, {k: v for k, v in options.items() if k in valid}):
        p.add(f"{name}: {problem}")


def _as_table(p: _Problems, name: str, item: Any, what: str) -> Optional[Mapping]:
    """A grid list's item as a table: a bare name is ``{"name": item}``; anything else that is not a table is
    a problem (``None``), described as ``what``."""
    if isinstance(item, str):
        return {"name": item}
    if not isinstance(item, Mapping):
        p.add(f"{name} must be {what}, got {item!r}")
        return None
    return item


def _check_dataset_item(p: _Problems, name: str, item: Any) -> None:
    from mi_art.data import DATASETS, normalise_dataset_name

    item = _as_table(p, name, item, "a dataset name or a table with a 'name'")
    if item is None:
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # said once, when the grid is parsed
            item = renamed_dataset_keys(item, name)
    except GridError as err:
        p.add(str(err))
        return
    p.run(_check_keys, item, _DATASET_KEYS, name)
    dname = item.get("name")
    key = normalise_dataset_name(dname) if isinstance(dname, str) else None
    if key not in DATASETS:
        p.add(f"{name}.name: unknown dataset {dname!r}; choose one of {', '.join(DATASETS)}"
              if "name" in item else f"{name} has no 'name': give one of {', '.join(DATASETS)}")
        key = None
    root = item.get("data_root")
    if root is not None and not isinstance(root, str):
        p.add(f"{name}.data_root must be the path of the data folder (a string), got {root!r}")
    if item.get("data_options") is not None and key is not None:
        _check_data_options(p, f"{name}.data_options", key, item["data_options"])
    elif item.get("data_options") is not None and not isinstance(item["data_options"], Mapping):
        p.add(f"{name}.data_options must be a table of loader arguments, got {item['data_options']!r}")
    for k in BUDGET_KEYS:
        if k in item:
            _check_budget(p, f"{name}.{k}", k, item[k])


def _check_defense_item(p: _Problems, name: str, item: Any) -> None:
    from mi_art.defenses import DEFENSES, check_defense_params

    item = _as_table(p, name, item, "a defense name or a table with a 'name' (and 'params')")
    if item is None:
        return
    p.run(_check_keys, item, _DEFENSE_KEYS, name)
    dname = item.get("name")
    if not isinstance(dname, str) or dname not in DEFENSES:
        p.add(f"{name}.name: unknown defense {dname!r}; choose one of {', '.join(DEFENSES)}"
              if "name" in item else f"{name} has no 'name': give one of {', '.join(DEFENSES)}")
        dname = None
    params = item.get("params")
    if params is None or params == []:
        settings: List[Any] = [{}]
    elif isinstance(params, Mapping):
        settings = [params]
    elif isinstance(params, (list, tuple)):
        settings = list(params)
    else:
        p.add(f"{name}.params must be a table of parameters or a list of such tables (one per strength), "
              f"got {params!r}")
        return
    for i, setting in enumerate(settings):
        where = f"{name}.params[{i}]" if isinstance(params, (list, tuple)) else f"{name}.params"
        if not isinstance(setting, Mapping):
            p.add(f"{where} must be a table of parameters, e.g. {{ beta = 0.01 }}, got {setting!r}")
        elif dname is not None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    check_defense_params(dname, dict(setting))
            except ValueError as err:
                p.add(f"{where} of defense {dname!r}: {err}")


def _check_form_item(p: _Problems, name: str, item: Any) -> None:
    """An attack form: a table with a ``name``, the ``attacks``, ``variants`` and ``seeds`` it runs if not the grid's,
    and any budget keys, each value checked by its field's rule (a bare string is a named form that changes nothing)."""
    item = _as_table(p, name, item, "a table with a 'name' and the settings the form changes, e.g. "
                                    "{ name = \"label-only\", access = \"label-only\" }")
    if item is None:
        return
    p.run(_check_keys, item, _FORM_KEYS, name)
    if "name" not in item:
        p.add(f"{name} has no 'name': give it one (it labels the form's rows, report and plots)")
    elif not isinstance(item["name"], str) or not item["name"].strip():
        p.add(f"{name}.name must be a non-empty string (it labels the form's rows), got {item['name']!r}")
    from .config_rules import ATTACKS as attacks, VARIANTS as variants

    for key, choices in (("attacks", attacks), ("variants", variants)):
        if key in item:
            _check_names(p, f"{name}.{key}", item[key], choices, key[:-1])
    if "seeds" in item:
        _check_seeds(p, item["seeds"], f"{name}.seeds")
    for k in BUDGET_KEYS:
        if k in item:
            _check_budget(p, f"{name}.{k}", k, item[k])


def _check_forms(p: _Problems, forms: Any) -> None:
    """A non-empty list of forms, each named once."""
    from mi_art.validation import repeated as repeated_values

    problem = _list_problem("forms", forms, "forms (tables with a 'name')")
    if problem is not None:
        p.add(problem)
        return
    if not forms:
        p.add("forms is empty: leave it out for the grid's one default form, or give at least one")
    for i, item in enumerate(forms):
        _check_form_item(p, f"forms[{i}]", item)
    names = [f if isinstance(f, str) else f.get("name") for f in forms if isinstance(f, (str, Mapping))]
    again = sorted(repeated_values(n for n in names if isinstance(n, str)))
    if again:
        p.add(f"forms repeat the name(s) {', '.join(map(repr, again))}: give each form a name of its own")


def check_grid(d: Any, where: str = "the grid") -> None:
    """Check the type and range of every key of a grid dictionary (a grid file, a preset, the merged
    options) without loading data or training anything.

    :raises GridError: Listing every problem found (``err.problems``), each naming the key, the value
        and what would be valid.
    """
    from mi_art.validation import check_choice, check_int

    from .config_rules import ATTACKS as attacks, VARIANTS as variants

    if isinstance(d, CheckedGrid) and d.unchanged():
        return
    if not isinstance(d, Mapping):
        raise GridError(f"{where}: a grid is a mapping (a table of keys), got {type(d).__name__}")
    d = renamed_grid(d, where)
    p = _Problems()
    p.run(_check_keys, d, _GRID_KEYS, where)
    name = d.get("name", "grid")
    if not isinstance(name, str) or not name.strip() or any(c in name for c in "/\\\\") or name.strip() in (".", ".."):
        p.add(f"name must be a non-empty string without path separators (it names the results folder), got {name!r}")
    _check_datasets_and_defenses(p, d)
    if "forms" in d:
        _check_forms(p, d["forms"])
    if "attacks" in d:
        _check_names(p, "attacks", d["attacks"], attacks, "attack")
    if "variants" in d:
        _check_names(p, "variants", d["variants"], variants, "variant")
    if "seeds" in d:
        _check_seeds(p, d["seeds"])
    if isinstance(d.get("forms"), list):
        _check_form_seeds(p, d["forms"], d.get("seeds", [0]))
    if "seed_scope" in d:
        p.run(check_choice, "seed_scope", d["seed_scope"], SEED_SCOPES)
    if "artifact_seed" in d:
        p.run(check_int, "artifact_seed", d["artifact_seed"], low=0)
    if d.get("device") is not None:
        p.run(check_device_form, "device", d["device"])
    for k in BUDGET_KEYS:
        if k in d:
            _check_budget(p, k, k, d[k])
    _raise_problems(p, where)


def _check_datasets_and_defenses(p: _Problems, d: Mapping[str, Any]) -> None:
    """``datasets`` and ``defenses``: each a non-empty list, and each of its items checked."""
    for key, item_check in (("datasets", _check_dataset_item), ("defenses", _check_defense_item)):
        if key in d:
            value = d[key]
            problem = _list_problem(key, value, f"{key[:-1]} names or tables")
            if problem is not None:
                p.add(problem)
            elif not value:
                p.add(f"{key} is empty: the grid has no {key}; give at least one"
                      + (" ('none' is the undefended target)" if key == "defenses" else ""))
            else:
                for i, item in enumerate(value):
                    item_check(p, f"{key}[{i}]", item)


def _check_seeds(p: _Problems, seeds: Any, name: str = "seeds") -> None:
    """``seeds`` (the grid's, or a form's under ``name``): a non-empty list of non-negative integers, each once."""
    from mi_art.validation import check_int, repeated as repeated_values

    problem = _list_problem(name, seeds, "non-negative integers")
    if problem is not None:
        p.add(problem)
    elif not seeds:
        p.add(f"{name} is empty: " + ("the grid has no seeds; give at least one, e.g. seeds = [0]" if name == "seeds"
                                      else "leave it out to run the grid's seeds, or give at least one of them"))
    else:
        for i, s in enumerate(seeds):
            p.run(check_int, f"{name}[{i}]", s, low=0)
        again = repeated_values(s for s in seeds if isinstance(s, int) and not isinstance(s, bool))
        if again:
            p.add(f"{name} repeat {', '.join(map(str, again[:10]))}{', ...' if len(again) > 10 else ''}: "
                  "list each once")


def _check_form_seeds(p: _Problems, forms: Sequence[Any], seeds: Any) -> None:
    """A form's ``seeds`` are some of the grid's (a form runs a subset of them, e.g. a deterministic attack's
    first alone)."""
    grid_seeds = set(seeds) if isinstance(seeds, list) and all(isinstance(s, int) for s in seeds) else None
    for i, item in enumerate(forms):
        own = item.get("seeds") if isinstance(item, Mapping) else None
        if grid_seeds is None or not isinstance(own, list):
            continue
        outside = [s for s in own if isinstance(s, int) and s not in grid_seeds]
        if outside:
            p.add(f"forms[{i}].seeds {outside} are not among the grid's seeds {sorted(grid_seeds)}: a form runs "
                  "some of the grid's seeds; add them to the grid's seeds or drop them from the form's")


def _raise_problems(p: _Problems, where: str) -> None:
    """One :class:`GridError` listing every problem found (each also in ``err.problems``), if there is any."""
    if p.items:
        head = f"{where}: " if where != "the grid" else ""
        if len(p.items) == 1:
            raise GridError(head + p.items[0], p.items)
        raise GridError(f"{head}{len(p.items)} problems:\n" + "\n".join(f"  - {m}" for m in p.items), p.items)


def check_device_form(name: str, value: Any) -> Optional[str]:
    """'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' by form only: a grid may be written on one machine
    and run on another (``--device`` on the command line is checked against this machine)."""
    import torch

    valid = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
    if not isinstance(value, str):
        raise ValueError(f"{name} must be {valid}, got {value!r}")
    if value.strip().lower() == "auto":
        return None
    try:
        device = torch.device(value.strip().lower())
    except (RuntimeError, ValueError):
        raise ValueError(f"{name} must be {valid}, got {value!r}") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{name} must be {valid}, got {value!r}")
    return str(device)


def data_option_keys(dataset: str) -> Tuple[str, ...]:
    """The loader arguments ``--data-option`` / a grid's ``data_options`` may set for ``dataset``
    (:func:`mi_art.data.dataset_options`)."""
    from mi_art.data import dataset_options

    return dataset_options(dataset)


def data_option_problems(dataset: str, options: Mapping[str, Any]) -> List[str]:
    """Problems with the values of loader arguments, found without reading any data
    (:func:`mi_art.data.check_dataset_options`; it reports the first one)."""
    from mi_art.data import check_dataset_options

    try:
        check_dataset_options(dataset, dict(options))
    except ValueError as err:
        return [str(err)]
    return []
