"""The command line's options checked before any work: devices, data sets and their options, folders, lists of
integers, defenses (:mod:`mi_art.evaluations.cli`)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import click

THREADS_HELP = ("torch's CPU threads: a count, 'auto' (the CPUs this process may use that other processes leave "
                "idle when it starts, at least 1: torch's default of one per core is several times slower when "
                "another job holds a core; benchmarks/results/threads.md) or 'torch' (torch's default) "
                "[default: $MI_ART_THREADS, else $OMP_NUM_THREADS, else auto].")

ALLOW_LARGE_HELP = ("Run work the size guard refuses as too large to finish or fit in memory (a grid of more than "
                    "10,000 cells, a seed or identity range of more than a million values, reconstructions that "
                    "cannot fit in this machine's memory or need over 30 days of attack steps).")


class LiveChoice(click.Choice):
    """A choice among a registry's names (a live sequence such as :data:`mi_art.attacks.ATTACK_NAMES`), read at
    each use: an entry registered after this module is imported is offered too."""

    def __init__(self, names: Any) -> None:
        self._names = names
        super().__init__(tuple(names))

    @property  # type: ignore[override]
    def choices(self) -> Tuple[str, ...]:
        return tuple(self._names)

    @choices.setter
    def choices(self, value: Any) -> None:  # click.Choice sets it once: the live names stand instead
        pass


def _check_device_option(value: Optional[str], executor: str = "local") -> None:
    """``--device`` against what this machine has: a usage error for cuda without CUDA (checked in the
    command, not while parsing, so that a command written for a GPU machine still parses here). Ray
    runs on the cluster's machines: there only the form is checked."""
    from mi_art.validation import check_device

    from .grid_schema import check_device_form

    if value is None:
        return
    try:
        if executor == "ray":
            check_device_form("device", value)
        else:
            check_device("device", value)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="'--device'") from None


def _check_name_option(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[str]:
    if value is not None and (not value.strip() or any(c in value for c in "/\\") or value.strip() in (".", "..")):
        raise click.BadParameter(f"{value!r}: the grid name names the results folder; give a non-empty name "
                                 "without path separators", ctx=ctx, param=param)
    return value


def _parse_options(pairs: Tuple[str, ...], option: str = "--data-option") -> Dict[str, Any]:
    """``("KEY=VALUE", ...)`` -> a dict; values are JSON when they parse as JSON, else strings."""
    options: Dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=f"'{option}'")
        key, value = pair.split("=", 1)
        key = key.strip()
        if not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r} (the key is empty)", param_hint=f"'{option}'")
        if key in options:
            raise click.BadParameter(f"{key!r} is given twice; give each key once", param_hint=f"'{option}'")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _check_data_options(dataset: str, options: Dict[str, Any]) -> None:
    """Every ``--data-option`` key must be an argument of the dataset's loader (the valid keys are
    listed otherwise), and values that can be checked without the data must be valid."""
    from .grid_schema import data_option_keys, data_option_problems

    valid = data_option_keys(dataset)
    unknown = sorted(k for k in options if k not in valid)
    if unknown:
        raise click.BadParameter(f"unknown key(s) {', '.join(map(repr, unknown))} for dataset {dataset!r}; valid "
                                 f"keys: {', '.join(valid)}", param_hint="'--data-option'")
    problems = data_option_problems(dataset, options)
    if problems:
        raise click.BadParameter("; ".join(problems), param_hint="'--data-option'")


def _options_suffix(options: Dict[str, Any]) -> str:
    """What tells runs of one dataset apart in a default folder name: ``-32px``, ``-3ch`` and a short hash of
    any other loader options ("" without options), so that runs at other sizes do not overwrite each other."""
    from .cache import config_key

    parts = [f"{options['image_size']}px"] if "image_size" in options else []
    parts += [f"{options['channels']}ch"] if "channels" in options else []
    rest = {k: v for k, v in options.items() if k not in ("image_size", "channels")}
    parts += [config_key(rest)[:6]] if rest else []
    return "".join(f"-{p}" for p in parts)


def _check_out_dir(out: Path, option: str = "--out") -> None:
    """The output folder can be written, checked before any training: an existing file, or a folder that
    cannot be created or written to, is refused now, not after an hour of work. The folders made here are
    removed again when the command ends with them empty (a run that failed before writing anything)."""
    import tempfile

    if out.exists() and not out.is_dir():
        raise click.BadParameter(f"{out} is a file, not a folder: name a folder for the results",
                                 param_hint=f"'{option}'")
    made = [p for p in (out, *out.parents) if not p.exists()]
    click.get_current_context().call_on_close(lambda: _remove_empty(made))
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-check-"):
            pass
    except OSError as err:
        what = "results" if option == "--out" else "the artifact cache"
        raise click.BadParameter(f"cannot write {what} to {out}: {err.strerror or err}", param_hint=f"'{option}'") \
            from None


def _remove_empty(folders: list) -> None:
    """Remove each of ``folders`` (deepest first) that is empty: what a failed run made and left unused."""
    for folder in folders:
        try:
            folder.rmdir()  # only an empty folder goes
        except OSError:
            return


def _check_data_root(dataset: str, data_root: Optional[str]) -> None:
    """digits takes no ``--data-root``; every other dataset needs an existing folder."""
    if dataset == "digits":
        if data_root is not None:
            raise click.BadParameter(f"dataset 'digits' ships with scikit-learn and takes no data folder (got "
                                     f"{data_root!r}); leave --data-root out", param_hint="'--data-root'")
        return
    if data_root is None:
        raise click.UsageError(f"dataset {dataset!r} needs its data folder: pass --data-root")
    path = Path(data_root).expanduser()
    if not path.is_dir():
        raise click.BadParameter(f"data folder does not exist: {path}", param_hint="'--data-root'")


def _check_int_list(values: list, option: str) -> list:
    """A non-empty list of distinct values (``--identities``, ``--seeds``), checked in one pass."""
    from mi_art.validation import repeated as repeated_values

    if not values:
        raise click.BadParameter("no value given; give at least one, e.g. 0,1 or 0-4", param_hint=f"'{option}'")
    again = sorted(repeated_values(values))
    if again:
        raise click.BadParameter(f"{', '.join(map(str, again[:10]))}{', ...' if len(again) > 10 else ''} given "
                                 "twice; list each once", param_hint=f"'{option}'")
    return values


def _writable_problem(path: Path) -> Optional[str]:
    """Why ``path`` cannot be made and written as a folder, found without creating anything (a dry run writes
    nothing): it is a file, it lies under a file, or its nearest existing folder cannot be written to."""
    import os

    path = path.expanduser()
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        return (f"{path} is a file, not a folder" if existing == path else
                f"cannot make the folder {path}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot write to {existing}" + ("" if existing == path else f" (to make {path})")
    return None


def _parse_int_list(text: str, option: str, *, allow_large: bool = False) -> list:
    """``"0,1,2"`` or ``"0-4"`` (or a mix) -> a list of non-negative ints. The ranges are counted before they are
    made into a list: one too large to hold (``0-99999999``) is refused by the size guard, its size stated."""
    from .size_guard import SizeError, check_size, list_size_problem

    ranges = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                lo_i, hi_i = int(lo), int(hi)
                if lo_i > hi_i:
                    raise click.BadParameter(f"the range {part!r} is empty: write LOW-HIGH with LOW <= HIGH",
                                             param_hint=f"'{option}'")
                ranges.append(range(lo_i, hi_i + 1))
            else:
                ranges.append(range(int(part), int(part) + 1))
        except ValueError:
            raise click.BadParameter(f"expected integers like 0,1,2 or 0-4, got {text!r}",
                                     param_hint=f"'{option}'") from None
    negative = [r.start for r in ranges if r.start < 0]
    if negative:
        raise click.BadParameter(f"values must be >= 0, got {negative[0]} in {text!r}", param_hint=f"'{option}'")
    try:
        check_size(list_size_problem(option, text, sum(len(r) for r in ranges)), allow_large)
    except SizeError as err:
        raise click.BadParameter(str(err), param_hint=f"'{option}'") from None
    return [v for r in ranges for v in r]


def _parse_defense(spec: str) -> Tuple[str, Dict[str, Any]]:
    """``"mid:beta=0.01,bottleneck_dim=32"`` -> ``("mid", {"beta": 0.01, "bottleneck_dim": 32})``."""
    name, _, rest = spec.partition(":")
    tokens = [t for t in rest.split(",")] if rest.strip() else []
    pairs = []
    for token in tokens:  # a JSON list value ("layers=[a,b]") was split at its commas: glue it back
        if "=" in token or not pairs:
            pairs.append(token)
        else:
            pairs[-1] += "," + token
    try:
        params = _parse_options(tuple(p for p in pairs if p.strip()), "--defense")
    except click.BadParameter as err:
        raise click.BadParameter(f"{err.message} in {spec!r}; write NAME or NAME:KEY=VALUE[,KEY=VALUE...]",
                                 param_hint="'--defense'") from None
    from mi_art.defenses import check_defense_params, get_defense

    try:
        name = get_defense(name).name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_defense_params(name, params)  # types and ranges; a real run checks again with the data
    except ValueError as err:
        raise click.BadParameter(f"{err} (in {spec!r})", param_hint="'--defense'") from None
    return name, params
