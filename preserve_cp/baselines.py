"""Baseline plans: vanilla (no prefetch) and greedy (the PRESERVE paper's pass as described).

Greedy, per PAPER.md: for each collective, walk the graph breadth-first from it up to the
next collective, collect the prefetchable tensors of the ops met (MatMul weights, attention
KV-cache) in that order, and add whole-tensor prefetches anchored at the collective's start
while the running byte total stays within ``budget_fraction`` x usable L2. The walk stops
at the first tensor that does not fit. Each tensor is prefetched at most once.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import networkx as nx

from .errors import input_error
from .graph import COLLECTIVE_KINDS
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
