"""Benchmark: how well each defense stops GMI+LOMMA and KEDMI+LOMMA, and what it costs in accuracy.

On AT&T faces (private s1-s20, public s21-s40, 32x32 grayscale) every defense is trained at two or
three strengths. For each defended target the script reports its natural (test) accuracy, epsilon for
DP-SGD (Opacus's RDP accountant, delta = 1/N), and Acc@1 / KNN distance of GMI+LOMMA and KEDMI+LOMMA
(mean +- std over attack seeds), beside the evaluation model's held-out accuracy and the surrogate's
agreement with each target. The public GMI prior and the evaluation model are shared with
``attack_variants.py`` through the cache; the KEDMI prior (fine-tuned from the GMI generator), the
surrogate (one, to keep the grid affordable on a CPU) and p_reg are made per target. The defended targets, attacks
and access levels are a grid (:func:`defenses_grid`) run by the library's grid runner into the folder --out (each
finished cell ``<out>/cells/<cell-id>.json`` and ``.npz``), skipped when the script is run again.

    python benchmarks/defenses.py            # full grid
    python benchmarks/defenses.py --quick    # fewer defenses, smaller budgets
    python benchmarks/defenses.py --output-defenses --access black-box,label-only --attacks gmi,brepmi
                                             # ART's postprocessors, judged by attacks that see them
    python benchmarks/defenses.py --adaptive --align-views 8
                                             # + every cell's attack aligned to the defense (AlignMI, K=8 views)

``--adaptive`` attacks every defense cell a second time with the variant aligned to it (``--variant``'s "+align"
form: its identity loss averaged over K random geometric views per step, AlignMI's gradient alignment), stored
beside the plain rows under the column ``<attack>+align(K=<K>)``; the table then gives each defense's Acc@1 with
alignment and the share of its protection that survives it (:mod:`mi_art.evaluations.utility`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from _grid_run import add_grid_out_arguments, benchmark_data, config_grid, out_folder, run_benchmark_grid
from _settings import (BENCHMARKS, REPO, add_gmi_steps_argument, add_threads_argument, benchmark_config, parse_args,
                       spaced_identities)
from _target_tables import print_privacy_table, print_trapdoor_table
from mi_art.threads import set_threads

from mi_art.defenses.registry import RENAMED_DEFENSES
from mi_art.evaluations.experiment import ExperimentConfig
from mi_art.evaluations.grid import DefenseSpec, FormSpec, Grid
from mi_art.evaluations.report import aggregate, plot_frontier
from mi_art.evaluations.utility import adaptive_comparison, aligned_variant, plain_variant
from mi_art.variants import ALIGN_VIEWS

#: Negative label smoothing's name (its earlier name "nls" stays in the rows' labels: :func:`label`).
NLS = "negative-label-smoothing"
#: one strength of every defense first, then the second ones: a run cut short still covers each defense
DEFENSES = [
    ("none", {}),
    ("dp-sgd", {"noise_multiplier": 1.0}), ("mid", {"beta": 0.003}), (NLS, {"alpha": -0.05}),
    ("tl", {"freeze": 0.5}), ("bido", {"lambda_x": 0.05, "lambda_y": 0.5}),
    ("dp-sgd", {"noise_multiplier": 0.5}), ("mid", {"beta": 0.02}), (NLS, {"alpha": -0.2}),
    ("tl", {"freeze": 0.8}), ("bido", {"lambda_x": 0.1, "lambda_y": 1.0}), ("dp-sgd", {"noise_multiplier": 2.0}),
]
QUICK = [("none", {}), ("dp-sgd", {"noise_multiplier": 1.0}), ("mid", {"beta": 0.02}), (NLS, {"alpha": -0.2})]
#: ``--deployed``: defenses as they are deployed. Every target starts from 60 epochs of pre-training on the
#: public identities (a third element: the target's configuration). DP-SGD fine-tunes the pre-trained
#: network (pre-trained in GroupNorm, so every pre-trained weight is kept) with its own recipe: the last two
#: layers, full batches of the 160 private images, SGD, no augmentation (De et al. 2022's advice for DP; the
#: layers, learning rate and epochs chosen by a sweep at epsilon 8 on AT&T seed 0, see
#: benchmarks/results/defenses_deployed.md); Trap-MID with the authors' blend (alpha 0.02) at two weights, and
#: with a blend that small sets can learn (alpha 0.1) at the same two weights.
PRETRAINED = {"target_pretrain_epochs": 60}
#: DP-SGD's recipe per benchmark beyond the shared one: on LFW the ordinary (BatchNorm) pre-trained target is
#: fine-tuned with its BatchNorm frozen (GroupNorm pre-training fails on LFW's public identities: 0.18 on
#: their own training images) for 100 epochs (the best of the LFW sweep in defenses_deployed.md, 0.486 at
#: epsilon 8, against 0.178 with AT&T's recipe).
DP_RECIPE = {"att": {}, "lfw": {"batch_norm": "freeze", "dp_epochs": 100},
             # the head alone on the frozen recogniser, delta 1e-5 (N = 1,135: well below 1/N); learning rate and
             # epochs from a sweep at epsilons 8, 3 and 1 on fixed descriptors (face_recogniser.md)
             "lfw-deployed": {"trainable": "head", "dp_lr": 4.0, "dp_epochs": 30, "target_delta": 1e-5}}
#: The targets' configuration per benchmark: pre-trained on the public identities, except a deployed face
#: recogniser, whose pre-training is its own (dlib's, on millions of faces).
TARGET_START = {"att": PRETRAINED, "lfw": PRETRAINED, "lfw-deployed": {}}


def deployed_grid(n_train: int, benchmark: str = "att") -> list:
    """The ``--deployed`` grid for ``n_train`` private training images (DP-SGD's full batch)."""
    dp = {"trainable": 2, "dp_optimizer": "sgd", "dp_lr": 0.25, "dp_epochs": 40, "dp_batch_size": n_train,
          "dp_augment": "none", **DP_RECIPE[benchmark]}
    start = TARGET_START[benchmark]
    return [
        ("none", {}, start),
        ("dp-sgd", {"target_epsilon": 8.0, **dp}, start),
        ("trap-mid", {}, start),
        ("dp-sgd", {"target_epsilon": 3.0, **dp}, start),
        ("trap-mid", {"beta": 0.5}, start),
        ("dp-sgd", {"target_epsilon": 1.0, **dp}, start),
        # the paper's blend plants no trapdoor in AT&T's 180 steps (trapdoor accuracy 0.075, chance 0.05); 0.1 does
        ("trap-mid", {"alpha": 0.1}, start),
        ("trap-mid", {"alpha": 0.1, "beta": 0.5}, start),
        # the earlier defenses on the same pre-trained targets
        ("mid", {"beta": 0.01}, start), (NLS, {"alpha": -0.05}, start),
        ("bido", {"lambda_x": 0.05, "lambda_y": 0.5}, start), ("tl", {"freeze": 0.5}, start),
    ] + _residual_rows(benchmark, start)


#: RoLSS needs a network with skip connections: the benchmarks' CNN target has none, so RoLSS is compared with
#: the undefended target of the same residual architecture, pre-trained the same way (RoLSS pre-trains its own
#: skipless structure). Not on a deployed face recogniser, whose pre-trained skips RoLSS does not apply to.
ROLSS_ARCH = "resnet10"


def _residual_rows(benchmark: str, start: dict) -> list:
    """RoLSS and the undefended target of :data:`ROLSS_ARCH` (none for a deployed face recogniser)."""
    if TARGET_START.get(benchmark) is not PRETRAINED:
        return []
    residual = {**start, "target_arch": ROLSS_ARCH}
    return [("none", {}, residual), ("rolss", {}, residual)]


#: ART's output postprocessors (``--output-defenses``): they change what predict returns, so they are judged
#: by attacks that see only that, black-box and label-only (``--access``), beside the undefended target.
OUTPUT_DEFENSES = [("none", {}), ("reverse-sigmoid", {}), ("high-confidence", {}), ("rounded", {"decimals": 1}),
                   ("gaussian-noise", {}), ("class-labels", {})]


def label(defense: str, params: dict, overrides: dict | None = None) -> str:
    """The row's name: the defense and its parameters (DP fine-tuning: its epsilon), '[pre-trained]' when the
    target starts from public pre-training, and its architecture where the row sets one
    (``[pre-trained, resnet10]``)."""
    if defense == "dp-sgd" and "target_epsilon" in params and params.get("trainable") == "head":
        return f"dp-sgd head (epsilon={params['target_epsilon']:g}, delta={params.get('target_delta', '1/N')})"
    if overrides and overrides.get("target_pretrain_epochs") and defense == "dp-sgd" and "target_epsilon" in params:
        return f"dp-sgd fine-tuned (epsilon={params['target_epsilon']:g})"
    defense = RENAMED_DEFENSES.old(defense)  # a label is a key of the results files: a renamed defense keeps its own
    name = defense if not params else f"{defense}(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")"
    tags = (["pre-trained"] if overrides and overrides.get("target_pretrain_epochs") else []) + (
        [overrides["target_arch"]] if overrides and "target_arch" in overrides else [])
    return f"{name} [{', '.join(tags)}]" if tags else name


def _rows(grid: list):
    """(defense, params, config overrides) of every grid entry."""
    return [(g[0], g[1], g[2] if len(g) > 2 else {}) for g in grid]


def main() -> None:
    parser = _parser()
    args = parse_args(parser)
    set_threads(args.threads)
    seeds = args.seeds or (2 if args.quick else 3)
    base = _config(args)
    align = _aligned_attack(parser, args, base)
    suffix = (f"{'' if args.benchmark == 'att' else '-' + args.benchmark}{'-quick' if args.quick else ''}"
              f"{'-output' if args.output_defenses else ''}{'-deployed' if args.deployed else ''}")
    out = out_folder(args.out or REPO / "mi_art_runs" / f"defenses{suffix}")
    data = benchmark_data(base)
    if args.identities is not None:
        base = dataclasses.replace(base, identities=spaced_identities(args.identities, data.num_classes))
    targets = _grid(args, len(data.private_train))
    attacks, levels = [a.strip() for a in args.attacks.split(",")], [a.strip() for a in args.access.split(",")]
    start = time.perf_counter()

    def table(rows: List[Dict[str, Any]]) -> None:
        print_tables(args, table_records(rows, targets, base.target_arch), targets, base, seeds, out, align)
        print(f"total wall time {time.perf_counter() - start:.0f}s")

    seed_range = range(args.first_seed, args.first_seed + seeds)
    grids = [defenses_grid(base, group, attacks, levels, align, seed_range,
                           f"defenses{suffix}" + (f"-{group[0][2]['target_arch']}" if "target_arch" in group[0][2]
                                                  else ""))
             for group in _by_configuration(targets)]
    run_benchmark_grid(grids, out, table, cache_dir=args.cache_dir, threads=args.threads, also=args.also)


def _by_configuration(targets: list) -> list:
    """The defended targets grouped by their configuration overrides, in their order: one grid per group (a grid's
    defense settings share one configuration; the RoLSS rows' residual architecture is another)."""
    groups: Dict[str, list] = {}
    for target in targets:
        groups.setdefault(json.dumps(target[2], sort_keys=True), []).append(target)
    return list(groups.values())


def defenses_grid(base: ExperimentConfig, targets: list, attacks: list, levels: list, align: ExperimentConfig | None,
                  seeds: Sequence[int], name: str) -> Grid:
    """The defended ``targets`` (defense, params, configuration overrides, which they share) attacked by every
    attack at every access level (BREP-MI label-only alone, its baseline) and, with ``align`` (``--adaptive``), by
    the same attack aligned to the defense over ``align.search_views`` views: one form per access level and
    alignment, named by them (``label-only``, ``label-only+align(K=4)``)."""
    overrides = targets[0][2]
    if any(o != overrides for *_, o in targets):
        raise ValueError("the defended targets of one grid share their configuration overrides")
    forms = []
    for level in levels:
        plain = [a for a in attacks if a != "brepmi" or level == "label-only"]  # BREP-MI is label-only
        if plain:
            forms.append(FormSpec(level, {"access": level}, plain, [base.variant]))
        if align is not None and [a for a in attacks if a != "brepmi"]:
            forms.append(FormSpec(f"{level}+align(K={align.search_views})",
                                  {"access": level, "search_views": align.search_views},
                                  [a for a in attacks if a != "brepmi"], [align.variant]))
    return config_grid(dataclasses.replace(base, **overrides), forms, seeds, name,
                       defenses=[DefenseSpec(defense, [dict(params)]) for defense, params, _ in targets])


def table_records(rows: List[Dict[str, Any]], targets: list, arch: str) -> Dict[str, Dict[str, Any]]:
    """The finished rows keyed as the tables read them, ``<target>/<column>[<access>]/seed<seed>`` (white-box: no
    ``[<access>]``; the aligned attack's column :func:`align_column`): the target by its :func:`label` in
    ``targets`` (the target architecture ``arch`` where a target's overrides set none; a row of another grid: with
    its own configuration). The tables keep the columns apart by their keys, not by the rows' forms."""
    def key(defense: str, params: dict, target_arch: str) -> tuple:
        return defense, json.dumps(params, sort_keys=True), target_arch

    names = {key(d, p, o.get("target_arch", arch)): label(d, p, o) for d, p, o in targets}
    records = {}
    for r in rows:
        config = r["config"]
        column = config["attack"] if plain_variant(config["variant"]) is None else \
            align_column(config["attack"], config["search_views"])
        where = column if r["access"] == "white-box" else f"{column}[{r['access']}]"
        own = {k: v for k, v in config.items() if k != "target_arch" or v != arch}  # the architecture where it differs
        target = names.get(key(r["defense"], r["defense_params"], config["target_arch"])) or label(
            r["defense"], r["defense_params"], own)
        records[f"{target}/{where}/seed{r['seed']}"] = {**r, "form": None}
    return records


def print_tables(args: argparse.Namespace, merged: dict, grid: list, base: ExperimentConfig, seeds: int, out: Path,
                 align: ExperimentConfig | None) -> None:
    """The tables of the records ``merged``: by access level for the output defenses; else the white-box table
    (with alignment under ``--adaptive``), every column's where other attacks ran, DP-SGD's accountant, Trap-MID's
    trapdoors, and ``--plot``'s frontier."""
    title = BENCHMARKS[args.benchmark]["title"]
    if args.output_defenses:
        print_access_table(merged, grid, out, title)
        return
    print_table(merged, grid, base, seeds, out, title, align_views=None if align is None else align.search_views)
    if any(_plain_column(k.split("/")[1]) not in ("gmi", "kedmi") for k in merged):  # VMI, ...: every column
        print_access_table(merged, grid, out, title)
    named = [(label(*g), g[0], g[2]) for g in grid]
    print_privacy_table(merged, named)
    print_trapdoor_table(merged, named)
    if args.plot:
        print(f"frontier: {plot_frontier(Path(args.plot), title, frontier_rows(merged, grid))}")


def _config(args: argparse.Namespace) -> ExperimentConfig:
    """The benchmark's configuration with the command line's budgets (``--quick``'s where it gives none)."""
    q = args.quick
    return benchmark_config(
        args.benchmark, args.data_root, variant=args.variant,
        judges=args.judges or (3 if args.benchmark == "lfw" else 1), iterations=args.iterations or (150 if q else 300),
        n_reconstructions=args.n_reconstructions, gmi_steps=args.gmi_steps or (300 if q else 1500),
        kedmi_steps=args.kedmi_steps or (50 if q else 100), surrogate_archs=("cnn-small",),
        surrogate_steps=args.surrogate_steps or (300 if q else 1000),
        device=args.device, max_queries=args.max_queries)


def _grid(args: argparse.Namespace, n_train: int) -> list:
    """The defended targets (defense, params, config overrides) the command line asks for (``--only``'s), for
    ``n_train`` private training images."""
    grid = _rows(deployed_grid(n_train, args.benchmark) if args.deployed else
                 OUTPUT_DEFENSES if args.output_defenses else QUICK if args.quick else DEFENSES)
    if args.only:
        names = {RENAMED_DEFENSES.new(n.strip(), "--only") for n in args.only.split(",")}
        chosen = [g for g in grid if g[0] in names]
        if not chosen:
            raise SystemExit(f"--only={args.only!r} names none of this grid's defenses: "
                             + ", ".join(dict.fromkeys(g[0] for g in grid)))
        grid = chosen
    return grid


def _parser() -> argparse.ArgumentParser:
    """The command line: the benchmark, the defenses and attacks, budgets, seeds, where to keep the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", choices=sorted(BENCHMARKS), default="att",
                        help="att: AT&T faces (default); lfw: LFW, the harder benchmark (targets pre-trained)")
    parser.add_argument("--data-root", default=None, help="the benchmark's data folder (default ../shared/data/...)")
    parser.add_argument("--judges", type=int, default=None, help="evaluation models per reconstruction "
                                                                  "(default 1; lfw 3)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=None, help="attack seeds (default 3; quick 2)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="the first attack seed (default 0): --first-seed 1 --seeds 1 runs seed 1 alone, e.g. in "
                             "a second process whose --out is merged with --also")
    parser.add_argument("--iterations", type=int, default=None, help="attack iterations (default 300; quick 150)")
    parser.add_argument("--n-reconstructions", type=int, default=3)
    parser.add_argument("--identities", type=int, default=None,
                        help="attack this many private identities, evenly spaced (default: all)")
    parser.add_argument("--kedmi-steps", type=int, default=None,
                        help="KEDMI generator steps per target, from the GMI generator (default 100)")
    parser.add_argument("--surrogate-steps", type=int, default=None, help="distillation steps at most (default 1000)")
    add_gmi_steps_argument(parser, None, "GMI WGAN-GP steps (default 1500; quick 300)")
    parser.add_argument("--only", default=None, help="comma-separated defense names to run")
    parser.add_argument("--variant", choices=("baseline", "lom", "ma", "lomma"), default="lomma",
                        help="the GAN attacks' variant (default lomma; lom needs no surrogates: a cheaper look where "
                             "the target is slow to query). Give each variant its own --out")
    parser.add_argument("--adaptive", action="store_true",
                        help="also attack every defense cell with --variant aligned to the defense (its '+align' "
                             "form), stored beside the plain rows; the table gains Acc@1 with alignment and the share "
                             "of each defense's protection kept")
    parser.add_argument("--align-views", type=int, default=None, metavar="K",
                        help=f"--adaptive's random views per step (search_views; default {ALIGN_VIEWS}, AlignMI's; "
                             "at least 2): each costs a forward and backward pass, so fewer keep a CPU run "
                             "affordable. Each K is its own column (a new K reruns nothing)")
    parser.add_argument("--attacks", default="gmi,kedmi",
                        help="comma-separated: gmi, kedmi, vmi, plgmi, brepmi (label-only)")
    parser.add_argument("--output-defenses", action="store_true",
                        help="the grid of ART output postprocessors instead of the training-time defenses")
    parser.add_argument("--deployed", action="store_true",
                        help="defenses as deployed: pre-trained targets, DP-SGD fine-tuning at epsilon 8, 3, 1, "
                             "Trap-MID at two strengths")
    parser.add_argument("--access", default="white-box",
                        help="comma-separated access levels of the attacks: white-box, black-box, label-only")
    parser.add_argument("--max-queries", type=int, default=None, help="query budget below white-box")
    parser.add_argument("--device", default="auto")
    add_threads_argument(parser)
    parser.add_argument("--cache-dir", default=str(REPO / "mi_art_runs" / "cache"))
    add_grid_out_arguments(parser, "mi_art_runs/defenses[-lfw][-quick][-output][-deployed]")
    parser.add_argument("--plot", default=None, help="also draw the privacy-utility frontier of the table into "
                                                     "this PNG")
    return parser


def _aligned_attack(parser: argparse.ArgumentParser, args: argparse.Namespace,
                    base: ExperimentConfig) -> ExperimentConfig | None:
    """``--adaptive``'s configuration (None without it): ``base`` with ``--variant``'s aligned form and
    ``--align-views`` as its search_views (None: the library's ALIGN_VIEWS), refused here, before anything is
    trained, as ExperimentConfig refuses it."""
    if not args.adaptive:
        if args.align_views is not None:
            parser.error(f"--align-views {args.align_views} sets the views of --adaptive's aligned attack: add "
                         "--adaptive, or leave --align-views out")
        return None
    config = dataclasses.replace(base, variant=aligned_variant(args.variant), search_views=args.align_views)
    try:
        config.validate()
    except ValueError as err:
        parser.error(f"--align-views: {err}")
    return dataclasses.replace(config, search_views=ALIGN_VIEWS if args.align_views is None else args.align_views)


def align_column(attack: str, views: int) -> str:
    """The result key's column of ``attack`` aligned over ``views`` random views (one column per K)."""
    return f"{attack}+align(K={views})"


def _plain_column(column: str) -> str:
    """The attack of a result key's column, aligned or not."""
    return column.split("+align(")[0]


def _agreement(rows: list) -> str:
    """The surrogate's top-1 agreement with the target: held-out public / private test images."""
    for r in rows:
        for sur in r.get("surrogates") or []:
            return f"{sur['agreement_public_heldout']:.2f} / {sur['agreement_private_test']:.2f}"
    return "-"


def _judge_spread(cells: dict) -> str:
    """GMI / KEDMI: the std of Acc@1 over the judges that scored the same reconstructions, mean over seeds
    ('-' with one judge)."""
    spreads = [np.mean([r.get("acc@1_judge_std") or 0.0 for r in cells[a]]) if cells[a] and
               max(int(r.get("n_judges") or 1) for r in cells[a]) > 1 else None for a in ("gmi", "kedmi")]
    return " / ".join("-" if v is None else f"{v:.3f}" for v in spreads)


def _kedmi_prior_fid(rows: list) -> str:
    """FID of the KEDMI prior made for this target (500 samples against the public images, on the judge's
    features): KEDMI's prior depends on the target, GMI's does not."""
    for r in rows:
        fid = (r.get("prior") or {}).get("fid_public")
        if fid is not None:
            return f"{fid:.0f}"
    return "-"


def print_access_table(done: dict, grid: list, out: Path, title: str) -> None:
    """Acc@1 (mean +- std over seeds) and queries of every attack column (``attack[access]``) per output defense."""
    columns = list(dict.fromkeys(k.split("/")[1] for k in done))
    print(f"\n{title}, 32x32; Acc@1 by the judge (mean +- std over attack seeds) and the queries each attack "
          "made (mean; '-' for white-box attacks)")
    print("| defense | natural acc | " + " | ".join(f"{c} Acc@1 | queries" for c in columns) + " |")
    print("|---|---|" + "---|---|" * len(columns))
    for defense, params, overrides in grid:
        name = label(defense, params, overrides)
        rows = {c: [v for k, v in done.items() if k.startswith(f"{name}/{c}/")] for c in columns}
        found = [r for rs in rows.values() for r in rs]
        if not found:
            continue
        cells = []
        for c in columns:
            acc = np.array([r["acc@1"] for r in rows[c]], dtype=float)
            queries = [r.get("queries") for r in rows[c] if r.get("queries") is not None]
            cells += ["-" if not len(acc) else f"{acc.mean():.3f} +- {acc.std():.3f}",
                      f"{np.mean(queries):.0f}" if queries else "-"]
        print(f"| {name} | {found[0]['natural_accuracy']:.3f} | " + " | ".join(cells) + " |")
    print(f"Raw records: {out}")


def print_table(done: dict, grid: list, base: ExperimentConfig, seeds: int, out: Path, title: str,
                align_views: int | None = None) -> None:
    """The white-box GMI and KEDMI table; with ``align_views`` (``--adaptive``'s K) each attack's Acc@1 aligned
    to the defense over K views and the share of the defense's protection kept against it."""
    print(f"\n{title}, 32x32; target {base.target_arch} ({base.target_epochs} epochs); "
          f"LOMMA attacks: {base.iterations} iterations, {base.n_reconstructions} reconstructions per identity; "
          f"Acc@1 by the {base.judge_arch} evaluation model, mean +- std over attack seeds")
    first = next(iter(done.values()), None)
    if first is None:
        return
    held_out = first.get("judge_test_accuracies") or [first["judge_test_accuracy"]]
    print(f"Evaluation models' held-out accuracy {' / '.join(f'{a:.3f}' for a in held_out)}"
          f"{' (Acc@1 is the mean of the ' + str(len(held_out)) + ' judges)' if len(held_out) > 1 else ''}; "
          f"chance Acc@1 {first.get('chance@1', 0.05):.3f}")
    adaptive = {} if align_views is None else adaptive_cells(done, grid, align_views)
    if align_views is not None:
        print(f"With alignment: the same attack aligned to the defense ({aligned_variant(base.variant)}: its identity "
              f"loss averaged over K={align_views} random geometric views per step, AlignMI's gradient alignment); "
              "protection kept = (undefended Acc@1 - Acc@1 with alignment) / (undefended Acc@1 - Acc@1), the "
              "undefended target attacked without alignment ('-': no undefended row, or no protection to keep)")
    header = (f"| {'defense':<36} | {'natural acc':>11} | {'epsilon':>8} | {'GMI+LOMMA Acc@1':>15} | "
              f"{'KEDMI+LOMMA Acc@1':>17} | {'GMI KNN':>7} | {'KEDMI KNN':>9} | {'KEDMI prior FID':>15} | "
              f"{'surrogate agreement':>19} | {'judges spread':>13} |")
    if align_views is not None:
        header += "".join(f" {a} Acc@1 with alignment (K={align_views}) | {a} protection kept |"
                          for a in ("GMI", "KEDMI"))
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for defense, params, overrides in grid:
        name = label(defense, params, overrides)
        cells = _white_box_cells(done, name)
        rows = cells["gmi"] + cells["kedmi"]
        if not rows:
            continue
        aligned = {} if align_views is None else _white_box_cells(done, name, [
            align_column(a, align_views) for a in ("gmi", "kedmi")])

        def stat(a: str, metric: str, fmt: str = ".3f") -> str:
            vals = np.array([r[metric] for r in {**cells, **aligned}[a]], dtype=float)
            return "n/a" if not len(vals) else f"{vals.mean():{fmt}} +- {vals.std():{fmt}}"

        def kept(a: str) -> str:
            share = (adaptive.get((name, a)) or {}).get("kept")
            return "-" if share is None else f"{100 * share:.0f}%"

        eps = rows[0]["epsilon"]
        print(f"| {name:<36} | {rows[0]['natural_accuracy']:>11.3f} | {'-' if eps is None else f'{eps:.2f}':>8} | "
              f"{stat('gmi', 'acc@1'):>15} | {stat('kedmi', 'acc@1'):>17} | "
              f"{stat('gmi', 'knn_dist', '.1f').split(' +-')[0]:>7} | {stat('kedmi', 'knn_dist', '.1f').split(' +-')[0]:>9} | "
              f"{_kedmi_prior_fid(cells['kedmi']):>15} | {_agreement(rows):>19} | {_judge_spread(cells):>13} |"
              + "".join(f" {stat(align_column(a, align_views), 'acc@1')} | {kept(a)} |"
                        for a in ("gmi", "kedmi") if align_views is not None))
    print(f"Raw records: {out}")


def adaptive_cells(done: dict, grid: list, views: int) -> dict:
    """(row name, attack) -> :func:`~mi_art.evaluations.utility.adaptive_comparison`'s entry (the plain and the
    aligned attack's mean over seeds, the undefended one's, and the protection kept) of the grid's white-box GMI
    and KEDMI cells aligned over ``views`` views; the undefended target is the one of the row's configuration
    (its architecture: :func:`_by_configuration`)."""
    columns = ["gmi", "kedmi", align_column("gmi", views), align_column("kedmi", views)]
    out = {}
    for group in _by_configuration(grid):  # each defense against the undefended target of its own configuration
        rows = [{**r, "defense_label": label(*g)} for g in group
                for cells in _white_box_cells(done, label(*g), columns).values() for r in cells]
        out.update({(c["defense_label"], c["attack"]): c for c in adaptive_comparison(aggregate(rows))})
    return out


def frontier_rows(done: dict, grid: list) -> list:
    """:func:`aggregate`'s rows (mean and spread over attack seeds) of the grid's GMI and KEDMI cells, for the
    frontier plot; each point is named by its parameters (DP-SGD's by its epsilon)."""
    rows = []
    for defense, params, overrides in grid:
        name = label(defense, params, overrides)
        rows += [{**r, "defense_label": name.replace(" [pre-trained]", "")}
                 for cells in _white_box_cells(done, name).values() for r in cells]
    return aggregate(rows)


def _white_box_cells(done: dict, name: str, columns=("gmi", "kedmi")) -> dict:
    """The finished white-box records of the grid row ``name`` by column (default: GMI+LOMMA and KEDMI+LOMMA)."""
    return {a: [v for k, v in done.items() if k.startswith(f"{name}/{a}/")] for a in columns}


if __name__ == "__main__":
    main()
