"""Issue 12: Llama 4 (chunked attention, NoPE, weightless qk-norm, interleaved MoE), gpt-oss
(sinks, biases, alternating windows, MXFP4 experts), fp4 and per-group precisions, native
precisions with fallback, uneven KV-head layouts (Phi-3-medium), parameter totals."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random

import pytest
import yaml

import preserve_cp as pc
from preserve_cp.cli import main
from preserve_cp.costs import compute_dtype, op_costs
from preserve_cp.footprint import layer_footprint
from preserve_cp.moe import expected_distinct_experts
from preserve_cp.units import DTYPE_BYTES

#: name: (total, active, which active count the publisher uses), billions
PUBLISHED = {
    "deepseek-v3": (671.0, 37.0, "active_params"),
    "mixtral-8x7b": (46.7, 12.9, "active_params"),
    "mixtral-8x22b": (141.0, 39.0, "active_params"),
    "qwen3-235b-a22b": (235.0, 22.0, "active_params"),
    "qwen3-30b-a3b": (30.5, 3.3, "active_params"),
    "llama4-scout": (109.0, 17.0, "active_params"),
    "llama4-maverick": (400.0, 17.0, "active_params"),
    "gpt-oss-120b": (116.8, 5.1, "active_params_no_embedding"),
    "gpt-oss-20b": (20.9, 3.6, "active_params_no_embedding"),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_parameter_counts(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "show", name, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    total, active, field = PUBLISHED[name]
    assert out["total_params"] / 1e9 == pytest.approx(total, rel=0.01)
    assert out[field] / 1e9 == pytest.approx(active, rel=0.02)
    assert out["active_params_no_embedding"] < out["active_params"] < out["total_params"]
    assert "active_no_embedding: active without the input embedding" in out["params_definition"]


def _kv_heads_brute(heads: int, kv: int, tp: int) -> int:
    group = heads // kv
    per = heads // tp
    return max(len({q // group for q in range(r * per, (r + 1) * per)}) for r in range(tp))


def test_kv_heads_per_rank_matches_enumeration() -> None:
    rng = random.Random(12)
    base = pc.load_model("llama3-8b")
    for _ in range(300):
        kv = rng.choice([1, 2, 3, 4, 5, 6, 8, 10, 12, 16])
        heads = kv * rng.choice([1, 2, 3, 4, 5, 8])
        tp = rng.choice([d for d in range(1, heads + 1) if heads % d == 0])
        m = base.model_copy(update={"num_heads": heads, "num_kv_heads": kv})
        assert m.kv_heads_per_rank(tp) == _kv_heads_brute(heads, kv, tp), (heads, kv, tp)


@pytest.mark.parametrize(("tp", "kv_heads"), [(1, 10), (2, 5), (4, 3), (8, 2)])
def test_phi3_medium_runs_at_tp_4_and_8_with_uneven_kv_heads(tp: int, kv_heads: int) -> None:
    g = pc.build_graph("phi3-medium", pc.Workload("decode", 2, 4096, tp))
    # 2 sequences x 2047-token window x (K and V) x heads x 128 x 2 bytes
    assert g.nodes["L0.attention"]["reads"]["L0.kv_cache"] == 2 * 2047 * 2 * kv_heads * 128 * 2
    w = g.nodes["L0.qkv"]["reads"]["L0.w_qkv"]
    assert w == 5120 * (40 * 128 // tp + 2 * kv_heads * 128) * 2
    assert layer_footprint("phi3-medium", tp, dtype="bf16", batch=2, context=4096).kv_cache_bytes
    with pytest.raises(pc.InputError, match="tp 3 does not divide num_heads 40"):
        pc.build_graph("phi3-medium", pc.Workload("decode", tp=3))


def test_llama4_scout_chunked_nope_and_qk_norm() -> None:
    m = pc.load_model("llama4-scout")
    assert m.nope_layers == list(range(3, 48, 4))
    g = pc.build_graph(m, pc.Workload("decode", 4, 12288, 8))
    per_token = 2 * 1 * 128 * 2  # K and V, one KV head per rank (8 over 8), bf16
    # RoPE layer: chunks of 8192, the step at 12288 reads the 4096 tokens of its chunk
    assert g.nodes["L0.attention"]["reads"]["L0.kv_cache"] == 4 * 4096 * per_token
    assert g.nodes["L0.attention"]["context"] == 4096
    assert "L0.rope" in g.nodes and "L0.qk_norm" in g.nodes
    assert not [t for t in g.nodes["L0.qk_norm"]["reads"] if t.endswith(".w")]  # weightless
    # NoPE layer: global attention, no rope, no qk-norm
    assert g.nodes["L3.attention"]["reads"]["L3.kv_cache"] == 4 * 12288 * per_token
    assert "L3.rope" not in g.nodes and "L3.qk_norm" not in g.nodes
    # a step that starts a new chunk reads no cached tokens on the chunked layers
    g = pc.build_graph(m, pc.Workload("decode", 4, 16384, 8))
    assert g.nodes["L0.attention"]["reads"]["L0.kv_cache"] == 0
    assert g.nodes["L3.attention"]["reads"]["L3.kv_cache"] == 4 * 16384 * per_token
    assert g.graph["kv_cache_bytes_per_device"] == 48 * 4 * 16384 * per_token  # all held
    costs = op_costs(g, pc.load_hardware("h100-sxm"))
    assert costs["L0.attention"].hbm_bytes < costs["L3.attention"].hbm_bytes
    # every MoE layer has a shared expert; the schedule names chunked and NoPE layers
    assert "L0.shared_down" in g.nodes
    sched = m.layer_schedule()
    assert sched[0] == "attention(chunk 8192)+moe" and sched[3] == "attention(nope)+moe"


def test_chunked_prefill_counts_pairs_within_chunks() -> None:
    m = pc.load_model("llama4-scout")
    c, chunk = 10000, 8192
    g = pc.build_graph(m, pc.Workload("prefill", 1, c, 8))
    q_l = 40 * 128 // 8
    rem = c - chunk
    pairs_chunked = chunk * (chunk + 1) / 2 + rem * (rem + 1) / 2
    assert g.nodes["L0.attention"]["flops"] == pytest.approx(4.0 * pairs_chunked * q_l)
    assert g.nodes["L3.attention"]["flops"] == pytest.approx(4.0 * c * (c + 1) / 2 * q_l)


def test_llama4_maverick_alternates_dense_and_moe() -> None:
    m = pc.load_model("llama4-maverick")
    assert [m.is_moe_layer(i) for i in range(4)] == [False, True, False, True]
    g = pc.build_graph(m, pc.Workload("decode", 1, 4096, 8))
    assert g.nodes["L0.down"]["reads"]["L0.w_down"] == 16384 // 8 * 5120 * 2
    assert "L1.experts_down" in g.nodes and "L0.experts_down" not in g.nodes
    assert "L0.qk_norm" not in g.nodes  # use_qk_norm false


def test_gpt_oss_sinks_biases_windows_and_fp4_experts() -> None:
    m = pc.load_model("gpt-oss-120b")
    wl = pc.Workload("decode", 8, 4096, 4)  # bf16 deployment; the checkpoint's experts are fp4
    g = pc.build_graph(m, wl)
    assert g.graph["weight_dtypes"] == {"experts": "fp4"}
    a0, a1 = g.nodes["L0.attention"], g.nodes["L1.attention"]
    assert a0["reads"]["L0.sinks"] == 64 // 4 * 2  # one bf16 logit per local query head
    assert a0["context"] == 128 and a1["context"] == 4096  # sliding on even layers
    q_l, kv_l = 64 * 64 // 4, 8 // 4 * 64
    assert g.nodes["L0.qkv"]["reads"]["L0.w_qkv"] == (2880 * (q_l + 2 * kv_l) + q_l + 2 * kv_l) * 2
    assert g.nodes["L0.o_proj"]["reads"]["L0.w_o"] == (q_l * 2880 + 2880) * 2
    d = expected_distinct_experts(128, 4, 8)
    up = g.nodes["L0.experts_gate_up"]["reads"]["L0.w_experts_gate_up"]
    assert up == round(d * 2880 * (2 * 2880 // 4) * 4.25 / 8)
    assert g.nodes["L0.router"]["reads"]["L0.w_router"] == 2880 * 128 * 2  # bf16
    # deployed in fp8, attention goes to fp8 and the experts stay fp4
    g8 = pc.build_graph(m, pc.Workload("decode", 8, 4096, 4, dtype="fp8"))
    assert g8.nodes["L0.experts_gate_up"]["reads"]["L0.w_experts_gate_up"] == up
    assert g8.nodes["L0.o_proj"]["reads"]["L0.w_o"] == q_l * 2880 + 2880


def test_fp4_dtypes_and_native_precision_fallback() -> None:
    assert DTYPE_BYTES["fp4"] == 4.25 / 8 and DTYPE_BYTES["nvfp4"] == 4.5 / 8
    g = pc.build_graph("llama3-8b", pc.Workload("decode", 1, 2048, 1, dtype="fp4"))
    assert g.nodes["L0.qkv"]["reads"]["L0.w_qkv"] == round(4096 * 6144 * 4.25 / 8)
    b200, h100, a100 = (pc.load_hardware(n) for n in ("b200", "h100-sxm", "a100-sxm-80g"))
    assert compute_dtype(b200, "fp4") == "fp4" and compute_dtype(h100, "fp4") == "fp8"
    assert compute_dtype(a100, "fp4") == "bf16" and compute_dtype(a100, "fp8") == "bf16"
    pre = pc.build_graph("llama3-8b", pc.Workload("prefill", 4, 4096, 1, dtype="fp4"))
    node = pre.nodes["L0.down"]
    for hw, peak in ((b200, 9000e12), (h100, 1978.9e12)):
        c = op_costs(pre, hw)["L0.down"]
        assert c.compute_s == pytest.approx(node["flops"] / (peak * hw.matmul_efficiency))
    npu = pc.load_hardware("ascend-910b2")
    only_int8 = dataclasses.replace(npu, matmul_flops_per_s={"int8": 1e15})
    with pytest.raises(pc.InputError, match="no bf16 peak and none of its fallbacks"):
        op_costs(pc.build_graph("llama3-8b", pc.Workload("decode", 1, 1024, 1)), only_int8)


def test_deepseek_checkpoint_precisions() -> None:
    g = pc.build_graph("deepseek-v3", pc.Workload("decode", 1, 1024, 8))  # bf16 deployment
    assert g.graph["weight_dtypes"] == {
        "attention": "fp8",
        "experts": "fp8",
        "mlp": "fp8",
        "shared_experts": "fp8",
    }
    assert g.nodes["L0.kv_a"]["reads"]["L0.w_kv_a"] == 7168 * 576  # fp8: 1 byte
    assert g.nodes["lm_head"]["reads"]["lm_head.w"] == 129280 // 8 * 7168 * 2  # bf16
    assert g.nodes["L3.router"]["reads"]["L3.w_router"] == 7168 * 256 * 2


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"sliding_window": 4096, "sliding_window_layers": "all"}, "not both"),
        ({"nope_layers": [3, 48]}, "nope_layers below num_layers"),
        ({"nope_layers": [3, 3]}, "without repeats"),
        ({"weight_dtypes": {"experts": "fp4"}}, "weight_dtypes.experts only with num_experts"),
        ({"weight_dtypes": {"attention": "fp5"}}, "weight_dtypes.attention"),
    ],
)
def test_new_fields_are_validated(tmp_path, update: dict, message: str) -> None:
    data = pc.load_model("llama3-8b").model_dump()
    data.update(attention_chunk_size=8192, **update)
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(pc.InputError, match=message):
        pc.load_model(str(path))


def test_footprint_shows_experts_held_and_read() -> None:
    f1, f64 = (
        layer_footprint("deepseek-v3", 8, dtype="fp8", batch=b, context=1024) for b in (1, 64)
    )
    expert = 3 * 7168 * 2048 / 8
    fixed = 7168 * 256 + 3 * 7168 * 2048 / 8  # router and one shared expert, all fp8
    assert f1.layer == "moe" and f1.mlp_weights_bytes == pytest.approx(256 * expert + fixed)
    assert f1.expert_weights_read_bytes == pytest.approx(8 * expert + fixed)
    d = expected_distinct_experts(256, 8, 64)
    assert f64.expert_weights_read_bytes == pytest.approx(d * expert + fixed)
    assert f64.kv_cache_bytes == 64 * 1024 * 576  # MLA latent, whole on every device
    fp4 = layer_footprint("gpt-oss-20b", 1, dtype="bf16", batch=1)
    assert fp4.mlp_weights_bytes == pytest.approx(32 * 3 * 2880 * 2880 * 4.25 / 8 + 2880 * 32 * 2)


@pytest.mark.parametrize(
    ("name", "tp"),
    list(itertools.product(["llama4-scout", "llama4-maverick", "gpt-oss-120b"], [1, 2, 4, 8])),
)
def test_new_models_build_and_validate(name: str, tp: int) -> None:
    g = pc.build_graph(name, pc.Workload("decode", 4, 8000, tp))
    assert pc.validate_graph(g) is g
    assert g.graph["weights_bytes_per_device"] > 0
