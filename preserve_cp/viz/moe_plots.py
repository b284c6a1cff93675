"""Figures of ``preserve-cp reproduce moe``: the router-aware prefetch study."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def moe_study_figure(rows: Sequence[Mapping[str, Any]], key: str, label: str) -> Figure:
    """One panel per device: the optimised plan's expected step over certain-only prefetch
    (solid) and over no prefetch (dashed) against ``key``, one colour per model."""
    devices = list(dict.fromkeys(r["device"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig = Figure(figsize=(4.2 * max(1, len(devices)), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, max(1, len(devices)), i + 1) for i in range(max(1, len(devices)))]
    for ax, dev in zip(axes, devices, strict=False):
        for i, m in enumerate(models):
            mine = [
                r for r in rows if r["device"] == dev and r["model"] == m and r["status"] == "ok"
            ]
            if not mine:
                continue
            xs = [str(r[key]) for r in mine]
            ax.plot(xs, [r["speedup_vs_certain_only"] for r in mine], "o-", color=f"C{i}", label=m)
            ax.plot(xs, [r["speedup_vs_vanilla"] for r in mine], "s--", color=f"C{i}", alpha=0.5)
        ax.axhline(1.0, color="0.6", linewidth=0.8)
        ax.set_title(dev, fontsize=10)
        ax.set_xlabel(label)
        ax.set_ylabel("speedup (expected step)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(
        f"Router-aware prefetch by {label}\nspeedup over certain-only prefetch (solid) and "
        "over no prefetch (dashed)",
        fontsize=9,
    )
    return fig
