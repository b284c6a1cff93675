"""Atomic file writes for every visualisation output (one implementation, text or bytes).

A reader never sees a half-written trace, picture or report: the data goes to a temporary
file in the target's folder, which then replaces the target (``os.replace`` is atomic on
one file system). Any ``OSError`` becomes an :class:`~preserve_cp.errors.InputError` naming
the path.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import InputError


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to exactly ``path`` via a temporary file in the same folder.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> write_bytes_atomic(d / "x.bin", b"ab").read_bytes()
    b'ab'
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=folder)
    except OSError as exc:
        raise InputError(f"{path}: cannot write file ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # an ordinary file, not mkstemp's 0600
        os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise InputError(f"{path}: cannot write file ({exc.strerror or exc})") from None
        raise
    return target


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to exactly ``path`` via a temporary file in the same folder.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> write_text_atomic(d / "x.txt", "hé").read_text(encoding="utf-8")
    'hé'
    """
    return write_bytes_atomic(path, text.encode("utf-8"))


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

    >>> figure_suffix("plan.PNG")
    '.png'
    >>> figure_suffix("plan.pdf")
    Traceback (most recent call last):
    preserve_cp.errors.InputError: plan.pdf: suffix: expected '.svg' or '.png', found '.pdf'
    """
    suffix = Path(path).suffix.lower()
    if suffix not in FIGURE_SUFFIXES:
        raise InputError(f"{path}: suffix: expected '.svg' or '.png', found {suffix!r}")
    return suffix


def write_figure(path: str | Path, fig: Any) -> Path:
    """Save a matplotlib figure as .svg or .png atomically."""
    suffix = figure_suffix(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=suffix[1:], dpi=PNG_DPI)
    return write_bytes_atomic(path, buf.getvalue())
