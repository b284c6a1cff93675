"""The streaming baseline (issue 11): the best eager partial-tensor streaming plan.

A hand-checked chain on a unit-rate machine; every fraction of real graphs verifies with no
dropped chunk; the best one beats greedy and vanilla (also where greedy moves nothing); and
the CLI, the report, the JSON and the sweep rows show it.
"""

from __future__ import annotations

import dataclasses
import json
import random

import networkx as nx
import pytest

import preserve_cp as pc
from preserve_cp.baselines import (
    STREAMING_ANCHORS,
    STREAMING_FRACTIONS,
    best_streaming,
    greedy_plan,
    streaming_plan,
)
from preserve_cp.costs import OpCost, op_costs
from preserve_cp.errors import InputError
from preserve_cp.plan import Plan, Result
from preserve_cp.simulate import Machine, priorities, simulate, verify
from preserve_cp.solve import machine_for

# --- a chain by hand ---------------------------------------------------------------------------
#
# a (1 s, no HBM) -> b (reads w1, 4 B) -> c (2 s, no HBM) -> d (reads w2, 4 B) on one stream.
# HBM and prefetch 1 B/s, L2 reads 8 B/s, usable L2 4 B. An op reading its tensor from HBM
# uses all of HBM, so a chunk moves only while a or c runs or while the stream waits.
# Vanilla: 1 + 4 + 2 + 4 = 11 s.

UNIT = Machine(hbm_bytes_per_s=1.0, prefetch_bytes_per_s=1.0, l2_capacity_bytes=4.0)


def _chain(with_c: bool = True):
    ops = ["a", "b", "c", "d"] if with_c else ["a", "b", "d"]
    g = nx.DiGraph(list(zip(ops, ops[1:], strict=False)))
    attrs = {
        "a": {"resource": "m", "reads": {}},
        "b": {"resource": "m", "reads": {"w1": 4}, "prefetchable": ["w1"]},
        "c": {"resource": "m", "reads": {}},
        "d": {"resource": "m", "reads": {"w2": 4}, "prefetchable": ["w2"]},
    }
    nx.set_node_attributes(g, {n: attrs[n] for n in ops})
    costs = {
        "a": OpCost("a", "m", 1.0, 0.0, 0.0, 0.0, 1.0, 8.0, True),
        "b": OpCost("b", "m", 0.0, 0.0, 4.0, 4.0, 1.0, 8.0, False),
        "c": OpCost("c", "m", 2.0, 0.0, 0.0, 0.0, 1.0, 8.0, True),
        "d": OpCost("d", "m", 0.0, 0.0, 4.0, 4.0, 1.0, 8.0, False),
    }
    return g, {n: costs[n] for n in ops}


def _run(g, costs, plan):
    s = simulate(g, costs, plan, UNIT)
    assert verify(g, s, UNIT) == []
    assert s.dropped == ()
    return s


def _ops(s):
    return [(e.node, e.start_s, e.end_s) for e in s.events]


def _chunks(s):
    return [(c.tensor, c.bytes, c.start_s, c.end_s, c.release_s) for c in s.chunks]


def test_plan_by_hand():
    g, _ = _chain()
    p = streaming_plan(g, 4.0, 0.5)
    assert p.name == "streaming"
    assert [(x.tensor, x.bytes, x.consumer, x.anchor, x.offset_bytes) for x in p.prefetches] == [
        ("w1", 2.0, "b", "a", 0.0),
        ("w2", 2.0, "d", "a", 0.0),
    ]
    prev = streaming_plan(g, 4.0, 0.5, anchor="previous")
    assert [x.anchor for x in prev.prefetches] == ["a", "b"]  # the previous consumer
    # a tensor larger than the usable L2 is clipped to it
    assert [x.bytes for x in streaming_plan(g, 3.0, 1.0).prefetches] == [3.0, 3.0]


def test_schedules_by_hand():
    g, costs = _chain()
    assert simulate(g, costs, Plan("v"), UNIT).makespan_s == 11.0
    # alpha 1/2 (2 B chunks): w1 moves 1 B during a and 1 B while b waits (t = 1..2); b reads
    # 2 B from HBM (2 s); w2 starts at t = 2 (2 + 2 B fit) but b leaves no HBM, so it moves
    # during c (t = 4..6); d reads 2 B from HBM: 8 s
    s = _run(g, costs, streaming_plan(g, 4.0, 0.5))
    assert _ops(s) == [("a", 0.0, 1.0), ("b", 2.0, 4.0), ("c", 4.0, 6.0), ("d", 6.0, 8.0)]
    assert _chunks(s) == [("w1", 2.0, 0.0, 2.0, 4.0), ("w2", 2.0, 2.0, 6.0, 8.0)]
    # alpha 1 (whole 4 B tensors): w2 waits for room until b ends (t = 4.5): 9 s
    s = _run(g, costs, streaming_plan(g, 4.0, 1.0))
    assert _ops(s) == [("a", 0.0, 1.0), ("b", 4.0, 4.5), ("c", 4.5, 6.5), ("d", 8.5, 9.0)]
    assert _chunks(s) == [("w1", 4.0, 0.0, 4.0, 4.5), ("w2", 4.0, 4.5, 8.5, 9.0)]
    # alpha 1/8 (0.5 B): both chunks move during a; each reader saves 0.5 s: 10 s
    s = _run(g, costs, streaming_plan(g, 4.0, 0.125))
    assert s.makespan_s == 10.0
    assert _chunks(s) == [("w1", 0.5, 0.0, 0.5, 4.5), ("w2", 0.5, 0.5, 1.0, 10.0)]


def test_best_streaming_by_hand():
    g, costs = _chain()
    got = {a: _run(g, costs, streaming_plan(g, 4.0, a)).makespan_s for a in STREAMING_FRACTIONS}
    assert got == {0.0625: 10.5, 0.125: 10.0, 0.25: 9.0, 0.5: 8.0, 0.75: 8.0, 1.0: 9.0}
    best = best_streaming(g, costs, UNIT)
    assert best is not None
    plan, s = best
    # 1/2 and 3/4 tie at 8 s: the smaller fraction is kept
    assert plan.name == s.plan_name == "streaming"
    assert [x.bytes for x in plan.prefetches] == [2.0, 2.0]
    assert s.makespan_s == 8.0


def test_start_anchor_beats_previous_consumer_by_hand():
    # without c, w2 anchored at b (the previous consumer) is released when b starts, and b
    # leaves no HBM: it moves after b (t = 4.5..5) and d waits for it; anchored at the start
    # it moved during a
    g, costs = _chain(with_c=False)
    start = _run(g, costs, streaming_plan(g, 4.0, 0.125))
    prev = _run(g, costs, streaming_plan(g, 4.0, 0.125, anchor="previous"))
    assert _ops(start) == [("a", 0.0, 1.0), ("b", 1.0, 4.5), ("d", 4.5, 8.0)]
    assert _ops(prev) == [("a", 0.0, 1.0), ("b", 1.0, 4.5), ("d", 5.0, 8.5)]


def test_nothing_to_stream():
    g, costs = _chain()
    assert best_streaming(g, costs, Machine(1.0, 1.0, 0.0)) is None  # no L2
    h = nx.DiGraph([("a", "c")])
    nx.set_node_attributes(h, {"a": {"resource": "m", "reads": {}}, "c": {"resource": "m"}})
    assert best_streaming(h, {n: costs[n] for n in h}, UNIT) is None  # nothing prefetchable
    assert streaming_plan(g, 0.0, 0.5).prefetches == ()
    for bad in (0.0, 1.5, -0.1, True):
        with pytest.raises(InputError, match="alpha"):
            streaming_plan(g, 4.0, bad)
    with pytest.raises(InputError, match="anchor"):
        streaming_plan(g, 4.0, 0.5, anchor="collective")


def test_random_graphs_never_deadlock():
    """Random DAGs on two streams with tensors larger than L2, several tensors per op and
    tensors read by several ops: every fraction and anchor runs every chunk and verifies."""
    rng = random.Random(11)
    for case in range(60):
        n = rng.randint(2, 9)
        ops = [f"o{i}" for i in range(n)]
        chain = case % 2 == 0
        edges = [
            (u, v)
            for i, u in enumerate(ops)
            for v in ops[i + 1 :]
            if (v == ops[i + 1] if chain else rng.random() < 0.35)
        ]
        g = nx.DiGraph(edges)
        g.add_nodes_from(ops)
        pool = [f"t{k}" for k in range(rng.randint(1, 6))]
        sizes = {t: rng.choice([1, 3, 8, 20]) for t in pool}
        costs = {}
        for o in ops:
            reads = {t: sizes[t] for t in rng.sample(pool, rng.randint(0, min(2, len(pool))))}
            res = "m" if chain else rng.choice(["m", "n"])
            g.nodes[o].update(resource=res, reads=reads, prefetchable=list(reads))
            h = float(sum(reads.values()))
            compute = rng.choice([0.0, 1.0, 3.0])
            costs[o] = OpCost(o, res, compute, 0.1, h, h, 1.0, 8.0, not reads)
        m = Machine(1.0, rng.choice([0.5, 1.0, 2.0]), rng.choice([2.0, 5.0, 10.0]))
        for anchor in STREAMING_ANCHORS:
            for a in STREAMING_FRACTIONS:
                p = streaming_plan(g, m.l2_capacity_bytes, a, anchor=anchor)
                assert all(x.bytes <= m.l2_capacity_bytes for x in p.prefetches)
                s = simulate(g, costs, p, m)
                assert s.dropped == (), (case, anchor, a)
                assert verify(g, s, m) == [], (case, anchor, a)


# --- real graphs -------------------------------------------------------------------------------


def _case(model, phase, batch, context, tp, dtype, device, l2_prefetch_fraction=None):
    g = pc.build_graph(model, pc.Workload(phase, batch, context, tp, dtype, dtype, dtype))
    hw = pc.load_hardware(device)
    if l2_prefetch_fraction is not None:
        hw = hw.with_overrides(l2_prefetch_fraction=l2_prefetch_fraction)
    costs = op_costs(g, hw)
    return g, hw, costs, machine_for(hw), priorities(g, costs)


CASES = {
    "llama3-8b-h100": ("llama3-8b", "decode", 1, 2048, 8, "fp8", "h100-sxm"),
    # 1 MB usable L2: smaller than every first tensor of a window, so greedy moves nothing
    "llama3-8b-h100-tight": ("llama3-8b", "decode", 1, 2048, 8, "fp8", "h100-sxm", 0.02),
    "llama3-8b-ascend-b16": ("llama3-8b", "decode", 16, 8192, 4, "int8", "ascend-910b2"),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def real(request):
    return request.param, _case(*CASES[request.param])


def test_every_fraction_verifies_on_real_graphs(real):
    _, (g, hw, costs, m, prio) = real
    n_tensors = len({t for _, a in g.nodes(data=True) for t in a.get("prefetchable", [])})
    for anchor in STREAMING_ANCHORS:
        for a in STREAMING_FRACTIONS:
            p = streaming_plan(g, hw.usable_l2_bytes, a, anchor=anchor)
            assert len(p.prefetches) == n_tensors
            assert max(x.bytes for x in p.prefetches) <= a * hw.usable_l2_bytes * (1 + 1e-12)
            s = simulate(g, costs, p, m, prio)
            assert s.dropped == (), (anchor, a)
            assert verify(g, s, m) == [], (anchor, a)


def test_best_streaming_beats_greedy_and_vanilla(real):
    name, (g, hw, costs, m, prio) = real
    vanilla = simulate(g, costs, Plan("vanilla"), m, prio).makespan_s
    gp = greedy_plan(g, hw.usable_l2_bytes)
    greedy = simulate(g, costs, gp, m, prio).makespan_s
    best = best_streaming(g, costs, m, prio)
    assert best is not None
    plan, s = best
    assert plan.name == "streaming" and s.dropped == () and verify(g, s, m) == []
    assert s.makespan_s <= greedy * (1 + 1e-9)
    assert s.makespan_s < vanilla
    if name.endswith("tight"):
        assert gp.prefetches == () and greedy == vanilla
    # it is the best of the fractions
    for a in STREAMING_FRACTIONS:
        other = simulate(g, costs, streaming_plan(g, hw.usable_l2_bytes, a), m, prio)
        assert s.makespan_s <= other.makespan_s


# --- outputs -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hand_result():
    """A Result built by hand on a real graph (its vanilla schedule), streaming unset."""
    g, hw, costs, m, prio = _case(*CASES["llama3-8b-h100"])
    van = simulate(g, costs, Plan("vanilla"), m, prio)
    greedy = simulate(g, costs, greedy_plan(g, hw.usable_l2_bytes), m, prio)
    r = Result(
        "feasible",
        van.makespan_s * 0.8,
        van.makespan_s * 0.75,
        0.0625,
        0.1,
        True,
        Plan("optimised"),
        van,
        baseline_makespan_s=van.makespan_s,
        greedy_makespan_s=greedy.makespan_s,
        l2_capacity_bytes=m.l2_capacity_bytes,
        method="test",
        baselines={"vanilla": van, "greedy": greedy},
    )
    return r, g, hw, pc.Workload("decode", 1, 2048, 8, "fp8", "fp8", "fp8")


def test_cli_table_shows_streaming_once_set(hand_result):
    from preserve_cp.cli import _report

    r, g, hw, wl = hand_result
    text = _report(r, g, hw, "llama3-8b", wl)
    assert "streaming" not in text  # not computed: no row, no ratio
    base = r.baseline_makespan_s
    r2 = dataclasses.replace(r, streaming_makespan_s=base * 0.84)
    text = _report(r2, g, hw, "llama3-8b", wl)
    rows = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert rows["streaming"].split()[1:4] == [f"{base * 0.84e3:.4f}", "ms", f"{1 / 0.84:.3f}x"]
    assert f"{0.84 / 0.8:.3f}x over streaming" in rows["optimised"]
    assert "over greedy" in rows["optimised"]
    lines = [line.split()[0] for line in text.splitlines() if line.strip()]
    assert lines.index("greedy") < lines.index("streaming") < lines.index("optimised")


def test_report_summary_shows_streaming_once_set(hand_result):
    from preserve_cp.viz.report import render_report

    r, g, hw, wl = hand_result
    page = render_report(r, g, hw, wl, "<svg></svg>")
    assert "vs streaming" not in page and "<td>streaming</td>" not in page
    r2 = dataclasses.replace(r, streaming_makespan_s=r.baseline_makespan_s * 0.84)
    page = render_report(r2, g, hw, wl, "<svg></svg>")
    assert "speedup vs streaming" in page
    assert f'<td>streaming</td><td class="n">{r2.streaming_makespan_s * 1e3:.4f}</td>' in page


def test_json_and_compared_schedules(hand_result):
    r, g, hw, _ = hand_result
    d = r.to_dict()
    keys = list(d)
    assert keys[keys.index("greedy_makespan_s") + 1] == "streaming_makespan_s"
    assert d["streaming_makespan_s"] is None
    best = best_streaming(g, op_costs(g, hw), machine_for(hw))
    assert best is not None
    r2 = dataclasses.replace(
        r,
        streaming_makespan_s=best[1].makespan_s,
        baselines={**r.baselines, "streaming": best[1]},
    )
    assert json.loads(r2.to_json())["streaming_makespan_s"] == best[1].makespan_s
    assert list(r2.compared_schedules()) == ["vanilla", "greedy", "streaming", "optimised"]
    assert list(r.compared_schedules()) == ["vanilla", "greedy", "optimised"]


def test_sweep_rows_carry_streaming(tmp_path):
    from preserve_cp.sweep.run import RESULT_FIELDS, export_csv
    from preserve_cp.sweep.spec import RESULTS_VERSION, make_point
    from preserve_cp.sweep.store import Store

    assert "streaming_makespan_s" in RESULT_FIELDS
    p = make_point("llama3-8b", "h100-sxm", pc.Workload("decode", 1, 2048, 8), {}, {})
    assert p.fingerprint["results"] == RESULTS_VERSION >= 2  # old rows no longer match
    st = Store(tmp_path / "r.sqlite")
    st.put("old", {"model": "m"}, {"makespan_s": 1.0})  # a row stored before the field
    st.put("new", {"model": "m"}, {"makespan_s": 1.0, "streaming_makespan_s": 1.5})
    text = export_csv(st, tmp_path / "r.csv").read_text()
    head, *rows = text.strip().splitlines()
    col = head.split(",").index("streaming_makespan_s")
    assert [r.split(",")[col] for r in rows] == ["1.5", ""]
