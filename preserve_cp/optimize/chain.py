"""CP-SAT model for chain graphs (every LLM decode/prefill graph): bytes per (tensor, host).

On a chain, exactly one op runs at a time, so the time during which a prefetch can move
bytes is the sequence of *hosts* (the ops before the tensor's consumer). The decisions are
``y[t, k]``: bytes (in units) of tensor ``t`` moved while op ``k`` runs or in the stall
after it (``r[k]`` its run, ``st[k]`` the stall: time the next op waits for chunks), and
``w[k]``: how many of host k's bytes move in that stall, after op k ended and released its
tensors' L2 (so a chunk may start at the instant L2 frees, as in the simulator).

Constraint families (each has an on/off switch in :class:`ChainOptions`):

* ``add_op_durations``    r[k] >= roofline pieces of k's bytes found in L2
* ``add_hbm_contention``  bytes moved in k's run <= op_share x (B r[k] - HBM bytes(k));
                          in its stall <= B st[k]
* ``add_prefetch_rate``   bytes moved in k's run <= P r[k]; in its stall <= P st[k]
* ``add_chunk_latency``   each chunk first waits the chunk latency (booleans per chunk)
* ``add_l2_capacity``     bytes held at the end of every run and every stall <= usable L2
* ``set_makespan_objective``  minimise sum r[k] + st[k]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx
from ortools.linear_solver import linear_solver_pb2, pywraplp
from ortools.sat.python import cp_model

from ..costs import OpCost
from ..graph import tensor_readers
from ..machine import Machine
from ..plan import Plan, Prefetch
from .common import (
    SCALE,
    CpOutcome,
    Deadline,
    add_roofline_rows,
    byte_unit,
    ceil_div,
    choose_tick,
    eager,
    early_first,
    run_model,
)


@dataclass(frozen=True)
class ChainOptions:
    work_limit: float = 0.25  # CP-SAT deterministic time (work units, not seconds)
    seed: int = 0
    lookahead_ops: int | None = None  # None: two layers and two ops (lookahead_ops())
    min_chunk_bytes: float = 64 * 1024
    hbm_contention: bool = True
    prefetch_rate: bool = True
    l2_capacity: bool = True
    chunk_latency: bool = True
    relative_gap: float = 1e-3


#: the least lookahead, in ops (two layers and two ops of an 11-op dense decoder layer)
MIN_LOOKAHEAD_OPS = 24


def lookahead_ops(opts: ChainOptions, chain: list[Any], g: nx.DiGraph) -> int:
    """How many ops before a tensor's consumer may host its bytes: ``opts.lookahead_ops``, or
    when that is None (the default) the ops of two layers plus two, at least
    :data:`MIN_LOOKAHEAD_OPS`, so that every model looks as many layers back whatever its
    layers' op count (a 14-op MoE layer: 30; an 11-op dense layer: 24).

    On Qwen3-30B-A3B decode (ascend-910b2 int8, tp 4, batch 2, 16K) a fixed 24 ops (1.7 of its
    layers) left the plan 0.64 % above the bound; 30 ops leave it 0.2 % above.

    >>> import networkx as nx
    >>> g = nx.DiGraph()
    >>> for i in range(28):
    ...     g.add_node(i, layer=i // 14)
    >>> lookahead_ops(ChainOptions(), list(g), g)
    30
    >>> lookahead_ops(ChainOptions(lookahead_ops=8), list(g), g)
    8
    """
    if opts.lookahead_ops is not None:
        return opts.lookahead_ops
    per_layer: dict[int, int] = {}
    for n in chain:
        layer = int(g.nodes[n].get("layer", -1))
        if layer >= 0:
            per_layer[layer] = per_layer.get(layer, 0) + 1
    widest = max(per_layer.values(), default=0)
    return max(MIN_LOOKAHEAD_OPS, 2 * widest + 2)


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
        tunable: bool = False,
    ) -> None:
        self.chain, self.g, self.costs, self.m, self.opts = chain, g, costs, machine, opts
        self.lookahead = lookahead_ops(opts, chain, g)
        self.periodic = periodic
        # LP only: latency rows whose bounds set_support() adjusts (one build, many solves)
        self.tunable = tunable
        self._latency_rows: list[tuple[Any, float, int, int]] = []  # row, its bound, host, cost
        self._early_rows: dict[int, tuple[Any, float]] = {}
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
        self.r: dict[int, Any] = {}  # run of op k (ticks)
        self.st: dict[int, Any] = {}  # stall after op k (ticks)
        self.d: dict[int, Any] = {}  # r + st
        self.y: dict[tuple[str, int], Any] = {}
        self.x: dict[str, Any] = {}
        self.cum: dict[tuple[str, int], Any] = {}
        self.w: dict[int, Any] = {}  # bytes of host k moved in its stall
        self.b: dict[tuple[str, int], Any] = {}  # y[t, k] > 0: a chunk (pays the latency)
        self.v: dict[int, Any] = {}  # w[k] > 0: the chunk split at op k's end
        self.h: dict[int, Any] = {}  # host k's first chunk released at op k-1
        self.early_hosts: list[int] = []
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
        return range(max(0, t.first - self.lookahead), t.first)

    def l2_units_of(self, k: int) -> list[str]:
        """Prefetchable tensors op k reads (and so finds in L2 when prefetched)."""
        a = self.g.nodes[self.chain[k]]
        return [t for t in a.get("prefetchable", []) if t in self.tensors]

    @property
    def latency_ticks(self) -> int:
        return ceil_div(self.m.chunk_latency_s, self.tick) if self.m.chunk_latency_s > 0 else 0

    # -- variables -----------------------------------------------------------------
    def _variables(self) -> None:
        m = self.model
        for k, n in enumerate(self.chain):
            lo = ceil_div(self.costs[n].min_duration_s(), self.tick)
            self.r[k] = m.new_int_var(max(0, lo), self.horizon, f"r[{n}]")
            self.st[k] = m.new_int_var(0, self.horizon, f"st[{n}]")
            self.d[k] = self.r[k] + self.st[k]
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
        self.hosted: dict[int, list[str]] = {}  # host op -> the tensors it may move
        for (name, k), v in self.y.items():
            self.moved.setdefault(k, []).append(v)
            self.hosted.setdefault(k, []).append(name)
        for k, vs in self.moved.items():
            top = sum(self.tensors[name].units for name in self.hosted[k])
            self.w[k] = m.new_int_var(0, top, f"w[{self.chain[k]}]")
            m.add(self.w[k] <= sum(vs))

    def l2_of(self, k: int) -> Any:
        return sum(self.x[t] for t in self.l2_units_of(k))

    def _share(self, k: int) -> float:
        """Share of what op k leaves of HBM that a prefetch may take (1 for collectives)."""
        return 1.0 if self.costs[self.chain[k]].fixed else self.m.op_share

    def _outlasts_latency(self, k: int) -> bool:
        """Op k's shortest run is longer than a chunk latency (one can pass while it runs)."""
        return ceil_div(self.costs[self.chain[k]].min_duration_s(), self.tick) > self.latency_ticks

    def _zero_rate_run(self, k: int) -> bool:
        """Op k's run leaves a prefetch no HBM (a kernel, with op_share 0)."""
        return (
            self.opts.hbm_contention
            and math.isfinite(self.m.hbm_bytes_per_s)
            and not self.costs[self.chain[k]].fixed
            and self.m.op_share <= 0
        )

    def _run_bytes(self, k: int) -> Any:
        return sum(self.moved[k]) - self.w[k]

    # -- constraint families -------------------------------------------------------
    def add_op_durations(self) -> None:
        self.families.append("op_durations")
        tick, u = self.tick, self.unit
        for k, n in enumerate(self.chain):
            c = self.costs[n]
            names = self.l2_units_of(k)
            if c.fixed or not names:
                self.model.add(self.r[k] >= ceil_div(c.duration_s(0.0), tick))
                continue
            add_roofline_rows(self.model, self.r[k], c, self.l2_of(k), tick, u)

    def _hbm_rate(self) -> int:
        return math.floor(SCALE * self.m.hbm_bytes_per_s * self.tick / self.unit)

    def _pf_rate(self) -> int:
        return math.floor(SCALE * self.m.prefetch_bytes_per_s * self.tick / self.unit)

    def _run_capacity(self, k: int) -> list[tuple[Any, int]]:
        """Upper bounds (scaled units) on the bytes op k's run leaves to the prefetch, one
        per active rate family, each with its rate per tick (at most what the prefetch gets
        at any instant of the run). Conservative: one tick of slack, rates rounded down."""
        out: list[tuple[Any, int]] = []
        c = self.costs[self.chain[k]]
        if self.opts.prefetch_rate and math.isfinite(self.m.prefetch_bytes_per_s):
            out.append((self._pf_rate() * (self.r[k] - 1), self._pf_rate()))
        if self.opts.hbm_contention and math.isfinite(self.m.hbm_bytes_per_s):
            share = self._share(k)
            lk: Any = self.l2_of(k) if not c.fixed else 0
            rate = math.floor(share * self._hbm_rate())
            out.append(
                (
                    rate * (self.r[k] - 1)
                    - math.ceil(share * SCALE * c.hbm_bytes / self.unit)
                    + math.floor(share * SCALE) * lk,
                    rate,
                )
            )
        return out

    def _stall_rate(self) -> int | None:
        rates = []
        if self.opts.prefetch_rate and math.isfinite(self.m.prefetch_bytes_per_s):
            rates.append(self._pf_rate())
        if self.opts.hbm_contention and math.isfinite(self.m.hbm_bytes_per_s):
            rates.append(self._hbm_rate())
        return min(rates) if rates else None

    def add_hbm_contention(self) -> None:
        self.families.append("hbm_contention")
        self._add_rate_rows()

    def add_prefetch_rate(self) -> None:
        self.families.append("prefetch_rate")
        if not self.opts.hbm_contention:
            self._add_rate_rows()

    def _add_rate_rows(self) -> None:
        stall = self._stall_rate()
        for k in self.moved:
            for cap, _ in self._run_capacity(k):
                self.model.add(SCALE * self._run_bytes(k) <= cap)
            if stall is not None:
                self.model.add(SCALE * self.w[k] <= stall * self.st[k])

    def add_chunk_latency(self) -> None:
        """Every chunk waits the chunk latency before it moves: n[k] chunks at host k (one
        per tensor moved there, plus one where a tensor is split at op k's end). The host's
        first chunk starts with op k (earlier hosts' chunks end within their own hosts), so
        its latency falls in op k's run and costs only what the run would have moved in it
        (nothing while a kernel leaves a prefetch no HBM); the others are charged at the
        fastest rate. Conservative, given a run at least one latency long.

        ``h[k]``: the host's first chunk is released one op earlier, at op k-1, which then
        moves nothing (the stream is idle there), so its latency passes while op k-1 runs
        and costs host k nothing; its bytes are reserved in L2 from op k-1 on, so the L2
        held at op k-1's end plus all of host k's bytes must fit (conservative). The plan
        anchors that chunk at op k-1 (``extract``)."""
        lat = self.latency_ticks
        stall = self._stall_rate()
        if lat <= 0 or stall is None:
            return
        self.families.append("chunk_latency")
        m = self.model
        for (t, k), y in self.y.items():
            self.b[t, k] = m.new_bool_var(f"b[{t},{self.chain[k]}]")
            m.add(y <= self.tensors[t].units * self.b[t, k])
        for k in self.moved:
            self.v[k] = m.new_bool_var(f"v[{self.chain[k]}]")
            m.add(self.w[k] <= sum(self.tensors[t].units for t in self.hosted[k]) * self.v[k])
        for k, vs in self.moved.items():
            # a run that leaves a prefetch nothing moves nothing: its stall bytes are whole
            # chunks, never the second part of one split at the op's end
            split: Any = 0 if self._zero_rate_run(k) else self.v[k]
            n = sum(self.b[t, k] for t in self.hosted[k]) + split
            first_in_run = self._outlasts_latency(k)
            h: Any = 0
            if k > 0 and self._outlasts_latency(k - 1):
                h = self.h[k] = m.new_bool_var(f"h[{self.chain[k]}]")
                if k - 1 in self.moved:
                    m.add(sum(self.moved[k - 1]) == 0).only_enforce_if(h)
                self.early_hosts.append(k)
            for cap, rate in self._run_capacity(k):
                first_cost = rate * lat if first_in_run else stall * lat
                m.add(
                    SCALE * sum(vs)
                    <= cap
                    + stall * self.st[k]
                    - stall * lat * (n - 1)
                    - first_cost
                    + first_cost * h
                )

    def add_support_latency(self) -> None:
        """(LP, ``tunable``) the rows of add_chunk_latency for a support fixed later: once the
        (tensor, host) pairs that may move bytes are fixed (:meth:`set_support`), each pair is
        one chunk and the latency rows are linear (no split chunk charged; a host's first
        chunk released one op earlier when that op hosts nothing). Built relaxed."""
        lat = self.latency_ticks
        stall = self._stall_rate()
        if lat <= 0 or stall is None or not self.tunable:
            return
        self.families.append("support_latency")
        inf = self.model.solver.infinity()
        for k, vs in self.moved.items():
            first_in_run = self._outlasts_latency(k)
            for cap, rate in self._run_capacity(k):
                row = self.model.add(SCALE * sum(vs) - cap - stall * self.st[k] <= 0)
                cost = rate * lat if first_in_run else stall * lat
                self._latency_rows.append((row, row.ub(), k, cost))
                row.SetUb(inf)

    def set_support(self, support: frozenset[tuple[str, int]] | None) -> None:
        """(LP, ``tunable``) Only the pairs of ``support`` move bytes, each one chunk paying its
        latency; ``None``: every pair, latencies ignored (the plain warm start)."""
        inf = self.model.solver.infinity()
        for (t, k), v in self.y.items():
            v.SetUb(float(self.tensors[t].units) if support is None or (t, k) in support else 0.0)
        lat, stall = self.latency_ticks, self._stall_rate() or 0
        n = (
            {k: sum((t, k) in support for t in self.hosted[k]) for k in self.moved}
            if support
            else {}
        )

        def early(k: int) -> bool:
            return (
                support is not None
                and k > 0
                and n.get(k - 1, 0) == 0
                and self._outlasts_latency(k - 1)
            )

        for row, ub0, k, cost in self._latency_rows:
            if support is None or n.get(k, 0) == 0:
                row.SetUb(inf)
            else:
                row.SetUb(ub0 - stall * lat * (n[k] - 1) - (0 if early(k) else cost))
        for k, (row, ub0) in self._early_rows.items():
            row.SetUb(ub0 if n.get(k, 0) and early(k) else inf)

    def add_l2_capacity(self) -> None:
        self.families.append("l2_capacity")
        cap = int(self.m.l2_capacity_bytes // self.unit)
        run_end: dict[int, list[Any]] = {}  # held when op k ends, before it releases
        stall_end: dict[int, list[Any]] = {}  # held when the stall after op k ends
        for t in self.tensors.values():
            for k in self.hosts(t):
                run_end.setdefault(k, []).append(self.cum[t.name, k])
                stall_end.setdefault(k, []).append(self.cum[t.name, k])
            for k in range(t.first, t.last + 1):
                run_end.setdefault(k, []).append(self.x[t.name])
                if k < t.last:
                    stall_end.setdefault(k, []).append(self.x[t.name])
        for k, terms in run_end.items():
            self.model.add(sum(terms) - self.w.get(k, 0) <= cap)
        for k, terms in stall_end.items():
            if k in self.w:
                self.model.add(sum(terms) <= cap)
        for k, h in self.h.items():  # host k's first chunk reserved from op k-1 on
            held = sum(run_end.get(k - 1, [])) + sum(self.moved[k])
            self.model.add(held <= cap).only_enforce_if(h)
        if self.tunable and self.latency_ticks > 0:  # bounds set by set_support
            for k in self.moved:
                if k > 0:
                    row = self.model.add(sum(run_end.get(k - 1, [])) + sum(self.moved[k]) <= cap)
                    self._early_rows[k] = (row, row.ub())
                    row.SetUb(self.model.solver.infinity())

    def add_periodic_pattern(self) -> None:
        """Steady-state blocks repeat block 0: same durations, same bytes per relative host."""
        spec = self.periodic
        assert spec is not None
        self.families.append("periodic_pattern")
        m = self.model
        for r in range(1, spec.repeats):
            shift = r * spec.block_ops
            for k in range(spec.block_start, spec.block_start + spec.block_ops):
                m.add(self.r[k + shift] == self.r[k])
                m.add(self.st[k + shift] == self.st[k])
                if k in self.w and k + shift in self.w:
                    m.add(self.w[k + shift] == self.w[k])
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
        if self.opts.chunk_latency and not isinstance(self.model, _LpBackend):
            self.add_chunk_latency()
        elif self.opts.chunk_latency and self.tunable:
            self.add_support_latency()
        if self.opts.l2_capacity:
            self.add_l2_capacity()
        if self.periodic is not None:
            self.add_periodic_pattern()
        self.set_makespan_objective()
        return self

    @property
    def variables(self) -> list[Any]:
        """Every decision variable (for hints and the repair step)."""
        return [
            *self.r.values(),
            *self.st.values(),
            *self.y.values(),
            *self.x.values(),
            *self.w.values(),
            *self.b.values(),
            *self.v.values(),
            *self.h.values(),
        ]

    # -- solution -> plan ----------------------------------------------------------
    def extract(self, value: Callable[[Any], int]) -> Plan:
        """Chunks per host in consumer order; the host's last w[k] bytes (its stall part)
        become chunks of their own, so they start when op k's end frees L2."""
        out: list[Prefetch] = []
        offset: dict[str, float] = {}
        by_host: dict[int, list[tuple[int, str, int]]] = {}
        for (t, k), v in self.y.items():
            val = value(v)
            if val > 0:
                by_host.setdefault(k, []).append((self.tensors[t].first, t, val))
        for k in sorted(by_host):
            n = self.chain[k]
            # the model's run may outlast the op (a fixed op's, or one whose L2 bytes make it
            # faster): that extra time is a stall too, so the next op must wait for the chunks
            c = self.costs[n]
            l2 = sum(value(self.x[t]) for t in self.l2_units_of(k)) * self.unit
            stall = value(self.st[k]) > 0 or value(self.r[k]) > ceil_div(
                c.duration_s(l2), self.tick
            )
            sync = self.chain[k + 1] if stall and k + 1 < len(self.chain) else None
            items = sorted(by_host[k])
            run_left = sum(val for _, _, val in items) - value(self.w[k])
            early = k in self.h and value(self.h[k]) > 0
            for first, t, val in items:
                parts = [val]
                if 0 < run_left < val:
                    parts = [run_left, val - run_left]
                run_left -= val
                for part in parts:
                    b = part * self.unit
                    out.append(
                        Prefetch(
                            tensor=t,
                            bytes=b,
                            consumer=self.chain[first],
                            anchor=self.chain[k - 1] if early else n,
                            offset_bytes=offset.get(t, 0.0),
                            sync=sync,
                        )
                    )
                    offset[t] = offset.get(t, 0.0) + b
                    early = False  # only the host's first chunk
        return Plan("optimised", tuple(out))


def _lp_warm_starts(
    chain: list[Any],
    g: nx.DiGraph,
    costs: Mapping[Any, OpCost],
    machine: Machine,
    opts: ChainOptions,
    periodic: PeriodicSpec | None,
    deadline: Deadline,
    rounds: int = 3,
    per_host: int = 3,
) -> list[dict[tuple[str, int], int]]:
    """Warm starts from one LP build (the same rows on GLOP), bytes rounded down:

    * the plain LP (no booleans, chunk latencies ignored);
    * one that knows what chunks cost: the plain LP spreads bytes over many (tensor, host)
      pairs, each of which the real model charges a latency. Keep the pairs worth a latency
      (at most ``per_host`` per host, each moving at least what a stall moves in half a
      latency), charge one latency per kept pair (linear once the support is fixed: only
      bounds change, :meth:`ChainModel.set_support`), re-solve, and repeat on the new
      support; every round's bytes are a start (the LP re-solves from its last basis, so
      which optimal vertex a round lands on varies: the repair step judges them)."""
    if deadline.skips("warm start"):
        return []
    lat = opts.chunk_latency and machine.chunk_latency_s > 0
    lat = lat and math.isfinite(machine.hbm_bytes_per_s)
    lp = ChainModel(
        chain, g, costs, machine, opts, backend="lp", periodic=periodic, tunable=lat
    ).build()
    solver = lp.model.solver

    def solve() -> dict[tuple[str, int], float] | None:
        """From scratch each time, as a fresh build would be (GLOP re-solving the changed
        model would start from its last basis and land on other optimal vertices)."""
        if deadline.skips("warm start"):
            return None
        request = linear_solver_pb2.MPModelRequest(
            solver_type=linear_solver_pb2.MPModelRequest.GLOP_LINEAR_PROGRAMMING,
            solver_time_limit_seconds=max(1e-3, deadline.left()),
        )
        solver.ExportModelToProto(request.model)
        response = linear_solver_pb2.MPSolutionResponse()
        pywraplp.Solver.SolveWithProto(request, response)
        if response.status == linear_solver_pb2.MPSOLVER_ABNORMAL and not deadline.expired():
            # GLOP's presolve gives up on some periodic windows (Llama-3-70B int8 decode on
            # the 910B2, batch 4, 16K: ABNORMAL at once, optimal without it)
            request.solver_specific_parameters = "use_preprocessing: false"
            request.solver_time_limit_seconds = max(1e-3, deadline.left())
            response = linear_solver_pb2.MPSolutionResponse()
            pywraplp.Solver.SolveWithProto(request, response)
        if response.status != linear_solver_pb2.MPSOLVER_OPTIMAL:
            if deadline.expired():
                deadline.cut.append("warm start")
            return None
        value = response.variable_value
        return {key: value[v.index()] for key, v in lp.y.items()}

    def rounded(y: Mapping[tuple[str, int], float]) -> dict[tuple[str, int], int]:
        return {key: int(math.floor(v + 1e-6)) for key, v in y.items()}

    y = solve()
    if y is None:
        return []
    out = [rounded(y)]
    if not lat:
        return out
    floor = 0.5 * machine.hbm_bytes_per_s * machine.chunk_latency_s / lp.unit
    for _ in range(rounds):
        by_host: dict[int, list[tuple[float, str]]] = {}
        for (t, k), v in y.items():
            if v >= floor:
                by_host.setdefault(k, []).append((v, t))
        support = frozenset(
            (t, k) for k, vs in by_host.items() for _, t in sorted(vs, reverse=True)[:per_host]
        )
        if not support:
            break
        lp.set_support(support)
        got = solve()
        if got is None:
            break
        y = got
        out.append(rounded(y))
    return out


def merged_plan(cm: ChainModel, y: Mapping[tuple[str, int], int]) -> Plan:
    """The bytes ``y`` as ONE chunk per tensor, anchored at the first host that moves any of
    it, in consumer order: a tensor then pays one chunk latency however many windows
    its bytes span (the chain model charges one per host), at the price of reserving its L2
    from that first host on. The simulator decides which is better."""
    total: dict[str, int] = {}
    start: dict[str, int] = {}
    for (t, k), v in y.items():
        if v > 0:
            total[t] = total.get(t, 0) + v
            start[t] = min(start.get(t, k), k)
    # consumer order, as every plan here: a chunk waiting for L2 must never block the
    # chunk of an earlier consumer whose reader would free that L2
    order = sorted(total, key=lambda t: (cm.tensors[t].first, start[t], t))
    return Plan(
        "optimised",
        tuple(
            Prefetch(t, total[t] * cm.unit, cm.chain[cm.tensors[t].first], cm.chain[start[t]])
            for t in order
        ),
    )


def _repair(
    cm: ChainModel, y: dict[tuple[str, int], int], opts: ChainOptions, deadline: Deadline
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
    solver, _, ok = run_model(rep, deadline, opts.work_limit / 2, opts.seed, 0.0, "repair")
    if not ok:
        return None
    out = {v.name: solver.value(var(v)) for v in cm.variables}
    out[_OBJECTIVE] = round(solver.objective_value)
    return out


_OBJECTIVE = "\0objective"  # the repaired hint's objective (no variable has this name)


def _variants(
    cm: ChainModel,
    plan: Plan | None,
    found: Mapping[tuple[str, int], int],
    y0: Mapping[tuple[str, int], int] | None,
    periodic: PeriodicSpec | None,
) -> tuple[Plan, ...]:
    """The plans simulated beside the model's own: its bytes and the LP's as one chunk per
    tensor, and (on the whole chain; a window's are made after tiling) those released at the
    first op and the model's plan with each host's first chunk released one op earlier."""
    merged = tuple(p for p in (merged_plan(cm, found), merged_plan(cm, y0 or {})) if p.prefetches)
    if periodic is not None:
        return merged
    out = merged + tuple(eager(p, cm.chain[0]) for p in merged)
    return out + ((early_first(plan, cm.chain),) if plan is not None else ())


def solve_chain(
    chain: list[Any],
    g: nx.DiGraph,
    costs: Mapping[Any, OpCost],
    machine: Machine,
    opts: ChainOptions | None = None,
    periodic: PeriodicSpec | None = None,
    deadline: Deadline | None = None,
) -> CpOutcome:
    """Build and solve the chain model; return the plan and what CP-SAT proved.

    Warm start: the same rows solved as an LP (GLOP), bytes rounded down, durations repaired
    by a trivial CP-SAT solve; the result is a complete feasible hint for the real solve.
    """
    opts = opts or ChainOptions()
    deadline = deadline or Deadline(30.0)
    cm = ChainModel(chain, g, costs, machine, opts, periodic=periodic)
    if not cm.tensors:  # nothing to prefetch: no model to build
        return CpOutcome(
            Plan("optimised"), "optimal", None, None, False, cm.tick, [], {"tensors": 0}
        )
    cm.build()
    plain: list[tuple[dict[str, int], dict[tuple[str, int], int] | None]] = []
    rounds: list[tuple[dict[str, int], dict[tuple[str, int], int] | None]] = []
    for i, y_ in enumerate(_lp_warm_starts(chain, g, costs, machine, opts, periodic, deadline)):
        h_ = _repair(cm, y_, opts, deadline) if not deadline.skips("repair") else None
        if h_ is not None:
            (plain if i == 0 else rounds).append((h_, y_))
    # the plain LP's start and the best-repaired support round; the better one searched first
    starts = plain + sorted(rounds, key=lambda st: st[0][_OBJECTIVE])[:1]
    starts.sort(key=lambda st: st[0][_OBJECTIVE])
    if not starts:
        zero: dict[str, int] = {v.name: 0 for v in cm.variables}
        for k, n in enumerate(chain):
            zero[cm.r[k].name] = ceil_div(costs[n].duration_s(0.0), cm.tick) + 1
        hint = None
        runs = [(cm.model, zero, opts.work_limit)]
    else:
        # Two warm starts (plain LP, and the LP that charges latencies on a support): the
        # search from the better-repaired one gets 60 % of the work, the other 40 %; the
        # plans of both are simulated (each alone loses on some rows: docs/optimizer.md §2)
        hint = starts[0][0]
        shares = (1.0,) if len(starts) == 1 else (0.6, 0.4)
        runs = [
            (cm.model if i == 0 else cm.model.clone(), h, opts.work_limit * share)
            for i, ((h, _), share) in enumerate(zip(starts, shares, strict=False))
        ]
    results: list[tuple[Any, str, bool, dict[str, int] | None, Any]] = []
    for i, (model, h, work) in enumerate(runs):
        for v in cm.variables:
            model.add_hint(model.get_int_var_from_proto_index(v.index), h[v.name])
        solver, name, ok = run_model(model, deadline, work, opts.seed, opts.relative_gap, "chain")
        results.append((solver, name, ok, h if starts else None, starts[i][1] if starts else None))
        if deadline.expired():
            break
    # the model's best objective leads; the other search's plans are simulated beside it
    # (the model is conservative, so its objective does not always pick the faster plan)
    results.sort(key=lambda r: (not r[2], r[0].objective_value if r[2] else 0.0))
    solver, name, ok, hint, y0 = results[0]
    stats: dict[str, Any] = {
        "tensors": len(cm.tensors),
        "y_vars": len(cm.y),
        "unit_bytes": cm.unit,
        "wall_s": sum(r[0].wall_time for r in results),
        "warm_start": hint is not None,
        "searches": len(results),
    }

    def plans_of(r: tuple[Any, str, bool, dict[str, int] | None, Any]) -> tuple[Plan, ...]:
        s_, _, ok_, h_, y_ = r
        if ok_:
            val: Callable[[Any], int] = s_.value
        elif h_ is not None:
            val = lambda v: h_[v.name]  # noqa: E731
        else:
            return _variants(cm, None, {}, y_, periodic)
        p_ = cm.extract(val)
        return (p_, *_variants(cm, p_, {key: val(v) for key, v in cm.y.items()}, y_, periodic))

    others = tuple(p for r in results[1:] for p in plans_of(r))
    if ok:
        value: Callable[[Any], int] = solver.value
    elif hint is not None:  # the search found nothing better than its hint in time
        value, name = (lambda v: hint[v.name]), "feasible"
        stats["from"] = "warm start"
    else:
        return CpOutcome(
            Plan("optimised"),
            name,
            None,
            None,
            False,
            cm.tick,
            cm.families,
            stats,
            _variants(cm, None, {}, y0, periodic) + others,
        )
    plan = cm.extract(value)
    found = {key: value(v) for key, v in cm.y.items()}
    alternatives = _variants(cm, plan, found, y0, periodic) + others
    if not ok:
        return CpOutcome(plan, name, None, None, False, cm.tick, cm.families, stats, alternatives)
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
        alternatives,
    )
