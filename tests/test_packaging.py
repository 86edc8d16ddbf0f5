"""The wheel installs one top-level package, ``mi_art``: the design card's ``defenses/`` and
``evaluations/`` folders go in as ``mi_art.defenses`` and ``mi_art.evaluations`` (a package called
``evaluations`` already exists on PyPI, and two distributions must not overwrite each other)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("mi_art", "defenses", "evaluations"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    built, = out.glob("mi_art-*.whl")
    return built


@pytest.fixture(scope="module")
def wheel_names(wheel) -> set:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_wheel_has_one_top_level_package(wheel_names):
    tops = {n.split("/")[0] for n in wheel_names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"mi_art"}


def test_wheel_holds_every_module_of_the_three_folders(wheel_names):
    for folder, package in (("mi_art", "mi_art"), ("defenses", "mi_art/defenses"),
                            ("evaluations", "mi_art/evaluations")):
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).as_posix()
            assert f"{package}/{rel}" in wheel_names, f"{folder}/{rel} is missing from the wheel"


def test_console_script_points_into_the_namespace(wheel, wheel_names):
    entry = next(n for n in wheel_names if n.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(wheel) as zf:
        scripts = zf.read(entry).decode()
    assert "mi-art = mi_art.evaluations.cli:main" in scripts


def test_installed_names():
    import mi_art.defenses
    import mi_art.evaluations.cli

    assert mi_art.defenses.__name__ == "mi_art.defenses"
    assert callable(mi_art.defenses.train_defended_target)
    assert mi_art.evaluations.cli.main.name in ("main", "cli", "mi-art")


def test_the_library_does_not_import_the_harness():
    """Dependencies point one way: evaluations/ (the harness) uses mi_art/ and defenses/, never the reverse."""
    import ast

    offenders = []
    for folder in ("mi_art", "defenses"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                if isinstance(node, ast.ImportFrom) and node.level:  # from ..evaluations import x
                    names = [n.replace("evaluations", "mi_art.evaluations", 1) for n in names]
                if any(n.split(".")[:2] == ["mi_art", "evaluations"] for n in names):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"library modules import the harness: {offenders}"


def test_the_single_run_does_not_import_the_report():
    """The data flow points one way: the single run (its configuration, the Workbench, run_attack) imports nothing
    of what reads its records (the grid, its rows and executors, the report and its figures, the command line)."""
    code = ("import sys, mi_art.evaluations.experiment; "
            "print(' '.join(m for m in sys.modules if m.startswith('mi_art.evaluations.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    readers = {"report", "report_rows", "report_text", "report_plots", "markdown", "plots", "rows", "executors",
               "cell_runner", "grid", "grid_data", "grid_specs", "grid_files", "grid_schema", "grid_renames", "claims", "utility",
               "leakage", "cli", "cli_options", "cli_attack", "presets"}
    assert "mi_art.evaluations.workbench" in loaded
    assert not [m for m in loaded if m.split(".")[-1] in readers]
