"""Text from the saved cells as it goes into the report: escaped for markdown, made a safe file name, and a mean with
its spreads."""
from __future__ import annotations

import re
from typing import Any, Optional

#: Characters that start markup wherever they stand; ``]`` only where a link or image would follow (the
#: access level in ``gmi[black-box]`` stays as it is), ``_`` only at a word's edge (handled apart).
_MARKUP = re.compile(r"([\\`*~$#|]|\](?=[(\[]))")
_EDGE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def markdown_text(value: Any) -> str:
    """``value`` as literal text inside a line of markdown, a table cell included: whitespace runs (newlines
    too) become one space, ``|`` and markup characters are escaped, and HTML is written as entities. Every
    string the report takes from cell files (data set names, defense labels, attacks, seeds, records) goes
    through here, so a name cannot break a table or inject markup."""
    text = " ".join(str(value).split())
    text = "".join(_HTML.get(c, c) for c in _MARKUP.sub(r"\\\1", text))
    return _EDGE_UNDERSCORE.sub(r"\\_", text)


def safe_file_name(name: str) -> str:
    """``name`` as one file name: characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_``,
    and no leading dot (``../x`` becomes ``_x``, never a path out of the folder)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip(".") or "_"


def mean_std_text(mean: Optional[float], std: Optional[float], n: int, spec: str,
                  judge_std: Optional[float] = None) -> str:
    """``mean ± std`` over ``n`` values (the mean alone for one), with the std over judges where given; n/a for no
    mean."""
    if mean is None:
        return "n/a"
    text = f"{mean:{spec}} ± {std:{spec}}" if n > 1 else f"{mean:{spec}}"
    return text if judge_std is None else f"{text} (judges ± {judge_std:{spec}})"

