"""Grid files: :func:`load_grid_file` reads TOML, JSON or YAML (and checks it, :func:`check_grid`),
:func:`grid_to_toml` writes one, :func:`merge_grid` lays command-line overrides over a file's grid."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Dict, Mapping, Union

from .grid_renames import renamed_grid
from .grid_schema import CheckedGrid, GridError, check_grid

__all__ = ["grid_to_toml", "load_grid_file", "merge_grid", "read_grid_file"]


def load_grid_file(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a grid dictionary from TOML (``.toml``), JSON (``.json``) or YAML (``.yaml``/``.yml``, needs
    PyYAML), and check it (:func:`check_grid`; every problem is named with the file's path). It comes back marked as
    checked (:class:`~mi_art.evaluations.grid_schema.CheckedGrid`): ``Grid.from_dict`` does not check it again."""
    data = read_grid_file(path)
    check_grid(data, where=str(path))
    return CheckedGrid(data)


def read_grid_file(path: Union[str, Path]) -> Dict[str, Any]:
    """:func:`load_grid_file` without the check, for a grid that is checked once it is complete (the command line
    lays its options over the file's keys first). Earlier names are read under their names now, each reported
    (:func:`~mi_art.evaluations.grid_renames.renamed_grid`)."""
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
    return renamed_grid(data, str(path))


def merge_grid(base: Mapping[str, Any], override: Mapping[str, Any]) -> Dict[str, Any]:
    """``override``'s keys replace ``base``'s (lists are replaced, not appended)."""
    out = copy.deepcopy(dict(base))
    for k, v in override.items():
        out[k] = copy.deepcopy(v)
    return out


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
             if k not in ("datasets", "defenses", "forms") and v is not None]
    for section in ("datasets", "defenses", "forms"):
        for item in d.get(section, []):
            lines += ["", f"[[{section}]]"]
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in item.items() if v is not None]
    return "\n".join(lines) + "\n"
