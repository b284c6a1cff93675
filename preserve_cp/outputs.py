"""Every file the package writes goes through here: one set of rules, one folder policy.

``write_output(path, data)`` writes text or bytes to ``path``:

* ``-`` (and ``/dev/stdout``, ``/dev/fd/1``) is standard output. Text goes as UTF-8; bytes
  that are not text (a PNG) are refused when standard output is a terminal.
* A regular file, or a new name in an existing folder: the data goes to a temporary file in
  that folder, which then replaces the target (``os.replace`` is atomic on one file system),
  so a reader never sees a half-written file. An existing file keeps its permission bits.
* A symbolic link is written *through*: its target is opened, truncated and written (not
  atomically); the link itself stays a link. A dangling link creates its target when the
  target's folder exists.
* A character or block device, a FIFO or a socket is opened for writing as it is: no
  temporary file, no rename, no change of mode.
* A folder, or a name whose folder does not exist, is refused with one line, before anything
  is written: ``--trace out/x.json: folder out does not exist (create it first)``.

Folders are never created for a file. An output *folder* (``validate --out``,
``reproduce --out``) may be created itself by :func:`output_folder`, but its parent must
exist. Every failure is an :class:`~preserve_cp.errors.InputError` naming the path (and the
option, when the caller passes one as ``what``).
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

from .errors import InputError

STDOUT = "-"
#: names that mean this process's standard output, whatever file or pipe it is
STDOUT_NAMES = frozenset({STDOUT, "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"})


def is_stdout(path: str | Path) -> bool:
    """Whether ``path`` names standard output.

    >>> is_stdout("-"), is_stdout("/dev/stdout"), is_stdout("trace.json")
    (True, True, False)
    """
    return str(path) in STDOUT_NAMES


def _label(path: str | Path, what: str | None) -> str:
    return f"{what} {path}" if what else str(path)


def _missing_folder(path: str | Path, what: str | None, folder: str | Path) -> InputError:
    return InputError(
        f"{_label(path, what)}: folder {folder or '.'} does not exist (create it first)"
    )


def _oserror(path: str | Path, what: str | None, exc: OSError) -> InputError:
    return InputError(f"{_label(path, what)}: cannot write file ({exc.strerror or exc})")


def _plan(path: str | Path, what: str | None) -> tuple[str, int | None]:
    """How ``path`` will be written: ``("stdout" | "plain" | "atomic", mode to keep)``.

    Raises the one-line error for a folder, a missing folder or an unreadable path.
    """
    if is_stdout(path):
        return "stdout", None
    p = os.fspath(path)
    try:
        st = os.stat(p)  # follows links
    except (FileNotFoundError, NotADirectoryError):
        st = None
    except OSError as exc:
        raise _oserror(path, what, exc) from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"{_label(path, what)}: is a folder; expected a file name")
        if stat.S_ISREG(st.st_mode) and not os.path.islink(p):
            return "atomic", stat.S_IMODE(st.st_mode) & 0o777
        return "plain", None  # a link to an existing file, or a device, FIFO, socket
    if os.path.islink(p):  # dangling: create the target through the link
        folder = os.path.dirname(os.path.realpath(p))
        if not os.path.isdir(folder):
            target = os.readlink(p)
            raise InputError(
                f"{_label(path, what)}: link target {target}: folder {folder} does not exist "
                "(create it first)"
            )
        return "plain", None
    folder = os.path.dirname(p)
    if folder and not os.path.isdir(folder):
        if os.path.exists(folder):
            raise InputError(f"{_label(path, what)}: {folder} is not a folder")
        raise _missing_folder(path, what, folder)
    return "atomic", None


def check_output(path: str | Path, what: str | None = None) -> None:
    """Refuse, before any work, a file output that :func:`write_output` would refuse.

    Nothing is opened or created (a FIFO is not opened: that would wait for a reader).

    >>> check_output("-")
    >>> check_output("no-such-folder/x.json", "--trace")
    Traceback (most recent call last):
    preserve_cp.errors.InputError: --trace no-such-folder/x.json: folder no-such-folder does not exist (create it first)
    """  # noqa: E501
    _plan(path, what)


def require_folder(path: str | Path, what: str | None = None) -> None:
    """The folder that will hold ``path`` (a file that is not an output, e.g. a database)
    must exist; else the same one-line error as for outputs.

    >>> require_folder("no-such-folder/r.sqlite")
    Traceback (most recent call last):
    preserve_cp.errors.InputError: no-such-folder/r.sqlite: folder no-such-folder does not exist (create it first)
    """  # noqa: E501
    folder = os.path.dirname(os.fspath(path))
    if folder and not os.path.isdir(folder):
        raise _missing_folder(path, what, folder)


def output_folder(path: str | Path, what: str | None = None) -> Path:
    """An output folder: created when missing, but only when its parent exists.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> output_folder(d / "results").is_dir()
    True
    >>> output_folder(d / "no" / "results")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    preserve_cp.errors.InputError: .../no/results: folder .../no does not exist (create it first)
    """
    if is_stdout(path):
        raise InputError(f"{_label(path, what)}: expected a folder, not standard output")
    folder = Path(path)
    if folder.is_dir():
        return folder
    if folder.exists() or folder.is_symlink():
        raise InputError(f"{_label(path, what)}: expected a folder, found a file")
    parent = os.path.dirname(os.fspath(path).rstrip("/"))
    if parent and not os.path.isdir(parent):
        raise _missing_folder(path, what, parent)
    try:
        folder.mkdir()
    except OSError as exc:
        raise InputError(
            f"{_label(path, what)}: cannot create the folder ({exc.strerror or exc})"
        ) from None
    return folder


def write_output(
    path: str | Path, data: str | bytes, what: str | None = None, *, text: bool | None = None
) -> Path:
    """Write ``data`` (``str`` as UTF-8, or bytes) to ``path`` by the rules of this module.

    ``text`` says whether bytes are text (an SVG) or not (a PNG); it decides only whether
    standard output may be a terminal. Returns ``Path(path)``.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> write_output(d / "x.txt", "hé").read_text(encoding="utf-8")
    'hé'
    >>> write_output(d / "x.bin", b"ab").read_bytes()
    b'ab'
    >>> _ = write_output("-", "to standard output\\n")
    to standard output
    """
    is_text = isinstance(data, str) if text is None else text
    raw = data.encode("utf-8") if isinstance(data, str) else data
    how, mode = _plan(path, what)
    if how == "stdout":
        _write_stdout(path, what, raw, is_text)
    elif how == "plain":
        _write_plain(path, what, raw)
    else:
        _write_atomic(path, what, raw, mode)
    return Path(path)


def _write_stdout(path: str | Path, what: str | None, raw: bytes, is_text: bool) -> None:
    out = sys.stdout
    if not is_text and out.isatty():
        raise InputError(
            f"{_label(path, what)}: standard output is a terminal; expected a file name or a "
            "pipe for binary data"
        )
    out.flush()
    buffer = getattr(out, "buffer", None)
    if buffer is None:  # a text-only stream (e.g. io.StringIO): text only
        out.write(raw.decode("utf-8"))
    else:
        buffer.write(raw)
        buffer.flush()


def _write_plain(path: str | Path, what: str | None, raw: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOCTTY", 0)
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is None or stat.S_ISREG(st.st_mode):
        flags |= os.O_TRUNC  # a link's target file: rewrite it; devices and FIFOs as they are
    try:
        fd = os.open(path, flags, 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
    except OSError as exc:
        raise _oserror(path, what, exc) from None


def _write_atomic(path: str | Path, what: str | None, raw: bytes, mode: int | None) -> None:
    target = Path(path)
    folder = os.path.dirname(os.fspath(path)) or "."
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=folder)
    except OSError as exc:
        raise _oserror(path, what, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            if mode is None:
                umask = os.umask(0)
                os.umask(umask)
                mode = 0o666 & ~umask  # an ordinary new file, not mkstemp's 0600
            os.fchmod(fh.fileno(), mode)
        os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _oserror(path, what, exc) from None
        raise
