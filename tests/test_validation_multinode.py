"""The multi-node and MoE points of validation/measurements.yaml (those with a ``family``): they
load and predict, their split was recorded before any run (counts by family), the DeepEP
held-out rows stay within 15 % (as bench/fit_deepep.py), and the layout fields reach the
workload."""

from __future__ import annotations

from collections import Counter

import pytest

from preserve_cp import load_hardware
from preserve_cp.pipeline import pipeline_step_s, stage_workloads
from preserve_cp.validate import (
    _stage_vanilla_s,
    _vanilla_s,
    compare,
    load_points,
    predict,
    run_options,
)
from preserve_cp.workload import Workload

#: the split fixed in the YAML header before the model ran on these points
SPLIT = {
    "deepep-low-latency": {"train": 6, "holdout": 6},
    "inferencex-dsr1-h200": {"train": 1, "holdout": 3},
    "tt-dsr1-h100-tp16": {"train": 1, "holdout": 3},
    "vllmci-mixtral": {"train": 1, "holdout": 2},
    "baseten-mixtral": {"train": 1, "holdout": 1},
}


@pytest.fixture(scope="module")
def multi() -> list[dict]:
    return [p for p in load_points() if p.get("family")]


@pytest.fixture(scope="module")
def rows(multi):
    return compare(multi)


def test_split_of_every_new_point_is_recorded(multi):
    got: dict[str, Counter] = {}
    for p in multi:
        got.setdefault(p["family"], Counter())[p["split"]] += 1
    assert {k: dict(v) for k, v in got.items()} == SPLIT
    total = Counter(p["split"] for p in multi)
    assert total == {"train": 10, "holdout": 15}  # 40 / 60
    for p in multi:  # every point names its source and the row it was copied from
        assert p["source"] and p["quoted"] and p["notes"]


def test_new_points_load_and_predict(rows):
    assert len(rows) == 25
    for r in rows:
        assert not r.skipped, (r.id, r.skipped)
        assert r.predicted is not None and r.predicted > 0


def test_deepep_held_out_rows_within_15_percent(rows):
    held = [r for r in rows if r.id.startswith("deepep-") and r.split == "holdout"]
    assert len(held) == 6
    for r in held:
        assert r.error is not None and abs(r.error) <= 0.15, (r.id, r.error)


def test_all_to_all_point_by_hand():
    # EP 16 dispatch on the h800: 8 of 16 ranks in the node; 128 x 8 x 7168 fp8 + scales
    p = {
        "id": "x",
        "hardware": "h800",
        "model": "none",
        "metric": "all_to_all_latency_us",
        "ep": 16,
        "tokens": 128,
        "top_k": 8,
        "hidden": 7168,
        "phase": "dispatch",
    }
    hw = load_hardware("h800")
    size = 128 * 8 * (7168 + 7168 / 128 * 4)
    local = size / 2
    link = hw.link_bandwidth_bytes_per_s * hw.link_efficiency
    want = hw.all_to_all_latency_s + max(local / link, (size - local) / hw.scale_out_bytes_per_s)
    assert predict(p, hw) == pytest.approx(want * 1e6)


def test_layout_fields_reach_the_workload():
    opts = run_options({"ep": 8, "attention": "dp", "pp": 2, "microbatches": 4})
    assert (opts["ep"], opts["attention"], opts["pp"], opts["microbatches"]) == (8, "dp", 2, 4)
    assert "ep" not in run_options({"stack": "vllm"})  # defaults stay out


def test_pipeline_point_is_the_pipeline_step_of_its_stages():
    hw = load_hardware("h100-sxm")
    dt = ("bf16", "bf16", "bf16")
    whole = _vanilla_s("decode", "llama3.2-1b", hw, 4, 512, 1, dt, {"pp": 2, "microbatches": 2})
    wl = Workload("decode", 4, 512, 1, dtype="bf16", pp=2, microbatches=2)
    stages = [_stage_vanilla_s("llama3.2-1b", w, hw) for w in stage_workloads(wl)]
    assert [w.batch for w in stage_workloads(wl)] == [2, 2]
    assert whole == pytest.approx(pipeline_step_s(stages, 2))
    assert whole > max(stages) * 2
