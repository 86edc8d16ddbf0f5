"""The ``mi-art`` command line."""
from __future__ import annotations

import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import click

from mi_art.attacks import get_attack
from mi_art.data import DATASETS, normalise_dataset_name

from .config_options import COUNT, SEED, THREADS, FiniteFloat, field_options, field_values
from .config_rules import ATTACKS, MIRROR_SAFE_DATASETS, VARIANTS, gan_augment_for  # noqa: F401 - importable here
from .cli_attack import (ON_THE_ATTACK_LINES, _attack_result_lines, _checked_attack_options,  # noqa: F401
                         _prdc_and_exposure_line, _run_one_attack, _write_run_record)
from .cli_options import (ALLOW_LARGE_HELP, THREADS_HELP, LiveChoice, _check_data_options, _check_data_root,  # noqa
                          _check_device_option, _check_int_list, _check_name_option, _check_out_dir, _options_suffix,
                          _parse_defense, _parse_int_list, _parse_options, _writable_problem)
from .experiment import SETTINGS

#: Where a command that knows its output folder records it (``ctx.meta``), so that an unexpected
#: error's log lands beside the run's results.
_LOG_DIR = "mi_art.log_dir"

def _internal_error_log(ctx: click.Context, err: BaseException) -> Path:
    """Write the traceback of an unexpected error beside the run's results (or to a temp file)."""
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = ctx.meta.get(_LOG_DIR)
    if folder is not None:
        try:
            path = Path(folder) / f"mi-art-error-{stamp}.log"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            return path
        except OSError:
            pass
    fd, name = tempfile.mkstemp(prefix=f"mi-art-error-{stamp}-", suffix=".log")
    with open(fd, "w") as f:
        f.write(text)
    return Path(name)


class _Main(click.Group):
    """The ``mi-art`` group: no traceback ever reaches the user. An unexpected exception becomes one
    line, ``Error: ...``, naming the log file that holds the full traceback, and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        from mi_art.renames import renames_reported_by

        try:
            # an earlier name (an option, a grid file's key, an architecture or defense) is one line, said once
            with renames_reported_by(lambda note: click.echo(f"note: {note}", err=True)):
                return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort,
                KeyboardInterrupt, EOFError, BrokenPipeError):
            raise  # click reports these itself (a closed pipe, e.g. `| head`, ends quietly)
        except Exception as err:  # noqa: BLE001 - the one place every other error is reported
            from mi_art.utils import find_disk_full

            full = find_disk_full(err)
            if full is not None:  # not a bug, and the log would not fit either
                raise click.ClickException(str(full)) from None
            log = _internal_error_log(ctx, err)
            text = " ".join(str(err).split())
            engine = _engine_of(err)
            if engine is not None:
                name, advice = engine
                what = f"{name} failed ({type(err).__name__}" + (f": {text}" if text else "") + \
                    f"); the error is {name}'s, not mi-art's: {advice}"
            elif isinstance(err, ValueError) and text:
                what = text
            else:
                what = f"unexpected {type(err).__name__}" + (f": {text}" if text else "") + " (a bug: please report it)"
            raise click.ClickException(f"{what}; full traceback in {log}") from None


#: Third-party engines whose errors are theirs, with what the user can do.
_ENGINES = {
    "ray": ("Ray", "check that Ray can start on this machine ('ray status', or --address of a running cluster), "
                   "or run without it: --executor local or --executor process"),
}


def _engine_of(err: BaseException) -> Optional[Tuple[str, str]]:
    """``(name, advice)`` when ``err`` was raised by a third-party engine of :data:`_ENGINES` (its class is
    theirs, or the innermost frame of its traceback is in their package), else None."""
    top = type(err).__module__.split(".")[0]
    if top in _ENGINES:
        return _ENGINES[top]
    frames = traceback.extract_tb(err.__traceback__)
    if frames:
        parts = Path(frames[-1].filename).parts
        for package in _ENGINES:
            if package in parts and "site-packages" in parts[:parts.index(package)]:
                return _ENGINES[package]
    return None


@click.group(cls=_Main)
@click.version_option(package_name="mi-art")
def main() -> None:
    """Model inversion attacks (GMI, KEDMI with LOMMA) and defenses on top of ART."""


@main.command()
@click.option("--dataset", type=click.Choice(DATASETS), default="digits", show_default=True,
              help="Data set; 'digits' ships with scikit-learn, the others read --data-root.")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Folder of the data set (image-folder: one sub-folder per identity).")
@click.option("--data-option", "data_options", multiple=True, metavar="KEY=VALUE",
              help="Loader argument, e.g. --data-option private=20 --data-option image_size=32 (repeatable).")
@click.option("--attack", type=LiveChoice(ATTACKS), default="gmi", show_default=True)
@click.option("--variant", type=click.Choice(VARIANTS), default="lomma", show_default=True,
              help="baseline: CE on the target; lom: logit loss + p_reg; ma: surrogate ensemble; lomma: both; "
                   "+align: the loss averaged over 30 random views per step (AlignMI; --search-views N sets how many).")
@click.option("--identities", default=None, metavar="0-299|0,3,7",
              help="Private identities (class indices) to attack [default: all].")
@field_options("attack")
@click.option("--seed", type=SEED, default=0, show_default=True, help=SETTINGS.declared["seed"].help)
@click.option("--attack-seed", type=SEED, default=0, show_default=True, help=SETTINGS.declared["attack_seed"].help)
@click.option("--device", default="auto", show_default=True,
              help="'auto', 'cpu' or 'cuda[:N]' (checked against this machine's GPUs).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output folder [default: mi_art_runs/<dataset>-<attack>-<variant>].")
@click.option("--cache-dir", type=click.Path(file_okay=False), default="mi_art_runs/cache", show_default=True,
              help="Where trained targets, priors and surrogates are cached and reused.")
@click.option("--threads", type=THREADS, default=None, help=THREADS_HELP)
@click.option("--allow-large", is_flag=True, help=ALLOW_LARGE_HELP)
@click.option("--verbose/--quiet", default=True, show_default=True)
def attack(dataset: str, data_root: Optional[str], data_options: Tuple[str, ...], attack: str, variant: str,
           identities: Optional[str], seed: int, attack_seed: int, device: str, out_dir: Optional[str],
           cache_dir: str, threads: Any, allow_large: bool, verbose: bool, **fields: Any) -> None:
    """Run one attack variant end to end and write results.json and reconstructions.png."""
    from mi_art.threads import set_threads

    from .experiment import ExperimentConfig
    from .stages import StageLog, format_seconds

    command_start = time.perf_counter()
    # every option is checked before any work starts
    if not get_attack(attack).variants and variant != "baseline":  # MIFace, BREP-MI: "baseline" only
        variant = "baseline"
    options, ids, out = _checked_attack_options(dataset, data_root, data_options, attack, variant, identities,
                                                device, out_dir, cache_dir, allow_large)
    click.get_current_context().meta[_LOG_DIR] = out
    # gan_augment "auto" is resolved by the config, for the dataset, as for the grid's cells
    fields = field_values("attack", fields) | {"surrogate_archs": tuple(fields["surrogate_archs"])}
    config = ExperimentConfig(dataset=dataset, data_root=data_root, data_options=options, attack=attack,
                              variant=variant, identities=ids, seed=seed, attack_seed=attack_seed, device=device,
                              verbose=verbose, **fields)
    if threads is not None:
        set_threads(threads)
    stages = StageLog(click.echo)
    bench, result = _run_one_attack(config, ids, cache_dir, stages, allow_large)
    record = _write_run_record(out, bench, result, config, stages, command_start,
                               title=f"{attack.upper()} {variant} on {bench.data.name}")
    for line in _attack_result_lines(f"{attack}/{variant} on {bench.data.name}", config.judges, result):
        click.echo(line)
    for line in result["warnings"]:
        click.echo(f"warning: {line}", err=True)
    click.echo(f"wrote {out / 'results.json'} and {', '.join(str(out / f) for f in record['figures'].values())} in "
               f"{format_seconds(record['command_seconds'])} (the attack itself: {format_seconds(result['seconds'])})")


# --------------------------------------------------------------------------------------------------
# mi-art evaluate / mi-art report: the defense grid
# --------------------------------------------------------------------------------------------------


def _grid_overrides(datasets, data_root, data_options, defenses, attacks, variants, seeds, seed_scope,
                    budgets: Dict[str, Any], base: Dict[str, Any], *, allow_large: bool = False) -> Dict[str, Any]:
    from .grid_renames import renamed_dataset_keys

    over: Dict[str, Any] = {k: v for k, v in budgets.items() if v is not None and v != ()}
    if "surrogate_archs" in over:
        over["surrogate_archs"] = list(over["surrogate_archs"])
    if datasets:
        over["datasets"] = [{"name": d} for d in datasets]
    if data_root is not None or data_options:
        items = over.get("datasets", base.get("datasets", ["digits"]))
        items = [renamed_dataset_keys(dict(x), f"dataset {x.get('name')!r}") if isinstance(x, dict) else {"name": x}
                 for x in (items if isinstance(items, list) else [items])]
        parsed = _parse_options(data_options)
        for item in items:
            if data_root is not None:
                item["data_root"] = data_root
            if data_options:
                name = item.get("name")
                if normalise_dataset_name(name) in DATASETS:
                    _check_data_options(normalise_dataset_name(name), parsed)
                item["data_options"] = {**(item.get("data_options") or {}), **parsed}
        over["datasets"] = items
    if defenses:
        grouped: Dict[str, list] = {}
        for spec in defenses:
            name, params = _parse_defense(spec)
            grouped.setdefault(name, []).append(params)
        over["defenses"] = [{"name": n, "params": p} for n, p in grouped.items()]
    if attacks:
        over["attacks"] = list(attacks)
    if variants:
        over["variants"] = list(variants)
    if seeds is not None:
        over["seeds"] = _check_int_list(_parse_int_list(seeds, "--seeds", allow_large=allow_large), "--seeds")
    if seed_scope is not None:
        over["seed_scope"] = seed_scope
    return over


@main.command()
@click.option("--preset", type=click.Choice(["quick", "paper"]), default=None,
              help="quick: digits, none/DP-SGD/MID, GMI+KEDMI baseline/LOMMA, 2 seeds, minutes on a CPU. "
                   "paper: the LOMMA paper's CelebA grid for a GPU (needs --data-root).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Grid file: TOML, JSON, or YAML when PyYAML is installed (see evaluations/grid.py). Its keys "
                   "override the preset's; options below override both.")
@click.option("--name", default=None, callback=_check_name_option,
              help="Name of the grid (default: the preset's or 'grid').")
@click.option("--dataset", "datasets", multiple=True, type=click.Choice(DATASETS),
              help="Dataset (repeatable); replaces the grid's datasets.")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Data folder, applied to every dataset of the grid.")
@click.option("--data-option", "data_options", multiple=True, metavar="KEY=VALUE",
              help="Loader argument applied to every dataset (repeatable).")
@click.option("--defense", "defenses", multiple=True, metavar="NAME[:KEY=VALUE,...]",
              help="Defense setting (repeatable; repeat a name for several strengths), e.g. --defense none "
                   "--defense mid:beta=0.003 --defense mid:beta=0.01 --defense dp-sgd:noise_multiplier=1.0. "
                   "Replaces the grid's defenses.")
@click.option("--attack", "attacks", multiple=True, type=LiveChoice(ATTACKS), help="Attack (repeatable).")
@click.option("--variant", "variants", multiple=True, type=click.Choice(VARIANTS),
              help="Variant (repeatable); MIFace runs its baseline only.")
@click.option("--adaptive", is_flag=True,
              help="Add each variant's '+align' form (the attack aligned to the defense, AlignMI's gradient "
                   "alignment; 'align' for baseline) beside it: the report then says how much of each defense's "
                   "protection survives the adaptive attack. The grid's own cells keep their ids.")
@click.option("--seeds", default=None, metavar="0,1,2|0-4", help="Seeds of the grid.")
@click.option("--seed-scope", type=click.Choice(["all", "attack"]), default=None,
              help="all: a seed retrains targets, judges, priors and surrogates; attack: only the attack's.")
@field_options("evaluate")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Results folder [default: mi_art_runs/evaluate-<grid name>]. Rerunning into the same "
                   "folder resumes: finished cells are kept; two runs on one folder share its cells.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Shared artifact cache [default: <out>/cache].")
@click.option("--executor", type=click.Choice(["local", "process", "ray"]), default="local", show_default=True,
              help="local: in this process; process: a local process pool (--workers); ray: one Ray task per "
                   "cell (pip install 'mi-art[ray]'; out and cache dirs on a shared file system).")
@click.option("--workers", type=COUNT, default=None, help="Processes of --executor process [default: CPU count].")
@click.option("--address", default=None, help="Ray cluster address (e.g. 'auto' or ray://host:10001; secure "
                                              "the cluster: docs, Scale the grid out on Ray) [default: start a "
                                              "local Ray instance listening on 127.0.0.1 only].")
@click.option("--gpus-per-task", type=FiniteFloat(0.0), default=0.0, show_default=True,
              help="GPUs requested per Ray task.")
@click.option("--cpus-per-task", type=FiniteFloat(0.0, low_open=True), default=1.0, show_default=True,
              help="CPUs requested per Ray task.")
@click.option("--threads", type=THREADS, default=None,
              help="torch's CPU threads per worker, never more than the CPUs the worker was given: a count, "
                   "'auto' or 'torch' (torch's default) [default: local: auto (the CPUs this process may use "
                   "that other processes leave idle, at least 1; benchmarks/results/threads.md); process: the "
                   "usable CPUs divided among the workers; ray: --cpus-per-task].")
@click.option("--device", default=None, help="'auto', 'cpu' or 'cuda[:N]' [default: the grid's, else auto].")
@click.option("--dry-run", is_flag=True, help="Validate the grid and print the plan; train nothing. A missing "
                                              "data folder is a warning here, an error in a real run.")
@click.option("--allow-large", is_flag=True, help=ALLOW_LARGE_HELP)
@click.option("--verbose/--quiet", default=False, show_default=True, help="Progress bars inside long steps.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="The progress bar over cells.")
def evaluate(preset: Optional[str], config_file: Optional[str], name: Optional[str], datasets: Tuple[str, ...],
             data_root: Optional[str], data_options: Tuple[str, ...], defenses: Tuple[str, ...],
             attacks: Tuple[str, ...], variants: Tuple[str, ...], adaptive: bool, seeds: Optional[str],
             seed_scope: Optional[str], out_dir: Optional[str], cache_dir: Optional[str], executor: str,
             workers: Optional[int], address: Optional[str], gpus_per_task: float, cpus_per_task: float, threads: Any,
             device: Optional[str], dry_run: bool, allow_large: bool, verbose: bool, progress: bool,
             **fields: Any) -> None:
    """Evaluate a grid of defenses x attacks x variants x seeds; resumable; writes results.csv,
    results.json, report.md, plots and reconstruction images under --out.

    \b
    Examples:
      mi-art evaluate --preset quick --out runs/quick
      mi-art evaluate --preset quick --adaptive --out runs/quick   # + each variant aligned
      mi-art evaluate --preset paper --data-root /data/celeba --dry-run
      mi-art evaluate --config grid.toml --executor ray --address auto --gpus-per-task 1
      mi-art evaluate --dataset digits --defense none --defense mid:beta=0.01 --attack gmi \\
          --variant baseline --variant lomma --seeds 0,1
    """
    from .executors import GridInterrupted, GridRunError, evaluate_grid, worker_threads
    from .grid import GridError

    _check_device_option(device, executor)
    try:
        worker_threads(executor, threads, workers=workers, cpus_per_task=cpus_per_task)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="'--threads'") from None
    grid, problems = _grid_of_options(preset, config_file, name, datasets, data_root, data_options, defenses, attacks,
                                      variants, adaptive, seeds, seed_scope, device, executor, dry_run, allow_large,
                                      fields)
    out = Path(out_dir or f"mi_art_runs/evaluate-{grid.name}")
    if dry_run:
        _check_folders_writable(out, cache_dir)
        _show_dry_run(grid, out, problems)
        return
    _check_out_dir(out)
    if cache_dir is not None:
        _check_out_dir(Path(cache_dir), "--cache-dir")
    click.get_current_context().meta[_LOG_DIR] = out
    try:
        evaluate_grid(grid, out, cache_dir=cache_dir, executor=executor, workers=workers, address=address,
                      gpus_per_task=gpus_per_task, cpus_per_task=cpus_per_task, threads=threads, device=device,
                      verbose=verbose, progress=progress, echo=click.echo, validate=False, allow_large=allow_large)
    except (GridError, GridRunError, RuntimeError) as err:
        raise click.ClickException(str(err)) from None
    except GridInterrupted:
        click.get_current_context().exit(130)  # it said what was kept and how to resume: no "Aborted!" after it


def _grid_of_options(preset: Optional[str], config_file: Optional[str], name: Optional[str],
                     datasets: Tuple[str, ...], data_root: Optional[str], data_options: Tuple[str, ...],
                     defenses: Tuple[str, ...], attacks: Tuple[str, ...], variants: Tuple[str, ...], adaptive: bool,
                     seeds: Optional[str], seed_scope: Optional[str], device: Optional[str], executor: str,
                     dry_run: bool, allow_large: bool, fields: Dict[str, Any]) -> Tuple[Any, List[str]]:
    """The grid of ``mi-art evaluate``'s preset, grid file and options (each variant also aligned under
    ``--adaptive``), validated before anything is trained, and the problems a dry run reports instead of
    stopping at them; an invalid grid is refused in one line."""
    from mi_art.validation import check_device

    from .grid import Grid, GridError
    from .grid_files import merge_grid, read_grid_file
    from .presets import preset as get_preset

    try:
        base: Dict[str, Any] = get_preset(preset) if preset else {}
        if config_file:  # checked once, with the options laid over it, by Grid.from_dict
            base = merge_grid(base, read_grid_file(config_file))
        budgets = field_values("evaluate", fields)
        spec = merge_grid(base, _grid_overrides(datasets, data_root, data_options, defenses, attacks, variants,
                                                seeds, seed_scope, budgets, base, allow_large=allow_large))
        if name is not None:
            spec["name"] = name
        if device is not None:
            spec["device"] = device
        grid = Grid.from_dict(spec, where=str(config_file) if config_file else "the grid")
        if adaptive:
            _add_the_adaptive_attack(grid)
        problems = grid.validate(check_data=not dry_run, allow_large=allow_large)
        if grid.device is not None and executor != "ray":
            try:
                check_device("the grid's device", grid.device)
            except ValueError as err:
                if not dry_run:
                    raise GridError(str(err)) from None
                problems.append(str(err))
    except GridError as err:
        raise click.ClickException(f"invalid grid: {err}") from None
    return grid, problems


def _add_the_adaptive_attack(grid: Any) -> None:
    """Each variant of the grid (and of its forms) also aligned; a note where the plain variants search without
    views."""
    from .presets import plain_views_note, with_adaptive_attack

    grid.variants = with_adaptive_attack(grid.variants)
    for form in grid.forms:
        if form.variants is not None:
            form.variants = with_adaptive_attack(form.variants)
    note = plain_views_note(c.config for c in grid.cells())
    if note:
        click.echo(f"note: {note}", err=True)


def _check_folders_writable(out: Path, cache_dir: Optional[str]) -> None:
    """The folders of a real run checked without writing anything: a dry run writes nothing, not even an error
    log."""
    for folder, option in ((out, "--out"), (None if cache_dir is None else Path(cache_dir), "--cache-dir")):
        problem = None if folder is None else _writable_problem(folder)
        if problem is not None:
            raise click.BadParameter(f"{problem}: a real run could not write there", param_hint=f"'{option}'")


def _show_dry_run(grid: Any, out: Path, problems: List[str]) -> None:
    """A dry run's output: the problems a real run stops at, the grid's summary, each cell (done or to do in
    ``out``) and the grid as a file to pass to ``--config``."""
    from .executors import completed_cells
    from .grid_files import grid_to_toml

    for p in problems:
        click.echo(f"warning: {p} (a real run stops here)", err=True)
    click.echo(grid.summary())
    cells = grid.cells()
    done = completed_cells(out, [c.id for c in cells])
    click.echo(f"cells ({len(done)} of {len(cells)} already done in {out}):")
    for c in cells:
        click.echo(f"  {c.id}  {'done' if c.id in done else 'todo'}  {c.dataset_label}  {c.defense_label}  "
                   f"{c.config.attack}{'' if c.form is None else f' [{c.form}]'}/{c.config.variant}  "
                   f"seed {c.config.attack_seed}")
    click.echo("grid file (TOML; save it and pass it to --config):")
    click.echo(grid_to_toml(grid.to_dict()))


@main.command()
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--redraw/--keep-images", default=True, show_default=True,
              help="Redraw every reconstruction image, or only those missing or older than their cell.")
def report(out_dir: str, redraw: bool) -> None:
    """Re-render the report of an `mi-art evaluate` folder from its saved cells (nothing is recomputed)."""
    from .report import render_report

    try:
        paths = render_report(out_dir, redraw_images=redraw)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"wrote {', '.join(str(p) for p in paths)}")


if __name__ == "__main__":
    main()
