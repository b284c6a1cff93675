"""The measured-kernel timing source (preserve_cp/measured.py, ``--timing measured``).

The expected numbers are rows of aiconfigurator-core 0.12.0's tables, read here with pyarrow
directly (not through the module under test): h100_sxm, TensorRT-LLM 1.3.0rc20.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("aiconfigurator_core")

from preserve_cp import InputError, Workload, build_graph, load_hardware  # noqa: E402
from preserve_cp.cli import main  # noqa: E402
from preserve_cp.costs import op_costs  # noqa: E402
from preserve_cp.describe import solve_inputs  # noqa: E402
from preserve_cp.estimate import estimate  # noqa: E402
from preserve_cp.machine import machine_for  # noqa: E402
from preserve_cp.measured import (  # noqa: E402
    MoEShape,
    coverage,
    data_root,
    decode_attention_time,
    gemm_time,
    moe_shapes,
    moe_time,
    op_time,
)
from preserve_cp.models import load_model  # noqa: E402
from preserve_cp.simulate import verify  # noqa: E402
from preserve_cp.solve import solve  # noqa: E402

H100 = load_hardware("h100-sxm")
SRC = H100.measured
FP8 = dict(dtype="fp8")


def _rows(op: str, name: str) -> dict[str, np.ndarray]:
    assert SRC is not None
    path = data_root() / SRC.system / op / SRC.backend / SRC.version / f"{name}.parquet"
    t = pq.read_table(path)
    return {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}


def _gemm_row_ms(m: int, n: int, k: int, dtype: str) -> float:
    r = _rows("gemm", "gemm_perf")
    sel = (r["m"] == m) & (r["n"] == n) & (r["k"] == k) & (r["gemm_dtype"] == dtype)
    assert sel.sum() == 1
    return float(r["latency"][sel][0])


# --- lookups --------------------------------------------------------------------------------
def test_gemm_lookup_reproduces_table_rows_exactly() -> None:
    assert SRC is not None
    for m, n, k, ours, theirs in (
        (4, 1024, 8192, "fp8", "fp8"),
        (4096, 4096, 4096, "bf16", "bfloat16"),
        (1, 65536, 8192, "bf16", "bfloat16"),
    ):
        t = gemm_time(SRC, m, n, k, ours, ours)
        assert t is not None
        assert t.vanilla_s == _gemm_row_ms(m, n, k, theirs) * 1e-3
        assert 0 < t.floor_s <= t.vanilla_s


def test_decode_attention_lookup_reproduces_a_table_row() -> None:
    assert SRC is not None
    r = _rows("attention", "generation_attention_perf")
    sel = (
        (r["batch_size"] == 4)
        & (r["step"] == 16383)
        & (r["num_heads"] == 8)
        & (r["num_key_value_heads"] == 1)
        & (r["head_dim"] == 128)
        & (r["window_size"] == 0)
        & (r["kv_cache_dtype"] == "fp8")
    )
    assert sel.sum() == 1
    t = decode_attention_time(SRC, 4, 16383, 8, 1, 128, "fp8")
    assert t is not None and t.vanilla_s == float(r["latency"][sel][0]) * 1e-3


def test_interpolation_is_monotone_between_rows() -> None:
    assert SRC is not None
    # in m between two adjacent rows of the table (m = 4353 and 8192; log-linear in log m)
    lo = _gemm_row_ms(4353, 8192, 8192, "bfloat16") * 1e-3
    hi = _gemm_row_ms(8192, 8192, 8192, "bfloat16") * 1e-3
    ms = [4353, *np.geomspace(4353, 8192, 9)[1:-1], 8192]
    got = [gemm_time(SRC, m, 8192, 8192, "bf16", "bf16").vanilla_s for m in ms]  # type: ignore[union-attr]
    assert got[0] == lo and got[-1] == hi and lo < hi
    assert np.all(np.diff(got) > 0)
    # the midpoint in log m is the geometric mean of the two rows
    assert got[4] == pytest.approx(math.sqrt(lo * hi), rel=1e-12)
    # in n (1280 is not a grid value: between 1024 and 1536)
    a, b = _gemm_row_ms(4, 1024, 8192, "fp8"), _gemm_row_ms(4, 1536, 8192, "fp8")
    mid = gemm_time(SRC, 4, 1280, 8192, "fp8", "fp8").vanilla_s * 1e3  # type: ignore[union-attr]
    assert min(a, b) < mid < max(a, b)


def test_beyond_the_table_time_grows_with_work_and_below_it_stays_flat() -> None:
    assert SRC is not None
    top = _gemm_row_ms(32768, 8192, 8192, "bfloat16") * 1e-3  # m = 32768 is the largest row
    twice = gemm_time(SRC, 65536, 8192, 8192, "bf16", "bf16")
    assert twice is not None and twice.vanilla_s == pytest.approx(2 * top, rel=1e-12)
    small = gemm_time(SRC, 4, 16, 16, "bf16", "bf16")  # n, k below the smallest (32)
    assert small is not None and small.vanilla_s == _gemm_row_ms(4, 32, 32, "bfloat16") * 1e-3


def test_shapes_without_a_table_entry_have_none() -> None:
    assert SRC is not None
    assert gemm_time(SRC, 4, 1024, 1024, "int4", "bf16") is None  # no such dtype pair
    assert decode_attention_time(SRC, 4, 4096, 8, 1, 128, "int8") is None  # int8 KV
    assert decode_attention_time(SRC, 4, 4096, 8, 3, 128, "fp8") is None  # 3 KV heads


# --- the graph's shape attributes -------------------------------------------------------------
def test_graph_shapes_agree_with_flops() -> None:
    for name, wl in (
        ("llama3-70b", Workload("decode", 4, 16384, 8, **FP8)),
        ("mixtral-8x7b", Workload("prefill", 2, 512, 2)),
    ):
        g = build_graph(name, wl)
        m = load_model(name)
        for n, a in g.nodes(data=True):
            if a["kind"] == "gemm" and "n" in a:
                assert a["flops"] == pytest.approx(
                    2 * a["rows"] * a.get("experts", 1) * a["n"] * a["k"]
                ), n
                assert a["weight_dtype"] == wl.weight_dtype
            if a["kind"] == "attention":
                assert a["heads"] * a["head_dim"] == m.q_size // wl.tp
                assert a["kv_heads"] == m.kv_heads_per_rank(wl.tp)
                assert a["batch"] == wl.batch


# --- op_costs ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def decode_70b():
    g = build_graph("llama3-70b", Workload("decode", 4, 16384, 8, **FP8))
    return g, op_costs(g, H100), op_costs(g, H100.with_timing("measured"))


def test_duration_with_nothing_in_l2_is_the_measured_time_plus_overhead(decode_70b) -> None:
    g, roof, meas = decode_70b
    hwm = H100.with_timing("measured")
    covered = 0
    for n, a in g.nodes(data=True):
        t = op_time(hwm, a, g.graph)
        if t is None:  # norms, RoPE, collectives: the roofline, untouched
            assert meas[n] == roof[n], n
            continue
        covered += 1
        c = meas[n]
        assert c.overhead_s == roof[n].overhead_s  # launch (+ step on the LM head) on top
        assert c.duration_s(0.0) == pytest.approx(t.vanilla_s + c.overhead_s, rel=1e-12), n
    assert covered == 401  # 80 layers x (qkv, attention, o_proj, gate_up, down) + lm_head


def test_duration_is_convex_and_falls_until_the_l2_term_takes_over(decode_70b) -> None:
    g, _, meas = decode_70b
    for n in ("L0.qkv", "L0.attention", "L0.o_proj", "L0.gate_up", "L0.down", "lm_head"):
        c = meas[n]
        xs = np.linspace(0.0, c.prefetchable_bytes, 201)
        d = np.array([c.duration_s(x) for x in xs])
        tol = 1e-15
        assert np.all(np.diff(d, 2) >= -tol), n  # convex
        best = int(np.argmin(d))
        assert np.all(np.diff(d[: best + 1]) <= tol), n  # non-increasing up to its minimum
        assert c.min_duration_s() <= d.min() + tol
        assert d[-1] < d[0], n  # prefetching all of it helps


def test_duration_is_non_increasing_under_the_sum_law() -> None:
    hw = load_hardware("rtx-pro-6000", timing="measured")  # l2_hit_law: sum
    g = build_graph("llama3-8b", Workload("decode", 4, 4096, 2, **FP8))
    costs = op_costs(g, hw)
    checked = 0
    for n, a in g.nodes(data=True):
        if op_time(hw, a, g.graph) is None or not costs[n].prefetchable_bytes:
            continue
        c = costs[n]
        d = np.array([c.duration_s(x) for x in np.linspace(0, c.prefetchable_bytes, 51)])
        assert np.all(np.diff(d) <= 1e-15) and np.all(np.diff(d, 2) >= -1e-15), n
        checked += 1
    assert checked == 32 * 5 + 1


def test_a_device_without_tables_keeps_the_roofline() -> None:
    g = build_graph("llama3-70b", Workload("decode", 4, 16384, 8))
    hw = load_hardware("ascend-910b2")
    assert hw.measured is None
    assert op_costs(g, hw.with_timing("measured")) == op_costs(g, hw)
    assert load_hardware("h100-sxm").timing == "roofline"  # nothing changes unless asked


# --- the whole pipeline -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "batch", "tp"),
    [("llama3-8b", 4, 8), ("mixtral-8x7b", 8, 2)],  # dense, MoE
)
def test_solve_with_measured_timing_returns_a_verified_plan(model: str, batch: int, tp: int):
    two_layers = load_model(model).model_copy(update={"num_layers": 2})
    g = build_graph(two_layers, Workload("decode", batch, 4096, tp, **FP8))
    hw = H100.with_timing("measured")
    r = solve(g, hw, time_limit_s=5.0)
    assert verify(g, r.schedule, machine_for(hw)) == []
    assert r.lower_bound_s <= r.makespan_s * (1 + 1e-9)
    assert r.makespan_s <= r.baseline_makespan_s
    # the tables did time the step: its vanilla is not the roofline's
    roofline = estimate(g, H100, plans=["vanilla"]).baseline_makespan_s
    assert r.baseline_makespan_s != pytest.approx(roofline, rel=1e-3)
    timing = solve_inputs(g, hw)["hardware"]["timing"]
    assert timing == {"kind": "measured", "tables": "h100_sxm/trtllm/1.3.0rc20"}
    assert "timing" not in solve_inputs(g, H100)["hardware"]


def test_solve_json_with_measured_timing_matches_the_schema(capsys) -> None:
    import json

    from test_json_schema import validate

    from preserve_cp.describe import solve_schema

    args = ["solve", "--model", "llama3-8b", "--hardware", "h100-sxm", "--batch", "2"]
    args += ["--context", "1024", "--tp", "4", "--dtype", "fp8", "--plans", "vanilla"]
    assert main([*args, "--timing", "measured", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    schema = solve_schema()
    validate(out, schema, schema)
    assert out["inputs"]["hardware"]["timing"]["tables"] == "h100_sxm/trtllm/1.3.0rc20"
    assert main([*args, "--json"]) == 0  # the roofline: no timing key, a different step
    roof = json.loads(capsys.readouterr().out)
    assert "timing" not in roof["inputs"]["hardware"]
    assert roof["baseline_makespan_s"] != pytest.approx(out["baseline_makespan_s"], rel=1e-3)


# --- errors -----------------------------------------------------------------------------------
def test_missing_package_is_one_clear_error(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "aiconfigurator_core", None)  # import fails
    g = build_graph("llama3-8b", Workload("decode", 1, 1024, 8))
    with pytest.raises(InputError, match=r'pip install "preserve-cp\[measured\]"'):
        op_costs(g, H100.with_timing("measured"))
    args = ["solve", "--model", "llama3-8b", "--hardware", "h100-sxm", "--timing", "measured"]
    assert main([*args, "--plans", "vanilla"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "preserve-cp[measured]" in err
    assert main(["validate", "--timing", "measured"]) == 2


def test_a_measured_section_naming_missing_tables_is_an_input_error(tmp_path: Path) -> None:
    text = (Path(__file__).parent.parent / "hardware" / "h100-sxm.yaml").read_text()
    bad = tmp_path / "h100-bad.yaml"
    bad.write_text(text.replace("version: 1.3.0rc20", "version: 9.9.9"))
    g = build_graph("llama3-8b", Workload("decode", 1, 1024, 8))
    with pytest.raises(InputError, match=r"measured: .*9\.9\.9.*1\.3\.0rc20"):
        op_costs(g, load_hardware(bad, timing="measured"))
    worse = tmp_path / "h100-worse.yaml"
    worse.write_text(text.replace("system: h100_sxm", "system: ../h100_sxm"))
    with pytest.raises(InputError, match="measured.system"):
        load_hardware(worse)
    with pytest.raises(InputError, match="timing: expected one of roofline, measured"):
        H100.with_timing("magic")


# --- MoE layers (moe/moe_perf) ---------------------------------------------------------------
def _moe_row_s(
    tokens: int, hidden: int, inter: int, dtype: str, top_k: int, experts: int, tp: int, ep: int
) -> float:
    r = _rows("moe", "moe_perf")
    sel = (
        (r["num_tokens"] == tokens)
        & (r["hidden_size"] == hidden)
        & (r["inter_size"] == inter)
        & (r["moe_dtype"] == dtype)
        & (r["topk"] == top_k)
        & (r["num_experts"] == experts)
        & (r["moe_tp_size"] == tp)
        & (r["moe_ep_size"] == ep)
        & (r["distribution"] == "balanced")
    )
    sources, counts = np.unique(r["kernel_source"][sel].astype(str), return_counts=True)
    sel &= r["kernel_source"].astype(str) == sources[int(np.argmax(counts))]
    return float(np.mean(r["latency"][sel])) * 1e-3


def test_the_expert_gemms_of_a_layer_share_its_measured_time() -> None:
    """Mixtral-8x7B bf16, TP 2, batch 8 decode: the two grouped GEMMs of a layer add up to
    the table's whole MoE layer at 8 tokens, 2/3 for gate/up (twice the weights) and 1/3."""
    g = build_graph("mixtral-8x7b", Workload("decode", 8, 2048, 2))
    shapes = moe_shapes(g)
    up, down = shapes["L0.experts_gate_up"], shapes["L0.experts_down"]
    assert (up.hidden, up.inter_rank) == (4096, 7168)
    assert up.share == pytest.approx(2 / 3) and down.share == pytest.approx(1 / 3)
    layer = _moe_row_s(8, 4096, 14336, "bfloat16", 2, 8, 2, 1)
    t_up = op_time(H100, g.nodes["L0.experts_gate_up"], g.graph, up)
    t_down = op_time(H100, g.nodes["L0.experts_down"], g.graph, down)
    assert t_up is not None and t_down is not None
    assert t_up.vanilla_s + t_down.vanilla_s == pytest.approx(layer, rel=1e-12)
    # without its shape (or the graph's moe attributes) an expert GEMM keeps the roofline
    assert op_time(H100, g.nodes["L0.experts_gate_up"], g.graph) is None
    hw = H100.with_timing("measured")
    m, r = op_costs(g, hw), op_costs(g, H100)
    assert m["L0.experts_down"].duration_s() == pytest.approx(
        t_down.vanilla_s + r["L0.experts_down"].overhead_s, rel=1e-9
    )
    hit, total = coverage(g, hw)
    assert hit == total  # every GEMM, expert GEMM and attention op of the step


def test_moe_floor_is_the_smallest_layer_of_the_same_kind() -> None:
    """DeepSeek-style fp8-block MoE (top-8 of 256, TP 8): the file also holds smaller layers
    with the same routing and layout; the floor is the smallest one's time at the same tokens."""
    assert SRC is not None
    t = moe_time(SRC, 16, MoEShape(7168, 256, 1.0), 8, 256, 8, 1, "fp8", "fp8", "uniform")
    assert t is not None
    assert t.vanilla_s == pytest.approx(_moe_row_s(16, 7168, 2048, "fp8_block", 8, 256, 8, 1))
    assert t.floor_s == pytest.approx(_moe_row_s(16, 3072, 1024, "fp8_block", 8, 256, 8, 1))
    assert 0 < t.floor_s < t.vanilla_s
    # interpolated between token rows, monotone
    ts = [
        moe_time(SRC, n, MoEShape(7168, 256, 1.0), 8, 256, 8, 1, "fp8", "fp8", "uniform")
        for n in (16, 24, 32)
    ]
    assert ts[0].vanilla_s <= ts[1].vanilla_s <= ts[2].vanilla_s


def test_moe_without_a_table_keeps_the_roofline() -> None:
    assert SRC is not None
    shape = MoEShape(4096, 7168, 1.0)
    # a routing the tables do not hold, a shape they lack, a dtype without a table
    assert moe_time(SRC, 8, shape, 2, 8, 2, 1, "bf16", "bf16", "zipf:1.2") is None
    assert (
        moe_time(SRC, 8, MoEShape(4000, 7168, 1.0), 2, 8, 2, 1, "bf16", "bf16", "uniform") is None
    )
    assert moe_time(SRC, 8, shape, 2, 8, 2, 1, "int8", "bf16", "uniform") is None
    g = build_graph("mixtral-8x7b", Workload("decode", 8, 2048, 2, routing="zipf:1.2"))
    hw = H100.with_timing("measured")
    assert op_costs(g, hw)["L0.experts_down"] == op_costs(g, H100)["L0.experts_down"]


def test_a_stack_reads_its_own_backends_tables() -> None:
    """h100-sxm's ``measured.stacks``: a vLLM step is timed by vLLM 0.24.0's tables, a
    gpt-fast step (no tables of its own) by the default TensorRT-LLM 1.3.0rc20 ones."""
    assert SRC is not None
    vllm, other = SRC.for_stack("vllm"), SRC.for_stack("gpt-fast")
    assert (vllm.backend, vllm.version) == ("vllm", "0.24.0")
    assert other == SRC.for_stack("") and other.backend == "trtllm"
    g_v = build_graph("llama3-8b", Workload("decode", 4, 2048, 1, stack="vllm"))
    g_t = build_graph("llama3-8b", Workload("decode", 4, 2048, 1))
    a = g_v.nodes["L0.gate_up"]
    t_v = op_time(H100, a, g_v.graph)
    t_t = op_time(H100, a, g_t.graph)
    assert t_v is not None and t_t is not None
    assert t_v == gemm_time(vllm, a["rows"], a["n"], a["k"], "bf16", "bf16")
    assert t_t == gemm_time(other, a["rows"], a["n"], a["k"], "bf16", "bf16")
    assert t_v.vanilla_s != t_t.vanilla_s
    hw = H100.with_timing("measured")
    assert solve_inputs(g_v, hw)["hardware"]["timing"]["tables"] == "h100_sxm/vllm/0.24.0"


def test_a_stacks_entry_naming_missing_tables_is_an_input_error(tmp_path: Path) -> None:
    text = (Path(__file__).parents[1] / "hardware" / "h100-sxm.yaml").read_text()
    bad = tmp_path / "h100-bad-stack.yaml"
    bad.write_text(text.replace("vllm: vllm/0.24.0", "vllm: vllm/0.0.1"))
    hw = load_hardware(str(bad), timing="measured")
    g = build_graph("llama3-8b", Workload("decode", 1, 2048, 1))
    with pytest.raises(InputError, match="vllm/0.0.1"):
        op_costs(g, hw)


def test_a_hardware_file_can_make_measured_its_default(tmp_path: Path, capsys) -> None:
    text = (Path(__file__).parents[1] / "hardware" / "h100-sxm.yaml").read_text()
    path = tmp_path / "h100-measured.yaml"
    path.write_text(text.replace("  stacks:  #", "  default: true\n  stacks:  #", 1))
    assert load_hardware(str(path)).timing == "measured"
    assert load_hardware(str(path), timing="roofline").timing == "roofline"
    assert load_hardware("h100-sxm").timing == "roofline"
    args = ["solve", "--model", "llama3-8b", "--hardware", str(path), "--tp", "1"]
    args += ["--plans", "vanilla", "--json"]
    assert main(args) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert out["inputs"]["hardware"]["timing"]["kind"] == "measured"
    assert main([*args, "--timing", "roofline"]) == 0
    assert "timing" not in json.loads(capsys.readouterr().out)["inputs"]["hardware"]
