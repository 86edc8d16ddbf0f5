"""What ``mi-art attack`` does once its options are read: their checks before any work, the run, its record and
figures, and its lines on the result (:mod:`mi_art.evaluations.cli`)."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import click

from .cli_options import (_check_data_options, _check_data_root, _check_device_option, _check_int_list,
                          _check_out_dir, _options_suffix, _parse_int_list, _parse_options, _writable_problem)


def _checked_attack_options(dataset: str, data_root: Optional[str], data_options: Tuple[str, ...], attack: str,
                            variant: str, identities: Optional[str], device: str, out_dir: Optional[str],
                            cache_dir: str, allow_large: bool) -> Tuple[Dict[str, Any], Optional[List[int]], Path]:
    """``mi-art attack``'s options checked before any work: the data set's options, the identities and the
    output folder (default: named after the run), the cache folder writable."""
    _check_device_option(device)
    options = _parse_options(data_options)
    _check_data_options(dataset, options)
    _check_data_root(dataset, data_root)
    ids = None if identities is None else _check_int_list(
        _parse_int_list(identities, "--identities", allow_large=allow_large), "--identities")
    out = Path(out_dir or f"mi_art_runs/{dataset}-{attack}-{variant}{_options_suffix(options)}")
    _check_out_dir(out)
    problem = _writable_problem(Path(cache_dir))  # made when the first artifact is stored: not made here
    if problem is not None:
        raise click.BadParameter(f"{problem}: the trained models could not be cached there", param_hint="'--cache-dir'")
    return options, ids, out


def _run_one_attack(config: Any, ids: Optional[List[int]], cache_dir: str, stages: Any,
                    allow_large: bool) -> Tuple[Any, Dict[str, Any]]:
    """The workbench (which checks the config against the data) and the attack's result, once the run's size is
    allowed; a refusal as a one-line error, Ctrl-C as what the cache keeps."""
    from .cache import ArtifactCache
    from .experiment import Workbench, run_attack
    from .size_guard import check_size, reconstruction_problem

    try:
        bench = Workbench(config, ArtifactCache(cache_dir, stages=stages))  # checks the config against the data
        check_size(reconstruction_problem(config.n_reconstructions, config.n_candidates,
                                          len(ids) if ids is not None else bench.data.num_classes,
                                          math.prod(bench.data.input_shape), config.iterations, config.batch_size),
                   allow_large)
        return bench, run_attack(bench)
    except ValueError as err:
        raise click.ClickException(" ".join(str(err).split())) from None
    except KeyboardInterrupt:
        click.echo(f"interrupted: what was trained is kept in the cache ({cache_dir}); the same command loads it "
                   "and goes on from the step that was running", err=True)
        click.get_current_context().exit(130)
        raise  # not reached: exit raises


def _write_run_record(out: Path, bench: Any, result: Dict[str, Any], config: Any, stages: Any, command_start: float,
                      *, title: str) -> Dict[str, Any]:
    """The run's figures and ``results.json`` (the result's own names, the config, the figures, the seconds of the
    command and of each stage); returns the record."""
    from mi_art.utils import write_atomic

    from .experiment import public_record
    from .plots import write_run_figures

    priv = bench.data.private_all()
    with stages.stage("rendering", f"the figures in {out}"):
        figures = write_run_figures(out, result, priv.x, priv.y, identity_names=bench.data.private_identities,
                                    title=title)
    record = public_record(result) | {"config": config.to_dict(), "figures": figures,
                                      "command_seconds": time.perf_counter() - command_start,
                                      "stage_seconds": dict(stages.seconds)}
    write_atomic(out / "results.json", json.dumps(record, indent=2, default=str))
    return record


def _attack_result_lines(run: str, judges: int, result: Dict[str, Any]) -> List[str]:
    """``mi-art attack``'s lines on the result of ``run`` (``"gmi/lomma on digits"``): the figures of its ``judges``,
    PRDC and exposure, and the independent judge's figures where it scored the run."""
    fid = result["fid_eval_features"]
    acc5 = "n/a" if result["acc@5"] is None else f"{result['acc@5']:.3f} (chance {result['chance@5']:.2f})"
    panel = "" if judges == 1 else (f" (mean of {judges} judges: "
                                    + " / ".join(f"{a:.3f}" for a in result["acc@1_judges"]) + ")")
    lines = [f"{run}: Acc@1 {result['acc@1']:.3f} +- "
             f"{result['acc@1_std']:.3f}{panel} "
             f"(chance {result['chance@1']:.2f}), Acc@5 {acc5}, KNN {result['knn_dist']:.3f}, "
             f"FID(eval features) {'n/a' if fid is None else f'{fid:.3f}'}, "
             f"target acc {result['target_test_accuracy']:.3f}, "
             f"judge acc {result['judge_test_accuracy']:.3f} (chance {result['chance@1']:.2f}), "
             f"{result['seconds_per_reconstruction']:.3f} s/reconstruction", _prdc_and_exposure_line(result)]
    if result.get("independent_acc@1") is not None:
        acc5, ratio = result["independent_acc@5"], result["independent_ratio"]
        lines.append(f"independent judge ({result['independent_judge']}"
                     + ("" if result["independent"] else ", NOT independent: it shares "
                        + ", ".join(result["independent_shares"]) + " with the target")
                     + f"): Acc@1 {result['independent_acc@1']:.3f} +- {result['independent_acc@1_se']:.3f}, "
                     f"Acc@5 {'n/a' if acc5 is None else f'{acc5:.3f}'}, distance to the nearest training image "
                     f"{result['independent_dist']:.3f}, ratio to the trained judges "
                     f"{'n/a' if ratio is None else f'{ratio:.2f}'}, its accuracy on real private test images "
                     f"{result['independent_test_accuracy']:.3f}")
    return lines


#: The declared metrics ``mi-art attack``'s lines write by hand (``queries`` only in its results.json); every other
#: one is written as "name value" by :func:`~mi_art.evaluations.metric_facts.figure_text`.
ON_THE_ATTACK_LINES = ("natural_accuracy", "acc@1", "acc@5", "knn_dist", "fid_eval_features", "precision", "recall",
                       "density", "coverage", "seconds", "queries", "judge_test_accuracy", "independent_acc@1",
                       "independent_acc@5", "independent_dist", "independent_test_accuracy", "independent_ratio")


def _prdc_and_exposure_line(result: Dict[str, Any]) -> str:
    """``mi-art attack``'s line on precision / recall / density / coverage and the identities that leak most and
    least (their reconstructions' Acc@1 and their number of private training images)."""
    from .leakage import rank_identities
    from .metric_facts import figure_text
    from .metrics import PRDC_METRICS

    prdc = ", ".join(f"{m} {'n/a' if result.get(m) is None else format(result[m], '.3f')}" for m in PRDC_METRICS)
    others = figure_text(result, ON_THE_ATTACK_LINES)  # metrics declared since these lines were written
    most, least = rank_identities(result.get("per_identity") or [], 3)

    def who(rows: List[Dict[str, Any]]) -> str:
        return "; ".join(f"{r.get('name', r['identity'])} {r['acc@1']:.2f} ({r.get('n_private_train', '?')} "
                         "training images)" for r in rows) or "-"

    return (f"{prdc} (k=5, the judges' features against the attacked identities' training images); "
            + (f"{others}; " if others else "") + f"most exposed identities (Acc@1): {who(most)}; least: {who(least)}")
