"""Benchmark: target and evaluation-model (judge) test accuracy with and without public pre-training.

On AT&T faces (all 40 identities: s1-s20 private with 8 train / 2 test images each, s21-s40 public
with 10 images each), the target (``cnn``) and the judge (``cnn-wide``) are trained on the private
training images either from scratch, or after pre-training on the public identities (their own labels)
with the classification layer then replaced and every layer fine-tuned
(``ExperimentConfig.target_pretrain_epochs`` / ``judge_pretrain_epochs``, :mod:`mi_art.pretraining`).
Each fine-tuning budget ("regime") is run with several seeds (a seed sets initialisation, batching and
augmentation of both steps); the table gives the test accuracy on the held-out private images, mean
+- sample std over seeds, and the CPU seconds of each step. Pre-trained bodies are cached (keyed by
their own budget) and shared by every regime. Finished records are stored in --out and skipped when
the script is run again.

    python benchmarks/pretraining.py                        # 32x32, regimes 60/80 and 10/10 epochs, 3 seeds
    python benchmarks/pretraining.py --image-size 64        # the same at 64x64 (about 5x the CPU time)
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

from _results import Results
from _settings import DEFAULT_ROOT, REPO, add_setting_argument, add_threads_argument, att_faces_config, parse_args
from mi_art.threads import set_threads

from mi_art.evaluations.cache import ArtifactCache
from mi_art.evaluations.experiment import Workbench
from mi_art.evaluations.metrics import natural_accuracy
from mi_art.utils import write_atomic

MODELS = (("target", "target_arch"), ("judge", "judge_arch"))


def _regimes(text: str) -> List[Tuple[int, int]]:
    """``"60/80,10/10"`` -> ``[(60, 80), (10, 10)]`` (target epochs / judge epochs)."""
    out = []
    for part in text.split(","):
        t, _, e = part.strip().partition("/")
        out.append((int(t), int(e or t)))
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(DEFAULT_ROOT))
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--regimes", default="60/80,10/10",
                        help="fine-tuning (and from-scratch) epochs of target/judge, comma-separated "
                             "(60/80: the budgets of the AT&T attack benchmarks)")
    parser.add_argument("--target-pretrain-epochs", type=int, default=60)
    add_setting_argument(parser, "judge_pretrain_epochs", type=int, default=60,
                         help="the judge's pre-training epochs on the public identities (default 60)")
    add_threads_argument(parser)
    parser.add_argument("--cache-dir", default=str(REPO / "mi_art_runs" / "pretraining-cache"))
    parser.add_argument("--out", default=None, help="results JSON (default mi_art_runs/pretraining-<size>.json)")
    parser.add_argument("--md", default=None, help="also write the table (with the command and date) to this file")
    return parser


def main() -> None:
    args = parse_args(_parser())
    set_threads(args.threads)
    out = Path(args.out or REPO / "mi_art_runs" / f"pretraining-{args.image_size}.json")
    results = Results(out)
    regimes = _regimes(args.regimes)
    pre = {"target": args.target_pretrain_epochs, "judge": args.judge_pretrain_epochs}
    start = time.perf_counter()
    data = None
    for seed in range(args.seeds):
        for t_epochs, e_epochs in regimes:
            for pretrained in (False, True):
                for model, arch_field in MODELS:
                    epochs = t_epochs if model == "target" else e_epochs
                    key = f"{model}/{epochs}/{'pre' if pretrained else 'scratch'}/seed{seed}"
                    if key in results:
                        continue
                    base = att_faces_config(args.data_root, seed=seed, target_epochs=t_epochs, judge_epochs=e_epochs,
                                            device="cpu")
                    base.data_options = {**base.data_options, "image_size": args.image_size}
                    if pretrained:
                        base.target_pretrain_epochs = pre["target"]
                        base.judge_pretrain_epochs = pre["judge"]
                    bench = Workbench(base, ArtifactCache(args.cache_dir), data=data)
                    data = bench.data
                    arch = getattr(base, arch_field)
                    pre_seconds, pre_trained_here = None, False
                    if pretrained:  # time the pre-training (trained once, then cached) apart from the fine-tuning
                        pre_seed = seed if model == "target" else seed + 1000
                        pre_key = bench.key("pretrained", arch=arch, epochs=pre[model], seed=pre_seed)
                        path = bench.cache.path("pretrained", pre_key)
                        pre_trained_here = not path.is_file()
                        c0 = time.process_time()
                        bench.pretrained(arch, pre[model], pre_seed, model)
                        pre_seconds = time.process_time() - c0
                    c0 = time.process_time()
                    net = bench.target() if model == "target" else bench.judge()
                    seconds = time.process_time() - c0
                    acc = natural_accuracy(net, data.private_test.x, data.private_test.y)
                    results.store(key, {
                        "model": model, "arch": arch, "pretrained": pretrained, "seed": seed, "epochs": epochs,
                        "pretrain_epochs": pre[model] if pretrained else 0, "test_accuracy": acc,
                        "cpu_seconds": seconds, "pretrain_cpu_seconds": pre_seconds,
                        "pretrain_trained_here": pre_trained_here, "image_size": args.image_size,
                        "n_test": len(data.private_test), "num_classes": data.num_classes,
                        "num_public_classes": data.num_public_classes})
                    print(f"{key:<28} test acc {acc:.3f}  ({seconds:.0f} CPU s"
                          + ("" if pre_seconds is None else f", pre-training {pre_seconds:.0f} CPU s") + ")",
                          flush=True)
    done = results.records
    table = render_table(done, args, regimes)
    print("\n" + table)
    cpu = sum(r["cpu_seconds"] + (r["pretrain_cpu_seconds"] or 0) for r in done.values())
    print(f"total CPU seconds of the records: {cpu:.0f}; wall time of this run {time.perf_counter() - start:.0f}s")
    if args.md:
        command = "python " + " ".join(sys.argv)
        text = (f"Command: `{command}` (under `nice -n 10`, one torch thread)\n\nDate: {datetime.date.today()}\n\n"
                f"{table}\n\nTotal CPU seconds (all records): {cpu:.0f}. Raw records: {_shown(out)}\n")
        write_atomic(Path(args.md), text)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _cell(values: List[float], fmt: str = ".3f") -> str:
    if not values:
        return "-"
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{np.mean(values):{fmt}} ± {std:{fmt}}"


def render_table(done: Dict[str, dict], args: argparse.Namespace, regimes: List[Tuple[int, int]]) -> str:
    first = next(iter(done.values()))
    k = first["num_classes"]
    lines = [f"AT&T faces {args.image_size}x{args.image_size} greyscale: {k} private identities (8 train / 2 test "
             f"images each, {first['n_test']} test images; chance {1 / k:.3f}), {first['num_public_classes']} public "
             f"identities (10 images each) for pre-training. Test accuracy on the private test images, mean ± sample "
             f"std over seeds; CPU seconds per model (mean), one torch thread.", "",
             "| model | fine-tune epochs | from scratch | pre-trained, then fine-tuned | gain | seeds | "
             "CPU s scratch | CPU s pre-train + fine-tune |",
             "|---|---|---|---|---|---|---|---|"]
    for model, arch_field in MODELS:
        for t_epochs, e_epochs in regimes:
            epochs = t_epochs if model == "target" else e_epochs
            rows = {p: [r for r in done.values() if r["model"] == model and r["epochs"] == epochs
                        and r["pretrained"] == p] for p in (False, True)}
            if not rows[False] and not rows[True]:
                continue
            acc = {p: [r["test_accuracy"] for r in rows[p]] for p in rows}
            gain = "-" if not (acc[False] and acc[True]) else f"{np.mean(acc[True]) - np.mean(acc[False]):+.3f}"
            arch = (rows[False] or rows[True])[0]["arch"]
            pre_epochs = rows[True][0]["pretrain_epochs"] if rows[True] else "-"
            cpu_s = np.mean([r["cpu_seconds"] for r in rows[False]]) if rows[False] else float("nan")
            # pre-training: trained once per model and seed (the other regimes load it), timed where trained
            trained = [r["pretrain_cpu_seconds"] for r in done.values() if r["model"] == model
                       and r.get("pretrain_trained_here")]
            cpu_p = (np.mean(trained) if trained else float("nan"),
                     np.mean([r["cpu_seconds"] for r in rows[True]]) if rows[True] else float("nan"))
            lines.append(f"| {model} ({arch}) | {epochs} | {_cell(acc[False])} | {_cell(acc[True])} "
                         f"({pre_epochs} public epochs) | {gain} | {len(acc[False])}/{len(acc[True])} | {cpu_s:.0f} | "
                         f"{cpu_p[0]:.0f} + {cpu_p[1]:.0f} |")
    lines.append("")
    lines.append("Pre-training is done once per model and seed and shared by the regimes (cached); its CPU "
                 "seconds are those of the run that trained it.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
