"""The defense-grid evaluation: which cells to run and how each one is configured.

A grid is datasets x defenses (each with one or more parameter settings, i.e. strengths) x attacks x
variants x seeds. It comes from a preset (:mod:`mi_art.evaluations.presets`), a TOML file (or YAML when
PyYAML is installed) and/or command-line options; all three share one dictionary format::

    name = "my-grid"
    attacks = ["gmi", "kedmi"]               # gmi, kedmi, vmi, plgmi, miface, brepmi (the last two:
                                             # baseline only)
    variants = ["baseline", "lomma"]         # baseline, lom, ma, lomma
    seeds = [0, 1]
    seed_scope = "all"                       # "all": a seed retrains target, evaluator, priors and
                                             # surrogates and seeds the attack; "attack": artifacts
                                             # use artifact_seed, only the attack seed varies
    iterations = 200                         # any ExperimentConfig budget: target_arch,
    prior_steps = 300                        # target_epochs, eval_arch, eval_epochs, augment,
                                             # n_reconstructions, identities, batch_size,
                                             # kedmi_steps, plgmi_steps, gan_width, gan_augment,
                                             # surrogate_archs, surrogate_steps, miface_iterations
    target_pretrain_epochs = 20              # pre-train on the public identities first (0: from
    eval_pretrain_epochs = 20                # scratch), for the target, the evaluation model
    surrogate_pretrain_epochs = 0            # and the surrogates (before distillation)
    judges = 3                               # evaluation models per cell: metrics are their mean

    [[datasets]]
    name = "digits"                          # mi_art.data.DATASETS
    # data_root = "../shared/data/att_faces"   # required by every dataset but digits
    # data_options = { private = 20, image_size = 32 }   # loader arguments (earlier files: root, options)
    # target_epochs = 30                     # budgets may be overridden per dataset

    [[defenses]]
    name = "none"

    [[defenses]]
    name = "mid"
    params = [{ beta = 0.003 }, { beta = 0.01 }]   # one cell group per strength

Every key is checked for type and range when a grid is loaded (:func:`check_grid`, called by
:func:`load_grid_file` and :meth:`Grid.from_dict`): a string where a list is expected, a width of -4,
a float where an integer is needed, an unknown key, an unknown loader option or defense parameter
all end in one :class:`GridError` that lists every problem, so ``mi-art evaluate --dry-run`` refuses a
grid that would fail later.

A cell is one ``ExperimentConfig``; its id is a stable hash of that configuration (``device`` and
``verbose`` excluded: they change how, not what, is computed).
"""
from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .cache import config_key
from .experiment import ATTACKS, BASELINE_ONLY, VARIANTS, ExperimentConfig

__all__ = ["BUDGET_KEYS", "Cell", "DatasetSpec", "DefenseSpec", "Grid", "GridError", "cell_id", "check_device_form",
           "check_grid", "data_option_keys", "defense_label", "grid_to_toml", "load_grid_file", "merge_grid"]

#: ExperimentConfig fields a grid may set globally or per dataset.
BUDGET_KEYS: Tuple[str, ...] = (
    "target_arch", "target_epochs", "target_pretrain_epochs", "eval_arch", "eval_epochs", "eval_pretrain_epochs",
    "augment", "iterations", "n_reconstructions", "identities", "batch_size", "prior_steps", "kedmi_steps",
    "plgmi_steps", "kedmi_init", "gan_width", "gan_augment", "surrogate_archs", "surrogate_steps", "surrogate_data",
    "surrogate_pretrain_epochs", "min_surrogate_agreement", "regularise_surrogates", "miface_iterations", "judges",
    "access", "max_queries")
#: Integer budgets for which 0 is valid and means "off" (the others are counts, >= 1).
ZERO_OK_KEYS: Tuple[str, ...] = ("target_pretrain_epochs", "eval_pretrain_epochs", "surrogate_pretrain_epochs")
_GRID_KEYS = ("name", "datasets", "defenses", "attacks", "variants", "seeds", "seed_scope", "artifact_seed",
              "device", *BUDGET_KEYS)
_DATASET_KEYS = ("name", "data_root", "data_options", *BUDGET_KEYS)
#: Dataset keys of earlier grid files and their names now (the names of the config and the CLI).
_RENAMED_DATASET_KEYS = {"root": "data_root", "options": "data_options"}
_DEFENSE_KEYS = ("name", "params")
SEED_SCOPES = ("all", "attack")
#: Keys of a cell's configuration left out of its id.
_NOT_IN_ID = ("device", "verbose")
#: Keys left out of a cell's id while they hold their default (0: off; one judge), so that adding them
#: did not change the ids of the cells of existing grids (which would rerun every finished cell).
_IN_ID_WHEN_SET: Dict[str, Any] = {**{k: 0 for k in ZERO_OK_KEYS}, "judges": 1, "min_surrogate_agreement": 0.0,
                                   "regularise_surrogates": True, "plgmi_steps": 300, "access": "white-box",
                                   "max_queries": None}


class GridError(ValueError):
    """An invalid grid: the message names the problem(s); ``problems`` lists them one by one."""

    def __init__(self, message: str, problems: Optional[Sequence[str]] = None) -> None:
        super().__init__(message)
        self.problems: List[str] = list(problems) if problems is not None else [message]


@dataclass
class DatasetSpec:
    name: str
    root: Optional[str] = None
    options: Dict[str, Any] = field(default_factory=dict)
    overrides: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.name}
        if self.root is not None:
            out["data_root"] = self.root
        if self.options:
            out["data_options"] = dict(self.options)
        out.update({k: (_compact_identities(v) if k == "identities" else v) for k, v in self.overrides.items()})
        return out


@dataclass
class DefenseSpec:
    name: str
    params: List[Dict[str, Any]] = field(default_factory=lambda: [{}])

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "params": [dict(p) for p in self.params]}


@dataclass
class Cell:
    """One attack run of the grid."""

    id: str
    config: ExperimentConfig
    defense_label: str
    index: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return {"id": self.id, "config": self.config.to_dict(), "defense_label": self.defense_label,
                "index": self.index}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Cell":
        return cls(id=d["id"], config=config_from_dict(d["config"]), defense_label=d["defense_label"],
                   index=int(d.get("index", 0)))

    @property
    def target_group(self) -> str:
        """Cells with the same value share a target (and its KEDMI prior, surrogates, p_reg)."""
        c = self.config
        key = {"data": [c.dataset, c.data_root, c.data_options], "defense": c.defense,
               "params": c.defense_params, "arch": c.target_arch, "epochs": c.target_epochs,
               "augment": c.augment, "seed": c.seed}
        if c.target_pretrain_epochs:
            key["pretrain_epochs"] = c.target_pretrain_epochs
        return config_key(key)


def config_from_dict(d: Mapping[str, Any]) -> ExperimentConfig:
    d = dict(d)
    if d.get("surrogate_archs") is not None:
        d["surrogate_archs"] = tuple(d["surrogate_archs"])
    return ExperimentConfig(**d)


def cell_id(config: ExperimentConfig) -> str:
    """Stable hash of everything a cell computes from (``device`` and ``verbose`` excluded)."""
    d = {k: v for k, v in config.to_dict().items()
         if k not in _NOT_IN_ID and not (k in _IN_ID_WHEN_SET and v == _IN_ID_WHEN_SET[k])}
    return config_key(d)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def defense_label(name: str, params: Mapping[str, Any]) -> str:
    """``"mid(beta=0.01)"``: the defense and the parameters the grid sets."""
    if not params:
        return name
    return f"{name}(" + ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(params.items())) + ")"


# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------


def load_grid_file(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a grid dictionary from TOML (``.toml``), JSON (``.json``) or YAML (``.yaml``/``.yml``, needs
    PyYAML)."""
    path = Path(path)
    if not path.is_file():
        raise GridError(f"grid file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise GridError(f"{path}: invalid JSON: {err}") from err
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as err:
            raise GridError(f"{path} is YAML, but PyYAML is not installed: pip install pyyaml, or write the grid "
                            "as TOML") from err
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise GridError(f"{path}: invalid YAML: {err}") from err
    else:
        try:
            import tomllib
        except ImportError:  # pragma: no cover - Python < 3.11
            try:
                import tomli as tomllib  # type: ignore[no-redef]
            except ImportError as err:
                raise GridError("reading TOML needs Python >= 3.11 or the 'tomli' package") from err
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise GridError(f"{path}: invalid TOML: {err}") from err
    if not isinstance(data, dict):
        raise GridError(f"{path}: a grid file holds a table (mapping) at the top level")
    check_grid(data, where=str(path))
    return data


def merge_grid(base: Mapping[str, Any], override: Mapping[str, Any]) -> Dict[str, Any]:
    """``override``'s keys replace ``base``'s (lists are replaced, not appended)."""
    out = copy.deepcopy(dict(base))
    for k, v in override.items():
        out[k] = copy.deepcopy(v)
    return out


def _as_list(value: Any, what: str) -> List[Any]:
    if value is None:
        return []
    if isinstance(value, (str, dict)):
        return [value]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise GridError(f"{what} must be a list, got {value!r}")


def _check_keys(d: Mapping[str, Any], valid: Sequence[str], where: str) -> None:
    unknown = sorted(set(d) - set(valid))
    if unknown:
        raise GridError(f"unknown key(s) {', '.join(map(repr, unknown))} in {where}; valid keys: {', '.join(valid)}")


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


def renamed_dataset_keys(item: Any, where: str = "dataset") -> Any:
    """``item`` (a dataset table of a grid file) with the keys of earlier grid files, ``root`` and
    ``options``, under their names now, ``data_root`` and ``data_options`` (a warning says so); both
    names at once is an error. Anything but a table is returned as it is."""
    if not isinstance(item, Mapping):
        return item
    out = dict(item)
    for old, new in _RENAMED_DATASET_KEYS.items():
        if old in out:
            if new in out:
                raise GridError(f"{where} gives both {old!r} and {new!r}: {old!r} is the earlier name of {new!r}; "
                                f"keep {new!r} only")
            out[new] = out.pop(old)
            warnings.warn(f"{where}: the grid key {old!r} is now called {new!r} (as in the config and the CLI); "
                          f"the file still works, rename it there", FutureWarning, stacklevel=3)
    return out


def _parse_dataset(item: Any) -> DatasetSpec:
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, dict) or "name" not in item:
        raise GridError(f"a dataset is a name or a table with a 'name', got {item!r}")
    item = renamed_dataset_keys(item, f"dataset {item['name']!r}")
    _check_keys(item, _DATASET_KEYS, f"dataset {item['name']!r}")
    options = item.get("data_options") or {}
    if not isinstance(options, dict):
        raise GridError(f"dataset {item['name']!r}: data_options must be a table of loader arguments, got {options!r}")
    root = item.get("data_root")
    return DatasetSpec(name=str(item["name"]), root=None if root in (None, "") else str(root), options=dict(options),
                       overrides={k: (_identities(v) if k == "identities" else v) for k, v in item.items()
                                  if k in BUDGET_KEYS})


def _parse_defense(item: Any) -> DefenseSpec:
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, dict) or "name" not in item:
        raise GridError(f"a defense is a name or a table with a 'name' (and 'params'), got {item!r}")
    _check_keys(item, _DEFENSE_KEYS, f"defense {item['name']!r}")
    params = item.get("params")
    settings = [{}] if params is None or params == [] else _as_list(params, f"defense {item['name']!r} params")
    for p in settings:
        if not isinstance(p, dict):
            raise GridError(f"defense {item['name']!r}: each parameter setting is a table, got {p!r}")
    return DefenseSpec(name=str(item["name"]), params=[dict(p) for p in settings])


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
    problem = _list_problem(name, value, f"{kind} names")
    if problem is not None:
        p.add(problem)
        return
    if not value and not allow_empty:
        p.add(f"{name} is empty: the grid has no {kind}s; give at least one of {', '.join(choices)}")
    for i, v in enumerate(value):
        if not isinstance(v, str) or v not in choices:
            p.add(f"{name}[{i}]: unknown {kind} {v!r}; choose one of {', '.join(choices)}")
    repeated = sorted({v for v in value if isinstance(v, str) and list(value).count(v) > 1})
    if repeated:
        p.add(f"{name} repeats {', '.join(map(repr, repeated))}: list each once")


def _check_identities(p: _Problems, name: str, value: Any) -> None:
    """None (all), a range string "0-299" or "7", or a non-empty list of distinct indices >= 0."""
    from mi_art.validation import check_int

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


def _budget_choices() -> Dict[str, Sequence[str]]:
    from mi_art.models import ARCHITECTURES
    from mi_art.training import AUGMENTATIONS

    from . import experiment

    out: Dict[str, Sequence[str]] = {"target_arch": sorted(ARCHITECTURES), "eval_arch": sorted(ARCHITECTURES),
                                     "augment": AUGMENTATIONS, "gan_augment": AUGMENTATIONS}
    out["access"] = experiment.ACCESS_LEVELS
    for key, const in (("kedmi_init", "KEDMI_INITS"), ("surrogate_data", "SURROGATE_DATA")):
        if hasattr(experiment, const):
            out[key] = getattr(experiment, const)
    return out


def _check_budget(p: _Problems, name: str, key: str, value: Any) -> None:
    """One ``ExperimentConfig`` budget: its rule comes from the key (names, identities) or from the
    type of its default (an int default is a positive integer: epochs, steps, sizes, widths)."""
    from mi_art.models import ARCHITECTURES
    from mi_art.validation import check_bool, check_choice, check_count, check_int, check_number

    if key == "identities":
        _check_identities(p, name, value)
        return
    if key == "surrogate_archs":
        _check_names(p, name, value, sorted(ARCHITECTURES), "architecture", allow_empty=True)
        return
    choices = _budget_choices().get(key)
    if choices is not None:
        p.run(check_choice, name, value, choices)
        return
    default = getattr(ExperimentConfig(), key, None)
    if key == "max_queries":
        if value is not None:
            p.run(check_count, name, value, hint=" (None: no limit)")
    elif key == "min_surrogate_agreement":
        p.run(check_number, name, value, low=0, high=1)
    elif key in ZERO_OK_KEYS:
        p.run(check_int, name, value, low=0, hint=" (0: off)")
    elif isinstance(default, bool):
        p.run(check_bool, name, value)
    elif isinstance(default, int):
        p.run(check_count, name, value)
    elif isinstance(default, float):
        p.run(check_number, name, value)
    elif isinstance(default, str) and not isinstance(value, str):
        p.add(f"{name} must be a string, got {value!r}")


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


def _check_dataset_item(p: _Problems, name: str, item: Any) -> None:
    from mi_art.data import DATASETS

    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, Mapping):
        p.add(f"{name} must be a dataset name or a table with a 'name', got {item!r}")
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # said once, when the grid is parsed
            item = renamed_dataset_keys(item, name)
    except GridError as err:
        p.add(str(err))
        return
    unknown = sorted(str(k) for k in item if k not in _DATASET_KEYS)
    if unknown:
        p.add(f"unknown key(s) {', '.join(map(repr, unknown))} in {name}; valid keys: {', '.join(_DATASET_KEYS)}")
    dname = item.get("name")
    key = dname.strip().lower().replace("_", "-") if isinstance(dname, str) else None
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

    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, Mapping):
        p.add(f"{name} must be a defense name or a table with a 'name' (and 'params'), got {item!r}")
        return
    unknown = sorted(str(k) for k in item if k not in _DEFENSE_KEYS)
    if unknown:
        p.add(f"unknown key(s) {', '.join(map(repr, unknown))} in {name}; valid keys: {', '.join(_DEFENSE_KEYS)}")
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


def check_grid(d: Any, where: str = "the grid") -> None:
    """Check the type and range of every key of a grid dictionary (a grid file, a preset, the merged
    options) without loading data or training anything.

    :raises GridError: Listing every problem found (``err.problems``), each naming the key, the value
        and what would be valid.
    """
    from mi_art.validation import check_choice, check_int

    from .experiment import ATTACKS as attacks, VARIANTS as variants

    if not isinstance(d, Mapping):
        raise GridError(f"{where}: a grid is a mapping (a table of keys), got {type(d).__name__}")
    p = _Problems()
    unknown = sorted(str(k) for k in d if k not in _GRID_KEYS)
    if unknown:
        p.add(f"unknown key(s) {', '.join(map(repr, unknown))} in {where}; valid keys: {', '.join(_GRID_KEYS)}")
    if "name" in d:
        n = d["name"]
        if not isinstance(n, str) or not n.strip() or any(c in n for c in "/\\\\") or n.strip() in (".", ".."):
            p.add(f"name must be a non-empty string without path separators (it names the results folder), "
                  f"got {n!r}")
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
    if "attacks" in d:
        _check_names(p, "attacks", d["attacks"], attacks, "attack")
    if "variants" in d:
        _check_names(p, "variants", d["variants"], variants, "variant")
    if "seeds" in d:
        seeds = d["seeds"]
        problem = _list_problem("seeds", seeds, "non-negative integers")
        if problem is not None:
            p.add(problem)
        elif not seeds:
            p.add("seeds is empty: the grid has no seeds; give at least one, e.g. seeds = [0]")
        else:
            for i, s in enumerate(seeds):
                p.run(check_int, f"seeds[{i}]", s, low=0)
            if len({s for s in seeds if isinstance(s, int)}) != len(seeds):
                p.add(f"seeds repeat a value: {list(seeds)}")
    if "seed_scope" in d:
        p.run(check_choice, "seed_scope", d["seed_scope"], SEED_SCOPES)
    if "artifact_seed" in d:
        p.run(check_int, "artifact_seed", d["artifact_seed"], low=0)
    if d.get("device") is not None:
        p.run(check_device_form, "device", d["device"])
    for k in BUDGET_KEYS:
        if k in d:
            _check_budget(p, k, k, d[k])
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

# --------------------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------------------


@dataclass
class Grid:
    """Datasets x defenses (x strengths) x attacks x variants x seeds, with shared budgets."""

    datasets: List[DatasetSpec]
    defenses: List[DefenseSpec]
    attacks: List[str]
    variants: List[str]
    seeds: List[int]
    budgets: Dict[str, Any] = field(default_factory=dict)
    seed_scope: str = "all"
    artifact_seed: int = 0
    name: str = "grid"
    device: Optional[str] = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Grid":
        """Parse a grid dictionary (see the module docstring). Every key's type and range is checked
        first (:func:`check_grid`: one :class:`GridError` lists every problem); call :meth:`validate` for
        what needs more (defense parameters against the data, data folders, model shapes)."""
        check_grid(d)
        datasets = [_parse_dataset(x) for x in _as_list(d.get("datasets", ["digits"]), "datasets")]
        defenses = [_parse_defense(x) for x in _as_list(d.get("defenses", ["none"]), "defenses")]
        seeds = _as_list(d.get("seeds", [0]), "seeds")
        return cls(datasets=datasets, defenses=defenses,
                   attacks=[str(a) for a in _as_list(d.get("attacks", ["gmi"]), "attacks")],
                   variants=[str(v) for v in _as_list(d.get("variants", ["baseline", "lomma"]), "variants")],
                   seeds=seeds, budgets={k: (_identities(d[k]) if k == "identities" else d[k])
                                         for k in BUDGET_KEYS if k in d},
                   seed_scope=str(d.get("seed_scope", "all")), artifact_seed=d.get("artifact_seed", 0),
                   name=str(d.get("name", "grid")), device=d.get("device"))

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.name, "attacks": list(self.attacks), "variants": list(self.variants),
                               "seeds": list(self.seeds), "seed_scope": self.seed_scope}
        if self.seed_scope == "attack":
            out["artifact_seed"] = self.artifact_seed
        if self.device is not None:
            out["device"] = self.device
        out.update({k: (_compact_identities(v) if k == "identities" else list(v) if isinstance(v, tuple) else v)
                    for k, v in self.budgets.items()})
        out["datasets"] = [s.to_dict() for s in self.datasets]
        out["defenses"] = [s.to_dict() for s in self.defenses]
        return out

    # ---------------------------------------------------------------- validation

    def validate(self, *, check_data: bool = True, load_data: bool = True) -> List[str]:
        """Check everything that can be checked before any training: names of datasets, defenses,
        attacks and variants; seeds; budgets and architectures (``ExperimentConfig.validate``); defense
        parameters (``mi_art.defenses.api``); data folders; and, when ``load_data``, the loader options and the
        shapes the models need (the datasets are loaded, nothing is trained).

        :param check_data: A missing or unreadable data folder is an error; when False it is returned as
            a warning instead (``--dry-run`` on a machine without the data).
        :return: Warnings (problems tolerated because ``check_data`` is False).
        :raises GridError: The first problem found, named.
        """
        from mi_art.defenses import DEFENSES, defense_defaults
        from mi_art.data import DATASETS

        warnings_out: List[str] = []
        if not self.datasets:
            raise GridError("the grid has no datasets")
        if not self.defenses:
            raise GridError("the grid has no defenses (use 'none' for the undefended target)")
        if not self.attacks:
            raise GridError("the grid has no attacks")
        if not self.variants:
            raise GridError("the grid has no variants")
        if not self.seeds:
            raise GridError("the grid has no seeds: give at least one, e.g. seeds = [0]")
        for s in self.seeds:
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                raise GridError(f"seeds must be non-negative integers, got {s!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise GridError(f"seeds repeat a value: {self.seeds}")
        if self.seed_scope not in SEED_SCOPES:
            raise GridError(f"unknown seed_scope {self.seed_scope!r}; choose one of {SEED_SCOPES}")
        if isinstance(self.artifact_seed, bool) or not isinstance(self.artifact_seed, int) or self.artifact_seed < 0:
            raise GridError(f"artifact_seed must be a non-negative integer, got {self.artifact_seed!r}")
        for a in self.attacks:
            if a not in ATTACKS:
                raise GridError(f"unknown attack {a!r}; choose one of {', '.join(ATTACKS)}")
        for v in self.variants:
            if v not in VARIANTS:
                raise GridError(f"unknown variant {v!r}; choose one of {', '.join(VARIANTS)}")
        for name, values in (("attacks", self.attacks), ("variants", self.variants)):
            if len(set(values)) != len(values):
                raise GridError(f"{name} repeat a value: {values}")
        for d in self.datasets:
            key = d.name.strip().lower().replace("_", "-")
            if key not in DATASETS:
                raise GridError(f"unknown dataset {d.name!r}; choose one of {', '.join(DATASETS)}")
        for spec in self.defenses:
            try:
                defense_defaults(spec.name)
            except ValueError as err:
                raise GridError(str(err)) from None
            if spec.name != spec.name.strip().lower() or spec.name not in DEFENSES:
                raise GridError(f"write the defense name {spec.name!r} as one of {', '.join(DEFENSES)}")
        labels = [defense_label(s.name, p) for s in self.defenses for p in s.params]
        dup = sorted({lab for lab in labels if labels.count(lab) > 1})
        if dup:
            raise GridError(f"the grid lists the same defense setting twice: {', '.join(dup)}")
        # budgets and architectures, through the configuration of a representative cell per dataset
        for d in self.datasets:
            for attack in self.attacks:
                for variant in (self.variants if attack not in BASELINE_ONLY else ["baseline"]):
                    try:
                        self._config(d, "none", {}, attack, variant, self.seeds[0]).validate()
                    except (ValueError, TypeError) as err:
                        raise GridError(f"dataset {d.name!r}: {err}") from None
            for spec in self.defenses:  # the pre-training's interplay with TL-DMI's (ExperimentConfig.validate)
                for params in spec.params:
                    try:
                        self._config(d, spec.name, params, "gmi", "baseline", self.seeds[0]).validate()
                    except (ValueError, TypeError) as err:
                        raise GridError(f"dataset {d.name!r}, defense {defense_label(spec.name, params)}: "
                                        f"{err}") from None
        # defense parameters; dataset folders and options
        for d in self.datasets:
            data = None
            problem = _data_path_problem(d)
            if problem is not None:
                if check_data:
                    raise GridError(problem)
                warnings_out.append(problem)
            elif load_data:
                data = _load(d)
            n_train = len(data.private_train) if data is not None else 1000
            for spec in self.defenses:
                for params in spec.params:
                    _check_defense_params(spec.name, params, n_train, data, self._budget(d, "target_arch"))
            if data is not None:
                self._check_shapes(d, data)
        return warnings_out

    def _check_shapes(self, d: DatasetSpec, data: Any) -> None:
        from mi_art.models import make_classifier
        from mi_art.priors import Generator

        c, s, _ = data.input_shape
        pretrain = [k for k in ZERO_OK_KEYS if self._budget(d, k)]
        if pretrain:
            from mi_art.pretraining import MIN_PUBLIC_CLASSES

            if data.num_public_classes < MIN_PUBLIC_CLASSES:
                raise GridError(f"dataset {d.name!r} has {data.num_public_classes} public identities: "
                                f"{' and '.join(pretrain)} need at least {MIN_PUBLIC_CLASSES} to pre-train on; "
                                "set them to 0")
        identities = self._budget(d, "identities")
        if identities is not None:
            bad = [i for i in identities if not isinstance(i, int) or not 0 <= i < data.num_classes]
            if bad:
                raise GridError(f"dataset {d.name!r} has {data.num_classes} private identities (0-"
                                f"{data.num_classes - 1}); identities out of range: {bad[:10]}")
        try:
            for arch in (self._budget(d, "eval_arch"), *self._budget(d, "surrogate_archs")):
                make_classifier(arch, c, data.num_classes, s)
            if any(a != "miface" for a in self.attacks):
                Generator(s, c, width=self._budget(d, "gan_width"))
        except ValueError as err:
            raise GridError(f"dataset {d.name!r} ({c}x{s}x{s}): {err}") from None

    # ---------------------------------------------------------------- cells

    def _budget(self, d: DatasetSpec, key: str) -> Any:
        if key in d.overrides:
            return d.overrides[key]
        if key in self.budgets:
            return self.budgets[key]
        return getattr(ExperimentConfig(), key)

    def _config(self, d: DatasetSpec, defense: str, params: Dict[str, Any], attack: str, variant: str,
                seed: int) -> ExperimentConfig:
        budgets = {k: self._budget(d, k) for k in BUDGET_KEYS}
        if isinstance(budgets["surrogate_archs"], (list, tuple)):
            budgets["surrogate_archs"] = tuple(budgets["surrogate_archs"])
        elif isinstance(budgets["surrogate_archs"], str):
            budgets["surrogate_archs"] = (budgets["surrogate_archs"],)
        if budgets["identities"] is not None:
            budgets["identities"] = list(budgets["identities"])
        root = str(Path(d.root).expanduser().resolve()) if d.root else None
        artifact_seed = seed if self.seed_scope == "all" else self.artifact_seed
        return ExperimentConfig(dataset=d.name.strip().lower().replace("_", "-"), defense=defense,
                                defense_params=dict(params), data_root=root, data_options=dict(d.options),
                                attack=attack, variant=variant, seed=artifact_seed, attack_seed=seed,
                                device=self.device, **budgets)

    def cells(self) -> List[Cell]:
        """Every cell, in a fixed order: dataset, seed, defense, strength, attack, variant. MIFace runs
        its baseline only (once, whatever ``variants`` holds)."""
        out: List[Cell] = []
        for d in self.datasets:
            for seed in self.seeds:
                for spec in self.defenses:
                    for params in spec.params:
                        for attack in self.attacks:
                            for variant in (self.variants if attack not in BASELINE_ONLY else ["baseline"]):
                                config = self._config(d, spec.name, params, attack, variant, seed)
                                out.append(Cell(cell_id(config), config, defense_label(spec.name, params), len(out)))
        return out

    def summary(self) -> str:
        """A human-readable plan of the grid."""
        cells = self.cells()
        n_strengths = sum(len(s.params) for s in self.defenses)
        lines = [f"grid {self.name!r}: {len(cells)} cells = {len(self.datasets)} dataset(s) x {n_strengths} "
                 f"defense setting(s) x {len(self.seeds)} seed(s) x attack/variant pairs "
                 f"{sorted({(c.config.attack, c.config.variant) for c in cells})}"]
        for d in self.datasets:
            lines.append(f"  dataset {d.name}: data_root={d.root or '-'} data_options={json.dumps(d.options, sort_keys=True)}"
                         + (f" overrides={json.dumps(d.overrides, sort_keys=True)}" if d.overrides else ""))
        for s in self.defenses:
            for p in s.params:
                lines.append(f"  defense {defense_label(s.name, p)}")
        lines.append(f"  attacks {self.attacks}, variants {self.variants}, seeds {self.seeds} "
                     f"(seed scope {self.seed_scope})")
        budgets = {k: self._budget(self.datasets[0], k) for k in BUDGET_KEYS}
        ids = budgets.pop("identities")
        lines.append("  budgets " + ", ".join(f"{k}={_fmt(list(v) if isinstance(v, tuple) else v)}"
                                              for k, v in budgets.items())
                     + (", identities=all" if ids is None else f", identities={len(ids)} ({_preview_ids(ids)})"))
        targets = {c.target_group for c in cells}
        priors = {(c.config.dataset, c.config.data_root, json.dumps(c.config.data_options, sort_keys=True),
                   c.config.seed) for c in cells if c.config.attack == "gmi"}
        lines.append(f"  shared work: {len(targets)} target(s) (each with its KEDMI GAN, surrogates, p_reg as "
                     f"needed), {len(priors)} GMI prior(s), one evaluator per dataset and seed")
        return "\n".join(lines)


def _preview_ids(ids: Sequence[int]) -> str:
    ids = list(ids)
    if ids and ids == list(range(ids[0], ids[0] + len(ids))):
        return f"{ids[0]}-{ids[-1]}"
    return ", ".join(map(str, ids[:8])) + (", ..." if len(ids) > 8 else "")


def _data_path_problem(d: DatasetSpec) -> Optional[str]:
    key = d.name.strip().lower().replace("_", "-")
    if key == "digits":
        if d.root is not None:
            return f"dataset 'digits' ships with scikit-learn and takes no data_root (got data_root={d.root!r})"
        return None
    if d.root is None:
        return (f"dataset {d.name!r} needs a data folder: set data_root in the grid or pass --data-root"
                + (" (the CelebA folder with img_align_celeba/ and identity_CelebA.txt)" if key == "celeba" else ""))
    path = Path(d.root).expanduser()
    if not path.exists():
        return f"dataset {d.name!r}: data folder does not exist: {path}"
    if not path.is_dir():
        return f"dataset {d.name!r}: data path is not a folder: {path}"
    return None


_DATA_MEMO: Dict[str, Any] = {}


def data_memo_key(name: str, root: Optional[str], options: Mapping[str, Any]) -> str:
    return json.dumps([name.strip().lower().replace("_", "-"), str(Path(root).expanduser().resolve()) if root else None,
                       options], sort_keys=True, default=str)


def load_data(name: str, root: Optional[str], options: Mapping[str, Any]) -> Any:
    """Load a dataset once per process (cells of one dataset share it)."""
    from mi_art.data import load_dataset

    key = data_memo_key(name, root, options)
    if key not in _DATA_MEMO:
        _DATA_MEMO[key] = load_dataset(name, str(Path(root).expanduser().resolve()) if root else None, **options)
    return _DATA_MEMO[key]


def _load(d: DatasetSpec) -> Any:
    try:
        return load_data(d.name, d.root, d.options)
    except (ValueError, TypeError, OSError) as err:
        raise GridError(f"dataset {d.name!r} (data_root={d.root!r}, data_options={d.options}): {err}") from None


def _check_defense_params(name: str, params: Dict[str, Any], n_train: int, data: Any, target_arch: str) -> None:
    """``mi_art.defenses.api`` validation of one parameter setting; with data, also builds the defended
    architecture (TL's freeze count against the model, MID's bottleneck, DP's Opacus fixes)."""
    from mi_art.defenses import check_defense_params, defended_architecture

    label = defense_label(name, params)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_defense_params(name, dict(params), n_train=n_train)
            if data is not None:
                defended_architecture(name, data, model=target_arch, **params)
    except (ValueError, TypeError) as err:
        raise GridError(f"defense {label}: {err}") from None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()
                                if v is not None) + " }" if value else "{}"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def grid_to_toml(d: Mapping[str, Any]) -> str:
    """A grid dictionary (:meth:`Grid.to_dict`) as a TOML grid file (``None`` values are left out:
    they are the defaults)."""
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in d.items()
             if k not in ("datasets", "defenses") and v is not None]
    for section in ("datasets", "defenses"):
        for item in d.get(section, []):
            lines += ["", f"[[{section}]]"]
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in item.items() if v is not None]
    return "\n".join(lines) + "\n"


