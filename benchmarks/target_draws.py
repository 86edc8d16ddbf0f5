"""Benchmark: how much of an attack's accuracy is the target draw or the judge draw, not the attack.

``attack_variants.py`` attacks one target and measures with one evaluation model. Here the same target
recipe (architecture, epochs, augmentation, data split) is trained from other initialisation seeds, and
each target is attacked with the same evaluation model and the same (target-independent) GMI prior;
KEDMI's prior, p_reg and the surrogates are made per target. With ``--judge-seeds`` the same
reconstructions are also judged by evaluation models of the judge's recipe from other initialisation
seeds (each with its held-out accuracy). The tables give the attacks' Acc@1 per target and per judge
(mean +- std over attack seeds), then the spread over targets and over judges. Finished cells are stored
in --out (atomically) and skipped when the script is run again.

    python benchmarks/target_draws.py --methods KEDMI,KEDMI+LOM --target-seeds 0,1,2 --seeds 3
    python benchmarks/target_draws.py --methods GMI,KEDMI --target-seeds 0 --judge-seeds 1000,1001,1002 --seeds 3
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _cells import AttackCell, run_attack_cells
from _results import Results
from _settings import DEFAULT_ROOT, REPO, add_threads_argument, att_faces_config
from mi_art.threads import set_threads

from mi_art.evaluations.cache import ArtifactCache
from mi_art.evaluations.experiment import Workbench
from mi_art.evaluations.metrics import attack_accuracy, natural_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(DEFAULT_ROOT))
    parser.add_argument("--target-seeds", default="0,1,2", help="initialisation seeds of the targets")
    parser.add_argument("--judge-seeds", default="",
                        help="initialisation seeds of extra evaluation models that judge the same reconstructions "
                             "(the default judge's is 1000)")
    parser.add_argument("--seeds", type=int, default=1, help="attack seeds per target (default 1)")
    parser.add_argument("--methods", default="GMI,KEDMI", help="e.g. 'GMI,KEDMI,KEDMI+LOM'")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--device", default="auto")
    add_threads_argument(parser)
    parser.add_argument("--cache-dir", default=str(REPO / "mi_art_runs" / "cache"))
    parser.add_argument("--out", default=str(REPO / "mi_art_runs" / "target_draws.json"))
    args = parser.parse_args()
    set_threads(args.threads)
    config = att_faces_config(args.data_root, iterations=args.iterations, n_reconstructions=5, gmi_steps=1500,
                              kedmi_steps=200, surrogate_steps=3000, device=args.device)
    bench = Workbench(config, ArtifactCache(args.cache_dir))
    judge = bench.judge()
    judges = {int(s): bench.redraw("judge", int(s)) for s in args.judge_seeds.split(",") if s.strip()}
    judge_accuracy = {s: natural_accuracy(j, bench.data.private_test.x, bench.data.private_test.y)
                      for s, j in judges.items()}
    results = Results(args.out)
    methods = [m.strip() for m in args.methods.split(",")]
    start = time.perf_counter()
    for target_seed in (int(s) for s in args.target_seeds.split(",")):
        target = bench.redraw("target", target_seed)
        run_attack_cells(results, target_cells(target_seed, methods, range(args.seeds)), bench, target, judge,
                         describe=_describe, annotate=lambda cell, result, seed=target_seed: {
                             "target_seed": seed, **_other_judges(judges, judge_accuracy, result)})
    print_table(results.records, methods)
    print_judge_table(results.records, methods)
    print(f"total wall time {time.perf_counter() - start:.0f}s")


def target_cells(target_seed: int, methods: list, seeds: range) -> list:
    """The cells of the target drawn with ``target_seed``: every method (``"KEDMI+LOM"``: attack and variant) at
    every attack seed, keyed ``target<seed>/<method>/seed<seed>``."""
    return [AttackCell(f"target{target_seed}/{name}/seed{seed}", name.lower().partition("+")[0],
                       name.lower().partition("+")[2] or "baseline", seed) for name in methods for seed in seeds]


def _other_judges(judges: dict, accuracy: dict, result: dict) -> dict:
    """``{"judges": ...}``: the Acc@1 the extra evaluation models (by seed) give the same reconstructions, beside
    their held-out accuracy (nothing without --judge-seeds)."""
    if not judges:
        return {}
    return {"judges": {str(s): {"test_accuracy": accuracy[s], "acc@1": attack_accuracy(
        j, result["reconstructions"], result["labels"], top_k=(1,))["acc@1"]} for s, j in judges.items()}}


def _describe(key: str, record: dict) -> str:
    """A finished cell's line on the console."""
    return (f"{key:<24} target acc {record['target_test_accuracy']:.3f}  Acc@1 {record['acc@1']:.3f}  "
            f"KNN {record['knn_dist']:.1f}")


def print_table(done: dict, methods: list) -> None:
    seeds = sorted({r["target_seed"] for r in done.values()})
    print("\n| method | " + " | ".join(f"target seed {s} (acc {_target_acc(done, s)})" for s in seeds)
          + " | mean over targets |")
    print("|---" * (len(seeds) + 2) + "|")
    for name in methods:
        cells, means = [], []
        for s in seeds:
            acc = [r["acc@1"] for k, r in done.items() if k.startswith(f"target{s}/{name}/")]
            cells.append(f"{np.mean(acc):.3f} +- {np.std(acc):.3f} ({len(acc)})" if acc else "-")
            if acc:
                means.append(np.mean(acc))
        print(f"| {name} | " + " | ".join(cells) + f" | {np.mean(means):.3f} +- {np.std(means):.3f} |")
    print("(Acc@1 mean +- std over attack seeds, their number in brackets; the last column: mean +- std of the "
          "per-target means)")


def print_judge_table(done: dict, methods: list) -> None:
    judged = [r for r in done.values() if r.get("judges")]
    if not judged:
        return
    seeds = sorted({s for r in judged for s in r["judges"]}, key=int)
    held = {s: next(r["judges"][s]["test_accuracy"] for r in judged if s in r["judges"]) for s in seeds}
    print("\n| method (target seed) | " + " | ".join(f"judge seed {s} (held-out acc {held[s]:.3f})" for s in seeds)
          + " | mean over judges |")
    print("|---" * (len(seeds) + 2) + "|")
    for name in methods:
        for t in sorted({r["target_seed"] for r in judged}):
            rows = [r for k, r in done.items() if r.get("judges") and k.startswith(f"target{t}/{name}/")]
            if not rows:
                continue
            per_judge = [[r["judges"][s]["acc@1"] for r in rows if s in r["judges"]] for s in seeds]
            means = [np.mean(a) for a in per_judge if a]
            print(f"| {name} ({t}) | " + " | ".join(f"{np.mean(a):.3f} +- {np.std(a):.3f} ({len(a)})" if a else "-"
                                                   for a in per_judge)
                  + f" | {np.mean(means):.3f} +- {np.std(means):.3f} |")
    print("(Acc@1 of the same reconstructions by each judge, mean +- std over attack seeds, their number in "
          "brackets; the last column: mean +- std of the per-judge means)")


def _target_acc(done: dict, seed: int) -> str:
    accs = {r["target_test_accuracy"] for r in done.values() if r["target_seed"] == seed}
    return ", ".join(f"{a:.3f}" for a in sorted(accs))


if __name__ == "__main__":
    main()
