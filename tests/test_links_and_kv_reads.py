"""Two pieces of physics by hand: a full mesh gives a small group only the links to its
members (``costs.group_link_bytes_per_s``), and a decode attention kernel that streams a
grouped-query KV cache once per query head (``Workload.kv_reads``) pays the re-reads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from preserve_cp.costs import collective_parts, op_costs, p2p_parts
from preserve_cp.errors import InputError
from preserve_cp.graph import build_graph, validate_graph
from preserve_cp.hardware import load_hardware
from preserve_cp.validate import run_options
from preserve_cp.workload import Workload

MB = 1 << 20


@pytest.mark.parametrize("name", ["gaudi3", "ascend-910b2", "mi300x"])
def test_a_full_mesh_group_uses_only_the_links_to_its_members(name: str):
    hw = load_hardware(name, calibrated=False)
    d = hw.devices_per_node
    per_peer = hw.link_bandwidth_bytes_per_s * hw.link_efficiency / (d - 1)
    s = 8 * MB
    for n in (2, 4, d):
        _, transfer = collective_parts("allreduce", s, n, hw)
        # 2 (n-1)/n S over the n-1 peer links of the group
        assert transfer == pytest.approx(2 * (n - 1) / n * s / ((n - 1) * per_peer), rel=1e-12)
    # two ranks exchange over one link: 7x slower than the whole node's links on 8 devices
    two = collective_parts("allreduce", s, 2, hw)[1]
    assert two / (2 * 1 / 2 * s / (hw.link_bandwidth_bytes_per_s * hw.link_efficiency)) == (
        pytest.approx(d - 1)
    )
    # a pipeline send inside the node goes over one peer link
    assert p2p_parts(s, False, hw)[1] == pytest.approx(s / per_peer)


def test_a_switch_gives_any_group_the_whole_link_bandwidth():
    hw = load_hardware("h100-sxm", calibrated=False)
    b = hw.link_bandwidth_bytes_per_s * hw.link_efficiency
    for n in (2, 4, 8):
        assert collective_parts("allreduce", 4 * MB, n, hw)[1] == pytest.approx(
            2 * (n - 1) / n * 4 * MB / b
        )


def test_custom_allreduce_on_a_full_mesh_also_uses_the_group_links():
    hw = load_hardware("mi300x", calibrated=False)
    per_peer = hw.link_bandwidth_bytes_per_s * hw.link_efficiency / (hw.devices_per_node - 1)
    s = 64 * 1024  # one-shot size: each rank reads every peer's S
    _, t2 = collective_parts("allreduce", s, 2, hw, impl="custom")
    _, t8 = collective_parts("allreduce", s, 8, hw, impl="custom")
    assert t2 == pytest.approx(s / per_peer)
    assert t8 == pytest.approx(7 * s / (7 * per_peer))


def _attention(model: str, **kw):
    wl = Workload(batch=64, context=1088, tp=4, dtype="fp8", **kw)
    g = build_graph(model, wl)
    return g.nodes["L0.attention"], op_costs(g, load_hardware("h100-sxm"))["L0.attention"]


def test_per_query_head_reads_the_kv_cache_once_per_query_head():
    a0, c0 = _attention("llama2-70b")
    a1, c1 = _attention("llama2-70b", kv_reads="per_query_head")
    kv = a0["reads"]["L0.kv_cache"]
    group = a0["heads"] / a0["kv_heads"]
    assert group == 8
    assert "reread_bytes" not in a0
    assert a1["reread_bytes"] == 7 * kv
    assert c1.hbm_bytes - c0.hbm_bytes == pytest.approx(7 * kv)
    # the re-reads are not a prefetchable tensor: prefetching the cache saves one pass only
    assert c1.prefetchable_bytes == c0.prefetchable_bytes == kv
    assert c1.duration_s(0.0) - c0.duration_s(0.0) == pytest.approx(7 * kv / c0.hbm_bw, rel=1e-9)


def test_per_query_head_changes_nothing_without_grouped_heads_or_in_prefill():
    a0, c0 = _attention("llama2-7b")  # multi-head: one query head per KV head
    a1, c1 = _attention("llama2-7b", kv_reads="per_query_head")
    assert "reread_bytes" not in a1 and c1 == c0
    pre = Workload(phase="prefill", batch=1, context=512, tp=4, kv_reads="per_query_head")
    g = build_graph("llama2-70b", pre)
    assert not any("reread_bytes" in a for _, a in g.nodes(data=True))


def test_kv_reads_is_left_out_of_the_workload_dict_at_its_default():
    assert "kv_reads" not in Workload().to_dict()
    assert Workload(kv_reads="per_query_head").to_dict()["kv_reads"] == "per_query_head"
    with pytest.raises(InputError, match="kv_reads"):
        Workload(kv_reads="per_token")


def test_validation_points_pass_kv_reads_into_the_workload():
    opts = run_options({"stack": "trtllm", "kv_reads": "per_query_head"})
    assert opts["kv_reads"] == "per_query_head"
    assert "kv_reads" not in run_options({"stack": "vllm"})


def test_a_user_graph_with_a_negative_reread_is_refused():
    g = build_graph("llama2-70b", Workload(kv_reads="per_query_head"))
    g.nodes["L0.attention"]["reread_bytes"] = -1
    with pytest.raises(InputError, match="reread_bytes"):
        validate_graph(g)


def test_cli_refuses_an_unknown_kv_reads_in_one_line():
    r = subprocess.run(
        [sys.executable, "-m", "preserve_cp.cli", "solve", "--model", "llama2-70b"]
        + ["--hardware", "h100-sxm", "--kv-reads", "per_token"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert "--kv-reads" in r.stderr and "Traceback" not in r.stderr
