"""Baseline plans: vanilla (no prefetch) and greedy (the PRESERVE paper's pass as described).

Greedy, per PAPER.md: for each collective, walk the graph breadth-first from it up to the
next collective, collect the prefetchable tensors of the ops met (MatMul weights, attention
KV-cache) in that order, and add whole-tensor prefetches anchored at the collective's start
while the running byte total stays within ``budget_fraction`` x usable L2. The walk stops
at the first tensor that does not fit. Each tensor is prefetched at most once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

import networkx as nx

from .costs import OpCost, collective_parts
from .errors import input_error
from .graph import COLLECTIVE_KINDS
from .hardware import Hardware
from .plan import Plan, Prefetch


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
