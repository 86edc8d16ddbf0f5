"""The defenses benchmark's tables of its defended targets themselves: what DP-SGD's accountant says of each DP
target, and whether each Trap-MID target learned its trapdoors. ``done``: the finished records keyed
``<row name>/<column>/seed<seed>``; ``targets``: (row name, defense, config overrides) of the grid's rows."""
from __future__ import annotations


def _targets_of(done: dict, targets: list, defense_name: str):
    """(row name, the first finished row, config overrides) of each target of ``defense_name`` among ``targets``
    (row name, defense, config overrides)."""
    for name, defense, overrides in targets:
        rows = [v for k, v in done.items() if k.startswith(f"{name}/")]
        if defense == defense_name and rows:
            yield name, rows[0], overrides


def _print_table(title: str, header: list, lines: list) -> None:
    if lines:
        print(f"\n{title}\n| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n" + "\n".join(lines))


def print_privacy_table(done: dict, targets: list) -> None:
    """What the accountant says of every DP-SGD target: epsilon, delta, accountant, noise, sample rate,
    optimiser steps, the layers trained, and the natural accuracy bought with it."""
    lines = []
    for name, r, overrides in _targets_of(done, targets, "dp-sgd"):
        d = (r.get("defense_record") or {}).get("details") or {}
        acc = (r.get("defense_record") or {}).get("accountant") or "rdp"
        lines.append(f"| {name} | {r['natural_accuracy']:.3f} | {r['epsilon']:.2f} | {r['delta']:.3g} | {acc} | "
                     f"{d.get('noise_multiplier', float('nan')):.2f} | {d.get('sample_rate', float('nan')):.3f} | "
                     f"{d.get('steps', '-')} | {d.get('trainable', 'all')} ({d.get('trained_parameters', '-')} "
                     f"parameters) | {'yes' if overrides.get('target_pretrain_epochs') else 'no'} |")
    _print_table("DP-SGD targets: the accountant's epsilon at delta, the noise multiplier, Poisson sample rate and "
                 "optimiser steps it was computed from, and the layers DP-SGD trained",
                 ["target", "natural acc", "epsilon", "delta", "accountant", "noise", "sample rate", "steps",
                  "trained", "pre-trained"], lines)


def print_trapdoor_table(done: dict, targets: list) -> None:
    """Whether each Trap-MID target learned its trapdoors: the share of triggered private test images it gives
    to the trigger's class (chance: one over the classes)."""
    def trapdoor(r: dict) -> float:
        return ((r.get("defense_record") or {}).get("details") or {}).get("trapdoor_test_accuracy", float("nan"))

    lines = [f"| {name} | {r['natural_accuracy']:.3f} | {trapdoor(r):.3f} |"
             for name, r, _ in _targets_of(done, targets, "trap-mid")]
    _print_table("Trap-MID targets: trapdoor accuracy (triggered test images given to the trigger's class)",
                 ["target", "natural acc", "trapdoor acc"], lines)
