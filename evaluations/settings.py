"""One declaration per setting: each :class:`~mi_art.evaluations.experiment_config.ExperimentConfig` field says, beside
itself, its default, its rule, its help and where a grid may set it (:func:`setting`). The tables the rest of the
package reads are derived from those declarations (:class:`Settings`): the config's and the grid files' checks
(:attr:`Settings.rules`), the commands' options (:mod:`mi_art.evaluations.config_options`), the grid's budget keys
and what a cell's id leaves out (:mod:`mi_art.evaluations.grid_schema`). Adding a setting is one line in the
dataclass, beside its use. A renamed setting declares its earlier name (``was``), and a setting whose values were
renamed the table of their earlier names (``values``, or its rule's): both still work wherever a setting is given
(:func:`accepts_earlier_names`, :meth:`Settings.resolved`), and a cell's id keeps the earlier names
(:meth:`Settings.id_form`), so that no id changes."""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

from mi_art.renames import Renames

__all__ = ["IN_ID", "Rule", "Setting", "Settings", "accepts_earlier_names", "setting"]

#: How a setting enters a grid cell's id: "always"; "when-set" (left out while it holds its default, so that
#: adding it kept the ids of existing grids' cells); "never" (it changes how, not what, is computed).
IN_ID = ("always", "when-set", "never")
_METADATA_KEY = "mi_art.setting"


@dataclass(frozen=True)
class Rule:
    """How a setting's value is checked, in Python and on the command line: ``check(name, value)`` raises a
    ValueError naming ``name``, the value and what is valid; ``cli`` is the click type the commands parse it
    with (``bool``: an on/off switch); ``renames``: the earlier names of the values it accepts (an architecture
    renamed), resolved before the check."""

    check: Callable[[str, Any], Any]
    cli: Any = None
    renames: Optional[Renames] = None

    def __call__(self, name: str, value: Any) -> Any:
        return self.check(name, value)


@dataclass(frozen=True)
class Setting:
    """What :func:`setting` declares about one config field (kept in the field's metadata)."""

    rule: Optional[Rule]
    help: Optional[str]
    checked_by: Optional[str]
    option: bool
    flag: Optional[str]
    switch: Optional[str]
    multiple: bool
    none_means: str
    budget: bool
    in_id: str
    was: Optional[str] = None
    values: Optional[Renames] = None


def setting(default: Any = dataclasses.MISSING, rule: Optional[Rule] = None, help: Optional[str] = None, *,
            default_factory: Any = dataclasses.MISSING, checked_by: Optional[str] = None, option: bool = True,
            flag: Optional[str] = None, switch: Optional[str] = None, multiple: bool = False, none_means: str = "none",
            budget: bool = True, in_id: str = "always", was: Optional[str] = None,
            values: Optional[Renames] = None) -> Any:
    """A config field with its declaration: a :func:`dataclasses.field` whose metadata holds a :class:`Setting`.

    :param rule: How its value is checked (:class:`Rule`); None when it is checked against the data or the machine
        instead, which ``checked_by`` must then name.
    :param help: What it means, as ``--help`` says it; a setting with a help text and ``option`` is an option of
        ``mi-art attack`` (the config's default) and ``mi-art evaluate`` (the grid's value) named ``--<field>``
        (``flag`` names it otherwise; ``switch`` is a boolean's off form; ``multiple``: repeatable, a tuple;
        ``none_means``: what a default of None means, for ``--help``).
    :param budget: A grid may set it, for every data set or per data set (the grid's other keys are its own:
        datasets, defenses, attacks, variants, seeds, device).
    :param in_id: How it enters a cell's id (:data:`IN_ID`).
    :param was: The setting's earlier name: still accepted by the config, the commands and grid files (reported as
        renamed), and the name a cell's id holds it under.
    :param values: The earlier names of its values (default: its rule's ``renames``), likewise.
    """
    if (rule is None) == (checked_by is None):
        raise ValueError("a setting has a rule, or names what checks it (checked_by), not both")
    if in_id not in IN_ID:
        raise ValueError(f"in_id must be one of {', '.join(IN_ID)}, got {in_id!r}")
    if rule is None and option and help is not None:
        raise ValueError("an option needs a rule: its click type is the rule's")
    meta = Setting(rule=rule, help=help, checked_by=checked_by, option=option and help is not None, flag=flag,
                   switch=switch, multiple=multiple, none_means=none_means, budget=budget, in_id=in_id, was=was,
                   values=values if values is not None else getattr(rule, "renames", None))
    return dataclasses.field(default=default, default_factory=default_factory, metadata={_METADATA_KEY: meta})


class Settings:
    """The declarations of a dataclass's fields (each made by :func:`setting`) and the tables derived from them,
    in the fields' order."""

    def __init__(self, cls: type) -> None:
        fields = dataclasses.fields(cls)
        missing = [f.name for f in fields if _METADATA_KEY not in f.metadata]
        if missing:
            raise TypeError(f"{cls.__name__} fields without a setting(...) declaration: {', '.join(missing)}")
        self.cls = cls
        self.declared: Dict[str, Setting] = {f.name: f.metadata[_METADATA_KEY] for f in fields}
        self.defaults: Dict[str, Any] = {f.name: f.default if f.default is not dataclasses.MISSING
                                         else f.default_factory() for f in fields}
        #: The settings' earlier names (earlier name -> field).
        self.renamed = Renames("setting", {s.was: k for k, s in self.declared.items() if s.was})

    @property
    def rules(self) -> Dict[str, Rule]:
        """field -> its rule, for the fields checked alone."""
        return {k: s.rule for k, s in self.declared.items() if s.rule is not None}

    @property
    def checked_elsewhere(self) -> Dict[str, str]:
        """field -> what checks it, for the fields checked against the data or the machine."""
        return {k: s.checked_by for k, s in self.declared.items() if s.checked_by is not None}

    @property
    def options(self) -> Tuple[str, ...]:
        """The fields the commands take as options, in ``--help``'s order."""
        return tuple(k for k, s in self.declared.items() if s.option)

    @property
    def budgets(self) -> Tuple[str, ...]:
        """The fields a grid may set globally or per data set."""
        return tuple(k for k, s in self.declared.items() if s.budget)

    @property
    def in_id_when_set(self) -> Dict[str, Any]:
        """field -> the default while which a cell's id leaves it out."""
        return {k: self.defaults[k] for k, s in self.declared.items() if s.in_id == "when-set"}

    @property
    def not_in_id(self) -> Tuple[str, ...]:
        """The fields a cell's id never holds."""
        return tuple(k for k, s in self.declared.items() if s.in_id == "never")

    def resolved(self, values: Dict[str, Any], where: str = "", *, quiet: bool = False) -> Dict[str, Any]:
        """``values`` (field -> value) with each value that has an earlier name under its name now, reported as
        renamed (a list or tuple item by item; not reported when ``quiet``: a stored record)."""
        out = dict(values)
        for k, v in values.items():
            s = self.declared.get(k)
            if s is not None and s.values is not None:
                out[k] = _each(v, lambda x: s.values.new(x, where, quiet=quiet))
        return out

    def id_form(self, values: Dict[str, Any]) -> Dict[str, Any]:
        """``values`` (field -> value) under the names cell ids were first made with: a renamed setting under its
        earlier name, a renamed value as it was spelled (:meth:`~mi_art.renames.Renames.old`), so that renaming
        changes no id."""
        out = {}
        for k, v in values.items():
            s = self.declared.get(k)
            if s is not None and s.values is not None:
                v = _each(v, s.values.old)
            out[s.was if s is not None and s.was else k] = v
        return out

    def describe(self) -> str:
        """Every field, its default and its help (else what checks it), as a reST list: the dataclass's
        docstring documents its fields from their declarations."""
        lines = []
        for k, s in self.declared.items():
            what = s.help or (f"Checked by {s.checked_by}." if s.checked_by else "")
            what += f" Its earlier name ``{s.was}`` still works." if s.was else ""
            lines.append(f"- ``{k}`` (default ``{self.defaults[k]!r}``){': ' + what if what else ''}")
        return "\n".join(lines)

    def with_rule(self, rule: Rule) -> Tuple[str, ...]:
        """The fields checked by ``rule``."""
        return tuple(k for k, s in self.declared.items() if s.rule is rule)


def _each(value: Any, rename: Callable[[Any], Any]) -> Any:
    """``rename`` of ``value``, or of each item of a list or tuple (of the same type)."""
    return type(value)(rename(x) for x in value) if isinstance(value, (list, tuple)) else rename(value)


def accepts_earlier_names(cls: type) -> type:
    """Class decorator (above ``@dataclass``): the dataclass also takes each field's earlier name (its
    declaration's ``was``) as a keyword and as an attribute to read, and the earlier names of its values (its
    declaration's ``values``) as keywords' values, each reported as renamed; an earlier name beside its new one with
    another value is refused, naming both."""
    settings = Settings(cls)
    renamed = settings.renamed
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **settings.resolved(renamed.keys(kwargs, cls.__name__), cls.__name__))

    cls.__init__ = __init__  # type: ignore[method-assign]
    for old, new in renamed.table.items():
        def read(self: Any, old: str = old, new: str = new) -> Any:
            renamed.report(old, cls.__name__)
            return getattr(self, new)

        setattr(cls, old, property(read, doc=f"The earlier name of :attr:`{new}` (reported as renamed)."))
    return cls
