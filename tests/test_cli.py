"""The CLI and its output contracts (--json fields, --trace format)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from preserve_cp.cli import main

CONTRACT = {
    "status",
    "makespan_s",
    "baseline_makespan_s",
    "greedy_makespan_s",
    "speedup",
    "lower_bound_s",
    "gap",
    "solve_time_s",
    "verified",
    "l2_capacity_bytes",
    "usable_l2_bytes",
    "prefetches",
    "inputs",
}
ARGS = [
    "solve",
    "--model",
    "llama3-8b",
    "--hardware",
    "ascend-910b2",
    "--phase",
    "decode",
    "--batch",
    "4",
    "--context",
    "8192",
    "--tp",
    "4",
    "--time-limit",
    "5",
]


@pytest.fixture(scope="module")
def solved(tmp_path_factory):
    trace = tmp_path_factory.mktemp("t") / "trace.json"
    proc = subprocess.run(
        [sys.executable, "-m", "preserve_cp.cli", *ARGS, "--json", "--trace", str(trace)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), json.loads(trace.read_text())


def test_json_contract(solved):
    out, _ = solved
    assert set(out) >= CONTRACT
    assert out["verified"] is True
    assert out["speedup"] == pytest.approx(out["baseline_makespan_s"] / out["makespan_s"])
    assert out["gap"] == pytest.approx(
        (out["makespan_s"] - out["lower_bound_s"]) / out["makespan_s"]
    )
    # never worse than a baseline (greedy itself may lose to vanilla: docs/fidelity.md)
    best_baseline = min(
        out["greedy_makespan_s"], out["streaming_makespan_s"], out["baseline_makespan_s"]
    )
    assert out["makespan_s"] <= best_baseline
    assert out["l2_capacity_bytes"] == pytest.approx(192 * 2**20)  # the device's L2
    assert out["usable_l2_bytes"] == pytest.approx(192 * 2**20 * 0.75)  # the prefetch budget
    assert out["prefetches"]
    for p in out["prefetches"]:
        assert {"tensor", "bytes", "start_s", "end_s", "consumer"} <= set(p)
        assert p["end_s"] >= p["start_s"] >= 0 and p["bytes"] > 0


def test_trace_contract(solved):
    out, doc = solved
    ev = doc["traceEvents"]
    assert doc["otherData"]["makespan_s"] == pytest.approx(out["makespan_s"])
    assert doc["otherData"]["l2_capacity_bytes"] == pytest.approx(out["l2_capacity_bytes"])
    assert doc["otherData"]["usable_l2_bytes"] == pytest.approx(out["usable_l2_bytes"])
    names = {e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {"compute", "comm", "prefetch"} <= names
    xs = [e for e in ev if e["ph"] == "X"]
    assert all({"name", "pid", "tid", "ts", "dur", "args"} <= set(e) for e in xs)
    assert all("node" in e["args"] for e in xs)
    last = max(e["ts"] + e["dur"] for e in xs)
    assert last == pytest.approx(out["makespan_s"] * 1e6, rel=1e-9)  # microseconds
    counters = [e for e in ev if e["ph"] == "C"]
    assert counters and all(e["name"] == "L2" and "bytes" in e["args"] for e in counters)
    assert max(e["args"]["bytes"] for e in counters) <= out["usable_l2_bytes"] * (1 + 1e-9)


def test_readable_report(capsys):
    assert main(ARGS) == 0
    text = capsys.readouterr().out
    for word in ("vanilla", "greedy", "optimised", "gap", "MB moved per window"):
        assert word in text


def test_listing_commands(capsys):
    assert main(["hardware", "list"]) == 0
    assert "ascend-910b2" in capsys.readouterr().out
    assert main(["hardware", "show", "h100-sxm"]) == 0
    shown = capsys.readouterr().out
    assert "l2_capacity_mb: 50" in shown and "(uncertain)" in shown
    assert main(["models", "list"]) == 0
    assert "gpt3-175b" in capsys.readouterr().out
