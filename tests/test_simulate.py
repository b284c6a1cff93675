"""Stage 5: the simulator and verifier on unit-rate machines (every time derived by hand)."""

from __future__ import annotations

import networkx as nx
import pytest
from conftest import fixed, reader

from preserve_cp.plan import Event, Plan, Prefetch, Schedule
from preserve_cp.simulate import Machine, simulate, verify

UNIT = Machine(hbm_bytes_per_s=1.0, prefetch_bytes_per_s=1.0, l2_capacity_bytes=100.0)


def chain_graph():
    # ar (comm, 2 s, no HBM) -> g1 reads w1 (4 B) -> g2 reads w2 (4 B)
    g = nx.DiGraph([("ar", "g1"), ("g1", "g2")])
    nx.set_node_attributes(
        g,
        {
            "ar": {"resource": "comm", "reads": {}},
            "g1": {"resource": "compute", "reads": {"w1": 4}, "prefetchable": ["w1"]},
            "g2": {"resource": "compute", "reads": {"w2": 4}, "prefetchable": ["w2"]},
        },
    )
    costs = {
        "ar": fixed("ar", "comm", 2.0),
        "g1": reader("g1", "compute", 4, 4),
        "g2": reader("g2", "compute", 4, 4),
    }
    return g, costs


def test_vanilla_is_the_sum_of_the_chain():
    g, c = chain_graph()
    s = simulate(g, c, Plan("vanilla"), UNIT)
    # |ar 0-2|g1 2-6|g2 6-10|
    assert [(e.node, e.start_s, e.end_s) for e in s.events] == [
        ("ar", 0.0, 2.0),
        ("g1", 2.0, 6.0),
        ("g2", 6.0, 10.0),
    ]
    assert verify(g, s, UNIT) == []


def test_prefetch_during_allreduce_and_during_l2_reads():
    g, c = chain_graph()
    plan = Plan("p", (Prefetch("w1", 2.0, "g1", "ar"), Prefetch("w2", 1.0, "g2", "ar")))
    s = simulate(g, c, plan, UNIT)
    # prefetch: w1 2 B during ar (0-2, HBM free), then w2's 1 B must wait for HBM room:
    # g1 reads 2 B from HBM (2 s) and 2 B from L2 (0.25 s) -> 2 s, HBM rate 1 B/s: no room,
    # so w2 starts at 2 but gets HBM room only when g1 ends at 4: it moves in 4-5 while g2
    # waits, then g2 runs 5-8 (3 B from HBM)
    ev = {e.node: (e.start_s, e.end_s) for e in s.events}
    assert ev == {"ar": (0.0, 2.0), "g1": (2.0, 4.0), "g2": (5.0, 8.0)}
    ch = {x.tensor: (x.start_s, x.end_s, x.release_s) for x in s.chunks}
    assert ch == {"w1": (0.0, 2.0, 4.0), "w2": (2.0, 5.0, 8.0)}
    assert s.makespan_s == 8.0 and verify(g, s, UNIT) == []


def test_l2_capacity_makes_a_prefetch_wait():
    g, c = chain_graph()
    small = Machine(1.0, 1.0, l2_capacity_bytes=2.0)
    plan = Plan("p", (Prefetch("w1", 2.0, "g1", "ar"), Prefetch("w2", 2.0, "g2", "ar")))
    s = simulate(g, c, plan, small)
    ch = {x.tensor: (x.start_s, x.end_s) for x in s.chunks}
    # w2 cannot start before w1 leaves L2 when g1 ends at 4; then it moves 2 B at 1 B/s
    assert ch["w2"] == (4.0, 6.0)
    assert s.peak_l2_bytes() == 2.0 and verify(g, s, small) == []


def test_contention_switch_flips_the_hbm_check():
    g, c = chain_graph()
    plan = Plan("p", (Prefetch("w2", 4.0, "g2", "g1"),))
    free = Machine(1.0, 1.0, 100.0, contention=False)
    s = simulate(g, c, plan, free)
    # without contention the prefetch runs at 1 B/s during g1 although g1 uses all of HBM
    assert [(x.start_s, x.end_s) for x in s.chunks] == [(2.0, 6.0)]
    assert verify(g, s, UNIT) and "HBM oversubscribed" in verify(g, s, UNIT)[0]
    with_c = simulate(g, c, plan, UNIT)
    assert verify(g, with_c, UNIT) == []
    assert [(x.start_s, x.end_s) for x in with_c.chunks] == [(2.0, 10.0)]  # waits for g1


def test_deadlocked_plan_drops_the_blocking_chunk():
    g, c = chain_graph()
    # w1 anchored at g2, but g1 (before g2) waits for w1: drop it, run vanilla-like
    s = simulate(g, c, Plan("bad", (Prefetch("w1", 4.0, "g1", "g2"),)), UNIT)
    assert s.dropped == (0,) and s.makespan_s == 10.0


@pytest.mark.parametrize(
    "broken,word",
    [
        ((("a", "m", 0.0, 2.0), ("b", "m", 1.0, 3.0)), "overlap"),
        ((("a", "m", 0.0, 2.0), ("b", "n", 1.0, 3.0)), "precedence"),
        ((("a", "m", 0.0, 2.0),), "never ran"),
    ],
)
def test_verifier_catches_broken_schedules(broken, word):
    g = nx.DiGraph([("a", "b")])
    nx.set_node_attributes(g, {"a": {"resource": "m"}, "b": {"resource": "m"}})
    ev = tuple(Event(n, r, s, e) for n, r, s, e in broken)
    s = Schedule(ev, (), (), (), 3.0, 0.0, 1.0)
    assert any(word in v for v in verify(g, s, UNIT))
