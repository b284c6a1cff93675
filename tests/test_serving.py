"""Serving units: TPOT/TTFT and tokens/s, one request's latency, and the capacity command."""

from __future__ import annotations

import json

import pytest

from preserve_cp import build_graph, solve
from preserve_cp.cli import main
from preserve_cp.deploy import capacity, request_latency
from preserve_cp.estimate import estimate
from preserve_cp.hardware import load_hardware
from preserve_cp.serving import (
    activation_workspace,
    context_points,
    deployment_devices,
    footprint,
    step_serving,
    sum_steps,
)
from preserve_cp.workload import Workload

PREFIX = "preserve-cp: error:"
SMALL = ["--model", "llama3-8b", "--hardware", "h100-sxm", "--batch", "4", "--tp", "4"]


def _one_error(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    """Run the CLI, expect the one-line error contract (exit 2), return the message."""
    try:
        rc = main(args)
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code  # type: ignore[assignment]
    out, err = capsys.readouterr()
    assert rc == 2, err
    assert out == "" and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(PREFIX), err
    return lines[0]


# -- step units ----------------------------------------------------------------------------
def test_decode_units_for_every_plan():
    g = build_graph("llama3-8b", Workload("decode", batch=4, context=1024, tp=4))
    r = estimate(g, "h100-sxm", plans=["vanilla", "streaming"])
    s = step_serving(g, r)
    assert s is not None
    assert (s["phase"], s["batch"], s["devices"], s["plan"]) == ("decode", 4, 4, "streaming")
    assert s["tpot_s"] == r.makespan_s
    assert s["tokens_per_s"] == pytest.approx(4 / r.makespan_s)
    assert s["tokens_per_s_per_device"] == pytest.approx(s["tokens_per_s"] / 4)
    assert set(s["plans"]) == {"vanilla", "streaming"}
    assert s["plans"]["vanilla"]["tpot_s"] == r.baseline_makespan_s
    assert s["request"] is None and "ttft_s" not in s


def test_prefill_units_and_devices_from_the_graph():
    g = build_graph("llama3-8b", Workload("prefill", batch=2, context=512, tp=4))
    r = estimate(g, "h100-sxm", plans=["vanilla"])
    s = step_serving(g, r)
    assert s is not None and s["ttft_s"] == r.makespan_s and "tpot_s" not in s
    assert s["prompt_tokens_per_s"] == pytest.approx(2 * 512 / r.makespan_s)
    # a layout that spans more devices than the TP group (set by the graph builder)
    g.graph["devices"] = 16
    assert deployment_devices(g) == 16
    s16 = step_serving(g, r)
    assert s16 is not None and s16["devices"] == 16
    assert s16["prompt_tokens_per_s_per_device"] == pytest.approx(s["prompt_tokens_per_s"] / 16)


def test_solve_attaches_serving_and_a_plain_graph_has_none():
    import networkx as nx

    g = nx.DiGraph([("a", "b")])
    nx.set_node_attributes(
        g, {"a": {"duration": 1.0, "resource": "m"}, "b": {"duration": 2.0, "resource": "m"}}
    )
    assert solve(g).serving is None and solve(g).to_dict()["serving"] is None


# -- integration over the output -----------------------------------------------------------
def test_context_points_and_the_sum_of_steps():
    pts = context_points(1000, 801)
    assert pts[0] == 1000 and pts[-1] == 1800 and len(pts) == 9
    assert pts == sorted(set(pts))
    assert context_points(7, 4) == [7, 8, 9, 10]

    def line(c: int) -> float:
        return 0.5 + 0.25 * c

    # exact for a step time linear in the context: every step from 1000 to 1800
    assert sum_steps([(c, line(c)) for c in pts]) == pytest.approx(
        sum(line(c) for c in range(1000, 1801))
    )


def test_e2e_lies_between_the_steps_at_both_ends():
    """Dense model: the decode step grows with the context, so the N steps cost more than N
    steps at the prompt context and less than N steps at prompt + N."""
    prompt, n = 1024, 2048
    wl = Workload("decode", batch=4, context=prompt, tp=4)
    q = request_latency("llama3-8b", wl, "h100-sxm", n, plans=["vanilla"])

    def step(phase: str, context: int) -> float:
        g = build_graph("llama3-8b", Workload(phase, batch=4, context=context, tp=4))
        return estimate(g, "h100-sxm", plans=["vanilla"]).makespan_s

    ttft = step("prefill", prompt)
    assert q["ttft_s"] == pytest.approx(ttft)
    lo, hi = ttft + n * step("decode", prompt), ttft + n * step("decode", prompt + n)
    assert lo < q["e2e_latency_s"] < hi
    assert q["tpot_s"] == pytest.approx((q["e2e_latency_s"] - ttft) / n)
    assert q["plans"]["vanilla"]["e2e_latency_s"] == pytest.approx(q["e2e_latency_s"])
    assert [p["context"] for p in q["points"]] == context_points(prompt, n)
    assert q["method"] == "fast path (vanilla)" and q["statuses"] == ["baselines"]


def test_solve_cli_output_len_json_and_text(capsys):
    args = [*SMALL, "--context", "1024", "--plans", "vanilla,streaming", "--output-len", "64"]
    assert main(["solve", *args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    s = out["serving"]
    assert s["tpot_s"] == out["makespan_s"] and s["plan"] == out["plan"] == "streaming"
    q = s["request"]
    assert (q["prompt_len"], q["output_len"], q["batch"]) == (1024, 64, 4)
    assert set(q["plans"]) == {"vanilla", "streaming"}
    assert q["points"][0]["step_s"]["chosen"] == out["makespan_s"]  # the solve's own point
    assert q["plans"]["streaming"]["e2e_latency_s"] <= q["plans"]["vanilla"]["e2e_latency_s"]
    assert main(["solve", *args]) == 0
    text = capsys.readouterr().out
    assert "TPOT" in text and "tokens/s" in text and "request of 1024 prompt + 64" in text


def test_prefill_text_says_ttft(capsys):
    assert (
        main(["solve", *SMALL, "--context", "512", "--phase", "prefill", "--plans", "vanilla"]) == 0
    )
    text = capsys.readouterr().out
    assert "TTFT" in text and "prompt tokens/s" in text


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--phase", "prefill", "--output-len", "8"], "--output-len: phase"),
        (["--output-len", "0"], "--output-len: value"),
        (["--output-len", "x"], "--output-len"),
    ],
)
def test_output_len_errors(capsys, extra, needle):
    assert needle in _one_error(capsys, ["solve", *SMALL, "--plans", "vanilla", *extra])


@pytest.mark.slow
def test_output_len_with_the_optimiser_solves_every_point(capsys):
    args = [*SMALL, "--context", "1024", "--output-len", "128", "--time-limit", "10", "--json"]
    assert main(["solve", *args]) == 0
    q = json.loads(capsys.readouterr().out)["serving"]["request"]
    assert q["method"] == "solve" and q["plan"] == "optimised"
    assert {"vanilla", "optimised"} <= set(q["plans"])
    opt, van = q["plans"]["optimised"], q["plans"]["vanilla"]
    assert opt["e2e_latency_s"] <= van["e2e_latency_s"] * (1 + 1e-9)
    assert q["e2e_latency_s"] == pytest.approx(opt["e2e_latency_s"])


# -- capacity ------------------------------------------------------------------------------
CAPACITY = [
    "capacity",
    "--model",
    "llama3-70b",
    "--hardware",
    "h100-sxm",
    "--tp",
    "8",
    "--context",
    "8192",
    "--dtype",
    "fp8",
]


def test_capacity_matches_hand_arithmetic(capsys):
    """Llama-3-70B (hidden 8192, 80 layers, 64 query / 8 KV heads of 128, MLP 28672, vocab
    128256, untied embeddings), fp8 (1 byte), tp 8, context 8192, on an H100 SXM (80 GB).

    Weights per device:
      per layer  qkv 8192 x (8192 + 2 x 1024) / 8 = 10,485,760
                 o   8192 x 8192 / 8               =  8,388,608
                 gate_up 8192 x 2 x 28672 / 8      = 58,720,256
                 down 28672 x 8192 / 8             = 29,360,128   -> 106,954,752
      80 layers                                    = 8,556,380,160
      embedding + LM head 2 x 16032 x 8192         =   262,668,288
      norms (2 x 80 + 1) x 8192                    =     1,318,912
      total                                        = 8,820,367,360
    KV per sequence: 80 layers x 8192 tokens x 2 (K, V) x 1 KV head x 128 = 167,772,160
    Activations per sequence: the largest op is the logits allgather, reading and writing
      the fp32 logits of the whole vocabulary: 2 x 128256 x 4 = 1,026,048
    Usable HBM: 0.9 x 80e9 = 72,000,000,000; left after weights 63,179,632,640
    Batch: 63,179,632,640 // (167,772,160 + 1,026,048 = 168,798,208) = 374
      (374 x 168,798,208 = 63,130,529,792 fits; 375 x = 63,299,328,000 does not)
    """
    weights = 80 * (10_485_760 + 8_388_608 + 58_720_256 + 29_360_128)
    weights += 2 * (128256 // 8) * 8192 + (2 * 80 + 1) * 8192
    assert weights == 8_820_367_360
    kv, act = 80 * 8192 * 2 * 128, 2 * 128256 * 4
    left = 0.9 * 80e9 - weights
    assert left // (kv + act) == 374

    assert main([*CAPACITY, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["max_batch"] == 374
    assert out["weights_bytes"] == weights
    assert out["kv_bytes_per_sequence"] == kv
    assert out["activation_bytes"] == 374 * act and out["activation_op"] == "lm_head.allgather"
    assert out["usable_bytes"] == pytest.approx(72e9) and out["memory_utilization"] == 0.9
    fit, nxt = out["at_max_batch"], out["at_next_batch"]
    assert fit["total_bytes"] == weights + 374 * (kv + act) <= 72e9
    assert nxt["batch"] == 375 and nxt["total_bytes"] == weights + 375 * (kv + act) > 72e9
    # batch + 1 really does not fit: the graph built at 375 says so
    g = build_graph("llama3-70b", Workload("decode", batch=375, context=8192, tp=8, dtype="fp8"))
    assert footprint(g).total_bytes > 0.9 * load_hardware("h100-sxm").hbm_capacity_bytes
    d = out["decode"]
    assert d["batch"] == 374 and d["devices"] == 8 and d["plan"] == "vanilla"
    assert d["tokens_per_s"] == pytest.approx(374 / d["tpot_s"])
    assert out["decode"]["plans"].keys() == {"vanilla"}
    assert main(CAPACITY) == 0
    text = capsys.readouterr().out
    assert "largest batch: 374" in text and "batch 375 would need" in text
    assert "tokens/s" in text


def test_capacity_reserve_is_an_option():
    wl = Workload("decode", context=8192, tp=8, dtype="fp8")
    small = capacity("llama3-70b", wl, "h100-sxm", memory_utilization=0.5)
    # (0.5 x 80e9 - 8,820,367,360) // 168,798,208 = 184
    assert small.max_batch == 184 and small.over is not None and small.over.batch == 185


def test_activation_workspace_names_its_op():
    g = build_graph("llama3-8b", Workload("decode", batch=3, context=512, tp=2))
    b, op = activation_workspace(g)
    a = g.nodes[op]
    assert b == a["writes_bytes"] + sum(
        v for t, v in a["reads"].items() if t not in (a.get("prefetchable") or ())
    )


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--memory-utilization", "1.5"], "--memory-utilization"),
        (["--memory-utilization", "0"], "--memory-utilization"),
        (["--tp", "0"], "tp"),
        (["--time-limit", "0"], "--time-limit"),
        (["--tp", "1", "--dtype", "bf16", "--context", "131072"], "needs"),  # nothing fits
        (["--model", "no-such-model"], "no-such-model"),
    ],
)
def test_capacity_errors(capsys, extra, needle):
    assert needle in _one_error(capsys, [*CAPACITY, *extra])


@pytest.mark.slow
def test_capacity_solve_reports_the_optimised_step(capsys):
    assert main([*CAPACITY, "--solve", "--time-limit", "20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    plans = out["decode"]["plans"]
    assert {"vanilla", "optimised"} <= set(plans)
    assert plans["optimised"]["tokens_per_s"] >= plans["vanilla"]["tokens_per_s"] * (1 - 1e-9)
