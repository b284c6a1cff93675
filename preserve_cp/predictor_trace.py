"""Predictor traces: per decode step and MoE layer, the experts a predictor named and those the
router then selected.

An expert predictor logs, for every decode step and MoE layer, the experts it named before the
layer's router ran and the experts the router then selected for the batch's tokens.
Router-aware prefetch (:mod:`preserve_cp.router`) can read such a log as its routing
scenarios, one scenario per step, instead of sampling routings from a routing model and a
predictor of stated accuracy. This module reads, checks and writes the file; ``router.py``
turns its steps into scenarios.

The file (``docs/moe.md``, "A predictor trace") is JSON Lines: UTF-8, one JSON object per line,
blank lines skipped. The first line is the header, every later line one decode step (each
object is on one line in the file; wrapped here)::

    {"format": "preserve-cp-predictor-trace/1", "experts": 8, "top_k": 2, "tokens": 4,
     "description": "optional free text: where the log comes from"}
    {"step": 0, "layers": {"0": {"predicted": [1, 2, 5, 6],
                                 "actual": [[1, 5], [2, 5], [1, 6], [0, 2]]}, "1": ...}}

* header: ``format`` exactly ``preserve-cp-predictor-trace/1``; ``experts`` and ``top_k``
  the model's ``num_experts`` and ``experts_per_token``; ``tokens`` the tokens one step routes
  (decode: the batch), equal to the workload's; ``description`` optional; nothing else;
* a step: ``layers`` maps a layer index (a decimal string, as in the graph's ``L<i>.``
  names) to ``{"predicted": IDS, "actual": IDS}``, with an entry for every MoE layer of the
  model and no other; ``step`` (optional, an integer >= 0) labels it in messages. Steps are
  used in file order. At least one step;
* IDS is either the batch's set (a list of distinct expert ids in ``[0, experts)``) or one
  list per token (``tokens`` lists of distinct ids): per token, ``actual`` has exactly
  ``top_k`` ids (the router's top-k) and ``predicted`` at least one. A set ``actual`` has
  between ``top_k`` and ``min(experts, tokens x top_k)`` ids; ``predicted`` is never empty.

What is used is the union over the step's tokens: the grouped GEMM reads an expert's weights
once per layer and step when any token selected it, so L2 and HBM see only the union. Per-token
lists are accepted because that is what predictors log, and each token's top-k is checked
before they are merged.

:func:`precision_recall` measures the predictor on the steps: id-weighted over (step, MoE
layer, expert), on the unions, over all the model's experts (not one expert-parallel rank's):
precision = sum |named and selected| / sum |named|, recall = sum |named and selected| /
sum |selected|. The expert tensors of one model's MoE layers have equal sizes, so this is also
the bytes-weighted figure there.

Every problem raises one InputError line naming the file, the line (and the step's label), the
field and what was expected.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, input_error, json_object
from .moe import id_ranges
from .outputs import write_output

PREDICTOR_FORMAT = "preserve-cp-predictor-trace/1"
_HEADER_FIELDS = ("format", "description", "experts", "top_k", "tokens")
_STEP_FIELDS = ("step", "layers")
_LAYER_FIELDS = ("predicted", "actual")


@dataclass(frozen=True, eq=False)
class StepLayer:
    """One MoE layer of one step: which of the model's experts were named and selected."""

    predicted: np.ndarray  # (experts,) bool: named by the predictor (union over the tokens)
    actual: np.ndarray  # (experts,) bool: selected by the router for at least one token
    per_token: np.ndarray | None = None  # (tokens, top_k) ids each token selected, if known


@dataclass(frozen=True, eq=False)
class TraceStep:
    """One decode step as a predictor logs it: a :class:`StepLayer` per MoE layer."""

    experts: int
    top_k: int
    tokens: int
    layers: Mapping[int, StepLayer]
    label: int | None = None  # the file's ``step`` value


@dataclass(frozen=True)
class PredictorTrace:
    """A checked predictor-trace file (its first ``len(steps)`` steps kept)."""

    path: str
    experts: int
    top_k: int
    tokens: int
    description: str
    steps: tuple[TraceStep, ...]
    total_steps: int  # steps in the file (all checked)


def _short(value: Any) -> str:
    """``repr`` of a found value, cut to keep the message one short line."""
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def id_dtype(experts: int) -> type[np.unsignedinteger[Any]]:
    """The narrowest unsigned integer type for expert ids below ``experts`` (per-token ids
    are kept for every layer of every scenario)."""
    return np.uint16 if experts <= 1 << 16 else np.uint32


def _is_int(x: Any) -> bool:
    return type(x) is int  # not bool, not float


def _ids(where: str, field: str, row: list[Any], experts: int) -> list[int]:
    """``row`` checked as distinct expert ids."""
    for j, x in enumerate(row):
        if not _is_int(x) or not 0 <= x < experts:
            raise InputError(
                f"{where}: {field}[{j}]: expected an expert id in [0, {experts - 1}], "
                f"found {_short(x)}"
            )
    seen: set[int] = set()
    for x in row:
        if x in seen:
            raise InputError(f"{where}: {field}: expected distinct expert ids, found {x} twice")
        seen.add(x)
    return row


def _id_field(
    where: str, field: str, value: Any, experts: int, tokens: int, per_token_len: int | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """A ``predicted`` or ``actual`` value: the union mask, and the per-token ids when given as
    per-token lists of ``per_token_len`` ids (``actual``)."""
    want = f"a non-empty list of expert ids (the batch's) or {tokens} per-token lists"
    if not isinstance(value, list) or not value:
        raise InputError(f"{where}: {field}: expected {want}, found {_short(value)}")
    mask = np.zeros(experts, dtype=bool)
    if not isinstance(value[0], list):  # the batch's set
        mask[_ids(where, field, value, experts)] = True
        return mask, None
    if len(value) != tokens:
        raise InputError(
            f"{where}: {field}: expected {tokens} per-token lists (the header's tokens), "
            f"found {len(value)}"
        )
    for t, row in enumerate(value):
        if not isinstance(row, list) or not row:
            raise InputError(
                f"{where}: {field}[{t}]: expected a non-empty list of expert ids (one token's), "
                f"found {_short(row)}"
            )
        if per_token_len is not None and len(row) != per_token_len:
            raise InputError(
                f"{where}: {field}[{t}]: expected {per_token_len} expert ids (top_k) per token, "
                f"found {len(row)}"
            )
        mask[_ids(where, f"{field}[{t}]", row, experts)] = True
    per_token = np.array(value, dtype=id_dtype(experts)) if per_token_len is not None else None
    return mask, per_token


def _layer(where: str, field: str, entry: Any, experts: int, top_k: int, tokens: int) -> StepLayer:
    if not isinstance(entry, dict):
        raise InputError(
            f"{where}: {field}: expected an object with 'predicted' and 'actual', "
            f"found {_short(entry)}"
        )
    for k in entry:
        if k not in _LAYER_FIELDS:
            raise InputError(f"{where}: {field}.{k}: unknown field (expected predicted, actual)")
    for k in _LAYER_FIELDS:
        if k not in entry:
            raise InputError(f"{where}: {field}.{k}: required field is missing")
    actual, per_token = _id_field(where, f"{field}.actual", entry["actual"], experts, tokens, top_k)
    n = int(actual.sum())
    most = min(experts, tokens * top_k)
    if per_token is None and not top_k <= n <= most:
        raise InputError(
            f"{where}: {field}.actual: expected between top_k ({top_k}) and "
            f"min(experts, tokens x top_k) ({most}) selected experts, found {n}"
        )
    predicted, _ = _id_field(where, f"{field}.predicted", entry["predicted"], experts, tokens, None)
    return StepLayer(predicted, actual, per_token)


def _header(where: str, obj: dict[str, Any], experts: int, top_k: int, tokens: int) -> str:
    """Check the header line against the model and workload; return its description."""
    if "format" not in obj:
        raise InputError(
            f"{where}: format: required field is missing (the first line is the header: "
            f'{{"format": "{PREDICTOR_FORMAT}", "experts": ..., "top_k": ..., "tokens": ...}})'
        )
    for k in obj:
        if k not in _HEADER_FIELDS:
            raise InputError(f"{where}: {k}: unknown field (check the spelling)")
    if obj["format"] != PREDICTOR_FORMAT:
        raise input_error(where, "format", repr(PREDICTOR_FORMAT), obj["format"])
    for name, value, what in (
        ("experts", experts, "the model's num_experts"),
        ("top_k", top_k, "the model's experts_per_token"),
        ("tokens", tokens, "the workload's tokens per step: decode, the batch"),
    ):
        if name not in obj:
            raise InputError(f"{where}: {name}: required field is missing")
        if obj[name] != value or not _is_int(obj[name]):
            found = _short(obj[name])
            raise InputError(f"{where}: {name}: expected {value} ({what}), found {found}")
    description = obj.get("description", "")
    if not isinstance(description, str):
        raise input_error(where, "description", "a string", description)
    return description


def _step(
    where: str, obj: dict[str, Any], experts: int, top_k: int, tokens: int, layers: list[int]
) -> TraceStep:
    for k in obj:
        if k not in _STEP_FIELDS:
            raise InputError(f"{where}: {k}: unknown field (a step has 'step' and 'layers')")
    label = obj.get("step")
    if "step" in obj:
        if not isinstance(label, int) or isinstance(label, bool) or label < 0:
            raise InputError(
                f"{where}: step: expected an integer >= 0 (the step's label), found {_short(label)}"
            )
        where = f"{where} (step {label})"
    if "layers" not in obj:
        raise InputError(f"{where}: layers: required field is missing")
    raw = obj["layers"]
    if not isinstance(raw, dict) or not raw:
        raise InputError(
            f"{where}: layers: expected an object of MoE layer index -> "
            f"{{predicted, actual}}, found {_short(raw)}"
        )
    known = set(layers)
    got: dict[int, StepLayer] = {}
    for key, entry in raw.items():
        if not (key.isascii() and key.isdigit() and str(int(key)) == key):
            raise InputError(
                f"{where}: layers: expected keys that are layer indices (0, 1, ...), found {key!r}"
            )
        if int(key) not in known:
            raise InputError(
                f"{where}: layers.{key}: expected only the model's MoE layers "
                f"({id_ranges(layers)}), found layer {key}"
            )
        got[int(key)] = _layer(where, f"layers.{key}", entry, experts, top_k, tokens)
    missing = [ly for ly in layers if ly not in got]
    if missing:
        raise InputError(
            f"{where}: layers: expected an entry for every MoE layer of the model "
            f"({id_ranges(layers)}), missing {id_ranges(missing)}"
        )
    return TraceStep(experts, top_k, tokens, {ly: got[ly] for ly in layers}, label)


def read_predictor_trace(
    path: str | os.PathLike[str],
    *,
    experts: int,
    top_k: int,
    tokens: int,
    layers: Iterable[int],
    max_steps: int | None = None,
) -> PredictorTrace:
    """Read and check a predictor-trace file against a model's routed experts (``experts``,
    ``top_k``), the workload's ``tokens`` per step and the graph's MoE ``layers``.

    Every step is checked; the first ``max_steps`` are kept (all when None).

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "t.jsonl")
    >>> with open(p, "w") as f:
    ...     _ = f.write('{"format": "preserve-cp-predictor-trace/1", "experts": 4, '
    ...                 '"top_k": 1, "tokens": 2}\\n'
    ...                 '{"layers": {"0": {"predicted": [1], "actual": [[1], [3]]}}}\\n')
    >>> t = read_predictor_trace(p, experts=4, top_k=1, tokens=2, layers=[0])
    >>> t.total_steps, t.steps[0].layers[0].actual.tolist()
    (1, [False, True, False, True])
    >>> read_predictor_trace(p, experts=4, top_k=1, tokens=2, layers=[0, 1])
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    preserve_cp.errors.InputError: .../t.jsonl: line 2: layers: expected an entry for every MoE layer of the model (0-1), missing 1
    """  # noqa: E501
    name = os.fspath(path)
    want = sorted(set(layers))
    header: str | None = None
    steps: list[TraceStep] = []
    total = 0
    try:
        f = open(name, "rb")  # noqa: SIM115 - closed below; lines are decoded one by one
    except FileNotFoundError:
        raise InputError(f"{name}: predictor trace file not found") from None
    except IsADirectoryError:
        raise InputError(f"{name}: predictor trace file not found (a directory)") from None
    except OSError as exc:
        raise InputError(f"{name}: cannot read predictor trace ({exc.strerror or exc})") from None
    try:
        with f:
            for n, raw in enumerate(f, 1):
                where = f"{name}: line {n}"
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InputError(
                        f"{where}: expected UTF-8 text, found a bad byte at column {exc.start + 1}"
                    ) from None
                if not text.strip():
                    continue
                obj = json_object(where, text, line=False)
                if header is None:
                    header = _header(where, obj, experts, top_k, tokens)
                    continue
                step = _step(where, obj, experts, top_k, tokens, want)
                total += 1
                if max_steps is None or len(steps) < max_steps:
                    steps.append(step)
    except OSError as exc:
        raise InputError(f"{name}: cannot read predictor trace ({exc.strerror or exc})") from None
    if header is None:
        raise InputError(
            f"{name}: expected a header line "
            f'{{"format": "{PREDICTOR_FORMAT}", ...}} and at least one step, found an empty file'
        )
    if not total:
        raise InputError(f"{name}: expected at least one step after the header, found none")
    return PredictorTrace(name, experts, top_k, tokens, header, tuple(steps), total)


def precision_recall(steps: Iterable[TraceStep]) -> tuple[float | None, float | None]:
    """The predictor's precision and recall over ``steps`` (id-weighted, on the unions; see
    the module docstring); None where nothing was named (precision) or selected (recall).

    >>> m = lambda *ids: np.isin(np.arange(4), ids)
    >>> s = TraceStep(4, 1, 2, {0: StepLayer(m(1, 2), m(1, 3))})
    >>> precision_recall([s])
    (0.5, 0.5)
    """
    named = selected = hits = 0
    for s in steps:
        for d in s.layers.values():
            named += int(d.predicted.sum())
            selected += int(d.actual.sum())
            hits += int((d.predicted & d.actual).sum())
    return (hits / named if named else None, hits / selected if selected else None)


def predictor_trace_text(steps: Sequence[TraceStep], *, description: str = "") -> str:
    """The file of ``steps`` (header, then one line per step; ``actual`` per token where the
    step has the tokens' ids, else the batch's set; ``predicted`` as the batch's set)."""
    if not steps:
        raise InputError("predictor trace: expected at least one step, found none")
    first = steps[0]
    shape = (first.experts, first.top_k, first.tokens)
    header: dict[str, Any] = {
        "format": PREDICTOR_FORMAT,
        "experts": first.experts,
        "top_k": first.top_k,
        "tokens": first.tokens,
    }
    if description:
        header["description"] = description
    lines = [json.dumps(header)]
    for i, s in enumerate(steps):
        if (s.experts, s.top_k, s.tokens) != shape:
            raise InputError(
                f"predictor trace: step {i}: expected (experts, top_k, tokens) {shape} as in "
                f"step 0, found {(s.experts, s.top_k, s.tokens)}"
            )
        layers = {}
        for ly, d in s.layers.items():
            actual = (
                np.sort(d.per_token, axis=1).tolist()
                if d.per_token is not None
                else np.flatnonzero(d.actual).tolist()
            )
            layers[str(ly)] = {"predicted": np.flatnonzero(d.predicted).tolist(), "actual": actual}
        lines.append(json.dumps({"step": i if s.label is None else s.label, "layers": layers}))
    return "\n".join(lines) + "\n"


def write_trace_steps(
    steps: Sequence[TraceStep], path: str | os.PathLike[str], *, description: str = ""
) -> Path:
    """Write ``steps`` as a predictor-trace file (by the rules of :mod:`preserve_cp.outputs`)."""
    text = predictor_trace_text(steps, description=description)
    return write_output(os.fspath(path), text, "predictor trace")
