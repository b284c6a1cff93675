"""Eviction of prefetched lines by the ops' own traffic (hardware ``l2_eviction: random``,
``Machine.eviction_bytes``; simulate.py, docs/fidelity.md)."""

from __future__ import annotations

import dataclasses
import math

import networkx as nx
import pytest

import preserve_cp as pc
from preserve_cp.costs import OpCost
from preserve_cp.machine import Machine, machine_for
from preserve_cp.plan import Plan, Prefetch
from preserve_cp.simulate import simulate, verify


def _chain(traffic: float):
    """``p`` (a 10 s collective: the window), ``x`` (a kernel streaming ``traffic`` bytes),
    ``c`` (reads the 4 B weight ``w``, prefetched during ``p``)."""
    g = nx.DiGraph([("p", "x"), ("x", "c")])
    nx.set_node_attributes(
        g,
        {
            "p": {"resource": "m", "reads": {}},
            "x": {"resource": "m", "reads": {"x.in": traffic}},
            "c": {"resource": "m", "reads": {"w": 4.0}, "prefetchable": ["w"]},
        },
    )
    costs = {
        "p": OpCost("p", "m", 10.0, 0.0, 0.0, 0.0, 1.0, 8.0, True),
        "x": OpCost("x", "m", 0.0, 0.0, traffic, 0.0, 1.0, 8.0, False),
        "c": OpCost("c", "m", 0.0, 0.0, 4.0, 4.0, 1.0, 8.0, False),
    }
    return g, costs, Plan("p", (Prefetch("w", 4.0, "c", "p"),))


@pytest.mark.parametrize("traffic", [0.0, 2.0, 8.0])
def test_a_reader_finds_what_survived_the_traffic_since_the_chunk_ended(traffic):
    g, costs, plan = _chain(traffic)
    e = 8.0
    m = Machine(hbm_bytes_per_s=1.0, prefetch_bytes_per_s=1.0, l2_capacity_bytes=10.0)
    kept = simulate(g, costs, plan, m)
    lost = simulate(g, costs, plan, dataclasses.replace(m, eviction_bytes=e))
    assert verify(g, lost, m) == []
    c_kept = next(ev for ev in kept.events if ev.node == "c")
    c_lost = next(ev for ev in lost.events if ev.node == "c")
    assert c_kept.l2_bytes == 4.0
    assert c_lost.l2_bytes == pytest.approx(4.0 * math.exp(-traffic / e), rel=1e-12)
    # the evicted bytes come from HBM again: 1 B/s, so c takes that long
    assert (c_lost.end_s - c_lost.start_s) == pytest.approx(
        max(4.0 - c_lost.l2_bytes, c_lost.l2_bytes / 8.0), rel=1e-12
    )
    assert lost.makespan_s >= kept.makespan_s


def test_random_eviction_on_a_real_device_only_slows_a_plan_down():
    hw = pc.load_hardware("rtx-pro-6000")
    assert machine_for(hw).eviction_bytes == 0.0  # the shipped file assumes the set-aside
    lossy = dataclasses.replace(hw, l2_eviction="random")
    assert machine_for(lossy).eviction_bytes == hw.l2_capacity_bytes
    model = pc.load_model("llama3-8b").model_copy(update={"num_layers": 2})
    g = pc.build_graph(model, pc.Workload("decode", 1, 4096, 4, "fp8"))
    r = pc.solve(g, hw, time_limit_s=10)
    worse = pc.solve(g, lossy, time_limit_s=10)
    assert worse.verified and worse.lower_bound_s <= worse.makespan_s
    # the same plan on the lossy machine is slower, and never below the protected one
    s = simulate(g, pc.op_costs(g, lossy), r.plan, machine_for(lossy))
    assert s.makespan_s > r.makespan_s
    found = sum(e.l2_bytes for e in s.events)
    assert 0 < found < sum(e.l2_bytes for e in r.schedule.events)
