"""Footprint plot (the paper's Fig. 2): per-layer attention and MLP bytes per device vs the
number of devices, with the L2 sizes of the shipped devices as horizontal lines."""

from __future__ import annotations

import math
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..footprint import Footprint
from ..hardware import list_hardware, load_hardware
from ..units import MB


def footprint_figure(
    model: str,
    rows: Sequence[Footprint],
) -> Figure:
    fig = Figure(figsize=(10, 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    d = [r.devices for r in rows]
    ax.plot(d, [r.attention_weights_bytes / MB for r in rows], "o-", label="attention weights")
    ax.plot(d, [r.mlp_weights_bytes / MB for r in rows], "s-", label="MLP weights")
    ax.plot(d, [r.kv_cache_bytes / MB for r in rows], "^--", label="KV-cache (one layer)")
    seen: dict[float, list[str]] = {}
    for n in list_hardware():
        seen.setdefault(round(load_hardware(n).l2_capacity_bytes / MB, 1), []).append(n)
    for mb in seen:
        ax.axhline(mb, color="grey", linewidth=0.7, linestyle=":")
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()  # autoscaled over the curves and the L2 lines, then fixed
    ax.set_ylim(lo, hi)
    # labels right of the plot, at their line's height, pushed up to at least one text line
    # (~11 pt of the axes' ~0.78 x figure height) above the one below: none overlap
    gap = 11.0 / (0.78 * fig.get_figheight() * 72.0)
    last = -1.0
    for mb, who in sorted(seen.items()):
        frac = (math.log(mb) - math.log(lo)) / (math.log(hi) - math.log(lo))
        y = max(frac, last + gap)
        last = y
        ax.annotate(
            f"{', '.join(who)} L2 {mb:g} MB",
            xy=(1.0, mb),
            xycoords=("axes fraction", "data"),
            xytext=(1.01, y),
            textcoords="axes fraction",
            fontsize=7,
            va="center",
            ha="left",
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(d, [str(x) for x in d])
    ax.set_xlabel("devices (tensor-parallel degree)")
    ax.set_ylabel("bytes per device, one layer (MB)")
    ax.set_title(f"{model}: per-layer footprint per device")
    ax.legend(fontsize=8, loc="lower left")
    return fig
