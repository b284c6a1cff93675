"""Mixture-of-experts: routing statistics, the MoE block, shipped MoE models (issue 12)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import preserve_cp as pc
from preserve_cp.cli import main
from preserve_cp.graph import MoEBlock, layer_specs
from preserve_cp.models import ModelConfig
from preserve_cp.moe import expected_distinct_experts, inclusion_probabilities
from preserve_cp.plan import Plan


def moe_model(experts: int, top_k: int, **kw: object) -> ModelConfig:
    base = pc.load_model("qwen3-30b-a3b").model_dump()
    base.update(num_layers=2, num_experts=experts, experts_per_token=top_k, name="tiny-moe")
    base.update(kw)
    return ModelConfig(**base)


def expert_bytes_read(g, layer: int = 0) -> float:
    a, b = g.nodes[f"L{layer}.experts_gate_up"], g.nodes[f"L{layer}.experts_down"]
    return a["reads"][f"L{layer}.w_experts_gate_up"] + b["reads"][f"L{layer}.w_experts_down"]


@pytest.mark.parametrize(
    ("experts", "top_k", "batch"),
    [(8, 2, 1), (8, 2, 4), (8, 2, 16), (128, 8, 8), (128, 8, 64), (256, 8, 32), (16, 1, 3)],
)
def test_expert_bytes_follow_uniform_routing(experts: int, top_k: int, batch: int) -> None:
    m = moe_model(experts, top_k)
    tp = 2
    g = pc.build_graph(m, pc.Workload("decode", batch, 512, tp))
    one_expert = 3 * m.hidden_size * m.moe_intermediate_size / tp * 2  # bf16, per rank
    distinct = experts * (1 - (1 - top_k / experts) ** batch)
    assert expert_bytes_read(g) == pytest.approx(distinct * one_expert, rel=1e-6, abs=2)
    node = g.nodes["L0.experts_gate_up"]
    assert node["experts"] == pytest.approx(distinct)
    assert node["rows"] == pytest.approx(batch * top_k / distinct)
    # compute covers top_k experts per token, whatever the routing
    assert node["flops"] == 2.0 * batch * top_k * m.hidden_size * 2 * m.moe_intermediate_size / tp
    assert "L0.w_experts_gate_up" in node["prefetchable"]


def test_batch_one_reads_top_k_and_large_batch_all() -> None:
    m = moe_model(128, 8)
    one = 3 * m.hidden_size * m.moe_intermediate_size * 2
    small = expert_bytes_read(pc.build_graph(m, pc.Workload("decode", 1, 512)))
    large = expert_bytes_read(pc.build_graph(m, pc.Workload("decode", 4096, 512)))
    assert small == pytest.approx(8 * one, rel=1e-9)
    assert large == pytest.approx(128 * one, rel=1e-6)
    # prefill: B = batch x prompt tokens; 2 x 64 tokens of top-8 of 128 nearly cover them all
    pre = pc.build_graph(m, pc.Workload("prefill", 2, 64))
    want = 128 * (1 - (1 - 8 / 128) ** 128)
    assert pre.nodes["L0.experts_down"]["experts"] == pytest.approx(want)


def test_weights_held_count_every_expert() -> None:
    m = moe_model(128, 8)
    same = moe_model(128, 8)
    g1 = pc.build_graph(m, pc.Workload("decode", 1, 512, 2))
    g64 = pc.build_graph(same, pc.Workload("decode", 64, 512, 2))
    assert g1.graph["weights_bytes_per_device"] == g64.graph["weights_bytes_per_device"]
    experts = 2 * 128 * 3 * m.hidden_size * m.moe_intermediate_size / 2 * 2
    assert g1.graph["weights_bytes_per_device"] > experts


@pytest.mark.parametrize(("experts", "top_k", "s"), [(8, 2, 1.0), (128, 8, 0.7), (64, 6, 1.2)])
def test_zipf_inclusion_probabilities(experts: int, top_k: int, s: float) -> None:
    pi = inclusion_probabilities(experts, top_k, f"zipf:{s}")
    assert sum(pi) == pytest.approx(top_k, rel=1e-9)
    assert all(0 <= p <= 1 for p in pi) and pi == sorted(pi, reverse=True)
    assert inclusion_probabilities(experts, top_k, "zipf:0") == pytest.approx(
        [top_k / experts] * experts
    )
    assert expected_distinct_experts(experts, top_k, 1, f"zipf:{s}") == pytest.approx(top_k)
    for b in (4, 16, 64):  # skewed popularity hits fewer distinct experts
        assert expected_distinct_experts(experts, top_k, b, f"zipf:{s}") < (
            expected_distinct_experts(experts, top_k, b)
        )


@pytest.mark.parametrize(
    ("experts", "top_k", "s", "tokens"),
    [(8, 2, 1.0, 4), (128, 8, 1.0, 32), (128, 8, 0.5, 8), (64, 6, 1.2, 16), (8, 2, 2.0, 4)],
)
def test_zipf_approximation_against_sampling(experts: int, top_k: int, s: float, tokens: int):
    """Top-k without replacement (sequential in popularity, Gumbel top-k) vs our formula."""
    rng = np.random.default_rng(12)
    p = np.arange(1, experts + 1, dtype=float) ** -s
    p /= p.sum()
    keys = np.log(p) + rng.gumbel(size=(3000, tokens, experts))
    picks = np.argsort(-keys, axis=2)[:, :, :top_k]
    sampled = np.mean([len(np.unique(x)) for x in picks])
    ours = expected_distinct_experts(experts, top_k, tokens, f"zipf:{s}")
    assert ours == pytest.approx(sampled, rel=0.02)


def test_routing_option() -> None:
    m = moe_model(128, 8)
    u = pc.build_graph(m, pc.Workload("decode", 32, 512))
    z = pc.build_graph(m, pc.Workload("decode", 32, 512, routing="zipf:1"))
    assert expert_bytes_read(z) < expert_bytes_read(u)
    assert z.graph["workload"]["routing"] == "zipf:1"
    assert "routing" not in u.graph["workload"]  # dense-era workload dicts unchanged
    for bad in ("zipf", "zipf:x", "zipf:-1", "top1", 3):
        with pytest.raises(pc.InputError, match=r"^workload: routing: expected 'uniform' or"):
            pc.Workload(routing=bad)  # type: ignore[arg-type]


def test_layer_schedule_and_shared_experts() -> None:
    m = moe_model(
        16, 2, num_layers=6, first_k_dense_replace=1, moe_layer_step=2, num_shared_experts=1
    )
    assert [m.is_moe_layer(i) for i in range(6)] == [False, True, False, True, False, True]
    specs = layer_specs(m, pc.Workload(tp=2))
    assert isinstance(specs[1].blocks[1], MoEBlock) and specs[1].blocks[1].shared_width == 384
    g = pc.build_graph(m, pc.Workload("decode", 4, 512, 2))
    assert "L0.gate_up" in g and "L0.router" not in g
    assert g.nodes["L1.shared_down"]["reads"]["L1.w_shared_down"] == 768 // 2 * 2048 * 2
    assert g.nodes["L1.router"]["reads"]["L1.w_router"] == 2048 * 16 * 2  # replicated
    assert list(g.successors("L1.experts_down")) == ["L1.shared_gate_up"]
    assert pc.validate_graph(g) is g


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"moe_intermediate_size": None}, "moe_intermediate_size to be given with num_experts"),
        ({"experts_per_token": 9, "num_experts": 8}, "experts_per_token (9) to be at most"),
        ({"first_k_dense_replace": 2}, "to leave at least one MoE layer of 2"),
        ({"shared_expert_intermediate_size": 64}, "only with num_shared_experts"),
        ({"num_experts": 0}, "num_experts: expected greater than 0"),
    ],
)
def test_moe_fields_validated(tmp_path, update: dict, message: str) -> None:
    import yaml

    data = moe_model(8, 2).model_dump()
    data.update(update)
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(pc.InputError) as e:
        pc.load_model(str(path))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_dense_fields_reject_moe_schedule(tmp_path) -> None:
    import yaml

    data = pc.load_model("llama3-8b").model_dump()
    data["first_k_dense_replace"] = 1
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(pc.InputError, match="first_k_dense_replace only with num_experts"):
        pc.load_model(str(path))


PUBLISHED = {  # name: (total, active) parameters, billions
    "mixtral-8x7b": (46.7, 12.9),
    "mixtral-8x22b": (141.0, 39.0),
    "qwen3-235b-a22b": (235.0, 22.0),
    "qwen3-30b-a3b": (30.5, 3.3),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_totals(name: str, capsys) -> None:
    assert main(["models", "show", name, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    total, active = PUBLISHED[name]
    assert out["total_params"] / 1e9 == pytest.approx(total, rel=0.01)
    assert out["active_params"] / 1e9 == pytest.approx(active, rel=0.02)
    assert out["moe_layers"] == out["num_layers"] == len(out["layer_schedule"])
    assert out["layer_schedule"][0] == "attention+moe"


def test_dense_totals_unchanged() -> None:
    c = pc.load_model("llama3-70b").param_counts()
    assert c["total"] == c["active"]
    assert c["total"] / 1e9 == pytest.approx(70.55, rel=0.001)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_shipped_moe_graphs_build(name: str) -> None:
    m = pc.load_model(name)
    for tp in (1, 2, 4, 8):
        g = pc.build_graph(m, pc.Workload("decode", 8, 1024, tp))
        assert pc.validate_graph(g) is g
        assert g.number_of_nodes() > m.num_layers * 10


def test_moe_decode_grows_with_batch_more_than_dense() -> None:
    """Vanilla decode step, batch 64 over batch 1, context 1024, tp 1, bf16, h200-sxm.

    Qwen3-30B-A3B (3.3 B active) reads ~8 experts per layer at batch 1 and ~126 of 128 at
    64; Qwen2.5-7B (7.6 B, dense) reads the same weights at any batch.
    """

    def step(name: str, batch: int) -> float:
        g = pc.build_graph(name, pc.Workload("decode", batch, 1024, 1))
        return pc.simulate(g, "h200-sxm", Plan("vanilla")).makespan_s

    moe = step("qwen3-30b-a3b", 64) / step("qwen3-30b-a3b", 1)
    dense = step("qwen2.5-7b", 64) / step("qwen2.5-7b", 1)
    assert moe > 3.0 and dense < 1.5 and moe > 2.5 * dense
