"""Datasets by name: :func:`load_dataset`, and the options each one accepts (for the CLI and grids,
which check ``--data-option`` keys and values before any work starts)."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from . import celeba, digits, idx, image_folder
from .presets import IMAGE_FOLDER_PRESETS, preset_options
from .checks import PathLike
from .dataset import MIDataset

#: Names accepted by :func:`load_dataset` ("folder" is an alias of "image-folder").
DATASETS: Tuple[str, ...] = ("digits", "image-folder", "folder", "mnist", "fashion-mnist", "celeba")


@dataclass(frozen=True)
class _Source:
    loader: Callable[..., MIDataset]
    check: Callable[..., Any]  # the loader's option checks, without the data
    needs_root: bool = True
    fixed: Mapping[str, Any] = field(default_factory=dict)  # options the dataset name sets itself
    presets: Mapping[str, Any] = field(default_factory=dict)  # named sets of options (the "preset" option)


_SOURCES: Dict[str, _Source] = {
    "digits": _Source(digits.load_digits_data, digits.check_options, needs_root=False),
    "image-folder": _Source(image_folder.load_image_folder, image_folder.check_options, presets=IMAGE_FOLDER_PRESETS),
    "folder": _Source(image_folder.load_image_folder, image_folder.check_options, presets=IMAGE_FOLDER_PRESETS),
    "mnist": _Source(idx.load_mnist, idx.check_options, fixed={"fashion": False}),
    "fashion-mnist": _Source(idx.load_mnist, idx.check_options, fixed={"fashion": True}),
    "celeba": _Source(celeba.load_celeba, celeba.check_options),
}


def normalise_dataset_name(name: Any) -> Any:
    """A dataset name in the form of :data:`DATASETS`' keys, whether or not it is one: case and surrounding
    spaces dropped, "_" for "-" (``" Fashion_MNIST"`` -> ``"fashion-mnist"``). Anything but a string is returned as it
    is (the checks that follow name it). The one place a dataset name is normalised."""
    return name.strip().lower().replace("_", "-") if isinstance(name, str) else name


def canonical_name(name: Any) -> str:
    """The key of :data:`DATASETS` that ``name`` stands for (case-insensitive; "_" may stand for "-")."""
    if not isinstance(name, str):
        raise ValueError(f"name must be a dataset name (a string), one of {', '.join(DATASETS)}; got {name!r}")
    key = normalise_dataset_name(name)
    if key not in _SOURCES:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return key


#: Datasets read from a folder of the user's choosing: their results are named after the folder.
_FOLDER_DATASETS = ("image-folder", "folder")


def dataset_label(name: str, /, root: Optional[PathLike] = None, options: Optional[Mapping[str, Any]] = None) -> str:
    """The name a dataset's results go under, known without reading it: the loader's ``name`` option
    where it is given, else, for an image folder, the folder's own name (``att_faces``, ``lfw``), else the
    dataset's name. It is the :attr:`MIDataset.name` that :func:`load_dataset` returns, so two image
    folders in one grid are never reported as one "image-folder".

    >>> dataset_label("image-folder", "/data/att_faces"), dataset_label("folder", "/x", {"name": "orl"})
    ('att_faces', 'orl')
    >>> dataset_label("Digits")
    'digits'
    """
    key = canonical_name(name)
    given = (options or {}).get("name")
    if isinstance(given, str) and given:
        return given
    if key in _FOLDER_DATASETS and root is not None:
        return Path(root).expanduser().resolve().name or key
    return key


def _defaults(source: _Source) -> Dict[str, Any]:
    """Keyword-only parameters of the loader, with their defaults, less those the name fixes."""
    params = inspect.signature(source.loader).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY
            and p.name not in source.fixed}


def dataset_options(name: str, /) -> Tuple[str, ...]:
    """The option keys :func:`load_dataset` accepts for dataset ``name``, in the loader's order.

    >>> dataset_options("digits")
    ('image_size', 'channels', 'test_fraction', 'seed')

    A dataset with presets (the image folder: :mod:`mi_art.data.presets`) also takes ``preset``.

    Raises
    ------
    ValueError
        If ``name`` is not a dataset name.
    """
    source = _SOURCES[canonical_name(name)]
    return tuple(_defaults(source)) + (("preset",) if source.presets else ())


def expand_preset(name: str, /, options: Mapping[str, Any]) -> Dict[str, Any]:
    """``options`` with its ``preset`` (if any) replaced by the preset's options; those given beside it win.

    >>> expand_preset("image-folder", {"preset": "att", "image_size": 64})["image_size"]
    64

    Raises
    ------
    ValueError
        If ``preset`` is given for a dataset without presets, or names none of its presets.
    """
    key = canonical_name(name)
    options = dict(options)
    if "preset" not in options:
        return options
    preset = options.pop("preset")
    if not _SOURCES[key].presets:
        raise ValueError(f"dataset {key!r} has no presets; valid options: {', '.join(dataset_options(key))}")
    return {**preset_options(preset), **options}


def check_dataset_options(name: str, /, options: Mapping[str, Any]) -> None:
    """Check the keys and values of ``options`` for dataset ``name`` without reading any data.

    Every check that does not need the data runs: unknown keys (the message lists the valid ones),
    and the type and range of every value. What needs the data (a folder's existence, more identities
    than there are) is checked by :func:`load_dataset`.

    Raises
    ------
    ValueError
        Naming the first bad key or value, and what would be valid.
    """
    key = canonical_name(name)
    source = _SOURCES[key]
    if not isinstance(options, Mapping):
        raise ValueError(f"options must be a mapping of option names to values, got {type(options).__name__}")
    options = expand_preset(key, options)
    defaults = _defaults(source)
    for option in options:
        if option in source.fixed:
            raise ValueError(f"dataset {key!r} sets {option} itself; do not pass it "
                             f"(valid options: {', '.join(defaults)})")
        if option not in defaults:
            hint = "; give the data folder as root (--data-root), not as an option" if option == "root" else ""
            raise ValueError(f"unknown option {option!r} for dataset {key!r}; valid options: "
                             f"{', '.join(dataset_options(key))}"
                             f"{hint}")
    source.check(**{**defaults, **source.fixed, **options})


def load_dataset(name: str, /, root: Optional[PathLike] = None, **options: Any) -> MIDataset:
    """Load a dataset by name.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`: "digits", "image-folder" (alias "folder"), "mnist",
        "fashion-mnist", "celeba" (case-insensitive; "_" may stand for "-"). Positional only, so that
        the image folder's own ``name`` option can be passed.
    root : str or path, optional
        Data folder; required by every dataset but "digits", which takes none.
    **options
        Keyword arguments of the dataset's loader (:func:`~mi_art.data.load_digits_data`,
        :func:`~mi_art.data.load_image_folder`, :func:`~mi_art.data.load_mnist`,
        :func:`~mi_art.data.load_celeba`); :func:`dataset_options` lists them. ``preset="lfw"`` (or
        ``"att"``) gives an image folder the benchmark's options (:mod:`mi_art.data.presets`); options
        given beside it override the preset's.

    Returns
    -------
    MIDataset

    Raises
    ------
    ValueError
        If ``name`` is unknown, ``root`` is missing where required or given to "digits", an option
        is unknown (the message lists the valid ones) or has a bad value, or the loader fails.
    """
    key = canonical_name(name)
    source = _SOURCES[key]
    if not source.needs_root and root is not None:
        raise ValueError(f"dataset {key!r} ships with scikit-learn and takes no root, got root={root!r}")
    if source.needs_root and root is None:
        hint = ""
        if key == "fashion-mnist":
            hint = f" (Debian's dataset-fashion-mnist installs it in {idx.FASHION_MNIST_DEBIAN_ROOT})"
        raise ValueError(f"dataset {key!r} needs a data folder: root is required{hint}")
    check_dataset_options(key, options)
    arguments = {**source.fixed, **expand_preset(key, options)}
    return source.loader(root, **arguments) if source.needs_root else source.loader(**arguments)
