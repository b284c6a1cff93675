"""The periodic decomposition and the validity of the bounds (scale issue)."""

from __future__ import annotations

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import preserve_cp as pc
from preserve_cp.baselines import greedy_plan
from preserve_cp.costs import op_costs
from preserve_cp.optimize import (
    ChainOptions,
    chain_lp_bound,
    chain_order,
    layer_structure,
    solve_chain,
    solve_periodic,
)
from preserve_cp.plan import Plan
from preserve_cp.simulate import simulate, verify
from preserve_cp.solve import SolveOptions, machine_for


def _setup(model, wl, device):
    g = pc.build_graph(model, wl)
    hw = pc.load_hardware(device)
    return g, op_costs(g, hw), machine_for(hw)


def test_layer_structure_periods():
    g, c, _ = _setup("llama3-70b", pc.Workload("decode", 4, 4096, 8), "h100-sxm")
    st_ = layer_structure(chain_order(g), g, c)
    assert st_ is not None and st_.period == 1 and len(st_.layers) == 80
    assert st_.ops_per_layer == 11 and st_.prefix == ["embedding", "embedding.allreduce"]
    # Gemma-2 alternates sliding-window and global layers: period 2 beyond the window
    g, c, _ = _setup("gemma2-27b", pc.Workload("decode", 4, 8192, 8), "h100-sxm")
    assert layer_structure(chain_order(g), g, c).period == 2
    # ... and period 1 when the context fits inside the window
    g, c, _ = _setup("gemma2-27b", pc.Workload("decode", 4, 2048, 8), "h100-sxm")
    assert layer_structure(chain_order(g), g, c).period == 1


def test_periodic_plan_is_tiled_verified_and_near_the_bound():
    g, c, m = _setup(
        "llama3-70b", pc.Workload("decode", 4, 16384, 8, "int8", "int8", "int8"), "ascend-910b2"
    )
    ch = chain_order(g)
    out = solve_periodic(ch, g, c, m, ChainOptions(work_limit=2.0))
    # its warm start is an LP that GLOP's presolve calls ABNORMAL (solved again without it)
    assert out is not None and out.stats["warm_start"] and out.stats["periods"] == 72
    # every layer gets its consumers' chunks: all 80 layers' qkv weights are prefetched
    qkv = {p.tensor for p in out.plan.prefetches if p.tensor.endswith(".w_qkv")}
    assert qkv == {f"L{i}.w_qkv" for i in range(80)}
    s = simulate(g, c, out.plan, m)
    assert verify(g, s, m) == [] and not s.dropped
    lb = chain_lp_bound(ch, g, c, m)
    assert lb <= s.makespan_s <= lb * 1.005


def test_solve_reports_gap_within_half_a_percent_on_the_big_cases():
    for model, wl in [
        ("llama3.1-405b", pc.Workload("prefill", 1, 32768, 8, "int8", "int8", "int8")),
        ("llama3-70b", pc.Workload("decode", 4, 16384, 8, "int8", "int8", "int8")),
    ]:
        r = pc.solve(pc.build_graph(model, wl), "ascend-910b2")
        assert r.gap <= 0.005 and r.verified
        assert r.solve_time_s < 30


@pytest.mark.slow
def test_an_moe_layer_gets_the_same_lookahead_in_layers():
    """Qwen3-30B-A3B decode on ascend-910b2 (bench/results-scale.txt): its layers have 14
    ops, so a fixed 24-op lookahead (1.7 layers) left the plan 0.64 % above the bound; the
    default (two layers and two ops: 30) brings it within 0.5 %."""
    g = pc.build_graph("qwen3-30b-a3b", pc.Workload("decode", 2, 16384, 4, "int8", "int8", "int8"))
    r = pc.solve(g, "ascend-910b2")
    assert r.verified and r.makespan_s <= r.lower_bound_s * 1.005
    fixed = pc.solve(g, "ascend-910b2", options=SolveOptions().with_search(lookahead_ops=24))
    assert fixed.makespan_s > r.makespan_s


@st.composite
def random_chains(draw):
    n = draw(st.integers(3, 10))
    g = nx.DiGraph()
    for i in range(n):
        coll = draw(st.integers(0, 3)) == 0
        reads = {f"a{i}": draw(st.integers(0, 10**6))}
        pf = []
        if not coll and draw(st.booleans()):
            reads[f"w{i}"] = draw(st.integers(10**5, 8 * 10**7))
            pf = [f"w{i}"]
        g.add_node(
            f"n{i}",
            kind="allreduce" if coll else draw(st.sampled_from(["gemm", "attention", "norm"])),
            resource="comm" if coll else "compute",
            flops=float(draw(st.integers(0, 10**12))),
            reads=reads,
            writes_bytes=draw(st.integers(0, 10**6)),
            prefetchable=pf,
            layer=0,
        )
        if i:
            g.add_edge(f"n{i - 1}", f"n{i}")
    g.graph["tp"] = 8
    return g


@settings(max_examples=40, deadline=None)
@given(
    g=random_chains(),
    l2_mb=st.floats(0.5, 120),
    device=st.sampled_from(["ascend-910b2", "h100-sxm", "gaudi3"]),
)
def test_chain_bound_is_below_every_plan(g, l2_mb, device):
    hw = pc.load_hardware(device).with_overrides(l2_capacity_bytes=l2_mb * 1e6)
    c, m = op_costs(g, hw), machine_for(hw)
    ch = chain_order(g)
    lb = chain_lp_bound(ch, g, c, m)
    plans = [Plan("vanilla"), greedy_plan(g, hw.usable_l2_bytes)]
    out = solve_chain(ch, g, c, m, ChainOptions(min_chunk_bytes=0))
    plans.append(out.plan)
    for p in plans:
        s = simulate(g, c, p, m)
        assert verify(g, s, m) == []
        assert lb <= s.makespan_s * (1 + 1e-9), p.name
    if out.status == "optimal" and out.predicted_s is not None:
        assert lb <= out.predicted_s * (1 + 1e-9)
