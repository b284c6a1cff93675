"""The whole step at a glance: where each layer's time goes, and how much prefetching covers.

A Gantt of a whole 80-layer step (~900 ops a plan) is only a density pattern. The overview
instead gives each layer one stacked bar of its *window* (from its first op's start to the next
layer's), split by what the compute lane did meanwhile: the kind of the compute op running; when
none runs, the collective on another lane (``allreduce``...); when neither, ``waiting for
prefetch`` (a chunk is in flight) or ``idle``. The windows tile the step, so the bars add up to
the makespan exactly, and a collective hidden under a kernel costs nothing in its bar. The
embedding (``emb``) and the LM head (``head``) are one bar each, apart from the layers.

Under each plan's bars a heat strip shows, per layer, the share of the layer's prefetchable
bytes its ops read from L2 (*coverage*; needs the graph), or without a graph the MB read from
L2. :func:`step_figure` puts the overview above the zoomed Gantt of the first layers: the
default picture of a whole step (``solve --gantt FILE`` without ``--layers``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure, FigureBase
from matplotlib.patches import Patch

from ..graph import PREFETCH_STREAM
from ..plan import Schedule
from ..units import MB

#: the compute lane's stream; every other non-prefetch stream counts as communication
COMPUTE = "compute"
WAIT = "waiting for prefetch"
IDLE = "idle"
WAIT_COLOUR = "#55A868"
IDLE_COLOUR = "#D9D9D9"
EMB, HEAD = "emb", "head"
BAR_IN = 1.05  # height of one plan's bar panel
STRIP_IN = 0.2  # height of its coverage strip
ZOOM_LAYERS = 3  # the zoomed Gantt shows layers 0..ZOOM_LAYERS-1


@dataclass
class Slot:
    """One bar: a layer (``label`` its index) or ``emb`` / ``head``."""

    label: str
    start_s: float
    end_s: float
    seconds: dict[str, float] = field(default_factory=dict)  # category -> time
    l2_bytes: float = 0.0  # bytes the slot's ops read from L2
    prefetchable_bytes: float | None = None  # bytes they could have (from the graph)

    @property
    def coverage(self) -> float | None:
        if self.prefetchable_bytes is None or self.prefetchable_bytes <= 0:
            return None
        return min(1.0, self.l2_bytes / self.prefetchable_bytes)


def layer_count(schedules: Mapping[str, Schedule]) -> int:
    """Number of layers the schedules' ops carry (0: a plain graph without layers)."""
    top = max((e.layer for s in schedules.values() for e in s.events), default=-1)
    return top + 1


def layer_slots(s: Schedule, graph: Any = None) -> list[Slot]:
    """The bars of one schedule: ``emb``, layers 0..N-1, ``head`` (those that have ops).

    Each slot's ``seconds`` add up to its window, and the windows tile [0, makespan].

    >>> from preserve_cp.plan import Event, Schedule
    >>> ev = (Event("e", "compute", 0.0, 1.0, "embedding", -1),
    ...       Event("a", "compute", 1.0, 2.0, "gemm", 0),
    ...       Event("r", "comm", 2.0, 4.0, "allreduce", 0),
    ...       Event("b", "compute", 4.5, 5.0, "gemm", 1),
    ...       Event("h", "compute", 5.0, 6.0, "gemm", -1))
    >>> [(x.label, x.seconds) for x in layer_slots(Schedule(ev, (), (), (), 6.0, 0.0, 1.0))]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('emb', {'embedding': 1.0}), ('0', {'gemm': 1.0, 'allreduce': 2.0, 'idle': 0.5}),
     ('1', {'gemm': 0.5}), ('head', {'gemm': 1.0})]
    """
    first: dict[int, float] = {}
    for e in s.events:
        if e.layer >= 0 and (e.layer not in first or e.start_s < first[e.layer]):
            first[e.layer] = e.start_s
    if not first:
        return []
    layers = sorted(first)
    end = max(s.makespan_s, max((e.end_s for e in s.events), default=0.0))
    last_start = first[layers[-1]]
    tail = [e.start_s for e in s.events if e.layer < 0 and e.start_s >= last_start]
    head_start = min(tail) if tail else end
    edges: list[tuple[str, float, float]] = []
    if first[layers[0]] > 0:
        edges.append((EMB, 0.0, first[layers[0]]))
    for i, layer in enumerate(layers):
        stop = first[layers[i + 1]] if i + 1 < len(layers) else head_start
        edges.append((str(layer), first[layer], stop))
    if head_start < end:
        edges.append((HEAD, head_start, end))
    slots = [Slot(label, a, b) for label, a, b in edges]
    _fill_categories(s, slots)
    by_layer = {x.label: x for x in slots}
    pre = {} if graph is None else _prefetchable_by_layer(graph)
    for e in s.events:
        key = str(e.layer) if e.layer >= 0 else (EMB if e.start_s < first[layers[0]] else HEAD)
        if key in by_layer:
            by_layer[key].l2_bytes += e.l2_bytes
    if graph is not None:
        for x in slots:
            if x.label not in (EMB, HEAD):
                x.prefetchable_bytes = pre.get(int(x.label), 0.0)
    return slots


def _prefetchable_by_layer(graph: Any) -> dict[int, float]:
    out: dict[int, float] = {}
    for _, a in graph.nodes(data=True):
        layer = a.get("layer", -1)
        if layer is None or layer < 0:
            continue
        reads = a.get("reads") or {}
        total = sum(float(reads.get(t, 0.0)) for t in a.get("prefetchable") or [])
        out[int(layer)] = out.get(int(layer), 0.0) + total
    return out


def _fill_categories(s: Schedule, slots: list[Slot]) -> None:
    """What the compute lane did, time by category, per slot (a sweep over event edges)."""
    compute = sorted(
        (e.start_s, e.end_s, e.kind or "op") for e in s.events if e.resource == COMPUTE
    )
    comm = sorted(
        (e.start_s, e.end_s, e.kind or "op")
        for e in s.events
        if e.resource not in (COMPUTE, PREFETCH_STREAM)
    )
    chunks = sorted((c.start_s, c.end_s, WAIT) for c in s.chunks)
    cuts = sorted(
        {x.start_s for x in slots}
        | {x.end_s for x in slots}
        | {t for a, b, _ in compute + comm + chunks for t in (a, b)}
    )
    lanes = [compute, comm, chunks]
    idx = [0, 0, 0]
    active: list[list[tuple[float, float, str]]] = [[], [], []]
    j = 0
    for t0, t1 in zip(cuts, cuts[1:], strict=False):
        if t1 <= t0:
            continue
        while j < len(slots) and slots[j].end_s <= t0:
            j += 1
        if j >= len(slots):
            break
        if t0 < slots[j].start_s:
            continue
        what = IDLE
        for k, lane in enumerate(lanes):
            while idx[k] < len(lane) and lane[idx[k]][0] <= t0:
                active[k].append(lane[idx[k]])
                idx[k] += 1
            active[k] = [a for a in active[k] if a[1] > t0]
            if what == IDLE and active[k]:
                what = active[k][0][2]
        d = slots[j].seconds
        d[what] = d.get(what, 0.0) + (t1 - t0)


def _x_positions(slots: Sequence[Slot]) -> list[float]:
    """Layer L at x = L; ``emb`` two slots left of the first layer, ``head`` two right."""
    layers = [int(x.label) for x in slots if x.label not in (EMB, HEAD)]
    lo, hi = (min(layers), max(layers)) if layers else (0, 0)
    return [
        lo - 2.0 if x.label == EMB else hi + 2.0 if x.label == HEAD else float(x.label)
        for x in slots
    ]


def _layer_ticks(n_first: int, n_last: int) -> list[int]:
    span = n_last - n_first + 1
    step = next(k for k in (1, 2, 5, 10, 20, 50, 100) if span / k <= 12)
    ticks = [t for t in range(n_first, n_last + 1) if t % step == 0]
    if ticks and n_last - ticks[-1] >= max(2, step // 2):
        ticks.append(n_last)
    return ticks


def draw_overview(
    fig: FigureBase,
    schedules: Mapping[str, Schedule],
    *,
    graph: Any = None,
    kind_colours: Mapping[str, str],
    other_colour: str,
    title: str = "",
) -> list[Axes]:
    """The per-layer bars and coverage strips of ``schedules`` into ``fig`` (a figure or a
    subfigure); returns the axes (bars and strips, alternating)."""
    per_plan = {name: layer_slots(s, graph) for name, s in schedules.items()}
    cats: list[str] = []
    for slots in per_plan.values():
        for x in slots:
            cats += [c for c in x.seconds if c not in cats]
    order = [k for k in kind_colours if k in cats and k not in (WAIT, IDLE)]
    order += sorted(c for c in cats if c not in order and c not in (WAIT, IDLE))
    order += [c for c in (WAIT, IDLE) if c in cats]

    def colour(c: str) -> str:
        if c == WAIT:
            return WAIT_COLOUR
        if c == IDLE:
            return IDLE_COLOUR
        return kind_colours.get(c, other_colour)

    coverage = graph is not None
    scale, unit = _time_unit(per_plan)
    ratios: list[float] = []
    for _ in per_plan:
        ratios += [BAR_IN, STRIP_IN]
    grid = fig.add_gridspec(len(ratios), 2, height_ratios=ratios, width_ratios=[1.0, 0.012])
    ref_name, ref = next(iter(schedules.items()))
    top = max((sum(x.seconds.values()) for slots in per_plan.values() for x in slots), default=0.0)
    strip_max = (
        1.0
        if coverage
        else max((x.l2_bytes / MB for slots in per_plan.values() for x in slots), default=0.0)
        or 1.0
    )
    mappable = ScalarMappable(Normalize(0.0, strip_max), "Greens")
    axes: list[Axes] = []
    shared: Axes | None = None
    for i, (name, slots) in enumerate(per_plan.items()):
        ax = fig.add_subplot(grid[2 * i, 0], sharex=shared)
        shared = shared or ax
        strip = fig.add_subplot(grid[2 * i + 1, 0], sharex=shared)
        axes += [ax, strip]
        xs = np.asarray(_x_positions(slots))
        bottom = np.zeros(len(slots))
        for c in order:
            h = np.asarray([x.seconds.get(c, 0.0) for x in slots]) * scale
            if h.any():
                ax.bar(xs, h, bottom=bottom, width=0.85, color=colour(c), linewidth=0)
            bottom += h
        ax.set_ylim(0, top * scale * 1.08 if top > 0 else 1.0)
        ax.set_ylabel(f"{unit} per\nlayer", fontsize=8)
        ax.tick_params(labelsize=7, labelbottom=False)
        ax.grid(axis="y", color="#E5E5E5", linewidth=0.5)
        ax.set_axisbelow(True)
        s = schedules[name]
        text = f"{name}: {s.makespan_s * 1e3:.4g} ms per step"
        if s is not ref and ref.makespan_s > 0:
            text += f" ({ref.makespan_s / s.makespan_s:.3f}× vs {ref_name})"
        wait = sum(x.seconds.get(WAIT, 0.0) for x in slots)
        if wait > 0:
            text += f"; compute waits {wait * 1e3:.3g} ms for prefetches"
        ax.set_title(text, loc="left", fontsize=9)
        values = [(x.coverage or 0.0) if coverage else x.l2_bytes / MB for x in slots]
        strip.bar(
            xs, 1.0, width=0.92, bottom=0.0, color=mappable.to_rgba(np.asarray(values)), linewidth=0
        )
        strip.set_ylim(0, 1)
        strip.set_yticks([])
        strip.set_ylabel("L2", fontsize=7, rotation=0, ha="right", va="center")
        strip.tick_params(labelsize=7, labelbottom=i == len(per_plan) - 1, length=2)
        for side in ("top", "right", "left"):
            strip.spines[side].set_visible(False)
    if per_plan and shared is not None:
        all_slots = next(iter(per_plan.values()))
        layers = [int(x.label) for x in all_slots if x.label not in (EMB, HEAD)]
        xs_all = _x_positions(all_slots)
        ticks = [float(t) for t in _layer_ticks(min(layers), max(layers))]
        labels = [str(int(t)) for t in ticks]
        for x, pos in zip(all_slots, xs_all, strict=True):
            if x.label in (EMB, HEAD):
                ticks.append(pos)
                labels.append(x.label)
        axes[-1].set_xticks(ticks, labels)
        axes[-1].set_xlabel("layer", fontsize=8)
        shared.set_xlim(min(xs_all) - 0.8, max(xs_all) + 0.8)
    if per_plan:
        cax = fig.add_subplot(grid[:, 1])
        bar = fig.colorbar(mappable, cax=cax)
        if bar.solids is not None:  # vector in SVG too: no embedded image
            bar.solids.set_rasterized(False)
        bar.ax.tick_params(labelsize=7)
        bar.set_label(
            "share of the layer's prefetchable bytes read from L2"
            if coverage
            else "MB read from L2",
            fontsize=8,
        )
    handles = [Patch(color=colour(c), label=c) for c in order]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(len(handles), 8),
        fontsize=8,
        frameon=False,
    )
    if title:
        fig.suptitle(title, fontsize=10)
    return axes


def _time_unit(per_plan: Mapping[str, list[Slot]]) -> tuple[float, str]:
    top = max((sum(x.seconds.values()) for v in per_plan.values() for x in v), default=0.0)
    if top >= 1.0:
        return 1.0, "s"
    if top >= 1e-3:
        return 1e3, "ms"
    return 1e6, "µs"


def overview_figure(
    schedules: Mapping[str, Schedule],
    *,
    graph: Any = None,
    title: str = "",
) -> Figure:
    """The overview alone (one bar panel and strip per schedule)."""
    from .gantt import KIND_COLOURS, OTHER_COLOUR, WIDTH_IN

    height = len(schedules) * (BAR_IN + STRIP_IN + 0.35) + 1.3 + (0.4 if title else 0.0)
    fig = Figure(figsize=(WIDTH_IN, height), layout="constrained")
    FigureCanvasAgg(fig)
    draw_overview(
        fig,
        schedules,
        graph=graph,
        kind_colours=KIND_COLOURS,
        other_colour=OTHER_COLOUR,
        title=title,
    )
    return fig
