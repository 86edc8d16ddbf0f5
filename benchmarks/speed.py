"""Benchmark: where a face audit's time goes, stage by stage, and how far each loop is from the hardware.

One cold-cache audit, as the README's face command makes it: the target (and its public pre-training),
the judges, the GMI and KEDMI priors, the surrogates, ``p_reg``, then GMI+LOMMA and KEDMI+LOMMA with
their metrics. Every artifact is trained into an empty cache, and each stage's own seconds are taken
(a stage that needs another, as the KEDMI prior needs the target, is charged only its own work).

Beside each training loop, what the hardware allows: a short run of the same loop is timed, then run
again under :class:`torch.utils.flop_counter.FlopCounterMode` to count its floating-point operations,
which gives the loop's achieved GFLOP/s; it is put beside the best measured GFLOP/s of a dense matmul
and of a convolution of the loop's size on this machine (``share of conv peak``; both float32, so a
loop in bfloat16 can pass 100%). Images per second count the batches a step draws: a prior step's
``n_critic`` batches of public images and its generator batch, a classifier's epoch of training images,
a distillation step's public and generated images.

    python benchmarks/speed.py                         # AT&T, the README's face command's budgets
    python benchmarks/speed.py --budget benchmark      # AT&T at attack_variants.py's budgets
    python benchmarks/speed.py --benchmark lfw --budget benchmark
    python benchmarks/speed.py --device cuda           # the same on a GPU, when one is present

The result (JSON) goes to ``--out``; ``--compare OLD.json`` prints the stage table before and after.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

from mi_art import distill_surrogate, make_classifier, train_classifier, train_gmi_prior, train_kedmi_prior
from mi_art.evaluations.artifact_keys import JUDGE_KIND
from mi_art.evaluations.cache import ArtifactCache
from mi_art.evaluations.cli import gan_augment_for
from mi_art.evaluations.experiment import ExperimentConfig, Workbench, run_attack
from mi_art.utils import write_atomic

from _settings import BENCHMARKS, REPO, add_threads_argument, benchmark_config
from mi_art.threads import set_threads

#: Cache kinds -> the stage they belong to.
STAGES = {"pretrained": "pre-training (public)", "target": "target", JUDGE_KIND: "judges",
          "gmi-prior": "GMI prior", "kedmi-prior": "KEDMI prior", "surrogate": "surrogates",
          "p-reg": "p_reg", "surrogate-p-reg": "p_reg"}


class TimingCache(ArtifactCache):
    """An artifact cache that charges each artifact made its own seconds (nested artifacts excluded)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.seconds: Dict[str, float] = {}
        self._children: List[float] = []

    def _made(self, kind: str, make: Callable[[], Any]) -> Any:
        self._children.append(0.0)
        start = time.perf_counter()
        try:
            return make()
        finally:
            total = time.perf_counter() - start
            own = total - self._children.pop()
            if self._children:
                self._children[-1] += total
            base = kind[:-len("-record")] if kind.endswith("-record") else kind  # a prior's record: its stage
            stage = STAGES.get(base, "metrics (prior quality)" if kind.endswith("quality") else base)
            self.seconds[stage] = self.seconds.get(stage, 0.0) + own


def peak_gflops(device: torch.device, repeats: int = 5) -> Dict[str, float]:
    """Best GFLOP/s of a dense float32 matmul and of a 5x5 convolution the size of the critic's second
    layer (forward and backward), measured here."""
    def best(fn: Callable[[], Any], flops: float) -> float:
        fn()
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return flops / min(times) / 1e9

    a, b = torch.randn(1024, 1024, device=device), torch.randn(1024, 1024, device=device)
    matmul = best(lambda: [a @ b for _ in range(10)], 10 * 2 * 1024 ** 3)
    x = torch.randn(128, 32, 16, 16, device=device, requires_grad=True)
    conv = torch.nn.Conv2d(32, 64, 5, 2, 2).to(device)
    conv_flops = count_flops(lambda: conv(x).sum().backward())
    conv_rate = best(lambda: [conv(x).sum().backward() for _ in range(10)], 10 * conv_flops)
    return {"matmul": matmul, "conv": conv_rate}


class _GlobalScope:
    """FlopCounterMode's module tracker fails inside ``autograd.grad(create_graph=True)`` (the WGAN-GP penalty):
    this stand-in counts every operation under one global scope."""
    parents = {"Global"}

    def __enter__(self) -> "_GlobalScope":
        return self

    def __exit__(self, *exc: Any) -> bool:
        return False


def count_flops(run: Callable[[], Any]) -> int:
    """Floating-point operations of ``run()`` (forward and backward, double backward included)."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalScope()
    with counter:
        run()
    return counter.get_total_flops()


def loop_rate(run: Callable[[], Any], images: int) -> Dict[str, float]:
    """Seconds, images per second and GFLOP/s of one short run of a loop (timed, then counted)."""
    run()  # warm-up: allocator, thread pool, one-time checks
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "images_per_s": images / seconds, "gflops": count_flops(run) / seconds / 1e9}


def loop_rates(bench: Workbench, device: torch.device) -> Dict[str, Dict[str, float]]:
    """Each training loop for a few steps on the workbench's data, as the workbench trains it."""
    c, d = bench.config, bench.data
    channels, size, _ = bench.data.input_shape
    x, y = d.private_train.x, d.private_train.y
    public = d.public.x
    target = bench.target()
    g, _ = bench.gmi_prior()
    batch = min(64, len(public))
    steps = 5
    mp = c.mixed_precision
    rates = {
        "target": loop_rate(lambda: train_classifier(make_classifier(c.target_arch, channels, d.num_classes, size),
                                                     x, y, epochs=1, augment=c.augment, mixed_precision=mp,
                                                     device=device), len(x)),
        "judges": loop_rate(lambda: train_classifier(make_classifier(c.judge_arch, channels, d.num_classes, size),
                                                     x, y, epochs=1, augment=c.augment, mixed_precision=mp,
                                                     device=device), len(x)),
        "GMI prior": loop_rate(lambda: train_gmi_prior(public, steps=steps, augment=c.gan_augment, device=device),
                               steps * 6 * batch),
        "KEDMI prior": loop_rate(lambda: train_kedmi_prior(target, public, steps=steps, augment=c.gan_augment,
                                                           init_generator=g, device=device), steps * 6 * batch),
        "surrogates": loop_rate(lambda: distill_surrogate(
            target, make_classifier(c.surrogate_archs[0], channels, d.num_classes, size), public, generator=g,
            steps=20, eval_every=1000, mixed_precision=mp, device=device), 20 * 2 * 64),
    }
    return rates


def audit(config: ExperimentConfig, cache_root: Path) -> Dict[str, Any]:
    """The cold-cache audit: every artifact trained, then GMI+LOMMA and KEDMI+LOMMA with their metrics."""
    cache = TimingCache(cache_root)
    start = time.perf_counter()
    bench = Workbench(config, cache)
    cache.seconds["data"] = time.perf_counter() - start
    results = {}
    for attack in ("gmi", "kedmi"):
        before = sum(cache.seconds.values())
        begin = time.perf_counter()
        result = run_attack(bench, attack=attack, variant="lomma")
        wall = time.perf_counter() - begin
        made = sum(cache.seconds.values()) - before
        name = f"{attack.upper()}+LOMMA attack"
        cache.seconds[name] = result["seconds"]
        cache.seconds["metrics"] = cache.seconds.get("metrics", 0.0) + wall - made - result["seconds"]
        results[name] = {"acc@1": result["acc@1"], "acc@5": result["acc@5"], "knn_dist": result["knn_dist"],
                         "reconstructions": len(result["labels"]),
                         "seconds_per_reconstruction": result["seconds_per_reconstruction"]}
    total = time.perf_counter() - start
    return {"bench": bench, "stages": cache.seconds, "total": total, "results": results,
            "target_accuracy": result["target_test_accuracy"], "judge_accuracy": result["judge_test_accuracy"]}


def table(record: Dict[str, Any], before: Optional[Dict[str, Any]] = None) -> str:
    total = record["total"]
    peak = record["peak_gflops"]
    head = "| stage | seconds | share | images / s | GFLOP/s | share of conv peak |"
    if before:
        head += " seconds before | speed-up |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    names = list(record["stages"]) + [n for n in (before or {}).get("stages", {}) if n not in record["stages"]]
    for name in names:
        s = record["stages"].get(name)
        rate = record["rates"].get(name)
        row = (f"| {name} | {'-' if s is None else f'{s:.1f}'} | {'-' if s is None else f'{s / total:.0%}'} | "
               + (f"{rate['images_per_s']:.0f} | {rate['gflops']:.1f} | {rate['gflops'] / peak['conv']:.0%} |"
                  if rate else "- | - | - |"))
        if before:
            old = before["stages"].get(name)
            row += (f" {'-' if old is None else f'{old:.1f}'} | "
                    f"{'-' if not (old and s) else f'{old / s:.1f}x'} |")
        lines.append(row)
    lines.append(f"| **total** | {total:.1f} | 100% | | | |" + (f" {before['total']:.1f} | {before['total'] / total:.1f}x |"
                                                               if before else ""))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", choices=sorted(BENCHMARKS), default="att")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--budget", choices=("cli", "benchmark"), default="cli",
                        help="cli: the budgets of `mi-art attack` (the README's face command); benchmark: "
                             "attack_variants.py's (default cli)")
    parser.add_argument("--device", default="cpu")
    add_threads_argument(parser)
    parser.add_argument("--out", default=None, help="JSON record (default mi_art_runs/speed-<benchmark>-<budget>.json)")
    parser.add_argument("--compare", default=None, help="an earlier JSON record: its seconds beside these")
    parser.add_argument("--no-rates", action="store_true", help="skip the per-loop GFLOP/s measurements")
    parser.add_argument("--rates-only", action="store_true",
                        help="add the per-loop measurements to the record at --out, without a new audit; the "
                             "target and GMI prior they need come from --cache-dir")
    parser.add_argument("--cache-dir", default=None, help="with --rates-only: a cache of this configuration")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="train the target, judges, pre-training and surrogates in bfloat16 (mixed_precision=True)")
    args = parser.parse_args()
    set_threads(args.threads)
    device = torch.device(args.device)
    if args.budget == "cli":
        spec = BENCHMARKS[args.benchmark]
        base = benchmark_config(args.benchmark, args.data_root)
        # the README's face command: `mi-art attack --dataset image-folder --data-root ../shared/data/att_faces
        # --data-option private=20 --data-option image_size=32`, every other option at its default
        options = ({"private": 20, "image_size": 32} if args.benchmark == "att" else base.data_options)
        config = ExperimentConfig(dataset="image-folder", data_root=str(args.data_root or spec["root"]),
                                  data_options=options, gan_augment=gan_augment_for("image-folder", "auto"),
                                  mixed_precision=args.mixed_precision, device=args.device)
    else:
        config = benchmark_config(args.benchmark, args.data_root, iterations=1000, n_reconstructions=5,
                                  gmi_steps=1500, kedmi_steps=200, surrogate_steps=3000, judges=3,
                                  mixed_precision=args.mixed_precision, device=args.device)
    out = Path(args.out or REPO / "mi_art_runs" / f"speed-{args.benchmark}-{args.budget}"
                             f"{'-bf16' if args.mixed_precision else ''}.json")
    if args.rates_only:
        record = json.loads(out.read_text())
        bench = Workbench(config, ArtifactCache(args.cache_dir))
        record["rates"] = loop_rates(bench, device)
        write_atomic(out, json.dumps(record, indent=2, default=str))
        print(table(record))
        return
    peak = peak_gflops(device)
    print(f"peak here: matmul {peak['matmul']:.1f} GFLOP/s, conv {peak['conv']:.1f} GFLOP/s "
          f"({torch.get_num_threads()} threads, {device})", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        run = audit(config, Path(tmp))
        record = {"benchmark": args.benchmark, "budget": args.budget, "device": str(device),
                  "threads": torch.get_num_threads(), "torch": torch.__version__, "peak_gflops": peak,
                  "stages": run["stages"], "total": run["total"], "rates": {}, "results": run["results"],
                  "target_accuracy": run["target_accuracy"], "judge_accuracy": run["judge_accuracy"],
                  "config": config.to_dict(), "date": time.strftime("%Y-%m-%d %H:%M")}
        write_atomic(out, json.dumps(record, indent=2, default=str))  # the audit is kept if the rates fail
        if not args.no_rates:
            record["rates"] = loop_rates(run["bench"], device)
            write_atomic(out, json.dumps(record, indent=2, default=str))
    before = json.loads(Path(args.compare).read_text()) if args.compare else None
    print(table(record, before))
    for name, r in run["results"].items():
        print(f"{name}: Acc@1 {r['acc@1']:.3f}  Acc@5 {r['acc@5']:.3f}  KNN {r['knn_dist']:.1f}  "
              f"{r['seconds_per_reconstruction']:.3f} s/rec")
    print(f"target acc {run['target_accuracy']:.3f}, judge acc {run['judge_accuracy']:.3f}; record: {out}")


if __name__ == "__main__":
    main()
