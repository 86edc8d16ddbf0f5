"""The command line's options for :class:`~mi_art.evaluations.experiment_config.ExperimentConfig`'s fields: one
table (:data:`FIELD_OPTIONS`, derived from the fields' declarations) from which ``mi-art attack`` (defaults: the
config's) and ``mi-art evaluate`` (default: the grid's value) generate theirs, so that a field declared with a help
text is an option of both, read with its rule's click type."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import click

from . import config_rules
from .experiment_config import SETTINGS, config_defaults
from .settings import Setting

__all__ = ["COUNT", "FIELD_OPTIONS", "FieldOption", "FiniteFloat", "PRETRAIN_EPOCHS", "SEED", "field_options",
           "option_flag"]

#: A count (epochs, steps, iterations, sizes, workers): an integer >= 1.
COUNT = config_rules.COUNT.cli
#: A seed: an integer >= 0.
SEED = config_rules.SEED.cli
#: Epochs of public pre-training: an integer >= 0 (0: train from scratch).
PRETRAIN_EPOCHS = config_rules.PRETRAIN_EPOCHS.cli


class Threads(click.ParamType):
    """torch's CPU threads: a positive count, ``auto`` or ``torch`` (:func:`mi_art.threads.check_threads`)."""

    name = "N|auto|torch"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        from mi_art.threads import check_threads

        try:
            return check_threads("threads", value)
        except ValueError as err:
            self.fail(str(err), param, ctx)


#: A ``--threads`` value.
THREADS = Threads()


class FiniteFloat(click.ParamType):
    """A finite float in ``[low, inf)`` (``(low, inf)`` when ``low_open``): click's ``FloatRange``
    lets "nan" and "inf" through."""

    name = "float"

    def __init__(self, low: float = 0.0, low_open: bool = False) -> None:
        self.low, self.low_open = low, low_open

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> float:
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if v < self.low or (self.low_open and v == self.low):
            self.fail(f"{value!r} must be {'>' if self.low_open else '>='} {self.low:g}", param, ctx)
        return v


#: ``FieldOption.attack_default`` when ``mi-art attack``'s default is the config's.
_CONFIG_DEFAULT = "config's default"


@dataclass(frozen=True)
class FieldOption:
    """How one config field appears on the command line.

    ``name``: the option when it is not ``--<field with dashes>``; ``switch``: the off form of a boolean
    (``--x/--<switch>``); ``multiple``: repeatable, collected into a tuple; ``commands``: the commands that
    offer it; ``attack_default``: ``mi-art attack``'s default when it is not the config's.
    """

    field: str
    type: Any
    help: str
    name: Optional[str] = None
    switch: Optional[str] = None
    multiple: bool = False
    commands: Tuple[str, ...] = ("attack", "evaluate")
    attack_default: Any = _CONFIG_DEFAULT
    #: What a default of None means, for ``--help``.
    none_means: str = "none"

    @property
    def flag(self) -> str:
        return self.name or option_flag(self.field)


def _field_option(field: str, declared: Setting) -> FieldOption:
    return FieldOption(field, declared.rule.cli, declared.help, name=declared.flag, switch=declared.switch,
                       multiple=declared.multiple, none_means=declared.none_means)


#: Every config field the commands take as an option, in the order ``--help`` lists them (the fields' order):
#: derived from the fields' declarations (:data:`~mi_art.evaluations.experiment_config.SETTINGS`).
FIELD_OPTIONS: Tuple[FieldOption, ...] = tuple(_field_option(k, SETTINGS.declared[k]) for k in SETTINGS.options)

_CONFIG_DEFAULTS = config_defaults()


def _shown(value: Any, none_means: str) -> str:
    if value is None:
        return none_means
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return ", ".join(map(str, value))
    return str(value)


def _decorator(spec: FieldOption, command: str) -> Callable:
    decls = [f"{spec.flag}/{spec.switch}" if spec.switch else spec.flag, spec.field]
    kwargs: dict = {"help": spec.help}
    if spec.type is not bool:
        kwargs["type"] = spec.type
    if spec.multiple:
        kwargs["multiple"] = True
    if command == "attack":
        default = _CONFIG_DEFAULTS[spec.field] if spec.attack_default is _CONFIG_DEFAULT else spec.attack_default
        kwargs.update(default=default, show_default=True if default is not None else spec.none_means)
    else:
        kwargs["default"] = () if spec.multiple else None
        fallback = _shown(_CONFIG_DEFAULTS[spec.field], spec.none_means)
        kwargs["help"] = f"{spec.help} [default: the grid's, else {fallback}]"
    return click.option(*decls, **kwargs)


def field_options(command: str) -> Callable:
    """Decorate a click command with every option of :data:`FIELD_OPTIONS` that ``command`` ("attack" or
    "evaluate") offers; each reaches the command as a keyword named after its config field."""
    if command not in ("attack", "evaluate"):
        raise ValueError(f"command must be 'attack' or 'evaluate', got {command!r}")

    def decorate(func: Callable) -> Callable:
        for spec in reversed(FIELD_OPTIONS):
            if command in spec.commands:
                func = _decorator(spec, command)(func)
        for old, spec in _earlier_options(command).items():  # hidden from --help; field_values resolves them
            func = click.option(option_flag(old), old, type=spec.type, default=None, hidden=True,
                                help=f"The earlier name of {spec.flag}.")(func)
        return func

    return decorate


def option_flag(field: str) -> str:
    """A config field's command-line option: ``gmi_steps`` -> ``--gmi-steps``."""
    return "--" + field.replace("_", "-")


def _earlier_options(command: str) -> Dict[str, FieldOption]:
    """A renamed setting's earlier name -> the option of the setting now, for the options ``command`` offers."""
    by_field = {spec.field: spec for spec in FIELD_OPTIONS if command in spec.commands and not spec.multiple}
    return {old: by_field[new] for old, new in SETTINGS.renamed.table.items() if new in by_field}


def field_values(command: str, values: dict) -> dict:
    """The config fields among a command's keyword arguments (those :func:`field_options` added). An option given
    under its earlier name (``--prior-steps``) is its setting's, reported as renamed; given beside the option of
    the name now with another value, it is a usage error naming both."""
    out = {spec.field: values[spec.field] for spec in FIELD_OPTIONS if command in spec.commands}
    earlier = {old: values[old] for old in _earlier_options(command) if values.get(old) is not None}
    if not earlier:
        return out
    ctx = click.get_current_context()
    given = {k: v for k, v in out.items()
             if ctx.get_parameter_source(k) not in (None, click.core.ParameterSource.DEFAULT)}
    try:
        named = SETTINGS.renamed.keys({**given, **earlier}, shown=option_flag, error=click.UsageError)
    except click.UsageError as err:
        raise click.UsageError(err.message, ctx) from None
    return {**out, **named}
