"""Every shipped model x phase x tp in {4, 8} on two devices: the optimised plan is verified
and never slower than greedy or vanilla; tp that cannot split the heads, or a step that does
not fit in HBM, is the clear error instead (and the test says which)."""

from __future__ import annotations

import pytest

from preserve_cp import (
    InfeasibleError,
    InputError,
    Workload,
    build_graph,
    list_models,
    load_hardware,
    load_model,
    solve,
)
from preserve_cp.simulate import verify
from preserve_cp.solve import machine_for

DEVICES = {"ascend-910b2": "int8", "h100-sxm": "fp8"}


def _tp_splits(model, tp: int) -> bool:
    # KV heads need no rule (ModelConfig.kv_heads_per_rank); the dense width only if used
    dense = not all(model.is_moe_layer(i) for i in range(model.num_layers))
    return (
        model.num_heads % tp == 0
        and (not dense or model.intermediate_size % tp == 0)
        and (model.moe_intermediate_size or tp) % tp == 0
    )


def _run(name: str, phase: str, tp: int, device: str, batch: int, context: int, limit: float):
    model = load_model(name)
    dt = DEVICES[device]
    wl = Workload(phase, batch, context, tp, dt, dt, dt)
    if not _tp_splits(model, tp):
        with pytest.raises(InputError, match=f"tp {tp}"):
            build_graph(model, wl)
        return
    g = build_graph(model, wl)
    hw = load_hardware(device)
    need = g.graph["weights_bytes_per_device"] + g.graph["kv_cache_bytes_per_device"]
    if need > hw.hbm_capacity_bytes:
        with pytest.raises(InfeasibleError, match="over by"):
            solve(g, hw, time_limit_s=limit)
        return
    r = solve(g, hw, time_limit_s=limit)
    assert verify(g, r.schedule, machine_for(hw)) == []  # re-check, do not trust the flag
    assert r.makespan_s <= r.greedy_makespan_s * (1 + 1e-12)
    assert r.makespan_s <= r.baseline_makespan_s * (1 + 1e-12)
    assert r.lower_bound_s <= r.makespan_s
    assert len(r.schedule.events) == g.number_of_nodes()


@pytest.mark.parametrize("device", sorted(DEVICES))
@pytest.mark.parametrize("tp", [4, 8])
@pytest.mark.parametrize("phase", ["decode", "prefill"])
@pytest.mark.parametrize("name", list_models())
def test_optimised_never_worse(name, phase, tp, device):
    _run(name, phase, tp, device, batch=1, context=1024, limit=0.5)


@pytest.mark.slow
@pytest.mark.parametrize("device", sorted(DEVICES))
@pytest.mark.parametrize("tp", [4, 8])
@pytest.mark.parametrize("phase", ["decode", "prefill"])
@pytest.mark.parametrize("name", list_models())
def test_optimised_never_worse_paper_workload(name, phase, tp, device):
    # the paper's main table: batch 4, length 16K (decode at 16K context; prefill of 8K)
    _run(name, phase, tp, device, batch=4, context=16384 if phase == "decode" else 8192, limit=5.0)
