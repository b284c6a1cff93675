"""CPU-side logic of bench/gpu/prefetch_bench.py (no torch, no GPU needed)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from preserve_cp import load_hardware

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu" / "prefetch_bench.py"


@pytest.fixture(scope="module")
def pb():
    spec = importlib.util.spec_from_file_location("prefetch_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_module_does_not_import_torch(pb):
    src = BENCH.read_text()
    top = [ln for ln in src.splitlines() if ln.startswith(("import ", "from "))]
    assert not any("torch" in ln for ln in top)


def test_sizes_below_l2(pb):
    sizes = pb.sizes_mb(50e6)
    assert sizes == [8, 16, 24, 32]
    assert all(0 < s * 1e6 < 50e6 for s in sizes)
    assert all(s * 1e6 <= 0.75 * 50e6 for s in sizes)  # fit the prefetchable share of L2
    assert all(0 < s * 1e6 < 40e6 for s in pb.sizes_mb(40e6))


def test_predict_by_hand_h100(pb):
    w, k, standin = 16e6, 4096, 15e-6
    n = w / (2 * k)
    hbm_eff = 3.35e12 * 0.8
    l2_bw = 9.5e12
    ovh = 2e-6
    compute = 2 * n * k / (989.4e12 * 0.7)
    other = 2 * k + 2 * n  # x read + y write
    p = pb.predict("h100-sxm", w, standin, calibrated=False)  # the priors, by hand
    assert p["streaming_s"] == pytest.approx(max(compute, (w + other) / hbm_eff) + ovh)
    assert p["streaming_s"] == pytest.approx(w / hbm_eff + ovh, rel=2e-3)
    assert p["resident_s"] == pytest.approx(max(compute, other / hbm_eff, w / l2_bw) + ovh)
    # the prefetch moves all of W within the window (15 us x 2.68 TB/s = 40 MB > 16 MB)
    assert p["moved_bytes"] == pytest.approx(w)
    assert p["vanilla_s"] == pytest.approx(standin + p["streaming_s"])
    assert p["prefetch_s"] == pytest.approx(standin + p["resident_s"])
    assert p["saving_s"] == pytest.approx(p["streaming_s"] - p["resident_s"])
    assert p["saving_window_s"] == pytest.approx(p["saving_s"])
    assert not p["prefetch_dropped"]


@pytest.mark.parametrize("hw", ["h100-sxm", "h200-sxm"])
def test_saving_bounds(pb, hw):
    # 15 us window: the prefetch of all of W ends inside it, the GEMV then reads L2 only
    for mb in pb.sizes_mb(50e6):
        p = pb.predict(hw, mb * 1e6, 15e-6)
        assert p["saving_s"] > 0
        assert p["saving_s"] <= p["streaming_s"] - p["resident_s"] + 1e-15


@pytest.mark.parametrize("hw", ["h100-sxm", "h200-sxm"])
def test_short_window(pb, hw):
    # 3 us window: the GEMV waits for the rest of W, so the saving shrinks (it may even be a
    # loss: the wait costs more than L2 saves); never above streaming - resident. A prefetch
    # of only what the window moves always helps (saving_window_s > 0), and may beat full
    # residency: with part of W in L2 the GEMV reads HBM and L2 at once (convex roofline).
    for mb in pb.sizes_mb(50e6):
        p = pb.predict(hw, mb * 1e6, 3e-6)
        assert p["saving_s"] <= p["streaming_s"] - p["resident_s"] + 1e-15
        assert p["saving_window_s"] > 0
    big = pb.predict(hw, 32e6, 3e-6)
    assert big["saving_s"] < big["saving_window_s"]


def test_short_window_moves_part(pb):
    p = pb.predict("h100-sxm", 32e6, 5e-6)
    eff = load_hardware("h100-sxm").hbm_efficiency  # calibrated by default
    assert p["moved_bytes"] == pytest.approx(5e-6 * 3.35e12 * eff)
    assert p["saving_s"] < p["streaming_s"] - p["resident_s"]


def test_compare_arithmetic(pb):
    m = {"streaming_s": 12e-6, "resident_s": 6e-6, "saving_s": 0.0, "extra": 1}
    p = {"streaming_s": 10e-6, "resident_s": 8e-6, "saving_s": 0.0}
    c = pb.compare(m, p)
    assert set(c) == {"streaming_s", "resident_s", "saving_s"}
    assert c["streaming_s"]["ratio"] == pytest.approx(1.2)
    assert c["streaming_s"]["error_s"] == pytest.approx(2e-6)
    assert c["streaming_s"]["rel_error"] == pytest.approx(0.2)
    assert c["resident_s"]["ratio"] == pytest.approx(0.75)
    assert c["resident_s"]["rel_error"] == pytest.approx(-0.25)
    assert c["saving_s"]["ratio"] is None and c["saving_s"]["rel_error"] is None


def test_result_document_round_trip(pb, tmp_path):
    p = pb.predict("h100-sxm", 8e6, 15e-6)
    m = {k: p[k] * 1.1 for k in pb.COMPARED}
    rows = [
        {
            "size_mb": 8,
            "weight_bytes": 8e6,
            "measured": m,
            "predicted": p,
            "compare": pb.compare(m, p),
        }
    ]
    ver = {"torch": None, "cuda": None, "driver": None, "preserve_cp": "x"}
    doc = pb.result_document("NVIDIA H100 80GB HBM3", "h100-sxm", rows, versions_info=ver)
    f = tmp_path / "results-h100.json"
    f.write_text(json.dumps(doc))
    back = json.loads(f.read_text())
    assert back == doc
    assert set(back) == {
        "schema",
        "date",
        "device",
        "hardware",
        "versions",
        "model_inputs",
        "settings",
        "rows",
    }
    assert back["device"] == "NVIDIA H100 80GB HBM3" and back["hardware"] == "h100-sxm"
    eff = load_hardware("h100-sxm").hbm_efficiency
    assert back["model_inputs"]["effective_hbm_bytes_per_s"] == pytest.approx(3.35e12 * eff)
    assert back["model_inputs"]["calibrated"] is True
    prior = pb.result_document("x", "h100-sxm", [], versions_info=ver, calibrated=False)
    assert prior["model_inputs"]["effective_hbm_bytes_per_s"] == pytest.approx(2.68e12)
    row = back["rows"][0]
    assert set(row) == {"size_mb", "weight_bytes", "measured", "predicted", "compare"}
    assert row["compare"]["streaming_s"]["ratio"] == pytest.approx(1.1)
    # versions are gathered when not given, and torch is None where it is missing
    auto = pb.result_document("cpu", "h200-sxm", [])
    assert set(auto["versions"]) >= {"torch", "cuda", "driver", "preserve_cp"}


def test_dry_run_prints_predictions(pb, capsys):
    assert pb.main(["--dry-run", "--hardware", "h100-sxm"]) == 0
    out = capsys.readouterr().out
    assert "h100-sxm" in out and "saving_us" in out
    assert len([ln for ln in out.splitlines() if ln.strip().startswith(("8.00", "32.00"))]) == 2


def test_no_gpu_exits_2(pb, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    assert pb.main([]) == 2
    err = capsys.readouterr().err
    assert err.strip() == pb.NO_GPU
    assert "--dry-run" in err
