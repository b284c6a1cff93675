"""CP-SAT interval model for any DAG (several streams running at once, user graphs).

Reads like the maths: data, horizon, variables, constraint families, objective last.

* ``add_precedences``          start(v) >= end(u) for every edge
* ``add_stream_exclusivity``   one op at a time per stream (and on the prefetch stream)
* ``add_prefetch_windows``     a prefetch ends before every reader of its tensor starts;
                               its L2 interval runs from its start to the last reader's end
* ``add_l2_capacity``          cumulative over L2 intervals <= usable L2
* ``add_hbm_contention``       cumulative over HBM shares: ops at their rate, a prefetch at the
                               prefetch peak; so a prefetch only runs where HBM has room
* ``add_op_durations``         a reader is faster by the bytes its prefetched tensors bring
* ``set_makespan_objective``   minimise the makespan

Prefetches here are whole tensors moved at the prefetch peak; the simulator then executes
the plan (anchor = the op that starts last before the prefetch, plus the delay).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx
from ortools.sat.python import cp_model

from ..costs import OpCost
from ..graph import PREFETCH_STREAM, tensor_readers
from ..machine import Machine
from ..plan import Plan, Prefetch, Schedule
from .common import (
    CpOutcome,
    Deadline,
    add_roofline_rows,
    byte_unit,
    ceil_div,
    choose_tick,
    run_model,
)

SHARE = 1000  # HBM bandwidth in integer shares


@dataclass(frozen=True)
class GeneralOptions:
    work_limit: float = 0.25  # CP-SAT deterministic time (work units, not seconds)
    seed: int = 0
    precedences: bool = True
    stream_exclusivity: bool = True
    l2_capacity: bool = True
    hbm_contention: bool = True
    relative_gap: float = 0.0


class GeneralModel:
    def __init__(
        self, g: nx.DiGraph, costs: Mapping[Any, OpCost], machine: Machine, opts: GeneralOptions
    ) -> None:
        self.g, self.costs, self.m, self.opts = g, costs, machine, opts
        self.families: list[str] = []
        durs = [c.duration_s(0.0) for c in costs.values()]
        self.tick, self.exact = choose_tick(durs, sum(durs))
        self.model = cp_model.CpModel()
        self.readers = tensor_readers(g)
        self.tensors: dict[str, float] = {}
        if machine.l2_capacity_bytes > 0 and math.isfinite(machine.prefetch_bytes_per_s):
            for _n, a in g.nodes(data=True):
                for t in a.get("prefetchable", []):
                    b = float(a["reads"][t])
                    if 0 < b <= machine.l2_capacity_bytes and t not in self.tensors:
                        self.tensors[t] = b
        biggest = max(self.tensors.values(), default=1.0)
        self.unit = byte_unit(biggest)
        pf_ticks = sum(
            ceil_div(b / machine.prefetch_bytes_per_s + machine.chunk_latency_s, self.tick)
            for b in self.tensors.values()
        )
        self.horizon = sum(ceil_div(d, self.tick) for d in durs) + pf_ticks + 1
        self.start: dict[Any, cp_model.IntVar] = {}
        self.end: dict[Any, cp_model.IntVar] = {}
        self.size: dict[Any, Any] = {}
        self.iv: dict[Any, cp_model.IntervalVar] = {}
        self.p: dict[str, cp_model.IntVar] = {}
        self.pf_start: dict[str, cp_model.IntVar] = {}
        self.pf_iv: dict[str, cp_model.IntervalVar] = {}
        self.l2_end: dict[str, cp_model.IntVar] = {}
        self.l2_iv: dict[str, cp_model.IntervalVar] = {}
        self._variables()

    def _variables(self) -> None:
        m, H = self.model, self.horizon
        for t, b in self.tensors.items():
            self.p[t] = m.new_bool_var(f"p[{t}]")
            dur = max(
                1, ceil_div(b / self.m.prefetch_bytes_per_s + self.m.chunk_latency_s, self.tick)
            )
            self.pf_start[t] = m.new_int_var(0, H, f"pf_start[{t}]")
            self.pf_iv[t] = m.new_optional_fixed_size_interval_var(
                self.pf_start[t], dur, self.p[t], f"pf[{t}]"
            )
        for n in self.g.nodes:
            c = self.costs[n]
            self.start[n] = m.new_int_var(0, H, f"start[{n}]")
            self.end[n] = m.new_int_var(0, H, f"end[{n}]")
            slow = ceil_div(c.duration_s(0.0), self.tick)
            names = [t for t in self.g.nodes[n].get("prefetchable", []) if t in self.p]
            if not names or c.fixed:
                self.size[n] = slow
            else:
                self.size[n] = m.new_int_var(
                    ceil_div(c.min_duration_s(), self.tick), slow, f"size[{n}]"
                )
            self.iv[n] = m.new_interval_var(self.start[n], self.size[n], self.end[n], f"op[{n}]")

    # -- families ------------------------------------------------------------------
    def add_precedences(self) -> None:
        self.families.append("precedences")
        for u, v in self.g.edges:
            self.model.add(self.start[v] >= self.end[u])

    def add_stream_exclusivity(self) -> None:
        self.families.append("stream_exclusivity")
        lanes: dict[str, list[cp_model.IntervalVar]] = {}
        for n, c in self.costs.items():
            lanes.setdefault(c.resource, []).append(self.iv[n])
        lanes[PREFETCH_STREAM] = list(self.pf_iv.values())
        for ivs in lanes.values():
            if len(ivs) > 1:
                self.model.add_no_overlap(ivs)

    def add_prefetch_windows(self) -> None:
        self.families.append("prefetch_windows")
        m, H = self.model, self.horizon
        for t, p in self.p.items():
            for r in self.readers[t]:
                m.add(self.start[r] >= self.pf_iv[t].end_expr()).only_enforce_if(p)
            self.l2_end[t] = m.new_int_var(0, H, f"l2_end[{t}]")
            for r in self.readers[t]:
                m.add(self.l2_end[t] >= self.end[r])
            size = m.new_int_var(0, H, f"l2_size[{t}]")
            self.l2_iv[t] = m.new_optional_interval_var(
                self.pf_start[t], size, self.l2_end[t], p, f"l2[{t}]"
            )

    def add_l2_capacity(self) -> None:
        self.families.append("l2_capacity")
        if not self.l2_iv:
            return
        cap = int(self.m.l2_capacity_bytes // self.unit)
        demands = [math.ceil(self.tensors[t] / self.unit) for t in self.l2_iv]
        self.model.add_cumulative(list(self.l2_iv.values()), demands, cap)

    def add_hbm_contention(self) -> None:
        self.families.append("hbm_contention")
        if not self.pf_iv or not math.isfinite(self.m.hbm_bytes_per_s):
            return
        ivs, dem = [], []
        for n, c in self.costs.items():
            d0 = c.duration_s(0.0)
            rate = c.hbm_bytes / d0 if d0 > 0 else 0.0
            share = min(SHARE, math.ceil(SHARE * rate / self.m.hbm_bytes_per_s - 1e-9))
            if not c.fixed:  # a kernel leaves only op_share of what it does not use
                share = SHARE - math.floor((SHARE - share) * self.m.op_share)
            if share > 0:
                ivs.append(self.iv[n])
                dem.append(share)
        pf_share = min(
            SHARE, math.ceil(SHARE * self.m.prefetch_bytes_per_s / self.m.hbm_bytes_per_s - 1e-9)
        )
        ivs += list(self.pf_iv.values())
        dem += [pf_share] * len(self.pf_iv)
        self.model.add_cumulative(ivs, dem, SHARE)

    def add_op_durations(self) -> None:
        self.families.append("op_durations")
        m, tick = self.model, self.tick
        for n in self.g.nodes:
            if isinstance(self.size[n], int):
                continue
            c = self.costs[n]
            names = [t for t in self.g.nodes[n].get("prefetchable", []) if t in self.p]
            # bytes found in L2 (in units): sum of p[t] * bytes[t]
            xs = sum(self.p[t] * int(self.tensors[t] // self.unit) for t in names)
            add_roofline_rows(m, self.size[n], c, xs, tick, self.unit)

    def set_makespan_objective(self) -> None:
        self.families.append("makespan_objective")
        mk = self.model.new_int_var(0, self.horizon, "makespan")
        for n in self.g.nodes:
            if self.g.out_degree(n) == 0:
                self.model.add(mk >= self.end[n])
        self.model.minimize(mk)

    def build(self) -> GeneralModel:
        o = self.opts
        if o.precedences:
            self.add_precedences()
        if o.stream_exclusivity:
            self.add_stream_exclusivity()
        self.add_prefetch_windows()
        if o.l2_capacity:
            self.add_l2_capacity()
        if o.hbm_contention:
            self.add_hbm_contention()
        self.add_op_durations()
        self.set_makespan_objective()
        return self

    def hint_from(self, schedule: Schedule) -> None:
        """A complete hint from a simulated schedule (vanilla or greedy)."""
        m = self.model
        got: dict[str, Any] = {c.tensor: c for c in schedule.chunks}
        for e in schedule.events:
            s = int(math.floor(e.start_s / self.tick + 1e-9))
            m.add_hint(self.start[e.node], s)
            size = self.size[e.node]
            sz = (
                size
                if isinstance(size, int)
                else ceil_div(self.costs[e.node].duration_s(e.l2_bytes), self.tick)
            )
            if not isinstance(size, int):
                m.add_hint(size, sz)
            m.add_hint(self.end[e.node], s + sz)
        for t in self.p:
            c = got.get(t)
            m.add_hint(self.p[t], 1 if c is not None else 0)
            if c is not None:
                m.add_hint(self.pf_start[t], int(math.floor(c.start_s / self.tick + 1e-9)))

    def extract(self, solver: cp_model.CpSolver) -> Plan:
        tick = self.tick
        starts = {n: solver.value(v) for n, v in self.start.items()}
        order: dict[str, list[Any]] = {}
        for n in sorted(self.g.nodes, key=lambda n: (starts[n], solver.value(self.end[n]), str(n))):
            order.setdefault(self.costs[n].resource, []).append(n)
        pfs = sorted(
            (solver.value(self.pf_start[t]), t) for t in self.p if solver.boolean_value(self.p[t])
        )
        out = []
        for s, t in pfs:
            before = [n for n in self.g.nodes if starts[n] <= s]
            anchor = max(before, key=lambda n: (starts[n], str(n))) if before else None
            delay = (s - (starts[anchor] if anchor is not None else 0)) * tick
            first = min(self.readers[t], key=lambda n: starts[n])
            out.append(
                Prefetch(
                    tensor=t, bytes=self.tensors[t], consumer=first, anchor=anchor, delay_s=delay
                )
            )
        return Plan("optimised", tuple(out), {k: tuple(v) for k, v in order.items()})


def solve_general(
    g: nx.DiGraph,
    costs: Mapping[Any, OpCost],
    machine: Machine,
    opts: GeneralOptions | None = None,
    hint: Schedule | None = None,
    deadline: Deadline | None = None,
) -> CpOutcome:
    """Build and solve the interval model; return the plan and what CP-SAT proved."""
    opts = opts or GeneralOptions()
    deadline = deadline or Deadline(30.0)
    gm = GeneralModel(g, costs, machine, opts).build()
    if hint is not None:
        gm.hint_from(hint)
    solver, name, ok = run_model(
        gm.model, deadline, opts.work_limit, opts.seed, opts.relative_gap, "interval"
    )
    stats = {
        "tensors": len(gm.tensors),
        "ops": g.number_of_nodes(),
        "exact_ticks": gm.exact,
        "wall_s": solver.wall_time,
    }
    if not ok:
        return CpOutcome(Plan("optimised"), name, None, None, False, gm.tick, gm.families, stats)
    return CpOutcome(
        gm.extract(solver),
        name,
        solver.objective_value * gm.tick,
        solver.best_objective_bound * gm.tick,
        gm.exact and not gm.tensors,
        gm.tick,
        gm.families,
        stats,
    )
