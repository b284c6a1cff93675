"""`preserve-cp validate`: the shipped validation set runs, every point is predicted (or skipped
with its reason), and the metric mappings match hand arithmetic. Error thresholds on the
training subset are in tests/test_fidelity.py."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time

import pytest

from preserve_cp import load_hardware
from preserve_cp.costs import collective_time_s
from preserve_cp.validate import compare, load_points, parse_precision, predict, summary


def test_validate_runs_on_the_shipped_set(tmp_path):
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "preserve_cp.cli", "validate", "--json", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert time.perf_counter() - t0 < 120
    doc = json.loads(out.stdout)
    assert doc["calibrated"] is True
    pts = doc["points"]
    assert len(pts) >= 20
    for p in pts:
        assert (p["predicted"] is None) == bool(p["skipped"])
        if p["predicted"] is not None:
            assert p["error"] == pytest.approx((p["predicted"] - p["measured"]) / p["measured"])
    s = doc["summary"]
    assert s["train"]["n"] + s["holdout"]["n"] + s["skipped"] == len(pts)
    rows = list(csv.DictReader((tmp_path / "validation.csv").read_text().splitlines()))
    assert len(rows) == len(pts)
    assert all(r["source"].startswith("https://") for r in rows)  # each point's source
    assert (tmp_path / "validation.png").read_bytes()[:4] == b"\x89PNG"


def test_validate_writes_only_what_is_asked(tmp_path):
    """No --out, no --plot: no file at all; --plot FILE: that file only."""
    run = dict(capture_output=True, text=True, timeout=300, cwd=tmp_path)
    out = subprocess.run([sys.executable, "-m", "preserve_cp.cli", "validate"], **run)
    assert out.returncode == 0, out.stderr
    assert "median |error|" in out.stdout and "wrote" not in out.stdout
    assert list(tmp_path.iterdir()) == []
    out = subprocess.run(
        [sys.executable, "-m", "preserve_cp.cli", "validate", "--plot", "v.svg", "--json"], **run
    )
    assert out.returncode == 0, out.stderr
    json.loads(out.stdout)
    assert [p.name for p in tmp_path.iterdir()] == ["v.svg"]
    assert "signed error" in (tmp_path / "v.svg").read_text()
    bad = subprocess.run(
        [sys.executable, "-m", "preserve_cp.cli", "validate", "--plot", "v.pdf"], **run
    )
    assert bad.returncode == 2 and "v.pdf: suffix" in bad.stderr


def test_allreduce_busbw_mapping_by_hand():
    # NCCL bus bandwidth = 2 (n-1)/n x bytes / time
    p = {
        "id": "x",
        "hardware": "h200-sxm",
        "devices": 8,
        "message_bytes": 2**24,
        "metric": "allreduce_busbw_gb_per_s",
    }
    t = collective_time_s("allreduce", 2**24, 8, load_hardware("h200-sxm"))
    assert predict(p) == pytest.approx(2 * 7 / 8 * 2**24 / t / 1e9)


def test_throughput_includes_the_prompt():
    base = {
        "id": "y",
        "hardware": "h100-sxm",
        "model": "llama3-8b",
        "precision": "bf16",
        "tp": 1,
        "batch": 8,
        "input_tokens": 2048,
        "output_tokens": 128,
    }
    tpot = predict({**base, "metric": "time_per_output_token_ms"}) / 1e3
    ttft = predict({**base, "metric": "ttft_ms"}) / 1e3
    e2e = predict({**base, "metric": "e2e_latency_s"})
    assert e2e == pytest.approx(ttft + 128 * tpot)
    assert predict({**base, "metric": "output_tokens_per_s_total"}) == pytest.approx(8 * 128 / e2e)


def test_precision_parsing_and_summary():
    assert parse_precision("fp16 weights/activations/KV") == ("fp16", "fp16", "fp16")
    assert parse_precision("bf16 (vLLM dtype=auto; not printed on the page)") == (
        "bf16",
        "bf16",
        "bf16",
    )
    rows = compare(load_points())
    s = summary(rows)
    errs = sorted(abs(r.error) for r in rows if r.split == "train" and r.error is not None)
    assert s["train"]["n"] == len(errs)
    assert s["train"]["share_within_10pct"] == sum(e <= 0.1 for e in errs) / len(errs)
