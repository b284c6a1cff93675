"""Helpers shared by the visualisation outputs: CSV text and matplotlib pictures.

Files are written by :func:`preserve_cp.outputs.write_output` (atomic for regular files,
through links, plain opens for devices and FIFOs, ``-`` for standard output).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..outputs import is_stdout, write_output


def csv_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """CSV of ``rows``; the columns are every key, in order of first appearance.

    >>> print(csv_text([{"a": 1}, {"a": 2, "b": 3}]), end="")
    a,b
    1,
    2,3
    """
    rows = list(rows)
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


FIGURE_SUFFIXES = (".svg", ".png")
PNG_DPI = 130


def figure_suffix(path: str | Path) -> str:
    """The picture format of ``path`` (``.svg`` or ``.png``), or a one-line error.

    Standard output (``-``) gets SVG, a text format.

    >>> figure_suffix("plan.PNG"), figure_suffix("-")
    ('.png', '.svg')
    >>> figure_suffix("plan.pdf")
    Traceback (most recent call last):
    preserve_cp.errors.InputError: plan.pdf: suffix: expected '.svg' or '.png', found '.pdf'
    """
    if is_stdout(path):
        return ".svg"
    suffix = Path(path).suffix.lower()
    if suffix not in FIGURE_SUFFIXES:
        raise InputError(f"{path}: suffix: expected '.svg' or '.png', found {suffix!r}")
    return suffix


def write_figure(path: str | Path, fig: Any) -> Path:
    """Save a matplotlib figure as .svg or .png (``-``: SVG on standard output)."""
    suffix = figure_suffix(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=suffix[1:], dpi=PNG_DPI)
    return write_output(path, buf.getvalue(), text=suffix == ".svg")
