"""Lower bounds on the makespan under the machine model of simulate.py.

* ``critical_path_bound``: longest path with every op at its best-case duration.
* ``resource_load_bound``: per stream, min head + sum of best-case durations + min tail.
* ``chain_lp_bound``: for chains, the fluid relaxation solved as an LP (GLOP). Window k is
  op k's run and the stall after it (window -1: the stall before the first op). With
  ``y[t, k]`` bytes of tensor t moved in window k (per window for the ``near_ops`` windows
  before t's first reader, pooled before that), ``x[t]`` bytes of t found in L2 (at most its
  *useful* bytes ``u[t]``), ``d[k]`` op k's time, ``ℓ`` the time chunk latencies take::

      d[k] >= roofline pieces of k's L2 bytes                  (as in the cost model)
      bytes in k's run <= min(P (r - ℓr), share (B r - HBM bytes of k))
      bytes in k's stall <= min(P, B) (s - ℓs)
      ℓr[k] + ℓs[k] + c[k] >= λ Σ_t y[t, k] / u[t],  0 <= c[k] <= λ
      sum_{k' <= k} z[k'] - sum_{t: first(t) < k} x[t] <= usable L2
      minimise sum d[k]

  The latency row: the chunks moving bytes in one window run one after another, so all
  but the first wait their latency inside the window, after its first byte (in the run
  only if the run leaves a prefetch bandwidth); only the first (``c[k]``) may have waited
  before. A chunk carries at most ``u[t]`` useful bytes, so ``Σ y/u`` never exceeds the
  number of chunks. ``u[t]``: with one reader that prefetches only t, the fewest bytes at
  which that reader is fastest (more bytes only take bandwidth and L2), and at most the
  usable L2 (a chunk reserves all its bytes when it starts). The window rows: a chunk
  moves at most ``C[k]`` in op k's run (the op's best prefetch rate over its longest run),
  so where ``C[k] < u[t]`` t's chunks in window k number ``n >= y/u`` with the bytes
  ``y - n C[k]`` beyond what they carry in the run counted in the stall's bytes.

  Every schedule the simulator can produce, with bytes beyond ``u[t]`` dropped, maps to a
  feasible point with no larger makespan (bytes assigned in reader order; L2 released at
  the first reader's end is earlier than the real release, so the L2 rows are relaxed),
  hence the optimum is a valid lower bound (docs/optimizer.md §4).
"""

from __future__ import annotations

import math
import time
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


def _role(tensor: str) -> str:
    """A tensor's role: its name without the layer (``L12.w_down`` -> ``w_down``).

    >>> _role("L12.w_down"), _role("lm_head.w")
    ('w_down', 'lm_head.w')
    """
    head, _, rest = tensor.partition(".")
    return rest if rest and head[:1] == "L" and head[1:].isdigit() else tensor


def useful_bytes(c: OpCost) -> float:
    """The fewest L2 bytes at which op ``c`` reaches its best duration: its duration is
    convex in the L2 bytes, so more than this never makes it faster (bisection on the
    decreasing side; the bound caps a tensor's useful bytes there)."""
    hi = max(0.0, c.prefetchable_bytes)
    if c.fixed or hi <= 0:
        return hi
    best = c.min_duration_s()
    tol = best * 1e-12
    if c.duration_s(0.0) <= best + tol:  # L2 bytes never help it
        return 0.0
    lo = 0.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if c.duration_s(mid) <= best + tol:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1.0:
            break
    return hi


def tensor_table(
    chain: list[Any], g: nx.DiGraph, costs: Mapping[Any, OpCost]
) -> tuple[dict[str, int], dict[str, float], dict[str, float]]:
    """Per prefetchable tensor: the chain index of its first reader, its size and its
    *useful* bytes. With one reader that prefetches only it, a tensor is useful up to the
    bytes at which that reader is fastest (a schedule moving more maps to one moving less
    that is no slower: the extra bytes only take bandwidth and L2); else its size."""
    first: dict[str, int] = {}
    readers: dict[str, set[int]] = {}
    size: dict[str, float] = {}
    for k, n in enumerate(chain):
        a = g.nodes[n]
        for t in a.get("reads", {}) or {}:
            first.setdefault(t, k)
            readers.setdefault(t, set()).add(k)
        for t in a.get("prefetchable", []):
            b = float(a["reads"][t])
            if b > 0 and t not in size:
                size[t] = b
    first = {t: first[t] for t in size}
    useful: dict[str, float] = {}
    for t, b in size.items():
        node = chain[first[t]]
        names = [u for u in g.nodes[node].get("prefetchable", []) if u in size]
        one = readers[t] == {first[t]} and names == [t]
        useful[t] = max(min(b, useful_bytes(costs[node]) if one else b), 0.0)
    return first, size, useful


def chain_lp_bound(
    chain: list[Any],
    g: nx.DiGraph,
    costs: Mapping[Any, OpCost],
    machine: Machine,
    *,
    hbm_contention: bool = True,
    time_limit_s: float | None = None,
    near_ops: int = 24,
    chunk_cap: Mapping[str, float] | None = None,
    window_rows: bool = True,
) -> float | None:
    """The fluid LP bound for a chain (see the module docstring); None if GLOP fails or
    runs out of time (the LP's value is a bound only at its optimum).

    ``near_ops``: tensors' bytes are tracked per window for the ``near_ops`` windows before
    their first reader (and pooled before that); any value gives a valid bound.

    ``chunk_cap``: for these tensors, the most useful bytes one chunk is counted to carry
    (instead of the useful bytes of this graph), and ``x`` capped only by the size: the LP's
    matrix is then the same for every graph that differs only in these tensors' sizes and
    their readers' costs (which enter only right-hand sides), so its value is convex in them
    and the LP of the mean graph bounds the mean of the graphs' bounds (router.py).

    ``window_rows``: False leaves out the window rows (for comparison; the bound is valid
    either way). They are left out with ``chunk_cap`` too: their coefficients are costs."""
    stop_at = time.perf_counter() + (time_limit_s if time_limit_s is not None else math.inf)

    def late() -> bool:  # building the LP is Python work no solver limit stops
        return time.perf_counter() > stop_at

    solver = pywraplp.Solver.CreateSolver("GLOP")
    if solver is None:
        return None
    us, mb = 1e6, 1e-6  # LP in microseconds and megabytes for conditioning
    first, size, useful = tensor_table(chain, g, costs)
    if chunk_cap:
        useful = {t: size[t] if t in chunk_cap else u for t, u in useful.items()}
    # a chunk reserves all its bytes of L2 when it starts, so it carries at most the usable L2
    per_chunk = {
        t: min((chunk_cap or {}).get(t, u), machine.l2_capacity_bytes) for t, u in useful.items()
    }
    inf = solver.infinity()
    P = machine.prefetch_bytes_per_s * mb / us
    B = machine.hbm_bytes_per_s * mb / us
    contention = hbm_contention and math.isfinite(B)
    lat = machine.chunk_latency_s * us
    window_rows = window_rows and not chunk_cap and lat > 0  # rows on the latency row

    def run_capacity(c: OpCost, share: float) -> float:
        """The most op c's run lets the prefetch move, in MB: its best rate over its
        longest run (an op's time is convex in its L2 bytes, so longest at an end)."""
        longest = max(c.duration_s(0.0), c.duration_s(max(0.0, c.prefetchable_bytes))) * us
        rate = P
        if contention:
            free = B - c.hbm_bytes * mb / longest if c.fixed and longest > 0 else B
            rate = min(rate, share * max(0.0, free))
        return rate * longest

    K = len(chain)

    # -- bytes per (tensor, window) near the first reader, pooled before that ----------
    # window k (k = -1: before the first op) is op k's run and the stall after it
    y: dict[tuple[str, int], Any] = {}
    far: dict[str, Any] = {}
    by_window: dict[int, list[tuple[str, Any]]] = {}
    for i, t in enumerate(size):
        if i % 64 == 0 and late():
            return None
        lo = max(-1, first[t] - near_ops)
        for k in range(lo, first[t]):
            v = solver.NumVar(0.0, inf, f"y{i}_{k}")
            y[t, k] = v
            by_window.setdefault(k, []).append((t, v))
        if lo > -1:
            far[t] = solver.NumVar(0.0, inf, f"far{i}")
    x = {}
    for i, t in enumerate(size):
        v = solver.NumVar(0.0, useful[t] * mb, f"x{i}")
        near = range(max(-1, first[t] - near_ops), first[t])
        solver.Add(v == sum(y[t, k] for k in near) + far.get(t, 0.0))
        x[t] = v
    # pooled bytes per role (a layer's tensor without its layer: "w_down", "kv_cache"), so a
    # pooled chunk is charged against the largest tensor of its own role, not of the graph
    roles: dict[str, list[str]] = {}
    for t in far:
        roles.setdefault(_role(t), []).append(t)
    pool: dict[tuple[str, int], Any] = {}
    u_role: dict[str, float] = {}
    for role, ts in roles.items():
        u_role[role] = max(per_chunk[t] for t in ts) * mb
        for k in range(-1, max(first[t] - near_ops - 1 for t in ts) + 1):
            pool[role, k] = solver.NumVar(0.0, inf, f"F{len(pool)}")
    pooled_at: dict[int, list[tuple[str, Any]]] = {}
    for (role, k), v in pool.items():
        pooled_at.setdefault(k, []).append((role, v))

    def chunks(k: int, zs: Any, run_cap: float) -> Any:
        """Chunks that move bytes in window k, at least: a chunk carries at most its
        tensor's useful bytes, and in op k's run at most ``run_cap``, so what a tensor's
        chunks cannot carry in the run was moved in the stall (``zs`` bytes in all; the
        window rows, where ``run_cap`` is below the useful bytes)."""
        items = [(v, per_chunk[t] * mb) for t, v in by_window.get(k, [])]
        items += [(v, u_role[r]) for r, v in pooled_at.get(k, [])]
        terms: list[Any] = []
        beyond: list[Any] = []
        for v, u in items:
            if u <= 0:
                continue
            if not (window_rows and 0 < run_cap < u):
                terms.append(v * (1.0 / u))
                continue
            n = solver.NumVar(0.0, inf, "")
            e = solver.NumVar(0.0, inf, "")
            solver.Add(n >= v * (1.0 / u))
            solver.Add(e >= v - n * run_cap)
            terms.append(n)
            beyond.append(e)
        if beyond:
            solver.Add(sum(beyond) <= zs)
        return sum(terms) if terms else 0.0

    def window(k: int, run_rate_free: bool, zs: Any, run_cap: float) -> tuple[Any, Any]:
        """Latency variables of window k: (in its run, in its stall), tied to its chunks.

        The chunks that move bytes in a window run one after another: all but the first
        start after the first one's first byte in it, so their latencies lie inside the
        window where bytes could move (in the run only if it leaves the prefetch
        bandwidth, else in the stall). The first may have waited its latency earlier."""
        lr = solver.NumVar(0.0, inf, f"lr{k}") if run_rate_free else 0.0
        ls = solver.NumVar(0.0, inf, f"ls{k}")
        if lat > 0:
            credit = solver.NumVar(0.0, lat, f"cr{k}")
            solver.Add(lr + ls + credit >= lat * chunks(k, zs, run_cap))
        return lr, ls

    def stall(k: int) -> tuple[Any, Any]:
        """A stall (no op runs) and the bytes moved in it (their rows: stall_rows)."""
        return solver.NumVar(0.0, inf, f"s{k}"), solver.NumVar(0.0, inf, f"zs{k}")

    def bytes_in(k: int) -> Any:
        return sum(v for _, v in by_window.get(k, [])) + sum(v for _, v in pooled_at.get(k, []))

    def stall_rows(s: Any, z: Any, ls: Any) -> None:
        """At most min(P, B) per us of the stall that no chunk latency takes."""
        solver.Add(ls <= s)
        if math.isfinite(P):
            solver.Add(z <= P * (s - ls))
        if contention:
            solver.Add(z <= B * (s - ls))

    s0, z0 = stall(-1)
    _, ls0 = window(-1, False, z0, 0.0)
    stall_rows(s0, z0, ls0)
    solver.Add(bytes_in(-1) == z0)
    times: list[Any] = [s0]
    z_run: list[Any] = []
    z_stall: list[Any] = []
    for k, n in enumerate(chain):
        if k % 256 == 0 and late():
            return None
        c = costs[n]
        names = [t for t in g.nodes[n].get("prefetchable", []) if t in x]
        zr = solver.NumVar(0.0, inf, f"zr{k}")
        share = 1.0 if c.fixed else machine.op_share
        if k < K - 1:
            s, zs = stall(k)
        else:
            s, zs = 0.0, 0.0  # the makespan ends with the last op
        run_free = share > 0 and contention or not contention
        lr, ls = window(k, run_free, zs, run_capacity(c, share) if window_rows else 0.0)
        if k < K - 1:
            stall_rows(s, zs, ls)
        else:
            solver.Add(ls == 0)
        if c.fixed or not names:
            dur = c.duration_s(0.0) * us
            r: Any = dur
            if run_free:
                solver.Add(lr <= dur)
            if math.isfinite(P):
                solver.Add(zr <= P * (dur - lr))
            if contention and dur > 0:  # the rate it leaves, over the time no latency takes
                solver.Add(zr <= share * max(0.0, B - c.hbm_bytes * mb / dur) * (dur - lr))
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
            if run_free:
                solver.Add(lr <= r)
            if math.isfinite(P):
                solver.Add(zr <= P * (r - lr))
            if contention:
                # the op's rate is its HBM bytes over its run: B r - (H - l) is what it leaves
                solver.Add(zr <= share * (B * r - (c.hbm_bytes * mb - lk)))
        solver.Add(bytes_in(k) == zr + zs)
        times += [r, s]
        z_run.append(zr)
        z_stall.append(zs)
    # pooled bytes of a role are moved before the near windows of its tensors start: by the
    # end of window k, at least the far bytes of the role's tensors whose near windows begin
    # after k (checked where that amount grows), and in all exactly those bytes
    for role, ts in roles.items():
        last = max(first[t] - near_ops - 1 for t in ts)
        due_at: dict[int, list[str]] = {}
        for t in ts:
            due_at.setdefault(first[t] - near_ops - 1, []).append(t)
        due: Any = 0.0
        done: Any = 0.0
        pending: list[Any] = []
        for k in range(-1, last + 1):
            pending.append(pool[role, k])
            if k in due_at:
                d = solver.NumVar(0.0, inf, "")
                solver.Add(d == done + sum(pending))
                done, pending = d, []
                e = solver.NumVar(0.0, inf, "")
                solver.Add(e == due + sum(far[t] for t in due_at[k]))
                due = e
                solver.Add(due <= done)
        solver.Add(due == done + sum(pending))
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
    for k in range(len(chain)):
        mine = by_first.get(k, [])
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
    if late():
        return None
    if math.isfinite(stop_at):
        solver.SetTimeLimit(max(1, int((stop_at - time.perf_counter()) * 1000)))
    status = solver.Solve()
    if status == pywraplp.Solver.ABNORMAL and not late():
        # GLOP's presolve gives up on some instances that solve without it (chain.py)
        solver.SetSolverSpecificParametersAsString("use_preprocessing: false")
        if math.isfinite(stop_at):
            solver.SetTimeLimit(max(1, int((stop_at - time.perf_counter()) * 1000)))
        status = solver.Solve()
    if status != pywraplp.Solver.OPTIMAL:
        return None
    # GLOP's primal objective carries ~1e-9 relative noise; shave it so the bound stays valid
    return solver.Objective().Value() / us * (1 - 1e-7)
