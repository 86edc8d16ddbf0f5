"""Benchmark: how well model augmentation's surrogates learn the target, by distillation setting.

Each setting (surrogate architecture, distillation steps, public pre-training epochs, distillation
data) distils the benchmark's target through ``Workbench.surrogates`` (the pipeline's own distillation,
cached: a setting the attack benchmark uses is shared with it). The table gives each surrogate's top-1
agreement with the target on the held-out public images (what the attacker can measure) and on the
private test images (a diagnostic the attacker cannot compute), and the seconds it took. Finished
records are stored in --out and skipped when the script is run again.

    python benchmarks/surrogates.py --benchmark lfw
    python benchmarks/surrogates.py --benchmark lfw --settings cnn:3000:0,resnet10:10000:60
"""
from __future__ import annotations

import argparse
import time
from typing import Dict, List, Tuple

import torch

from _results import Results
from _settings import (BENCHMARKS, add_gmi_steps_argument, add_run_arguments, artifact_cache, benchmark_config,
                       parse_args, results_path)
from mi_art.threads import set_threads

from mi_art.evaluations.experiment import Workbench
from mi_art.models import ARCHITECTURES, RENAMED_ARCHITECTURES

DEFAULT_SETTINGS = ("cnn-small:3000:0,cnn:3000:0,cnn-small:10000:0,cnn:10000:0,cnn:3000:0:public,cnn:3000:60,"
                    "cnn-wide:3000:0,resnet10:3000:0,resnet10:10000:0,resnet10:3000:60,efficientnet-b0:3000:0")


def _settings(text: str) -> List[Tuple[str, int, int, str]]:
    """``"cnn:3000:0,resnet10:10000:60:public"`` -> (architecture, steps, pre-training epochs, data)."""
    out = []
    for part in text.split(","):
        arch, steps, pre, *data = part.strip().split(":")
        arch = RENAMED_ARCHITECTURES.new(arch, "--settings")
        if arch not in ARCHITECTURES:
            raise SystemExit(f"unknown architecture {arch!r}; choose among {', '.join(sorted(ARCHITECTURES))}")
        source = {"public": "public", "prior": "public+prior"}[data[0]] if data else "public+prior"
        out.append((arch, int(steps), int(pre), source))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", choices=sorted(BENCHMARKS), default="lfw")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--settings", default=DEFAULT_SETTINGS,
                        help="architecture:steps:pre-training epochs[:public|prior], comma-separated (default: "
                             "public images plus GMI-prior samples, as the pipeline distils)")
    add_gmi_steps_argument(parser, 1500, "the GMI prior's steps (its samples are distillation data; default 1500)")
    add_run_arguments(parser, "surrogates")
    args = parse_args(parser)
    set_threads(args.threads)
    out = results_path(args, "surrogates")
    results = Results(out)
    cache, data = artifact_cache(args.cache_dir), None
    for arch, steps, pre, source in _settings(args.settings):
        # a renamed architecture keeps its earlier spelling in the results file's keys: finished rows are kept
        key = f"{RENAMED_ARCHITECTURES.old(arch)}/{steps}/pre{pre}/{source}"
        if key in results:
            continue
        config = benchmark_config(args.benchmark, args.data_root, surrogate_archs=(arch,), surrogate_steps=steps,
                                  surrogate_pretrain_epochs=pre, surrogate_data=source, gmi_steps=args.gmi_steps,
                                  device=args.device)
        bench = Workbench(config, cache, data=data)
        data = bench.data
        target = bench.target()
        bench.gmi_prior()  # shared, and not part of a surrogate's time
        start = time.perf_counter()
        surrogate, = bench.surrogates(target)
        seconds = time.perf_counter() - start
        report, = bench.surrogate_report(target, [surrogate])
        results.store(key, {"arch": arch, "steps": steps, "pretrain_epochs": pre, "data": source, "seconds": seconds,
                            "params": sum(p.numel() for p in surrogate.parameters()), **report})
        print(f"{key:<36} agreement public {report['agreement_public_heldout']:.3f}  private "
              f"{report['agreement_private_test']:.3f}  ({seconds:.0f} s; 0 when cached)", flush=True)
    print("\n" + render_table(results.records, args.benchmark))


def render_table(done: Dict[str, dict], benchmark: str) -> str:
    lines = [f"{BENCHMARKS[benchmark]['title']}: each surrogate's top-1 agreement with the target on the held-out "
             "public images and on the private test images, by distillation setting (one distillation each).", "",
             "| surrogate | parameters | steps | public pre-training epochs | data | agreement public | "
             "agreement private | seconds |", "|---|---|---|---|---|---|---|---|"]
    for r in done.values():
        lines.append(f"| {r['arch']} | {r['params'] / 1e6:.2f}M | {r['steps']} | {r['pretrain_epochs']} | {r['data']} | "
                     f"{r['agreement_public_heldout']:.3f} | {r['agreement_private_test']:.3f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
