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
    GPU_FORK_BUDGETS_BYTES,
    GPU_FORK_MLA_A_BYTES,
    MAX_PREFETCH_BYTES,
    export_weight_prefetch_config,
    gpu_fork_plan,
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


def test_gpu_fork_policy_windows_budgets_and_no_routed_experts() -> None:
    """local-inference-lab/vllm PR 576 on the GLM-5.3-Flash proxy (3 layers of glm4.5-air)."""
    proxy = pc.load_model("glm4.5-air").model_copy(update={"num_layers": 3})
    hw = pc.load_hardware("rtx-pro-6000")
    # tp 2, bf16: w_o 12288 x 4096 x 2 B / 2 = 50.33 MB, w_qkv 4096 x 14336 x 2 B / 2 + bias
    # = 58.73 MB, w_router 4096 x 128 x 2 B = 1.05 MB: every budget binds
    g = pc.build_graph(proxy, pc.Workload("decode", 1, 4096, 2, dtype="bf16"))
    plan = gpu_fork_plan(g)
    assert plan.name == "gpu-fork" and plan.prefetches
    assert not [c for c in plan.prefetches if "experts" in c.tensor and "shared" not in c.tensor]
    assert {c.tensor.rsplit(".", 1)[-1] for c in plan.prefetches} == {"w_o", "w_qkv", "w_router"}
    per_anchor: dict[str, float] = {}
    for c in plan.prefetches:
        per_anchor[c.anchor] = per_anchor.get(c.anchor, 0.0) + c.bytes
    windows = {"rope": "A", "attn_allreduce": "B", "mlp_allreduce": "C"}
    assert {a.split(".", 1)[1] for a in per_anchor} == set(windows)
    for anchor, got in per_anchor.items():
        budget = GPU_FORK_BUDGETS_BYTES[windows[anchor.split(".", 1)[1]]]
        assert got == pytest.approx(budget)  # tp 2: each window is full
    # layer 0 (dense, first_k_dense_replace 1): A takes w_o cut at 26 MB (no room left for the
    # 8 MB head), B 35 MB of L1.w_qkv, C its next 20 MB; layer 1 (MoE): B takes the router
    # first, so 35 - 1.05 = 33.95 MB of L2.w_qkv, C the next 20 MB; the rest is read from HBM
    router = g.nodes["L1.router"]["reads"]["L1.w_router"]
    got = [(c.tensor, c.anchor, c.bytes, c.offset_bytes) for c in plan.prefetches]
    assert got == [
        ("L0.w_o", "L0.rope", 26e6, 0.0),
        ("L1.w_qkv", "L0.attn_allreduce", 35e6, 0.0),
        ("L1.w_qkv", "L0.mlp_allreduce", 20e6, 35e6),
        ("L1.w_o", "L1.rope", 26e6, 0.0),
        ("L1.w_router", "L1.attn_allreduce", router, 0.0),
        ("L2.w_qkv", "L1.attn_allreduce", pytest.approx(35e6 - router), 0.0),
        ("L2.w_qkv", "L1.mlp_allreduce", 20e6, pytest.approx(35e6 - router)),
    ]
    assert g.nodes["L1.qkv"]["reads"]["L1.w_qkv"] > 55e6  # 58.73 MB: cut, not whole
    # the deployment's tp 4 (fp8): simulated and verified, every chunk run, a gain
    g4 = pc.build_graph(proxy, pc.Workload("decode", 1, 4096, 4, dtype="fp8"))
    costs, m = op_costs(g4, hw), machine_for(hw)
    s = simulate(g4, costs, gpu_fork_plan(g4), m)
    assert verify(g4, s, m) == [] and s.dropped == ()
    assert s.makespan_s < simulate(g4, costs, Plan("vanilla"), m).makespan_s
    # prefill and decode steps above 256 tokens skip the path (PR 586)
    for wl in (pc.Workload("decode", 257, 1024, 4), pc.Workload("prefill", 1, 512, 4)):
        assert gpu_fork_plan(pc.build_graph(proxy, wl)).prefetches == ()
    # an MLA layer: window A opens after q_a and takes W_UK, W_UV, then w_o, within 36 MB
    mla = pc.load_model("deepseek-v3").model_copy(update={"num_layers": 2})
    gm = pc.build_graph(mla, pc.Workload("decode", 1, 4096, 2, dtype="bf16"))
    a = [c for c in gpu_fork_plan(gm).prefetches if c.anchor == "L0.q_a_norm"]
    assert [c.tensor for c in a] == ["L0.w_uk", "L0.w_uv", "L0.w_o"]
    assert sum(c.bytes for c in a) == pytest.approx(GPU_FORK_MLA_A_BYTES)  # w_o 117 MB: cut
