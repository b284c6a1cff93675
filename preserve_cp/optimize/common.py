"""Shared pieces of the CP-SAT models: tick choice, solver set-up, outcome container."""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from ortools.sat.python import cp_model

from ..costs import OpCost
from ..plan import Plan

SCALE = 100_000
"""Scale for fractional coefficients; floors and ceils keep every row conservative."""

STATUS_NAMES = {
    cp_model.OPTIMAL: "optimal",
    cp_model.FEASIBLE: "feasible",
    cp_model.INFEASIBLE: "infeasible",
    cp_model.MODEL_INVALID: "model_invalid",
    cp_model.UNKNOWN: "unknown",
}


@dataclass
class CpOutcome:
    """What a CP-SAT model produced: a plan, its predicted makespan, and what was proven."""

    plan: Plan
    status: str
    predicted_s: float | None
    cp_bound_s: float | None
    bound_valid: bool
    tick_s: float
    families: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    #: other plans the same solve suggests (e.g. the LP's bytes as one chunk per tensor);
    #: the caller simulates them like the main plan and keeps the best verified one
    alternatives: tuple[Plan, ...] = ()


def byte_unit(biggest_bytes: float) -> float:
    """The models' byte unit: the power of two that puts the biggest tensor near 2**20 units.

    >>> byte_unit(1e6), byte_unit(64 * 2**20)
    (1.0, 64.0)
    """
    return float(2 ** max(0, math.ceil(math.log2(max(1.0, biggest_bytes / 2**20)))))


def add_roofline_rows(
    model: Any, dur: Any, c: OpCost, l2_units: Any, tick: float, unit: float
) -> None:
    """``dur`` (ticks) >= the op's roofline with ``l2_units`` (byte units) of its reads found
    in L2: the compute, HBM and L2 terms, each with the launch overhead, rounded so that no
    feasible schedule is cut off."""
    model.add(dur >= ceil_div(c.compute_s + c.overhead_s, tick))
    a_hbm = math.floor(SCALE * unit / (c.hbm_bw * tick))
    model.add(
        SCALE * dur
        >= math.ceil(SCALE * (c.hbm_time_s(0.0) + c.overhead_s) / tick) - a_hbm * l2_units
    )
    a_l2 = math.ceil(SCALE * unit / (c.l2_bw * tick))
    if c.l2_serial:  # the L2 bytes come after the HBM bytes: one row, both terms
        model.add(
            SCALE * dur
            >= math.ceil(SCALE * (c.hbm_time_s(0.0) + c.overhead_s) / tick)
            - a_hbm * l2_units
            + a_l2 * l2_units
        )
    model.add(SCALE * dur >= math.ceil(SCALE * c.overhead_s / tick) + a_l2 * l2_units)


def choose_tick(
    durations_s: Iterable[float], horizon_s: float, max_ticks: float = 2e6
) -> tuple[float, bool]:
    """Pick the tick: the largest power of ten that represents every duration exactly while
    keeping the horizon under ``max_ticks``... if none, the power of ten near horizon/max_ticks.

    Returns (tick_s, exact).

    >>> choose_tick([1.0, 3.0, 10.0], 14.0)
    (1.0, True)
    >>> choose_tick([1.5e-6, 2.25e-6], 1e-3)
    (1e-08, True)
    >>> choose_tick([1.2345678e-6], 1e-2)
    (1e-08, False)
    """
    ds = [d for d in durations_s if d > 0]
    horizon_s = max(horizon_s, max(ds, default=0.0), 1e-12)
    for e in range(6 if ds else -13, -13, -1):
        tick = 10.0**e
        if horizon_s / tick > 1e8:
            break
        exact = all(abs(d / tick - round(d / tick)) <= 1e-9 * max(1.0, d / tick) for d in ds)
        if exact and horizon_s / tick >= 1:
            return tick, True
    e = math.ceil(math.log10(horizon_s / max_ticks))
    return 10.0**e, False


def ceil_div(a: float, b: float) -> int:
    """ceil(a / b) robust to float noise (1e-9 relative)."""
    q = a / b
    r = round(q)
    return int(r) if abs(q - r) <= 1e-9 * max(1.0, abs(q)) else math.ceil(q)


class Deadline:
    """One wall-clock deadline for a whole solve: every stage asks what is left.

    >>> d = Deadline(10.0)
    >>> 9.0 < d.left() <= 10.0, d.expired()
    (True, False)
    >>> Deadline(0.0).expired()
    True
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = max(0.0, float(seconds))
        self.end = time.perf_counter() + self.seconds
        self.cut: list[str] = []  # stages a wall-clock limit cut short (their result may vary)

    def left(self) -> float:
        return max(0.0, self.end - time.perf_counter())

    def expired(self) -> bool:
        return self.left() <= 0.0

    def skips(self, stage: str, needs_s: float = 0.0) -> bool:
        """True (and noted in ``cut``) when less than ``needs_s`` is left before ``stage``
        (a stage no solver limit can stop, such as building a model, needs its time)."""
        if self.left() <= needs_s:
            self.cut.append(stage)
            return True
        return False


def make_solver(
    time_limit_s: float, work_limit: float, seed: int, relative_gap: float = 0.0
) -> cp_model.CpSolver:
    """A CP-SAT solver whose result depends only on the model: one search thread, stopped
    by a deterministic work limit (``work_limit``, CP-SAT's deterministic time) or the
    relative gap; ``time_limit_s`` is a wall-clock backstop for the deadline."""
    solver = cp_model.CpSolver()
    solver.parameters.relative_gap_limit = max(0.0, float(relative_gap))
    solver.parameters.max_time_in_seconds = max(0.001, float(time_limit_s))
    solver.parameters.max_deterministic_time = max(0.001, float(work_limit))
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = int(seed)
    if threading.current_thread() is not threading.main_thread():
        # only the main thread may own the SIGINT handler (sweep workers run solves in
        # threads; there it aborted the process on Ctrl-C)
        solver.parameters.catch_sigint_signal = False
    return solver


def run_model(
    model: cp_model.CpModel,
    deadline: Deadline,
    work_limit: float,
    seed: int,
    relative_gap: float,
    stage: str = "cp-sat",
) -> tuple[cp_model.CpSolver, str, bool]:
    """Solve ``model`` within the deadline; return the solver, the status name and whether
    a solution exists. A run the wall clock stopped before its work limit is noted in
    ``deadline.cut`` (its result depends on the machine's speed and load)."""
    limit = deadline.left()
    solver = make_solver(limit, work_limit, seed, relative_gap)
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.INFEASIBLE, cp_model.MODEL_INVALID):
        det = solver.response_proto.deterministic_time
        if det < 0.999 * work_limit and solver.wall_time >= 0.95 * limit:
            deadline.cut.append(stage)
    return (
        solver,
        STATUS_NAMES.get(status, "unknown"),
        status in (cp_model.OPTIMAL, cp_model.FEASIBLE),
    )


def chain_order(g: nx.DiGraph) -> list[Any] | None:
    """The ops in order if the edges order them totally (a chain), else None.

    >>> chain_order(nx.DiGraph([("a", "b"), ("b", "c"), ("a", "c")]))
    ['a', 'b', 'c']
    >>> chain_order(nx.DiGraph([("a", "b"), ("a", "c")])) is None
    True
    """
    order = list(nx.topological_sort(g))
    for u, v in zip(order, order[1:], strict=False):
        if not g.has_edge(u, v):
            return None
    return order


def eager(plan: Plan, first_op: Any) -> Plan:
    """The same chunks all released at the first op: only the stream order (consumer
    order) and L2 room pace them, so each chunk starts the moment the one before it ends and
    its latency falls wherever the stream would otherwise wait (bench/: never worse than
    anchoring at the first host on the H100 rows tried, up to 1.8 % better)."""
    return Plan(
        plan.name,
        tuple(dataclasses.replace(p, anchor=first_op, sync=None) for p in plan.prefetches),
        plan.order,
    )


def early_first(plan: Plan, chain: list[Any]) -> Plan:
    """The plan with each host's first chunk released one op earlier when that op hosts
    nothing: the stream is idle then, so the chunk's latency passes while that op runs
    instead of inside the host's window (a kernel that leaves no HBM costs it nothing)."""
    at = {n: i for i, n in enumerate(chain)}
    hosts = {p.anchor for p in plan.prefetches}
    seen: set[Any] = set()
    out = []
    for p in plan.prefetches:
        k = at.get(p.anchor, 0)
        first = p.anchor not in seen
        seen.add(p.anchor)
        if first and k > 0 and chain[k - 1] not in hosts:
            p = dataclasses.replace(p, anchor=chain[k - 1])
        out.append(p)
    return Plan(plan.name, tuple(out), plan.order)
