"""Stage 1: hardware and model files load, validate, and carry the published numbers."""

from __future__ import annotations

import pytest

from preserve_cp import list_hardware, list_models, load_hardware, load_model

REQUIRED_HW = {
    "ascend-910b2",
    "ascend-910b3",
    "ascend-910b4",
    "a100-sxm-80g",
    "h100-sxm",
    "h200-sxm",
    "b200",
    "mi300x",
    "mi325x",
    "gaudi3",
    "tpu-v5e",
    "tpu-v5p",
}
REQUIRED_MODELS = {
    "llama3-8b",
    "llama3-70b",
    "qwen2-7b",
    "qwen2-72b",
    "phi3-small",
    "phi3-medium",
    "llama2-7b",
    "llama2-13b",
    "llama2-70b",
    "llama3.1-405b",
    "qwen2.5-7b",
    "qwen2.5-72b",
    "falcon-40b",
    "falcon-180b",
    "gemma2-27b",
    "opt-66b",
    "gpt3-175b",
}


def test_all_required_files_ship_and_load():
    assert set(list_hardware()) >= REQUIRED_HW
    assert set(list_models()) >= REQUIRED_MODELS
    for n in list_hardware():
        hw = load_hardware(n)
        assert hw.name == n and hw.spec is not None and hw.spec.sources
        assert 0 < hw.usable_l2_bytes <= hw.l2_capacity_bytes
    for n in list_models():
        assert load_model(n).name == n


def test_units_converted_once_on_load():
    b2 = load_hardware("ascend-910b2")
    assert b2.l2_capacity_bytes == 192 * 2**20  # l2_capacity_mib: 192
    assert b2.hbm_capacity_bytes == 64e9  # hbm_capacity_gb: 64
    assert b2.matmul_flops_per_s["fp16"] == pytest.approx(353.9e12)
    assert b2.effective_hbm_bytes_per_s == pytest.approx(1.6e12 * 0.8)
    h100 = load_hardware("h100-sxm")
    assert h100.l2_capacity_bytes == 50e6  # decimal MB
    assert h100.link_bandwidth_bytes_per_s == 450e9
    assert "fp8" not in load_hardware("a100-sxm-80g").matmul_flops_per_s


def test_llama3_70b_layer_parameters():
    # 8192 x (8192 + 2 x 1024) + 8192 x 8192 + 3 x 8192 x 28672 = 855,638,016
    m = load_model("llama3-70b")
    assert m.params_per_layer() == 855_638_016
    assert m.params_per_layer() * m.num_layers == pytest.approx(68.45e9, rel=1e-3)


def test_parallel_and_windowed_models():
    assert load_model("falcon-180b").block == "parallel"
    g2 = load_model("gemma2-27b")
    assert g2.uses_window(0) and not g2.uses_window(1)


def test_hardware_overrides_for_sweeps():
    hw = load_hardware("h100-sxm").with_overrides(l2_capacity_bytes=104e6)
    assert hw.usable_l2_bytes == pytest.approx(104e6 * 0.75)
