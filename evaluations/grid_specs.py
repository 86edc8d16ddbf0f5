"""The parts of a defense grid (:mod:`mi_art.evaluations.grid`): its data set, defense and attack-form specs as
read from a checked grid dictionary, and its cells, each with its stable id and the labels its rows go under."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

from mi_art.attacks import ATTACK_SPECS

from .cache import config_key
from .experiment_config import SETTINGS, ExperimentConfig
from .grid_schema import (_DATASET_KEYS, _DEFENSE_KEYS, _IN_ID_WHEN_SET, _NOT_IN_ID, BUDGET_KEYS, GridError,
                          _as_list, _check_keys, _compact_identities, _identities)
from .grid_renames import renamed_dataset_keys

@dataclass
class DatasetSpec:
    name: str
    root: Optional[str] = None
    options: Dict[str, Any] = field(default_factory=dict)
    overrides: Dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The name this data set's rows, report section and plots go under (:func:`mi_art.data.dataset_label`:
        an image folder's own name, or the ``name`` in its ``data_options``)."""
        from mi_art.data import dataset_label

        return dataset_label(self.name, self.root, self.options)

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.name}
        if self.root is not None:
            out["data_root"] = self.root
        if self.options:
            out["data_options"] = dict(self.options)
        out.update(_written_budgets(self.overrides))
        return out


@dataclass
class DefenseSpec:
    name: str
    params: List[Dict[str, Any]] = field(default_factory=lambda: [{}])

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "params": [dict(p) for p in self.params]}


@dataclass
class FormSpec:
    """A named attack form: the settings (budget keys) its cells change, over the dataset's and the grid's, and the
    attacks, variants and seeds (some of the grid's) it runs when they are not the grid's (None: the grid's)."""

    name: str
    settings: Dict[str, Any] = field(default_factory=dict)
    attacks: Optional[List[str]] = None
    variants: Optional[List[str]] = None
    seeds: Optional[List[int]] = None

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.name}
        out.update({k: list(v) for k, v in (("attacks", self.attacks), ("variants", self.variants),
                                            ("seeds", self.seeds)) if v is not None})
        out.update(_written_budgets(self.settings))
        return out


@dataclass
class Cell:
    """One attack run of the grid; ``form`` is the name of its attack form (None: the grid's one default form)."""

    id: str
    config: ExperimentConfig
    defense_label: str
    index: int = 0
    form: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"id": self.id, "config": self.config.to_dict(), "defense_label": self.defense_label,
                "index": self.index, "form": self.form}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Cell":
        return cls(id=d["id"], config=config_from_dict(d["config"]), defense_label=d["defense_label"],
                   index=int(d.get("index", 0)), form=d.get("form"))

    @property
    def tag(self) -> str:
        """``"digits none gmi [label-only]/lomma seed 0"``: the cell in a line of progress or of an error (its form
        named as the report names it, :func:`~mi_art.evaluations.rows.form_attack`)."""
        c = self.config
        return (f"{self.dataset_label} {self.defense_label} {c.attack}{'' if self.form is None else f' [{self.form}]'}"
                f"/{c.variant} seed {c.attack_seed}")

    @property
    def dataset_label(self) -> str:
        """The name the cell's results go under: the image folder's (or the user's ``name``), else the dataset's
        (:func:`mi_art.data.dataset_label`)."""
        return config_dataset_label(self.config)

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


def config_dataset_label(config: ExperimentConfig) -> str:
    """:func:`mi_art.data.dataset_label` of a cell's configuration: what its row calls its data set."""
    from mi_art.data import dataset_label

    try:
        return dataset_label(config.dataset, config.data_root, config.data_options)
    except ValueError:  # an unknown dataset: Grid.validate names it
        return str(config.dataset)


def config_from_dict(d: Mapping[str, Any]) -> ExperimentConfig:
    d = dict(d)
    if d.get("surrogate_archs") is not None:
        d["surrogate_archs"] = tuple(d["surrogate_archs"])
    return ExperimentConfig(**d)


def cell_id(config: ExperimentConfig) -> str:
    """Stable hash of everything a cell computes from (``device`` and ``verbose`` excluded), with the
    defense's :meth:`~mi_art.defenses.Defense.defaults_key` where it has one (DP-SGD's default delta). Renamed
    settings and values are hashed under their earlier names (``prior_steps``, ``"nls"``, ``"efficientnet_b0"``:
    :meth:`~mi_art.evaluations.settings.Settings.id_form`), so that a rename changes no id."""
    from mi_art.defenses import get_defense

    d = SETTINGS.id_form({k: v for k, v in config.to_dict().items()
                          if k not in _NOT_IN_ID and not (k in _IN_ID_WHEN_SET and v == _IN_ID_WHEN_SET[k])})
    try:
        d.update(get_defense(config.defense).defaults_key(config.defense_params))
    except ValueError:  # an unknown defense: Grid.validate names it
        pass
    return config_key(d)


def _variants_of(attack: str, variants: Sequence[str]) -> Sequence[str]:
    """The grid's ``variants`` an attack runs: all of them, or "baseline" alone for an attack that takes none
    (its registry entry's ``variants``: MIFace, BREP-MI). An unknown attack is refused by the grid's checks."""
    spec = ATTACK_SPECS.get(attack)
    return ["baseline"] if spec is not None and not spec.variants else variants


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
# Parsing into specs
# --------------------------------------------------------------------------------------------------


def _read_budgets(table: Mapping[str, Any]) -> Dict[str, Any]:
    """The budget keys of a checked grid, dataset or form table, in its order (identities as a list)."""
    return {k: (_identities(v) if k == "identities" else v) for k, v in table.items() if k in BUDGET_KEYS}


def _written_budgets(budgets: Mapping[str, Any]) -> Dict[str, Any]:
    """Budgets as a grid file holds them (identities compacted, tuples as lists)."""
    return {k: (_compact_identities(v) if k == "identities" else list(v) if isinstance(v, tuple) else v)
            for k, v in budgets.items()}


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
                       overrides=_read_budgets(item))


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


def _parse_form(item: Any) -> FormSpec:
    """A form checked by :func:`check_grid`: a table (or a bare name) of its name and settings."""
    item = {"name": item} if isinstance(item, str) else item
    return FormSpec(name=str(item["name"]), settings=_read_budgets(item),
                    attacks=None if "attacks" not in item else [str(a) for a in item["attacks"]],
                    variants=None if "variants" not in item else [str(v) for v in item["variants"]],
                    seeds=None if "seeds" not in item else [int(s) for s in item["seeds"]])
