"""Figures of ``preserve-cp reproduce paper``: speedup heatmaps, PRESERVE vs fused, L2 DSE."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _heat(
    ax: Any,
    grid: Sequence[Sequence[float | None]],
    batches: Sequence[int],
    lengths: Sequence[int],
    title: str,
    vmin: float,
    vmax: float,
    missing: str = "OOM",
) -> Any:
    a = np.array([[np.nan if v is None else v for v in row] for row in grid], dtype=float)
    im = ax.imshow(a, cmap="viridis", vmin=vmin, vmax=vmax, origin="lower", aspect="auto")
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            v = a[i, j]
            txt = missing if math.isnan(v) else f"{v:.2f}"
            ax.text(
                j,
                i,
                txt,
                ha="center",
                va="center",
                fontsize=7,
                color="black" if math.isnan(v) or v > (vmin + vmax) / 2 else "white",
            )
    ax.set_xticks(range(len(lengths)), [f"{L // 1024}K" for L in lengths])
    ax.set_yticks(range(len(batches)), [str(b) for b in batches])
    ax.set_xlabel("sequence length")
    ax.set_ylabel("batch")
    ax.set_title(title, fontsize=10)
    return im


def heatmap_figure(
    grids: Mapping[str, Sequence[Sequence[float | None]]],
    batches: Sequence[int],
    lengths: Sequence[int],
    tps: Mapping[str, int],
) -> Figure:
    """One speedup heatmap per model (optimised plan vs vanilla, end-to-end)."""
    n = len(grids)
    cols = 3 if n > 2 else n
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4.2 * cols, 3.6 * rows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    vals = [v for g in grids.values() for r in g for v in r if v is not None]
    vmin, vmax = (min(vals, default=1.0), max(vals, default=2.0))
    im = None
    for k, (m, g) in enumerate(grids.items()):
        ax = fig.add_subplot(rows, cols, k + 1)
        im = _heat(ax, g, batches, lengths, f"{m} (tp {tps[m]})", vmin, vmax)
    if im is not None:
        fig.colorbar(im, ax=fig.axes, shrink=0.8, label="end-to-end speedup over no prefetch")
    fig.suptitle("PRESERVE-CP speedup, ascend-910b2, int8 (prompt 2/3, output 1/3)")
    return fig


def fused_figure(
    ours: Sequence[Sequence[float | None]],
    theirs: Sequence[Sequence[float | None]],
    batches: Sequence[int],
    lengths: Sequence[int],
) -> Figure:
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    vals = [v for g in (ours, theirs) for r in g for v in r if v is not None]
    vmin, vmax = min(vals, default=1.0), max(vals, default=2.0)
    a = fig.add_subplot(1, 3, 1)
    _heat(a, ours, batches, lengths, "prefetch (optimised) vs vanilla", vmin, vmax)
    b = fig.add_subplot(1, 3, 2)
    im = _heat(b, theirs, batches, lengths, "fused GEMM+AllReduce vs vanilla", vmin, vmax)
    fig.colorbar(im, ax=[a, b], shrink=0.8)
    ratio = [
        [(o / f) if o and f else None for o, f in zip(ro, rf, strict=True)]
        for ro, rf in zip(ours, theirs, strict=True)
    ]
    rv = [v for r in ratio for v in r if v is not None]
    c = fig.add_subplot(1, 3, 3)
    im2 = _heat(
        c, ratio, batches, lengths, "prefetch / fused", min(rv, default=0.5), max(rv, default=1.5)
    )
    fig.colorbar(im2, ax=c, shrink=0.8)
    fig.suptitle("Llama3-70B fp16, tp 8, ascend-910b2: end-to-end speedups")
    return fig


def dse_figure(
    rows: Sequence[Mapping[str, Any]],
    optima: Mapping[str, Any],
    title: str = "L2 design space: Llama3-70B int8, tp 4, batch 4, 16K, ascend-910b2 class",
) -> Figure:
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    l2 = [r["l2_mb"] for r in rows]
    ax1 = fig.add_subplot(1, 2, 1)
    ax1.plot(l2, [r["tokens_per_s_prefetch"] for r in rows], "o-", label="with prefetching")
    ax1.plot(l2, [r["tokens_per_s_vanilla"] for r in rows], "s--", label="without")
    ax1.set_xlabel("L2 capacity (MB)")
    ax1.set_ylabel("output tokens / s (tp group)")
    ax1.set_title("throughput")
    ax1.legend(fontsize=8)
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.plot(
        l2, [r["tokens_per_s_per_kusd_prefetch"] for r in rows], "o-", label="with prefetching"
    )
    ax2.plot(l2, [r["tokens_per_s_per_kusd_vanilla"] for r in rows], "s--", label="without")
    for key, style in (
        ("optimal_l2_mb_with_prefetch", "C0"),
        ("optimal_l2_mb_without_prefetch", "C1"),
    ):
        ax2.axvline(optima[key], color=style, linestyle=":", linewidth=1.2)
        ax2.text(
            optima[key],
            ax2.get_ylim()[1],
            f" {optima[key]:g} MB",
            color=style,
            fontsize=8,
            va="top",
        )
    ax2.set_xlabel("L2 capacity (MB)")
    ax2.set_ylabel("tokens / s per k$ of devices")
    ax2.set_title(f"performance per cost (gain {optima['perf_per_cost_gain']:.3f}x)")
    ax2.legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    return fig


def validation_figure(rows: Sequence[Mapping[str, Any]], calibrated: bool = True) -> Figure:
    """Signed error (predicted - measured) / measured of every predicted point, one row each,
    grouped by source (bold headers, in order of first appearance), coloured by metric; filled
    markers are training points, open ones held out; the band is ±10 %.

    Skipped points are counted in their group's header, not drawn.
    """
    from ..describe import source_label

    groups: dict[str, list[Mapping[str, Any]]] = {}
    skipped: dict[str, int] = {}
    for r in rows:
        label = source_label(str(r.get("source") or ""))
        groups.setdefault(label, [])
        if r["predicted"] is None or r["error"] is None:
            skipped[label] = skipped.get(label, 0) + 1
        else:
            groups[label].append(r)
    n_rows = sum(len(g) + 1 for g in groups.values())
    fig = Figure(figsize=(9.0, 1.9 + 0.17 * n_rows), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    metrics = sorted({r["metric"] for g in groups.values() for r in g})
    colour = {m: f"C{i}" for i, m in enumerate(metrics)}
    ticks: list[float] = []
    labels: list[str] = []
    headers: list[int] = []
    y = 0
    errs: list[float] = []
    for label, grp in groups.items():
        more = f", {skipped[label]} skipped" if skipped.get(label) else ""
        headers.append(len(ticks))
        ticks.append(y)
        labels.append(f"{label} ({len(grp)} points{more})")
        if y:
            ax.axhline(y - 0.5, color="#999999", linewidth=0.6)
        y += 1
        for r in grp:
            e = 100.0 * float(r["error"])
            errs.append(e)
            m = r["metric"]
            ax.scatter(
                [e],
                [y],
                s=22,
                marker="o",
                facecolors=colour[m] if r["split"] == "train" else "white",
                edgecolors=colour[m],
                linewidths=1.0,
                zorder=3,
            )
            ticks.append(y)
            labels.append(_short(str(r["id"]), 56))
            y += 1
    lim = max([25.0, *(abs(e) * 1.1 for e in errs)])
    ax.axvspan(-10, 10, color="#E6F0E6", zorder=0)
    ax.axvline(0, color="black", linewidth=0.8, zorder=1)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(y - 0.5, -0.5)
    ax.set_yticks(ticks, labels, fontsize=6.5)
    for i in headers:
        tick = ax.get_yticklabels()[i]
        tick.set_fontweight("bold")
        tick.set_fontsize(7.5)
    ax.tick_params(axis="y", length=0)
    ax.grid(axis="x", color="#DDDDDD", linewidth=0.5)
    ax.set_xlabel("signed error (predicted - measured) / measured (%)")
    which = "calibrated model" if calibrated else "model with priors only"
    ax.set_title(f"{which} vs published measurements, by source", fontsize=11)
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker="o", linestyle="", color=colour[m], label=m) for m in metrics
    ] + [
        Line2D([], [], marker="o", linestyle="", color="black", label="train (filled)"),
        Line2D(
            [],
            [],
            marker="o",
            linestyle="",
            color="black",
            markerfacecolor="white",
            label="holdout (open)",
        ),
        Line2D([], [], color="#C9DEC9", linewidth=6, label="within ±10 %"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=7, frameon=False)
    return fig


def _short(text: str, n: int) -> str:
    """``text`` cut to ``n`` characters, an ellipsis marking a cut."""
    return text if len(text) <= n else text[: n - 1] + "…"
