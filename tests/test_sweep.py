"""Sweeps on a real Dask cluster; kill and resume without losing or repeating a point."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys

import pytest
import yaml
from conftest import wait_for_rows

from preserve_cp.sweep import Store, SweepSpec, expand

SPEC = {
    "name": "t",
    "models": ["llama3-8b"],
    "phases": ["decode"],
    "batch": [2],
    "context": [4096],
    "tp": [4],
    "dtype": ["int8"],
    "hardware": ["ascend-910b2"],
    "overrides": {"l2_capacity_mb": [0, 16, 48, 104]},
    "solve": {"time_limit_s": 5},
}


def _write_spec(tmp_path, **changes):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**SPEC, **changes}))
    return path


def _cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "preserve_cp.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _rows(path):
    with sqlite3.connect(path) as db:
        return {k: (r, c) for k, r, c in db.execute("SELECT key, result, created FROM results")}


def test_sweep_on_an_existing_dask_cluster(tmp_path):
    from distributed import LocalCluster

    spec = _write_spec(tmp_path)
    store = tmp_path / "r.sqlite"
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        out = _cli(
            "sweep",
            str(spec),
            "--store",
            str(store),
            "--scheduler",
            cluster.scheduler_address,
            "--export",
            str(tmp_path / "r.csv"),
        )
    assert out.returncode == 0, out.stderr
    assert "4 points, 0 already stored, 4 solved now" in out.stdout
    rows = _rows(store)
    assert len(rows) == 4
    csv_lines = (tmp_path / "r.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 5 and "override.l2_capacity_mb" in csv_lines[0]
    # throughput per cost for every point (the hardware file has a cost section)
    assert "tokens_per_s_per_kusd" in csv_lines[0]
    # what each point was computed from: solve --json's inputs, flattened
    for col in ("inputs.model.file", "inputs.hardware.calibrated", "inputs.workload.context"):
        assert col in csv_lines[0].split(","), col
    st = Store(store)
    per_cost = {
        p.overrides["l2_capacity_mb"]: st.get(p.key)["tokens_per_s_per_kusd"]
        for p in expand(SweepSpec(**SPEC))
    }
    assert per_cost[104] > per_cost[0]  # prefetching into a larger L2 pays for its area here
    # a rerun does no solver work
    again = _cli("sweep", str(spec), "--store", str(store), "--no-progress")
    assert "4 already stored, 0 solved now" in again.stdout
    assert _rows(store) == rows


@pytest.mark.slow  # about 20-30 s: runs with the slow checks
def test_killed_sweep_resumes_without_loss_or_repeat(tmp_path):
    spec = _write_spec(
        tmp_path, overrides={"l2_capacity_mb": [0, 4, 8, 16, 32, 48, 64, 104]}, batch=[2, 8]
    )
    points = expand(
        SweepSpec(
            **{
                **SPEC,
                "overrides": {"l2_capacity_mb": [0, 4, 8, 16, 32, 48, 64, 104]},
                "batch": [2, 8],
            }
        )
    )
    store = tmp_path / "r.sqlite"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "preserve_cp.cli",
            "sweep",
            str(spec),
            "--store",
            str(store),
            "--no-progress",
            "--workers",
            "2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for_rows(store, proc, at_least=1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    partial = _rows(store)
    assert 1 <= len(partial) < len(points), "the sweep was not killed mid-way"
    out = _cli("sweep", str(spec), "--store", str(store), "--no-progress")
    assert out.returncode == 0, out.stderr
    assert f"{len(partial)} already stored, {len(points) - len(partial)} solved now" in out.stdout
    final = _rows(store)
    assert set(final) == {p.key for p in points}  # every point exactly once (primary key)
    for k, v in partial.items():
        assert final[k] == v  # nothing stored before the kill was redone
    # same results as an uninterrupted run
    clean = tmp_path / "clean.sqlite"
    assert _cli("sweep", str(spec), "--store", str(clean), "--no-progress").returncode == 0
    a = Store(store)
    b = Store(clean)
    for k in final:
        ra, rb = a.get(k), b.get(k)
        assert ra["status"] == rb["status"]
        if "makespan_s" in ra:
            assert ra["makespan_s"] == pytest.approx(rb["makespan_s"], rel=1e-9)


def test_bad_spec_and_scheduler_are_clean_errors(tmp_path):
    bad = _write_spec(tmp_path, overrides={"l2_size": [1]})
    out = _cli("sweep", str(bad), "--store", str(tmp_path / "x.sqlite"))
    assert out.returncode == 2 and "l2_size" in out.stderr and "Traceback" not in out.stderr
    good = _write_spec(tmp_path)
    out = _cli("sweep", str(good), "--scheduler", "localhost:1")
    assert out.returncode == 2 and "--scheduler" in out.stderr


def test_solve_point_carries_inputs_and_the_fast_path():
    from preserve_cp.describe import solve_inputs
    from preserve_cp.graph import build_graph
    from preserve_cp.sweep import solve_point

    full, fast = (
        expand(SweepSpec(**{**SPEC, "overrides": {"l2_capacity_mb": [48]}, "plans": plans}))[0]
        for plans in (None, ["greedy", "vanilla"])
    )
    assert full.key != fast.key and fast.solve["plans"] == ["vanilla", "greedy"]
    assert fast.describe()["plans"] == "vanilla,greedy" and "plans" not in full.describe()
    a, b = solve_point(full), solve_point(fast)
    assert a["status"] in ("optimal", "feasible") and b["status"] == "baselines"
    assert b["baseline_makespan_s"] == a["baseline_makespan_s"]
    assert b["greedy_makespan_s"] == a["greedy_makespan_s"] and b["streaming_makespan_s"] is None
    assert b["makespan_s"] == min(b["baseline_makespan_s"], b["greedy_makespan_s"])
    g = build_graph("llama3-8b", full.workload)
    want = solve_inputs(g, "ascend-910b2", model="llama3-8b")
    for res, plans in ((a, None), (b, ["vanilla", "greedy"])):
        got = res["inputs"]
        assert got["model"] == want["model"] and got["workload"] == want["workload"]
        assert got["versions"] == want["versions"] and got["options"]["plans"] == plans
        assert got["hardware"]["file"] == "hardware/ascend-910b2.yaml"
        assert got["hardware"]["l2_capacity_bytes"] == 48e6  # after the override


def test_export_keeps_columns_and_adds_inputs(tmp_path):
    from preserve_cp.sweep import export_csv
    from preserve_cp.sweep.run import RESULT_FIELDS

    st = Store(tmp_path / "s.sqlite")
    pt = {"model": "m", "hardware": "h", "key": "k1"}
    st.put("k1", pt, {"status": "baselines", "inputs": {"model": {"name": "m"}, "x": [1, 2]}})
    st.put("k2", {**pt, "key": "k2"}, {"status": "invalid", "error": "bad"})  # no inputs
    export_csv(st, tmp_path / "s.csv")
    st.close()
    lines = (tmp_path / "s.csv").read_text().splitlines()
    head = lines[0].split(",")
    assert head == [*sorted(pt), *RESULT_FIELDS, "inputs.model.name", "inputs.x"]
    assert lines[1].endswith(',m,"1,2"') and lines[2].endswith("bad,,")


@pytest.mark.parametrize(
    "plans, message",
    [(["vanila"], "plans: expected names from vanilla"), ([], "plans: expected list should")],
)
def test_bad_plans_in_a_spec(tmp_path, plans, message):
    from preserve_cp.errors import InputError
    from preserve_cp.sweep import load_spec

    with pytest.raises(InputError, match=message):
        load_spec(_write_spec(tmp_path, plans=plans))


def test_sweep_cli_plans_option(tmp_path):
    spec = _write_spec(tmp_path, overrides={"l2_capacity_mb": [16, 48]})
    out = _cli(
        "sweep",
        str(spec),
        "--store",
        str(tmp_path / "r.sqlite"),
        "--plans",
        "vanilla",
        "--no-progress",
        "--workers",
        "1",
        "--export",
        "-",
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3 and "2 points, 0 already stored, 2 solved now" in out.stderr
    head = lines[0].split(",")
    for row in lines[1:]:
        rec = dict(zip(head, next(iter(__import__("csv").reader([row]))), strict=True))
        assert rec["status"] == "baselines" and rec["plans"] == "vanilla"
        assert rec["inputs.options.plans"] == "vanilla"
    bad = _cli("sweep", str(spec), "--plans", "fast")
    assert bad.returncode == 2 and "--plans: value: expected names from" in bad.stderr


def test_a_spec_timing_reaches_every_point():
    pytest.importorskip("aiconfigurator_core")
    from preserve_cp.sweep import solve_point

    base = {"models": ["llama3-8b"], "hardware": ["h100-sxm"], "tp": [1], "batch": [4]}
    base["plans"] = ["vanilla"]
    roof, meas, file_default = (
        expand(SweepSpec(**{**base, **extra}))[0]
        for extra in ({"timing": "roofline"}, {"timing": "measured"}, {})
    )
    assert (roof.timing, meas.timing, file_default.timing) == ("roofline", "measured", "roofline")
    assert roof.key == file_default.key != meas.key
    assert meas.describe()["timing"] == "measured" and "timing" not in roof.describe()
    a, b = solve_point(roof), solve_point(meas)
    assert a["status"] == b["status"] == "baselines"
    assert b["baseline_makespan_s"] != pytest.approx(a["baseline_makespan_s"], rel=1e-3)
    assert b["inputs"]["hardware"]["timing"] == {
        "kind": "measured",
        "tables": "h100_sxm/trtllm/1.3.0rc20",
    }
    assert "timing" not in a["inputs"]["hardware"]
    with pytest.raises(ValueError, match="timing"):
        SweepSpec(**{**base, "timing": "tables"})
