"""The package's typed errors.

Every user mistake raises a subclass of :class:`PreserveError` whose message names the
file (or object), the field, what was expected and what was found. The CLI prints the
message as one line on stderr and exits with status 2.
"""

from __future__ import annotations

import json
from typing import Any


class PreserveError(Exception):
    """Base of every error this package raises on purpose."""


class InputError(PreserveError, ValueError):
    """Malformed input: unknown name, bad YAML, missing or out-of-range field, bad graph."""


class InfeasibleError(PreserveError):
    """A well-formed request that cannot be met (e.g. the model does not fit in HBM)."""


class SolverError(PreserveError):
    """The optimiser could not produce any verified plan (never for a valid request)."""


def input_error(where: str, field: str, expected: str, found: object) -> InputError:
    """Build the standard one-line message: ``where: field: expected X, found Y``.

    >>> str(input_error("hw.yaml", "memory.hbm_bandwidth_tb_per_s", "a positive number", -1))
    'hw.yaml: memory.hbm_bandwidth_tb_per_s: expected a positive number, found -1'
    """
    return InputError(f"{where}: {field}: expected {expected}, found {found!r}")


def json_object(where: str, text: str, *, line: bool = True) -> dict[str, Any]:
    """The JSON object in ``text`` (a file, or with ``line=False`` one line of a JSON Lines
    file, whose position ``where`` already names); a one-line :class:`InputError` otherwise.

    >>> json_object("t.json", '{"a": 1}')
    {'a': 1}
    >>> json_object("t.json", '{"a": 1,}')
    Traceback (most recent call last):
    preserve_cp.errors.InputError: t.json: not valid JSON (line 1, column 9: ...)
    >>> json_object("t.jsonl: line 3", "[1]", line=False)
    Traceback (most recent call last):
    preserve_cp.errors.InputError: t.jsonl: line 3: expected a JSON object, found list
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        at = f"line {exc.lineno}, column {exc.colno}" if line else f"column {exc.colno}"
        raise InputError(f"{where}: not valid JSON ({at}: {exc.msg})") from None
    except RecursionError:
        raise InputError(f"{where}: not valid JSON (nesting too deep)") from None
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a JSON object, found {type(data).__name__}")
    return data
