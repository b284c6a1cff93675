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

import math
from collections.abc import Mapping
from typing import Any

import networkx as nx
from ortools.linear_solver import pywraplp

from ..costs import OpCost
from ..machine import Machine


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
    time_limit_s: float | None = None,
) -> float | None:
    """The fluid LP bound for a chain (see the module docstring); None if GLOP fails or
    runs out of time (the LP's value is a bound only at its optimum)."""
    solver = pywraplp.Solver.CreateSolver("GLOP")
    if solver is None:
        return None
    if time_limit_s is not None:
        solver.SetTimeLimit(max(1, int(time_limit_s * 1000)))
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
    P = machine.prefetch_bytes_per_s * mb / us
    B = machine.hbm_bytes_per_s * mb / us
    contention = hbm_contention and math.isfinite(B)

    lat = machine.chunk_latency_s * us
    lat_spent: dict[str, Any] = {}  # per interval: time the prefetch stream spends in latencies

    def latency(span: Any, name: str) -> Any:
        if lat <= 0:
            return 0.0
        v = solver.NumVar(0.0, inf, f"lat{name}")
        solver.Add(v <= span)
        lat_spent[name] = v
        return v

    def stall(name: str) -> tuple[Any, Any]:
        """A stall (no op runs) and the bytes moved in it: at most min(P, B) per us of it
        that no chunk latency takes."""
        s = solver.NumVar(0.0, inf, f"s{name}")
        z = solver.NumVar(0.0, inf, f"zs{name}")
        free = s - latency(s, name)
        if math.isfinite(P):
            solver.Add(z <= P * free)
        if contention:
            solver.Add(z <= B * free)
        return s, z

    s0, z0 = stall("init")  # before the first op: only a chunk the first op waits for
    times: list[Any] = [s0]
    z_run: list[Any] = []
    z_stall: list[Any] = []
    for k, n in enumerate(chain):
        c = costs[n]
        names = [t for t in g.nodes[n].get("prefetchable", []) if t in x]
        zr = solver.NumVar(0.0, inf, f"zr{k}")
        share = 1.0 if c.fixed else machine.op_share
        if c.fixed or not names:
            dur = c.duration_s(0.0) * us
            r: Any = dur
            free = dur - latency(dur, f"r{k}")
            if math.isfinite(P):
                solver.Add(zr <= P * free)
            if contention and dur > 0:  # the rate it leaves, over the time no latency takes
                solver.Add(zr <= share * max(0.0, B - c.hbm_bytes * mb / dur) * free)
        else:
            r = solver.NumVar(0.0, inf, f"r{k}")
            lk = solver.NumVar(0.0, min(c.prefetchable_bytes, c.hbm_bytes) * mb, f"l{k}")
            solver.Add(lk <= sum(x[t] for t in names))
            ov = c.overhead_s * us
            bw = c.hbm_bw * mb / us
            solver.Add(r >= c.compute_s * us + ov)
            l2 = c.l2_bw * mb / us
            if c.hbm_bytes > 0:
                hbm = (c.hbm_bytes * mb - lk) / bw + (c.hbm_latency_s * us) + ov
                # the sum law: the L2 bytes after the HBM bytes, in the same row
                solver.Add(r >= hbm + (lk / l2 if c.l2_serial else 0.0))
            solver.Add(r >= lk / l2 + ov)
            if math.isfinite(P):
                solver.Add(zr <= P * (r - latency(r, f"r{k}")))
            if contention:
                # the op's rate is its HBM bytes over its run: B r - (H - l) is what it leaves
                solver.Add(zr <= share * (B * r - (c.hbm_bytes * mb - lk)))
        if k < len(chain) - 1:
            s, zs = stall(str(k))
        else:
            s, zs = 0.0, 0.0  # the makespan ends with the last op
        times += [r, s]
        z_run.append(zr)
        z_stall.append(zs)
    by_first: dict[int, list[str]] = {}
    for t, f in first.items():
        by_first.setdefault(f, []).append(t)
    # L2 held (bytes moved minus bytes released; a tensor counts as released at its first
    # reader's end, which is never later than the simulator's last-reader release) is
    # checked where it peaks: at the end of each op's run, before that op's release, and
    # at the end of each stall. Running sums as variables keep every row short.
    cap = (machine.l2_capacity_bytes * (1 + 1e-9) + 1e-6) * mb
    moved: Any = z0  # bytes moved so far
    freed: Any = 0.0  # bytes of tensors whose first reader has ended
    solver.Add(z0 <= cap)
    # latency paid so far: each tensor moved at all took >= 1 chunk, i.e. >= x[t] / size[t]
    # of one latency, before its first reader started
    paid: Any = lat_spent.get("init", 0.0)
    owed: Any = 0.0
    for k in range(len(chain)):
        mine = by_first.get(k, [])
        if mine:  # every chunk of a tensor ends before its first reader starts
            solver.Add(freed + sum(x[t] for t in mine) <= moved)
            if lat > 0:
                o = solver.NumVar(0.0, inf, f"owed{k}")
                solver.Add(o == owed + sum(x[t] * (lat / (size[t] * mb)) for t in mine))
                owed = o
                solver.Add(owed <= paid)
        here = [lat_spent[key] for key in (f"r{k}", str(k)) if key in lat_spent]
        if here:
            p = solver.NumVar(0.0, inf, f"paid{k}")
            solver.Add(p == paid + sum(here))
            paid = p
        run_end = solver.NumVar(0.0, inf, f"m{k}")
        solver.Add(run_end == moved + z_run[k])
        solver.Add(run_end - freed <= cap)
        if mine:
            f = solver.NumVar(0.0, inf, f"f{k}")
            solver.Add(f == freed + sum(x[t] for t in mine))
            freed = f
        if k < len(chain) - 1:
            stall_end = solver.NumVar(0.0, inf, f"n{k}")
            solver.Add(stall_end == run_end + z_stall[k])
            solver.Add(stall_end - freed <= cap)
            moved = stall_end
    solver.Minimize(sum(times))
    if solver.Solve() != pywraplp.Solver.OPTIMAL:
        return None
    # GLOP's primal objective carries ~1e-9 relative noise; shave it so the bound stays valid
    return solver.Objective().Value() / us * (1 - 1e-7)
