"""Benchmark: how much of an attack's accuracy is the target draw, not the attack.

``attack_variants.py`` attacks one target. Here the same recipe (architecture, epochs, augmentation,
data split) is trained from other initialisation seeds, and each target is attacked with the same
evaluation model and the same (target-independent) GMI prior; KEDMI's prior, p_reg and the surrogates
are made per target. The table gives each target's test accuracy and the attacks' Acc@1 / KNN distance
per target (mean +- std over attack seeds), then the spread over targets. Finished cells are stored in
--out (atomically) and skipped when the script is run again.

    python benchmarks/target_draws.py --methods KEDMI,KEDMI+LOM --target-seeds 0,1,2 --seeds 3
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from _att_faces import DEFAULT_ROOT, REPO, att_faces_config

from mi_art.evaluations.cache import ArtifactCache
from mi_art.evaluations.experiment import Workbench, public_record, run_attack
from mi_art.utils import write_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(DEFAULT_ROOT))
    parser.add_argument("--target-seeds", default="0,1,2", help="initialisation seeds of the targets")
    parser.add_argument("--seeds", type=int, default=1, help="attack seeds per target (default 1)")
    parser.add_argument("--methods", default="GMI,KEDMI", help="e.g. 'GMI,KEDMI,KEDMI+LOM'")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", default=str(REPO / "mi_art_runs" / "cache"))
    parser.add_argument("--out", default=str(REPO / "mi_art_runs" / "target_draws.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = att_faces_config(args.data_root, iterations=args.iterations, n_reconstructions=5, prior_steps=1500,
                              kedmi_steps=200, surrogate_steps=3000, device=args.device)
    bench = Workbench(config, ArtifactCache(args.cache_dir))
    c = config
    evaluator = bench.evaluator()
    out = Path(args.out)
    done = json.loads(out.read_text()) if out.is_file() else {}
    methods = [m.strip() for m in args.methods.split(",")]
    start = time.perf_counter()
    for target_seed in (int(s) for s in args.target_seeds.split(",")):
        if target_seed == c.seed:
            target = bench.target()
        else:  # the workbench's own target recipe, from another seed; artifacts then follow its weights
            target = bench.cache.module(
                "target", {**bench.target_key(), "seed": target_seed}, lambda: bench._classifier(c.target_arch),
                lambda s=target_seed: bench._trained_classifier(c.target_arch, c.target_epochs,
                                                                c.target_pretrain_epochs, s, f"target seed {s}"),
            ).to(bench.device)
        for name in methods:
            attack, _, variant = name.lower().partition("+")
            for seed in range(args.seeds):
                key = f"target{target_seed}/{name}/seed{seed}"
                if key in done:
                    continue
                record = public_record(run_attack(bench, attack=attack, variant=variant or "baseline",
                                                  attack_seed=seed, target=target, evaluator=evaluator))
                record["target_seed"] = target_seed
                done[key] = record
                write_atomic(out, json.dumps(done, indent=1))
                print(f"{key:<24} target acc {record['target_test_accuracy']:.3f}  Acc@1 {record['acc@1']:.3f}  "
                      f"KNN {record['knn_dist']:.1f}", flush=True)
    print_table(done, methods)
    print(f"total wall time {time.perf_counter() - start:.0f}s")


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


def _target_acc(done: dict, seed: int) -> str:
    accs = {r["target_test_accuracy"] for r in done.values() if r["target_seed"] == seed}
    return ", ".join(f"{a:.3f}" for a in sorted(accs))


if __name__ == "__main__":
    main()
