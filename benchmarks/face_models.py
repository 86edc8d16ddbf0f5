"""Benchmark: which target and evaluation model recognise faces, offline: architectures side by side,
trained from scratch or pre-trained on the public identities then fine-tuned on the private ones.

Each choice is trained by the benchmark's own recipe (``benchmarks/_settings.py``: data, augmentation,
epochs), through ``Workbench.target()`` with the architecture and pre-training overridden, from
initialisation seeds 0, 1, ...; pre-trained bodies and models are cached (the benchmark's own target is
one of them, so the attack benchmark reuses it). The table gives the test accuracy on the held-out
private images (mean +- sample std over seeds) and the CPU seconds per model. Finished records are
stored in --out and skipped when the script is run again.

    python benchmarks/face_models.py --benchmark lfw
    python benchmarks/face_models.py --benchmark lfw --choices cnn:0,cnn:60,resnet10:60 --seeds 2
    python benchmarks/face_models.py --benchmark lfw --choices dlib-head:0,dlib-finetune:0 --epochs 30 --dlib-judge

``dlib-head`` / ``dlib-finetune`` are targets as deployed (dlib's pretrained recogniser with a head for the
private identities, :mod:`mi_art.deployed_faces`); ``--dlib-judge`` adds the independent judge's own accuracy.
"""
from __future__ import annotations

import argparse
import time
from typing import Dict, List, Tuple

import numpy as np
import torch

from _results import Results
from _settings import BENCHMARKS, add_run_arguments, artifact_cache, benchmark_config, results_path
from mi_art.threads import set_threads

from mi_art.evaluations.experiment import Workbench
from mi_art.evaluations.metrics import natural_accuracy
from mi_art.models import ARCHITECTURES, RENAMED_ARCHITECTURES

DEFAULT_CHOICES = "cnn:0,cnn:60,cnn-wide:60,resnet10:0,resnet10:60,resnet18:60"


def _choices(text: str) -> List[Tuple[str, int]]:
    """``"cnn:0,resnet10:60"`` -> ``[("cnn", 0), ("resnet10", 60)]`` (architecture, public pre-training epochs)."""
    out = []
    for part in text.split(","):
        arch, _, pre = part.strip().partition(":")
        arch = RENAMED_ARCHITECTURES.new(arch, "--choices")
        if arch not in ARCHITECTURES:
            raise SystemExit(f"unknown architecture {arch!r}; choose among {', '.join(sorted(ARCHITECTURES))}")
        out.append((arch, int(pre or 0)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", choices=sorted(BENCHMARKS), default="lfw")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--choices", default=DEFAULT_CHOICES,
                        help=f"architecture:pre-training epochs, comma-separated (default {DEFAULT_CHOICES}; 0: "
                             "from scratch)")
    parser.add_argument("--epochs", type=int, default=None, help="training / fine-tuning epochs (default: the "
                                                                  "benchmark's target epochs)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=None, help="side of the images (default: the benchmark's)")
    parser.add_argument("--dlib-judge", action="store_true",
                        help="add the row of dlib's recogniser as the independent judge (nearest identity centroid)")
    add_run_arguments(parser, "face_models", device="cpu")
    args = parser.parse_args()
    set_threads(args.threads)
    size = "" if args.image_size is None else f"-{args.image_size}px"
    out = results_path(args, "face_models", size)
    results = Results(out)
    choices = _choices(args.choices)
    data = None
    start = time.perf_counter()
    for seed in range(args.seeds):
        for arch, pre in choices:
            key = f"{RENAMED_ARCHITECTURES.old(arch)}/pre{pre}/seed{seed}"  # a renamed one: the results file's key
            if key in results:
                continue
            overrides = dict(target_arch=arch, target_pretrain_epochs=pre, seed=seed, device=args.device)
            if args.epochs is not None:
                overrides["target_epochs"] = args.epochs
            config = benchmark_config(args.benchmark, args.data_root, **overrides)
            if args.image_size is not None:
                config.data_options = {**config.data_options, "image_size": args.image_size}
            bench = Workbench(config, artifact_cache(args.cache_dir), data=data)
            data = bench.data
            c0, w0 = time.process_time(), time.perf_counter()
            model = bench.target()
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            acc = natural_accuracy(model, data.private_test.x, data.private_test.y)
            results.store(key, {
                "arch": arch, "pretrain_epochs": pre, "epochs": bench.config.target_epochs, "seed": seed,
                "test_accuracy": acc, "cpu_seconds": cpu, "wall_seconds": wall,
                "params": sum(p.numel() for p in model.parameters()),
                "image_size": data.image_size, "channels": data.channels, "n_test": len(data.private_test),
                "n_train": len(data.private_train), "n_public": len(data.public),
                "num_classes": data.num_classes, "num_public_classes": data.num_public_classes})
            print(f"{key:<28} test acc {acc:.3f}  ({cpu:.0f} CPU s; 0 when loaded from the cache)", flush=True)
    if data is not None and "dlib-centroid" not in results and args.dlib_judge:
        results.store("dlib-centroid", dlib_centroid_record(data))
    print("\n" + render_table(results.records, args.benchmark, choices))
    print(f"wall time of this run {time.perf_counter() - start:.0f}s")


def dlib_centroid_record(data) -> dict:
    """dlib's recogniser untrained here (the independent judge): nearest identity centroid of its descriptors of
    the private training images, on the private test images at this size."""
    from mi_art.evaluations.independent import make_dlib_judge

    start = time.process_time()
    judge = make_dlib_judge(data.private_train.x, data.private_train.y, data.num_classes)
    acc = judge.accuracy(data.private_test.x, data.private_test.y)
    print(f"dlib nearest centroid (no training) test acc {acc:.3f}", flush=True)
    return {"arch": "dlib-centroid", "pretrain_epochs": None, "epochs": 0, "seed": None, "test_accuracy": acc,
            "cpu_seconds": time.process_time() - start, "params": sum(p.numel() for p in judge.embedder.parameters())}


def render_table(done: Dict[str, dict], benchmark: str, choices: List[Tuple[str, int]]) -> str:
    first = next(r for key, r in done.items() if key != "dlib-centroid")
    k = first["num_classes"]
    lines = [f"{BENCHMARKS[benchmark]['title']}: {first['image_size']}x{first['image_size']}, {first['channels']} "
             f"channel(s), {k} private identities ({first['n_train']} training / {first['n_test']} test images; "
             f"chance {1 / k:.3f}), {first['num_public_classes']} public identities ({first['n_public']} images) for "
             "pre-training. Test accuracy on the private test images, mean ± sample std over initialisation seeds.",
             "", "| architecture | parameters | public pre-training epochs | fine-tune epochs | test accuracy | seeds "
             "| CPU s per model |", "|---|---|---|---|---|---|---|"]
    for arch, pre in choices:
        rows = [r for r in done.values() if r["arch"] == arch and r["pretrain_epochs"] == pre]
        if not rows:
            continue
        acc = [r["test_accuracy"] for r in rows]
        std = float(np.std(acc, ddof=1)) if len(acc) > 1 else 0.0
        trained = [r["cpu_seconds"] for r in rows if r["cpu_seconds"] > 1]
        cpu = f"{np.mean(trained):.0f}" if trained else "cached"
        lines.append(f"| {arch} | {rows[0]['params'] / 1e6:.2f}M | {pre or 'none (from scratch)'} | {rows[0]['epochs']} "
                     f"| {np.mean(acc):.3f} ± {std:.3f} | {len(acc)} | {cpu} |")
    judge = done.get("dlib-centroid")
    if judge:
        lines.append(f"| dlib's recogniser, nearest identity centroid (no training: the independent judge) | "
                     f"{judge['params'] / 1e6:.2f}M | ~3M faces (dlib) | none | {judge['test_accuracy']:.3f} | - | "
                     f"{judge['cpu_seconds']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
