"""The ``mi-art`` command line."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import click

from mi_art.data import DATASETS
from mi_art.models import ARCHITECTURES

from .experiment import ATTACKS, VARIANTS


def _parse_options(pairs: Tuple[str, ...]) -> Dict[str, Any]:
    options: Dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--data-option")
        key, value = pair.split("=", 1)
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


@click.group()
@click.version_option(package_name="mi-art")
def main() -> None:
    """Model inversion attacks (GMI, KEDMI with LOMMA) and defenses on top of ART."""


@main.command()
@click.option("--dataset", type=click.Choice(DATASETS), default="digits", show_default=True,
              help="Data set; 'digits' ships with scikit-learn, the others read --data-root.")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Folder of the data set (image-folder: one sub-folder per identity).")
@click.option("--data-option", "data_options", multiple=True, metavar="KEY=VALUE",
              help="Loader argument, e.g. --data-option private=20 --data-option image_size=32 (repeatable).")
@click.option("--attack", type=click.Choice(ATTACKS), default="gmi", show_default=True)
@click.option("--variant", type=click.Choice(VARIANTS), default="lomma", show_default=True,
              help="baseline: CE on the target; lom: logit loss + p_reg; ma: surrogate ensemble; lomma: both.")
@click.option("--iterations", type=int, default=300, show_default=True, help="Attack iterations.")
@click.option("--n-reconstructions", type=int, default=5, show_default=True, help="Reconstructions per identity.")
@click.option("--batch-size", type=int, default=60, show_default=True)
@click.option("--target-arch", type=click.Choice(sorted(ARCHITECTURES)), default="cnn", show_default=True)
@click.option("--eval-arch", type=click.Choice(sorted(ARCHITECTURES)), default="cnn-wide", show_default=True)
@click.option("--target-epochs", type=int, default=20, show_default=True)
@click.option("--eval-epochs", type=int, default=30, show_default=True)
@click.option("--prior-steps", type=int, default=300, show_default=True, help="GMI WGAN-GP generator steps.")
@click.option("--kedmi-steps", type=int, default=600, show_default=True, help="KEDMI GAN steps.")
@click.option("--surrogate", "surrogates", multiple=True, type=click.Choice(sorted(ARCHITECTURES)),
              default=("resnet", "mlp"), show_default=True, help="Surrogate architecture (repeatable).")
@click.option("--surrogate-epochs", type=int, default=30, show_default=True)
@click.option("--miface-iterations", type=int, default=300, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of data split, models and priors.")
@click.option("--attack-seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="'auto', 'cpu' or 'cuda[:N]'.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output folder [default: mi_art_runs/<dataset>-<attack>-<variant>].")
@click.option("--cache-dir", type=click.Path(file_okay=False), default="mi_art_runs/cache", show_default=True,
              help="Where trained targets, priors and surrogates are cached and reused.")
@click.option("--verbose/--quiet", default=True, show_default=True)
def attack(dataset: str, data_root: Optional[str], data_options: Tuple[str, ...], attack: str, variant: str,
           iterations: int, n_reconstructions: int, batch_size: int, target_arch: str, eval_arch: str,
           target_epochs: int, eval_epochs: int, prior_steps: int, kedmi_steps: int, surrogates: Tuple[str, ...],
           surrogate_epochs: int, miface_iterations: int, seed: int, attack_seed: int, device: str,
           out_dir: Optional[str], cache_dir: str, verbose: bool) -> None:
    """Run one attack variant end to end and write results.json and reconstructions.png."""
    from mi_art.utils import write_atomic

    from .cache import ArtifactCache
    from .experiment import ExperimentConfig, Workbench, public_record, run_attack
    from .plots import save_reconstruction_grid

    if attack == "miface" and variant != "baseline":
        variant = "baseline"
    config = ExperimentConfig(
        dataset=dataset, data_root=data_root, data_options=_parse_options(data_options), target_arch=target_arch,
        target_epochs=target_epochs, eval_arch=eval_arch, eval_epochs=eval_epochs, attack=attack, variant=variant,
        iterations=iterations, n_reconstructions=n_reconstructions, batch_size=batch_size, prior_steps=prior_steps,
        kedmi_steps=kedmi_steps, surrogate_archs=tuple(surrogates), surrogate_epochs=surrogate_epochs,
        miface_iterations=miface_iterations, seed=seed, attack_seed=attack_seed, device=device, verbose=verbose)
    try:
        bench = Workbench(config, ArtifactCache(cache_dir))
        result = run_attack(bench)
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    out = Path(out_dir or f"mi_art_runs/{dataset}-{attack}-{variant}")
    record = public_record(result) | {"config": config.to_dict()}
    write_atomic(out / "results.json", json.dumps(record, indent=2, default=str))
    priv = bench.data.private_all()
    save_reconstruction_grid(out / "reconstructions.png", result["reconstructions"], result["labels"], priv.x,
                             priv.y, identity_names=bench.data.private_identities,
                             title=f"{attack.upper()} {variant} on {dataset}: Acc@1 {result['acc@1']:.2f}")
    fid = result["fid_eval_features"]
    click.echo(f"{attack}/{variant} on {dataset}: Acc@1 {result['acc@1']:.3f} +- {result['acc@1_std']:.3f}, "
               f"Acc@5 {result['acc@5']:.3f}, KNN {result['knn_dist']:.3f}, "
               f"FID(eval features) {'n/a' if fid is None else f'{fid:.3f}'}, "
               f"target acc {result['target_test_accuracy']:.3f}, "
               f"evaluator acc {result['evaluator_test_accuracy']:.3f}, "
               f"{result['seconds_per_reconstruction']:.3f} s/reconstruction")
    click.echo(f"wrote {out / 'results.json'} and {out / 'reconstructions.png'}")


if __name__ == "__main__":
    main()
