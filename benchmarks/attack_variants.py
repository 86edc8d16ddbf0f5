"""Benchmark: ART's MIFace against GMI, KEDMI, VMI and PLG-MI with and without LOMMA's two improvements.

Two face benchmarks (``benchmarks/_settings.py``): ``--benchmark att``, AT&T faces (private s1-s20, public
s21-s40, 32x32 grey), the quick look; ``--benchmark lfw``, LFW (the 50 persons with the most images
private, 30 images at most each, the other 108 persons public, 32x32 colour), the harder benchmark where
claims are made. The rows are a grid (:func:`variants_grid`: one attack form per row, named as the row) run by
the library's grid runner (``mi_art.evaluations.executors.evaluate_grid``) into the folder ``--out``: each
finished cell is ``<out>/cells/<cell-id>.json`` (its record) and ``.npz`` (its reconstructions and labels, for
a later judge), and a second run skips the finished cells. The target, the evaluation models, the GAN priors and
the surrogates are trained once (cached under --cache-dir) and reused by every method and seed. Each method runs
with several attack seeds (MIFace, deterministic, at the first alone), and every reconstruction is judged by
``--judges`` independently trained evaluation models. The same command in a second process (same ``--out``, e.g.
for a second CPU core) shares the cells (each is claimed before it runs) and the cache (each artifact trained
once), and both table every cell; processes that split the rows (``--methods``, ``--first-seed``) into folders of
their own are merged with ``--also``. The table gives,
for Acc@1, Acc@5 (by the judges) and KNN distance (squared L2 in a judge's feature space), the mean over seeds
and judges, the std over attack seeds (of the judges' mean) and the std over judges (of the seeds' mean); and
attack seconds per reconstruction.

    python benchmarks/attack_variants.py                     # AT&T, full run (hours on 2 CPU cores)
    python benchmarks/attack_variants.py --benchmark lfw     # LFW
    python benchmarks/attack_variants.py --quick             # a first look in minutes
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from _grid_run import add_grid_out_arguments, benchmark_data, config_grid, out_folder, run_benchmark_grid
from _settings import (BENCHMARKS, REPO, add_gmi_steps_argument, add_threads_argument, benchmark_config, parse_args,
                       spaced_identities)
from mi_art.threads import set_threads

from mi_art.attacks import ATTACKS
from mi_art.evaluations.experiment import ExperimentConfig
from mi_art.evaluations.grid import FormSpec, Grid
from mi_art.variants import VARIANTS

#: Row names of the GAN attacks: every attack of the registry, by its title.
ATTACK_NAMES = {name: cls.title for name, cls in ATTACKS.items()}
METHODS = [("miface", "baseline", "ART MIFace")] + [
    (attack, variant, f"{name}{'' if variant == 'baseline' else '+' + variant.upper()}")
    for attack, name in ATTACK_NAMES.items() for variant in ("baseline", "lom", "ma", "lomma")]
#: LOMMA in the paper's form (the target's regulariser alone), beside the library's default (every model
#: regularised): the measured reason for that deviation.
PAPER_FORM = {f"{attack.upper()}+LOMMA (paper)": {"regularise_surrogates": False} for attack in ("gmi", "kedmi")}
METHODS += [(attack, "lomma", name) for attack in ("gmi", "kedmi") for name in PAPER_FORM
            if name.startswith(attack.upper())]
#: LOMMA through predict alone (surrogates learnt from the target's scores or labels), and BREP-MI.
ACCESS_FORM = {f"{attack.upper()}+LOMMA [{access}]": {"access": access}
               for attack in ("gmi", "kedmi") for access in ("black-box", "label-only")}
METHODS += [(name.split("+")[0].lower(), "lomma", name) for name in ACCESS_FORM] + [("brepmi", "baseline", "BREP-MI")]
#: Rows whose configuration differs from the benchmark's (same data, cache and artifacts otherwise).
CONFIG_FORM = {**PAPER_FORM, **ACCESS_FORM}
#: Rows run only when --methods names them: the other variants of every GAN attack, e.g. "GMI+LOMMA+ALIGN" and
#: "GMI+ALIGN" (gradient alignment costs about mi_art.ALIGN_VIEWS passes through the models per step).
OPT_IN_METHODS = [(attack, variant, f"{name}+{variant.upper()}") for attack, name in ATTACK_NAMES.items()
                  for variant in VARIANTS if variant not in ("baseline", "lom", "ma", "lomma")]
#: Attacks that give the same reconstructions at every seed: run at the first seed alone.
DETERMINISTIC = ("miface",)


def main() -> None:
    parser = _parser()
    args = parse_args(parser)
    set_threads(args.threads)
    start = time.perf_counter()
    config = _config(args)
    suffix = (("" if args.benchmark == "att" else f"-{args.benchmark}") + ("-quick" if args.quick else "")
              + ("" if args.image_size is None else f"-{args.image_size}px"))
    out = out_folder(args.out or REPO / "mi_art_runs" / f"attack_variants{suffix}")
    wanted = None if args.methods is None else {m.strip() for m in args.methods.split(",")}
    unknown = sorted((wanted or set()) - {name for _, _, name in METHODS + OPT_IN_METHODS})
    if unknown:
        raise SystemExit(f"--methods={args.methods!r} names no row: {', '.join(unknown)} (the rows: "
                         + ", ".join(name for _, _, name in METHODS + OPT_IN_METHODS) + ")")
    methods = selected_methods(wanted)
    data = benchmark_data(config)
    chosen = attacked_identities(args, data.num_classes)
    if chosen is not None:
        config = dataclasses.replace(config, identities=chosen)
    print(f"data: {len(data.private_train)} private train / {len(data.private_test)} test images of "
          f"{data.num_classes} identities, {len(data.public)} public images", flush=True)
    seeds = list(range(args.first_seed, args.first_seed + (args.seeds or (2 if args.quick else 3))))
    size = config.data_options["image_size"]

    def table(rows: List[Dict[str, Any]]) -> None:
        print_table(table_records(rows), config, f"{BENCHMARKS[args.benchmark]['title']}, {size}x{size}", out)
        print(f"total wall time {time.perf_counter() - start:.0f}s")

    run_benchmark_grid([variants_grid(config, methods, seeds, f"attack-variants{suffix}")], out, table,
                       cache_dir=args.cache_dir, threads=args.threads, also=args.also)


def attacked_identities(args: argparse.Namespace, num_classes: int) -> list | None:
    """The identities the rows attack: ``--identities`` evenly spaced ones, or a side of the validation split
    (``--identity-set``: the ``--validation-identities`` evenly spaced ones on which settings are chosen, or the
    others, on which the chosen settings are reported); None: all of them."""
    if args.identity_set is None:
        return None if args.identities is None else spaced_identities(args.identities, num_classes)
    if args.identities is not None:
        raise SystemExit(f"--identities={args.identities} with --identity-set={args.identity_set}: give one of them")
    validation = spaced_identities(args.validation_identities, num_classes)
    if args.identity_set == "validation":
        return validation
    held_out = sorted(set(range(num_classes)) - set(validation))
    if not held_out:
        raise SystemExit(f"--validation-identities={args.validation_identities}: all {num_classes} identities, none "
                         "left to report on; give fewer")
    return held_out


def selected_methods(wanted: set | None) -> list:
    """The rows (attack, variant, name) ``--methods`` names, in the table's order (None: every default row)."""
    default_rows = {name for _, _, name in METHODS}
    return [m for m in METHODS + OPT_IN_METHODS if m[2] in (default_rows if wanted is None else wanted)]


def variants_grid(config: ExperimentConfig, methods: Sequence[tuple], seeds: Sequence[int], name: str) -> Grid:
    """The rows ``methods`` as a grid over the benchmark's ``config``: one attack form per row, named as the row,
    with its attack, its variant and its :data:`CONFIG_FORM` changes, at every seed of ``seeds`` (a
    :data:`DETERMINISTIC` attack at the first alone)."""
    return config_grid(config, [FormSpec(row, dict(CONFIG_FORM.get(row, {})), [attack], [variant],
                                         list(seeds[:1]) if attack in DETERMINISTIC else None)
                                for attack, variant, row in methods], seeds, name)


def table_records(rows: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """The finished rows as the table reads them, keyed ``<row>/seed<seed>`` (a cell's row is its form's name; a
    later row's key wins)."""
    return {f"{r['form']}/seed{r['seed']}": r for r in rows if r.get("form")}


def _config(args: argparse.Namespace) -> ExperimentConfig:
    """The benchmark's configuration with the command line's budgets (``--quick``'s where it gives none)."""
    q = args.quick
    overrides = dict(iterations=args.iterations or (200 if q else 1000), n_reconstructions=args.n_reconstructions,
                     n_candidates=args.candidates, search_views=args.search_views, id_weight=args.id_weight,
                     feature_layer=args.feature_layer,
                     gmi_steps=args.gmi_steps or (300 if q else 1500),
                     kedmi_steps=args.kedmi_steps or (60 if q else 200),
                     plgmi_steps=args.plgmi_steps or (150 if q else 1000),
                     surrogate_steps=args.surrogate_steps or (1000 if q else 10000),
                     miface_iterations=args.miface_iterations or (300 if q else 2000), device=args.device,
                     judges=args.judges or (1 if q else 3), surrogate_pretrain_epochs=args.surrogate_pretrain_epochs,
                     max_queries=args.max_queries)
    if args.pretrain_epochs is not None:
        overrides.update(target_pretrain_epochs=args.pretrain_epochs, judge_pretrain_epochs=args.pretrain_epochs)
    if args.batch_size is not None:
        overrides["batch_size"] = args.batch_size
    if args.surrogate_archs:
        overrides["surrogate_archs"] = tuple(a.strip() for a in args.surrogate_archs.split(",") if a.strip())
    config = benchmark_config(args.benchmark, args.data_root, **overrides)
    if args.image_size is not None:
        config.data_options = {**config.data_options, "image_size": args.image_size}
    return config


def _parser() -> argparse.ArgumentParser:
    """The command line: the benchmark, its budgets, the rows and seeds to run, where to keep the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_benchmark_arguments(parser)
    _add_training_arguments(parser)
    _add_identity_arguments(parser)
    _add_attack_arguments(parser)
    _add_model_arguments(parser)
    _add_run_arguments(parser)
    return parser


def _add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    """Which benchmark, its data, its image size, and how many attack seeds and judges."""
    parser.add_argument("--benchmark", choices=sorted(BENCHMARKS), default="att",
                        help="att: AT&T faces, the quick look; lfw: LFW, the harder benchmark (default att)")
    parser.add_argument("--data-root", default=None, help="the benchmark's data folder (default ../shared/data/...)")
    parser.add_argument("--quick", action="store_true", help="small budgets: a first look in minutes")
    parser.add_argument("--image-size", type=int, default=None, help="side of the images (default: the benchmark's, "
                                                                     "32; LFW takes up to 64)")
    parser.add_argument("--seeds", type=int, default=None, help="attack seeds (default 3; quick 2)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="the first attack seed (default 0): --first-seed 1 --seeds 2 runs seeds 1 and 2, e.g. in "
                             "a second process whose --out is merged with --also")
    parser.add_argument("--judges", type=int, default=None, help="evaluation models per reconstruction (default 3; "
                                                                 "quick 1)")


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The budgets of what is trained before the attacks: the GANs' steps, the surrogates'."""
    parser.add_argument("--iterations", type=int, default=None, help="GAN attack iterations (default 1000)")
    add_gmi_steps_argument(parser, None, "the GMI prior's WGAN-GP generator steps (default 1500)")
    parser.add_argument("--kedmi-steps", type=int, default=None,
                        help="KEDMI generator steps, each after 5 discriminator steps, warm-started from the GMI "
                             "prior's generator (default 200)")
    parser.add_argument("--plgmi-steps", type=int, default=None,
                        help="PLG-MI conditional GAN generator steps, from the GMI generator (default 1000)")
    parser.add_argument("--surrogate-steps", type=int, default=None,
                        help="distillation steps (default 10000, as the paper preset; quick 1000)")


def _add_identity_arguments(parser: argparse.ArgumentParser) -> None:
    """Which private identities are attacked."""
    parser.add_argument("--identities", type=int, default=None,
                        help="attack this many private identities, evenly spaced over them (default: all); a budget "
                             "for targets that are slow to differentiate, stated in the table")
    parser.add_argument("--identity-set", choices=("validation", "held-out"), default=None,
                        help="attack one side of a split of the private identities: 'validation', the "
                             "--validation-identities evenly spaced ones on which a setting is chosen, or "
                             "'held-out', the others, on which the chosen setting is reported (default: all)")
    parser.add_argument("--validation-identities", type=int, default=10,
                        help="identities of the validation side of --identity-set (default 10)")


def _add_attack_arguments(parser: argparse.ArgumentParser) -> None:
    """The attacks' own settings: their loss, search and reconstructions."""
    parser.add_argument("--id-weight", type=float, default=None,
                        help="weight of the identity loss against the prior's term (default: each attack's own, "
                             "100; PLG-MI 1)")
    parser.add_argument("--feature-layer", default=None,
                        help="the module of the target whose input is the feature LOM's p_reg regularises, by its name "
                             "in model.named_modules(), e.g. 'embed.1' (default: its last nn.Linear)")
    parser.add_argument("--n-reconstructions", type=int, default=5, help="reconstructions per identity (default 5)")
    parser.add_argument("--candidates", type=int, default=None,
                        help="candidates searched per identity, the most robust --n-reconstructions kept (Plug & Play "
                             "Attacks' selection; default: none)")
    parser.add_argument("--search-views", type=int, default=None,
                        help="random views of each image over which the identity loss is averaged at every search "
                             "step (default: each attack's own, PLG-MI 2, the others 0)")
    parser.add_argument("--miface-iterations", type=int, default=None, help="MIFace iterations (default 2000)")


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """How the target, the judges and the surrogates start, and the black-box rows' query budget."""
    parser.add_argument("--pretrain-epochs", type=int, default=None,
                        help="pre-train target and judges this many epochs on the public identities before "
                             "fine-tuning on the private ones (default: the benchmark's; 0: from scratch)")
    parser.add_argument("--surrogate-pretrain-epochs", type=int, default=0,
                        help="pre-train each surrogate this many epochs on the public identities before distilling "
                             "the target into it (the paper's surrogates start from pre-trained weights; default 0)")
    parser.add_argument("--surrogate-archs", default=None,
                        help="comma-separated architectures of the surrogates (default: the benchmark's, e.g. "
                             "'cnn-small,cnn'; 'dlib-head': the deployed target's own backbone with a new head)")
    parser.add_argument("--max-queries", type=int, default=None,
                        help="query budget of the black-box, label-only and BREP-MI rows (default: no limit)")


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Which rows to run, how, and where the results go."""
    parser.add_argument("--methods", default=None,
                        help="comma-separated subset, e.g. 'GMI,GMI+LOMMA'; the '+ALIGN' rows (e.g. "
                             "'GMI+LOMMA+ALIGN', 30 views per step) run only when named here")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="latent codes (GMI) or identities (KEDMI) optimised together (default 100; all at "
                             "once is fastest on a GPU)")
    parser.add_argument("--device", default="auto")
    add_threads_argument(parser)
    parser.add_argument("--cache-dir", default=str(REPO / "mi_art_runs" / "cache"))
    add_grid_out_arguments(parser, "mi_art_runs/attack_variants[-lfw][-quick]")


def _independent(rows: list, metric: str) -> str:
    """The independent judge's ``metric``: mean +- std over attack seeds ('-' where it did not judge)."""
    values = [r[metric] for r in rows if r.get(metric) is not None]
    return f"{np.mean(values):.3f} +- {np.std(values):.3f}" if values else "-"


def _independent_header(record: dict) -> str:
    """What the independent judge is and how well it knows the real private faces (its own columns)."""
    if record.get("independent_acc@1") is None:
        return "No independent judge."
    shares = record.get("independent_shares") or []
    return (f"Independent judge: {record.get('independent_judge')} (no training; identifies "
            f"{record['independent_test_accuracy']:.3f} of the real private test images at this size"
            + (f"; shares {', '.join(shares)} with the target, so it is not independent of it" if shares else "")
            + "); dist: its descriptor distance to the nearest training image of the identity.")


def _num(value, fmt: str = ".3f") -> str:
    return "n/a" if value is None else f"{value:{fmt}}"


def _judges(record: dict, metric: str) -> str:
    return " / ".join(_num(v) for v in record.get(f"{metric}_judges") or [record[metric]])


def _pretraining(config: ExperimentConfig) -> str:
    n, m, s = config.target_pretrain_epochs, config.judge_pretrain_epochs, config.surrogate_pretrain_epochs
    return ((f"target pre-trained {n} epochs on the public identities, " if n else "")
            + (f"judges pre-trained {m} epochs, " if m else "")
            + (f"surrogates pre-trained {s} epochs, " if s else ""))


def spread(rows: list, metric: str) -> tuple:
    """Mean over seeds and judges; std over attack seeds (of each seed's mean over judges); std over judges
    (of each judge's mean over seeds), None with one judge. Records without per-judge values count as one
    judge. Population stds."""
    table = [r.get(f"{metric}_judges") or [r[metric]] for r in rows]
    if any(v is None for t in table for v in t) or len({len(t) for t in table}) != 1:
        values = np.array([np.nan if r[metric] is None else r[metric] for r in rows], dtype=float)
        if np.isnan(values).all():
            return None, None, None
        return float(np.nanmean(values)), float(np.nanstd(values)), None
    m = np.array(table, dtype=float)  # seeds x judges
    judge_std = float(m.mean(0).std()) if m.shape[1] > 1 else None
    return float(m.mean()), float(m.mean(1).std()), judge_std


def print_table(done: dict, config: ExperimentConfig, title: str, out: Path) -> None:
    first = next(iter(done.values()))
    judge_acc = first.get("judge_test_accuracies") or [first["judge_test_accuracy"]]
    print(f"\n{title} ({first['n_identities']} identities; chance Acc@1 "
          f"{_num(first.get('chance@1'), '.2f')}, Acc@5 {_num(first.get('chance@5'), '.2f')}), "
          f"{_pretraining(config)}target {config.target_arch} "
          f"(test acc {first['natural_accuracy']:.3f}), {len(judge_acc)} evaluation model(s) {config.judge_arch} "
          f"(test acc {' / '.join(f'{a:.3f}' for a in judge_acc)}); GAN attacks: {config.iterations} iterations, "
          f"{config.n_reconstructions} reconstructions per identity"
          f"{'' if config.identities is None else f' on {len(config.identities)} of the identities'}"
          f"{'' if config.identities is None else ' (listed in the configuration of each cell)'}"
          f"{'' if config.n_candidates is None else f', kept from {config.n_candidates} candidates'}"
          f"{'' if config.search_views is None else f', identity loss over {config.search_views} random views'}"
          f"{'' if config.id_weight is None else f', identity loss weight {config.id_weight:g}'}"
          f"{'' if config.feature_layer is None else f', p_reg at the input of {config.feature_layer}'}. "
          f"Each metric: mean, +- std over attack seeds, [std over judges]. {_independent_header(first)}")
    header = (f"| {'method':<24} | {'seeds':>5} | {'Acc@1':>23} | {'Acc@5':>23} | {'KNN dist':>24} | {'s / rec':>7} "
              f"| {'prior s':>7} | {'prior FID':>9} | {'surrogate agreement (public / private)':<38} "
              f"| {'feature norm / public (T, S...)':<31} | {'queries':>9} | {'independent Acc@1':>17} "
              f"| {'independent Acc@5':>17} | {'independent dist':>16} |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for _, _, name in METHODS + OPT_IN_METHODS:
        rows = [v for k, v in done.items() if k.split("/")[0] == name]
        if not rows:
            continue

        def cell(metric: str, fmt: str = ".3f") -> str:
            mean, seed_std, judge_std = spread(rows, metric)
            if mean is None:
                return "n/a"
            text = f"{mean:{fmt}} +- {seed_std:{fmt}}"
            return text if judge_std is None else f"{text} [{judge_std:{fmt}}]"

        prior = rows[0].get("prior") or {}
        agreement = ", ".join(f"{s['arch']} {s['agreement_public_heldout']:.2f} / {s['agreement_private_test']:.2f}"
                              + ("" if s.get("used", True) else " (dropped)")
                              for s in rows[0].get("surrogates") or []) or "-"
        secs = [r["seconds_per_reconstruction"] for r in rows if r.get("seconds_per_reconstruction") is not None]
        sec = f"{np.mean(secs):.3f}" if secs else "-"  # a grid's rows of the library's earlier versions lack it
        norms = [[n["reconstructions"] / n["public"] if n else np.nan for n in r.get("feature_norms") or []]
                 for r in rows]
        same_models = norms and norms[0] and len({len(n) for n in norms}) == 1
        norm_text = ", ".join(f"{v:.2f}" for v in np.nanmean(np.array(norms, dtype=float), 0)) if same_models else "-"
        queries = [r["queries"] for r in rows if r.get("queries") is not None]
        query_text = f"{np.mean(queries):.0f}" if queries else "-"
        print(f"| {name:<24} | {len(rows):>5} | {cell('acc@1'):>23} | {cell('acc@5'):>23} "
              f"| {cell('knn_dist', '.1f'):>24} "
              f"| {sec:>7} | {_num(prior.get('train_seconds'), '.0f'):>7} "
              f"| {_num(prior.get('fid_public'), '.1f'):>9} | {agreement:<38} | {norm_text:<31} | {query_text:>9} "
              f"| {_independent(rows, 'independent_acc@1'):>17} | {_independent(rows, 'independent_acc@5'):>17} "
              f"| {_independent(rows, 'independent_dist'):>16} |")
    print(f"(MIFace is deterministic from its grey start: one run, {first['n_identities']} reconstructions. Prior s: "
          f"training seconds of the prior (KEDMI: its fine-tuning from the GMI generator); prior FID: 500 samples "
          f"against the public images on the first evaluation model's features. Feature norm / public: each model's "
          f"mean penultimate-feature norm on the reconstructions over its norm on public images, mean over seeds.) "
          f"Raw records: {out}/cells (each cell's .json; its reconstructions in its .npz)")


if __name__ == "__main__":
    main()
