"""Hypothesis: random small graphs and random L2 sizes; every plan verifies."""

from __future__ import annotations

import networkx as nx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preserve_cp import load_hardware, solve
from preserve_cp.baselines import fused_graph
from preserve_cp.costs import op_costs
from preserve_cp.simulate import verify
from preserve_cp.solve import machine_for

KINDS = ["gemm", "attention", "norm", "elementwise"]


@st.composite
def random_graphs(draw):
    n = draw(st.integers(2, 9))
    g = nx.DiGraph()
    for i in range(n):
        kind = draw(st.sampled_from(KINDS + ["allreduce"]))
        res = "comm" if kind == "allreduce" else draw(st.sampled_from(["compute", "vec"]))
        reads = {f"a{i}": draw(st.integers(0, 2_000_000))}
        pf = []
        if kind in ("gemm", "attention") and draw(st.booleans()):
            reads[f"w{i}"] = draw(st.integers(1, 60_000_000))
            pf = [f"w{i}"]
        if i > 0 and draw(st.booleans()):  # a shared tensor read by two ops
            reads[f"w{i - 1}"] = reads.get(f"w{i - 1}", 0) or 1_000_000
        g.add_node(
            f"n{i}",
            kind=kind,
            resource=res,
            flops=float(draw(st.integers(0, 10**11))),
            reads=reads,
            writes_bytes=draw(st.integers(0, 10**6)),
            prefetchable=pf,
            layer=0,
        )
        for j in range(i):
            if draw(st.integers(0, 3)) == 0:
                g.add_edge(f"n{j}", f"n{i}")
    g.graph["tp"] = draw(st.sampled_from([2, 4, 8]))
    return g


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    g=random_graphs(),
    l2_mb=st.floats(1, 200),
    device=st.sampled_from(["ascend-910b2", "h100-sxm", "mi300x"]),
)
def test_every_plan_verifies(g, l2_mb, device):
    hw = load_hardware(device).with_overrides(l2_capacity_bytes=l2_mb * 1e6)
    r = solve(g, hw, time_limit_s=1.0)
    m = machine_for(hw)
    assert verify(g, r.schedule, m) == []
    for name, s in r.baselines.items():
        if name == "fused":  # runs on the fused graph (GEMM and allreduce merged)
            fg, _ = fused_graph(g, op_costs(g, hw), hw)
            assert verify(fg, s, m) == [], name
        else:
            assert verify(g, s, m) == [], name
    assert r.schedule.peak_l2_bytes() <= hw.usable_l2_bytes * (1 + 1e-9)
    assert r.makespan_s <= min(r.greedy_makespan_s, r.baseline_makespan_s) * (1 + 1e-12)
    assert r.lower_bound_s <= r.makespan_s * (1 + 1e-9)
