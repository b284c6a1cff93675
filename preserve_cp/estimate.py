"""The fast path: the baselines of a solve without the optimiser (``solve --plans``).

:func:`estimate` runs :func:`preserve_cp.solve`'s first stages only: it prepares the problem,
simulates and verifies the baselines asked for (vanilla always: it is the speedup's
reference) and computes the cheap lower bounds; no CP-SAT model is built. The result's ``status``
is ``baselines``; its plan is the best baseline asked for (fused changes the graph, so it is
reported, never chosen). Milliseconds to a second where a full solve takes seconds.

>>> from preserve_cp.graph import build_graph
>>> from preserve_cp.workload import Workload
>>> g = build_graph("llama3-8b", Workload("decode", batch=1, context=1024, tp=4))
>>> r = estimate(g, "h100-sxm", plans=["vanilla"])
>>> r.status, r.plan.name, r.verified, r.greedy_makespan_s, r.makespan_s >= r.lower_bound_s
('baselines', 'vanilla', True, None, True)
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import networkx as nx

from .errors import input_error
from .hardware import Hardware
from .optimize import Deadline
from .plan import Plan, Result
from .solve import SolveOptions, lower_bounds, prepare, run_baselines, select

#: the baselines the fast path can run, in report order
PLANS = ("vanilla", "greedy", "streaming", "fused")


class _Only(Deadline):
    """A deadline that also skips the stages not asked for (without counting them cut)."""

    def __init__(self, seconds: float, keep: set[str]) -> None:
        super().__init__(seconds)
        self.keep = keep

    def skips(self, stage: str, needs_s: float = 0.0) -> bool:
        if stage in (*PLANS, "bound") and stage not in self.keep:
            return True
        return super().skips(stage, needs_s)


def parse_plans(text: str | Iterable[str], where: str = "--plans") -> list[str]:
    """``"vanilla,greedy"`` (or a list) -> the names, checked, in :data:`PLANS` order.

    >>> parse_plans("streaming, vanilla")
    ['vanilla', 'streaming']
    >>> parse_plans("vanila")
    Traceback (most recent call last):
    ...
    preserve_cp.errors.InputError: --plans: value: expected names from vanilla, greedy, ...
    """
    names = [n.strip() for n in text.split(",")] if isinstance(text, str) else list(text)
    names = [n for n in names if n]
    if not names or any(n not in PLANS for n in names):
        raise input_error(where, "value", f"names from {', '.join(PLANS)}", ",".join(names))
    return [p for p in PLANS if p in names]


def estimate(
    graph: nx.DiGraph,
    hw: Hardware | str | None = None,
    *,
    plans: str | Iterable[str] = PLANS,
    options: SolveOptions | None = None,
    lp_bound: bool = False,
) -> Result:
    """The baselines ``plans`` of ``graph`` on ``hw``, verified, with the lower bound.

    Vanilla always runs (the speedup's reference); the other baselines run when asked for
    (their ``*_makespan_s`` are ``None`` otherwise). ``options.time_limit_s`` bounds it all.
    The bound is the critical path and stream load (microseconds); ``lp_bound=True`` adds
    the chain LP (docs/optimizer.md §4: tighter, a tenth of a second on an 80-layer model).
    """
    t0 = time.perf_counter()
    asked = parse_plans(plans, "plans")
    opts = options or SolveOptions()
    deadline = _Only(opts.time_limit_s, {*asked, *(["bound"] if lp_bound else [])})
    problem = prepare(graph, hw, opts)
    base = run_baselines(problem, deadline)
    bounds = lower_bounds(problem, deadline)
    pool = {n: c for n, c in base.items() if n in asked or n == "vanilla"}
    chosen = select([], {n: c for n, c in pool.items() if n in asked} or pool)
    assert chosen.schedule is not None
    makespan = chosen.makespan_s
    lb = min(max(bounds.values()), makespan)
    gap = max(0.0, (makespan - lb) / makespan) if makespan > 0 else 0.0
    method = f"baselines {','.join(asked)} (no optimiser)"
    if deadline.cut:
        method += f"; time limit: cut {', '.join(dict.fromkeys(deadline.cut))}"

    def span(name: str) -> float | None:
        c = pool.get(name)
        return c.makespan_s if c is not None and name in asked else None

    return Result(
        status="time_limit" if deadline.cut else "baselines",
        makespan_s=makespan,
        lower_bound_s=lb,
        gap=gap,
        solve_time_s=time.perf_counter() - t0,
        verified=chosen.verified,
        plan=Plan(chosen.name, chosen.plan.prefetches, chosen.plan.order),
        schedule=chosen.schedule,
        baseline_makespan_s=pool["vanilla"].makespan_s,
        greedy_makespan_s=span("greedy"),
        streaming_makespan_s=span("streaming"),
        fused_makespan_s=span("fused"),
        l2_capacity_bytes=problem.hardware.l2_capacity_bytes if problem.hardware else 0.0,
        usable_l2_bytes=problem.machine.l2_capacity_bytes,
        method=method,
        bounds=bounds,
        baselines={n: c.schedule for n, c in pool.items() if c.schedule is not None},
        optimiser_ran=False,
    )
