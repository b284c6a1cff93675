"""Issue 14: collectives across nodes, MoE expert parallelism (dispatch/combine all-to-all, the
DeepEP low-latency fit), data-parallel attention, pipeline stages."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest

import preserve_cp as pc
from preserve_cp.costs import collective_time_s, op_costs, p2p_time_s
from preserve_cp.estimate import estimate
from preserve_cp.graph import stage_layers
from preserve_cp.pipeline import pipeline_step_s, solve_pipeline

ROOT = Path(__file__).resolve().parents[1]


def _fit_module():
    spec = importlib.util.spec_from_file_location("fit_deepep", ROOT / "bench" / "fit_deepep.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fit_deepep"] = mod
    spec.loader.exec_module(mod)
    return mod


def _vanilla(model: str, wl: pc.Workload, hw: str) -> float:
    return estimate(pc.build_graph(model, wl), hw, plans="vanilla").baseline_makespan_s


def test_tp16_across_two_nodes_is_slower_than_tp8_at_batch_1() -> None:
    hw = pc.load_hardware("h100-sxm")
    wl8, wl16 = (pc.Workload("decode", 1, 2048, tp, dtype="fp8") for tp in (8, 16))
    g8, g16 = pc.build_graph("llama3-70b", wl8), pc.build_graph("llama3-70b", wl16)
    c8, c16 = op_costs(g8, hw), op_costs(g16, hw)
    ar8 = c8["L0.attn_allreduce"].duration_s()
    ar16 = c16["L0.attn_allreduce"].duration_s()
    # two levels: reduce-scatter and all-gather inside each node (8), an allreduce across
    msg = 1 * 8192 * 2  # one token, hidden 8192: 16-bit, though the GEMMs run fp8
    rs = collective_time_s("reduce_scatter", msg, 8, hw)
    ag = collective_time_s("allgather", msg, 8, hw)
    across = hw.scale_out_latency_s + 2 * (1 / 2) * msg / (8 * hw.scale_out_bytes_per_s)
    assert ar16 == pytest.approx(rs + across + ag, rel=1e-12)
    assert ar16 > ar8 + 15e-6  # the scale-out latency dominates a one-token allreduce
    n_ar = sum(1 for _, a in g16.nodes(data=True) if a["kind"] == "allreduce")
    assert n_ar == 161
    step8, step16 = (
        _vanilla("llama3-70b", wl8, "h100-sxm"),
        _vanilla("llama3-70b", wl16, "h100-sxm"),
    )
    assert step16 > step8
    # the difference is the allreduces': the rest of the step shrinks with tp
    others8 = sum(c.duration_s() for n, c in c8.items() if g8.nodes[n]["kind"] != "allreduce")
    others16 = sum(c.duration_s() for n, c in c16.items() if g16.nodes[n]["kind"] != "allreduce")
    assert others16 < others8
    assert n_ar * (ar16 - ar8) > (step16 - step8)


def test_a_group_beyond_a_node_needs_scale_out() -> None:
    tpu = pc.load_hardware("tpu-v5p")  # 4 devices per node, no scale_out section
    g = pc.build_graph("llama3-8b", pc.Workload("decode", 1, 1024, 8))
    with pytest.raises(pc.InputError, match="tpu-v5p: scale_out: a collective over 8 devices"):
        op_costs(g, tpu)
    h100 = pc.load_hardware("h100-sxm")
    with pytest.raises(pc.InputError, match="expected whole nodes of 8"):
        collective_time_s("allreduce", 1e6, 12, h100)
    assert p2p_time_s(1e6, True, h100) > p2p_time_s(1e6, False, h100)


def test_deepep_low_latency_fit_reproduces_held_out_rows() -> None:
    fit = _fit_module()
    alpha, b_local, b_net = fit.fit()
    h100 = pc.load_hardware("h100-sxm", calibrated=False)
    assert alpha == pytest.approx(h100.all_to_all_latency_s * 1e6, abs=0.05)  # shipped value
    # the same model through the cost code, on an H800 (NVLink 200 GB/s one way, one 400G NIC)
    h800 = dataclasses.replace(
        h100,
        link_bandwidth_bytes_per_s=200e9,
        link_efficiency=b_local / 200e9,
        scale_out_bytes_per_s=b_net,
        all_to_all_latency_s=alpha * 1e-6,
    )
    for ep, size, measured in fit.rows(fit.TABLE):
        t = collective_time_s("all_to_all", size, ep, h800, variant="low_latency") * 1e6
        assert t == pytest.approx(fit.predict(alpha, b_local, b_net, ep, size), rel=1e-9)
        if ep not in fit.TRAIN:
            assert abs(t / measured - 1) <= 0.15, (ep, size, t, measured)
    assert b_net / 50e9 == pytest.approx(h100.spec.scale_out.nic_efficiency, abs=0.01)


def test_expert_parallel_dispatch_and_combine() -> None:
    wl = pc.Workload("decode", 64, 2048, 8, dtype="fp8", ep=8)
    g = pc.build_graph("deepseek-v3", wl)
    m = pc.load_model("deepseek-v3")
    moe_layers = sum(m.is_moe_layer(i) for i in range(m.num_layers))
    d = [n for n, a in g.nodes(data=True) if a.get("phase") == "dispatch"]
    c = [n for n, a in g.nodes(data=True) if a.get("phase") == "combine"]
    assert len(d) == len(c) == moe_layers == 58
    # each rank sends its 64 / 8 tokens x top-8 x hidden: fp8 out, bf16 back
    assert g.nodes["L3.moe_dispatch"]["reads"]["L3.moe_dispatch.in"] == 8 * 8 * 7168
    assert g.nodes["L3.moe_combine"]["reads"]["L3.moe_combine.in"] == 8 * 8 * 7168 * 2
    assert g.nodes["L3.moe_dispatch"]["group"] == 8
    order = list(g.nodes)
    assert order.index("L3.moe_dispatch") < order.index("L3.experts_gate_up")
    assert order.index("L3.experts_down") < order.index("L3.moe_combine")
    # whole experts, 256 / 8 per rank; the bytes read match TP-sharded experts (same total)
    up = g.nodes["L3.experts_gate_up"]
    tp_only = pc.build_graph("deepseek-v3", dataclasses.replace(wl, ep=1))
    assert up["reads"]["L3.w_experts_gate_up"] == pytest.approx(
        tp_only.nodes["L3.experts_gate_up"]["reads"]["L3.w_experts_gate_up"], rel=1e-9
    )
    assert up["rows"] == pytest.approx(tp_only.nodes["L3.experts_gate_up"]["rows"])
    hw = pc.load_hardware("h200-sxm")
    cost = op_costs(g, hw)["L3.moe_dispatch"].duration_s()
    link = hw.link_bandwidth_bytes_per_s * hw.link_efficiency
    assert cost == pytest.approx(hw.all_to_all_latency_s + 8 * 8 * 7168 / link)
    six = pc.load_model("mixtral-8x7b").model_copy(update={"num_experts": 6})
    with pytest.raises(pc.InputError, match="ep 4 does not divide num_experts 6"):
        pc.build_graph(six, pc.Workload("decode", 8, 1024, 4, ep=4))
    with pytest.raises(pc.InputError, match="ep: expected a divisor of tp 8"):
        pc.Workload("decode", 8, 1024, 8, ep=3)


def test_data_parallel_attention_with_expert_parallel_moe() -> None:
    wl = pc.Workload("decode", 64, 2048, 8, dtype="fp8", ep=8, attention="dp")
    g = pc.build_graph("deepseek-v3", wl)
    kinds = {a["kind"] for _, a in g.nodes(data=True)}
    assert "allreduce" not in kinds and "all_to_all" in kinds
    tp = pc.build_graph("deepseek-v3", dataclasses.replace(wl, attention="tp"))
    # each rank: 8 sequences' latent cache, all 128 heads' weights
    assert g.nodes["L0.attention"]["reads"]["L0.kv_cache"] == 8 * 2048 * 576
    assert tp.nodes["L0.attention"]["reads"]["L0.kv_cache"] == 64 * 2048 * 576
    assert g.nodes["L0.q_b"]["reads"]["L0.w_q_b"] == 8 * tp.nodes["L0.q_b"]["reads"]["L0.w_q_b"]
    with pytest.raises(pc.InputError, match="ep: expected tp"):
        pc.Workload("decode", 64, 2048, 8, ep=4, attention="dp")


def test_pipeline_stages_and_step_time_by_hand() -> None:
    m = pc.load_model("llama3.1-405b")
    wl = pc.Workload("decode", 8, 4096, 8, dtype="fp8", pp=2, microbatches=2)
    assert [len(stage_layers(m.num_layers, dataclasses.replace(wl, stage=s))) for s in (0, 1)] == [
        63,
        63,
    ]
    g0 = pc.build_graph(m, dataclasses.replace(wl, stage=0, batch=4, microbatches=1))
    g1 = pc.build_graph(m, dataclasses.replace(wl, stage=1, batch=4, microbatches=1))
    assert "embedding" in g0 and "lm_head" not in g0 and "pp.recv" not in g0
    assert "embedding" not in g1 and "lm_head" in g1 and next(iter(g1.nodes)) == "pp.recv"
    assert "L62.mlp_allreduce" in g0 and "L63.qkv" in g1 and "L63.qkv" not in g0
    assert g1.graph["devices"] == 16 and g1.graph["stage"] == 1
    # the stages sit in two nodes: the activations cross the network
    hw = pc.load_hardware("h100-sxm")
    recv = op_costs(g1, hw)["pp.recv"].duration_s()
    assert recv == pytest.approx(p2p_time_s(4 * 16384 * 2, True, hw))  # 16-bit activations
    r = solve_pipeline(m, wl, hw, time_limit_s=10)
    t = [s.makespan_s for s in r.stages]
    v = [s.baseline_makespan_s for s in r.stages]
    assert r.optimised_step_s == pytest.approx(t[0] + t[1] + (2 - 1) * max(t))
    assert r.vanilla_step_s == pytest.approx(v[0] + v[1] + max(v))
    assert all(s.verified for s in r.stages) and r.speedup >= 1.0
    assert pipeline_step_s([1.0, 2.0, 3.0], 4) == 1 + 2 + 3 + 3 * 3


def test_cli_expert_parallel_json_lists_collectives_by_kind(tmp_path, capsys) -> None:
    import json

    import jsonschema

    from preserve_cp.cli import main

    schema = json.loads((ROOT / "preserve_cp" / "schemas" / "solve.schema.json").read_text())
    argv = ["solve", "--model", "mixtral-8x7b", "--hardware", "h100-sxm", "--phase", "decode"]
    argv += ["--batch", "8", "--context", "2048", "--tp", "4", "--ep", "4", "--time-limit", "5"]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    jsonschema.validate(out, schema)
    assert out["verified"] and out["inputs"]["workload"]["ep"] == 4
    rows = {r["kind"]: r for r in out["collectives"]}
    assert rows["all_to_all dispatch"]["count"] == rows["all_to_all combine"]["count"] == 32
    assert rows["allreduce"]["count"] == 65 and rows["allreduce"]["group"] == [4]
    assert sum(r["prefetched_mb"] for r in rows.values()) > 0
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "all_to_all dispatch    x32" in text and "all_to_all combine     x32" in text


def test_cli_pipeline_and_layout_errors(capsys) -> None:
    from preserve_cp.cli import main

    base = ["solve", "--model", "llama3-8b", "--hardware", "h100-sxm", "--batch", "4"]
    assert main([*base, "--tp", "4", "--pp", "2", "--microbatches", "2", "--time-limit", "6"]) == 0
    text = capsys.readouterr().out
    assert "0-15" in text and "16-31" in text and "pipeline step" in text
    # a limit too short for the search: the output says which stages it cut
    assert (
        main([*base, "--tp", "4", "--pp", "2", "--microbatches", "2", "--time-limit", "0.01"]) == 0
    )
    assert "time limit: stages 0, 1 stopped by --time-limit" in capsys.readouterr().out
    for extra, message in (
        (["--tp", "8", "--ep", "3"], "workload: ep: expected a divisor of tp 8"),
        (["--tp", "4", "--pp", "2", "--microbatches", "3"], "microbatches: expected a divisor"),
        (["--tp", "4", "--pp", "2", "--trace", "-"], "--trace: with --pp: expected a file name"),
    ):
        code = main([*base, *extra, "--time-limit", "2"])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, err
    assert main([*base, "--tp", "16", "--time-limit", "2"]) == 0  # two nodes: scale_out
    assert "group 16" in capsys.readouterr().out
    tpu = ["solve", "--model", "llama3-8b", "--hardware", "tpu-v5p", "--tp", "8"]
    assert main([*tpu, "--time-limit", "2"]) == 2
    assert "tpu-v5p: scale_out: a collective over 8 devices" in capsys.readouterr().err


def test_pipeline_writes_one_picture_trace_and_report_per_stage(tmp_path, capsys) -> None:
    from preserve_cp.cli import main

    argv = ["solve", "--model", "llama3-8b", "--hardware", "h100-sxm", "--batch", "4"]
    argv += ["--tp", "4", "--pp", "2", "--microbatches", "2", "--time-limit", "6"]
    out = {k: tmp_path / f"x.{k}" for k in ("png", "json", "html")}
    assert main([*argv, "--gantt", str(out["png"]), "--trace", str(out["json"])]) == 0
    assert "pipeline step" in capsys.readouterr().out
    assert main([*argv, "--report", str(out["html"]), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["kind"] for r in printed["stages"][1]["collectives"]][:1] == ["p2p"]
    pipe = printed["pipeline"]
    assert printed["stages"][0]["serving"] is None  # one stage's tokens/s would mislead
    assert pipe["tpot_s"] == pipe["optimised_step_s"] and pipe["devices"] == 8
    assert pipe["tokens_per_s"] == pytest.approx(4 / pipe["optimised_step_s"])
    for s in (0, 1):
        for ext in ("png", "json", "html"):
            f = tmp_path / f"x.stage{s}.{ext}"
            assert f.stat().st_size > 1000, f
    trace = json.loads((tmp_path / "x.stage1.json").read_text())
    names = {e.get("name") for e in trace["traceEvents"]}
    assert "pp.recv" in names and "L16.qkv" in names and "L0.qkv" not in names
    assert not (tmp_path / "x.png").exists()
