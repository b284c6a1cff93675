"""The refining stages of solve(): pruning (dropping every chunk of one role) and tuning
(scaling every chunk of one role) while the simulated makespan falls (docs/optimizer.md §2)."""

from __future__ import annotations

import pytest

import preserve_cp as pc
from preserve_cp.optimize import Deadline
from preserve_cp.plan import Plan, Prefetch
from preserve_cp.solve import SolveOptions, chunk_roles, prepare, prune, scale_role, tune


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
    assert r.verified and "+prune" in r.method
    assert r.predicted_makespan_s is None
    assert r.makespan_s < 7.35e-3  # 7.3816 ms before pruning
    assert r.lower_bound_s <= r.makespan_s


def _llama3b(layers: int):
    model = pc.load_model("llama3.2-3b").model_copy(update={"num_layers": layers})
    g = pc.build_graph(model, pc.Workload("decode", 8, 8192, 4, "fp8", "fp8", "fp8"))
    return g, prepare(g, "h100-sxm", SolveOptions())


def _sizes(g) -> dict[str, float]:
    return {
        t: float(a["reads"][t]) for _, a in g.nodes(data=True) for t in a.get("prefetchable", [])
    }


def test_scale_role_keeps_tensors_whole_and_chunks_contiguous():
    g, problem = _llama3b(4)
    plan = pc.solve(g, "h100-sxm", time_limit_s=20).plan
    size = _sizes(g)
    for idx in chunk_roles(plan).values():
        for f in (0.5, 1.7, 3.0):
            got = scale_role(plan, idx, f, size)
            per: dict[str, list] = {}
            for p in got.prefetches:
                per.setdefault(p.tensor, []).append(p)
            for t, chunks in per.items():
                at = 0.0
                for p in chunks:
                    assert p.offset_bytes == pytest.approx(at) and p.bytes > 0
                    at += p.bytes
                assert at <= size[t] * (1 + 1e-12)
            assert problem.run(got).verified


def test_tune_fills_what_a_shrunk_role_left_idle():
    g, problem = _llama3b(4)
    base = problem.run(pc.solve(g, "h100-sxm", time_limit_s=20).plan)
    roles = chunk_roles(base.plan)
    kv = next(k for k in roles if k.startswith("kv_cache"))
    worse = problem.run(scale_role(base.plan, roles[kv], 0.6, _sizes(g)))
    assert worse.verified and worse.makespan_s > base.makespan_s * 1.002
    got = tune(problem, worse, Deadline(60.0))
    assert got is not None and got.verified and not got.schedule.dropped
    assert got.makespan_s <= base.makespan_s * (1 + 2e-3)  # back within 0.2 % of the optimum
    assert got.makespan_s < worse.makespan_s * (1 - 1e-3)
    # the plan returned is the one the simulator ran
    assert problem.run(got.plan).makespan_s == pytest.approx(got.makespan_s, rel=1e-12)


def test_tune_stops_at_the_deadline_and_says_so():
    g, problem = _llama3b(2)
    c = problem.run(pc.solve(g, "h100-sxm", time_limit_s=20).plan)
    d = Deadline(0.0)
    assert tune(problem, c, d) is None
    assert "tune" in d.cut


@pytest.mark.slow
def test_the_worst_bench_row_is_tuned():
    """Llama-3.2-3B decode on h100-sxm (bench/results-scale.txt, 2026-12-01): the chain
    model's plan stopped the first KV-cache chunk 0.86 us before the attention allreduce
    ended, in every layer; tuning scales that role up and the step falls 1.2 %."""
    g = pc.build_graph("llama3.2-3b", pc.Workload("decode", 8, 8192, 4, "fp8", "fp8", "fp8"))
    r = pc.solve(g, "h100-sxm")
    assert r.verified and "+tune" in r.method
    assert r.makespan_s < 2.05e-3  # 2.0686 ms before tuning
    assert r.lower_bound_s <= r.makespan_s


@pytest.mark.slow
def test_a_winning_streaming_plan_is_tuned_too():
    """Llama-3-70B fp8 decode on h100-sxm with a quarter of HBM left to prefetches during
    kernels (docs/fidelity.md's share table): the chain models' plans stay behind the
    streaming baseline, so the streaming plan is refined, and the answer beats it."""
    import dataclasses

    hw = dataclasses.replace(pc.load_hardware("h100-sxm"), prefetch_share_during_ops=0.25)
    g = pc.build_graph("llama3-70b", pc.Workload("decode", 4, 16384, 8, "fp8", "fp8", "fp8"))
    r = pc.solve(g, hw)
    assert r.verified and r.method.startswith("kept streaming+tune")
    assert r.makespan_s < r.streaming_makespan_s * (1 - 1e-3)  # 7.2322 vs 7.2462 ms
    assert r.lower_bound_s <= r.makespan_s
