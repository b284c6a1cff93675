"""Issue 16: vLLM-Ascend's production prefetch policy as a baseline, and the export of an
optimised plan to its weight_prefetch_config."""

from __future__ import annotations

import json

import pytest

import preserve_cp as pc
from preserve_cp.cli import main
from preserve_cp.costs import op_costs
from preserve_cp.machine import machine_for
from preserve_cp.plan import Plan, Prefetch
from preserve_cp.production import (
    MAX_PREFETCH_BYTES,
    export_weight_prefetch_config,
    production_plan,
)
from preserve_cp.simulate import simulate, verify


def test_policy_caps_anchors_and_thresholds() -> None:
    g = pc.build_graph("llama3-70b", pc.Workload("decode", 4, 4096, 2, dtype="bf16"))
    p = production_plan(g, {"attn": {"qkv": 1.0, "o": 0.5}, "mlp": {"gate_up": 1.0}})
    by = {(c.tensor): c for c in p.prefetches}
    qkv = g.nodes["L0.qkv"]["reads"]["L0.w_qkv"]
    assert qkv > MAX_PREFETCH_BYTES and by["L0.w_qkv"].bytes == MAX_PREFETCH_BYTES  # 18 MiB cap
    assert by["L0.w_qkv"].anchor == "L0.attn_norm" and by["L0.w_o"].anchor == "L0.rope"
    assert by["L0.w_gate_up"].anchor == "L0.mlp_norm"
    assert "L0.w_down" not in by  # down not asked
    # MoE gate_up prefetch only from 96 tokens on; the MLP one only below 500 tokens
    moe = {"moe": {"gate_up": 0.8}}
    small = pc.build_graph("mixtral-8x7b", pc.Workload("decode", 8, 1024, 8))
    big = pc.build_graph("mixtral-8x7b", pc.Workload("decode", 96, 1024, 8))
    assert not production_plan(small, moe).prefetches
    chunk = production_plan(big, moe).prefetches[0]
    size = big.nodes["L0.experts_gate_up"]["reads"]["L0.w_experts_gate_up"]
    assert chunk.bytes == pytest.approx(min(0.8 * size, MAX_PREFETCH_BYTES))
    prefill = pc.build_graph("llama3-8b", pc.Workload("prefill", 1, 1024, 8))
    assert not production_plan(prefill, {"mlp": {"gate_up": 1.0}}).prefetches


def test_policy_simulates_verified_and_pays_only_when_ops_leave_hbm() -> None:
    g = pc.build_graph("llama3-8b", pc.Workload("decode", 16, 4096, 4, dtype="int8"))
    gain = {}
    for share in (0.0, 1.0):
        hw = pc.load_hardware("ascend-910b2").with_overrides(prefetch_share_during_ops=share)
        costs, m = op_costs(g, hw), machine_for(hw)
        plan = production_plan(g)
        s = simulate(g, costs, plan, m)
        assert verify(g, s, m) == []
        gain[share] = simulate(g, costs, Plan("vanilla"), m).makespan_s / s.makespan_s
    # vector ops leave HBM to the side stream: the policy pays; without that share its chunks
    # move only in the collectives' windows and gain less
    assert gain[1.0] > 1.0 and gain[0.0] < gain[1.0]


def test_export_reads_back_the_policy_and_the_optimised_plan(tmp_path, capsys) -> None:
    g = pc.build_graph("llama3-8b", pc.Workload("decode", 4, 2048, 8))
    ratios = {"attn": {"qkv": 0.5}, "mlp": {"gate_up": 0.5, "down": 0.25}}  # under 18 MiB
    cfg = export_weight_prefetch_config(production_plan(g, ratios), g)
    assert cfg["weight_prefetch_config"]["prefetch_ratio"] == ratios
    # a hand plan: half of every steady-state o_proj weight
    half = Plan(
        "h",
        tuple(
            Prefetch(f"L{i}.w_o", g.nodes[f"L{i}.o_proj"]["reads"][f"L{i}.w_o"] / 2, f"L{i}.o_proj")
            for i in range(32)
        ),
    )
    assert export_weight_prefetch_config(half, g)["weight_prefetch_config"] == {
        "enabled": True,
        "prefetch_ratio": {"attn": {"o": 0.5}},
    }
    out = tmp_path / "cfg.json"
    argv = ["export", "vllm-ascend", "--model", "llama3-8b", "--hardware", "ascend-910b2"]
    argv += ["--batch", "4", "--context", "4096", "--tp", "8", "--time-limit", "10"]
    assert main([*argv, "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    ratio = data["weight_prefetch_config"]["prefetch_ratio"]
    assert set(ratio) <= {"attn", "moe", "mlp"}
    assert all(0 < v <= 1 for kinds in ratio.values() for v in kinds.values())
    assert main([*argv, "--out", str(tmp_path / "no" / "x.json")]) == 2
    assert "folder" in capsys.readouterr().err
