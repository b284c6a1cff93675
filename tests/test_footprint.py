"""The footprint study (paper Fig. 2) against exact arithmetic from the model shape."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from preserve_cp import load_model
from preserve_cp.errors import InputError
from preserve_cp.footprint import layer_footprint


def test_llama3_70b_json_matches_exact_arithmetic(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "preserve_cp.cli",
            "footprint",
            "--model",
            "llama3-70b",
            "--dtype",
            "int8",
            "--batch",
            "8",
            "--context",
            "16384",
            "--devices",
            "1,2,4,8,16,32",
            "--json",
            "--plot",
            str(tmp_path / "fp.png"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    m = load_model("llama3-70b")
    h, q, kvh, hd, ffn = 8192, 64 * 128, 8, 128, 28672
    assert (m.hidden_size, m.q_size, m.num_kv_heads, m.head_dim) == (h, q, kvh, hd)
    assert [r["devices"] for r in rows] == [1, 2, 4, 8, 16, 32]
    for r in rows:
        d = r["devices"]
        kv_heads = max(1, kvh // d)  # replicated once devices outnumber KV heads
        assert r["attention_weights_bytes"] == (h * (q // d + 2 * kv_heads * hd) + q // d * h)
        assert r["mlp_weights_bytes"] == 3 * h * ffn // d
        assert r["kv_cache_bytes"] == 8 * 16384 * 2 * kv_heads * hd
    assert rows[3]["mlp_weights_bytes"] == 88_080_384  # 84 MiB per device at tp 8
    assert (tmp_path / "fp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plain_mlp_and_dtype():
    f = layer_footprint("opt-66b", 4, dtype="fp16", batch=1, context=2048)
    assert f.mlp_weights_bytes == 2 * 9216 * 36864 / 4 * 2  # two matrices, 2 bytes
    with pytest.raises(InputError, match="footprint: devices: expected an integer >= 1, found 0"):
        layer_footprint("opt-66b", 0)
