"""`reproduce paper` on a small grid: files, invariants, and a rerun that does no solver work."""

from __future__ import annotations

import csv
import json

import pytest

from preserve_cp.cost import CostModel, cost_model
from preserve_cp.hardware import load_hardware
from preserve_cp.reproduce import dse_optima, e2e_split, reproduce_paper


@pytest.mark.slow  # about 20-30 s: runs with the slow checks
def test_small_reproduction_and_resume(tmp_path):
    kw = dict(
        models=["llama3-8b", "phi3-medium"],
        batches=[1, 64],
        lengths=[2048, 32768],
        l2_grid_mb=[0, 16, 64],
        workers=2,
        progress=False,
    )
    s = reproduce_paper(tmp_path, **kw)
    for name in ("footprint", "heatmap_speedup", "fused_vs_preserve", "dse_l2"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / f"{name}.csv").stat().st_size > 0
    rows = list(csv.DictReader((tmp_path / "heatmap_speedup.csv").read_text().splitlines()))
    assert len(rows) == 8 and {r["tp"] for r in rows} == {"4", "2"}  # phi3-medium at tp 2
    for r in rows:
        if r["status"] == "ok":
            assert float(r["e2e_optimised_s"]) <= float(r["e2e_greedy_s"]) * (1 + 1e-12)
            assert float(r["e2e_optimised_s"]) <= float(r["e2e_vanilla_s"]) * (1 + 1e-12)
            assert float(r["speedup_optimised"]) >= 1.0
    assert s["heatmaps"]["min_optimised_over_greedy"] >= 1.0
    # every row says what its two solves were computed from (solve --json's inputs), after
    # the columns it always had
    head = (tmp_path / "heatmap_speedup.csv").read_text().splitlines()[0].split(",")
    assert head[:10] == [
        "model", "tp", "batch", "length", "status", "speedup_optimised", "speedup_greedy",
        "e2e_vanilla_s", "e2e_optimised_s", "e2e_greedy_s",
    ]  # fmt: skip
    for r in rows:
        if r["status"] == "ok":
            assert r["prefill.inputs.workload.phase"] == "prefill"
            assert r["decode.inputs.workload.phase"] == "decode"
            assert r["decode.inputs.model.name"] == r["model"]
            assert r["decode.inputs.hardware.file"] == "hardware/ascend-910b2.yaml"
            p, _d, mid = e2e_split(int(r["length"]))
            assert int(r["prefill.inputs.workload.context"]) == p
            assert int(r["decode.inputs.workload.context"]) == mid
        else:
            assert r["decode.inputs.model.name"] == ""
    dse = list(csv.DictReader((tmp_path / "dse_l2.csv").read_text().splitlines()))
    for r in dse:
        assert float(r["decode.inputs.hardware.l2_capacity_bytes"]) == float(r["l2_mb"]) * 1e6
    for name in ("fused_vs_preserve", "dse_l2"):
        assert "decode.inputs.versions.preserve_cp" in (tmp_path / f"{name}.csv").read_text()
    assert s["inputs"]["hardware"]["name"] == "ascend-910b2"
    assert set(s["inputs"]) == {"hardware", "options", "versions"}
    assert s["dse"]["optimal_l2_mb_without_prefetch"] == 0  # L2 is useless without prefetch
    assert s["dse"]["optimal_l2_mb_with_prefetch"] > 0
    solved = s["points"]["solved"]
    assert solved > 0 and s["points"]["stored_before"] == 0
    again = reproduce_paper(tmp_path, **kw)
    assert again["points"] == {"total": solved, "stored_before": solved, "solved": 0}
    assert json.loads((tmp_path / "summary.json").read_text())["points"]["solved"] == 0
    assert again["heatmaps"] == s["heatmaps"]


def test_e2e_split_and_cost_optimum_by_hand():
    p, d, mid = e2e_split(3000)
    assert (p, d, mid) == (2000, 1000, 2500)
    cm = CostModel(10000, 300, 0.1, 3, 500, 2.0, 1000)
    rows = [
        {"l2_mb": 0, "tokens_per_s_vanilla": 100.0, "tokens_per_s_prefetch": 100.0},
        {"l2_mb": 50, "tokens_per_s_vanilla": 100.0, "tokens_per_s_prefetch": 150.0},
        {"l2_mb": 200, "tokens_per_s_vanilla": 100.0, "tokens_per_s_prefetch": 151.0},
    ]
    o = dse_optima(rows, cm, 1)
    assert o["optimal_l2_mb_without_prefetch"] == 0 and o["optimal_l2_mb_with_prefetch"] == 50
    gain = (150 / cm.device_cost_usd(50e6)) / (100 / cm.device_cost_usd(0))
    assert o["perf_per_cost_gain"] == pytest.approx(gain)
    assert cost_model(load_hardware("ascend-910b2")).device_cost_usd(0) > 2000
