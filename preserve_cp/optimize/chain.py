"""CP-SAT model for chain graphs (every LLM decode/prefill graph): bytes per (tensor, host).

On a chain, exactly one op runs at a time, so the time during which a prefetch can move
bytes is the sequence of *hosts* (the ops before the tensor's consumer). The decisions are
``y[t, k]``: bytes (in units) of tensor ``t`` moved while op ``k`` runs. Partial tensors,
any window where HBM has room (not only collectives), and stalls (an op's duration variable
may exceed its cost; the next op then waits for the host's chunks) all follow.

Constraint families (each has an on/off switch in :class:`ChainOptions`):

* ``add_op_durations``    d[k] >= roofline pieces of k's bytes found in L2
* ``add_hbm_contention``  bytes moved during host k <= what HBM leaves: B d[k] - HBM bytes(k)
* ``add_prefetch_rate``   bytes moved during host k <= prefetch peak x d[k]
* ``add_l2_capacity``     bytes held at every host <= usable L2 (held from host to last reader)
* ``set_makespan_objective``  minimise sum d[k]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx
from ortools.linear_solver import pywraplp
from ortools.sat.python import cp_model

from ..costs import OpCost
from ..graph import tensor_readers
from ..plan import Plan, Prefetch
from ..simulate import Machine
from .common import (
    SCALE,
    CpOutcome,
    add_roofline_rows,
    byte_unit,
    ceil_div,
    choose_tick,
    run_model,
)


@dataclass(frozen=True)
class ChainOptions:
    time_limit_s: float = 30.0
    workers: int = 2
    seed: int = 0
    lookahead_ops: int = 24
    min_chunk_bytes: float = 64 * 1024
    hbm_contention: bool = True
    prefetch_rate: bool = True
    l2_capacity: bool = True
    deterministic: bool = False
    relative_gap: float = 1e-3


@dataclass(frozen=True)
class PeriodicSpec:
    """Window positions [block_start, block_start + repeats x block_ops) hold ``repeats``
    copies of one steady block; the tiled plan will repeat it ``periods`` times."""

    block_start: int
    block_ops: int
    repeats: int
    periods: int


@dataclass
class _Tensor:
    name: str
    bytes: float
    first: int
    last: int
    units: int


class _LpBackend:
    """The CpModel calls the families use, on GLOP with continuous variables (warm start)."""

    def __init__(self) -> None:
        solver = pywraplp.Solver.CreateSolver("GLOP")
        if solver is None:  # pragma: no cover - GLOP ships with every ortools wheel
            raise RuntimeError("GLOP is not available")
        self.solver = solver

    def new_int_var(self, lo: int, hi: int, name: str) -> Any:
        return self.solver.NumVar(float(lo), float(hi), name)

    def add(self, constraint: Any) -> Any:
        return self.solver.Add(constraint)

    def minimize(self, expr: Any) -> None:
        self.solver.Minimize(expr)


class ChainModel:
    """The model's data, variables (keyed by graph ids) and constraint families.

    ``backend="cp"`` builds the CP-SAT model; ``backend="lp"`` builds the same rows as a
    continuous LP (GLOP), used only to warm-start CP-SAT.
    """

    def __init__(
        self,
        chain: list[Any],
        g: nx.DiGraph,
        costs: Mapping[Any, OpCost],
        machine: Machine,
        opts: ChainOptions,
        backend: str = "cp",
        periodic: PeriodicSpec | None = None,
    ) -> None:
        self.chain, self.g, self.costs, self.m, self.opts = chain, g, costs, machine, opts
        self.periodic = periodic
        self.pos = {n: i for i, n in enumerate(chain)}
        self.families: list[str] = []
        vanilla = sum(costs[n].duration_s(0.0) for n in chain)
        self.tick, _ = choose_tick([], vanilla, max_ticks=2e6)
        self.tensors = self._tensors()
        biggest = max((t.bytes for t in self.tensors.values()), default=1.0)
        self.unit = byte_unit(biggest)
        for t in self.tensors.values():
            t.units = int(t.bytes // self.unit)
        self.model: Any = cp_model.CpModel() if backend == "cp" else _LpBackend()
        self.horizon = ceil_div(vanilla, self.tick) * 2 + len(chain) + 10
        self.d: dict[int, Any] = {}
        self.y: dict[tuple[str, int], Any] = {}
        self.x: dict[str, Any] = {}
        self.cum: dict[tuple[str, int], Any] = {}
        self._variables()

    # -- data ----------------------------------------------------------------------
    def _tensors(self) -> dict[str, _Tensor]:
        out: dict[str, _Tensor] = {}
        readers = {
            t: [self.pos[n] for n in ns if n in self.pos]
            for t, ns in tensor_readers(self.g).items()
        }
        for n in self.chain:
            a = self.g.nodes[n]
            for t in a.get("prefetchable", []):
                b = float(a["reads"][t])
                if t in out or b < self.opts.min_chunk_bytes:
                    continue
                first, last = min(readers[t]), max(readers[t])
                if first == 0:
                    continue
                out[t] = _Tensor(t, b, first, last, 0)
        return out

    def hosts(self, t: _Tensor) -> range:
        return range(max(0, t.first - self.opts.lookahead_ops), t.first)

    def l2_units_of(self, k: int) -> list[str]:
        """Prefetchable tensors op k reads (and so finds in L2 when prefetched)."""
        a = self.g.nodes[self.chain[k]]
        return [t for t in a.get("prefetchable", []) if t in self.tensors]

    # -- variables -----------------------------------------------------------------
    def _variables(self) -> None:
        m = self.model
        for k, n in enumerate(self.chain):
            lo = ceil_div(self.costs[n].min_duration_s(), self.tick)
            self.d[k] = m.new_int_var(max(0, lo), self.horizon, f"d[{n}]")
        for t in self.tensors.values():
            running: Any = 0
            for k in self.hosts(t):
                v = m.new_int_var(0, t.units, f"y[{t.name},{self.chain[k]}]")
                self.y[t.name, k] = v
                running = running + v
                self.cum[t.name, k] = running
            self.x[t.name] = m.new_int_var(0, t.units, f"x[{t.name}]")
            m.add(self.x[t.name] == running)
        self.moved: dict[int, list[Any]] = {}  # host op -> the bytes moved during it
        for (_, k), v in self.y.items():
            self.moved.setdefault(k, []).append(v)

    def l2_of(self, k: int) -> Any:
        return sum(self.x[t] for t in self.l2_units_of(k))

    # -- constraint families -------------------------------------------------------
    def add_op_durations(self) -> None:
        self.families.append("op_durations")
        tick, u = self.tick, self.unit
        for k, n in enumerate(self.chain):
            c = self.costs[n]
            names = self.l2_units_of(k)
            if c.fixed or not names:
                self.model.add(self.d[k] >= ceil_div(c.duration_s(0.0), tick))
                continue
            add_roofline_rows(self.model, self.d[k], c, self.l2_of(k), tick, u)

    def add_hbm_contention(self) -> None:
        self.families.append("hbm_contention")
        b = math.floor(SCALE * self.m.hbm_bytes_per_s * self.tick / self.unit)
        for k, vs in self.moved.items():
            c = self.costs[self.chain[k]]
            lk: Any = self.l2_of(k) if not c.fixed else 0
            self.model.add(
                SCALE * sum(vs) - SCALE * lk
                <= b * (self.d[k] - 1) - math.ceil(SCALE * c.hbm_bytes / self.unit)
            )

    def add_prefetch_rate(self) -> None:
        self.families.append("prefetch_rate")
        r = math.floor(SCALE * self.m.prefetch_bytes_per_s * self.tick / self.unit)
        for k, vs in self.moved.items():
            self.model.add(SCALE * sum(vs) <= r * (self.d[k] - 1))

    def add_l2_capacity(self) -> None:
        self.families.append("l2_capacity")
        cap = int(self.m.l2_capacity_bytes // self.unit)
        per_slot: dict[int, list[Any]] = {}
        for t in self.tensors.values():
            for k in self.hosts(t):
                per_slot.setdefault(k, []).append(self.cum[t.name, k])
            for k in range(t.first, t.last + 1):
                per_slot.setdefault(k, []).append(self.x[t.name])
        for terms in per_slot.values():
            self.model.add(sum(terms) <= cap)

    def add_periodic_pattern(self) -> None:
        """Steady-state blocks repeat block 0: same durations, same bytes per relative host."""
        spec = self.periodic
        assert spec is not None
        self.families.append("periodic_pattern")
        m = self.model
        for r in range(1, spec.repeats):
            shift = r * spec.block_ops
            for k in range(spec.block_start, spec.block_start + spec.block_ops):
                m.add(self.d[k + shift] == self.d[k])
        by_first: dict[int, list[str]] = {}
        for t in self.tensors.values():
            by_first.setdefault(t.first, []).append(t.name)
        for t in self.tensors.values():
            if not spec.block_start <= t.first < spec.block_start + spec.block_ops:
                continue
            idx = by_first[t.first].index(t.name)
            for r in range(1, spec.repeats):
                shift = r * spec.block_ops
                twin = by_first.get(t.first + shift, [])
                if idx >= len(twin):
                    continue
                t2 = twin[idx]
                for k in self.hosts(t):
                    if (t2, k + shift) in self.y:
                        m.add(self.y[t2, k + shift] == self.y[t.name, k])

    def set_makespan_objective(self) -> None:
        self.families.append("makespan_objective")
        if self.periodic is None:
            self.model.minimize(sum(self.d.values()))
            return
        # the window stands for the whole graph: the steady blocks weigh as many periods as
        # the tiled plan will have, the rest once (both scaled by the number of repeats)
        spec = self.periodic
        lo, hi = spec.block_start, spec.block_start + spec.repeats * spec.block_ops
        rest = sum(v for k, v in self.d.items() if not lo <= k < hi)
        steady = sum(v for k, v in self.d.items() if lo <= k < hi)
        self.model.minimize(spec.repeats * rest + spec.periods * steady)

    def build(self) -> ChainModel:
        self.add_op_durations()
        if self.opts.hbm_contention:
            self.add_hbm_contention()
        if self.opts.prefetch_rate:
            self.add_prefetch_rate()
        if self.opts.l2_capacity:
            self.add_l2_capacity()
        if self.periodic is not None:
            self.add_periodic_pattern()
        self.set_makespan_objective()
        return self

    # -- solution -> plan ----------------------------------------------------------
    def extract(self, solver: cp_model.CpSolver) -> Plan:
        out: list[Prefetch] = []
        offset: dict[str, float] = {}
        x_val = {t: solver.value(v) * self.unit for t, v in self.x.items()}
        by_host: dict[int, list[tuple[int, str, int]]] = {}
        for (t, k), v in self.y.items():
            val = solver.value(v)
            if val > 0:
                by_host.setdefault(k, []).append((self.tensors[t].first, t, val))
        for k in sorted(by_host):
            n = self.chain[k]
            c = self.costs[n]
            l2b = sum(x_val[t] for t in self.l2_units_of(k)) if not c.fixed else 0.0
            stall = solver.value(self.d[k]) > ceil_div(c.duration_s(l2b), self.tick) + 1
            sync = self.chain[k + 1] if stall and k + 1 < len(self.chain) else None
            for first, t, val in sorted(by_host[k]):
                b = val * self.unit
                out.append(
                    Prefetch(
                        tensor=t,
                        bytes=b,
                        consumer=self.chain[first],
                        anchor=n,
                        offset_bytes=offset.get(t, 0.0),
                        sync=sync,
                    )
                )
                offset[t] = offset.get(t, 0.0) + b
        return Plan("optimised", tuple(out))


def _lp_warm_start(
    chain: list[Any],
    g: nx.DiGraph,
    costs: Mapping[Any, OpCost],
    machine: Machine,
    opts: ChainOptions,
    periodic: PeriodicSpec | None = None,
) -> dict[tuple[str, int], int] | None:
    """Solve the same rows as an LP and round the bytes down to whole units."""
    lp = ChainModel(chain, g, costs, machine, opts, backend="lp", periodic=periodic).build()
    if lp.model.solver.Solve() != pywraplp.Solver.OPTIMAL:
        return None
    return {key: int(math.floor(v.solution_value() + 1e-6)) for key, v in lp.y.items()}


def _repair(
    cm: ChainModel, y: dict[tuple[str, int], int], opts: ChainOptions
) -> dict[str, int] | None:
    """Fix the rounded bytes on a copy of the built model and let CP-SAT pick the durations:
    a complete, feasible hint (by variable name) for the real solve."""
    rep = cm.model.clone()

    def var(v: Any) -> Any:
        return rep.get_int_var_from_proto_index(v.index)

    copies = range(0)
    if cm.periodic is not None:  # copies of block 0 follow from the periodic rows
        p = cm.periodic
        copies = range(p.block_start + p.block_ops, p.block_start + p.repeats * p.block_ops)
    for key, v in cm.y.items():
        if cm.tensors[key[0]].first not in copies:
            rep.add(var(v) == y.get(key, 0))
    limit = min(10.0, max(1.0, opts.time_limit_s / 3))
    solver, _, ok = run_model(rep, limit, 1, opts.seed, False, 0.0)
    if not ok:
        return None
    return {v.name: solver.value(var(v)) for v in (*cm.d.values(), *cm.y.values(), *cm.x.values())}


def solve_chain(
    chain: list[Any],
    g: nx.DiGraph,
    costs: Mapping[Any, OpCost],
    machine: Machine,
    opts: ChainOptions | None = None,
    periodic: PeriodicSpec | None = None,
) -> CpOutcome:
    """Build and solve the chain model; return the plan and what CP-SAT proved.

    Warm start: the same rows solved as an LP (GLOP), bytes rounded down, durations repaired
    by a trivial CP-SAT solve; the result is a complete feasible hint for the real solve.
    """
    opts = opts or ChainOptions()
    cm = ChainModel(chain, g, costs, machine, opts, periodic=periodic)
    if not cm.tensors:  # nothing to prefetch: no model to build
        return CpOutcome(
            Plan("optimised"), "optimal", None, None, False, cm.tick, [], {"tensors": 0}
        )
    cm.build()
    y0 = _lp_warm_start(chain, g, costs, machine, opts, periodic)
    hint = _repair(cm, y0, opts) if y0 is not None else None
    if hint is not None:
        for v in (*cm.d.values(), *cm.y.values(), *cm.x.values()):
            cm.model.add_hint(v, hint[v.name])
    else:
        for k, n in enumerate(chain):
            cm.model.add_hint(cm.d[k], ceil_div(costs[n].duration_s(0.0), cm.tick) + 1)
        for v in (*cm.y.values(), *cm.x.values()):
            cm.model.add_hint(v, 0)
    solver, name, ok = run_model(
        cm.model, opts.time_limit_s, opts.workers, opts.seed, opts.deterministic, opts.relative_gap
    )
    stats = {
        "tensors": len(cm.tensors),
        "y_vars": len(cm.y),
        "unit_bytes": cm.unit,
        "wall_s": solver.wall_time,
        "warm_start": hint is not None,
    }
    if not ok:
        return CpOutcome(Plan("optimised"), name, None, None, False, cm.tick, cm.families, stats)
    plan = cm.extract(solver)
    scale = cm.tick / (periodic.repeats if periodic is not None else 1)
    return CpOutcome(
        plan,
        name,
        solver.objective_value * scale,
        solver.best_objective_bound * scale,
        False,
        cm.tick,
        cm.families,
        stats,
    )
