"""The face benchmarks the scripts share (so that they share cached artifacts too): AT&T for the quick look,
LFW for the harder benchmark where claims are made."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

# mi-art must be installed (pip install -e .): mi_art.evaluations lives in evaluations/ and is mapped
# into the package by the install, so the repository folder itself is not put on the path
from mi_art.data import preset_options
from mi_art.evaluations.config_options import option_flag
from mi_art.evaluations.experiment import SETTINGS, ExperimentConfig
from mi_art.renames import renames_reported_by

REPO = Path(__file__).resolve().parents[1]

SHARED = REPO.parent / "shared" / "data"
DEFAULT_ROOT = SHARED / "att_faces"
LFW_ROOT = SHARED / "lfw"


def att_faces_config(data_root: str, **overrides: Any) -> ExperimentConfig:
    """Private s1-s20 (8 train / 2 test images each), public s21-s40, 32x32 grayscale; a 3-block CNN
    target, a wider 4-block CNN judge, WGAN priors trained with flips, two surrogates (cnn-small and cnn) distilled on public images and GMI-prior samples."""
    settings: dict = dict(
        dataset="image-folder", data_root=data_root,
        data_options=preset_options("att"),  # installed with mi_art: --data-option preset=att
        target_arch="cnn", target_epochs=60, judge_arch="cnn-wide", judge_epochs=80, augment="flip-shift",
        batch_size=100, gan_augment="flip", surrogate_archs=("cnn-small", "cnn"), seed=0)
    settings.update(overrides)
    return ExperimentConfig(**settings)


def lfw_config(data_root: str, **overrides: Any) -> ExperimentConfig:
    """LFW (persons with at least 10 images), colour, centre 120 px crop resized to 32x32.

    Data: the ``"lfw"`` preset of the image-folder loader (:mod:`mi_art.data.presets`). Split, as the papers
    choose CelebA's private identities: the 50 persons with the most images are
    private (22 to 530 images each), capped at 30 images per person so that a few (George_W_Bush: 530)
    do not dominate training and test, then 80/20 train/test per person (24 / 6 images); the other 108
    persons (10 to 22 images each, 1,551 images) are public. Chance Acc@1 is 0.02.

    Models, chosen by ``benchmarks/pretraining.py --benchmark lfw`` (``benchmarks/results/pretraining.md``):
    target and judges are pre-trained on the public identities, then fine-tuned on the private ones.
    """
    settings: dict = dict(
        dataset="image-folder", data_root=data_root,
        data_options=preset_options("lfw"),  # installed with mi_art: --data-option preset=lfw
        target_arch="cnn", target_epochs=60, target_pretrain_epochs=60,
        judge_arch="resnet10", judge_epochs=60, judge_pretrain_epochs=60, augment="flip-shift",
        batch_size=100, gan_augment="flip", surrogate_archs=("cnn-small", "cnn"), seed=0)
    settings.update(overrides)
    return ExperimentConfig(**settings)


def lfw_deployed_config(data_root: str, **overrides: Any) -> ExperimentConfig:
    """LFW's split and crop (:func:`lfw_config`) against a target as deployed: dlib's pretrained face recogniser
    frozen, a linear head trained for the 50 private persons (``dlib-head``, :mod:`mi_art.deployed_faces`).

    The recogniser expects aligned chips: shifting the 32 px images before it upsamples them to 150 px moves the
    face off its alignment, and a head trained so reached 0.846 test accuracy where flips alone give 0.94-0.96 on
    the same descriptors (``benchmarks/results/face_recogniser.md``); the target and the judges train with flips
    only, the head 60 epochs (0.934 at 32 px; 30 epochs: 0.902). The judges are the LFW benchmark's own recipe
    (resnet10, pre-trained on the public persons)."""
    settings: dict = dict(target_arch="dlib-head", target_epochs=60, target_pretrain_epochs=0, augment="flip")
    settings.update(overrides)
    return lfw_config(data_root, **settings)


#: Each benchmark: its data folder and its configuration.
BENCHMARKS: Dict[str, Dict[str, Any]] = {
    "att": {"root": DEFAULT_ROOT, "config": att_faces_config, "title": "AT&T faces, grey, private s1-s20"},
    "lfw": {"root": LFW_ROOT, "config": lfw_config,
            "title": "LFW, colour, private: the 50 persons with the most images (30 at most each)"},
    "lfw-deployed": {"root": LFW_ROOT, "config": lfw_deployed_config,
                     "title": "LFW as for 'lfw', against dlib's pretrained recogniser with a trained head"},
}


def spaced_identities(count: int, num_classes: int) -> list:
    """``count`` of the ``num_classes`` identities, evenly spaced (the first included); ValueError naming
    ``--identities`` when ``count`` is not between 1 and ``num_classes``."""
    if not 1 <= count <= num_classes:
        raise ValueError(f"--identities={count}: give a count between 1 and the {num_classes} private identities")
    return sorted({int(i) for i in np.linspace(0, num_classes - 1, count).round()})


def add_threads_argument(parser: Any) -> None:
    """``--threads``: torch's CPU threads, as the library's commands take them (default: the library's
    policy, applied when mi_art is imported; see :mod:`mi_art.threads`). Apply it with ``set_threads``."""
    from mi_art.threads import check_threads

    parser.add_argument("--threads", type=lambda v: check_threads("--threads", v), default=None,
                        help="torch CPU threads: N, auto or torch (default: MI_ART_THREADS, else OMP_NUM_THREADS, "
                             "else auto: the usable CPUs other processes leave idle; benchmarks/results/threads.md)")


def add_run_arguments(parser: Any, results: str, device: str = "auto") -> None:
    """The options every resumable benchmark script takes: threads, device, artifact cache and its results
    file (``--out``, default ``mi_art_runs/<results>-<benchmark>.json``)."""
    add_threads_argument(parser)
    parser.add_argument("--device", default=device)
    parser.add_argument("--cache-dir", default=str(REPO / "mi_art_runs" / "cache"))
    parser.add_argument("--out", default=None, help=f"results JSON (default mi_art_runs/{results}-<benchmark>.json)")


def add_setting_argument(parser: Any, field: str, *, type: Callable[[str], Any], default: Any, help: str) -> None:
    """``--<field>`` (a config field's option, ``--judge-epochs``) and, hidden, the option of the field's earlier
    name when it was renamed (``--eval-epochs``), which :func:`parse_args` resolves."""
    parser.add_argument(option_flag(field), type=type, default=default, help=help)
    was = SETTINGS.declared[field].was
    if was:
        parser.add_argument(option_flag(was), type=type, default=None, help=argparse.SUPPRESS)


def add_gmi_steps_argument(parser: Any, default: Optional[int], help: str) -> None:
    """``--gmi-steps`` (the config's ``gmi_steps``: the GMI prior's generator steps) and, hidden, its earlier name
    ``--prior-steps``."""
    add_setting_argument(parser, "gmi_steps", type=int, default=default, help=help)


def parse_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, a renamed setting's earlier option (``--prior-steps``, ``--eval-epochs``) taken as
    its setting's and noted once on stderr (:data:`mi_art.evaluations.experiment_config.SETTINGS`' earlier names); given
    beside the option of the name now with another value, a usage error naming both."""
    args = parser.parse_args(argv)
    renamed = SETTINGS.renamed
    earlier = {old: getattr(args, old) for old in renamed.table if getattr(args, old, None) is not None}
    if not earlier:
        return args
    given = {new: getattr(args, new) for old, new in renamed.table.items()
             if old in earlier and getattr(args, new) != parser.get_default(new)}
    try:
        with renames_reported_by(lambda note: print(f"note: {note}", file=sys.stderr)):
            named = renamed.keys({**given, **earlier}, shown=option_flag)
    except ValueError as err:
        parser.error(str(err))
    for key, value in named.items():
        setattr(args, key, value)
    return args


def artifact_cache(cache_dir: str, *, locking: bool = True) -> Any:
    """The benchmarks' artifact cache, naming every artifact it trains with its budget on a line of its own
    before it starts and its time when it ends (a 1500-step prior runs for half an hour: the log says so).
    ``locking``: shared with other scripts running at the same time (each artifact trained once)."""
    from mi_art.evaluations.cache import ArtifactCache
    from mi_art.evaluations.executors import LockingArtifactCache
    from mi_art.evaluations.stages import StageLog

    cls = LockingArtifactCache if locking else ArtifactCache
    return cls(cache_dir, stages=StageLog(lambda line: print(line, flush=True)))


def results_path(args: Any, results: str, suffix: str = "") -> Path:
    """``--out``, or ``mi_art_runs/<results>-<benchmark><suffix>.json``."""
    return Path(args.out or REPO / "mi_art_runs" / f"{results}-{args.benchmark}{suffix}.json")


def benchmark_config(name: str, data_root: str = None, **overrides: Any) -> ExperimentConfig:
    """The configuration of benchmark ``name`` ("att" or "lfw") on ``data_root`` (default: ../shared/data)."""
    spec = BENCHMARKS[name]
    builder: Callable[..., ExperimentConfig] = spec["config"]
    return builder(str(data_root or spec["root"]), **overrides)
