"""Sphinx configuration of the mi-art documentation.

Build: ``sphinx-build -W -b html docs docs/_build/html``. Nothing is fetched at build time (no
intersphinx); math is rendered by MathJax in the reader's browser.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Importing the API for autodoc must stay light: one thread, no progress bars.
os.environ.setdefault("OMP_NUM_THREADS", "1")

project = "mi-art"
author = "mi-art contributors"
copyright = "2025, mi-art contributors"
try:
    from mi_art import __version__ as release
except Exception:  # pragma: no cover - docs of a broken checkout still build their prose
    release = "0.1.0"
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_click",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# Curly quotes and ellipses, but no dash conversion: option names such as --data-root in the
# command-line help must stay as typed.
smartquotes_action = "qe"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# -- MyST ---------------------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# -- autodoc / napoleon -------------------------------------------------------------------------
# The code mixes NumPy-style sections (data, metrics) with ART-style ``:param x:`` fields (attacks,
# defenses); napoleon turns the former into the latter and leaves the latter alone.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_preserve_defaults = True
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
# Type hints name torch, numpy and ART classes that no local inventory resolves (intersphinx would
# have to download them): unresolved cross-references are not reported.
nitpicky = False

# -- HTML ---------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"mi-art {release}"
html_static_path = ["_static"]
html_show_sourcelink = False
