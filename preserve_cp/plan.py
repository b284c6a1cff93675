"""Plans (what to prefetch, when) and schedules (what the simulator made of a plan).

Glossary: a *prefetch* (also *chunk*) copies ``bytes`` of one tensor from HBM into L2 on the
``prefetch`` stream. It is released when its *anchor* op starts (plus ``delay_s``), runs in
plan order, holds L2 from its start until the last op reading the tensor ends (its *L2 live
range*), and every op reading the tensor (and its ``sync`` op, if any) waits for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple


@dataclass(frozen=True)
class Prefetch:
    """One chunk of a prefetch: ``bytes`` of ``tensor`` from ``offset_bytes`` on."""

    tensor: str
    bytes: float
    consumer: Any
    anchor: Any | None = None
    delay_s: float = 0.0
    offset_bytes: float = 0.0
    sync: Any | None = None


@dataclass(frozen=True)
class Plan:
    """A named set of prefetches in prefetch-stream order, and optionally each stream's op order.

    >>> Plan("vanilla").prefetched_bytes
    0.0
    """

    name: str
    prefetches: tuple[Prefetch, ...] = ()
    order: dict[str, tuple[Any, ...]] | None = None

    @property
    def prefetched_bytes(self) -> float:
        return float(sum(p.bytes for p in self.prefetches))


class Event(NamedTuple):
    """One op in a schedule (seconds). A named tuple: cheap to make by the hundred thousand."""

    node: Any
    resource: str
    start_s: float
    end_s: float
    kind: str = ""
    layer: int = -1
    l2_bytes: float = 0.0
    kernel: bool = True  # a compute op (leaves only op_share of HBM to prefetches)


class ChunkEvent(NamedTuple):
    """A prefetch as executed: moved ``bytes`` in [start_s, end_s], held L2 until release_s."""

    order: int
    tensor: str
    bytes: float
    consumer: Any
    anchor: Any | None
    start_s: float
    end_s: float
    release_s: float


@dataclass(frozen=True)
class Schedule:
    """The timeline the simulator produced for a plan.

    ``rate_segments`` are (t0, t1, prefetch_bytes_per_s, main_hbm_bytes_per_s) pieces.
    """

    events: tuple[Event, ...]
    chunks: tuple[ChunkEvent, ...]
    dropped: tuple[int, ...]
    rate_segments: tuple[tuple[float, float, float, float], ...]
    makespan_s: float
    l2_capacity_bytes: float
    hbm_bytes_per_s: float
    plan_name: str = ""

    def l2_profile(self) -> list[tuple[float, float]]:
        """(time, bytes held by prefetches) steps, sorted by time."""
        deltas: dict[float, float] = {}
        for c in self.chunks:
            deltas[c.start_s] = deltas.get(c.start_s, 0.0) + c.bytes
            deltas[c.release_s] = deltas.get(c.release_s, 0.0) - c.bytes
        level, out = 0.0, []
        for t in sorted(deltas):
            level += deltas[t]
            out.append((t, max(0.0, level)))
        return out

    def peak_l2_bytes(self) -> float:
        return max((b for _, b in self.l2_profile()), default=0.0)


#: the router-aware analysis' headline fields, also at the top level of ``--json``
ROUTER_FIELDS = (
    "expected_makespan_s",
    "p50_makespan_s",
    "p95_makespan_s",
    "expert_hit_rate",
    "wasted_prefetch_bytes",
    "clairvoyant_bound_s",
)


@dataclass(frozen=True)
class Result:
    """What :func:`preserve_cp.solve` returns. Frozen; round-trips through JSON.

    ``l2_capacity_bytes`` is the device's L2, ``usable_l2_bytes`` the bytes prefetches may
    hold at once (the budget the plan was made for; 0 without hardware). ``inputs``
    (:meth:`with_inputs`, made by :func:`preserve_cp.describe.solve_inputs`) says what the
    result was computed from. ``serving`` (:mod:`preserve_cp.serving`: TPOT or TTFT and
    tokens/s of every plan, and one request's latency) is ``None`` for a graph not built from
    a workload.
    """

    status: str
    makespan_s: float
    lower_bound_s: float
    gap: float
    solve_time_s: float
    verified: bool
    plan: Plan
    schedule: Schedule
    predicted_makespan_s: float | None = None
    baseline_makespan_s: float | None = None
    greedy_makespan_s: float | None = None
    streaming_makespan_s: float | None = None
    fused_makespan_s: float | None = None
    tick_s: float | None = None
    l2_capacity_bytes: float = 0.0
    usable_l2_bytes: float = 0.0
    method: str = ""
    bounds: dict[str, float] = field(default_factory=dict)
    baselines: dict[str, Schedule] = field(default_factory=dict, repr=False, compare=False)
    inputs: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    optimiser_ran: bool = True  # False on the fast path (preserve_cp.estimate): baselines only
    serving: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    collectives: list[dict[str, Any]] | None = field(default=None, repr=False, compare=False)
    router: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def with_inputs(self, inputs: dict[str, Any]) -> Result:
        """A copy that says what it was computed from (the ``inputs`` of ``--json``)."""
        return replace(self, inputs=inputs)

    def with_serving(self, serving: dict[str, Any] | None) -> Result:
        """A copy with the ``serving`` object of ``--json`` (:mod:`preserve_cp.serving`)."""
        return replace(self, serving=serving)

    def with_collectives(self, rows: list[dict[str, Any]] | None) -> Result:
        """A copy with the ``collectives`` of ``--json``: per kind, count, total time, group
        sizes, MB prefetched in its windows (:func:`preserve_cp.comm.collectives_by_kind`)."""
        return replace(self, collectives=rows)

    def with_router(self, router: dict[str, Any] | None) -> Result:
        """A copy with the router-aware analysis of an MoE step (:mod:`preserve_cp.router`:
        the ``router`` object of ``--json`` and its headline fields at the top level)."""
        return replace(self, router=router)

    @property
    def speedup(self) -> float | None:
        if self.baseline_makespan_s is None or self.makespan_s <= 0:
            return None
        return self.baseline_makespan_s / self.makespan_s

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` object (output contract; ``preserve_cp/schemas/solve.schema.json``).

        ``inputs`` is ``null`` when the result does not carry its inputs
        (:meth:`with_inputs`).
        """
        pf = [
            {
                "tensor": c.tensor,
                "bytes": c.bytes,
                "start_s": c.start_s,
                "end_s": c.end_s,
                "consumer": json_value(c.consumer),
                "anchor": json_value(c.anchor),
                "release_s": c.release_s,
            }
            for c in self.schedule.chunks
        ]
        return {
            "status": self.status,
            "makespan_s": self.makespan_s,
            "baseline_makespan_s": self.baseline_makespan_s,
            "greedy_makespan_s": self.greedy_makespan_s,
            "streaming_makespan_s": self.streaming_makespan_s,
            "fused_makespan_s": self.fused_makespan_s,
            "speedup": self.speedup,
            "lower_bound_s": self.lower_bound_s,
            "gap": self.gap,
            "solve_time_s": self.solve_time_s,
            "verified": self.verified,
            "l2_capacity_bytes": self.l2_capacity_bytes,
            "usable_l2_bytes": self.usable_l2_bytes,
            "predicted_makespan_s": self.predicted_makespan_s,
            "tick_s": self.tick_s,
            "method": self.method,
            "bounds": dict(self.bounds),
            "plan": self.plan.name,
            "prefetches": pf,
            "dropped_prefetches": len(self.schedule.dropped),
            "serving": self.serving,
            "collectives": self.collectives,
            **{k: (self.router or {}).get(k) for k in ROUTER_FIELDS},
            "router": self.router,
            "inputs": self.inputs,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def compared_schedules(self) -> dict[str, Schedule]:
        """vanilla, greedy and streaming (those there are) and the chosen schedule, in order
        (without the optimiser, the baselines only)."""
        out: dict[str, Schedule] = {
            n: self.baselines[n] for n in ("vanilla", "greedy", "streaming") if n in self.baselines
        }
        if self.optimiser_ran or not out:
            out["optimised" if self.optimiser_ran else self.plan.name] = self.schedule
        return out


def json_value(x: Any) -> Any:
    """A node id as JSON can hold it (strings and numbers as they are, the rest as text)."""
    return x if x is None or isinstance(x, str | int | float) else str(x)
