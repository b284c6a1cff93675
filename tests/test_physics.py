"""The two physics choices of docs/fidelity.md, by hand: what a running kernel leaves to a
prefetch (``prefetch_share_during_ops``) and the chunk latency (a transfer pays the same
fixed cost whether an op or the prefetch stream makes it)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import networkx as nx
import pytest
import yaml
from conftest import fixed, reader

import preserve_cp as pc
from preserve_cp.costs import op_costs
from preserve_cp.machine import Machine, machine_for
from preserve_cp.plan import Plan, Prefetch
from preserve_cp.simulate import simulate, verify


def _kernel_then_reader():
    # g0: a kernel, 4 s of compute reading 2 B (HBM rate 0.5 of 1 B/s) -> g1 reads w1 (4 B)
    g = nx.DiGraph([("g0", "g1")])
    nx.set_node_attributes(
        g,
        {
            "g0": {"resource": "compute", "reads": {"a": 2}},
            "g1": {"resource": "compute", "reads": {"w1": 4}, "prefetchable": ["w1"]},
        },
    )
    costs = {
        "g0": reader("g0", "compute", 2, 0, compute_s=4.0),
        "g1": reader("g1", "compute", 4, 4),
    }
    return g, costs, Plan("p", (Prefetch("w1", 4.0, "g1", "g0"),))


@pytest.mark.parametrize(
    ("share", "moved_during_kernel", "makespan"),
    [
        # g0 leaves 0.5 B/s; the prefetch takes share x that for 4 s, the rest at 1 B/s while
        # g1 waits, then g1 reads 4 B from L2 at 8 B/s (0.5 s)
        (1.0, 2.0, 4.0 + 2.0 + 0.5),
        (0.5, 1.0, 4.0 + 3.0 + 0.5),
        (0.0, 0.0, 4.0 + 4.0 + 0.5),
    ],
)
def test_share_of_what_a_kernel_leaves(share, moved_during_kernel, makespan):
    g, c, plan = _kernel_then_reader()
    m = Machine(1.0, 1.0, 100.0, op_share=share)
    s = simulate(g, c, plan, m)
    assert s.makespan_s == pytest.approx(makespan)
    during = sum((min(t1, 4.0) - t0) * pf for t0, t1, pf, _ in s.rate_segments if t0 < 4.0)
    assert during == pytest.approx(moved_during_kernel)
    assert verify(g, s, m) == []


def test_verify_catches_a_prefetch_that_takes_more_than_the_share():
    g, c, plan = _kernel_then_reader()
    optimistic = simulate(g, c, plan, Machine(1.0, 1.0, 100.0, op_share=1.0))
    bad = verify(g, optimistic, Machine(1.0, 1.0, 100.0, op_share=0.0))
    assert any("op_share" in v for v in bad)


def test_a_collective_leaves_all_of_hbm():
    # the same with g0 a fixed-duration op (a collective): the share does not apply
    g, c, plan = _kernel_then_reader()
    c["g0"] = fixed("g0", "compute", 4.0, hbm_bytes=2.0)
    s = simulate(g, c, plan, Machine(1.0, 1.0, 100.0, op_share=0.0))
    assert s.makespan_s == pytest.approx(4.0 + 2.0 + 0.5)


def test_chunk_latency_by_hand():
    g, c, plan = _kernel_then_reader()
    m = Machine(1.0, 1.0, 100.0, op_share=1.0, chunk_latency_s=1.0)
    s = simulate(g, c, plan, m)
    # latency 0-1 s, then 0.5 B/s until 4 s (1.5 B), 2.5 B at 1 B/s: chunk ends at 6.5 s
    (chunk,) = s.chunks
    assert (chunk.start_s, chunk.end_s) == pytest.approx((0.0, 6.5))
    assert s.makespan_s == pytest.approx(7.0)
    assert verify(g, s, m) == []
    no_latency = simulate(g, c, plan, dataclasses.replace(m, chunk_latency_s=0.0))
    assert any("chunk latency" in v for v in verify(g, no_latency, m))


def test_a_transfer_costs_the_same_from_an_op_or_the_prefetch_stream():
    hw = pc.load_hardware("h100-sxm")  # calibrated: hbm_half 1.875 MiB
    assert hw.hbm_half_bytes > 0
    g = pc.build_graph("llama3-8b", pc.Workload("decode", 1, 2048, 8, "fp8", "fp8", "fp8"))
    o = op_costs(g, hw)["L0.o_proj"]
    m = machine_for(hw)
    # one chunk of the op's size on an idle machine: latency + size at the full rate
    t = nx.DiGraph([("idle", "r")])
    nx.set_node_attributes(
        t,
        {
            "idle": {"resource": "comm", "reads": {}},
            "r": {"resource": "compute", "reads": {"w": o.hbm_bytes}, "prefetchable": ["w"]},
        },
    )
    costs = {"idle": fixed("idle", "comm", 1.0), "r": reader("r", "compute", 1, 1)}
    s = simulate(t, costs, Plan("p", (Prefetch("w", o.hbm_bytes, "r", "idle"),)), m)
    (chunk,) = s.chunks
    assert chunk.end_s - chunk.start_s == pytest.approx(o.hbm_time_s(0.0), rel=1e-9)
    assert o.hbm_time_s(0.0) == pytest.approx(o.hbm_bytes / o.hbm_bw + m.chunk_latency_s)


def test_share_field_takes_zero_and_refuses_more_than_one(tmp_path: Path):
    d = yaml.safe_load(Path(pc.load_hardware("h100-sxm").source_file).read_text())
    d.pop("calibration", None)
    d["name"] = "share-test"
    for value, ok in ((0, True), (1, True), (0.5, True), (1.5, False), (-0.1, False)):
        d["memory"]["prefetch_share_during_ops"] = value
        f = tmp_path / "share-test.yaml"
        f.write_text(yaml.safe_dump(d))
        if ok:
            assert pc.load_hardware(str(f)).prefetch_share_during_ops == value
        else:
            with pytest.raises(
                pc.InputError, match=r"prefetch_share_during_ops: expected a number in \[0, 1\]"
            ):
                pc.load_hardware(str(f))
