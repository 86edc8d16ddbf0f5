"""A grid's data sets: their folders checked, each loaded once per process (:func:`load_data`, shared by the cells
of one data set), listed once under a name of their own, and each defense setting checked against them."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

from mi_art.data import normalise_dataset_name

from .grid_schema import GridError
from .grid_specs import DatasetSpec, defense_label

def _check_distinct_datasets(datasets: Sequence[DatasetSpec]) -> None:
    """Each data set of a grid once, under a name of its own: rows, report sections and plots find a data set by
    its name (:attr:`DatasetSpec.label`), so two data sets under one name would be averaged as if they were
    seeds of one, and one data set under two names would be computed twice."""
    by_label: Dict[str, int] = {}
    by_data: Dict[str, int] = {}
    for i, d in enumerate(datasets):
        label = d.label
        kind = normalise_dataset_name(d.name)
        data = data_memo_key("image-folder" if kind == "folder" else kind, d.root,  # "folder": the same loader
                             {k: v for k, v in d.options.items() if k != "name"})
        if data in by_data:
            j = by_data[data]
            same = "the same data set" if datasets[j].label == label else \
                f"the same data under two names ({datasets[j].label!r} and {label!r})"
            raise GridError(f"datasets[{j}] and datasets[{i}] are {same} ({d.name}, data_root={d.root!r}, "
                            f"data_options={json.dumps(d.options, sort_keys=True)}): list it once")
        if label in by_label:
            j = by_label[label]
            fix = ("give each folder a name of its own, e.g. data_options = { name = \"" + label + "-2\" }"
                   if kind in ("image-folder", "folder") else
                   "only image folders take a name (data_options name); evaluate the other in a grid of its own")
            raise GridError(f"datasets[{j}] and datasets[{i}] are different data sets that would both be reported as "
                            f"{label!r} (their rows, report section and plots would be merged): {fix}")
        by_label[label], by_data[data] = i, i


def _data_path_problem(d: DatasetSpec) -> Optional[str]:
    key = normalise_dataset_name(d.name)
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
    return json.dumps([normalise_dataset_name(name), str(Path(root).expanduser().resolve()) if root else None,
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
