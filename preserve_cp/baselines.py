"""Baseline plans: vanilla (no prefetch), greedy (the PRESERVE paper's pass as described),
streaming (the best simple rule) and fused (GEMM+AllReduce kernels, no prefetch).

Greedy, per PAPER.md: for each collective, walk the graph breadth-first from it up to the
next collective, collect the prefetchable tensors of the ops met (MatMul weights, attention
KV-cache) in that order, and add whole-tensor prefetches anchored at the collective's start
while the running byte total stays within ``budget_fraction`` x usable L2. The walk stops
at the first tensor that does not fit. Each tensor is prefetched at most once.

Streaming: every prefetchable tensor, in the order its consumers run, gets one chunk of its
first ``min(size, alpha x usable L2)`` bytes, all released at the start of the step; the
prefetch stream's order and the simulator's L2 reservation pace them. :func:`best_streaming`
keeps the best of :data:`STREAMING_FRACTIONS`: the bar the optimiser must clear to show its
own value (issue 11).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Mapping
from typing import Any

import networkx as nx

from .costs import OpCost, collective_parts
from .errors import SolverError, input_error
from .graph import COLLECTIVE_KINDS
from .hardware import Hardware
from .machine import Machine
from .plan import Plan, Prefetch, Schedule
from .simulate import simulate, verify


def vanilla_plan() -> Plan:
    """The plan without prefetches.

    >>> vanilla_plan().prefetches
    ()
    """
    return Plan("vanilla")


def greedy_plan(g: nx.DiGraph, usable_l2_bytes: float, budget_fraction: float = 1.0) -> Plan:
    """The paper's greedy pass (see the module docstring).

    >>> from preserve_cp.graph import build_graph
    >>> from preserve_cp.workload import Workload
    >>> g = build_graph("llama3-70b", Workload("decode", 4, 16384, 8, "int8", "int8", "int8"))
    >>> p = greedy_plan(g, 150e6)
    >>> for x in p.prefetches[3:7]:
    ...     print(x.tensor, "at", x.anchor)
    L0.w_gate_up at L0.attn_allreduce
    L0.w_down at L0.attn_allreduce
    L1.w_qkv at L0.mlp_allreduce
    L1.kv_cache at L0.mlp_allreduce
    """
    if not 0 < budget_fraction <= 1:
        raise input_error("greedy", "budget_fraction", "a number in (0, 1]", budget_fraction)
    budget = usable_l2_bytes * budget_fraction
    taken: set[str] = set()
    out: list[Prefetch] = []
    topo = list(nx.topological_sort(g))
    for c in topo:
        if g.nodes[c].get("kind") not in COLLECTIVE_KINDS:
            continue
        total = 0.0
        for op in _bfs_to_next_collective(g, c):
            a = g.nodes[op]
            stop = False
            for t in a.get("prefetchable", []):
                if t in taken:
                    continue
                b = float(a["reads"][t])
                if b <= 0:
                    continue
                if total + b > budget:
                    stop = True
                    break
                taken.add(t)
                total += b
                out.append(Prefetch(tensor=t, bytes=b, consumer=op, anchor=c))
            if stop:
                break
    return Plan("greedy", tuple(out))


def _bfs_to_next_collective(g: nx.DiGraph, start: Any) -> list[Any]:
    seen = {start}
    queue = deque(g.successors(start))
    order: list[Any] = []
    while queue:
        n = queue.popleft()
        if n in seen:
            continue
        seen.add(n)
        if g.nodes[n].get("kind") in COLLECTIVE_KINDS:
            continue
        order.append(n)
        queue.extend(s for s in g.successors(n) if s not in seen)
    return order


#: fill fractions (the share of usable L2 one chunk may take) :func:`best_streaming` tries:
#: halving steps from the whole L2 down to 1/16, plus 3/4. On the 220 rows of
#: bench/bench_scale.py (its workloads at the shipped and at 5 % usable L2), with a running op
#: leaving all or none of the spare HBM to prefetches, the best of these six was on average
#: within 0.15 % (at worst 4 %) of the best of 20 fractions from 1/64 to 1. The small ones
#: matter where prefetches move only during collectives, a small share of a large L2 per
#: window: (1/8, 1/4, 3/8, 1/2, 3/4, 1) was up to 9 % off there.
STREAMING_FRACTIONS = (0.0625, 0.125, 0.25, 0.5, 0.75, 1.0)
#: the anchor rule :func:`best_streaming` uses (see :func:`streaming_plan`)
STREAMING_ANCHOR = "start"
STREAMING_ANCHORS = ("start", "previous")


def streaming_plan(
    g: nx.DiGraph, usable_l2_bytes: float, alpha: float, *, anchor: str = STREAMING_ANCHOR
) -> Plan:
    """Eager partial-tensor streaming with fill fraction ``alpha``.

    Walk the ops in topological order; each prefetchable tensor is taken at its first reader
    (its *consumer*) and gets one chunk of its first ``min(size, alpha x usable L2)`` bytes,
    in consumer order on the prefetch stream. The first consumer's chunks are anchored at
    the first op of the graph that is its ancestor (released at t = 0 if it has none).
    The other consumers' chunks are anchored

    * ``anchor="start"``: there too. Only the stream order and the L2 room pace the stream
      (an in-order L2 ring buffer, as far ahead as it holds);
    * ``anchor="previous"``: at the previous consumer (released when it starts; the rule as
      the audit of issue 11 stated it). Never better than ``"start"`` on the bench rows.

    The simulator reserves a chunk's bytes at its start, waits for room and frees them
    when the tensor's last reader ends, so the rule paces itself. It cannot deadlock: a
    chunk is also clipped to the usable L2 not held by earlier chunks that its consumer or a
    later op still reads (a consumer of several tensors, a tensor of several readers; never
    binding on the shipped models), so the room it waits for is freed by ops that need only
    earlier chunks, as is its anchor. A tensor that finds no room gets no chunk.

    >>> g = nx.DiGraph([("a", "b"), ("b", "c"), ("c", "d")])
    >>> nx.set_node_attributes(g, {"a": {"reads": {}},
    ...     "b": {"reads": {"w1": 6}, "prefetchable": ["w1"]}, "c": {"reads": {}},
    ...     "d": {"reads": {"w2": 2, "x": 1}, "prefetchable": ["w2"]}})
    >>> for p in streaming_plan(g, 8.0, 0.5).prefetches:
    ...     print(p.tensor, p.bytes, p.consumer, "at", p.anchor)
    w1 4.0 b at a
    w2 2.0 d at a
    >>> [p.anchor for p in streaming_plan(g, 8.0, 0.5, anchor="previous").prefetches]
    ['a', 'b']
    """
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha <= 1:
        raise input_error("streaming", "alpha", "a number in (0, 1]", alpha)
    if anchor not in STREAMING_ANCHORS:
        raise input_error("streaming", "anchor", " or ".join(map(repr, STREAMING_ANCHORS)), anchor)
    cap = alpha * usable_l2_bytes
    if not cap > 0:
        return Plan("streaming")
    topo = list(nx.topological_sort(g))
    size: dict[str, float] = {}  # tensor -> bytes, as the first op listing it reads it
    last: dict[str, int] = {}  # tensor -> topological position of its last reader
    for i, n in enumerate(topo):
        a = g.nodes[n]
        for t in a.get("prefetchable") or ():
            size.setdefault(t, float(a["reads"][t]))
        for t in a.get("reads") or {}:
            last[t] = i
    out: list[Prefetch] = []
    taken: set[str] = set()
    held: list[tuple[int, float]] = []  # (last reader, bytes) of the chunks placed so far
    room = usable_l2_bytes  # L2 not held by a chunk that this op or a later one still reads
    first: Any = None  # the first consumer's anchor
    prev: Any = None  # the previous consumer
    for i, n in enumerate(topo):
        reads = g.nodes[n].get("reads") or {}
        tensors = [t for t in reads if size.get(t, 0.0) > 0 and t not in taken]
        if not tensors:
            continue
        taken.update(tensors)
        while held and held[0][0] < i:
            room += heapq.heappop(held)[1]
        if not out:
            up = nx.ancestors(g, n)
            first = next((m for m in topo if m in up), None)
        at = prev if anchor == "previous" and prev is not None else first
        for t in tensors:
            b = min(size[t], cap, room)
            if b > 1e-9 * usable_l2_bytes:
                out.append(Prefetch(t, b, n, at))
                room -= b
                heapq.heappush(held, (last[t], b))
                prev = n
    return Plan("streaming", tuple(out))


def best_streaming(
    g: nx.DiGraph,
    costs: Mapping[Any, OpCost],
    machine: Machine,
    prio: Mapping[Any, tuple[float, int]] | None = None,
    *,
    fractions: tuple[float, ...] = STREAMING_FRACTIONS,
    anchor: str = STREAMING_ANCHOR,
) -> tuple[Plan, Schedule] | None:
    """The streaming plan of the fraction with the smallest simulated makespan, and its schedule.

    Each fraction's :func:`streaming_plan` is simulated; one whose schedule fails
    :func:`~preserve_cp.simulate.verify` or drops a chunk is not kept; ties go to the smaller
    fraction. None when the graph has no prefetchable tensor, the machine has no L2, or no
    fraction gives a clean schedule.

    Unit-rate machine (as in :func:`~preserve_cp.simulate.simulate`): ``a`` runs 1 s without
    HBM traffic, then ``b`` reads 4 B of ``w`` (4 s from HBM); L2 holds 8 B.

    >>> from preserve_cp.costs import OpCost
    >>> from preserve_cp.simulate import Machine
    >>> g = nx.DiGraph([("a", "b")])
    >>> nx.set_node_attributes(g, {"a": {"resource": "m", "reads": {}},
    ...                            "b": {"resource": "m", "reads": {"w": 4},
    ...                                  "prefetchable": ["w"]}})
    >>> c = {"a": OpCost("a", "m", 1.0, 0.0, 0.0, 0.0, 1.0, 8.0, True),
    ...      "b": OpCost("b", "m", 0.0, 0.0, 4.0, 4.0, 1.0, 8.0, False)}
    >>> m = Machine(hbm_bytes_per_s=1.0, prefetch_bytes_per_s=1.0, l2_capacity_bytes=8)
    >>> plan, s = best_streaming(g, c, m)
    >>> plan.name, [(p.tensor, p.bytes, p.anchor) for p in plan.prefetches], s.makespan_s
    ('streaming', [('w', 1.0, 'a')], 4.0)

    The 1 B chunk (fraction 1/8; 1/16 gives 0.5 B and 4.5 s) moves during ``a``, and ``b``
    reads the other 3 B from HBM in 3 s. The whole tensor (fraction 1/2) would make ``b``
    wait until t = 4 and read it from L2 in 0.5 s: 4.5 s.
    """
    cap = machine.l2_capacity_bytes
    if not cap > 0 or not any(a.get("prefetchable") for _, a in g.nodes(data=True)):
        return None
    best: tuple[float, Plan, Schedule] | None = None
    for alpha in sorted(fractions):
        plan = streaming_plan(g, cap, alpha, anchor=anchor)
        if not plan.prefetches:
            continue
        try:
            s = simulate(g, costs, plan, machine, prio)
        except SolverError:
            continue
        if s.dropped or verify(g, s, machine):
            continue
        if best is None or s.makespan_s < best[0]:
            best = (s.makespan_s, plan, s)
    return None if best is None else (best[1], best[2])


#: tiles a fused GEMM+AllReduce kernel pipelines over (pipeline fill/drain = 1/TILES)
FUSED_TILES = 8


def fused_graph(
    g: nx.DiGraph, costs: Mapping[Any, OpCost], hw: Hardware, tiles: int = FUSED_TILES
) -> tuple[nx.DiGraph, dict[Any, OpCost]]:
    """The graph with each allreduce fused into the GEMM that produces its input.

    Model (after fused GEMM+collective kernels such as FLUX, arXiv 2406.06858, and T3,
    arXiv 2401.16677): the GEMM is cut into ``tiles`` tiles and each tile's partial result
    is reduced while the next tile computes, so the transfer part of the allreduce overlaps
    the GEMM except for one tile of pipeline fill/drain; its latency part (α and hops) is
    not hidden::

        t_fused = latency + max(t_gemm, t_transfer) + min(t_gemm, t_transfer) / tiles

    Only the two adjacent ops overlap (the PRESERVE paper's point: fusion cannot reach the
    ops several steps later). The fused op runs on the compute stream with the GEMM's HBM
    traffic.
    """
    h = g.copy()
    new_costs = dict(costs)
    n_dev = int(g.graph.get("tp", hw.devices_per_node))
    for ar in [n for n, a in g.nodes(data=True) if a.get("kind") == "allreduce"]:
        gemms = [p for p in h.predecessors(ar) if h.nodes[p].get("kind") == "gemm"]
        if not gemms:
            continue
        gm = (
            gemms[-1] if len(gemms) == 1 else max(gemms, key=lambda p: costs[p].duration_s(0.0))
        )  # the later, larger GEMM
        others = [p for p in h.predecessors(ar) if p != gm]
        if any(nx.has_path(h, gm, p) for p in others):
            continue  # another input depends on the GEMM: fusing them would make a cycle
        msg = float(sum((g.nodes[ar].get("reads") or {}).values()))
        lat, xfer = collective_parts("allreduce", msg, n_dev, hw)
        t_g = costs[gm].duration_s(0.0)
        t = lat + max(t_g, xfer) + min(t_g, xfer) / tiles
        a = dict(g.nodes[gm])
        a.update(kind="gemm_allreduce", duration=t, prefetchable=[])
        for s in list(h.successors(ar)):
            h.add_edge(gm, s)
        for p in others:
            if not nx.has_path(h, p, gm):
                h.add_edge(p, gm)  # keep the allreduce's other inputs before the fused op
        h.remove_node(ar)
        nx.set_node_attributes(h, {gm: a})
        c = costs[gm]
        new_costs[gm] = OpCost(gm, c.resource, t, 0.0, c.hbm_bytes, 0.0, c.hbm_bw, c.l2_bw, True)
        del new_costs[ar]
    return h, new_costs
