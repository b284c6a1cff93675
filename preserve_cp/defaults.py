"""The workload defaults, defined once for the Python API and every ``preserve-cp`` command.

:class:`~preserve_cp.workload.Workload`'s fields, the ``--phase``, ``--batch``,
``--context``, ``--tp`` and ``--dtype`` options of every command that has them, a sweep
spec's lists and :func:`~preserve_cp.footprint.layer_footprint` take their defaults from
here (docs/api.md, "Defaults"; tests/test_defaults.py checks that they agree).

>>> WORKLOAD_DEFAULTS
{'phase': 'decode', 'batch': 1, 'context': 2048, 'tp': 8, 'dtype': 'bf16'}
"""

from __future__ import annotations

from typing import Final

#: one new token per sequence (``prefill``: the whole prompt)
DEFAULT_PHASE: Final = "decode"
#: sequences in the step
DEFAULT_BATCH: Final = 1
#: KV length (decode) or prompt length (prefill), tokens
DEFAULT_CONTEXT: Final = 2048
#: tensor-parallel degree (devices per pipeline stage)
DEFAULT_TP: Final = 8
#: weights, activations and KV-cache (each overridable on its own)
DEFAULT_DTYPE: Final = "bf16"

#: the defaults by field name (``Workload`` field, CLI option without ``--``)
WORKLOAD_DEFAULTS: Final = {
    "phase": DEFAULT_PHASE,
    "batch": DEFAULT_BATCH,
    "context": DEFAULT_CONTEXT,
    "tp": DEFAULT_TP,
    "dtype": DEFAULT_DTYPE,
}
