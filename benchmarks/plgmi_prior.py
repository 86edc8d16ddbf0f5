"""Benchmark: PLG-MI's conditional prior on faces, by training setting, judged before any attack.

Each setting (learning rate, weight of the inversion loss ``alpha``, generator steps) trains
:func:`mi_art.train_plgmi_prior` for the benchmark's target from the cached GMI generator, as the pipeline
does, and measures its samples (10 per private identity, each conditioned on its identity):
- FID against the public images on the first judge's penultimate features (lower: closer to faces);
- the target's and the judge's top-1 accuracy on the condition (the judge never trains the prior, so its
  accuracy says whether a sample shows the identity rather than fools the target);
- the judge's mean penultimate-feature norm on the samples over its norm on public images (far above 1:
  images off the data, e.g. adversarial speckle).
A sample grid of each setting is written beside the results. Finished settings are skipped when the script
runs again.

    python benchmarks/plgmi_prior.py --benchmark att
    python benchmarks/plgmi_prior.py --benchmark lfw --settings 2e-4:0.2:1500
"""
from __future__ import annotations

import argparse
import time
from typing import Dict, List, Tuple

import numpy as np
import torch
from torchvision.utils import save_image

from _results import Results
from _settings import (BENCHMARKS, add_gmi_steps_argument, add_run_arguments, artifact_cache, benchmark_config,
                       parse_args, results_path)
from mi_art.threads import set_threads

from mi_art import train_plgmi_prior
from mi_art.evaluations.experiment import Workbench
from mi_art.evaluations.metrics import PenultimateFeatures, fid_eval_features, predict_logits
from mi_art.priors.sampling import prior_samples
from mi_art.utils import seed_everything

DEFAULT_SETTINGS = "1e-3:0.2:1,1e-3:0.2:5,2e-4:0.2:5,1e-3:0:5,1e-3:0.2:150,2e-4:0.2:600"
SAMPLES_PER_IDENTITY = 10


def _settings(text: str) -> List[Tuple[float, float, int]]:
    """``"1e-3:0.2:600,2e-4:0:1500"`` -> (learning rate, alpha, generator steps)."""
    out = []
    for part in text.split(","):
        lr, alpha, steps = part.strip().split(":")
        out.append((float(lr), float(alpha), int(steps)))
    return out


@torch.no_grad()
def measure(sample, latent_dim: int, target, judge, public_x: torch.Tensor, num_classes: int,
            seed: int = 0) -> Tuple[Dict[str, float], torch.Tensor]:
    """The measures of the module docstring on ``sample(z, labels)``'s images."""
    seed_everything(seed)
    labels = torch.arange(num_classes).repeat_interleave(SAMPLES_PER_IDENTITY)
    z = torch.randn(len(labels), latent_dim)
    samples = torch.cat([sample(z[i:i + 100], labels[i:i + 100]) for i in range(0, len(labels), 100)])
    feats = PenultimateFeatures(judge)
    norm = feats(samples).norm(dim=1).mean() / feats(public_x).norm(dim=1).mean()
    return {"fid": fid_eval_features(judge, samples, public_x),
            "target_acc": float((predict_logits(target, samples).argmax(1) == labels).float().mean()),
            "judge_acc": float((predict_logits(judge, samples).argmax(1) == labels).float().mean()),
            "feature_norm": float(norm)}, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", choices=sorted(BENCHMARKS), default="att")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--settings", default=DEFAULT_SETTINGS, help="lr:alpha:steps, comma-separated")
    add_gmi_steps_argument(parser, 1500, "the GMI prior's steps (default 1500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prior-samples", type=int, default=0,
                        help="add this many GMI-prior samples to the public images the target pseudo-labels "
                             "(PLG-MI's paper had 30k+ public images; the benchmarks have a few hundred)")
    add_run_arguments(parser, "plgmi-prior")
    args = parse_args(parser)
    set_threads(args.threads)
    out = results_path(args, "plgmi-prior")
    results = Results(out)
    config = benchmark_config(args.benchmark, args.data_root, gmi_steps=args.gmi_steps, device=args.device)
    bench = Workbench(config, artifact_cache(args.cache_dir))
    target, judge = bench.target(), bench.judge()
    gmi_generator = bench.gmi_prior()[0]
    public_x = torch.as_tensor(bench.data.public.x)
    k = bench.data.num_classes
    target, judge, gmi_generator = target.cpu(), judge.cpu(), gmi_generator.cpu()
    labelled, tag, file_tag = bench.data.public.x, "", ""
    if args.prior_samples:
        labelled = np.concatenate([labelled, prior_samples(gmi_generator, args.prior_samples, seed=args.seed + 1)])
        tag, file_tag = f", {args.prior_samples} prior samples pseudo-labelled too", f"-p{args.prior_samples}"
    reference = "GMI prior (unconditional: its accuracies are chance)"
    if reference not in results:
        metrics, _ = measure(lambda z, y: gmi_generator(z), gmi_generator.latent_dim, target, judge, public_x, k,
                             args.seed)
        results.store(reference, {"seconds": 0.0, "seed": args.seed, **metrics})
    for lr, alpha, steps in _settings(args.settings):
        key = f"lr {lr:g}, alpha {alpha:g}, {steps} steps{tag}"
        if key in results:
            continue
        start = time.perf_counter()
        generator, _ = train_plgmi_prior(target, labelled, steps=steps, lr=lr, alpha=alpha,
                                         width=config.gan_width, init_generator=gmi_generator, device=bench.device,
                                         seed=args.seed)
        seconds = time.perf_counter() - start
        generator = generator.cpu()
        metrics, samples = measure(generator, generator.latent_dim, target, judge, public_x, k, args.seed)
        grid = out.with_name(f"{out.stem}-lr{lr:g}-a{alpha:g}-{steps}{file_tag}.png")
        save_image(samples[::SAMPLES_PER_IDENTITY][:64], grid, nrow=8)
        results.store(key, {"lr": lr, "alpha": alpha, "steps": steps, "seconds": seconds, "seed": args.seed,
                            **metrics})
        print(f"{key:<36} FID {metrics['fid']:.1f}  target acc {metrics['target_acc']:.3f}  judge acc "
              f"{metrics['judge_acc']:.3f}  feature norm {metrics['feature_norm']:.2f}  ({seconds:.0f} s)", flush=True)
    print("\n" + render_table(results.records, args.benchmark, k))


def render_table(done: Dict[str, dict], benchmark: str, k: int) -> str:
    lines = [f"{BENCHMARKS[benchmark]['title']}: PLG-MI's conditional prior by setting, {SAMPLES_PER_IDENTITY} "
             f"samples per identity ({k} identities; chance {1 / k:.3f}).", "",
             "| setting | seconds | FID (judge features) | target acc on condition | judge acc on condition | "
             "feature norm / public |", "|---|---|---|---|---|---|"]
    for key, r in done.items():
        lines.append(f"| {key} | {r['seconds']:.0f} | {r['fid']:.1f} | {r['target_acc']:.3f} | {r['judge_acc']:.3f} | "
                     f"{r['feature_norm']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
