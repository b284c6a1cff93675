"""Reproduce the PRESERVE paper's studies with our optimiser (``preserve-cp reproduce paper``).

Studies (each a figure and a CSV in the output folder):

(a) footprint: per-layer attention / MLP / KV bytes per device vs devices (their Fig. 2);
(b) speedup heatmaps: the six paper models on ascend-910b2, int8, tp 4 (phi3-medium tp 2:
    its 10 KV heads do not split over 4), batch {1..64} x length {2K..32K}, end-to-end;
(c) PRESERVE vs fused GEMM+AllReduce: Llama3-70B fp16, tp 8, same grid (their Fig. 5);
(d) L2 design-space exploration: L2 0-256 MB, throughput and throughput per device cost,
    with and without prefetching, both optima marked, and their sensitivity to the cost
    parameters.

"End-to-end" for a sequence length L: a prefill of P = round(2L/3) prompt tokens, then
D = L - P decode steps (prompt 2/3, output 1/3 as in the paper). Decode time grows linearly
with the context, so the D steps cost D x (one step at context P + D/2), exactly.
A cell is out of memory (OOM) when weights + the KV-cache at context L exceed HBM.
Every solve goes through the sweep engine and its SQLite store (``reproduce.sqlite``), so a
rerun with the store present does no solver work.

Every CSV row also carries what its two solves were computed from: the ``inputs`` object of
``solve --json`` of the cell's prefill and decode point, flattened into the columns
``prefill.inputs.<key>...`` and ``decode.inputs.<key>...`` (empty for a cell that was not
solved: OOM, tp); ``summary.json`` has the common part under ``inputs``.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import units
from .cost import CostModel, cost_model
from .errors import InfeasibleError, InputError
from .footprint import footprints
from .graph import build_graph
from .hardware import Hardware, load_hardware
from .machine import check_fits
from .models import ModelConfig, load_model
from .outputs import output_folder, write_output
from .sweep import Point, Store, run_sweep, text_progress
from .sweep.run import flatten
from .sweep.spec import make_point
from .viz._io import csv_text, write_figure
from .viz.footprint_plot import footprint_figure
from .viz.paper_plots import dse_figure, fused_figure, heatmap_figure
from .workload import Workload

PAPER_MODELS = ["llama3-8b", "llama3-70b", "qwen2-7b", "qwen2-72b", "phi3-small", "phi3-medium"]
BATCHES = [1, 2, 4, 8, 16, 32, 64]
LENGTHS = [2048, 4096, 8192, 16384, 32768]
DEVICE = "ascend-910b2"
L2_GRID_MB = [0, 8, 16, 24, 32, 48, 64, 80, 96, 104, 112, 128, 160, 192, 224, 256]
SOLVE = {"time_limit_s": 20.0, "budget_fraction": 1.0, "workers": 1}


def heatmap_tp(model: str) -> int:
    return 2 if model == "phi3-medium" else 4


def e2e_split(length: int) -> tuple[int, int, int]:
    """(prompt P, output D, decode context at the middle P + D/2).

    >>> e2e_split(16384)
    (10923, 5461, 13653)
    """
    p = round(2 * length / 3)
    d = length - p
    return p, d, p + d // 2


@dataclass(frozen=True)
class Cell:
    """One end-to-end cell: a prefill point and a decode point (or why there are none)."""

    batch: int
    length: int
    tp: int
    prefill: Point | None = None
    decode: Point | None = None
    skip: str = ""

    @property
    def points(self) -> list[Point]:
        return [p for p in (self.prefill, self.decode) if p is not None]


@functools.cache
def _device() -> Hardware:
    return load_hardware(DEVICE)


@functools.cache
def _model(name: str) -> ModelConfig:
    return load_model(name)


def make_cell(
    model: str,
    batch: int,
    length: int,
    tp: int,
    dtype: str,
    overrides: dict[str, float] | None = None,
) -> Cell:
    ov = dict(overrides or {})
    p, _d, mid = e2e_split(length)
    hw, cfg = _device(), _model(model)
    base = Cell(batch, length, tp)
    try:
        check_fits(build_graph(cfg, Workload("decode", batch, length, tp, dtype, dtype, dtype)), hw)
    except InfeasibleError:
        return replace(base, skip="OOM")
    except InputError:
        return replace(base, skip="tp")
    pre = make_point(
        model, DEVICE, Workload("prefill", batch, p, tp, dtype, dtype, dtype), ov, SOLVE, cfg, hw
    )
    dec = make_point(
        model, DEVICE, Workload("decode", batch, mid, tp, dtype, dtype, dtype), ov, SOLVE, cfg, hw
    )
    return replace(base, prefill=pre, decode=dec)


def e2e(cell: Cell, store: Store, field: str) -> float | None:
    """End-to-end seconds of ``cell`` for one plan (``makespan_s``, ``baseline_makespan_s``,
    ``greedy_makespan_s`` or ``fused_makespan_s``)."""
    if cell.skip or cell.prefill is None or cell.decode is None:
        return None
    rp, rd = store.get(cell.prefill.key), store.get(cell.decode.key)
    if rp is None or rd is None or field not in rp or field not in rd:
        return None
    _p, d, _m = e2e_split(cell.length)
    return float(rp[field]) + d * float(rd[field])


def cell_inputs(cell: Cell, store: Store) -> dict[str, Any]:
    """The flattened ``inputs`` of the cell's prefill and decode results (columns
    ``prefill.inputs.*`` and ``decode.inputs.*``; none for a cell without stored results)."""
    out: dict[str, Any] = {}
    for phase, point in (("prefill", cell.prefill), ("decode", cell.decode)):
        res = store.get(point.key) if point is not None else None
        if res and res.get("inputs"):
            out.update(flatten(res["inputs"], f"{phase}.inputs"))
    return out


def common_inputs() -> dict[str, Any]:
    """What every solve of the reproduction shares: the device (before any L2 override), the
    solve options and the versions (the ``inputs`` object's parts)."""
    from .describe import hardware_inputs, versions

    return {"hardware": hardware_inputs(_device()), "options": dict(SOLVE), "versions": versions()}


def reproduce_paper(
    out: str | Path,
    *,
    workers: int = 2,
    scheduler: str | None = None,
    progress: bool = True,
    models: Sequence[str] = PAPER_MODELS,
    batches: Sequence[int] = BATCHES,
    lengths: Sequence[int] = LENGTHS,
    l2_grid_mb: Sequence[float] = L2_GRID_MB,
) -> dict[str, Any]:
    """Run the four studies into ``out``; return the summary (also written as summary.json).

    ``out`` is created when missing; its parent folder must exist.
    """

    folder = output_folder(out)
    t0 = time.perf_counter()
    # (a) footprint: no solving
    fp = footprints("llama3-70b", [1, 2, 4, 8, 16, 32], dtype="int8", batch=8, context=16384)
    write_figure(folder / "footprint.png", footprint_figure("llama3-70b", fp))
    write_output(folder / "footprint.csv", csv_text([r.to_dict() for r in fp]))
    # cells of (b), (c), (d)
    heat = {
        m: [[make_cell(m, b, L, heatmap_tp(m), "int8") for L in lengths] for b in batches]
        for m in models
    }
    fused = [[make_cell("llama3-70b", b, L, 8, "fp16") for L in lengths] for b in batches]
    dse = [
        make_cell("llama3-70b", 4, 16384, 4, "int8", {"l2_capacity_mb": float(mb)})
        for mb in l2_grid_mb
    ]
    cells = [c for m in heat.values() for row in m for c in row]
    cells += [c for row in fused for c in row] + dse
    points = [p for c in cells for p in c.points]
    store = Store(folder / "reproduce.sqlite")
    try:
        counts = run_sweep(
            points,
            store,
            scheduler=scheduler,
            workers=workers,
            progress=text_progress() if progress else None,
        )
        summary: dict[str, Any] = {
            "points": counts,
            "device": DEVICE,
            "inputs": common_inputs(),
        }
        summary["heatmaps"] = _heatmaps(heat, store, batches, lengths, folder)
        summary["fused"] = _fused(fused, store, batches, lengths, folder)
        summary["dse"] = _dse(dse, store, l2_grid_mb, folder)
    finally:
        store.close()
    summary["wall_s"] = time.perf_counter() - t0
    write_output(folder / "summary.json", json.dumps(summary, indent=2))
    return summary


def _heatmaps(
    heat: dict[str, list[list[Cell]]],
    store: Store,
    batches: Sequence[int],
    lengths: Sequence[int],
    folder: Path,
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    grids: dict[str, list[list[float | None]]] = {}
    worst_vs_greedy = float("inf")
    for m, grid in heat.items():
        g_opt: list[list[float | None]] = []
        for row in grid:
            g_row: list[float | None] = []
            for c in row:
                v, o, gr = (
                    e2e(c, store, f)
                    for f in ("baseline_makespan_s", "makespan_s", "greedy_makespan_s")
                )
                s_opt = v / o if v and o else None
                s_gr = v / gr if v and gr else None
                if o and gr:
                    worst_vs_greedy = min(worst_vs_greedy, gr / o)
                g_row.append(s_opt)
                rows.append(
                    {
                        "model": m,
                        "tp": c.tp,
                        "batch": c.batch,
                        "length": c.length,
                        "status": c.skip or "ok",
                        "speedup_optimised": s_opt,
                        "speedup_greedy": s_gr,
                        "e2e_vanilla_s": v,
                        "e2e_optimised_s": o,
                        "e2e_greedy_s": gr,
                        **cell_inputs(c, store),
                    }
                )
            g_opt.append(g_row)
        grids[m] = g_opt
    write_output(folder / "heatmap_speedup.csv", csv_text(rows))
    write_figure(
        folder / "heatmap_speedup.png",
        heatmap_figure(grids, batches, lengths, {m: heatmap_tp(m) for m in heat}),
    )
    vals = [float(r["speedup_optimised"]) for r in rows if r["speedup_optimised"] is not None]
    gvals = [float(r["speedup_greedy"]) for r in rows if r["speedup_greedy"] is not None]
    return {
        "cells": len(rows),
        "solved_cells": len(vals),
        "oom_cells": sum(r["status"] == "OOM" for r in rows),
        "tp_cells": sum(r["status"] == "tp" for r in rows),
        "max_speedup": max(vals, default=None),
        "min_speedup": min(vals, default=None),
        "max_speedup_greedy": max(gvals, default=None),
        "min_speedup_greedy": min(gvals, default=None),
        "min_optimised_over_greedy": worst_vs_greedy if vals else None,
    }


def _fused(
    grid: list[list[Cell]],
    store: Store,
    batches: Sequence[int],
    lengths: Sequence[int],
    folder: Path,
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    ours: list[list[float | None]] = []
    theirs: list[list[float | None]] = []
    for row in grid:
        a, b = [], []
        for c in row:
            v, o, f = (
                e2e(c, store, k) for k in ("baseline_makespan_s", "makespan_s", "fused_makespan_s")
            )
            a.append(v / o if v and o else None)
            b.append(v / f if v and f else None)
            rows.append(
                {
                    "batch": c.batch,
                    "length": c.length,
                    "status": c.skip or "ok",
                    "speedup_preserve_cp": a[-1],
                    "speedup_fused": b[-1],
                    "preserve_over_fused": (f / o) if f and o else None,
                    **cell_inputs(c, store),
                }
            )
        ours.append(a)
        theirs.append(b)
    write_output(folder / "fused_vs_preserve.csv", csv_text(rows))
    write_figure(folder / "fused_vs_preserve.png", fused_figure(ours, theirs, batches, lengths))
    ratio = [float(r["preserve_over_fused"]) for r in rows if r["preserve_over_fused"]]
    return {
        "cells": len(rows),
        "preserve_better_cells": sum(x > 1 for x in ratio),
        "max_preserve_over_fused": max(ratio, default=None),
        "min_preserve_over_fused": min(ratio, default=None),
    }


def dse_optima(rows: list[dict[str, Any]], cm: CostModel, tp: int) -> dict[str, Any]:
    """Perf/cost optima with and without prefetching for one cost model."""

    def best(key: str) -> tuple[float, float]:
        scored = [
            (r[key] / (tp * cm.device_cost_usd(r["l2_mb"] * units.MB)), r["l2_mb"])
            for r in rows
            if r.get(key)
        ]
        return max(scored)

    with_pf, without = best("tokens_per_s_prefetch"), best("tokens_per_s_vanilla")
    return {
        "optimal_l2_mb_without_prefetch": without[1],
        "optimal_l2_mb_with_prefetch": with_pf[1],
        "perf_per_cost_gain": with_pf[0] / without[0],
    }


def _dse(cells: list[Cell], store: Store, grid_mb: Sequence[float], folder: Path) -> dict[str, Any]:
    cm = cost_model(_device())
    rows: list[dict[str, Any]] = []
    for mb, c in zip(grid_mb, cells, strict=True):
        v, o = e2e(c, store, "baseline_makespan_s"), e2e(c, store, "makespan_s")
        _p, d, _m = e2e_split(c.length)
        toks = c.batch * d
        cost = c.tp * cm.device_cost_usd(mb * units.MB)
        rows.append(
            {
                "l2_mb": mb,
                "status": c.skip or "ok",
                "device_cost_usd": cost / c.tp,
                "tokens_per_s_vanilla": toks / v if v else None,
                "tokens_per_s_prefetch": toks / o if o else None,
                "tokens_per_s_per_kusd_vanilla": 1e3 * toks / v / cost if v else None,
                "tokens_per_s_per_kusd_prefetch": 1e3 * toks / o / cost if o else None,
                **cell_inputs(c, store),
            }
        )
    write_output(folder / "dse_l2.csv", csv_text(rows))
    tp = cells[0].tp
    base = dse_optima(rows, cm, tp)
    write_figure(folder / "dse_l2.png", dse_figure(rows, base))
    sens = []
    for name, change in [
        ("fixed cost x0.5", {"fixed_cost_usd": cm.fixed_cost_usd * 0.5}),
        ("fixed cost x2", {"fixed_cost_usd": cm.fixed_cost_usd * 2}),
        ("no fixed cost (die only)", {"fixed_cost_usd": 0.0}),
        ("SRAM density x0.5", {"sram_mb_per_mm2": cm.sram_mb_per_mm2 * 0.5}),
        ("SRAM density x2", {"sram_mb_per_mm2": cm.sram_mb_per_mm2 * 2}),
        ("wafer price x2", {"wafer_price_usd": cm.wafer_price_usd * 2}),
    ]:
        sens.append({"variant": name, **dse_optima(rows, replace(cm, **change), tp)})
    write_output(folder / "dse_sensitivity.csv", csv_text(sens))
    return {
        **base,
        "workload": "llama3-70b int8, tp 4, batch 4, length 16K end-to-end",
        "sensitivity": sens,
    }
