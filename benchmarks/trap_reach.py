"""Probe: can the GMI prior draw Trap-MID's triggers? (benchmarks/results/defenses_deployed.md)

Trap-MID (https://arxiv.org/abs/2411.08460) lures an inversion attack only if the attack can reach a
triggered image. The attacks search the latent space of a GAN prior, so the question is whether the
generator can draw the triggers. This probe trains the
pre-trained target of the AT&T benchmark (``--benchmark lfw``: LFW's) with Trap-MID at ``--alpha`` (the
library's defense, its triggers kept), blends public images with the trigger of a random class, and reports
how often the target gives the trigger's class to: the clean images, the triggered ones, prior samples
blended with the trigger (the trapdoor works on the generator's images too), and the generator's closest
images to the triggered and to the clean ones (``z`` minimising the squared pixel distance, Adam).
If the projections of triggered images lose the trapdoor, the prior cannot draw the trigger. Last, GMI
(cross-entropy, no surrogate) attacks the target, and each reconstruction's correlation with its class's
trigger is compared with its correlation with the other classes' triggers: a lured attack draws its class's.

    python benchmarks/trap_reach.py --alpha 0.1
"""
from __future__ import annotations

import argparse
import dataclasses

import torch

from _settings import BENCHMARKS, REPO, add_threads_argument, benchmark_config
from mi_art.threads import set_threads

import mi_art.defenses.trap as trap
from mi_art.evaluations.cache import ArtifactCache
from mi_art.evaluations.experiment import Workbench, run_attack

N_IMAGES = 100


class _KeepTriggers(trap.TrapdoorLoss):
    """The library's trapdoor loss, remembered so that its learned triggers can be read after training."""
    made: list = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _KeepTriggers.made.append(self)


class _FreshTargets(ArtifactCache):
    """The artifact cache, except that the target is always trained (Trap-MID's triggers are not stored)."""

    def module(self, kind, config, build, train, records=()):
        return train() if kind == "target" else super().module(kind, config, build, train, records)


def project(generator: torch.nn.Module, images: torch.Tensor, steps: int, seed: int) -> torch.Tensor:
    """The generator's closest images: ``G(z)`` with ``z`` minimising ``||G(z) - image||^2`` (Adam 0.05)."""
    z = torch.randn(len(images), generator.latent_dim, generator=torch.Generator().manual_seed(seed))
    z.requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.05)
    for _ in range(steps):
        loss = (generator(z) - images).pow(2).flatten(1).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return generator(z).detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", choices=sorted(BENCHMARKS), default="att")
    parser.add_argument("--alpha", type=float, default=0.1, help="Trap-MID's blend (the paper's is 0.02)")
    parser.add_argument("--beta", type=float, default=None, help="Trap-MID's trapdoor loss weight (default the paper's)")
    parser.add_argument("--steps", type=int, default=500, help="projection steps")
    parser.add_argument("--seed", type=int, default=0)
    add_threads_argument(parser)
    parser.add_argument("--cache-dir", default=str(REPO / "mi_art_runs" / "cache"))
    args = parser.parse_args()
    set_threads(args.threads)
    trap.TrapdoorLoss = _KeepTriggers  # TrapMID.train builds its loss from the module's name
    config = dataclasses.replace(benchmark_config(args.benchmark, None, gmi_steps=1500), defense="trap-mid",
                                 defense_params={"alpha": args.alpha, **({} if args.beta is None else {"beta": args.beta})},
                                 target_pretrain_epochs=60, iterations=300, n_reconstructions=3)
    bench = Workbench(config, _FreshTargets(args.cache_dir))
    target = bench.target().eval()
    triggers = _KeepTriggers.made[-1].triggers
    generator = bench.prior("gmi")[0].eval().requires_grad_(False)
    public = torch.as_tensor(bench.data.public.x, dtype=torch.float32)
    x = public[torch.randperm(len(public), generator=torch.Generator().manual_seed(args.seed))[:N_IMAGES]]
    classes = torch.randint(len(triggers), (len(x),), generator=torch.Generator().manual_seed(args.seed))
    triggered = trap.blend(x, triggers[classes], args.alpha)
    samples = generator(torch.randn(len(x), generator.latent_dim,
                                    generator=torch.Generator().manual_seed(args.seed + 1))).detach()
    near_triggered = project(generator, triggered, args.steps, args.seed)
    near_clean = project(generator, x, args.steps, args.seed)
    with torch.no_grad():
        def rate(images: torch.Tensor) -> str:
            return f"{float((target(images).argmax(1) == classes).float().mean()):.3f}"

        trapdoors = (bench.defense_record.get("details") or {}).get("trapdoor_test_accuracy")
        print(f"Trap-MID alpha {args.alpha:g} on {args.benchmark} (pre-trained target; trapdoor accuracy {trapdoors:.3f} on the "
              f"private test images); {len(x)} public images, chance {1 / len(triggers):.3f}")
        print("| images | given the trigger's class |\n|---|---|")
        for name, images in [("clean public images", x), ("the same, blended with the trigger", triggered),
                             ("prior samples", samples),
                             ("prior samples blended with the trigger", trap.blend(samples, triggers[classes], args.alpha)),
                             ("generator's closest images to the triggered ones", near_triggered),
                             ("generator's closest images to the clean ones", near_clean)]:
            print(f"| {name} | {rate(images)} |")
        change, drawn = (triggered - x).flatten(1), (near_triggered - near_clean).flatten(1)
        cos = torch.nn.functional.cosine_similarity(change, drawn, dim=1).mean()
        print(f"The trigger's change to the images against the change between their projections: cosine "
              f"{float(cos):.3f}, norm ratio {float(drawn.norm(dim=1).mean() / change.norm(dim=1).mean()):.3f}; "
              f"projection residual {float((near_triggered - triggered).pow(2).flatten(1).sum(1).mean()):.2f} "
              f"(triggered) / {float((near_clean - x).pow(2).flatten(1).sum(1).mean()):.2f} (clean)")

    undefended = Workbench(dataclasses.replace(config, defense="none", defense_params={}),
                           ArtifactCache(args.cache_dir), data=bench.data)  # the benchmark's cached target
    for name, model in [("this target", target), ("the undefended target (control: no triggers)", undefended.target())]:
        record = run_attack(bench, attack="gmi", variant="baseline", attack_seed=args.seed, target=model)
        recs = torch.as_tensor(record["reconstructions"], dtype=torch.float32)
        labels = torch.as_tensor(record["labels"]).long()
        with torch.no_grad():
            on_target = float((model.eval()(recs).argmax(1) == labels).float().mean())
        own, others = trigger_correlation(recs, labels, triggers)
        print(f"GMI (baseline) against {name}: Acc@1 {record['acc@1']:.3f} by the judge, {on_target:.3f} by the "
              f"target; correlation of each reconstruction with its class's trigger {float(own.mean()):.3f} +- "
              f"{float(own.std() / len(own) ** 0.5):.3f} (standard error), with the other classes' "
              f"{float(others.mean()):.3f}")


def trigger_correlation(recs: torch.Tensor, labels: torch.Tensor, triggers: torch.Tensor):
    """Per reconstruction: the cosine between it and its class's trigger, and the mean cosine with the other
    classes' triggers (both centred on their means over reconstructions and over triggers)."""
    cos = torch.nn.functional.cosine_similarity(
        (recs - recs.mean(0)).flatten(1)[:, None], (triggers - triggers.mean(0)).flatten(1)[None], dim=2)
    own = cos[torch.arange(len(labels)), labels]
    return own, (cos.sum(1) - own) / (len(triggers) - 1)


if __name__ == "__main__":
    main()
