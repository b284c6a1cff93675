"""The resource panels under each Gantt block: L2 held by prefetches, HBM bandwidth in use.

Both are step functions of time. The L2 curve is drawn exactly (consecutive equal levels
merged); the HBM curve, when the window holds more than :data:`HBM_BINS` rate changes (an
80-layer plan has ~2,000), is the time-weighted mean over equal bins, finer than a pixel of
the default figure, so the SVG stays small and the area (bytes moved) stays exact.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import Polygon

from ..plan import Schedule
from ..units import MB, TB

PREFETCH_COLOUR = "#55A868"
L2_FILL_COLOUR = "#BFE0C6"
HBM_OPS_COLOUR = "#A9BCDD"
HBM_PREFETCH_COLOUR = "#8CC79A"
HBM_BINS = 800


def _steps(
    points: list[tuple[float, float]], window: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """(time, level from then on) points -> step edges (n + 1) and levels (n) in the window.

    The level before the first point is 0; consecutive equal levels are merged (lossless).
    """
    xs, ys = [window[0]], [0.0]
    for t, v in points:
        if t <= window[0]:
            ys[0] = v
        elif t < window[1] and v != ys[-1]:
            xs.append(t)
            ys.append(v)
    xs.append(window[1])
    return np.asarray(xs), np.asarray(ys)


def _binned_mean(xs: np.ndarray, ys: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """The time-weighted mean of a step function over ``bins`` equal bins (exact integrals)."""
    cum = np.concatenate([[0.0], np.cumsum(ys * np.diff(xs))])
    edges = np.linspace(xs[0], xs[-1], bins + 1)
    return edges, np.diff(np.interp(edges, xs, cum)) / np.diff(edges)


def _fill_steps(ax: Axes, xs: np.ndarray, ys: np.ndarray, colour: str) -> Polygon:
    """A filled step area down to 0 (2 vertices a step: half of what fill_between writes)."""
    verts = np.empty((2 * len(ys) + 2, 2))
    verts[0:-2:2, 0], verts[1:-2:2, 0] = xs[:-1], xs[1:]
    verts[0:-2:2, 1] = verts[1:-2:2, 1] = ys
    verts[-2], verts[-1] = (xs[-1], 0.0), (xs[0], 0.0)
    poly = Polygon(verts, closed=True, facecolor=colour, edgecolor="none")
    ax.add_patch(poly)
    return poly


def draw_l2(ax: Axes, name: str, s: Schedule, window: tuple[float, float], scale: float) -> None:
    xs, ys = _steps(s.l2_profile(), window)
    x, y = xs * scale, ys / MB
    cap = s.l2_capacity_bytes / MB
    _fill_steps(ax, x, y, L2_FILL_COLOUR)
    (line,) = ax.step(x, np.append(y, y[-1]), where="post", color=PREFETCH_COLOUR, linewidth=0.7)
    line.set_gid(f"l2:{name}")
    ax.axhline(cap, color="black", linestyle="--", linewidth=0.8)
    ax.text(
        1.0,
        cap,
        f" usable L2\n {cap:.0f} MB",
        transform=ax.get_yaxis_transform(),
        fontsize=7,
        va="center",
    )
    ax.set_ylim(0, cap * 1.15)
    ax.set_ylabel("L2 held\n(MB)", fontsize=8)
    ax.tick_params(labelsize=7)


def draw_hbm(ax: Axes, name: str, s: Schedule, window: tuple[float, float], scale: float) -> None:
    """HBM use, stacked: ops (blue) under prefetch (green); binned when finer than a pixel."""
    main: list[tuple[float, float]] = []
    total: list[tuple[float, float]] = []
    end = 0.0
    for t0, t1, pf, mn in sorted(s.rate_segments):
        if t0 > end:  # a gap: nothing runs
            main.append((end, 0.0))
            total.append((end, 0.0))
        pf = pf if math.isfinite(pf) else 0.0
        mn = mn if math.isfinite(mn) else 0.0
        main.append((t0, mn))
        total.append((t0, mn + pf))
        end = max(end, t1)
    main.append((end, 0.0))
    total.append((end, 0.0))
    curves = []
    for points in (total, main):
        xs, ys = _steps(points, window)
        if len(ys) > HBM_BINS:
            xs, ys = _binned_mean(xs, ys, HBM_BINS)
        curves.append((xs * scale, ys / TB))
    _fill_steps(ax, *curves[0], HBM_PREFETCH_COLOUR).set_gid(f"hbm:{name}")
    _fill_steps(ax, *curves[1], HBM_OPS_COLOUR)  # opaque, over the total: the stack
    bw = s.hbm_bytes_per_s / TB
    top = float(curves[0][1].max(initial=0.0))
    if math.isfinite(bw):
        ax.axhline(bw, color="black", linestyle=":", linewidth=0.9)
        ax.text(
            1.0,
            bw,
            f" HBM\n {bw:.2f} TB/s",
            transform=ax.get_yaxis_transform(),
            fontsize=7,
            va="center",
        )
        top = max(top, bw)
    ax.set_ylim(0, top * 1.2 if top > 0 else 1.0)
    ax.set_ylabel("HBM in use\n(TB/s)", fontsize=8)
    ax.tick_params(labelsize=7)
