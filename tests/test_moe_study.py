"""``preserve-cp reproduce moe``: the router-aware prefetch study (issue 13)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from preserve_cp.cli import main
from preserve_cp.moe_study import _row, _stops_paying, reproduce_moe
from preserve_cp.viz.moe_plots import moe_study_figure


def test_one_row_and_its_figure() -> None:
    r = _row("mixtral-8x7b", "h200-sxm", 16, "uniform", 0.9, 4)
    assert r["status"] == "ok" and r["scenarios"] >= 4
    # batch 16 of top-2 over 8 experts: nearly every expert is read in a step
    assert r["experts_read_share"] > 0.95
    assert r["optimised_s"] <= r["certain_only_s"] <= r["vanilla_s"] * (1 + 1e-12)
    assert r["bound_s"] <= r["optimised_s"]
    assert r["speedup_vs_certain_only"] == pytest.approx(r["certain_only_s"] / r["optimised_s"])
    [s] = _stops_paying([r])
    assert s["all_experts_read_from_batch"] == 16
    fig = moe_study_figure([r], "batch", "batch")
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "h200-sxm"
    oom = _row("deepseek-v3", "ascend-910b2", 4, "uniform", 0.9, 4)
    assert oom["status"] == "OOM"


def test_cli_reproduce_moe_bad_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "moe", "--out", str(tmp_path / "no" / "such")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err


@pytest.mark.slow
def test_small_study_writes_every_output(tmp_path: Path) -> None:
    out = tmp_path / "moe"
    s = reproduce_moe(
        out,
        models=["mixtral-8x7b"],
        devices=["h200-sxm"],
        batches=[1, 16],
        accuracies=[0.5, 1.0],
        skews=["uniform", "zipf:1.2"],
        l2_grid_mb=[16, 50],
        scenarios=4,
    )
    for name in ("batch", "accuracy", "skew", "l2_moe", "l2_dense"):
        assert (out / f"moe_{name}.csv").is_file() and (out / f"moe_{name}.png").is_file()
    assert json.loads((out / "summary.json").read_text())["l2"] == s["l2"]
    acc = {
        r["predictor_accuracy"]: float(r["optimised_s"])
        for r in csv.DictReader((out / "moe_accuracy.csv").open())
    }
    assert acc["1.0"] <= acc["0.5"]  # a better predictor never makes the step slower
    skew = {
        r["routing"]: float(r["optimised_s"]) for r in csv.DictReader((out / "moe_skew.csv").open())
    }
    assert skew["zipf:1.2"] <= skew["uniform"]
    assert s["l2"]["moe"]["perf_per_cost_gain"] >= 1.0
