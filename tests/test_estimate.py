"""The fast path (``solve --plans``, :func:`preserve_cp.estimate.estimate`): baselines only,
verified, the same numbers as a full solve's baselines, and the shipped schema."""

from __future__ import annotations

import json

import pytest
from test_json_schema import validate

import preserve_cp as pc
from preserve_cp.cli import main
from preserve_cp.describe import solve_schema
from preserve_cp.estimate import estimate

ARGS = ["solve", "--model", "llama3-8b", "--hardware", "h100-sxm", "--tp", "4", "--json"]


def test_plans_vanilla_json_is_the_fast_path(capsys):
    assert main([*ARGS, "--plans", "vanilla", "--context", "1024"]) == 0
    out = json.loads(capsys.readouterr().out)
    schema = solve_schema()
    validate(out, schema, schema)
    assert out["status"] == "baselines" and out["plan"] == "vanilla" and out["verified"]
    assert out["greedy_makespan_s"] is None and out["streaming_makespan_s"] is None
    assert out["makespan_s"] == out["baseline_makespan_s"] and out["speedup"] == 1.0
    assert 0 < out["lower_bound_s"] <= out["makespan_s"]
    assert out["inputs"]["options"]["plans"] == ["vanilla"]
    assert out["prefetches"] == []


def test_the_baselines_match_a_full_solve():
    g = pc.build_graph("llama3-8b", pc.Workload("decode", batch=2, context=1024, tp=4))
    full = pc.solve(g, "h100-sxm", time_limit_s=10)
    fast = estimate(g, "h100-sxm")
    assert fast.status == "baselines" and fast.verified and not fast.optimiser_ran
    for key in ("baseline", "greedy", "streaming", "fused"):
        assert getattr(fast, f"{key}_makespan_s") == getattr(full, f"{key}_makespan_s"), key
    # the best baseline it may choose (fused changes the graph: reported, never chosen)
    assert fast.makespan_s == min(
        fast.baseline_makespan_s, fast.greedy_makespan_s, fast.streaming_makespan_s
    )
    assert fast.lower_bound_s <= full.makespan_s
    assert "optimised" not in fast.compared_schedules()
    tight = estimate(g, "h100-sxm", plans="vanilla", lp_bound=True)
    assert fast.lower_bound_s <= tight.lower_bound_s <= tight.makespan_s


def test_plans_text_report_and_warning(capsys):
    args = [*ARGS[:-1], "--plans", "vanilla,fused", "--context", "16384"]
    assert main(args) == 0
    done = capsys.readouterr()
    assert "fused" in done.out and "optimised" not in done.out and "greedy" not in done.out
    assert "status baselines" in done.out
    assert done.err == (
        "preserve-cp: warning: context 16384 exceeds llama3-8b's max_context 8192; "
        "modelled as asked\n"
    )


@pytest.mark.parametrize("bad", ["vanila", "", "vanilla,optimised"])
def test_bad_plans_is_one_error_line(bad, capsys):
    assert main([*ARGS, "--plans", bad]) == 2
    done = capsys.readouterr()
    assert done.out == "" and done.err.startswith("preserve-cp: error: --plans: value:")
    assert len(done.err.splitlines()) == 1
