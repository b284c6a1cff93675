"""MLA attention and DeepSeek-V3/R1 (issue 12, items 1 and 5)."""

from __future__ import annotations

import json

import pytest
import yaml

import preserve_cp as pc
from preserve_cp.cli import main
from preserve_cp.graph import MLABlock, layer_specs
from preserve_cp.plan import Plan
from preserve_cp.simulate import verify
from preserve_cp.solve import machine_for

FP8 = ("fp8", "fp8", "fp8")


@pytest.mark.parametrize("name", ["deepseek-v3", "deepseek-r1"])
def test_deepseek_parameter_totals(name: str, capsys) -> None:
    """671 B total without the MTP module (1 %), 37 B activated per token (2 %), DSV3 report."""
    assert main(["models", "show", name, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["total_params"] / 1e9 == pytest.approx(671.0, rel=0.01)
    assert out["active_params"] / 1e9 == pytest.approx(37.0, rel=0.02)
    assert out["moe_layers"] == 58 and out["num_layers"] == 61
    assert out["layer_schedule"][:4] == ["mla+mlp"] * 3 + ["mla+moe"]


def test_mla_attention_weights_per_layer() -> None:
    # W_DQ 7168x1536 (+1536 norm), W_UQ+QR 1536x(128x192), W_DKV+KR 7168x576 (+512 norm),
    # W_UK|UV 512x(128x256), W_O (128x128)x7168: 187.1 M (reference/moe.md 1)
    m = pc.load_model("deepseek-v3")
    expect = (
        7168 * 1536 + 1536 + 1536 * 128 * 192 + 7168 * 576 + 512
        + 512 * 128 * 256 + 128 * 128 * 7168
    )  # fmt: skip
    assert m.attention_params() == expect


def test_mla_block_bytes_and_flops_per_rank() -> None:
    """Absorbed decode form at tp 8: 16 query heads per rank, the whole latent cache read."""
    wl = pc.Workload("decode", 4, 1024, 8, *FP8)
    m = pc.load_model("deepseek-v3")
    spec = layer_specs(m, wl)[0].blocks[0]
    assert spec == MLABlock(16, 1536, 512, 128, 64, 128)
    g = pc.build_graph(m, wl)
    n = g.nodes
    assert n["L0.q_a"]["reads"]["L0.w_q_a"] == 7168 * 1536  # replicated
    assert n["L0.q_b"]["reads"]["L0.w_q_b"] == 1536 * 16 * 192
    assert n["L0.kv_a"]["reads"]["L0.w_kv_a"] == 7168 * 576  # replicated
    assert n["L0.q_absorb"]["reads"]["L0.w_uk"] == 16 * 128 * 512
    assert n["L0.v_absorb"]["reads"]["L0.w_uv"] == 16 * 128 * 512
    assert n["L0.o_proj"]["reads"]["L0.w_o"] == 16 * 128 * 7168
    att = n["L0.attention"]
    assert att["reads"]["L0.kv_cache"] == 4 * 1024 * 576  # not split by TP
    assert att["prefetchable"] == ["L0.kv_cache"]
    assert att["flops"] == 2.0 * 4 * 1024 * 16 * (2 * 512 + 64)
    assert n["L0.q_absorb"]["flops"] == 2.0 * 4 * 16 * 128 * 512
    order = [k for k in n if k.startswith("L0.")]
    assert order[:12] == [
        "L0.attn_norm", "L0.q_a", "L0.q_a_norm", "L0.q_b", "L0.kv_a", "L0.kv_a_norm",
        "L0.q_absorb", "L0.rope", "L0.attention", "L0.v_absorb", "L0.o_proj",
        "L0.attn_allreduce",
    ]  # fmt: skip
    # the same latent cache on every rank: kv bytes do not shrink with tp
    g1 = pc.build_graph(m, pc.Workload("decode", 4, 1024, 1, *FP8))
    assert g1.graph["kv_cache_bytes_per_device"] == g.graph["kv_cache_bytes_per_device"]
    assert g.graph["kv_cache_bytes_per_device"] == 61 * 4 * 1024 * 576
    assert pc.validate_graph(g) is g
    pre = pc.build_graph(m, pc.Workload("prefill", 1, 256, 8, *FP8))  # same absorbed form
    assert pc.validate_graph(pre) is pre and "L0.kv_cache" not in pre.nodes["L0.attention"]["reads"]


def test_mla_without_q_lora_and_validation(tmp_path) -> None:
    data = pc.load_model("deepseek-v3").model_dump()
    data.update(name="lite", q_lora_rank=None, num_layers=4, weight_dtypes={})
    path = tmp_path / "lite.yaml"
    path.write_text(yaml.safe_dump(data))
    g = pc.build_graph(str(path), pc.Workload("decode", 2, 512, 4))
    assert "L0.q_proj" in g.nodes and "L0.q_a" not in g.nodes
    assert g.nodes["L0.q_proj"]["reads"]["L0.w_q"] == 7168 * 32 * 192 * 2
    for over, field in (
        ({"v_head_dim": None}, "v_head_dim"),
        ({"head_dim": 128}, "head_dim"),
        ({"num_kv_heads": 8}, "num_kv_heads"),
        ({"kv_lora_rank": None, "qk_nope_head_dim": None, "qk_rope_head_dim": None,
          "q_lora_rank": 64, "v_head_dim": None}, "q_lora_rank"),
    ):  # fmt: skip
        bad = tmp_path / f"bad-{field}.yaml"
        bad.write_text(yaml.safe_dump({**data, **over}))
        with pytest.raises(pc.InputError) as err:
            pc.load_model(str(bad))
        assert field in str(err.value) and "\n" not in str(err.value)


def test_dense_models_have_no_mla() -> None:
    m = pc.load_model("llama3-70b")
    assert not m.is_mla and m.attention_params() * 0 == 0
    assert "attention+mlp" in m.layer_schedule()


def test_deepseek_v3_decode_grows_with_batch() -> None:
    """Vanilla decode, h200-sxm, tp 8, fp8, context 1024: batch 64 reads ~222 of 256 experts
    per layer, batch 1 reads 8 (issue 12: step(64)/step(1) >= 3)."""

    def step(batch: int) -> float:
        g = pc.build_graph("deepseek-v3", pc.Workload("decode", batch, 1024, 8, *FP8))
        return pc.simulate(g, "h200-sxm", Plan("vanilla")).makespan_s

    assert step(64) / step(1) >= 3.0


@pytest.mark.slow  # about 20 s (a 61-layer MoE/MLA solve): with the slow checks
def test_deepseek_v3_solve_verified() -> None:
    """The issue's command: decode, batch 8, context 4096, tp 8, fp8 on h200-sxm (~4 s)."""
    g = pc.build_graph("deepseek-v3", pc.Workload("decode", 8, 4096, 8, *FP8))
    hw = pc.load_hardware("h200-sxm")
    r = pc.solve(g, hw, time_limit_s=30)
    assert r.verified
    assert verify(g, r.schedule, machine_for(hw)) == []
    assert r.makespan_s <= r.baseline_makespan_s * (1 + 1e-12)


def test_mla_footprint_matches_graph() -> None:
    """footprint: per-device MLA weights (q_a, kv_a replicated) and the unsplit latent cache."""
    from preserve_cp.footprint import layer_footprint

    m = pc.load_model("deepseek-v3")
    assert layer_footprint(m, 1, dtype="fp8").attention_weights_bytes == m.attention_params()
    f = layer_footprint(m, 8, dtype="fp8", batch=8, context=4096)
    g = pc.build_graph(m, pc.Workload("decode", 8, 4096, 8, *FP8))
    names = ("q_a", "q_a_norm", "q_b", "kv_a", "kv_a_norm", "q_absorb", "v_absorb", "o_proj")
    weights = sum(b for op in names for t, b in g.nodes[f"L0.{op}"]["reads"].items() if ".w" in t)
    assert f.attention_weights_bytes == weights == 36_636_672
    assert f.kv_cache_bytes == g.nodes["L0.attention"]["reads"]["L0.kv_cache"] == 8 * 4096 * 576
