"""The grid report from hand-written cells (nothing is trained): Acc@k that cannot fail is reported as
not applicable, chance levels sit beside Acc@1/Acc@5, `mi-art report --keep-images` redraws only
what changed, and the report does not import the executors."""
from __future__ import annotations

import ast
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mi_art.evaluations.cli import main
from mi_art.evaluations.report import _chance_line, markdown_text, render_report
from mi_art.evaluations.rows import ROW_KEYS, normalise_row

ROOT = Path(__file__).resolve().parents[1]


def _row(cid: str, index: int, *, dataset: str, n_classes, seed: int = 0, acc1: float = 0.6, acc5: float = 1.0,
         variant: str = "baseline") -> dict:
    row = {"cell_id": cid, "index": index, "dataset": dataset, "defense": "none", "defense_params": {},
           "defense_label": "none", "natural_accuracy": 0.9, "epsilon": None, "delta": None, "attack": "gmi",
           "variant": variant, "seed": seed, "artifact_seed": seed, "acc@1": acc1, "acc@1_std": 0.1,
           "acc@5": acc5, "acc@5_std": 0.0, "knn_dist": 12.5, "fid_eval_features": None, "seconds": 3.0,
           "cell_seconds": 4.0, "judge_test_accuracy": 0.95, "n_identities": 2, "n_reconstructions": 2,
           "iterations": 10}
    if n_classes is not None:  # None: a row saved before n_classes / chance@k existed
        row["n_classes"] = n_classes
    return row


def _write_cell(out: Path, row: dict, *, images: bool = True) -> None:
    cells = out / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    (cells / f"{row['cell_id']}.json").write_text(json.dumps(row))
    if images:
        rng = np.random.default_rng(row["index"])
        np.savez_compressed(cells / f"{row['cell_id']}.npz",
                            reconstructions=rng.random((4, 1, 8, 8), dtype=np.float32),
                            labels=np.array([0, 0, 1, 1]), real_x=rng.random((2, 1, 8, 8), dtype=np.float32),
                            real_y=np.array([0, 1]), identity_names=np.array(["a", "b"]))


def _csv(path: Path):
    with open(path, newline="") as f:
        return {r["cell_id"]: r for r in csv.DictReader(f)}


def _section(md: str, heading: str) -> str:
    """The text of a '## dataset' section."""
    start = md.index(f"## {heading}\n")
    end = md.find("\n## ", start + 1)
    return md[start:end if end != -1 else len(md)]


@pytest.fixture
def report_dir(tmp_path):
    """digits: 5 classes (Acc@5 saved as 1.0: not applicable); faces: 10 classes, two seeds (Acc@5 0.6
    and 0.8); old: a row saved without n_classes."""
    out = tmp_path / "out"
    rows = [_row("d0", 0, dataset="digits", n_classes=5, acc1=0.6, acc5=1.0),
            _row("f0", 1, dataset="faces", n_classes=10, seed=0, acc1=0.3, acc5=0.6),
            _row("f1", 2, dataset="faces", n_classes=10, seed=1, acc1=0.5, acc5=0.8),
            _row("o0", 3, dataset="old", n_classes=None, acc1=0.4, acc5=0.9)]
    for r in rows:
        _write_cell(out, r)
    return out


def test_normalise_row_marks_acc_at_k_with_k_at_least_the_classes_not_applicable():
    five = normalise_row(_row("a", 0, dataset="d", n_classes=5, acc5=1.0))
    assert five["acc@5"] is None and five["acc@5_std"] is None  # 5 >= 5 classes: 1.0 by construction
    assert five["acc@1"] == 0.6 and five["chance@1"] == pytest.approx(1 / 5) and five["chance@5"] == 1.0
    six = normalise_row(_row("b", 0, dataset="d", n_classes=6, acc5=0.9))
    assert six["acc@5"] == 0.9 and six["chance@5"] == pytest.approx(5 / 6)
    two = normalise_row(_row("c", 0, dataset="d", n_classes=2, acc5=1.0))
    assert two["acc@1"] == 0.6 and two["chance@1"] == 0.5 and two["acc@5"] is None
    old = normalise_row(_row("e", 0, dataset="d", n_classes=None, acc5=0.9))
    assert old["acc@5"] == 0.9 and old["chance@1"] is None and old["chance@5"] is None
    # a chance level saved with the row is kept, not recomputed
    saved = normalise_row({**_row("f", 0, dataset="d", n_classes=10), "chance@1": 0.25})
    assert saved["chance@1"] == 0.25 and saved["chance@5"] == 0.5


def test_a_row_written_under_earlier_names_reads_under_the_names_now():
    """A folder's cells finished before "nls", prior_steps and eval_arch were renamed keep their ids (no rerun); read
    back, they join the later cells' group of the report, without a note (the user wrote none of these names)."""
    import warnings

    old = {"cell_id": "x", "defense": "nls", "defense_label": "nls(alpha=-0.05)", "n_classes": 10,
           "evaluator_test_accuracy": 0.42, "evaluator_test_accuracies": [0.4, 0.44],
           "config": {"defense": "nls", "prior_steps": 300, "surrogate_archs": ["efficientnet_b0"],
                      "eval_arch": "cnn-wide", "eval_epochs": 30, "eval_pretrain_epochs": 0}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        row = normalise_row(old)
    assert (row["defense"], row["defense_label"]) == ("negative-label-smoothing",
                                                      "negative-label-smoothing(alpha=-0.05)")
    assert row["config"] == {"defense": "negative-label-smoothing", "gmi_steps": 300,
                             "surrogate_archs": ["efficientnet-b0"], "judge_arch": "cnn-wide", "judge_epochs": 30,
                             "judge_pretrain_epochs": 0}
    assert (row["judge_test_accuracy"], row["judge_test_accuracies"]) == (0.42, [0.4, 0.44])
    assert "evaluator_test_accuracy" not in row and "evaluator_test_accuracies" not in row
    assert old["defense"] == "nls" and "judge_test_accuracy" not in old  # the stored row is left as it was


def test_a_cell_saved_with_the_judges_earlier_key_reports_its_judge_accuracy(tmp_path):
    """A cell finished when the judges' mean accuracy was saved as ``evaluator_test_accuracy``: the report reads it
    as ``judge_test_accuracy`` (its line under the data set, the weak-judge warning, results.csv and .json) beside a
    cell saved since."""
    from mi_art.evaluations.report import render_report

    out = tmp_path / "out"
    old = _row("old", 0, dataset="d", n_classes=5)
    old["evaluator_test_accuracy"] = old.pop("judge_test_accuracy")
    old["evaluator_test_accuracy"] = 0.25  # weak: below WEAK_JUDGE_ACCURACY
    _write_cell(out, old, images=False)
    _write_cell(out, _row("new", 1, dataset="d", n_classes=5, seed=1), images=False)
    render_report(out)
    report = (out / "report.md").read_text()
    assert "Evaluation model test accuracy: 0.600 ± 0.495" in report
    assert "seed 0: the evaluation model is close to chance: test accuracy 0.250" in report
    rows = {r["cell_id"]: r for r in json.loads((out / "results.json").read_text())}
    assert (rows["old"]["judge_test_accuracy"], rows["new"]["judge_test_accuracy"]) == (0.25, 0.95)
    assert not any("evaluator_test_accuracy" in r for r in rows.values())
    assert (out / "results.csv").read_text().splitlines()[1].split(",")[ROW_KEYS.index("judge_test_accuracy")] == "0.25"


def test_report_writes_null_and_n_a_for_acc5_and_chance_beside_acc(report_dir):
    render_report(report_dir)
    public = {r["cell_id"]: r for r in json.loads((report_dir / "results.json").read_text())}
    assert public["d0"]["acc@5"] is None and public["d0"]["acc@5_std"] is None
    assert public["d0"]["chance@1"] == pytest.approx(0.2) and public["d0"]["chance@5"] == 1.0
    assert public["d0"]["acc@1"] == 0.6 and public["d0"]["n_classes"] == 5
    assert public["f0"]["acc@5"] == 0.6 and public["f0"]["chance@1"] == pytest.approx(0.1)
    assert public["f0"]["chance@5"] == pytest.approx(0.5)
    assert public["o0"]["acc@5"] == 0.9 and public["o0"]["chance@1"] is None

    rows = _csv(report_dir / "results.csv")
    with open(report_dir / "results.csv", newline="") as f:
        assert next(csv.reader(f)) == list(ROW_KEYS)
    assert rows["d0"]["acc@5"] == "n/a" and rows["d0"]["acc@5_std"] == "n/a"
    assert float(rows["d0"]["chance@1"]) == pytest.approx(0.2) and float(rows["d0"]["acc@1"]) == 0.6
    assert float(rows["f1"]["acc@5"]) == 0.8 and float(rows["f1"]["chance@5"]) == pytest.approx(0.5)
    assert rows["o0"]["chance@1"] == "" and float(rows["o0"]["acc@5"]) == 0.9  # unknown, not "not applicable"

    md = (report_dir / "report.md").read_text()
    digits = _section(md, "digits")
    acc5_table = digits.split("### Attack accuracy Acc@5", 1)[1].split("###", 1)[0]
    assert "not applicable with 5 classes" in acc5_table
    assert next(ln for ln in acc5_table.splitlines() if ln.startswith("| none |")).endswith("| n/a |")
    acc1_table = digits.split("### Attack accuracy Acc@1", 1)[1].split("###", 1)[0]
    assert "chance 0.200 with 5 classes" in acc1_table
    assert next(ln for ln in acc1_table.splitlines() if ln.startswith("| none |")).endswith("| 0.600 |")
    faces = _section(md, "faces")
    acc5_faces = faces.split("### Attack accuracy Acc@5", 1)[1].split("###", 1)[0]
    assert "chance 0.500 with 10 classes" in acc5_faces
    # two seeds: mean 0.7 and sample std of (0.6, 0.8)
    assert f"| 0.700 ± {np.std([0.6, 0.8], ddof=1):.3f} |" in acc5_faces
    assert "chance 0.100 with 10 classes" in faces.split("### Attack accuracy Acc@1", 1)[1].split("###", 1)[0]
    assert "unknown (cells saved without their number of classes)" in _section(md, "old")


def test_plots_draw_the_chance_level_and_skip_missing_accuracies(tmp_path):
    from mi_art.evaluations.report import _pyplot, aggregate

    plt = _pyplot()
    fig, ax = plt.subplots()
    aggs = aggregate([normalise_row(_row("a", 0, dataset="d", n_classes=5)),
                      normalise_row(_row("b", 1, dataset="d", n_classes=5, variant="lomma"))])
    _chance_line(ax, aggs)
    (line,) = ax.lines
    assert list(line.get_ydata()) == [0.2, 0.2] and line.get_label() == "chance"
    plt.close(fig)
    fig2, ax2 = plt.subplots()
    _chance_line(ax2, aggregate([_row("c", 0, dataset="d", n_classes=None)]))
    assert list(ax2.lines) == []  # no chance level known: no line
    plt.close("all")
    # a cell whose Acc@1 is missing is left out of the plots instead of breaking them
    out = tmp_path / "out"
    _write_cell(out, _row("a", 0, dataset="d", n_classes=5, acc1=None))
    _write_cell(out, _row("b", 1, dataset="d", n_classes=5, variant="lomma"))
    render_report(out)
    assert (out / "plots" / "frontier-d.png").stat().st_size > 1000
    assert (out / "plots" / "bars-d.png").stat().st_size > 1000


def test_report_keep_images_redraws_only_missing_or_stale_images(report_dir):
    render_report(report_dir)
    images = {p.stem: p for p in (report_dir / "images").glob("*.png")}
    assert sorted(images) == ["d0", "f0", "f1", "o0"]
    # every cell's npz at t0, every image at t0 + 10 (newer than its cell: up to date) ...
    t0 = 1_600_000_000
    for cid, img in images.items():
        os.utime(report_dir / "cells" / f"{cid}.npz", (t0, t0))
        os.utime(img, (t0 + 10, t0 + 10))
    # ... then: f0's cell is rewritten after its image (stale), f1's image is deleted (missing)
    os.utime(report_dir / "cells" / "f0.npz", (t0 + 20, t0 + 20))
    images["f1"].unlink()
    fresh_bytes = {cid: images[cid].read_bytes() for cid in ("d0", "o0")}

    result = CliRunner().invoke(main, ["report", "--keep-images", str(report_dir)])
    assert result.exit_code == 0, result.output
    for cid in ("d0", "o0"):  # up to date: left alone
        assert images[cid].stat().st_mtime == t0 + 10 and images[cid].read_bytes() == fresh_bytes[cid]
    assert images["f0"].stat().st_mtime > t0 + 20  # stale: redrawn
    assert images["f1"].is_file()  # missing: drawn

    result = CliRunner().invoke(main, ["report", str(report_dir)])  # the default, --redraw: every image
    assert result.exit_code == 0, result.output
    for cid in ("d0", "o0"):
        assert images[cid].stat().st_mtime > t0 + 10


def _imported_modules(path: Path, *, top_level_only: bool) -> set:
    """The evaluations modules ``path`` imports (``from .x import``, ``from mi_art.evaluations.x import``,
    ``import mi_art.evaluations.x``), at module level only or anywhere."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            name = node.module or ""
            out.add(name if node.level == 0 else f"mi_art.evaluations.{name}" if name else "mi_art.evaluations")
            if node.level and not name:
                out.update(f"mi_art.evaluations.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_report_and_executors_do_not_import_each_other():
    """report -> executors -> report was a circle (the executors render the report at the end of a
    grid); the rows both need live in mi_art.evaluations.rows."""
    import mi_art.evaluations.executors as executors
    import mi_art.evaluations.rows as rows

    report_imports = _imported_modules(ROOT / "evaluations" / "report.py", top_level_only=False)
    assert "mi_art.evaluations.executors" not in report_imports
    assert "mi_art.evaluations.rows" in report_imports
    assert "mi_art.evaluations.report" not in _imported_modules(ROOT / "evaluations" / "executors.py", top_level_only=True)
    assert "mi_art.evaluations.report" not in _imported_modules(ROOT / "evaluations" / "rows.py", top_level_only=False)
    # the moved names stay importable from the executors, as the same objects
    assert executors.ROW_KEYS is rows.ROW_KEYS and executors.completed_cells is rows.completed_cells
    assert executors.cell_paths is rows.cell_paths


@pytest.mark.parametrize("delta, warned", [(1 / 160, True), (1 / 1600, True), (1e-5, False)])
def test_report_warns_of_a_dp_delta_at_or_above_one_over_ten_n(tmp_path, delta, warned):
    """A DP-SGD cell whose delta is >= 1/(10 N) is warned about in results.json and report.md, naming delta and
    N (from the defense record); below, nothing is said."""
    out = tmp_path / "out"
    row = _row("dp", 0, dataset="faces", n_classes=10) | {
        "defense": "dp-sgd", "defense_params": {"noise_multiplier": 1.0}, "defense_label": "dp-sgd(noise=1)",
        "epsilon": 9.45, "delta": delta, "defense_record": {"accountant": "rdp", "details": {"n_train": 160}}}
    _write_cell(out, row)
    render_report(out)
    said = [w for w in json.loads((out / "results.json").read_text())[0]["warnings"] if "delta" in w]
    md = (out / "report.md").read_text()
    if warned:
        assert len(said) == 1 and f"delta={delta:.3g}" in said[0] and "N=160" in said[0]
        assert markdown_text(said[0]) in md  # escaped as every cell-provided text in the report
    else:
        assert said == [] and "1/(10 N)" not in markdown_text(md) and "10 N" not in md


# --------------------------------------------------------------------------- figures that carry their caveats


def _recorded(monkeypatch, owner, name) -> list:
    """Record the keyword arguments of every call of ``owner.name`` (and still make it)."""
    calls, original = [], getattr(owner, name)

    def wrapper(self, *args, **kwargs):
        calls.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


@pytest.mark.parametrize("seeds", [1, 2])
def test_one_seed_draws_no_error_bars_and_says_so(tmp_path, monkeypatch, seeds):
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    errorbars, bars = _recorded(monkeypatch, Axes, "errorbar"), _recorded(monkeypatch, Axes, "bar")
    titles = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: titles.append(
        " ".join(t.get_text() for t in [fig._suptitle, *(ax.title for ax in fig.axes)] if t is not None)))
    out = tmp_path / "out"
    for seed in range(seeds):
        _write_cell(out, _row(f"c{seed}", seed, dataset="d", n_classes=5, seed=seed, acc1=0.5 + 0.1 * seed),
                    images=False)
    render_report(out)
    drawn = [c["yerr"] is not None for c in errorbars + bars]
    assert drawn and all(drawn) == (seeds > 1) and any(drawn) == (seeds > 1)
    said = "one seed each: no error bars" if seeds == 1 else "mean ± std over seeds"
    assert all(said in " ".join(t.split()) for t in titles), titles


def test_the_report_says_what_an_output_postprocessor_leaves_to_a_white_box_attack(tmp_path):
    out = tmp_path / "out"
    _write_cell(out, _row("n0", 0, dataset="d", n_classes=5), images=False)
    _write_cell(out, {**_row("r0", 1, dataset="d", n_classes=5), "defense": "rounded",
                      "defense_params": {"decimals": 1}, "defense_label": "rounded(decimals=1)"}, images=False)
    render_report(out)
    bought = _section((out / "report.md").read_text(), "d")
    line = next(x for x in bought.splitlines() if x.startswith("- **rounded"))
    assert "output postprocessor" in line and "gradients a white-box attack follows" in line


def test_a_cells_prior_samples_are_drawn_titled_and_linked_from_the_record(tmp_path):
    out = tmp_path / "out"
    row = {**_row("p0", 0, dataset="d", n_classes=5), "prior": {"name": "gmi", "steps": 300, "fid_public": 12.5}}
    _write_cell(out, row)
    with np.load(out / "cells" / "p0.npz") as z:
        arrays = dict(z)
    np.savez_compressed(out / "cells" / "p0.npz", **arrays,
                        prior_samples=np.random.default_rng(0).random((16, 1, 8, 8), dtype=np.float32))
    render_report(out)
    assert (out / "images" / "p0-prior.png").stat().st_size > 1000
    (record,) = json.loads((out / "results.json").read_text())
    assert record["images"] == {"reconstructions": "images/p0.png", "prior_samples": "images/p0-prior.png"}
    assert "[prior](images/p0-prior.png)" in (out / "report.md").read_text()


def test_a_reconstruction_grid_names_the_identities_it_shows(tmp_path, monkeypatch):
    """12 identities attacked, 10 rows drawn: the title says which and that Acc@1 covers all 12."""
    from matplotlib.figure import Figure

    from mi_art.evaluations.plots import save_reconstruction_grid

    titles = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: titles.append(fig._suptitle.get_text()))
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(12), 2)
    save_reconstruction_grid(tmp_path / "g.png", rng.random((24, 1, 8, 8)), labels, rng.random((12, 1, 8, 8)),
                             np.arange(12), title="GMI baseline: Acc@1 0.50")
    text = " ".join(titles[0].split())
    assert "rows: identities 0-9, the first 10 of the 12 attacked (Acc@1 is over all 12)" in text
    save_reconstruction_grid(tmp_path / "h.png", rng.random((4, 1, 8, 8)), labels[:4], rng.random((12, 1, 8, 8)),
                             np.arange(12))
    assert "rows: all 2 identities attacked" in " ".join(titles[1].split())


def test_a_face_runs_figures_say_when_the_prior_budget_is_below_what_made_faces(tmp_path, monkeypatch):
    """Below the face benchmarks' prior steps a face run warns that its pictures are blurred and its Acc@1 a
    judges' vote, and its reconstruction grid carries that under the title; digits and full budgets do not."""
    from matplotlib.figure import Figure

    from mi_art.evaluations.experiment import FACE_PRIOR_STEPS, prior_caveat
    from mi_art.evaluations.plots import write_run_figures

    caveat = prior_caveat("gmi", 300, "image-folder")
    assert "below the 1500 of the face benchmarks" in caveat and "the judges' vote" in caveat
    assert prior_caveat("gmi", FACE_PRIOR_STEPS["gmi"], "image-folder") is None
    assert prior_caveat("kedmi", 60, "digits") is None
    titles = []
    monkeypatch.setattr(Figure, "savefig",
                        lambda fig, *a, **k: titles.append(" ".join(fig._suptitle.get_text().split())))
    rng = np.random.default_rng(0)
    result = {"reconstructions": rng.random((4, 1, 8, 8)), "labels": np.array([0, 0, 1, 1]), "acc@1": 0.87,
              "chance@1": 0.05, "prior": {"name": "gmi", "steps": 300, "fid_public": 40.0, "samples": 8,
                                          "caveat": caveat},
              "prior_samples": rng.random((8, 1, 8, 8))}
    figures = write_run_figures(tmp_path, result, rng.random((2, 1, 8, 8)), np.array([0, 1]), title="GMI lomma on att")
    assert figures == {"reconstructions": "reconstructions.png", "prior_samples": "prior-samples.png"}
    assert " ".join(caveat.split()) in titles[0] and "Acc@1 0.87 (chance 0.05) by the judges" in titles[0]
    assert "GMI prior: 8 samples after 300 training steps; FID 40.0" in titles[1]


def test_report_file_names_from_cell_files_stay_in_their_folders(tmp_path):
    """A dataset name or cell id read from a cell file cannot put a plot or an image outside the output folder."""
    import json

    from mi_art.evaluations.report import render_report, safe_file_name

    out = tmp_path / "a" / "out"
    cells = out / "cells"
    cells.mkdir(parents=True)
    row = {"cell_id": "c0", "index": 0, "dataset": "../../escape", "defense": "none", "defense_params": {},
           "defense_label": "none", "natural_accuracy": 0.9, "epsilon": None, "delta": None, "attack": "gmi",
           "variant": "baseline", "seed": 0, "artifact_seed": 0, "acc@1": 0.5, "acc@1_std": 0.1, "acc@5": 1.0,
           "acc@5_std": 0.0, "knn_dist": 1.0, "fid_eval_features": None, "seconds": 1.0, "cell_seconds": 1.0,
           "judge_test_accuracy": 0.9, "n_identities": 2, "n_reconstructions": 2, "iterations": 1, "n_classes": 5}
    (cells / "c0.json").write_text(json.dumps(row))
    render_report(out)
    written = list(tmp_path.rglob("*escape*.png"))
    assert written and all(p.parent == out / "plots" for p in written), written
    assert (out / "plots" / f"frontier-{safe_file_name('../../escape')}.png").is_file()
    assert safe_file_name("../x/y") == "_x_y" and safe_file_name("digits-32px_v1.0") == "digits-32px_v1.0"


def _cell(out, cid, index, label, defense, params, natural, acc, epsilon=None, details=None):
    row = {"cell_id": cid, "index": index, "dataset": "digits", "defense": defense, "defense_params": params,
           "defense_label": label, "natural_accuracy": natural, "epsilon": epsilon,
           "delta": None if epsilon is None else 1 / 150, "attack": "gmi", "variant": "lomma", "seed": 0,
           "artifact_seed": 0, "acc@1": acc, "acc@1_std": 0.0, "acc@5": 1.0, "acc@5_std": 0.0, "knn_dist": 10.0,
           "fid_eval_features": None, "seconds": 1.0, "cell_seconds": 1.0, "judge_test_accuracy": 0.95,
           "n_identities": 5, "n_classes": 5, "n_reconstructions": 5, "iterations": 10}
    if details is not None:
        row["defense_record"] = {"accountant": "rdp", "details": details}
    (out / "cells").mkdir(parents=True, exist_ok=True)
    (out / "cells" / f"{cid}.json").write_text(json.dumps(row))


def test_report_says_what_each_defense_bought_and_what_epsilon_bounds(tmp_path):
    from mi_art.evaluations.report import EPSILON_NOTE, render_report

    out = tmp_path / "out"
    _cell(out, "a", 0, "none", "none", {}, 0.95, 0.80)
    _cell(out, "b", 1, "dp-sgd(target_epsilon=8.0)", "dp-sgd", {"target_epsilon": 8.0}, 0.85, 0.40, epsilon=7.96,
          details={"noise_multiplier": 2.94, "sample_rate": 1.0, "steps": 40, "trainable": 2,
                   "trained_parameters": 3000, "pretrain_epochs": 60})
    _cell(out, "c", 2, "trap-mid", "trap-mid", {}, 0.93, 0.55)
    render_report(out)
    md = (out / "report.md").read_text()
    assert ("**dp-sgd(target_epsilon=8.0)** at epsilon 7.96: natural accuracy 0.850 (-10.0 points against the "
            "undefended 0.950); the strongest attack on it, gmi/lomma, reaches Acc@1 0.400 (-40.0 points against "
            "0.800 undefended); chance is 0.200.") in md
    assert "**trap-mid**: natural accuracy 0.930 (-2.0 points" in md
    assert "| dp-sgd(target_epsilon=8.0) | 0 | 0.850 | 7.96 | 0.00667 | rdp | 2.940 | 1.000 | 40 | 2 (3000 parameters) " \
           "| yes |" in md
    assert EPSILON_NOTE in md
    assert (out / "plots" / "frontier-digits.png").is_file()


def test_report_without_dp_targets_has_no_epsilon_note(tmp_path):
    from mi_art.evaluations.report import EPSILON_NOTE, render_report

    out = tmp_path / "out"
    _cell(out, "a", 0, "none", "none", {}, 0.95, 0.80)
    _cell(out, "c", 1, "trap-mid", "trap-mid", {}, 0.93, 0.55)
    render_report(out)
    md = (out / "report.md").read_text()
    assert EPSILON_NOTE not in md and "### DP-SGD targets" not in md


def test_report_says_what_a_postprocessor_changed_at_each_access_level(tmp_path):
    from mi_art.evaluations.report import render_report

    out = tmp_path / "out"
    _cell(out, "a", 0, "none", "none", {}, 0.95, 0.80)
    _cell(out, "b", 1, "none", "none", {}, 0.95, 0.70)
    _cell(out, "c", 2, "reverse-sigmoid", "reverse-sigmoid", {}, 0.95, 0.80)
    _cell(out, "d", 3, "reverse-sigmoid", "reverse-sigmoid", {}, 0.95, 0.20)
    for cid in "bd":  # the second cell of each target: the same attack through predict's scores
        path = out / "cells" / f"{cid}.json"
        row = json.loads(path.read_text())
        path.write_text(json.dumps({**row, "attack": "gmi[black-box]", "access": "black-box"}))
    render_report(out)
    md = (out / "report.md").read_text()
    assert ("**reverse-sigmoid**: natural accuracy 0.950 (+0.0 points against the undefended 0.950); white-box: "
            "gmi/lomma reaches 0.800 (+0.0 points against 0.800 undefended); black-box: gmi[black-box]/lomma reaches "
            "0.200 (-50.0 points against 0.700 undefended); chance is 0.200.") in md


def test_the_report_keeps_two_forms_of_one_attack_apart_under_the_grids_names(tmp_path):
    """Two attack forms of one attack, variant and defense (and the default form): each its own column, mean and
    plot bar, never averaged together; the grid's names for the cells (grid.json) win over the saved rows'."""
    from mi_art.evaluations.report import aggregate

    out = tmp_path / "out"
    rows = [{**_row("p0", 0, dataset="digits", n_classes=10, acc1=0.2), "form": "paper"},
            {**_row("l0", 1, dataset="digits", n_classes=10, acc1=0.8), "form": "old-name"},
            _row("d0", 2, dataset="digits", n_classes=10, acc1=0.5)]
    for r in rows:
        _write_cell(out, r, images=False)
    cells = [{"id": "p0", "form": "paper"}, {"id": "l0", "form": "label-only"}, {"id": "d0", "form": None}]
    (out / "grid.json").write_text(json.dumps({"grid": {"name": "forms"}, "cells": cells}))
    render_report(out)
    md = (out / "report.md").read_text()
    table = md[md.index("### Attack accuracy Acc@1"):]
    lines = table.split("\n")
    header, values = lines[4], lines[6]
    assert header.split(" | ")[3:] == ["gmi [paper]/baseline", "gmi [label-only]/baseline", "gmi/baseline |"]
    assert values.split(" | ")[3:] == ["0.200", "0.800", "0.500 |"]
    assert {r["cell_id"]: r["form"] for r in _csv(out / "results.csv").values()} == {
        "p0": "paper", "l0": "label-only", "d0": ""}
    assert [(a["attack"], a["form"], a["acc@1"]) for a in aggregate([normalise_row(r) for r in rows])] == [
        ("gmi [paper]", "paper", 0.2), ("gmi [old-name]", "old-name", 0.8), ("gmi", None, 0.5)]


def test_the_markdown_of_a_grid_with_meta_figures_and_images_is_pinned(tmp_path):
    """report.md's text from fixed rows with what the rendered report of test_metric_facts leaves out: the grid's
    budgets and identities, missing cells, figures, saved images with and without prior samples, and an
    independent judge that shares data with the target (tests/golden/report_markdown.md)."""
    import os

    from test_metric_facts import fixed_rows

    from mi_art.evaluations.report import _markdown, aggregate
    from mi_art.evaluations.rows import normalise_row

    rows = [normalise_row(r) for r in fixed_rows()]
    rows[0]["independent_shares"] = ["public data"]
    out = tmp_path / "out"
    meta = {"grid": {"name": "pinned_grid", "datasets": [], "defenses": [], "iterations": 10, "seeds": [0, 1],
                     "identities": [3, 4, 5, 6]}, "cells": [{}] * (len(rows) + 2)}
    figures = {"faces": [out / "plots" / "frontier-faces.png", out / "plots" / "bars-faces.png"]}
    images = {"n0": {"reconstructions": out / "images" / "n0.png", "prior_samples": out / "images" / "n0-prior.png"},
              "d1": {"reconstructions": out / "images" / "d1.png"}}
    text = _markdown(rows, aggregate(rows), meta, figures, images, out)
    golden = Path(__file__).resolve().parent / "golden" / "report_markdown.md"
    if os.environ.get("MI_ART_WRITE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()
