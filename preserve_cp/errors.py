"""The package's typed errors.

Every user mistake raises a subclass of :class:`PreserveError` whose message names the
file (or object), the field, what was expected and what was found. The CLI prints the
message as one line on stderr and exits with status 2.
"""

from __future__ import annotations


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
