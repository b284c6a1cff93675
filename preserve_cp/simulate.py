"""The referee: an event-driven list scheduler that executes a plan, and a verifier.

Machine model (the one every plan, bound and test in this package refers to):

* each stream runs one op at a time; an op starts when its predecessors have ended, its
  stream is free (and, when the plan fixes an order, it is the stream's next op), and every
  prefetch of a tensor it reads has finished;
* an op's duration is fixed when it starts, from the bytes of its reads found in L2
  (costs.OpCost.duration_s); it uses HBM at a constant rate (its HBM bytes / duration);
* the ``prefetch`` stream runs the plan's chunks in order; a chunk starts once released
  (its anchor op started, plus its delay) and when usable L2 has room for all its bytes;
  it first waits ``chunk_latency_s`` (the fixed cost of a transfer, machine.py), then moves
  bytes at ``min(prefetch peak, share x (HBM bandwidth - HBM rate of running ops))`` with
  ``share`` = ``op_share`` while a compute op runs, else 1: prefetching only takes the
  bandwidth the ops leave (HBM contention), and of what a running kernel leaves only the
  hardware's share;
* a chunk holds L2 from its start until every op reading its tensor has ended; the L2 it
  frees is available at that instant (a waiting chunk may start then);
* with ``Machine.eviction_bytes`` E > 0 (hardware ``l2_eviction: random``) prefetched lines
  are not protected: of a chunk's bytes, a reader finds in L2 the share exp(-V / E) that
  survived V, the HBM bytes the ops moved between the chunk's end and the reader's start
  (random replacement; the chunk still holds its L2 budget until released).

If a plan would deadlock (a chunk waits for L2 or for an anchor that waits for a later
chunk), the chunk at the head of the prefetch queue is dropped and reported.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import networkx as nx

from .costs import OpCost
from .errors import InputError, SolverError
from .graph import PREFETCH_STREAM, tensor_readers
from .machine import Machine
from .plan import ChunkEvent, Event, Plan, Schedule

__all__ = ["Machine", "priorities", "simulate", "verify"]

EPS = 1e-12


def priorities(g: nx.DiGraph, costs: Mapping[Any, OpCost]) -> dict[Any, tuple[float, int]]:
    """List-scheduling priority: longest remaining path (bottom level) first, then topo order."""
    succ = g._succ  # adjacency dicts, read only: avoids a view object per node
    topo = _topological_order(g)
    tail: dict[Any, float] = {}
    for n in reversed(topo):
        best = 0.0
        for s in succ[n]:
            v = tail[s]
            if v > best:
                best = v
        tail[n] = costs[n].duration_s(0.0) + best
    return {n: (-tail[n], i) for i, n in enumerate(topo)}


def _topological_order(g: nx.DiGraph) -> list[Any]:
    """Kahn's algorithm over the adjacency dicts (the graph is already known to be a DAG)."""
    left = {n: len(p) for n, p in g._pred.items()}
    order = [n for n, k in left.items() if k == 0]
    succ = g._succ
    i = 0
    while i < len(order):
        for s in succ[order[i]]:
            left[s] -= 1
            if left[s] == 0:
                order.append(s)
        i += 1
    return order


def simulate(
    g: nx.DiGraph,
    costs: Mapping[Any, OpCost],
    plan: Plan,
    machine: Machine,
    prio: Mapping[Any, tuple[float, int]] | None = None,
) -> Schedule:
    """Execute ``plan`` on ``g`` and return the schedule.

    Examples
    --------
    Unit-rate machine (1 B/s HBM, L2 10 B, L2 read 8 B/s). ``a`` (1 s, no HBM use) then
    ``b``, which reads 4 B of weight ``w`` (4 s from HBM). Vanilla: 1 + 4 = 5 s. Prefetching
    ``w`` at ``a``'s start moves 1 B during ``a``, then 3 B while ``b`` waits (t = 1..4);
    ``b`` then reads from L2 in 4/8 = 0.5 s: makespan 4.5 s.

    >>> from preserve_cp.costs import OpCost
    >>> from preserve_cp.plan import Prefetch
    >>> g = nx.DiGraph([("a", "b")])
    >>> nx.set_node_attributes(g, {"a": {"resource": "m", "reads": {}},
    ...                            "b": {"resource": "m", "reads": {"w": 4},
    ...                                  "prefetchable": ["w"]}})
    >>> c = {"a": OpCost("a", "m", 1.0, 0.0, 0.0, 0.0, 1.0, 8.0, True),
    ...      "b": OpCost("b", "m", 0.0, 0.0, 4.0, 4.0, 1.0, 8.0, False)}
    >>> m = Machine(hbm_bytes_per_s=1.0, prefetch_bytes_per_s=1.0, l2_capacity_bytes=10)
    >>> simulate(g, c, Plan("v"), m).makespan_s
    5.0
    >>> s = simulate(g, c, Plan("p", (Prefetch("w", 4.0, "b", "a"),)), m)
    >>> s.makespan_s, [(e.node, e.start_s, e.end_s) for e in s.events]
    (4.5, [('a', 0.0, 1.0), ('b', 4.0, 4.5)])
    >>> verify(g, s, m)
    []
    """
    return _Sim(g, costs, plan, machine, prio).run()


class _Sim:
    def __init__(
        self,
        g: nx.DiGraph,
        costs: Mapping[Any, OpCost],
        plan: Plan,
        machine: Machine,
        prio: Mapping[Any, tuple[float, int]] | None,
    ) -> None:
        self.g, self.costs, self.plan, self.m = g, costs, plan, machine
        self.prio = prio if prio is not None else priorities(g, costs)
        self.readers = tensor_readers(g)
        self.chunks = list(plan.prefetches)
        self.by_tensor: dict[str, list[int]] = {}
        for i, c in enumerate(self.chunks):
            self.by_tensor.setdefault(c.tensor, []).append(i)
        self.waits: dict[Any, set[int]] = defaultdict(set)
        for i, c in enumerate(self.chunks):
            if c.tensor not in self.readers:
                raise InputError(
                    f"plan {plan.name!r}: prefetch {i}: tensor {c.tensor!r} is read by no op"
                )
            if c.anchor is not None and c.anchor not in g:
                raise InputError(
                    f"plan {plan.name!r}: prefetch {i}: anchor {c.anchor!r} is not "
                    "an op of the graph"
                )
            if not c.bytes > 0 or not math.isfinite(c.bytes):
                raise InputError(
                    f"plan {plan.name!r}: prefetch {i}: bytes: expected > 0, found {c.bytes!r}"
                )
            for r in self.readers[c.tensor]:
                self.waits[r].add(i)
            if c.sync is not None and c.sync in g:
                self.waits[c.sync].add(i)
        if plan.prefetches and machine.l2_capacity_bytes <= 0:
            raise InputError(f"plan {plan.name!r}: prefetches need hardware with L2")

    def run(self) -> Schedule:
        g, costs, m = self.g, self.costs, self.m
        attrs: dict[Any, dict[str, Any]] = dict(g.nodes(data=True))
        succ = g._succ
        res_of = {n: a["resource"] for n, a in attrs.items()}
        n_left = {n: len(p) for n, p in g._pred.items()}
        streams: dict[str, list[Any]] = {}
        for n, r in res_of.items():
            streams.setdefault(r, []).append(n)
        order = self.plan.order or {}
        seq = {s: list(order[s]) for s in streams if s in order}
        for s, ops in seq.items():
            if sorted(map(str, ops)) != sorted(map(str, streams[s])):
                raise InputError(
                    f"plan {self.plan.name!r}: order[{s!r}]: expected every op of "
                    "the stream exactly once"
                )
        seq_pos = dict.fromkeys(seq, 0)
        ready: dict[str, list[tuple[tuple[float, int], Any]]] = {s: [] for s in streams}
        for n in g.nodes:
            if n_left[n] == 0:
                heapq.heappush(ready[res_of[n]], (self.prio[n], n))
        ready_set = {n for n in g.nodes if n_left[n] == 0}
        busy: dict[str, Any] = {}
        running: dict[Any, tuple[float, float]] = {}  # node -> (end, hbm rate)
        kernels: set[Any] = set()  # running compute ops (they leave only op_share of HBM)
        started: dict[Any, float] = {}
        ended: dict[Any, float] = {}
        events: list[Event] = []
        chunk_state = ["pending"] * len(self.chunks)
        c_start: dict[int, float] = {}
        c_end: dict[int, float] = {}
        c_release: dict[int, float] = {}
        dropped: list[int] = []
        head = 0
        cur: int | None = None
        remaining = 0.0
        latency_left = 0.0
        l2_used = 0.0
        segments: list[tuple[float, float, float, float]] = []
        t = 0.0
        n_total = g.number_of_nodes()
        readers_left = {t_: len(r) for t_, r in self.readers.items()}

        waits = self.waits
        op_bytes = 0.0  # HBM bytes the ops have moved so far (eviction)
        c_op_bytes: dict[int, float] = {}  # ... when each chunk ended

        def survives(i: int) -> float:
            if m.eviction_bytes <= 0:
                return 1.0
            return math.exp(-(op_bytes - c_op_bytes[i]) / m.eviction_bytes)

        def waits_ok(n: Any) -> bool:
            w = waits.get(n)
            return not w or all(chunk_state[i] in ("done", "dropped") for i in w)

        def try_start_ops() -> bool:
            progressed = False
            for s in streams:
                if s in busy:
                    continue
                cand = None
                if s in seq:
                    if seq_pos[s] < len(seq[s]):
                        n = seq[s][seq_pos[s]]
                        if n in ready_set and waits_ok(n):
                            cand = n
                else:
                    skipped = []
                    while ready[s]:
                        p, n = heapq.heappop(ready[s])
                        if waits_ok(n):
                            cand = n
                            break
                        skipped.append((p, n))
                    for item in skipped:
                        heapq.heappush(ready[s], item)
                if cand is None:
                    continue
                if s in seq:
                    seq_pos[s] += 1
                ready_set.discard(cand)
                cost = costs[cand]
                a = attrs[cand]
                l2b = 0.0
                w = waits.get(cand)
                if w:
                    for tname in a.get("prefetchable", ()):
                        got = sum(
                            self.chunks[i].bytes * survives(i)
                            for i in w
                            if chunk_state[i] == "done" and self.chunks[i].tensor == tname
                        )
                        l2b += min(got, float(a["reads"][tname]))
                d = cost.duration_s(l2b)
                rate = cost.hbm_bytes_with(l2b) / d if d > 0 else 0.0
                busy[s] = cand
                running[cand] = (t + d, rate)
                if not cost.fixed:
                    kernels.add(cand)
                started[cand] = t
                events.append(
                    Event(
                        cand,
                        s,
                        t,
                        t + d,
                        str(a.get("kind", "")),
                        int(a.get("layer", -1)),
                        l2b,
                        not cost.fixed,
                    )
                )
                progressed = True
            return progressed

        def release_time(i: int) -> float | None:
            c = self.chunks[i]
            if c.anchor is None:
                return c.delay_s
            if c.anchor in started:
                return started[c.anchor] + c.delay_s
            return None

        def try_start_chunk() -> bool:
            nonlocal cur, head, remaining, l2_used, latency_left
            if cur is not None or head >= len(self.chunks):
                return False
            rel = release_time(head)
            if rel is None or rel > t + EPS:
                return False
            c = self.chunks[head]
            if l2_used + c.bytes > m.l2_capacity_bytes * (1 + 1e-9) + 1e-6:
                return False
            cur, remaining, latency_left = head, c.bytes, m.chunk_latency_s
            chunk_state[head] = "running"
            c_start[head] = t
            l2_used += c.bytes
            head += 1
            return True

        while True:
            while try_start_ops() | try_start_chunk():
                pass
            main_rate = sum(r for _, r in running.values())
            if cur is None or latency_left > 0:
                pf_rate = 0.0
            elif m.contention:
                share = m.op_share if kernels else 1.0
                pf_rate = min(
                    m.prefetch_bytes_per_s, share * max(0.0, m.hbm_bytes_per_s - main_rate)
                )
            else:
                pf_rate = m.prefetch_bytes_per_s
            t_next = min((e for e, _ in running.values()), default=math.inf)
            if cur is not None and latency_left > 0:
                chunk_done_at = t + latency_left  # the end of its latency, not of the chunk
            elif cur is not None and pf_rate > 0:
                chunk_done_at = t + remaining / pf_rate
            else:
                chunk_done_at = math.inf
            chunk_finishes = chunk_done_at <= t_next and latency_left <= 0
            t_next = min(t_next, chunk_done_at)
            if cur is None and head < len(self.chunks):
                rel = release_time(head)
                if rel is not None and rel > t + EPS:
                    t_next = min(t_next, rel)
            if not math.isfinite(t_next):
                if len(ended) == n_total and cur is None and head >= len(self.chunks):
                    break
                if cur is None and head < len(self.chunks):
                    chunk_state[head] = "dropped"
                    dropped.append(head)
                    head += 1
                    continue
                if len(ended) == n_total and cur is None:
                    break
                raise SolverError(f"simulator stalled at t={t} (plan {self.plan.name!r})")
            if t_next > t:
                segments.append((t, t_next, pf_rate, main_rate))
                op_bytes += main_rate * (t_next - t)
            if cur is not None:
                if latency_left > 0:
                    latency_left -= t_next - t
                    if latency_left <= 1e-15 * max(1.0, t_next):
                        latency_left = 0.0
                else:
                    remaining -= pf_rate * (t_next - t)
            t = t_next
            if (
                cur is not None
                and latency_left <= 0
                and (chunk_finishes or remaining <= 1e-9 * self.chunks[cur].bytes)
            ):
                chunk_state[cur] = "done"
                c_end[cur] = t
                c_op_bytes[cur] = op_bytes
                if readers_left.get(self.chunks[cur].tensor, 0) == 0:
                    c_release[cur] = t
                    l2_used -= self.chunks[cur].bytes
                cur = None
            for n in [n for n, (e, _) in running.items() if e <= t + EPS * max(1.0, t)]:
                del running[n]
                kernels.discard(n)
                del busy[res_of[n]]
                ended[n] = t
                for tname in attrs[n].get("reads", {}) or {}:
                    readers_left[tname] -= 1
                    if readers_left[tname] == 0:
                        for i in self.by_tensor.get(tname, ()):
                            if chunk_state[i] == "done" and i not in c_release:
                                c_release[i] = t
                                l2_used -= self.chunks[i].bytes
                for s in succ[n]:
                    n_left[s] -= 1
                    if n_left[s] == 0:
                        ready_set.add(s)
                        heapq.heappush(ready[res_of[s]], (self.prio[s], s))
        makespan = max(ended.values(), default=0.0)
        chunk_events = tuple(
            ChunkEvent(
                i,
                c.tensor,
                c.bytes,
                c.consumer,
                c.anchor,
                c_start[i],
                c_end[i],
                c_release.get(i, makespan),
            )
            for i, c in enumerate(self.chunks)
            if chunk_state[i] == "done"
        )
        return Schedule(
            tuple(events),
            chunk_events,
            tuple(dropped),
            tuple(segments),
            makespan,
            m.l2_capacity_bytes,
            m.hbm_bytes_per_s,
            self.plan.name,
        )


def verify(g: nx.DiGraph, schedule: Schedule, machine: Machine) -> list[str]:
    """Check a schedule against the machine model; return the violations (empty = valid).

    Checks: every op exactly once; precedence; one op at a time per stream (prefetch stream
    included); readers start after their tensor's chunks end; L2 held <= usable capacity;
    prefetch + op HBM rates <= HBM bandwidth, and while a kernel runs the prefetch takes no
    more than ``op_share`` of what the ops leave; every chunk lasts at least the chunk
    latency; each chunk's bytes were moved.
    """
    out: list[str] = []
    tol = 1e-9 * max(1.0, schedule.makespan_s)
    by_node: dict[Any, Event] = {}
    for e in schedule.events:
        if e.node in by_node:
            out.append(f"op {e.node!r} scheduled twice")
        by_node[e.node] = e
        if e.start_s < -tol or e.end_s < e.start_s - tol:
            out.append(f"op {e.node!r} has a bad interval [{e.start_s}, {e.end_s}]")
    missing = [n for n in g.nodes if n not in by_node]
    if missing:
        out.append(f"{len(missing)} ops never ran (e.g. {missing[0]!r})")
        return out
    for u, v in g.edges:
        if by_node[v].start_s < by_node[u].end_s - tol:
            out.append(f"precedence {u!r} -> {v!r} broken")
    lanes: dict[str, list[tuple[float, float, Any]]] = {}
    for e in schedule.events:
        lanes.setdefault(e.resource, []).append((e.start_s, e.end_s, e.node))
    lanes[PREFETCH_STREAM] = [(c.start_s, c.end_s, c.tensor) for c in schedule.chunks]
    for s, items in lanes.items():
        items.sort(key=lambda x: (x[0], x[1]))
        for (_, e0, a), (s1, _, b) in zip(items, items[1:], strict=False):
            if s1 < e0 - tol:
                out.append(f"stream {s!r}: {a!r} and {b!r} overlap")
    readers = tensor_readers(g)
    for c in schedule.chunks:
        for n in readers.get(c.tensor, ()):
            if by_node[n].start_s < c.end_s - tol:
                out.append(f"{n!r} started before its prefetch of {c.tensor!r} ended")
            if c.release_s < by_node[n].end_s - tol:
                out.append(f"prefetch of {c.tensor!r} left L2 before reader {n!r} ended")
        if c.release_s < c.end_s - tol:
            out.append(f"prefetch of {c.tensor!r} released before it finished")
    cap = machine.l2_capacity_bytes
    for t, held in schedule.l2_profile():
        if held > cap * (1 + 1e-9) + 1e-6:
            out.append(f"L2 holds {held:.0f} B > usable {cap:.0f} B at t={t:.3e} s")
            break
    if machine.contention and math.isfinite(machine.hbm_bytes_per_s):
        kernels = sorted((e.start_s, e.end_s) for e in schedule.events if e.kernel)
        ends: list[float] = []  # end times of the kernels started so far (a heap)
        i = 0
        for t0, t1, pf, main in schedule.rate_segments:
            if pf <= 0:
                continue
            if pf + main > machine.hbm_bytes_per_s * (1 + 1e-9):
                out.append(
                    f"HBM oversubscribed at t={t0:.3e} s: prefetch {pf:.3e} + ops "
                    f"{main:.3e} > {machine.hbm_bytes_per_s:.3e} B/s"
                )
                break
            mid = 0.5 * (t0 + t1)
            while i < len(kernels) and kernels[i][0] <= mid:
                heapq.heappush(ends, kernels[i][1])
                i += 1
            while ends and ends[0] <= mid:
                heapq.heappop(ends)
            left = machine.hbm_bytes_per_s - main
            if ends and pf > machine.op_share * left * (1 + 1e-9) + 1e-9 * left:
                out.append(
                    f"prefetch took {pf:.3e} B/s at t={t0:.3e} s while a kernel ran: more "
                    f"than op_share {machine.op_share} x the {left:.3e} B/s it leaves"
                )
                break
    lat = machine.chunk_latency_s
    if lat > 0:  # no bytes move during a chunk's latency (chunks run one at a time)
        segs = schedule.rate_segments
        j = 0
        for c in sorted(schedule.chunks, key=lambda c: c.start_s):
            lo, hi = c.start_s, c.start_s + lat
            while j < len(segs) and segs[j][1] <= lo:
                j += 1
            early = 0.0
            i = j
            while i < len(segs) and segs[i][0] < hi - tol:
                t0, t1, pf, _ = segs[i]
                early += max(0.0, min(t1, hi) - max(t0, lo)) * pf
                i += 1
            if c.end_s - c.start_s < lat - tol or early > 1e-9 * max(1.0, c.bytes):
                out.append(
                    f"prefetch of {c.tensor!r} moved bytes within its chunk latency {lat:.3e} s"
                )
                break
    moved = sum((t1 - t0) * pf for t0, t1, pf, _ in schedule.rate_segments)
    want = sum(c.bytes for c in schedule.chunks)
    if abs(moved - want) > 1e-6 * max(1.0, want):
        out.append(f"prefetch moved {moved:.0f} B, chunks need {want:.0f} B")
    return out
