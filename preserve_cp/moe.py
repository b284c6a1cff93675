"""Routing statistics of mixture-of-experts layers: how many distinct experts a step reads.

A step routes ``B`` tokens (decode: the batch; prefill: batch x prompt tokens), each to the top
``k`` of ``E`` routed experts. Every expert picked by at least one token has its weights read
once by the grouped GEMM, so the weight bytes read per layer are the expected number of
*distinct* activated experts ``D`` times the bytes of one expert.

Routing models (the workload's ``routing``):

``uniform``
    every token picks ``k`` distinct experts uniformly at random, tokens independently. An
    expert is picked by one token with probability ``k/E``, so
    ``D = E * (1 - (1 - k/E) ** B)`` exactly.
``zipf:S``
    expert ``i`` (1-based popularity rank) is chosen with probability ``p_i`` proportional to
    ``i ** -S`` (``S >= 0``; ``zipf:0`` is uniform), and a token takes ``k`` distinct experts
    by drawing in popularity order without replacement (sequential, Plackett-Luce: what top-k
    of noisy router logits does). The exact probability ``pi_i`` that expert ``i`` is among a
    token's ``k`` needs a sum over orderings; we use the *equivalent draws* approximation
    ``pi_i = 1 - (1 - p_i) ** n``, with the real ``n >= k`` set so that ``sum(pi_i) = k``
    (bisection). It is exact for uniform popularity and for ``k = 1``, and against 4000-token
    Monte-Carlo samples of sequential top-k it is within 1.5 % of ``D`` for
    ``(E, k, S, B)`` = (8, 2, 1, 4), (128, 8, 1, 32), (128, 8, 0.5, 8), (64, 6, 1.2, 16),
    (8, 2, 2, 4), (128, 8, 2, 16) (``tests/test_moe.py`` repeats the check). Tokens route
    independently, so ``D = sum_i 1 - (1 - pi_i) ** B`` exactly given the ``pi_i``;
    ``sum(pi_i) = k`` keeps ``D = k`` at ``B = 1``.
a router-trace file (any value containing ``/`` or ending in ``.json``)
    measured routing: per-layer counts of how many traced tokens each expert received. The
    file is JSON (``docs/models.md``, "Measured routing: a router-trace file")::

        {
          "format": "preserve-cp-routing/1",
          "description": "free text, optional: where the counts come from",
          "tokens": 4096,
          "top_k": 2,
          "experts": 8,
          "layers": {"0": [1210, 980, ...], "1": [...], ...},
          "default": [1024, 1024, ...]
        }

    ``tokens`` (``N``) is the number of traced tokens, ``top_k`` and ``experts`` must equal
    the model's ``experts_per_token`` and ``num_experts``. ``layers`` maps a layer index
    (0-based, as in the graph's ``L<i>.`` names; a decimal string without leading zeros) to
    ``E`` non-negative integer counts: ``count_e`` is how many of the ``N`` tokens routed to
    expert ``e`` in that layer, so ``count_e <= N`` and ``sum(counts) = N * k``. The optional
    ``default`` list (same rules) is used for any MoE layer without its own entry; without it
    every MoE layer the graph builds needs an entry. Entries for other layers are ignored.
    No other top-level fields are allowed (a misspelt ``default`` must not pass silently).

    The per-token inclusion probability of expert ``e`` is ``q_e = count_e / N`` (so
    ``sum(q_e) = k``) and ``D = sum_e 1 - (1 - q_e) ** B``. The one assumption: the ``B``
    tokens of a step route independently, each like a token drawn at random from the trace;
    given the ``q_e`` that is exact whatever the correlation between experts *within* a token.
    Tokens of one prompt (prefill) or of similar requests are correlated in practice and hit
    fewer experts than this; ``N`` small gives noisy ``q_e``. A trace with uniform counts
    (``count_e = N k / E``) gives the uniform formula exactly.

    The file is read when the workload is checked and again only when it changes: parsed files
    are cached by (absolute path, modification time, size), so an 80-layer graph reads it
    once. A relative path is resolved against the current directory at each read.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import InputError, input_error, json_object

ROUTING_HELP = (
    "'uniform' or 'zipf:S' with S a number >= 0, or the path of a router-trace .json file"
)
ROUTING_FORMAT = "preserve-cp-routing/1"
_TRACE_FIELDS = ("format", "description", "tokens", "top_k", "experts", "layers", "default")
_MAX_TRACE_BYTES = 64_000_000


def is_trace_path(spec: object) -> bool:
    """Whether a ``routing`` value names a router-trace file (contains ``/`` or ends ``.json``).

    >>> is_trace_path("traces/mixtral.json"), is_trace_path("zipf:1"), is_trace_path("top1")
    (True, False, False)
    """
    return (
        isinstance(spec, str)
        and spec not in ("", "uniform")
        and not spec.startswith("zipf:")
        and ("/" in spec or os.sep in spec or spec.lower().endswith(".json"))
    )


def parse_routing(spec: object, where: str = "workload") -> tuple[str, float]:
    """``("uniform", 0.0)``, ``("zipf", S)`` or ``("trace", 0.0)``; InputError otherwise.

    A router-trace path is read and checked (format, counts); errors name the file and field.

    >>> parse_routing("zipf:1.2")
    ('zipf', 1.2)
    >>> parse_routing("zipf:-1")
    Traceback (most recent call last):
    ...
    preserve_cp.errors.InputError: workload: routing: expected 'uniform' or 'zipf:S' ...
    >>> parse_routing("no/such/trace.json")
    Traceback (most recent call last):
    ...
    preserve_cp.errors.InputError: no/such/trace.json: routing trace file not found
    """
    if spec == "uniform":
        return ("uniform", 0.0)
    if isinstance(spec, str) and spec.startswith("zipf:"):
        try:
            s = float(spec[5:])
        except ValueError:
            s = -1.0
        if math.isfinite(s) and 0 <= s <= 100:
            return ("zipf", s)
    elif is_trace_path(spec):
        assert isinstance(spec, str)
        load_routing_trace(spec)
        return ("trace", 0.0)
    raise input_error(where, "routing", ROUTING_HELP, spec)


@dataclass(frozen=True)
class RoutingTrace:
    """A checked router-trace file: per-layer expert counts over ``tokens`` traced tokens."""

    path: str
    tokens: int
    top_k: int
    experts: int
    layers: Mapping[int, tuple[int, ...]]
    default: tuple[int, ...] | None = None

    def counts(self, layer: int, experts: int, top_k: int) -> tuple[int, ...]:
        """The counts for ``layer`` of a model with ``experts`` experts, top-``top_k``.

        InputError naming the file when the file was traced on another expert shape or has
        neither an entry for ``layer`` nor a ``default``.
        """
        if self.experts != experts:
            raise input_error(
                self.path, "experts", f"{experts} (the model's num_experts)", self.experts
            )
        if self.top_k != top_k:
            raise input_error(
                self.path, "top_k", f"{top_k} (the model's experts_per_token)", self.top_k
            )
        found = self.layers.get(layer, self.default)
        if found is None:
            have = id_ranges(sorted(self.layers))
            raise InputError(
                f"{self.path}: layers: expected an entry for MoE layer {layer} "
                f"(or a 'default' entry), found entries for layers {have or 'none'}"
            )
        return found

    def inclusion_probabilities(self, layer: int, experts: int, top_k: int) -> list[float]:
        """``q_e = count_e / tokens`` for ``layer``, most popular first; sums to ``top_k``."""
        counts = self.counts(layer, experts, top_k)
        return sorted((c / self.tokens for c in counts), reverse=True)


def id_ranges(values: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``'0-2, 5, 7-8'``."""
    out: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        out.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ", ".join(out)


_TRACES: dict[str, tuple[tuple[int, int], RoutingTrace]] = {}


def load_routing_trace(path: str) -> RoutingTrace:
    """Read and check a router-trace file (cached by path, modification time and size).

    Every problem raises a one-line InputError that names the file and the field.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{path}: routing trace file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read routing trace ({exc.strerror or exc})") from None
    key = os.path.abspath(path)
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _TRACES.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    trace = _read_trace(path)
    _TRACES[key] = (stamp, trace)
    return trace


def _read_trace(path: str) -> RoutingTrace:
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_TRACE_BYTES + 1)
    except IsADirectoryError:
        raise InputError(f"{path}: routing trace file not found (a directory)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read routing trace ({exc.strerror or exc})") from None
    if len(raw) > _MAX_TRACE_BYTES:
        raise InputError(f"{path}: routing trace is over {_MAX_TRACE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: expected UTF-8 JSON, found a bad byte at {exc.start}") from None
    data = json_object(str(path), text)
    for name in data:
        if name not in _TRACE_FIELDS:
            raise InputError(f"{path}: {name}: unknown field (check the spelling)")
    if data.get("format") != ROUTING_FORMAT:
        if "format" not in data:
            raise InputError(f"{path}: format: required field is missing")
        raise input_error(path, "format", repr(ROUTING_FORMAT), data["format"])
    if not isinstance(data.get("description", ""), str):
        raise input_error(path, "description", "a string", data["description"])

    def integer(name: str, lo: int, hi: int | None = None) -> int:
        if name not in data:
            raise InputError(f"{path}: {name}: required field is missing")
        value = data[name]
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= lo
        if not ok or (hi is not None and value > hi):
            want = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
            raise input_error(path, name, want, value)
        return value

    experts = integer("experts", 1, 1 << 16)
    top_k = integer("top_k", 1, experts)
    tokens = integer("tokens", 1)

    def counts(field: str, value: object) -> tuple[int, ...]:
        if not isinstance(value, list) or len(value) != experts:
            n = len(value) if isinstance(value, list) else type(value).__name__
            raise InputError(
                f"{path}: {field}: expected a list of {experts} counts (one per expert), "
                f"found {n}{' counts' if isinstance(value, list) else ''}"
            )
        for e, c in enumerate(value):
            if isinstance(c, bool) or not isinstance(c, int) or c < 0:
                raise input_error(path, f"{field}[{e}]", "a non-negative integer count", c)
            if c > tokens:
                raise input_error(
                    path,
                    f"{field}[{e}]",
                    f"at most tokens ({tokens}): a token picks an expert once",
                    c,
                )
        total = sum(value)
        if total != tokens * top_k:
            raise InputError(
                f"{path}: {field}: expected counts summing to tokens x top_k = "
                f"{tokens} x {top_k} = {tokens * top_k}, found {total}"
            )
        return tuple(value)

    layers_raw = data.get("layers")
    if layers_raw is None:
        raise InputError(f"{path}: layers: required field is missing")
    if not isinstance(layers_raw, dict):
        raise input_error(path, "layers", "an object of layer index -> counts", layers_raw)
    layers: dict[int, tuple[int, ...]] = {}
    for key, value in layers_raw.items():
        if not (key.isascii() and key.isdigit() and str(int(key)) == key):
            raise input_error(
                path, "layers", "keys that are layer indices (0, 1, ...; or use 'default')", key
            )
        layers[int(key)] = counts(f"layers.{key}", value)
    default = counts("default", data["default"]) if "default" in data else None
    if not layers and default is None:
        raise InputError(f"{path}: layers: expected at least one layer (or a 'default' entry)")
    return RoutingTrace(path, tokens, top_k, experts, layers, default)


def inclusion_probabilities(
    experts: int, top_k: int, routing: str = "uniform", *, layer: int = 0
) -> list[float]:
    """Probability that one token routes to each expert (most popular first); sums to ``top_k``.

    ``layer`` picks the layer of a router-trace file; uniform and Zipf are the same for all.

    >>> inclusion_probabilities(4, 2)
    [0.5, 0.5, 0.5, 0.5]
    >>> [round(p, 4) for p in inclusion_probabilities(4, 2, "zipf:2")]
    [0.9934, 0.5508, 0.286, 0.1698]
    """
    kind, s = parse_routing(routing)
    if not 1 <= top_k <= experts:
        raise input_error("routing", "experts_per_token", f"an integer in [1, {experts}]", top_k)
    if kind == "trace":
        return load_routing_trace(routing).inclusion_probabilities(layer, experts, top_k)
    if kind == "uniform" or s == 0:
        return [top_k / experts] * experts
    if top_k == experts:
        return [1.0] * experts
    w = [(i + 1) ** -s for i in range(experts)]
    total_w = sum(w)
    p = [x / total_w for x in w]

    def total(n: float) -> float:
        return sum(1.0 - (1.0 - q) ** n for q in p)

    lo, hi = float(top_k), 2.0 * top_k  # total(k) <= k (union bound); total grows with n
    while total(hi) < top_k:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if total(mid) < top_k:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return [1.0 - (1.0 - q) ** hi for q in p]


def expected_distinct_experts(
    experts: int, top_k: int, tokens: int, routing: str = "uniform", *, layer: int = 0
) -> float:
    """Expected number of distinct experts that ``tokens`` tokens route to.

    ``layer`` (the model's layer index) picks the layer of a router-trace file; uniform and
    Zipf are the same for every layer. Uniform: ``E (1 - (1 - k/E)^B)``. Mixtral (8 experts,
    top-2): 2 at batch 1, 5.5 at 4, 7.2 at 8.

    >>> [round(expected_distinct_experts(8, 2, b), 2) for b in (1, 4, 8, 16)]
    [2.0, 5.47, 7.2, 7.92]
    >>> round(expected_distinct_experts(128, 8, 32, "zipf:1"), 1)
    81.9
    """
    if tokens < 1:
        raise input_error("routing", "tokens", "an integer >= 1", tokens)
    pis = inclusion_probabilities(experts, top_k, routing, layer=layer)
    return sum(1.0 - (1.0 - p) ** tokens for p in pis)
