"""Stages 2-3: the graph builder (contract, sharding) and the cost model, with hand numbers."""

from __future__ import annotations

import pytest

from preserve_cp import InputError, Workload, build_graph, load_hardware
from preserve_cp.costs import collective_time_s, op_costs

INT8 = dict(weight_dtype="int8", act_dtype="int8", kv_dtype="int8")


def test_contract_attributes_on_every_node():
    g = build_graph("llama3-8b", Workload("decode", 2, 4096, 4))
    for _, a in g.nodes(data=True):
        assert set(a) >= {
            "kind",
            "resource",
            "flops",
            "reads",
            "writes_bytes",
            "prefetchable",
            "layer",
        }
        assert set(a["prefetchable"]) <= set(a["reads"])
        assert a["resource"] in ("compute", "comm")


def test_llama3_70b_per_device_weights_at_tp8():
    g = build_graph("llama3-70b", Workload("decode", 4, 16384, 8, **INT8))
    r = {n: g.nodes[n]["reads"] for n in ("L5.qkv", "L5.o_proj", "L5.gate_up", "L5.down")}
    assert r["L5.qkv"]["L5.w_qkv"] == 8192 * (8192 // 8 + 2 * 1024 // 8)  # 10,485,760
    assert r["L5.o_proj"]["L5.w_o"] == 8192 // 8 * 8192  # 8,388,608
    assert r["L5.gate_up"]["L5.w_gate_up"] == 8192 * 2 * 28672 // 8  # 58,720,256
    assert r["L5.down"]["L5.w_down"] == 28672 // 8 * 8192  # 29,360,128
    layer = sum(v for x in r.values() for k, v in x.items() if ".w_" in k)
    assert layer == 855_638_016 // 8  # one eighth of the layer's parameters, 1 byte each
    # KV-cache read by one layer's attention: batch 4 x 16384 tokens x (K,V) x 1 head x 128
    assert g.nodes["L5.attention"]["reads"]["L5.kv_cache"] == 4 * 16384 * 2 * 128


def test_kv_heads_replicated_when_tp_exceeds_them():
    # Qwen2.5-72B has 8 KV heads; at tp 16 each device keeps one (replicated), not half
    g = build_graph("qwen2.5-72b", Workload("decode", 1, 1000, 16))
    assert g.nodes["L0.attention"]["reads"]["L0.kv_cache"] == 1000 * 2 * 128 * 2


def test_collectives_where_megatron_puts_them():
    g = build_graph("llama3-8b", Workload("decode", 1, 128, 2))
    kinds = [g.nodes[n]["kind"] for n in g.successors("L0.o_proj")]
    assert kinds == ["allreduce"]
    assert [g.nodes[n]["kind"] for n in g.successors("L0.down")] == ["allreduce"]
    falcon = build_graph("falcon-40b", Workload("decode", 1, 128, 8))
    per_layer = [
        n
        for n in falcon
        if falcon.nodes[n]["kind"] == "allreduce" and falcon.nodes[n]["layer"] == 0
    ]
    assert per_layer == ["L0.allreduce"]  # parallel attention + MLP: one allreduce
    single = build_graph("llama3-8b", Workload("decode", 1, 128, 1))
    assert not any(a["resource"] == "comm" for _, a in single.nodes(data=True))


@pytest.mark.parametrize(
    "model,tp,word",
    [
        ("qwen2-7b", 8, "num_heads"),
        ("phi3-medium", 3, "num_heads 40"),
    ],
)
def test_tp_that_cannot_split_heads_is_a_clear_error(model, tp, word):
    with pytest.raises(InputError, match=word):
        build_graph(model, Workload("decode", 1, 128, tp))


def test_allreduce_time_by_hand():
    b2 = load_hardware("ascend-910b2")
    # full mesh, 8 devices, 4 x 8192 bf16 = 65,536 B:
    # 10 us + 2 x 0.5 us + 2 x 7/8 x 65536 / (196e9 x 0.8) = 11.73143 us
    assert collective_time_s("allreduce", 65536, 8, b2) == pytest.approx(11.731428e-6, rel=1e-6)
    ring = b2.with_overrides(topology="ring")
    # ring: 2 x 7 steps of 0.5 us instead of 2
    assert collective_time_s("allreduce", 65536, 8, ring) == pytest.approx(17.731428e-6, rel=1e-6)
    assert collective_time_s("allreduce", 1e9, 1, b2) == 0.0


def test_roofline_with_l2_term_by_hand():
    b2 = load_hardware("ascend-910b2")
    g = build_graph("llama3-70b", Workload("decode", 4, 16384, 8, **INT8))
    c = op_costs(g, b2)["L0.gate_up"]
    w = 58_720_256
    # weight + int8 input (quantized by the kernel before) + 16-bit output activations
    hbm = w + 4 * 8192 + 4 * 7168 * 2
    # memory-bound: hbm / (1.6e12 x 0.8) + 2 us launch overhead
    assert c.duration_s(0) == pytest.approx(hbm / 1.28e12 + 2e-6)
    # all weights in L2: max(HBM part, L2 part at 4.75 TB/s) + 2 us
    assert c.duration_s(w) == pytest.approx(max((hbm - w) / 1.28e12, w / 4.75e12) + 2e-6)
    assert c.min_duration_s() <= c.duration_s(w)
