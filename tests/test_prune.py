"""The pruning stage of solve(): dropping every chunk of one role while the simulated
makespan falls (docs/optimizer.md §2)."""

from __future__ import annotations

import pytest

import preserve_cp as pc
from preserve_cp.optimize import Deadline
from preserve_cp.plan import Plan, Prefetch
from preserve_cp.solve import SolveOptions, chunk_roles, prepare, prune


def _qwen(layers: int):
    model = pc.load_model("qwen2-72b").model_copy(update={"num_layers": layers})
    g = pc.build_graph(model, pc.Workload("decode", 1, 2048, 8, "fp8", "fp8", "fp8"))
    return g, prepare(g, "h100-sxm", SolveOptions())


def _with_kv_chunks(g, plan: Plan) -> Plan:
    """The plan plus one whole KV-cache chunk per layer, released with the layer's first
    chunk: each costs a chunk latency to save a fraction of one."""
    out: list[Prefetch] = []
    seen: set[int] = set()
    for p in plan.prefetches:
        out.append(p)
        layer = g.nodes[p.consumer].get("layer", -1)
        if layer >= 0 and layer not in seen and "kv_cache" not in p.tensor:
            seen.add(layer)
            t = f"L{layer}.kv_cache"
            size = g.nodes[f"L{layer}.attention"]["reads"][t]
            out.append(Prefetch(t, float(size), f"L{layer}.attention", anchor=p.anchor))
    return Plan(plan.name, tuple(out), plan.order)


def test_chunk_roles_group_layers_and_chunk_places():
    p = Plan(
        "p",
        (
            Prefetch("L0.w_o", 1, "L0.o_proj"),
            Prefetch("L0.w_o", 2, "L0.o_proj", offset_bytes=1),
            Prefetch("L7.w_o", 1, "L7.o_proj"),
            Prefetch("L7.kv_cache", 1, "L7.attention"),
        ),
    )
    assert chunk_roles(p) == {"w_o#0": [0, 2], "w_o#1": [1], "kv_cache#0": [3]}


def test_prune_drops_chunks_that_cost_more_than_they_save():
    g, problem = _qwen(4)
    base = problem.run(pc.solve(g, "h100-sxm", time_limit_s=20).plan)
    worse = problem.run(_with_kv_chunks(g, base.plan))

    def kv(c):
        return sum("kv_cache" in p.tensor for p in c.plan.prefetches)

    assert worse.verified and kv(worse) == kv(base) + 4
    assert worse.makespan_s > base.makespan_s  # the added chunks hurt
    got = prune(problem, worse, Deadline(60.0))
    assert got is not None and got.verified and not got.schedule.dropped
    assert got.makespan_s < worse.makespan_s * (1 - 1e-6)
    assert got.makespan_s <= base.makespan_s * (1 + 1e-9)
    assert kv(got) == kv(base)  # the added chunks went, the optimiser's stayed
    # a fixed point: nothing more to drop, and the plan the simulator ran is the one returned
    assert prune(problem, got, Deadline(60.0)) is None
    assert problem.run(got.plan).makespan_s == pytest.approx(got.makespan_s, rel=1e-12)


def test_prune_stops_at_the_deadline_and_says_so():
    g, problem = _qwen(2)
    c = problem.run(_with_kv_chunks(g, pc.solve(g, "h100-sxm", time_limit_s=20).plan))
    d = Deadline(0.0)
    assert prune(problem, c, d) is None
    assert "prune" in d.cut


@pytest.mark.slow
def test_the_worst_bench_row_is_pruned():
    """Qwen2-72B decode on h100-sxm (bench/results-scale.txt): the chain model's plan keeps a
    0.51 MB KV-cache chunk per layer; without them the step is 0.8 % shorter."""
    g = pc.build_graph("qwen2-72b", pc.Workload("decode", 1, 2048, 8, "fp8", "fp8", "fp8"))
    r = pc.solve(g, "h100-sxm")
    assert r.verified and r.method.endswith("+prune")
    assert r.predicted_makespan_s is None
    assert r.makespan_s < 7.35e-3  # 7.3816 ms before pruning
    assert r.lower_bound_s <= r.makespan_s
