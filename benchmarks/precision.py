"""Benchmark: what bfloat16 mixed precision (``mixed_precision=True``) saves in training the target and the
judges, and whether it changes what they are used for.

For the benchmark's target and judge recipes, ``--seeds`` initialisations are trained in float32 and in
bfloat16 (each timed, on an empty cache), and their held-out accuracy is measured. Then the same
GMI+LOM reconstructions (made once, against the float32 target) are judged by the float32 panel and by
the bfloat16 panel: a judge trained in bfloat16 must score them as a float32 judge does.

    python benchmarks/precision.py                      # AT&T, 3 seeds
    python benchmarks/precision.py --benchmark lfw      # LFW (pre-training included: hours on 2 CPU cores)
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mi_art.evaluations.cache import ArtifactCache
from mi_art.evaluations.executors import LockingArtifactCache
from mi_art.evaluations.experiment import JUDGE_SEED_OFFSET, Workbench, run_attack
from mi_art.evaluations.metrics import judge_panel, natural_accuracy

from _results import Results
from _settings import BENCHMARKS, REPO, add_setting_argument, add_threads_argument, benchmark_config, parse_args
from mi_art.threads import set_threads

#: The name each kind of model has in the results file's keys and the judges' checkpoint files: the judges' is
#: their first name, "evaluator", so that files written before the rename resume.
_STORED = {"target": "target", "judge": "evaluator"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", choices=sorted(BENCHMARKS), default="att")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=1000, help="GMI+LOM iterations (default 1000)")
    add_setting_argument(parser, "judge_epochs", type=int, default=None,
                         help="the judges' epochs (default: the benchmark's); the target keeps its recipe")
    add_threads_argument(parser)
    parser.add_argument("--cache-dir", default=str(REPO / "mi_art_runs" / "cache"),
                        help="where the float32 target and GMI prior of the reconstructions are cached")
    parser.add_argument("--out", default=None)
    return parser


def main() -> None:
    args = parse_args(_parser())
    set_threads(args.threads)
    out = Path(args.out or REPO / "mi_art_runs" / f"precision-{args.benchmark}.json")
    results = Results(out, indent=2, empty={"models": {}})
    record = results.records

    data = None
    kinds = ("judge",) if args.judge_epochs is not None else ("target", "judge")
    for mixed in (False, True):
        with tempfile.TemporaryDirectory() as tmp:  # cold: every model trained and timed here
            epochs = {} if args.judge_epochs is None else {"judge_epochs": args.judge_epochs}
            bench = Workbench(benchmark_config(args.benchmark, args.data_root, mixed_precision=mixed, **epochs),
                              ArtifactCache(tmp))
            data = bench.data
            for kind in kinds:
                first = bench.config.seed + (0 if kind == "target" else JUDGE_SEED_OFFSET)
                for seed in range(first, first + args.seeds):
                    name = f"{_STORED[kind]}/{'bfloat16' if mixed else 'float32'}/seed{seed}"
                    if name in record["models"]:
                        continue
                    start = time.perf_counter()
                    model = bench.redraw(kind, seed)
                    seconds = time.perf_counter() - start
                    record["models"][name] = {
                        "seconds": seconds,
                        "test_accuracy": natural_accuracy(model, data.private_test.x, data.private_test.y)}
                    if kind == "judge":
                        torch.save(model.state_dict(), out.with_name(f"{out.stem}-{name.replace('/', '-')}.pt"))
                    results.save()
                    print(f"{name}: {seconds:.1f} s, test accuracy {record['models'][name]['test_accuracy']:.3f}",
                          flush=True)

    if "judged" not in record:
        bench = Workbench(benchmark_config(args.benchmark, args.data_root, iterations=args.iterations,
                                           n_reconstructions=5, judges=1), LockingArtifactCache(args.cache_dir))
        made = REPO / "mi_art_runs" / f"precision-{args.benchmark}-reconstructions.npz"
        if made.is_file():  # the same reconstructions for every judge setting
            result = dict(np.load(made))
        else:
            result = run_attack(bench, attack="gmi", variant="lom", attack_seed=0)
            np.savez(made, reconstructions=result["reconstructions"], labels=result["labels"])
        priv = data.private_all()
        record["judged"] = {}
        for precision in ("float32", "bfloat16"):
            judges = []
            first = bench.config.seed + JUDGE_SEED_OFFSET
            for seed in range(first, first + args.seeds):
                judge = bench.untrained_classifier(bench.config.judge_arch)  # its architecture (not its epochs)
                saved = out.with_name(f"{out.stem}-{_STORED['judge']}-{precision}-seed{seed}.pt")
                judge.load_state_dict(torch.load(saved, weights_only=True))
                judges.append(judge.eval())
            panel = judge_panel(judges, result["reconstructions"], result["labels"], priv.x, priv.y,
                                rec_index=np.tile(np.arange(bench.config.n_reconstructions), len(result["labels"]) //
                                                  bench.config.n_reconstructions), top_k=(1, 5))
            record["judged"][precision] = {k: panel[k] for k in ("acc@1", "acc@1_judges", "acc@5", "knn_dist")}
        results.save()

    print("| model | precision | seeds | seconds (mean) | test accuracy (mean +- std) |")
    print("|---|---|---|---|---|")
    for kind in kinds:
        for precision in ("float32", "bfloat16"):
            rows = [v for k, v in record["models"].items() if k.startswith(f"{_STORED[kind]}/{precision}/")]
            acc = np.array([r["test_accuracy"] for r in rows])
            print(f"| {kind} | {precision} | {len(rows)} | {np.mean([r['seconds'] for r in rows]):.1f} | "
                  f"{acc.mean():.3f} +- {acc.std():.3f} |")
    for precision, p in record["judged"].items():
        print(f"GMI+LOM judged by the {precision} panel: Acc@1 {p['acc@1']:.3f} (judges "
              + " / ".join(f"{a:.3f}" for a in p["acc@1_judges"]) + f"), Acc@5 {p['acc@5']:.3f}, "
              f"KNN {p['knn_dist']:.1f}")
    print(f"record: {out}")


if __name__ == "__main__":
    main()
