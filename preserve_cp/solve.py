"""``solve(graph, hw)``: baselines -> CP-SAT -> simulate + verify -> the best verified plan.

The pipeline as a literal list of stages:

1. validate the graph, cost every op (costs.py), check the step fits in HBM;
2. simulate the baselines: vanilla (no prefetch) and greedy (the paper's pass);
3. optimise with CP-SAT: the chain model when the ops form a chain (LLM graphs), else the
   general interval model warm-started from the best baseline;
4. simulate and verify the optimised plan; keep the best verified plan (never worse than a
   baseline); compute the lower bound and the gap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx

from . import units
from .baselines import greedy_plan, vanilla_plan
from .costs import OpCost, op_costs
from .errors import InfeasibleError, SolverError
from .graph import validate_graph
from .hardware import Hardware, load_hardware
from .optimize import (
    ChainOptions,
    GeneralOptions,
    chain_lp_bound,
    chain_order,
    critical_path_bound,
    resource_load_bound,
    solve_chain,
    solve_general,
)
from .plan import Plan, Result, Schedule
from .simulate import Machine, priorities, verify
from .simulate import simulate as run_plan


@dataclass(frozen=True)
class SolveOptions:
    """Knobs of :func:`solve` (all have defaults a user need not touch)."""

    time_limit_s: float = 30.0
    workers: int = 2
    seed: int = 0
    budget_fraction: float = 1.0
    lookahead_ops: int = 24
    contention: bool = True
    deterministic: bool = False


def machine_for(hw: Hardware | None, contention: bool = True) -> Machine:
    """The simulator's view of ``hw`` (no L2, infinite bandwidth without hardware)."""
    if hw is None:
        return Machine(contention=contention)
    return Machine(
        hw.effective_hbm_bytes_per_s,
        hw.effective_prefetch_bytes_per_s,
        hw.usable_l2_bytes,
        contention,
    )


def check_fits(g: nx.DiGraph, hw: Hardware) -> None:
    """Raise InfeasibleError when the step's weights and KV-cache exceed one device's HBM."""
    w = g.graph.get("weights_bytes_per_device")
    kv = g.graph.get("kv_cache_bytes_per_device")
    if w is None or kv is None:
        return
    need = float(w) + float(kv)
    if need > hw.hbm_capacity_bytes:
        wl = g.graph.get("workload", {})
        raise InfeasibleError(
            f"{g.graph.get('model', 'model')} on {hw.name}: batch {wl.get('batch')}, context "
            f"{wl.get('context')}, tp {wl.get('tp')} needs {need / units.GB:.1f} GB per device "
            f"(weights {float(w) / units.GB:.1f} GB + KV-cache {float(kv) / units.GB:.1f} GB); "
            f"HBM holds {hw.hbm_capacity_bytes / units.GB:.1f} GB: over by "
            f"{(need - hw.hbm_capacity_bytes) / units.GB:.1f} GB (raise tp or lower batch/context)"
        )


def solve(
    graph: nx.DiGraph,
    hw: Hardware | str | None = None,
    *,
    options: SolveOptions | None = None,
    **overrides: Any,
) -> Result:
    """Optimise the prefetch plan of ``graph`` on ``hw``; return a verified :class:`Result`.

    Without ``hw`` every node must carry ``duration`` and ``resource``: a plain scheduling
    problem (edges are precedences, one op at a time per resource, minimise the makespan).

    Examples
    --------
    >>> g = nx.DiGraph([("a", "b"), ("c", "d")])
    >>> nx.set_node_attributes(g, {"a": {"duration": 2.0, "resource": "m1"},
    ...     "b": {"duration": 3.0, "resource": "m2"}, "c": {"duration": 4.0, "resource": "m2"},
    ...     "d": {"duration": 1.0, "resource": "m1"}})
    >>> r = solve(g)
    >>> r.status, r.makespan_s, r.lower_bound_s
    ('optimal', 7.0, 7.0)
    >>> [(e.node, e.resource, e.start_s, e.end_s) for e in sorted(r.schedule.events,
    ...                                                   key=lambda e: (e.start_s, e.node))]
    [('a', 'm1', 0.0, 2.0), ('c', 'm2', 0.0, 4.0), ('b', 'm2', 4.0, 7.0), ('d', 'm1', 4.0, 5.0)]
    """
    opts = options or SolveOptions()
    if overrides:
        opts = SolveOptions(**{**opts.__dict__, **overrides})
    t0 = time.perf_counter()
    hardware = None if hw is None else load_hardware(hw)
    g = validate_graph(graph, need_duration=hardware is None)
    if hardware is not None:
        check_fits(g, hardware)
    costs = op_costs(g, hardware)
    machine = machine_for(hardware, opts.contention)
    prio = priorities(g, costs)

    def sim(plan: Plan) -> tuple[Schedule | None, list[str]]:
        try:
            s = run_plan(g, costs, plan, machine, prio)
        except SolverError as exc:
            return None, [str(exc)]
        return s, verify(g, s, machine)

    vanilla, v_bad = sim(vanilla_plan())
    if vanilla is None or v_bad:
        raise SolverError(f"the vanilla schedule failed verification: {v_bad[:2]}")
    has_tensors = hardware is not None and any(a.get("prefetchable") for _, a in g.nodes(data=True))
    greedy = None
    if has_tensors:
        assert hardware is not None
        greedy, g_bad = sim(greedy_plan(g, hardware.usable_l2_bytes, opts.budget_fraction))
        if g_bad:
            greedy = None
    chain = chain_order(g) if has_tensors else None
    left = max(0.05, opts.time_limit_s - (time.perf_counter() - t0))
    if chain is not None:
        outcome = solve_chain(
            chain,
            g,
            costs,
            machine,
            ChainOptions(
                time_limit_s=left,
                workers=opts.workers,
                seed=opts.seed,
                lookahead_ops=opts.lookahead_ops,
                deterministic=opts.deterministic,
            ),
        )
        method = "chain-cpsat"
    else:
        best_base = min((s for s in (vanilla, greedy) if s is not None), key=lambda s: s.makespan_s)
        outcome = solve_general(
            g,
            costs,
            machine,
            GeneralOptions(
                time_limit_s=left,
                workers=opts.workers,
                seed=opts.seed,
                deterministic=opts.deterministic,
            ),
            hint=best_base,
        )
        method = "interval-cpsat"
    optimised, o_bad = (
        (None, ["no solution"])
        if outcome.predicted_s is None
        and outcome.plan.prefetches == ()
        and outcome.plan.order is None
        and chain is None
        else sim(outcome.plan)
    )
    violations = tuple(o_bad) if optimised is None or o_bad else ()
    cands: list[tuple[float, int, str, Schedule, Plan]] = []
    if optimised is not None and not o_bad:
        cands.append((optimised.makespan_s, 0, "optimised", optimised, outcome.plan))
    if greedy is not None:
        cands.append(
            (
                greedy.makespan_s,
                1,
                "greedy",
                greedy,
                Plan(
                    "greedy",
                    greedy_plan(
                        g, hardware.usable_l2_bytes if hardware else 0, opts.budget_fraction
                    ).prefetches,
                )
                if hardware
                else Plan("greedy"),
            )
        )
    cands.append((vanilla.makespan_s, 2, "vanilla", vanilla, vanilla_plan()))
    makespan, _, chosen, schedule, plan = min(cands, key=lambda c: (c[0] * (1 + 1e-12), c[1]))

    bounds = _bounds(g, costs, machine, chain, outcome, hardware is not None)
    lb = max(bounds.values())
    if lb > makespan:
        lb = makespan if lb <= makespan * (1 + 1e-6) else lb
    gap = max(0.0, (makespan - lb) / makespan) if makespan > 0 else 0.0
    if gap <= 1e-9:
        status = "optimal"
    elif chosen == "optimised" and outcome.status in ("optimal", "feasible"):
        status = "feasible"
    else:
        status = "feasible"
    if chosen != "optimised":
        method = f"{method}, kept {chosen} (optimiser: {outcome.status})"
    return Result(
        status=status,
        makespan_s=makespan,
        lower_bound_s=lb,
        gap=gap,
        solve_time_s=time.perf_counter() - t0,
        verified=True,
        plan=Plan(chosen if chosen != "optimised" else "optimised", plan.prefetches, plan.order),
        schedule=schedule,
        predicted_makespan_s=outcome.predicted_s,
        baseline_makespan_s=vanilla.makespan_s,
        greedy_makespan_s=greedy.makespan_s if greedy is not None else vanilla.makespan_s,
        tick_s=outcome.tick_s,
        l2_capacity_bytes=machine.l2_capacity_bytes,
        method=method,
        bounds=bounds,
        baselines={"vanilla": vanilla, **({"greedy": greedy} if greedy is not None else {})},
        violations=violations,
    )


def _bounds(
    g: nx.DiGraph,
    costs: Mapping[Any, OpCost],
    machine: Machine,
    chain: list[Any] | None,
    outcome: Any,
    with_hw: bool,
) -> dict[str, float]:
    out = {
        "critical_path": critical_path_bound(g, costs),
        "resource_load": resource_load_bound(g, costs),
    }
    if chain is not None and with_hw:
        lp = chain_lp_bound(chain, g, costs, machine, hbm_contention=machine.contention)
        if lp is not None and math.isfinite(lp):
            out["chain_lp"] = lp
    if outcome.bound_valid and outcome.cp_bound_s is not None:
        out["cpsat"] = outcome.cp_bound_s
    return out
