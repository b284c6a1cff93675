"""Invariants over random layered DAGs (robustness issue): every plan verifies, the optimised
makespan is never above greedy or vanilla, the bound is below the makespan, and on small
duration-only graphs the makespan equals the optimum of a brute-force reference."""

from __future__ import annotations

import itertools
import random

import networkx as nx
import pytest

import preserve_cp as pc
from preserve_cp.baselines import fused_graph
from preserve_cp.costs import op_costs
from preserve_cp.simulate import verify
from preserve_cp.solve import machine_for

DEVICES = ["ascend-910b2", "h100-sxm", "mi300x", "gaudi3"]


def layered_dag(rng: random.Random, with_hw: bool) -> nx.DiGraph:
    layers = rng.randint(1, 4)
    width = rng.randint(1, 3)
    g = nx.DiGraph()
    prev: list[str] = []
    k = 0
    for layer in range(layers):
        cur = []
        for _ in range(rng.randint(1, width)):
            n = f"n{k}"
            k += 1
            if with_hw:
                coll = rng.random() < 0.2
                reads = {f"a{k}": rng.randint(0, 2_000_000)}
                pf = []
                if not coll and rng.random() < 0.6:
                    reads[f"w{k}"] = rng.randint(100_000, 60_000_000)
                    pf = [f"w{k}"]
                g.add_node(
                    n,
                    kind="allreduce" if coll else rng.choice(["gemm", "attention", "norm"]),
                    resource="comm" if coll else rng.choice(["compute", "vec"]),
                    flops=float(rng.randint(0, 10**12)),
                    reads=reads,
                    writes_bytes=rng.randint(0, 10**6),
                    prefetchable=pf,
                    layer=layer,
                )
            else:
                g.add_node(
                    n, duration=float(rng.randint(1, 9)), resource=rng.choice(["m0", "m1", "m2"])
                )
            for p in prev:
                if rng.random() < 0.6:
                    g.add_edge(p, n)
            cur.append(n)
        prev = cur
    g.graph["tp"] = rng.choice([2, 4, 8])
    return g


def brute_force_makespan(g: nx.DiGraph) -> float:
    """Optimum of the plain scheduling problem by enumerating every topological order and
    scheduling each greedily in that order (some order yields every semi-active schedule,
    hence an optimal one)."""
    best = float("inf")
    nodes = list(g.nodes)
    for order in itertools.permutations(nodes):
        pos = {n: i for i, n in enumerate(order)}
        if any(pos[u] > pos[v] for u, v in g.edges):
            continue
        end: dict = {}
        free: dict = {}
        for n in order:
            a = g.nodes[n]
            s = max([end[p] for p in g.predecessors(n)] + [free.get(a["resource"], 0.0)])
            end[n] = s + a["duration"]
            free[a["resource"]] = end[n]
        best = min(best, max(end.values()))
    return best


def check(g: nx.DiGraph, device: str | None, l2_mb: float) -> None:
    hw = None
    if device is not None:
        hw = pc.load_hardware(device).with_overrides(l2_capacity_bytes=l2_mb * 1e6)
    r = pc.solve(g, hw, time_limit_s=2)
    m = machine_for(hw)
    assert verify(g, r.schedule, m) == []
    for name, s in r.baselines.items():
        if name == "fused":
            assert hw is not None
            assert verify(fused_graph(g, op_costs(g, hw), hw)[0], s, m) == []
        else:
            assert verify(g, s, m) == [], name
    assert r.makespan_s <= min(r.greedy_makespan_s, r.baseline_makespan_s) * (1 + 1e-12)
    assert r.lower_bound_s <= r.makespan_s * (1 + 1e-9)
    if hw is None and g.number_of_nodes() <= 7:
        assert r.makespan_s == pytest.approx(brute_force_makespan(g))
        assert r.status == "optimal"


def run(n: int, seed: int) -> None:
    """Check ``n`` random DAGs (the assertions are in :func:`check`)."""
    rng = random.Random(seed)
    for _ in range(n):
        with_hw = rng.random() < 0.6
        g = layered_dag(rng, with_hw)
        check(g, rng.choice(DEVICES) if with_hw else None, rng.uniform(0.5, 200))


def test_invariants_small_corpus():
    run(60, seed=7)


@pytest.mark.slow
def test_invariants_thousand_dags():
    run(1000, seed=11)
