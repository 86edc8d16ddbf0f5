"""The grid's refusals, word for word and in their order: every message of :func:`check_grid` and
:meth:`Grid.validate` on a set of broken grids (and the warnings a dry run without the data returns), pinned in
``tests/golden/grid_messages.json`` so that reshaping those checks changes none of what a user reads."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from mi_art.evaluations.grid import Grid, GridError, check_grid

from conftest import assert_matches_golden

#: A small valid grid; each case below changes it.
BASE: Dict[str, Any] = {"name": "pin", "datasets": ["digits"], "defenses": ["none"], "attacks": ["gmi"],
                        "variants": ["baseline"], "seeds": [0], "iterations": 2, "batch_size": 2,
                        "n_reconstructions": 2, "n_candidates": 4}

#: check_grid alone: the schema's refusals (each key, then several problems at once).
SCHEMA_CASES: Dict[str, Any] = {
    "not a mapping": ["digits"],
    "name with a path": {"name": "a/b"},
    "name empty": {"name": " "},
    "datasets a string": {"datasets": "digits"},
    "datasets empty": {"datasets": []},
    "defenses empty": {"defenses": []},
    "dataset item bad": {"datasets": [3]},
    "forms empty": {"forms": []},
    "attacks unknown": {"attacks": ["nope"]},
    "variants unknown": {"variants": ["nope"]},
    "seeds empty": {"seeds": []},
    "seeds a string": {"seeds": "0"},
    "seeds negative and repeated": {"seeds": [-1, 2, 2]},
    "seed_scope unknown": {"seed_scope": "some"},
    "artifact_seed negative": {"artifact_seed": -1},
    "device unknown": {"device": "gpu"},
    "budget out of range": {"iterations": -4},
    "unknown key": {"stepz": 3},
    "every kind at once": {"name": "", "datasets": [], "defenses": "none", "forms": [3], "attacks": ["x"],
                           "variants": "lom", "seeds": [1, 1], "seed_scope": 3, "artifact_seed": "a",
                           "device": "tpu", "iterations": 0, "unknown": 1},
}

#: Grid.validate on BASE with these keys changed (None: the key removed), without loading the data.
VALIDATE_CASES: Dict[str, Dict[str, Any]] = {
    "too many cells": {"seeds": list(range(20_000))},
    "too many reconstructions": {"n_reconstructions": 10 ** 9, "n_candidates": 10 ** 9},
    "a data set twice": {"datasets": ["digits", "digits"]},
    "one folder under two names": {"datasets": [{"name": "image-folder", "data_root": "/nonexistent/faces"},
                                                {"name": "image-folder", "data_root": "/nonexistent/faces",
                                                 "data_options": {"name": "other"}}]},
    "two folders under one name": {"datasets": [{"name": "image-folder", "data_root": "/nonexistent/a/faces"},
                                                {"name": "image-folder", "data_root": "/nonexistent/b/faces"}]},
    "a defense setting twice": {"defenses": [{"name": "mid", "params": [{"beta": 0.01}, {"beta": 0.01}]}]},
    "an attack's access": {"attacks": ["miface"], "access": "label-only"},
    "a form's relations": {"forms": [{"name": "few", "n_candidates": 1}]},
    "tl against the target's pre-training": {"defenses": [{"name": "tl", "params": [{"pretrain_epochs": 3}]}],
                                             "target_pretrain_epochs": 2},
    "a defense parameter out of range": {"defenses": [{"name": "mid", "params": [{"beta": -1.0}]}]},
    "digits with a data_root": {"datasets": [{"name": "digits", "data_root": "/nonexistent/digits"}]},
    "a data set without its folder": {"datasets": ["mnist"]},
    "celeba without its folder": {"datasets": ["celeba"]},
    "a data folder that does not exist": {"datasets": [{"name": "image-folder", "data_root": "/nonexistent/orl"}]},
    "a data path that is a file": {"datasets": [{"name": "mnist", "data_root": "/etc/passwd"}]},
    "two data problems": {"datasets": ["mnist", {"name": "image-folder", "data_root": "/nonexistent/lfw"}]},
    # two problems: the one checked first is named (size, data sets listed once, defenses, relations, data)
    "order: size before a repeated data set": {"seeds": list(range(20_000)), "datasets": ["digits", "digits"]},
    "order: a repeated data set before a repeated defense": {"datasets": ["digits", "digits"],
                                                             "defenses": ["mid", "mid"]},
    "order: a repeated defense before the relations": {"defenses": ["mid", "mid"],
                                                       "forms": [{"name": "few", "n_candidates": 1}]},
    "order: the relations before the folders": {"forms": [{"name": "few", "n_candidates": 1}], "datasets": ["mnist"]},
    "order: the folders before the reconstructions": {"datasets": ["mnist"], "n_reconstructions": 10 ** 9,
                                                      "n_candidates": 10 ** 9},
}

#: Grid.validate with the data loaded (digits ships with scikit-learn).
LOADED_CASES: Dict[str, Dict[str, Any]] = {
    "identities out of range": {"identities": [0, 99]},
    "a query budget above the public images": {"attacks": ["brepmi"], "max_queries": 1},
    "a defense the data cannot take": {"defenses": [{"name": "tl", "params": [{"freeze": 99}]}]},
    "too many reconstructions for the data": {"n_reconstructions": 10 ** 8, "n_candidates": 10 ** 8},
}


def _refusal(run) -> Dict[str, Any]:
    """What ``run`` gave: its warnings, or its GridError's message and listed problems (any other error by type)."""
    try:
        return {"warnings": run()}
    except GridError as err:
        return {"error": str(err), "problems": list(getattr(err, "problems", None) or [])}
    except Exception as err:  # noqa: BLE001 - pinned as it is: a grid check that lets another error out
        return {"other": type(err).__name__, "error": str(err)}


def _validated(changes: Dict[str, Any], *, check_data: bool, load_data: bool) -> Optional[List[str]]:
    grid = Grid.from_dict({k: v for k, v in {**BASE, **changes}.items() if v is not None})
    return grid.validate(check_data=check_data, load_data=load_data)


def _about_the_data(case: str) -> bool:
    """The cases a dry run without the data may answer otherwise (a warning instead of an error)."""
    return any(word in case for word in ("data", "folder", "file"))


def test_the_grid_refusals_are_pinned():
    got = {"check_grid": {name: _refusal(lambda d=d: check_grid(d)) for name, d in SCHEMA_CASES.items()},
           "check_grid where": _refusal(lambda: check_grid({"seeds": []}, "grid file g.toml")),
           "validate": {name: _refusal(lambda c=c: _validated(c, check_data=True, load_data=False))
                        for name, c in VALIDATE_CASES.items()},
           "validate without the data": {name: _refusal(lambda c=c: _validated(c, check_data=False, load_data=False))
                                         for name, c in VALIDATE_CASES.items() if _about_the_data(name)},
           "validate with the data": {name: _refusal(lambda c=c: _validated(c, check_data=True, load_data=True))
                                      for name, c in LOADED_CASES.items()}}
    assert_matches_golden(got, "grid_messages.json")
