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

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx

from . import units
from .baselines import fused_graph, greedy_plan, vanilla_plan
from .costs import OpCost, op_costs
from .errors import InfeasibleError, SolverError
from .graph import validate_graph
from .hardware import Hardware, load_hardware
from .optimize import (
    ChainOptions,
    CpOutcome,
    GeneralOptions,
    chain_lp_bound,
    chain_order,
    critical_path_bound,
    resource_load_bound,
    solve_chain,
    solve_general,
    solve_periodic,
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
    method: str = "auto"  # auto | periodic | monolithic (chain graphs)
    target_gap: float = 1e-3  # auto: below this gap the periodic plan is kept as is


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
        opts = dataclasses.replace(opts, **overrides)
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
    g_plan = Plan("greedy")
    if has_tensors:
        assert hardware is not None
        g_plan = greedy_plan(g, hardware.usable_l2_bytes, opts.budget_fraction)
        greedy, g_bad = sim(g_plan)
        if g_bad:
            greedy = None
    fused = None
    if hardware is not None and any(a.get("kind") == "allreduce" for _, a in g.nodes(data=True)):
        fg, fc = fused_graph(g, costs, hardware)
        fused = run_plan(fg, fc, Plan("fused"), machine)
        if verify(fg, fused, machine):  # a baseline that fails its own check is not reported
            fused = None
    chain = chain_order(g) if has_tensors else None
    bounds = _bounds(g, costs, machine, chain)

    def left() -> float:
        return max(0.05, opts.time_limit_s - (time.perf_counter() - t0))

    # (makespan, rank, name, schedule, plan, outcome)
    cands: list[tuple[float, int, str, Schedule, Plan, CpOutcome | None]] = []

    def consider(outcome: CpOutcome, name: str) -> None:
        if outcome.status not in ("optimal", "feasible"):
            return  # no solution: its empty plan is not the optimiser's answer
        if not outcome.plan.prefetches and outcome.plan.order is None and chain is None:
            return
        sched, bad = sim(outcome.plan)
        if sched is not None and not bad:
            cands.append((sched.makespan_s, 0, name, sched, outcome.plan, outcome))

    outcome: CpOutcome | None = None
    base_best = min(s.makespan_s for s in (vanilla, greedy) if s is not None)
    proven = base_best <= max(bounds.values()) * (1 + 1e-12)  # a baseline meets the bound
    if proven:
        pass  # nothing to optimise: the baseline is provably optimal
    elif chain is not None:
        copts = ChainOptions(
            time_limit_s=left(),
            workers=opts.workers,
            seed=opts.seed,
            lookahead_ops=opts.lookahead_ops,
            deterministic=opts.deterministic,
        )
        if opts.method in ("auto", "periodic"):
            outcome = solve_periodic(chain, g, costs, machine, copts)
            if outcome is not None:
                consider(outcome, "periodic-cpsat")
        lb = max(bounds.values())
        good = cands and (cands[0][0] - lb) <= opts.target_gap * cands[0][0]
        if opts.method == "monolithic" or (opts.method == "auto" and not good):
            mono = solve_chain(
                chain, g, costs, machine, dataclasses.replace(copts, time_limit_s=left())
            )
            consider(mono, "chain-cpsat")
            outcome = outcome or mono
    else:
        hint = min((s for s in (vanilla, greedy) if s is not None), key=lambda s: s.makespan_s)
        outcome = solve_general(
            g,
            costs,
            machine,
            GeneralOptions(
                time_limit_s=left(),
                workers=opts.workers,
                seed=opts.seed,
                deterministic=opts.deterministic,
            ),
            hint=hint,
        )
        consider(outcome, "interval-cpsat")
    if outcome is not None and outcome.bound_valid and outcome.cp_bound_s is not None:
        bounds["cpsat"] = outcome.cp_bound_s
    if greedy is not None:
        cands.append((greedy.makespan_s, 1, "greedy", greedy, g_plan, None))
    cands.append((vanilla.makespan_s, 2, "vanilla", vanilla, vanilla_plan(), None))
    makespan, _, chosen, schedule, plan, won = min(cands, key=lambda c: (c[0] * (1 + 1e-12), c[1]))
    if won is not None:
        method = chosen
    elif proven:
        method = f"{chosen} (meets the lower bound; nothing to optimise)"
    else:
        method = f"kept {chosen} (optimiser: {outcome.status if outcome else 'no plan'})"
    best_cp = won or outcome
    lb = max(bounds.values())
    if lb > makespan:
        lb = makespan if lb <= makespan * (1 + 1e-6) else lb
    gap = max(0.0, (makespan - lb) / makespan) if makespan > 0 else 0.0
    status = "optimal" if gap <= 1e-9 else "feasible"
    return Result(
        status=status,
        makespan_s=makespan,
        lower_bound_s=lb,
        gap=gap,
        solve_time_s=time.perf_counter() - t0,
        verified=True,
        plan=Plan("optimised" if won is not None else chosen, plan.prefetches, plan.order),
        schedule=schedule,
        predicted_makespan_s=won.predicted_s if won is not None else None,
        baseline_makespan_s=vanilla.makespan_s,
        greedy_makespan_s=greedy.makespan_s if greedy is not None else vanilla.makespan_s,
        fused_makespan_s=fused.makespan_s if fused is not None else None,
        tick_s=best_cp.tick_s if best_cp is not None else None,
        l2_capacity_bytes=machine.l2_capacity_bytes,
        method=method,
        bounds=bounds,
        baselines={
            "vanilla": vanilla,
            **({"greedy": greedy} if greedy is not None else {}),
            **({"fused": fused} if fused is not None else {}),
        },
    )


def _bounds(
    g: nx.DiGraph,
    costs: Mapping[Any, OpCost],
    machine: Machine,
    chain: list[Any] | None,
) -> dict[str, float]:
    out = {
        "critical_path": critical_path_bound(g, costs),
        "resource_load": resource_load_bound(g, costs),
    }
    if chain is not None:  # a chain is only ordered when hardware prices its tensors
        lp = chain_lp_bound(chain, g, costs, machine, hbm_contention=machine.contention)
        if lp is not None and math.isfinite(lp):
            out["chain_lp"] = lp
    return out
