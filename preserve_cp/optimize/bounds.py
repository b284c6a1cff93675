"""Lower bounds on the makespan under the machine model of simulate.py.

* ``critical_path_bound``: longest path with every op at its best-case duration.
* ``resource_load_bound``: per stream, min head + sum of best-case durations + min tail.
* ``chain_lp_bound``: for chain graphs, the fluid relaxation solved as an LP (GLOP). With
  ``z[k]`` bytes moved during op k, ``x[t]`` bytes of tensor t found in L2, ``d[k]`` op k's
  time including any stall before the next op::

      d[k] >= roofline pieces of k's L2 bytes          (as in the cost model)
      z[k] <= min(P d[k], B d[k] - HBM bytes of k)      (prefetch takes what HBM leaves)
      sum_{t: first(t) <= j} x[t] <= sum_{k < j} z[k]   (moved before the first reader starts)
      sum_{k' <= k} z[k'] - sum_{t: first(t) < k} x[t] <= usable L2
      minimise sum d[k]

  Every schedule the simulator can produce maps to a feasible point with the same makespan
  (bytes assigned in reader order; L2 released at the first reader's end is earlier than
  the real release, so the L2 rows are relaxed), hence the optimum is a valid lower bound.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import networkx as nx
from ortools.linear_solver import pywraplp

from ..costs import OpCost
from ..simulate import Machine


def critical_path_bound(g: nx.DiGraph, costs: Mapping[Any, OpCost]) -> float:
    """Longest path with best-case op durations.

    >>> from preserve_cp.costs import OpCost
    >>> g = nx.DiGraph([("a", "b"), ("a", "c")])
    >>> c = {n: OpCost(n, "r", d, 0.0, 0.0, 0.0, 1.0, 1.0, True)
    ...      for n, d in {"a": 1.0, "b": 2.0, "c": 5.0}.items()}
    >>> critical_path_bound(g, c)
    6.0
    """
    best: dict[Any, float] = {}
    for n in nx.topological_sort(g):
        start = max((best[p] for p in g.predecessors(n)), default=0.0)
        best[n] = start + costs[n].min_duration_s()
    return max(best.values(), default=0.0)


def resource_load_bound(g: nx.DiGraph, costs: Mapping[Any, OpCost]) -> float:
    """max over streams of (min head + total best-case work + min tail)."""
    topo = list(nx.topological_sort(g))
    head: dict[Any, float] = {}
    for n in topo:
        head[n] = max((head[p] + costs[p].min_duration_s() for p in g.predecessors(n)), default=0.0)
    tail: dict[Any, float] = {}
    for n in reversed(topo):
        tail[n] = max((tail[s] + costs[s].min_duration_s() for s in g.successors(n)), default=0.0)
    by_res: dict[str, list[Any]] = {}
    for n in topo:
        by_res.setdefault(costs[n].resource, []).append(n)
    best = 0.0
    for ops in by_res.values():
        work = sum(costs[n].min_duration_s() for n in ops)
        best = max(best, min(head[n] for n in ops) + work + min(tail[n] for n in ops))
    return best


def chain_lp_bound(
    chain: list[Any],
    g: nx.DiGraph,
    costs: Mapping[Any, OpCost],
    machine: Machine,
    *,
    hbm_contention: bool = True,
) -> float | None:
    """The fluid LP bound for a chain (see the module docstring); None if GLOP fails."""
    solver = pywraplp.Solver.CreateSolver("GLOP")
    if solver is None:
        return None
    us, mb = 1e6, 1e-6  # LP in microseconds and megabytes for conditioning
    first: dict[str, int] = {}
    size: dict[str, float] = {}
    for k, n in enumerate(chain):
        a = g.nodes[n]
        for t in a.get("reads", {}) or {}:
            first.setdefault(t, k)
        for t in a.get("prefetchable", []):
            b = float(a["reads"][t])
            if b > 0 and t not in size:
                size[t] = b
    first = {t: first[t] for t in size}
    inf = solver.infinity()
    x = {t: solver.NumVar(0.0, size[t] * mb, f"x{i}") for i, t in enumerate(size)}
    d, z = [], []
    P = machine.prefetch_bytes_per_s * mb / us
    B = machine.hbm_bytes_per_s * mb / us
    for k, n in enumerate(chain):
        c = costs[n]
        dk = solver.NumVar(0.0, inf, f"d{k}")
        zk = solver.NumVar(0.0, inf, f"z{k}")
        names = [t for t in g.nodes[n].get("prefetchable", []) if t in x]
        lk = sum(x[t] for t in names) if names and not c.fixed else 0.0
        if c.fixed or not names:
            solver.Add(dk >= c.duration_s(0.0) * us)
            hbm = c.hbm_bytes * mb
        else:
            solver.Add(dk >= (c.compute_s + c.overhead_s) * us)
            solver.Add(dk >= (c.hbm_bytes * mb - lk) / (c.hbm_bw * mb / us) + c.overhead_s * us)
            solver.Add(dk >= lk / (c.l2_bw * mb / us) + c.overhead_s * us)
            hbm = c.hbm_bytes * mb - lk
        if float("inf") != P:
            solver.Add(zk <= P * dk)
        if hbm_contention and float("inf") != B:
            solver.Add(zk <= B * dk - hbm)
        d.append(dk)
        z.append(zk)
    by_first: dict[int, list[str]] = {}
    for t, f in first.items():
        by_first.setdefault(f, []).append(t)
    # running sums as variables keep every row short (GLOP is much faster that way)
    cap = machine.l2_capacity_bytes * mb
    need_prev: Any = 0.0  # bytes needed in L2 by the consumers before op k
    moved_prev: Any = 0.0
    for k in range(len(chain)):
        consumed = need_prev  # what the ops before k have consumed (and L2 may have freed)
        if k in by_first:
            need = solver.NumVar(0.0, inf, f"need{k}")
            solver.Add(need == need_prev + sum(x[t] for t in by_first[k]))
            solver.Add(need <= moved_prev)  # bytes moved during the ops before k
            need_prev = need
        moved = solver.NumVar(0.0, inf, f"moved{k}")
        solver.Add(moved == moved_prev + z[k])
        solver.Add(moved - consumed <= cap)
        moved_prev = moved
    solver.Minimize(sum(d))
    if solver.Solve() != pywraplp.Solver.OPTIMAL:
        return None
    # GLOP's primal objective carries ~1e-9 relative noise; shave it so the bound stays valid
    return solver.Objective().Value() / us * (1 - 1e-7)
