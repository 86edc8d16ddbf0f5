"""Benchmark: ART's MIFace against GMI and KEDMI with and without LOMMA's two improvements.

On AT&T faces (private s1-s20, public s21-s40, 32x32 grayscale) the target, the evaluation model,
the GAN priors and the surrogates are trained once (cached under --cache-dir) and reused by every
method and seed. Each method runs with several attack seeds; the table gives mean +- std over seeds
of Acc@1, Acc@5 (by the independent evaluation model), KNN distance (squared L2 in its feature
space) and attack seconds per reconstruction. Finished cells are stored in --out (atomically) and
skipped when the script is run again.

    python benchmarks/attack_variants.py             # full run (about an hour on 2 CPU cores)
    python benchmarks/attack_variants.py --quick     # a first look in a few minutes
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
from mi_art.evaluations.experiment import ExperimentConfig, Workbench, public_record, run_attack
from mi_art.utils import write_atomic

METHODS = [("miface", "baseline", "ART MIFace")] + [
    (attack, variant, f"{attack.upper()}{'' if variant == 'baseline' else '+' + variant.upper()}")
    for attack in ("gmi", "kedmi") for variant in ("baseline", "lom", "ma", "lomma")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(DEFAULT_ROOT))
    parser.add_argument("--quick", action="store_true", help="small budgets: a first look in minutes")
    parser.add_argument("--seeds", type=int, default=None, help="attack seeds (default 3; quick 2)")
    parser.add_argument("--iterations", type=int, default=None, help="GAN attack iterations (default 1000)")
    parser.add_argument("--prior-steps", type=int, default=None, help="WGAN-GP generator steps (default 1500)")
    parser.add_argument("--kedmi-steps", type=int, default=None,
                        help="KEDMI generator steps, each after 5 discriminator steps, warm-started from the GMI "
                             "prior's generator (default 200)")
    parser.add_argument("--surrogate-steps", type=int, default=None, help="distillation steps at most (default 3000)")
    parser.add_argument("--miface-iterations", type=int, default=None, help="MIFace iterations (default 2000)")
    parser.add_argument("--pretrain-epochs", type=int, default=0,
                        help="pre-train target and judge this many epochs on the public identities before "
                             "fine-tuning on the private ones (the papers' targets start from pre-trained "
                             "weights; default 0: from scratch)")
    parser.add_argument("--surrogate-pretrain-epochs", type=int, default=0,
                        help="pre-train each surrogate this many epochs on the public identities before distilling "
                             "the target into it (the paper's surrogates start from pre-trained weights; default 0)")
    parser.add_argument("--methods", default=None, help="comma-separated subset, e.g. 'GMI,GMI+LOMMA'")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", default=str(REPO / "mi_art_runs" / "cache"))
    parser.add_argument("--out", default=None, help="results JSON (default mi_art_runs/attack_variants[-quick].json)")
    parser.add_argument("--also", nargs="*", default=(), help="more result files to merge into the table (another "
                                                              "process's --out, e.g. for a second CPU core)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    q = args.quick
    seeds = args.seeds or (2 if q else 3)
    config = att_faces_config(
        args.data_root, iterations=args.iterations or (200 if q else 1000), n_reconstructions=5,
        prior_steps=args.prior_steps or (300 if q else 1500), kedmi_steps=args.kedmi_steps or (60 if q else 200),
        surrogate_steps=args.surrogate_steps or (1000 if q else 3000),
        miface_iterations=args.miface_iterations or (300 if q else 2000), device=args.device,
        target_pretrain_epochs=args.pretrain_epochs, eval_pretrain_epochs=args.pretrain_epochs,
        surrogate_pretrain_epochs=args.surrogate_pretrain_epochs)
    out = Path(args.out or REPO / "mi_art_runs" / f"attack_variants{'-quick' if q else ''}.json")
    done = json.loads(out.read_text()) if out.is_file() else {}
    wanted = None if args.methods is None else {m.strip() for m in args.methods.split(",")}

    start = time.perf_counter()
    bench = Workbench(config, ArtifactCache(args.cache_dir))
    target, evaluator = bench.target(), bench.evaluator()
    print(f"data: {len(bench.data.private_train)} private train / {len(bench.data.private_test)} test images of "
          f"{bench.data.num_classes} identities, {len(bench.data.public)} public images; "
          f"setup {time.perf_counter() - start:.0f}s", flush=True)
    for attack, variant, name in METHODS:
        if wanted is not None and name not in wanted:
            continue
        for seed in range(1 if attack == "miface" else seeds):
            key = f"{name}/seed{seed}"
            if key in done:
                continue
            t0 = time.perf_counter()
            if attack == "gmi":
                bench.gmi_prior()
            elif attack == "kedmi":
                bench.kedmi_prior(target)
            if variant in ("ma", "lomma"):
                bench.surrogates(target)
            prep = time.perf_counter() - t0
            record = public_record(run_attack(bench, attack=attack, variant=variant, attack_seed=seed,
                                              target=target, evaluator=evaluator))
            record["artifact_seconds"] = prep
            done[key] = record
            write_atomic(out, json.dumps(done, indent=1))
            print(f"{key:<22} Acc@1 {record['acc@1']:.3f}  Acc@5 {_num(record['acc@5'])}  KNN {record['knn_dist']:.2f}  "
                  f"{record['seconds_per_reconstruction']:.3f} s/rec  (artifacts {prep:.0f}s)", flush=True)
    merged = dict(done)
    for extra in args.also:
        merged.update(json.loads(Path(extra).read_text()))
    print_table(merged, config, seeds, out)
    print(f"total wall time {time.perf_counter() - start:.0f}s")


def _num(value, fmt: str = ".3f") -> str:
    return "n/a" if value is None else f"{value:{fmt}}"


def _pretraining(config: ExperimentConfig) -> str:
    n, s = config.target_pretrain_epochs, config.surrogate_pretrain_epochs
    return ((f"target and judge pre-trained {n} epochs on the public identities, " if n else "")
            + (f"surrogates pre-trained {s} epochs on the public identities, " if s else ""))


def print_table(done: dict, config: ExperimentConfig, seeds: int, out: Path) -> None:
    first = next(iter(done.values()))
    print(f"\nAT&T faces 32x32, private s1-s20 ({first['n_identities']} identities; chance Acc@1 "
          f"{_num(first.get('chance@1'), '.2f')}, Acc@5 {_num(first.get('chance@5'), '.2f')}), "
          f"{_pretraining(config)}target {config.target_arch} "
          f"(test acc {first['target_test_accuracy']:.3f}), evaluation model {config.eval_arch} "
          f"(test acc {first['evaluator_test_accuracy']:.3f}); GAN attacks: {config.iterations} iterations, "
          f"{config.n_reconstructions} reconstructions per identity; mean +- std over attack seeds")
    header = (f"| {'method':<12} | {'seeds':>5} | {'Acc@1':>15} | {'Acc@5':>15} | {'KNN dist':>15} | {'s / rec':>13} "
              f"| {'prior s':>7} | {'prior FID':>9} | {'surrogate agreement (public / private)':<38} |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for _, _, name in METHODS:
        rows = [v for k, v in done.items() if k.split("/")[0] == name]
        if not rows:
            continue

        def cell(metric: str, fmt: str = ".3f") -> str:
            values = np.array([np.nan if r[metric] is None else r[metric] for r in rows], dtype=float)
            return "n/a" if np.isnan(values).all() else f"{np.nanmean(values):{fmt}} +- {np.nanstd(values):{fmt}}"

        prior = rows[0].get("prior") or {}
        agreement = ", ".join(f"{s['arch']} {s['agreement_public_heldout']:.2f} / {s['agreement_private_test']:.2f}"
                              for s in rows[0].get("surrogates") or []) or "-"
        print(f"| {name:<12} | {len(rows):>5} | {cell('acc@1'):>15} | {cell('acc@5'):>15} | {cell('knn_dist', '.1f'):>15} "
              f"| {cell('seconds_per_reconstruction'):>13} | {_num(prior.get('train_seconds'), '.0f'):>7} "
              f"| {_num(prior.get('fid_public'), '.1f'):>9} | {agreement:<38} |")
    print(f"(MIFace is deterministic from its grey start: one run, {first['n_identities']} reconstructions. Prior s: "
          f"training seconds of the prior (KEDMI: its fine-tuning from the GMI generator); prior FID: 500 samples "
          f"against the public images on the evaluation model's features.) Raw records: {out}")


if __name__ == "__main__":
    main()
