"""The transfer table of ``benchmarks/results/transfer.md``: per row, the trained panel's Acc@1 beside the
independent judge's, their ratio and the seconds per reconstruction, read from ``attack_variants.py``'s results
(each a lever's run: its ``--out`` folder, or the results file of its earlier versions). Means over the attack
seeds found, with the std over seeds when there are several, else the independent judge's binomial standard
error.

    python benchmarks/transfer_table.py "GMI+LOMMA=mi_art_runs/transfer-lfw-first.json" \\
        "GMI+LOMMA, 10 candidates=mi_art_runs/transfer-lfw-candidates.json:GMI+LOMMA"

Each argument is ``LABEL=FILE[,FILE...][:METHOD]`` (the folders or files of one row's seeds, e.g. runs of seed 0
and of seeds 1-2; METHOD: the method's name in the files; default LABEL's first word).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from _results import load_results
from mi_art.evaluations.rows import completed_cells


def variant_records(path: Path | str) -> dict:
    """The records of an ``attack_variants.py`` run keyed as its table reads them (``<row>/seed<seed>``): its
    ``--out`` folder's finished cells, or its earlier versions' results file."""
    if Path(path).is_dir():
        from attack_variants import table_records

        return table_records(list(completed_cells(path).values()))
    return load_results(path)


def row(label: str, records: list) -> str:
    """One markdown row: label, seeds, panel Acc@1, independent Acc@1, ratio, s / reconstruction."""
    panel = np.array([r["acc@1"] for r in records], dtype=float)
    independent = np.array([r["independent_acc@1"] for r in records if r.get("independent_acc@1") is not None])
    seconds = np.mean([r["seconds_per_reconstruction"] for r in records])
    if len(independent) > 1:
        spread = f" ± {independent.std():.3f} (seeds)"
    elif len(independent) == 1:
        spread = f" ± {records[0].get('independent_acc@1_se', float('nan')):.3f} (s.e.)"
    else:
        spread = ""
    ind = f"{independent.mean():.3f}{spread}" if len(independent) else "-"
    ratio = f"{independent.mean() / panel.mean():.2f}" if len(independent) and panel.mean() > 0 else "-"
    seed_std = f" ± {panel.std():.3f}" if len(panel) > 1 else ""
    shared = records[0].get("independent") is False
    return (f"| {label} | {len(records)} | {panel.mean():.3f}{seed_std} | {ind}{' (shared)' if shared else ''} | "
            f"{ratio} | {seconds:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="+", help="LABEL=FOLDER-OR-FILE[:METHOD]")
    args = parser.parse_args()
    print("| row | seeds | panel Acc@1 | independent Acc@1 | ratio | s / reconstruction |")
    print("|---|---:|---:|---:|---:|---:|")
    for spec in args.rows:
        label, _, source = spec.partition("=")
        paths, _, method = source.partition(":")
        method = method or label.split(",")[0].strip()
        records = []
        for path in paths.split(","):
            if not Path(path).exists():
                raise SystemExit(f"{spec!r}: no results folder or file {path}")
            records += [v for k, v in variant_records(path).items() if k.split("/")[0] == method]
        if not records:
            raise SystemExit(f"{spec!r}: no rows of method {method!r} in {paths}")
        print(row(label, records))


if __name__ == "__main__":
    main()
