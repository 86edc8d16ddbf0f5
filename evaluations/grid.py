"""The defense-grid evaluation: which cells to run and how each one is configured.

A grid is datasets x defenses (each with one or more parameter settings, i.e. strengths) x attacks x
variants x seeds. It comes from a preset (:mod:`mi_art.evaluations.presets`), a TOML file (or YAML when
PyYAML is installed) and/or command-line options; all three share one dictionary format::

    name = "my-grid"
    attacks = ["gmi", "kedmi"]               # gmi, kedmi, vmi, plgmi, miface, brepmi (the last two:
                                             # baseline only)
    variants = ["baseline", "lomma"]         # baseline, lom, ma, lomma; each also "+align"
    seeds = [0, 1]
    seed_scope = "all"                       # "all": a seed retrains target, judges, priors and
                                             # surrogates and seeds the attack; "attack": artifacts
                                             # use artifact_seed, only the attack seed varies
    iterations = 200                         # any ExperimentConfig budget (BUDGET_KEYS: every field
    gmi_steps = 300                          # but the grid's own keys; each one's meaning is its
                                             # option's help, `mi-art evaluate --help`)
    target_pretrain_epochs = 20              # pre-train on the public identities first (0: from
    judge_pretrain_epochs = 20               # scratch), for the target, the judges
    surrogate_pretrain_epochs = 0            # and the surrogates (before distillation)
    judges = 3                               # evaluation models per cell: metrics are their mean

    [[datasets]]
    name = "digits"                          # mi_art.data.DATASETS
    # data_root = "../shared/data/att_faces"   # required by every dataset but digits
    # data_options = { private = 20, image_size = 32 }   # loader arguments (earlier files: root, options);
                                             # an image folder's rows, report section and plots go
                                             # under its folder's name, or { name = "orl" }
    # target_epochs = 30                     # budgets may be overridden per dataset

    [[defenses]]
    name = "none"

    [[defenses]]
    name = "mid"
    params = [{ beta = 0.003 }, { beta = 0.01 }]   # one cell group per strength

    [[forms]]                                # optional: named attack forms, each a cell group
    name = "paper"                           # the label of its rows, report columns and plots
    regularise_surrogates = false            # any budget key (BUDGET_KEYS), checked by its own rule
    [[forms]]
    name = "label-only"
    access = "label-only"
    attacks = ["gmi", "kedmi"]               # a form's own attacks and variants (default: the grid's)
    variants = ["lomma"]
    [[forms]]
    name = "deterministic"
    attacks = ["miface"]
    seeds = [0]                              # a form's own seeds, some of the grid's (default: all of them)

A grid is thus datasets x seeds x defense settings x forms x attack/variant pairs (each form's own, where it
names its attacks or variants; a form that names its seeds runs at those alone). Without ``forms`` it has one
unnamed default form (its cells, their ids and rows are those of a grid written before forms existed). A form's
settings override the dataset's, which override the grid's, which override the declared defaults. A sweep of any
setting is a list of forms, one per value (``[[forms]] name = "iterations=100" iterations = 100``, ...). A cell's
id is its configuration's, not its form's name: a form that changes nothing is the default form's cell (finished
cells are found again under the new name), and two forms that give one configuration are refused.

Every key is checked for type and range when a grid is loaded (:func:`check_grid`, called by
:func:`load_grid_file` and :meth:`Grid.from_dict`): a string where a list is expected, a width of -4,
a float where an integer is needed, an unknown key, an unknown loader option or defense parameter
all end in one :class:`GridError` that lists every problem, so ``mi-art evaluate --dry-run`` refuses a
grid that would fail later. :meth:`Grid.validate` adds what needs the data (identities, the query budget
against the public images) and the size guard (:mod:`mi_art.evaluations.size_guard`).

A cell is one ``ExperimentConfig``; its id is a stable hash of that configuration (``device`` and
``verbose`` excluded: they change how, not what, is computed).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from mi_art.attacks import get_attack
from mi_art.data import normalise_dataset_name
from mi_art.validation import repeated as repeated_values

from .config_rules import needs_gmi_prior
from .experiment_config import ExperimentConfig, config_defaults, query_budget_problem
from .grid_data import (_check_defense_params, _check_distinct_datasets, _data_path_problem, _load, data_memo_key,
                        load_data)
from .grid_files import grid_to_toml, load_grid_file, merge_grid
from .grid_renames import renamed_grid
from .grid_schema import (BUDGET_KEYS, ZERO_OK_KEYS, GridError, _as_list, check_device_form, check_grid,
                          data_option_keys)
from .grid_specs import (Cell, DatasetSpec, DefenseSpec, FormSpec, _fmt, _parse_dataset, _parse_defense, _parse_form,
                         _read_budgets, _variants_of, _written_budgets, cell_id, config_dataset_label,
                         config_from_dict, defense_label)
from .size_guard import SizeError, check_size, grid_size_problem, reconstruction_problem

# The grid's parts (grid_specs: specs, cells, ids, labels), its data (grid_data: load_data, ...), its checks and files
# (grid_schema: GridError, check_grid, ...; grid_files: load_grid_file, grid_to_toml, merge_grid) are importable from
# here too; __all__ lists what the grid's API documentation shows.
__all__ = ["Cell", "DatasetSpec", "DefenseSpec", "FormSpec", "Grid", "cell_id", "config_dataset_label", "defense_label",
           "load_data"]

# --------------------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------------------


@dataclass
class Grid:
    """Datasets x seeds x defenses (x strengths) x forms x attacks x variants, with shared budgets; no ``forms``:
    one unnamed default form."""

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
    forms: List[FormSpec] = field(default_factory=list)
    #: What :meth:`to_dict` gave when :func:`check_grid` last passed the grid's values (None: not yet).
    _checked_as: Optional[Dict[str, Any]] = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "the grid") -> "Grid":
        """Parse a grid dictionary (see the module docstring). Every key's type and range is checked
        first (:func:`check_grid`: one :class:`GridError` lists every problem, each after ``where``; a dictionary
        :func:`load_grid_file` checked is not checked again); call :meth:`validate` for what needs more (defense
        parameters against the data, data folders, model shapes)."""
        d = renamed_grid(d, where)
        check_grid(d, where)
        datasets = [_parse_dataset(x) for x in _as_list(d.get("datasets", ["digits"]), "datasets")]
        defenses = [_parse_defense(x) for x in _as_list(d.get("defenses", ["none"]), "defenses")]
        seeds = _as_list(d.get("seeds", [0]), "seeds")
        grid = cls(datasets=datasets, defenses=defenses,
                   attacks=[str(a) for a in _as_list(d.get("attacks", [ExperimentConfig.attack]), "attacks")],
                   variants=[str(v) for v in _as_list(d.get("variants", ["baseline", "lomma"]), "variants")],
                   seeds=seeds, budgets=_read_budgets({k: d[k] for k in BUDGET_KEYS if k in d}),
                   seed_scope=str(d.get("seed_scope", "all")), artifact_seed=d.get("artifact_seed", 0),
                   name=str(d.get("name", "grid")), device=d.get("device"),
                   forms=[_parse_form(x) for x in _as_list(d.get("forms"), "forms")])
        grid._checked_as = grid.to_dict()
        return grid

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.name, "attacks": list(self.attacks), "variants": list(self.variants),
                               "seeds": list(self.seeds), "seed_scope": self.seed_scope}
        if self.seed_scope == "attack":
            out["artifact_seed"] = self.artifact_seed
        if self.device is not None:
            out["device"] = self.device
        out.update(_written_budgets(self.budgets))
        out["datasets"] = [s.to_dict() for s in self.datasets]
        out["defenses"] = [s.to_dict() for s in self.defenses]
        if self.forms:
            out["forms"] = [f.to_dict() for f in self.forms]
        return out

    # ---------------------------------------------------------------- validation

    def pairs(self, form: Optional[FormSpec] = None) -> List[Tuple[str, str]]:
        """The (attack, variant) pairs of each cell group (of ``form``'s, where it names its own attacks or
        variants): MIFace and BREP-MI run their baseline only."""
        return [(a, v) for a in self._attacks(form) for v in _variants_of(a, self._variants(form))]

    def _attacks(self, form: Optional[FormSpec]) -> List[str]:
        return self.attacks if form is None or form.attacks is None else form.attacks

    def _variants(self, form: Optional[FormSpec]) -> List[str]:
        return self.variants if form is None or form.variants is None else form.variants

    def _seeds(self, form: Optional[FormSpec]) -> List[int]:
        """The seeds ``form``'s cells run at: its own (some of the grid's), else the grid's."""
        return self.seeds if form is None or form.seeds is None else [s for s in self.seeds if s in form.seeds]

    def form_list(self) -> List[Optional[FormSpec]]:
        """The grid's forms; ``[None]``, the one unnamed default form, when it names none."""
        return list(self.forms) or [None]

    def n_cells(self) -> int:
        """The number of cells, counted without making them."""
        return (len(self.datasets) * sum(len(s.params) for s in self.defenses)
                * sum(len(self._seeds(f)) * len(self.pairs(f)) for f in self.form_list()))

    def _shape(self) -> str:
        pairs = (f"{len(self.forms)} form(s) with {sum(len(self.pairs(f)) for f in self.forms)} attack/variant "
                 "pair(s) in all" if self.forms else f"{len(self.pairs())} attack/variant pair(s)")
        return (f"{len(self.datasets)} dataset(s) x {sum(len(s.params) for s in self.defenses)} defense setting(s) x "
                f"{len(self.seeds):,} seed(s) x {pairs}")

    def validate(self, *, check_data: bool = True, load_data: bool = True, allow_large: bool = False) -> List[str]:
        """Check everything that can be checked before any training: names of datasets, defenses,
        attacks and variants; seeds; budgets (each value by its rule, once: :func:`check_grid`, unless
        :meth:`from_dict` did and nothing changed since); the rules between a cell's fields
        (``ExperimentConfig.check_relations``); defense parameters (``mi_art.defenses.api``); data folders; and, when
        ``load_data``, the loader options, the architectures and the shapes the models need (the datasets are loaded,
        nothing is trained).

        :param check_data: A missing or unreadable data folder is an error; when False it is returned as
            a warning instead (``--dry-run`` on a machine without the data).
        :param allow_large: Let through a grid or a reconstruction count too large to finish or fit in memory
            (:mod:`mi_art.evaluations.size_guard`), which is otherwise refused, its size stated.
        :return: Warnings (problems tolerated because ``check_data`` is False).
        :raises GridError: The first problem found, named.
        """
        self._check_values_once()
        self._check_grid_size(allow_large)
        _check_distinct_datasets(self.datasets)
        self._check_defense_names()
        self._check_cell_relations()
        return self._check_datasets(check_data=check_data, load_data=load_data, allow_large=allow_large)

    def _check_values_once(self) -> None:
        """Each value by its rule (:func:`check_grid`), unless :meth:`from_dict` did and nothing changed since."""
        if self._checked_as is None or self.to_dict() != self._checked_as:  # made or changed since from_dict
            check_grid(self.to_dict())
            self._checked_as = self.to_dict()

    def _check_grid_size(self, allow_large: bool) -> None:
        """The number of cells against the size guard."""
        try:
            check_size(grid_size_problem(self.n_cells(), self._shape()), allow_large)
        except SizeError as err:
            raise GridError(str(err)) from None

    def _check_defense_names(self) -> None:
        """Each defense known and written as its registry writes it; each defense setting listed once."""
        from mi_art.defenses import DEFENSES, defense_defaults

        for spec in self.defenses:
            try:
                defense_defaults(spec.name)
            except ValueError as err:
                raise GridError(str(err)) from None
            if spec.name != spec.name.strip().lower() or spec.name not in DEFENSES:
                raise GridError(f"write the defense name {spec.name!r} as one of {', '.join(DEFENSES)}")
        labels = [defense_label(s.name, p) for s in self.defenses for p in s.params]
        dup = sorted(repeated_values(labels))
        if dup:
            raise GridError(f"the grid lists the same defense setting twice: {', '.join(dup)}")

    def _check_cell_relations(self) -> None:
        """The rules between fields (``ExperimentConfig.check_relations``), through the configuration of a
        representative cell per dataset and form: each attack/variant pair undefended, then each defense setting
        with the default attack (the pre-training's interplay with TL-DMI's)."""
        for d in self.datasets:
            for form in self.form_list():
                for attack, variant in self.pairs(form):
                    try:
                        self._config(d, "none", {}, attack, variant, self.seeds[0], form).check_relations()
                    except (ValueError, TypeError) as err:
                        raise GridError(f"dataset {d.name!r}{_in_form(form)}: {err}") from None
                for spec in self.defenses:
                    for params in spec.params:
                        try:
                            self._config(d, spec.name, params, ExperimentConfig.attack, "baseline",
                                         self.seeds[0], form).check_relations()
                        except (ValueError, TypeError) as err:
                            raise GridError(f"dataset {d.name!r}{_in_form(form)}, defense "
                                            f"{defense_label(spec.name, params)}: {err}") from None

    def _check_datasets(self, *, check_data: bool, load_data: bool, allow_large: bool) -> List[str]:
        """Per dataset: its folder (an error, or a warning returned when not ``check_data``), its data loaded when
        ``load_data``, then its reconstructions' size, its shapes and the defense parameters against it."""
        warnings_out: List[str] = []
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
            for form in self.form_list():
                self._check_reconstructions(d, data, allow_large, form)
                if data is not None:
                    self._check_shapes(d, data, form)
            for arch in dict.fromkeys(self._budget(d, "target_arch", f) for f in self.form_list()):
                for spec in self.defenses:
                    for params in spec.params:
                        _check_defense_params(spec.name, params, n_train, data, arch)
        return warnings_out

    def _check_reconstructions(self, d: DatasetSpec, data: Any, allow_large: bool,
                               form: Optional[FormSpec] = None) -> None:
        """The reconstructions (or candidates) of a cell fit in memory and finish: with the data, at its size and
        number of identities; without it, at the least they can be (one identity, or those listed, of 1x8x8)."""
        ids = self._budget(d, "identities", form)
        if data is not None:
            n_ids, floats = (len(ids) if ids is not None else data.num_classes), int(np.prod(data.input_shape))
        else:
            size = d.options.get("image_size") if isinstance(d.options.get("image_size"), int) else 8
            n_ids, floats = (len(ids) if ids is not None else 1), size * size
        try:
            b = {k: self._budget(d, k, form) for k in ("n_reconstructions", "n_candidates", "iterations", "batch_size")}
            check_size(reconstruction_problem(b["n_reconstructions"], b["n_candidates"], n_ids, floats, b["iterations"],
                                              b["batch_size"], where=f"dataset {d.label!r}{_in_form(form)}: "),
                       allow_large)
        except SizeError as err:
            raise GridError(str(err)) from None

    def _check_shapes(self, d: DatasetSpec, data: Any, form: Optional[FormSpec] = None) -> None:
        from mi_art.models import make_classifier
        from mi_art.priors import Generator

        c, s, _ = data.input_shape
        pretrain = [k for k in ZERO_OK_KEYS if self._budget(d, k, form)]
        if pretrain:
            from mi_art.pretraining import MIN_PUBLIC_CLASSES

            if data.num_public_classes < MIN_PUBLIC_CLASSES:
                raise GridError(f"dataset {d.name!r} has {data.num_public_classes} public identities: "
                                f"{' and '.join(pretrain)} need at least {MIN_PUBLIC_CLASSES} to pre-train on; "
                                "set them to 0")
        identities = self._budget(d, "identities", form)
        if identities is not None:
            bad = [i for i in identities if not isinstance(i, int) or not 0 <= i < data.num_classes]
            if bad:
                raise GridError(f"dataset {d.name!r} has {data.num_classes} private identities (0-"
                                f"{data.num_classes - 1}); identities out of range: {bad[:10]}")
        for attack, variant in self.pairs(form):  # the query budget against the public images it is spent on
            problem = query_budget_problem(self._config(d, "none", {}, attack, variant, self.seeds[0], form),
                                           len(data.public.x))
            if problem is not None:
                raise GridError(f"dataset {d.label!r}{_in_form(form)}, {attack}/{variant}: {problem}")
        try:
            for arch in (self._budget(d, "judge_arch", form), *self._budget(d, "surrogate_archs", form)):
                make_classifier(arch, c, data.num_classes, s)
            if any(get_attack(a).prior is not None for a in self._attacks(form)):
                Generator(s, c, width=self._budget(d, "gan_width", form))
        except ValueError as err:
            raise GridError(f"dataset {d.name!r} ({c}x{s}x{s}): {err}") from None

    # ---------------------------------------------------------------- cells

    def _budget(self, d: DatasetSpec, key: str, form: Optional[FormSpec] = None) -> Any:
        """``key``'s value for the cells of ``d`` in ``form``: the form's, else the dataset's, else the grid's, else
        the declared default."""
        if form is not None and key in form.settings:
            return form.settings[key]
        if key in d.overrides:
            return d.overrides[key]
        if key in self.budgets:
            return self.budgets[key]
        return config_defaults()[key]  # the declared default: gan_augment "auto" is resolved per dataset

    def _config(self, d: DatasetSpec, defense: str, params: Dict[str, Any], attack: str, variant: str,
                seed: int, form: Optional[FormSpec] = None) -> ExperimentConfig:
        budgets = {k: self._budget(d, k, form) for k in BUDGET_KEYS}
        if isinstance(budgets["surrogate_archs"], (list, tuple)):
            budgets["surrogate_archs"] = tuple(budgets["surrogate_archs"])
        elif isinstance(budgets["surrogate_archs"], str):
            budgets["surrogate_archs"] = (budgets["surrogate_archs"],)
        if budgets["identities"] is not None:
            budgets["identities"] = list(budgets["identities"])
        root = str(Path(d.root).expanduser().resolve()) if d.root else None
        artifact_seed = seed if self.seed_scope == "all" else self.artifact_seed
        return ExperimentConfig(dataset=normalise_dataset_name(d.name), defense=defense,
                                defense_params=dict(params), data_root=root, data_options=dict(d.options),
                                attack=attack, variant=variant, seed=artifact_seed, attack_seed=seed,
                                device=self.device, **budgets)

    def cells(self) -> List[Cell]:
        """Every cell, in a fixed order: dataset, seed, defense, strength, form, attack, variant. MIFace runs
        its baseline only (once, whatever ``variants`` holds)."""
        out: List[Cell] = []
        for d in self.datasets:
            for seed in self.seeds:
                for spec in self.defenses:
                    for params in spec.params:
                        for form in (f for f in self.form_list() if seed in self._seeds(f)):
                            for attack, variant in self.pairs(form):
                                config = self._config(d, spec.name, params, attack, variant, seed, form)
                                out.append(Cell(cell_id(config), config, defense_label(spec.name, params), len(out),
                                                None if form is None else form.name))
        ids: Dict[str, Cell] = {}
        for cell in out:  # a set: linear in the cells
            if cell.id in ids:
                a, b = ids[cell.id], cell
                if a.form != b.form:
                    raise GridError(f"forms {a.form!r} and {b.form!r} give the same configuration (cells {a.index} "
                                    f"and {b.index}, {a.tag}): a form must change a setting of the grid; drop one "
                                    "or change what it sets")
                raise GridError(f"cells {a.index} and {b.index} ({a.tag}) are the same work: the grid lists a "
                                "data set, defense setting or seed twice")
            ids[cell.id] = cell
        return out

    def summary(self) -> str:
        """A human-readable plan of the grid."""
        cells = self.cells()
        n_strengths = sum(len(s.params) for s in self.defenses)
        forms = f" x {len(self.forms)} form(s)" if self.forms else ""
        lines = [f"grid {self.name!r}: {len(cells)} cells = {len(self.datasets)} dataset(s) x {n_strengths} "
                 f"defense setting(s) x {len(self.seeds)} seed(s){forms} x attack/variant pairs "
                 f"{sorted({(c.config.attack, c.config.variant) for c in cells})}"]
        for d in self.datasets:
            lines.append(f"  dataset {d.label} ({d.name}): data_root={d.root or '-'} "
                         f"data_options={json.dumps(d.options, sort_keys=True)}"
                         + (f" overrides={json.dumps(d.overrides, sort_keys=True)}" if d.overrides else ""))
        for s in self.defenses:
            for p in s.params:
                lines.append(f"  defense {defense_label(s.name, p)}")
        for f in self.forms:
            lines.append(f"  form {f.name!r}: " + (", ".join(f"{k}={_fmt(v)}" for k, v in f.to_dict().items()
                                                          if k != "name") or "the grid's settings"))
        lines.append(f"  attacks {self.attacks}, variants {self.variants}, seeds {self.seeds} "
                     f"(seed scope {self.seed_scope})")
        budgets = {k: self._budget(self.datasets[0], k) for k in BUDGET_KEYS}
        ids = budgets.pop("identities")
        lines.append("  budgets " + ", ".join(f"{k}={_fmt(list(v) if isinstance(v, tuple) else v)}"
                                              for k, v in budgets.items())
                     + (", identities=all" if ids is None else f", identities={len(ids)} ({_preview_ids(ids)})"))
        targets = {c.target_group for c in cells}
        priors = {(c.config.dataset, c.config.data_root, json.dumps(c.config.data_options, sort_keys=True),
                   c.config.seed) for c in cells if needs_gmi_prior(c.config)}
        lines.append(f"  shared work: {len(targets)} target(s) (each with its KEDMI GAN, surrogates, p_reg as "
                     f"needed), {len(priors)} GMI prior(s) (GMI's, and the start of KEDMI's and PLG-MI's GANs and "
                     "of the surrogates' prior samples), one panel of judges per dataset and seed")
        return "\n".join(lines)


def _in_form(form: Optional[FormSpec]) -> str:
    """``", form 'paper'"`` for a named form's error messages; nothing for the default form."""
    return "" if form is None else f", form {form.name!r}"


def _preview_ids(ids: Sequence[int]) -> str:
    ids = list(ids)
    if ids and ids == list(range(ids[0], ids[0] + len(ids))):
        return f"{ids[0]}-{ids[-1]}"
    return ", ".join(map(str, ids[:8])) + (", ..." if len(ids) > 8 else "")
