"""Safe YAML reading and pydantic-error translation shared by the hardware and model loaders."""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import InputError

M = TypeVar("M", bound=BaseModel)

MAX_FILE_BYTES = 1_000_000


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read ``path`` with ``yaml.safe_load`` and return its top-level mapping.

    Raises :class:`InputError` naming the file for unreadable, non-UTF-8, malformed,
    hostile (python tags) or non-mapping content.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise InputError(f"{path}: file is {len(raw)} bytes; expected at most {MAX_FILE_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: expected UTF-8 text, found a bad byte at offset {exc.start}"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{path}: malformed YAML{where}: {problem}") from None
    except RecursionError:
        raise InputError(f"{path}: malformed YAML: nesting too deep") from None
    if not isinstance(data, dict):
        raise InputError(
            f"{path}: expected a mapping at the top level, found {type(data).__name__}"
        )
    return data


def _fmt_found(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate(model: type[M], data: dict[str, Any], where: str) -> M:
    """Validate ``data`` against ``model``; turn the first pydantic error into an InputError."""
    try:
        out = model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        kind = err["type"]
        if kind == "missing":
            raise InputError(f"{where}: {field}: required field is missing") from None
        if kind == "extra_forbidden":
            raise InputError(f"{where}: {field}: unknown field (check the spelling)") from None
        msg = err["msg"]
        msg = msg[0].lower() + msg[1:] if msg else "a valid value"
        msg = msg.removeprefix("value error, ").removeprefix("input should be ")
        if kind == "value_error" and isinstance(err.get("input"), dict):
            # a cross-field check: the message names the fields; the whole mapping is noise
            raise InputError(f"{where}: {field}: expected {msg}") from None
        raise InputError(
            f"{where}: {field}: expected {msg}, found {_fmt_found(err.get('input'))}"
        ) from None
    except RecursionError:
        raise InputError(f"{where}: nesting too deep") from None
    for loc, text in quoted_numbers(data, out):
        field = ".".join(str(p) for p in loc)
        raise InputError(f"{where}: {field}: expected a number, found the string {text!r}")
    return out


def quoted_numbers(raw: Any, value: Any, loc: tuple[Any, ...] = ()) -> list[tuple[tuple, str]]:
    """Where pydantic turned a string of ``raw`` into a number of the validated ``value``.

    Pydantic's lax mode reads ``"3.35"`` as 3.35; in a YAML file that is a quoted number, a
    mistake worth a message (numbers in YAML are numbers), so :func:`validate` rejects it.

    >>> from pydantic import BaseModel
    >>> class Mem(BaseModel):
    ...     bw: float
    ...     name: str
    ...     sizes: list[int] = []
    >>> raw = {"bw": "3.35", "name": "h", "sizes": [1, "2"]}
    >>> quoted_numbers(raw, Mem.model_validate(raw))
    [(('bw',), '3.35'), (('sizes', 1), '2')]
    """
    if isinstance(raw, str):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return [(loc, raw)] if number else []
    found: list[tuple[tuple, str]] = []
    if isinstance(raw, dict):
        if isinstance(value, BaseModel):
            names = {(f.alias or name): name for name, f in type(value).model_fields.items()} | {
                name: name for name in type(value).model_fields
            }
            for k, v in raw.items():
                if k in names:
                    found += quoted_numbers(v, getattr(value, names[k], None), (*loc, k))
        elif isinstance(value, dict):
            for k, v in raw.items():
                if k in value:
                    found += quoted_numbers(v, value[k], (*loc, k))
    elif isinstance(raw, list) and isinstance(value, list | tuple) and len(raw) == len(value):
        for i, (a, b) in enumerate(zip(raw, value, strict=True)):
            found += quoted_numbers(a, b, (*loc, i))
    return found


def not_bool(value: Any) -> Any:
    """Pydantic before-validator: reject ``true``/``false`` (YAML ``yes``, ``on``) as a number."""
    if isinstance(value, bool):
        raise ValueError("a number, not a boolean")
    return value


def finite_positive(value: float) -> float:
    """Pydantic after-validator: a finite number > 0."""
    if not math.isfinite(value) or value <= 0:
        raise ValueError("a finite number > 0")
    return value


def finite_nonneg(value: float) -> float:
    """Pydantic after-validator: a finite number >= 0."""
    if not math.isfinite(value) or value < 0:
        raise ValueError("a finite number >= 0")
    return value


def fraction(value: float) -> float:
    """Pydantic after-validator: a number in (0, 1]."""
    if not math.isfinite(value) or not 0 < value <= 1:
        raise ValueError("a number in (0, 1]")
    return value


def share(value: float) -> float:
    """Pydantic after-validator: a number in [0, 1]."""
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise ValueError("a number in [0, 1]")
    return value


def resolve_named_file(name_or_path: str, folder: Path, kind: str) -> Path:
    """A shipped NAME resolves to ``folder/NAME.yaml``; a suffix or a slash makes it a path."""
    if not isinstance(name_or_path, str) or not name_or_path:
        raise InputError(f"{kind}: expected a name or a path, found {name_or_path!r}")
    looks_like_path = "/" in name_or_path or name_or_path.endswith((".yaml", ".yml"))
    if looks_like_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise InputError(f"{name_or_path}: {kind} file not found")
        return path
    candidate = folder / f"{name_or_path}.yaml"
    if not candidate.is_file():
        names = sorted(p.stem for p in folder.glob("*.yaml"))
        close = did_you_mean(name_or_path, names)
        if close:
            raise InputError(f"unknown {kind} {name_or_path!r}: did you mean {close}?")
        raise InputError(
            f"unknown {kind} {name_or_path!r}: expected one of {', '.join(names)}, or a path"
        )
    return candidate


def did_you_mean(name: str, known: list[str]) -> str:
    """The known name closest to a mistyped ``name``, or ``""`` when none is close.

    >>> did_you_mean("h100-sx", ["a100-sxm", "h100-sxm", "h200-sxm"])
    'h100-sxm'
    >>> did_you_mean("Llama3-70B", ["llama2-70b", "llama3-70b", "llama3-8b"])
    'llama3-70b'
    >>> did_you_mean("zzz", ["h100-sxm"])
    ''
    """
    return "".join(difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.75))


def data_dir(sub: str) -> Path:
    """A shipped data folder (``hardware/``, ``graphs/``, ``validation/``): the copy an
    installed package carries (``preserve_cp/_data/``, made by the build: setup.py), else the
    repository root's (a source checkout or an editable install)."""
    here = Path(__file__).resolve().parent
    packaged = here / "_data" / sub
    return packaged if packaged.is_dir() else here.parent / sub
