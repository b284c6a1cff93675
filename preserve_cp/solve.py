"""``solve(graph, hw)``: one problem -> baselines -> optimise -> simulate + verify -> select.

The pipeline, stage by stage (each a function below, each under one deadline):

1. :func:`prepare` validates the graph, costs every op (costs.py), checks the step fits in
   HBM and freezes everything a stage needs into a :class:`Problem`;
2. :func:`run_baselines` simulates vanilla (no prefetch), greedy (the paper's pass), the
   best eager streaming plan and the fused GEMM+AllReduce graph;
3. :func:`lower_bounds` computes the bounds (critical path, stream load, the chain LP);
4. :func:`optimize` runs CP-SAT: the periodic window, or the chain model, or the general
   interval model, each warm-started; every plan it returns is simulated and verified; the
   best plan of each model (and the streaming plan, when it beats them) is then refined by
   :func:`prune` and :func:`tune`, one simulation per try;
5. :func:`select` keeps the best verified candidate (never worse than a baseline) and says
   how it was found; ``verified`` is computed from the verifier's violations.

``time_limit_s`` bounds all of it: a stage that finds the deadline passed is skipped, and
the answer is at worst the best baseline. CP-SAT runs one search thread and stops on a
deterministic work limit, so the same inputs give the same plan whatever the machine's load;
when the wall clock stops a run first, ``status`` is ``time_limit`` (the plan may then differ
between runs).
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from .baselines import best_streaming, fused_graph, greedy_plan, vanilla_plan
from .costs import OpCost, op_costs
from .errors import SolverError, input_error
from .graph import validate_graph
from .hardware import Hardware, load_hardware
from .machine import Machine, check_fits, machine_for
from .optimize import (
    ChainOptions,
    CpOutcome,
    Deadline,
    GeneralOptions,
    chain_lp_bound,
    chain_order,
    critical_path_bound,
    resource_load_bound,
    solve_chain,
    solve_general,
    solve_periodic,
)
from .plan import Plan, Prefetch, Result, Schedule
from .serving import step_serving
from .simulate import priorities, verify
from .simulate import simulate as run_plan


@dataclass(frozen=True)
class SolveOptions:
    """Knobs of :func:`solve` (all have defaults a user need not touch).

    ``chain`` and ``general`` are the optimiser models' own options (composed, not copied);
    ``seed``, ``lookahead_ops`` and ``work_limit`` given to :func:`solve` are written into
    them. ``workers`` is for sweeps (Dask); a single solve runs one deterministic search.
    """

    time_limit_s: float = 30.0
    workers: int = 2
    budget_fraction: float = 1.0
    contention: bool = True
    method: str = "auto"  # auto | periodic | monolithic (chain graphs)
    target_gap: float = 1e-3  # auto: below this gap the periodic plan is kept as is
    chain: ChainOptions = field(default_factory=ChainOptions)
    general: GeneralOptions = field(default_factory=GeneralOptions)

    def with_search(self, **search: Any) -> SolveOptions:
        """A copy with ``seed`` / ``work_limit`` (both models) or ``lookahead_ops`` (chain)."""
        both = {k: v for k, v in search.items() if k in ("seed", "work_limit")}
        chain_only = {k: v for k, v in search.items() if k == "lookahead_ops"}
        unknown = set(search) - set(both) - set(chain_only)
        if unknown:
            raise TypeError(f"unknown solve option(s): {sorted(unknown)}")
        return dataclasses.replace(
            self,
            chain=dataclasses.replace(self.chain, **both, **chain_only),
            general=dataclasses.replace(self.general, **both),
        )


@dataclass(frozen=True)
class Problem:
    """Everything the stages read, prepared once and never changed."""

    graph: nx.DiGraph
    hardware: Hardware | None
    costs: Mapping[Any, OpCost]
    machine: Machine
    chain: list[Any] | None  # the op order when the graph is a chain with tensors to move
    priorities: Mapping[Any, tuple[float, int]]
    options: SolveOptions
    has_tensors: bool  # hardware prices the ops and some op reads a prefetchable tensor

    def run(self, plan: Plan) -> Candidate:
        """Simulate and verify ``plan``; a plan the simulator cannot run is a violation."""
        try:
            s = run_plan(self.graph, self.costs, plan, self.machine, self.priorities)
        except SolverError as exc:
            return Candidate(plan.name, plan, None, (str(exc),))
        return Candidate(plan.name, plan, s, tuple(verify(self.graph, s, self.machine)))


@dataclass(frozen=True)
class Candidate:
    """A plan, what the simulator made of it, and the verifier's violations."""

    name: str
    plan: Plan
    schedule: Schedule | None
    violations: tuple[str, ...] = ()
    outcome: CpOutcome | None = None

    @property
    def verified(self) -> bool:
        return self.schedule is not None and not self.violations

    @property
    def makespan_s(self) -> float:
        return self.schedule.makespan_s if self.schedule is not None else math.inf


def prepare(graph: nx.DiGraph, hw: Hardware | str | None, options: SolveOptions) -> Problem:
    """Stage 1: validate, cost, check the fit; freeze the problem."""
    hardware = None if hw is None else load_hardware(hw)
    g = validate_graph(graph, need_duration=hardware is None)
    if hardware is not None:
        check_fits(g, hardware)
    costs = op_costs(g, hardware)
    machine = machine_for(hardware, options.contention)
    has_tensors = hardware is not None and any(a.get("prefetchable") for _, a in g.nodes(data=True))
    return Problem(
        g,
        hardware,
        costs,
        machine,
        chain_order(g) if has_tensors else None,
        priorities(g, costs),
        options,
        has_tensors,
    )


def run_baselines(problem: Problem, deadline: Deadline) -> dict[str, Candidate]:
    """Stage 2: vanilla always; greedy, streaming and fused while time is left."""
    vanilla = problem.run(vanilla_plan())
    if not vanilla.verified:
        raise SolverError(f"the vanilla schedule failed verification: {vanilla.violations[:2]}")
    out = {"vanilla": vanilla}
    g, hw = problem.graph, problem.hardware
    if problem.has_tensors and hw is not None and not deadline.skips("greedy"):
        out["greedy"] = problem.run(
            greedy_plan(g, hw.usable_l2_bytes, problem.options.budget_fraction)
        )
    if problem.has_tensors and not deadline.skips("streaming"):
        best = best_streaming(g, problem.costs, problem.machine, problem.priorities)
        if best is not None:
            out["streaming"] = Candidate("streaming", best[0], best[1])
    if (
        hw is not None
        and any(a.get("kind") == "allreduce" for _, a in g.nodes(data=True))
        and not deadline.skips("fused")
    ):
        fg, fc = fused_graph(g, problem.costs, hw)
        fused = run_plan(fg, fc, Plan("fused"), problem.machine)
        # a baseline that fails its own check is not reported
        out["fused"] = Candidate(
            "fused", Plan("fused"), fused, tuple(verify(fg, fused, problem.machine))
        )
    return {k: c for k, c in out.items() if c.verified}


def lower_bounds(problem: Problem, deadline: Deadline) -> dict[str, float]:
    """Stage 3: every bound valid for the machine model (docs/optimizer.md §4)."""
    g, costs = problem.graph, problem.costs
    out = {
        "critical_path": critical_path_bound(g, costs),
        "resource_load": resource_load_bound(g, costs),
    }
    if problem.chain is not None and not deadline.skips("bound"):
        lp = chain_lp_bound(
            problem.chain,
            g,
            costs,
            problem.machine,
            hbm_contention=problem.machine.contention,
            time_limit_s=deadline.left(),
        )
        if lp is not None and math.isfinite(lp):
            out["chain_lp"] = lp
        elif deadline.expired():
            deadline.cut.append("bound")
    return out


def optimize(
    problem: Problem,
    deadline: Deadline,
    baselines: Mapping[str, Candidate],
    bound_s: float,
    build_s: float = 0.0,
) -> tuple[list[Candidate], CpOutcome | None]:
    """Stage 4: CP-SAT plans, each simulated and verified; and the last model's outcome.

    ``build_s``: how long building a model is expected to take (no solver limit stops a
    build); a model is started only with that much time left."""
    opts = problem.options
    found: list[Candidate] = []
    outcome: CpOutcome | None = None

    def keep(o: CpOutcome, name: str) -> None:
        plans = list(o.alternatives)
        # no solution: its empty plan is not the optimiser's answer
        if o.status in ("optimal", "feasible") and (
            o.plan.prefetches or o.plan.order is not None or problem.chain is not None
        ):
            plans.insert(0, o.plan)
        one_run = 0.0  # how long simulating and verifying a plan takes here
        for i, plan in enumerate(plans):
            if i and deadline.skips("alternatives", one_run):
                break  # the first (the model's own plan) is always run
            t = time.perf_counter()
            c = problem.run(plan)
            one_run = max(one_run, time.perf_counter() - t)
            if c.verified and c.schedule is not None and not c.schedule.dropped:
                found.append(dataclasses.replace(c, name=name, outcome=o))

    g, costs, m, chain = problem.graph, problem.costs, problem.machine, problem.chain
    if deadline.skips("optimiser", build_s):
        return found, None
    if chain is not None:
        if opts.method in ("auto", "periodic"):
            outcome = solve_periodic(chain, g, costs, m, opts.chain, deadline=deadline)
            if outcome is not None:
                keep(outcome, "periodic-cpsat")
        best = min((c.makespan_s for c in found), default=math.inf)
        good = bool(found) and (best - bound_s) <= opts.target_gap * best
        if (opts.method == "monolithic" or (opts.method == "auto" and not good)) and (
            not deadline.skips("chain", build_s)
        ):
            mono = solve_chain(chain, g, costs, m, opts.chain, deadline=deadline)
            keep(mono, "chain-cpsat")
            outcome = outcome or mono
    else:
        hint = min(
            (
                c.schedule
                for c in baselines.values()
                if c.schedule is not None and c.name != "fused"
            ),
            key=lambda s: s.makespan_s,
        )
        outcome = solve_general(g, costs, m, opts.general, hint=hint, deadline=deadline)
        keep(outcome, "interval-cpsat")
    # refine the best plan of each model: pruning, then tuning (each a simulation per try)
    tops: dict[str, Candidate] = {}
    for c in found:
        if c.plan.prefetches and (c.name not in tops or c.makespan_s < tops[c.name].makespan_s):
            tops[c.name] = c
    stream = baselines.get("streaming")
    if (
        stream is not None
        and stream.verified
        and stream.plan.prefetches
        and stream.makespan_s < min((c.makespan_s for c in tops.values()), default=math.inf)
    ):
        tops[stream.name] = stream  # the best simple rule won: refine it too
    for top in sorted(tops.values(), key=lambda c: c.makespan_s):
        cur, steps = top, list[str]()
        pruned = prune(problem, cur, deadline)
        if pruned is not None:
            cur, steps = pruned, [*steps, "prune"]
        # close enough to the bound, tuning would only add bytes for crumbs
        if cur.makespan_s - bound_s > opts.target_gap * cur.makespan_s:
            tuned = tune(problem, cur, deadline)
            if tuned is not None:
                cur, steps = tuned, [*steps, "tune"]
        if steps:
            o = cur.outcome
            # the model's prediction was for the plan before these stages
            o = dataclasses.replace(o, predicted_s=None) if o is not None else None
            found.append(dataclasses.replace(cur, name=f"{top.name}+{'+'.join(steps)}", outcome=o))
    return found, outcome


_LAYER = re.compile(r"^L\d+\.")


def chunk_roles(plan: Plan) -> dict[str, list[int]]:
    """The plan's chunks grouped by *role*: the tensor's name without its layer prefix and
    the chunk's place among that tensor's chunks (``w_o#0``: every layer's first chunk of
    its ``w_o``), in order of first appearance.

    >>> from preserve_cp.plan import Prefetch
    >>> p = Plan("p", (Prefetch("L0.w", 1, "a"), Prefetch("L0.w", 1, "a", offset_bytes=1),
    ...                Prefetch("L1.w", 1, "b"), Prefetch("head.w", 1, "c")))
    >>> chunk_roles(p)
    {'w#0': [0, 2], 'w#1': [1], 'head.w#0': [3]}
    """
    seen: dict[str, int] = {}
    roles: dict[str, list[int]] = {}
    for i, pf in enumerate(plan.prefetches):
        nth = seen.get(pf.tensor, 0)
        seen[pf.tensor] = nth + 1
        roles.setdefault(f"{_LAYER.sub('', pf.tensor)}#{nth}", []).append(i)
    return roles


def _improves(c: Candidate, cur: Candidate, gain: float) -> Candidate | None:
    """``c`` under ``cur``'s name and outcome when it is verified, dropped no chunk and is
    shorter than ``cur`` by more than ``gain`` (relative); else None."""
    if (
        c.verified
        and c.schedule is not None
        and not c.schedule.dropped
        and c.makespan_s < cur.makespan_s * (1 - gain)
    ):
        return dataclasses.replace(c, name=cur.name, outcome=cur.outcome)
    return None


def prune(problem: Problem, best: Candidate, deadline: Deadline) -> Candidate | None:
    """Stage 4b: drop every chunk of one role at a time while the simulated makespan falls.

    The optimiser's models price a chunk's latency and its stalls only approximately; a
    small chunk (a KV-cache slice that costs a latency to save a fraction of one) can cost
    more than it gains in the simulator. Each try is one simulation, so this is cheap and
    deterministic; it stops at the deadline (noted in ``cut``). Returns the better plan, or
    None when no role is worth dropping."""
    cur = best
    improved = True
    while improved:
        improved = False
        for idx in chunk_roles(cur.plan).values():
            if deadline.skips("prune"):
                return cur if cur is not best else None
            drop = set(idx)
            kept = tuple(p for i, p in enumerate(cur.plan.prefetches) if i not in drop)
            c = _improves(problem.run(Plan(cur.plan.name, kept, cur.plan.order)), cur, 1e-9)
            if c is not None:
                cur, improved = c, True
                break  # the roles of the new plan
    return cur if cur is not best else None


#: tuning: the relative steps by which a role's chunks are scaled, coarse to fine
TUNE_STEPS = (0.25, 0.1, 0.04, 0.015)
#: sweeps over all roles per step at most (each stops early when a sweep changes nothing),
#: and a deterministic budget of simulations: ``TUNE_OPS`` simulated ops, between 24 and 240
#: simulations (240 on a 313-op Llama-3.2-3B step, 56 on DeepSeek-V3's 1,332 ops, where
#: unbounded tuning took 825 simulations of 42 ms, 35 s, for 0.22 %)
TUNE_SWEEPS = 3
TUNE_OPS = 75_000
TUNE_TRIES = (24, 240)  # the fewest and the most simulations, whatever the graph's size
#: tuning (on plans more than ``target_gap`` above the lower bound) keeps a change that
#: shortens the step by more than this (relative)
TUNE_MIN_GAIN = 1e-6


def scale_role(plan: Plan, idx: list[int], factor: float, size: Mapping[str, float]) -> Plan:
    """``plan`` with the chunks ``idx`` (one role) scaled by ``factor``: no chunk beyond what
    its tensor has left, and every tensor's chunks laid out again one after another.

    >>> from preserve_cp.plan import Prefetch
    >>> p = Plan("p", (Prefetch("L0.w", 4, "a"), Prefetch("L0.w", 4, "a", offset_bytes=4)))
    >>> [(c.bytes, c.offset_bytes) for c in scale_role(p, [0], 1.5, {"L0.w": 9}).prefetches]
    [(5.0, 0.0), (4, 5.0)]
    """
    chosen = set(idx)
    total: dict[str, float] = {}
    for i, pf in enumerate(plan.prefetches):
        if i not in chosen:
            total[pf.tensor] = total.get(pf.tensor, 0.0) + pf.bytes
    out: list[Prefetch] = []
    offset: dict[str, float] = {}
    for i, pf in enumerate(plan.prefetches):
        b = pf.bytes
        if i in chosen:
            room = size.get(pf.tensor, math.inf) - total.get(pf.tensor, 0.0)
            b = max(0.0, min(pf.bytes * factor, room))
            total[pf.tensor] = total.get(pf.tensor, 0.0) + b
        at = offset.get(pf.tensor, 0.0)
        offset[pf.tensor] = at + b
        out.append(dataclasses.replace(pf, bytes=b, offset_bytes=at))
    return Plan(plan.name, tuple(p for p in out if p.bytes > 0), plan.order)


def tune(problem: Problem, best: Candidate, deadline: Deadline) -> Candidate | None:
    """Stage 4c: scale every chunk of one role at a time, by ``TUNE_STEPS`` up and down,
    keeping what shortens the simulated makespan (coordinate descent: up to ``TUNE_SWEEPS``
    sweeps over the roles per step).

    The models round bytes to units, charge latencies conservatively and cannot see every
    stall the simulator makes, so a plan they call optimal may leave a window idle (on
    Llama-3.2-3B decode, h100-sxm fp8, tp 4, batch 8, 8K the periodic plan's first KV-cache
    chunk stopped 0.86 us before the attention allreduce ended). Each try is one
    simulation; deterministic; stops at the deadline. Returns the better plan, or None."""
    size: dict[str, float] = {}
    for _, a in problem.graph.nodes(data=True):
        for t in a.get("prefetchable", []):
            size.setdefault(t, float(a["reads"][t]))
    cur = best
    fewest, most = TUNE_TRIES
    tries, most = 0, min(most, max(fewest, TUNE_OPS // max(1, problem.graph.number_of_nodes())))
    for step in TUNE_STEPS:
        for _ in range(TUNE_SWEEPS):
            improved = False
            roles = chunk_roles(cur.plan)
            for name in list(roles):
                idx = roles.get(name)
                if not idx:
                    continue  # the role went (a scaled chunk had no room left)
                for factor in (1 + step, 1 - step):
                    if tries >= most or deadline.skips("tune"):
                        return cur if cur is not best else None
                    tries += 1
                    c = _improves(
                        problem.run(scale_role(cur.plan, idx, factor, size)), cur, TUNE_MIN_GAIN
                    )
                    if c is not None:
                        cur, improved = c, True
                        roles = chunk_roles(cur.plan)  # chunk places may have shifted
                        break
            if not improved:
                break
    return cur if cur is not best else None


#: baselines a plan may be chosen from, in order of preference on ties (fused changes the
#: graph, so it is reported, never chosen)
_FALLBACKS = ("streaming", "greedy", "vanilla")


def select(optimised: list[Candidate], baselines: Mapping[str, Candidate]) -> Candidate:
    """Stage 5: the best verified candidate; ties go to the optimiser, then the simpler plan."""
    pool = [*optimised, *(baselines[n] for n in _FALLBACKS if n in baselines)]
    return min(
        (c for c in pool if c.verified),
        key=lambda c: (c.makespan_s * (1 + 1e-12), pool.index(c)),
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
    ``overrides`` are :class:`SolveOptions` fields, or ``seed`` / ``work_limit`` /
    ``lookahead_ops`` of the optimiser models.

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
    t0 = time.perf_counter()
    opts = options or SolveOptions()
    search = {
        k: overrides.pop(k) for k in ("seed", "work_limit", "lookahead_ops") if k in overrides
    }
    if overrides:
        opts = dataclasses.replace(opts, **overrides)
    if search:
        opts = opts.with_search(**search)
    t = opts.time_limit_s
    if isinstance(t, bool) or not isinstance(t, int | float) or not (0 < t < math.inf):
        raise input_error("solve", "time_limit_s", "a finite number of seconds > 0", t)
    deadline = Deadline(opts.time_limit_s)
    problem = prepare(graph, hw, opts)
    base = run_baselines(problem, deadline)
    t_bound = time.perf_counter()
    bounds = lower_bounds(problem, deadline)
    build_s = time.perf_counter() - t_bound  # a model build takes about as long as the LP's
    bound_s = max(bounds.values())
    base_best = min(c.makespan_s for c in base.values() if c.name != "fused")
    proven = base_best <= bound_s * (1 + 1e-12)  # a baseline meets the bound
    optimised, outcome = (
        ([], None) if proven else optimize(problem, deadline, base, bound_s, build_s)
    )
    if outcome is not None and outcome.bound_valid and outcome.cp_bound_s is not None:
        bounds["cpsat"] = outcome.cp_bound_s
    chosen = select(optimised, base)
    won = chosen.outcome
    if won is not None:
        method = chosen.name
    elif proven:
        method = f"{chosen.name} (meets the lower bound; nothing to optimise)"
    else:
        method = f"kept {chosen.name} (optimiser: {outcome.status if outcome else 'no plan'})"
    makespan = chosen.makespan_s
    lb = max(bounds.values())
    if lb > makespan:
        lb = makespan if lb <= makespan * (1 + 1e-6) else lb
    gap = max(0.0, (makespan - lb) / makespan) if makespan > 0 else 0.0
    if deadline.cut:
        status = "time_limit"
        method += f"; time limit: cut {', '.join(dict.fromkeys(deadline.cut))}"
    else:
        status = "optimal" if gap <= 1e-9 else "feasible"
    assert chosen.schedule is not None
    best_cp = won or outcome

    def span(name: str) -> float | None:
        c = base.get(name)
        return c.makespan_s if c is not None else None

    vanilla = base["vanilla"].makespan_s
    result = Result(
        status=status,
        makespan_s=makespan,
        lower_bound_s=lb,
        gap=gap,
        solve_time_s=time.perf_counter() - t0,
        verified=chosen.verified,
        plan=Plan(
            "optimised" if won is not None else chosen.name,
            chosen.plan.prefetches,
            chosen.plan.order,
        ),
        schedule=chosen.schedule,
        predicted_makespan_s=won.predicted_s if won is not None else None,
        baseline_makespan_s=vanilla,
        greedy_makespan_s=span("greedy") if "greedy" in base else vanilla,
        streaming_makespan_s=span("streaming"),
        fused_makespan_s=span("fused"),
        tick_s=best_cp.tick_s if best_cp is not None else None,
        l2_capacity_bytes=problem.hardware.l2_capacity_bytes if problem.hardware else 0.0,
        usable_l2_bytes=problem.machine.l2_capacity_bytes,
        method=method,
        bounds=bounds,
        baselines={n: c.schedule for n, c in base.items() if c.schedule is not None},
    )
    # TPOT or TTFT and tokens/s of every plan (None for a graph not built from a workload)
    return result.with_serving(step_serving(problem.graph, result))
