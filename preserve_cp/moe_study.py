"""The router-aware prefetch study (``preserve-cp reproduce moe --out DIR``).

For each MoE model on each device (decode, tp 8, context 4096; fp8, int8 on devices without
fp8), :func:`preserve_cp.router.solve_router` is run over

(a) batch (1-128; uniform routing, predictor accuracy 0.9): where speculation pays and where
    it stops paying, at the batch from which nearly every expert is read anyway;
(b) predictor accuracy (0.5-1.0; batch 4, uniform);
(c) routing skew (uniform, zipf:0.5, zipf:1.2, zipf:2; batch 4, accuracy 0.9);
(d) L2 size (one MoE and one dense model on one device): tokens/s per device cost with and
    without prefetching, and how the optimum moves for MoE compared with dense.

Each study writes a CSV and a figure into the output folder, and ``summary.json`` collects
the headline numbers. Points that do not fit in HBM are rows with status ``OOM``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import units
from .cost import cost_model
from .errors import InfeasibleError
from .graph import build_graph
from .hardware import Hardware, load_hardware
from .machine import check_fits
from .outputs import output_folder, write_output
from .reproduce import dse_optima
from .router import solve_router
from .solve import solve
from .sweep.spec import apply_overrides
from .viz._io import csv_text, write_figure
from .viz.paper_plots import dse_figure
from .workload import Workload

MODELS = ("deepseek-v3", "qwen3-235b-a22b", "mixtral-8x7b", "gpt-oss-120b")
DEVICES = {"h200-sxm": "fp8", "b200": "fp8", "ascend-910b2": "int8"}
BATCHES = (1, 4, 16, 64, 128)
ACCURACIES = (0.5, 0.7, 0.9, 1.0)
SKEWS = ("uniform", "zipf:0.5", "zipf:1.2", "zipf:2")
L2_GRID_MB = (0, 16, 32, 50, 64, 96, 128, 192, 256)
DSE_MODELS = {"moe": "mixtral-8x7b", "dense": "llama3-70b"}
DSE_DEVICE, DSE_BATCH = "h100-sxm", 4  # a device file with a cost section
CONTEXT, TP, SCENARIOS, ACCURACY = 4096, 8, 16, 0.9


def _row(
    model: str,
    device: str,
    batch: int,
    routing: str,
    accuracy: float,
    scenarios: int,
    hw: Hardware | None = None,
) -> dict[str, Any]:
    hardware = hw or load_hardware(device)
    dt = DEVICES.get(device, "fp8")
    g = build_graph(model, Workload("decode", batch, CONTEXT, TP, dt, routing=routing))
    head = {
        "model": model,
        "device": device,
        "batch": batch,
        "routing": routing,
        "predictor_accuracy": accuracy,
        "dtype": dt,
    }
    try:
        check_fits(g, hardware)
    except InfeasibleError:
        return {**head, "status": "OOM"}
    r = solve_router(g, hardware, predictor_accuracy=accuracy, scenarios=scenarios)
    d = r.to_dict()
    p = d["plans"]
    moe = g.graph["moe"]
    sel = [sum(s.layers[k].selected for k in s.layers) / max(1, len(s.layers)) for s in r.draws]
    return {
        **head,
        "status": "ok",
        "scenarios": d["scenarios"],
        "experts_read_share": (sum(sel) / len(sel)) / (moe["experts"] / moe.get("ep", 1)),
        "vanilla_s": p["vanilla"]["expected_makespan_s"],
        "certain_only_s": p["no expert prefetch"]["expected_makespan_s"],
        "after_router_s": p["after router"]["expected_makespan_s"],
        "predicted_greedy_s": p["predicted greedy"]["expected_makespan_s"],
        "optimised_s": d["expected_makespan_s"],
        "p95_s": d["p95_makespan_s"],
        "bound_s": d["clairvoyant_bound_s"],
        "speedup_vs_vanilla": p["vanilla"]["expected_makespan_s"] / d["expected_makespan_s"],
        "speedup_vs_certain_only": p["no expert prefetch"]["expected_makespan_s"]
        / d["expected_makespan_s"],
        "expert_hit_rate": d["expert_hit_rate"],
        "wasted_prefetch_mb": d["wasted_prefetch_bytes"] / units.MB,
        "speculative_share": p["optimised"]["policy"]["speculative_share"],
        "solve_time_s": r.solve_time_s,
    }


def reproduce_moe(
    out: str | Path,
    *,
    models: Sequence[str] = MODELS,
    devices: Sequence[str] = tuple(DEVICES),
    batches: Sequence[int] = BATCHES,
    accuracies: Sequence[float] = ACCURACIES,
    skews: Sequence[str] = SKEWS,
    l2_grid_mb: Sequence[float] = L2_GRID_MB,
    scenarios: int = SCENARIOS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the four studies into ``out``; return the summary (also written as summary.json)."""
    folder = output_folder(out)
    t0 = time.perf_counter()
    say = progress or (lambda _m: None)
    summary: dict[str, Any] = {"context": CONTEXT, "tp": TP, "scenarios_at_least": scenarios}

    def sweep(name: str, keys: list[tuple[str, str, int, str, float]]) -> list[dict[str, Any]]:
        rows = []
        for i, (m, dev, b, routing, acc) in enumerate(keys):
            say(f"{name} {i + 1}/{len(keys)}: {m} {dev} batch {b} {routing} A {acc}")
            rows.append(_row(m, dev, b, routing, acc, scenarios))
        write_output(folder / f"moe_{name}.csv", csv_text(rows))
        return rows

    by_batch = sweep(
        "batch", [(m, d, b, "uniform", ACCURACY) for m in models for d in devices for b in batches]
    )
    by_acc = sweep(
        "accuracy", [(m, d, 4, "uniform", a) for m in models for d in devices for a in accuracies]
    )
    by_skew = sweep(
        "skew", [(m, d, 4, s, ACCURACY) for m in models for d in devices for s in skews]
    )
    from .viz.moe_plots import moe_study_figure

    write_figure(folder / "moe_batch.png", moe_study_figure(by_batch, "batch", "batch"))
    write_figure(
        folder / "moe_accuracy.png",
        moe_study_figure(by_acc, "predictor_accuracy", "predictor accuracy"),
    )
    write_figure(folder / "moe_skew.png", moe_study_figure(by_skew, "routing", "routing"))
    summary["batch"] = _stops_paying(by_batch)
    summary["accuracy"] = _extremes(by_acc, "predictor_accuracy")
    summary["skew"] = _extremes(by_skew, "routing")
    if l2_grid_mb:
        summary["l2"] = _l2_study(folder, l2_grid_mb, scenarios, say)
    summary["wall_s"] = time.perf_counter() - t0
    write_output(folder / "summary.json", json.dumps(summary, indent=2))
    return summary


def _stops_paying(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model and device: the gain over certain-only prefetch by batch, and the first
    batch at which 95 % of the rank's experts are read in a step anyway."""
    out = []
    for key in sorted({(r["model"], r["device"]) for r in rows}):
        mine = [r for r in rows if (r["model"], r["device"]) == key and r["status"] == "ok"]
        if not mine:
            continue
        full = [r["batch"] for r in mine if r["experts_read_share"] >= 0.95]
        out.append(
            {
                "model": key[0],
                "device": key[1],
                "speedup_vs_certain_only_by_batch": {
                    str(r["batch"]): round(r["speedup_vs_certain_only"], 4) for r in mine
                },
                "all_experts_read_from_batch": min(full) if full else None,
            }
        )
    return out


def _extremes(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    out = []
    for mk in sorted({(r["model"], r["device"]) for r in rows}):
        mine = [r for r in rows if (r["model"], r["device"]) == mk and r["status"] == "ok"]
        if mine:
            out.append(
                {
                    "model": mk[0],
                    "device": mk[1],
                    "expected_step_ms_by_" + key: {
                        str(r[key]): round(r["optimised_s"] * 1e3, 4) for r in mine
                    },
                    "speedup_vs_certain_only_by_" + key: {
                        str(r[key]): round(r["speedup_vs_certain_only"], 4) for r in mine
                    },
                }
            )
    return out


def _l2_study(
    folder: Path, grid_mb: Sequence[float], scenarios: int, say: Callable[[str], None]
) -> dict[str, Any]:
    """Tokens/s per device cost over L2 size: the MoE model (router-aware, expected step)
    and the dense model (certain tensors), each with and without prefetching."""
    dev = DSE_DEVICE
    base = load_hardware(dev)
    cm = cost_model(base)
    batch = DSE_BATCH
    dt = DEVICES.get(dev, "fp8")
    out: dict[str, Any] = {"device": dev, "batch": batch}
    for kind in ("moe", "dense"):
        model = DSE_MODELS[kind]
        rows = []
        for i, mb in enumerate(grid_mb):
            say(f"l2 {kind} {i + 1}/{len(grid_mb)}: {model} {mb} MB")
            hw = apply_overrides(base, {"l2_capacity_mb": float(mb)})
            if kind == "moe":
                r = _row(model, dev, batch, "uniform", ACCURACY, scenarios, hw)
                van, opt = r.get("vanilla_s"), r.get("optimised_s")
            else:
                g = build_graph(model, Workload("decode", batch, CONTEXT, TP, dt))
                res = solve(g, hw)
                van, opt = res.baseline_makespan_s, res.makespan_s
            cost = cm.device_cost_usd(mb * units.MB)
            group = TP * cost
            rows.append(
                {
                    "model": model,
                    "l2_mb": mb,
                    "device_cost_usd": cost,
                    "tokens_per_s_vanilla": batch / van if van else None,
                    "tokens_per_s_prefetch": batch / opt if opt else None,
                    "tokens_per_s_per_kusd_vanilla": 1e3 * batch / van / group if van else None,
                    "tokens_per_s_per_kusd_prefetch": 1e3 * batch / opt / group if opt else None,
                }
            )
        write_output(folder / f"moe_l2_{kind}.csv", csv_text(rows))
        optima = dse_optima(rows, cm, TP)
        title = (
            f"L2 design space: {model} decode {dt}, tp {TP}, batch {batch}, {CONTEXT} context, "
            f"{dev} class" + (" (expected step over routings)" if kind == "moe" else "")
        )
        write_figure(folder / f"moe_l2_{kind}.png", dse_figure(rows, optima, title))
        out[kind] = {"model": model, **optima}
    return out
