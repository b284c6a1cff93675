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
