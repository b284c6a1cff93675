"""Gantt pictures of schedules (matplotlib): compare vanilla, greedy and optimised at a glance.

One *block* per schedule, stacked, all sharing one time axis (milliseconds; seconds when the
window spans 10 s or more, e.g. a plain job shop whose durations are seconds):

* one lane per stream (``compute``, ``comm``, ``prefetch``, then the other streams sorted);
  ops are rectangles coloured by kind (:data:`KIND_COLOURS`), chunks are ``prefetch``
  rectangles, and a thin line links each chunk's end to its consumer's start;
* thin vertical lines where each layer's first op starts, labelled ``L<i>`` (at most ~20);
* under the lanes, when the schedule has hardware (usable L2 > 0): the L2 bytes held by
  prefetches (MB) against the usable L2 (dashed), and the HBM bandwidth in use (TB/s; ops
  and prefetch stacked) against the HBM bandwidth (dotted); see :mod:`._gantt_panels`;
* a router-aware MoE plan's chunks (:mod:`preserve_cp.router`), given the scenario graph the
  schedule ran: a *speculative* chunk (tensor ``W:spec``, issued before the router) split at
  the moment it had moved the bytes the layer read (``reads[W:spec]`` of its consumer): that
  part green, the rest (bytes moved for experts the router did not pick) hatched amber, both
  outlined; a *post-router* chunk (``W:rest``, issued when ``topk`` starts) teal
  (:func:`router_chunk_parts`).

Ops, chunks and links are drawn as one collection each per block (an 80-layer decode plan has
~900 ops and ~1,200 chunks); with ``layers=(A, B)`` only what overlaps the window is drawn.
The collections carry ``gid``\\ s (``ops:<name>``, ``chunks:<name>``, ``links:<name>``,
``l2:<name>``, ``hbm:<name>``; a router-aware plan's ``spec-read:<name>``,
``spec-wasted:<name>``, ``after-router:<name>``) so tests and SVG readers can find them.
Only this package and the CLI write files; the figure is built with
:class:`matplotlib.figure.Figure` directly, so no pyplot state is touched.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure, FigureBase
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..errors import InputError, input_error
from ..graph import PREFETCH_STREAM, stream_order
from ..outputs import write_output
from ..plan import ChunkEvent, Result, Schedule
from ..router import REST, SPEC
from ..units import MB
from ._gantt_panels import HBM_OPS_COLOUR, HBM_PREFETCH_COLOUR, PREFETCH_COLOUR, draw_hbm, draw_l2
from ._io import figure_suffix, write_figure
from .overview import BAR_IN, STRIP_IN, ZOOM_LAYERS, draw_overview, layer_count

#: colour of each op kind (collectives in shades of red, prefetch chunks green)
KIND_COLOURS: dict[str, str] = {
    "gemm": "#4C72B0",
    "attention": "#DD8452",
    "norm": "#937860",
    "elementwise": "#DA8BC3",
    "embedding": "#8172B3",
    "allreduce": "#C44E52",
    "allgather": "#E8898C",
    "reduce_scatter": "#8E2D30",
    "all_to_all": "#F0B6B8",
    "gemm_allreduce": "#2A3F6B",  # the fused baseline's GEMM with its allreduce
    PREFETCH_STREAM: PREFETCH_COLOUR,
}
#: colour of ops whose kind is not in :data:`KIND_COLOURS` (e.g. a plain DAG's ops)
OTHER_COLOUR = "#A0A0A0"
LINK_COLOUR = "#2D6B3C"
#: a router-aware plan's chunks: the legend labels, and the colours of the wasted part of a
#: speculative chunk (hatched) and of a chunk issued after the router
SPEC_READ, SPEC_WASTED, AFTER_ROUTER = "speculative: read", "speculative: wasted", "after router"
ROUTER_MARKS = (SPEC_READ, SPEC_WASTED, AFTER_ROUTER)
WASTED_COLOUR = "#F2C46D"
WASTED_HATCH_COLOUR = "#A8741A"
AFTER_ROUTER_COLOUR = "#2A9D8F"
LAYER_LINE_COLOUR = "#444444"

MAX_LAYER_LABELS = 20
WIDTH_IN = 14.0
LANE_IN = 0.38  # height of one stream lane
PANEL_IN = 0.85  # height of the L2 and of the HBM panel
DENSE = 300  # from this many rectangles in a lane block on, no edges (and chunk runs merge)
#: matplotlib settings for SVG output: text stays text, ids do not change from run to run
SVG_RC: dict[Any, Any] = {"svg.fonttype": "none", "svg.hashsalt": "preserve-cp"}
_LAYERS_RE = re.compile(r"\s*(\d+)\s*:\s*(\d+)\s*")


def parse_layers(text: str) -> tuple[int, int]:
    """``"A:B"`` -> ``(A, B)``, an inclusive layer range with ``0 <= A <= B``.

    >>> parse_layers("0:2")
    (0, 2)
    >>> parse_layers("3:1")
    Traceback (most recent call last):
    preserve_cp.errors.InputError: --layers: expected A:B with 0 <= A <= B, found '3:1'
    """
    m = _LAYERS_RE.fullmatch(text)
    if m is None or int(m[1]) > int(m[2]):
        raise InputError(f"--layers: expected A:B with 0 <= A <= B, found '{text}'")
    return int(m[1]), int(m[2])


def layer_window(schedules: Mapping[str, Schedule], layers: tuple[int, int]) -> tuple[float, float]:
    """The time window (s) from layer A's first op start to layer B's last op end.

    The union over the schedules that hold both layers; :class:`InputError` if none does.

    >>> from preserve_cp.plan import Event, Schedule
    >>> ev = (Event("a", "compute", 0.0, 1.0, "gemm", 0),
    ...       Event("b", "compute", 1.0, 3.0, "gemm", 1))
    >>> layer_window({"s": Schedule(ev, (), (), (), 3.0, 0.0, 1.0)}, (1, 1))
    (1.0, 3.0)
    """
    a, b = layers
    if not (isinstance(a, int) and isinstance(b, int) and 0 <= a <= b):
        raise input_error("gantt", "layers", "(A, B) with 0 <= A <= B", layers)
    starts, ends, present = [], [], set()
    for s in schedules.values():
        present |= {e.layer for e in s.events if e.layer >= 0}
        first = [e.start_s for e in s.events if e.layer == a]
        last = [e.end_s for e in s.events if e.layer == b]
        if first and last:
            starts.append(min(first))
            ends.append(max(last))
    if not starts:
        have = f"{min(present)}:{max(present)}" if present else "none"
        raise input_error(
            "gantt", "layers", f"a range within the schedules' layers ({have})", f"{a}:{b}"
        )
    return min(starts), max(ends)


def gantt_figure(
    schedules: Mapping[str, Schedule],
    *,
    layers: tuple[int, int] | None = None,
    title: str = "",
    graph: Any = None,
) -> Figure:
    """A Gantt figure of ``schedules`` (one block each, stacked, one shared time axis).

    Without ``layers`` the whole step in detail (what :func:`step_figure` replaces as the
    default picture of a many-layer step). ``graph``, the graph the schedules ran, lets a
    router-aware plan's speculative chunks show their read and wasted parts.

    Examples
    --------
    >>> from preserve_cp.plan import Event, Schedule
    >>> ev = (Event("a", "m1", 0.0, 2.0), Event("b", "m2", 1.0, 3.0))
    >>> s = Schedule(ev, (), (), (), 3.0, 0.0, 1.0)
    >>> fig = gantt_figure({"plan": s})
    >>> len(fig.axes)  # no L2 / HBM panels without hardware
    1
    >>> [c.get_gid() for c in fig.axes[0].collections if c.get_gid()]
    ['ops:plan']
    """
    if not schedules:
        raise input_error("gantt", "schedules", "at least one schedule", "none")
    fig = Figure(figsize=(WIDTH_IN, _gantt_height(schedules, title)), layout="constrained")
    FigureCanvasAgg(fig)
    _draw_gantt(fig, schedules, layers, title, graph)
    return fig


def step_figure(
    schedules: Mapping[str, Schedule],
    *,
    title: str = "",
    graph: Any = None,
    zoom: tuple[int, int] | None = None,
) -> Figure:
    """The default picture of a whole step: the per-layer overview (:mod:`.overview`) above
    the Gantt of the first layers (``zoom``, default the first ``ZOOM_LAYERS`` layers it has).

    ``graph`` (the one the schedules ran) lets the overview's strips show prefetch coverage.
    """
    if not schedules:
        raise input_error("gantt", "schedules", "at least one schedule", "none")
    n = layer_count(schedules)
    # the first layers the schedules have (a pipeline stage starts past layer 0)
    first = min((e.layer for s in schedules.values() for e in s.events if e.layer >= 0), default=0)
    zoom = zoom or (first, max(first, min(first + ZOOM_LAYERS, n) - 1))
    over_h = len(schedules) * (BAR_IN + STRIP_IN + 0.35) + 1.2
    zoom_h = _gantt_height(schedules, "x")
    fig = Figure(
        figsize=(WIDTH_IN, over_h + zoom_h + (0.5 if title else 0.0)), layout="constrained"
    )
    FigureCanvasAgg(fig)
    top, bottom = fig.subfigures(2, 1, height_ratios=[over_h, zoom_h], hspace=0.02)  # type: ignore[misc]
    draw_overview(
        top,
        schedules,
        graph=graph,
        kind_colours=KIND_COLOURS,
        other_colour=OTHER_COLOUR,
        title=f"Whole step, {n - first} layers: time per layer by what the compute lane does",
    )
    a, b = zoom
    what = f"layer {a}" if a == b else f"layers {a} to {b}"
    _draw_gantt(bottom, schedules, zoom, f"Zoom on {what}", graph)
    if title:
        fig.suptitle(title, fontsize=12)
    return fig


def picture(
    schedules: Mapping[str, Schedule],
    *,
    layers: tuple[int, int] | None = None,
    title: str = "",
    graph: Any = None,
) -> Figure:
    """What ``--gantt`` draws: the Gantt of ``layers``; without them, for a step of more than
    ``ZOOM_LAYERS`` layers, :func:`step_figure` (overview and zoom), else the whole Gantt."""
    if layers is None and layer_count(schedules) > ZOOM_LAYERS:
        return step_figure(schedules, title=title, graph=graph)
    return gantt_figure(schedules, layers=layers, title=title, graph=graph)


def _gantt_height(schedules: Mapping[str, Schedule], title: str) -> float:
    total = 0.0
    for i, s in enumerate(schedules.values()):
        total += LANE_IN * len(_lanes(s)) + 0.1
        if _has_hardware(s):
            total += 2 * PANEL_IN
        if i < len(schedules) - 1:
            total += 0.3
    return total + 1.2 + (0.3 if title else 0.0)


def _draw_gantt(
    fig: FigureBase,
    schedules: Mapping[str, Schedule],
    layers: tuple[int, int] | None,
    title: str,
    graph: Any = None,
) -> None:
    """The Gantt blocks of ``schedules`` into ``fig`` (a figure or a subfigure)."""
    if layers is None:
        window = (0.0, max(max(s.makespan_s for s in schedules.values()), 1e-12))
    else:
        window = layer_window(schedules, layers)
    scale, unit = (1.0, "s") if window[1] - window[0] >= 10.0 else (1e3, "ms")

    lanes = {name: _lanes(s) for name, s in schedules.items()}
    ratios: list[float] = []
    for i, (name, s) in enumerate(schedules.items()):
        ratios.append(LANE_IN * len(lanes[name]) + 0.1)
        if _has_hardware(s):
            ratios += [PANEL_IN, PANEL_IN]
        if i < len(schedules) - 1:
            ratios.append(0.3)  # spacer between blocks
    grid = fig.add_gridspec(len(ratios), 1, height_ratios=ratios)
    first = next(iter(schedules.values()))
    kinds: set[str] = set()
    row, shared = 0, None
    block_axes: list[list[Axes]] = []
    for name, s in schedules.items():
        ax = fig.add_subplot(grid[row], sharex=shared)
        shared = ax if shared is None else shared
        axes = [ax]
        kinds |= _draw_lanes(ax, name, s, lanes[name], window, scale, graph)
        ax.set_title(
            _block_title(name, s, first, next(iter(schedules)), scale, unit),
            loc="left",
            fontsize=10,
            pad=14,
        )
        row += 1
        if _has_hardware(s):
            axes.append(fig.add_subplot(grid[row], sharex=shared))
            axes.append(fig.add_subplot(grid[row + 1], sharex=shared))
            draw_l2(axes[1], name, s, window, scale)
            draw_hbm(axes[2], name, s, window, scale)
            row += 2
        _draw_layer_lines(axes, s, window, scale)
        row += 1  # spacer
        block_axes.append(axes)
    for axes in block_axes:
        for a in axes[:-1]:
            a.tick_params(labelbottom=False)
    block_axes[0][0].set_xlim(window[0] * scale, window[1] * scale)
    block_axes[-1][-1].set_xlabel(f"time ({unit})")
    if title:
        fig.suptitle(title, fontsize=12 if isinstance(fig, Figure) else 10)
    fig.legend(
        handles=_legend_handles(kinds, schedules),
        loc="outside lower center",
        ncols=8,
        fontsize=8,
        frameon=False,
    )


def gantt_svg(
    schedules: Mapping[str, Schedule],
    *,
    layers: tuple[int, int] | None = None,
    title: str = "",
    graph: Any = None,
) -> str:
    """The picture (:func:`picture`) as SVG text (text stays text: ``svg.fonttype = 'none'``),
    for inlining in HTML.

    >>> from preserve_cp.plan import Event, Schedule
    >>> s = Schedule((Event("a", "m1", 0.0, 2.0),), (), (), (), 2.0, 0.0, 1.0)
    >>> gantt_svg({"plan": s}).lstrip().startswith("<?xml")
    True
    """
    with matplotlib.rc_context(SVG_RC):
        return figure_svg(picture(schedules, layers=layers, title=title, graph=graph))


def figure_svg(fig: Figure) -> str:
    """A figure as deterministic SVG text (call under ``matplotlib.rc_context(SVG_RC)``)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def write_gantt(
    path: str | Path,
    schedules: Mapping[str, Schedule],
    *,
    layers: tuple[int, int] | None = None,
    title: str = "",
    graph: Any = None,
) -> Path:
    """Write the picture of ``schedules`` (:func:`picture`) to ``path`` (``.svg`` or ``.png``;
    ``-``: SVG on standard output).

    >>> write_gantt("plan.pdf", {})
    Traceback (most recent call last):
    preserve_cp.errors.InputError: plan.pdf: suffix: expected '.svg' or '.png', found '.pdf'
    """
    if figure_suffix(path) == ".svg":
        return write_output(path, gantt_svg(schedules, layers=layers, title=title, graph=graph))
    return write_figure(path, picture(schedules, layers=layers, title=title, graph=graph))


def run_title(
    model: str | None,
    hardware: str | None,
    workload: Mapping[str, Any] | None,
    result: Result | None = None,
) -> str:
    """The title of a picture of a run: the workload, then the chosen plan's speedup.

    >>> wl = {"phase": "decode", "batch": 4, "context": 16384, "tp": 8,
    ...       "weight_dtype": "int8", "act_dtype": "int8", "kv_dtype": "int8"}
    >>> run_title("llama3-70b", "ascend-910b2", wl)
    'llama3-70b on ascend-910b2: decode, batch 4, context 16384, tp 8, int8'
    """
    text = f"{model or 'graph'} on {hardware}" if hardware else (model or "graph")
    if workload:
        dts = [workload.get(k) for k in ("weight_dtype", "act_dtype", "kv_dtype")]
        dt = str(dts[0]) if len(set(dts)) == 1 else "weights/acts/KV " + "/".join(map(str, dts))
        text += (
            f": {workload.get('phase')}, batch {workload.get('batch')}, context "
            f"{workload.get('context')}, tp {workload.get('tp')}, {dt}"
        )
    if result is not None and result.speedup is not None:
        name = "optimised" if result.optimiser_ran else f"best baseline ({result.plan.name})"
        text += f"\n{name}: {result.makespan_s * 1e3:.4g} ms, {result.speedup:.3f}× vs vanilla"
        if result.optimiser_ran and result.greedy_makespan_s:
            text += f", {result.greedy_makespan_s / result.makespan_s:.3f}× vs greedy"
        if result.optimiser_ran and result.streaming_makespan_s:
            text += f", {result.streaming_makespan_s / result.makespan_s:.3f}× vs streaming"
    return text


def result_title(result: Result, graph: Any = None) -> str:
    """:func:`run_title` from what the result (its ``inputs``) or its graph says."""
    inputs = result.inputs or {}
    model = (inputs.get("model") or {}).get("name")
    hardware = (inputs.get("hardware") or {}).get("name")
    workload = inputs.get("workload")
    if graph is not None and hasattr(graph, "graph"):
        model = model or graph.graph.get("model")
        found = graph.graph.get("workload")
        workload = workload or (dict(found) if isinstance(found, Mapping) else None)
    return run_title(model, hardware, workload, result)


# --- one block ------------------------------------------------------------------------------


def _has_hardware(s: Schedule) -> bool:
    return s.l2_capacity_bytes > 0


def _lanes(s: Schedule) -> list[str]:
    streams = {e.resource for e in s.events}
    if s.chunks or _has_hardware(s):
        streams.add(PREFETCH_STREAM)
    return stream_order(streams)


def _overlaps(start: float, end: float, window: tuple[float, float]) -> bool:
    """Positive-length overlap with the window (a zero-length op: inside it)."""
    if end > start:
        return start < window[1] and end > window[0]
    return window[0] <= start <= window[1]


def _block_title(
    name: str, s: Schedule, ref: Schedule, ref_name: str, scale: float, unit: str
) -> str:
    text = f"{name}: makespan {s.makespan_s * scale:.4g} {unit}"
    if s is not ref and ref.makespan_s > 0:
        text += f" ({(s.makespan_s / ref.makespan_s - 1) * 100:+.1f}% vs {ref_name})"
    if s.chunks:
        text += f", {len(s.chunks)} chunks, peak L2 {s.peak_l2_bytes() / MB:.1f} MB"
    if s.dropped:
        text += f", {len(s.dropped)} prefetches dropped"
    return text


def _rects(spans: Sequence[tuple[float, float, float]], scale: float) -> list[np.ndarray]:
    """(start_s, end_s, lane y) -> the (4, 2) corners of each rectangle, bar height 0.8."""
    a = np.asarray(spans, dtype=float).reshape(-1, 3)
    x0, x1, y = a[:, 0] * scale, a[:, 1] * scale, a[:, 2]
    corners = [(x0, y - 0.4), (x0, y + 0.4), (x1, y + 0.4), (x1, y - 0.4)]
    return list(np.stack([np.stack(c, 1) for c in corners], axis=1))


def _chunk_spans(
    chunks: list, window: tuple[float, float], y: float
) -> list[tuple[float, float, float]]:
    """Chunk rectangles; in a dense view (no edges drawn), runs of touching chunks become one.

    Below ~a pixel the boundaries are invisible anyway, and a decode plan's back-to-back
    chunks would otherwise be most of the SVG.
    """
    return _spans([(c.start_s, c.end_s) for c in chunks], window, y)


def _spans(
    pairs: Sequence[tuple[float, float]], window: tuple[float, float], y: float
) -> list[tuple[float, float, float]]:
    """(start_s, end_s) bars on lane ``y``, touching runs merged in a dense view."""
    spans = sorted(pairs)
    if len(spans) < DENSE:
        return [(a, b, y) for a, b in spans]
    tol = (window[1] - window[0]) / 4000
    merged = [list(spans[0])]
    for a, b in spans[1:]:
        if a - merged[-1][1] <= tol:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b, y) for a, b in merged]


def router_chunk_parts(
    s: Schedule, chunks: Sequence[ChunkEvent], graph: Any
) -> tuple[list[ChunkEvent], dict[str, list[tuple[float, float]]]]:
    """Split ``chunks`` (of ``s``) into the plain ones and the (start_s, end_s) parts of a
    router-aware plan's chunks, by :data:`SPEC_READ`, :data:`SPEC_WASTED`, :data:`AFTER_ROUTER`.

    The consumer of a speculative chunk (tensor ``W:spec``) reads ``reads[W:spec]`` of the bytes
    of that tensor's chunks (in ``graph``, the scenario graph the schedule ran), each chunk its
    share by bytes. The chunk is split at the moment it had moved its read bytes (the prefetch
    stream's rate in ``s.rate_segments``; the stream moves one chunk at a time), so each part
    shows the time its bytes took; where no rate is known, pro rata of its span. Without
    ``graph`` (or those reads) it stays plain. A chunk of ``W:rest`` (issued after the router)
    is one part.

    >>> import networkx as nx
    >>> from preserve_cp.plan import ChunkEvent, Schedule
    >>> g = nx.DiGraph()
    >>> g.add_node("mm", reads={"w:spec": 3.0})
    >>> c = ChunkEvent(0, "w:spec", 4.0, "mm", None, 0.0, 2.0, 3.0)
    >>> s = Schedule((), (c,), (), ((0.0, 1.0, 1.0, 0.0), (1.0, 2.0, 3.0, 0.0)), 3.0, 10.0, 4.0)
    >>> plain, parts = router_chunk_parts(s, [c], g)
    >>> plain, {k: [(round(a, 3), round(b, 3)) for a, b in v] for k, v in parts.items() if v}
    ([], {'speculative: read': [(0.0, 1.667)], 'speculative: wasted': [(1.667, 2.0)]})
    """
    parts: dict[str, list[tuple[float, float]]] = {m: [] for m in ROUTER_MARKS}
    plain: list[ChunkEvent] = []
    if not any(c.tensor.endswith((SPEC, REST)) for c in chunks):
        return list(chunks), parts
    moved: dict[str, float] = {}  # bytes of each speculative tensor's chunks
    for c in s.chunks:
        if c.tensor.endswith(SPEC):
            moved[c.tensor] = moved.get(c.tensor, 0.0) + c.bytes
    seg = np.asarray(sorted(s.rate_segments), dtype=float).reshape(-1, 4)
    seg = seg[np.isfinite(seg[:, 2]) & (seg[:, 2] > 0)]
    for c in chunks:
        if c.tensor.endswith(REST):
            parts[AFTER_ROUTER].append((c.start_s, c.end_s))
            continue
        read = read_bytes(graph, c) if c.tensor.endswith(SPEC) else None
        if read is None:
            plain.append(c)
            continue
        total = moved.get(c.tensor, 0.0)
        share = min(1.0, max(0.0, read / total)) if total > 0 else 1.0
        t = _time_at_share(seg, c.start_s, c.end_s, share)
        if t > c.start_s:
            parts[SPEC_READ].append((c.start_s, t))
        if t < c.end_s:
            parts[SPEC_WASTED].append((t, c.end_s))
    return plain, parts


def read_bytes(graph: Any, c: ChunkEvent) -> float | None:
    """The bytes of ``c.tensor`` its consumer reads in ``graph`` (None: not known)."""
    if graph is None or not hasattr(graph, "nodes") or c.consumer not in graph.nodes:
        return None
    value = (graph.nodes[c.consumer].get("reads") or {}).get(c.tensor)
    return None if value is None else float(value)


def _time_at_share(seg: np.ndarray, a: float, b: float, share: float) -> float:
    """When the prefetch stream had moved ``share`` of what it moved in [a, b] (rates
    ``seg``: rows t0, t1, bytes/s, ...; sorted, positive); pro rata when it moved nothing."""
    if share >= 1.0:
        return b
    if share <= 0.0:
        return a
    inside = seg[(seg[:, 1] > a) & (seg[:, 0] < b)]
    t0, t1 = np.maximum(inside[:, 0], a), np.minimum(inside[:, 1], b)
    moved = inside[:, 2] * np.maximum(t1 - t0, 0.0)
    total = float(moved.sum())
    if not total > 0:
        return a + (b - a) * share
    want = share * total
    cum = np.cumsum(moved)
    i = min(int(np.searchsorted(cum, want)), len(cum) - 1)
    return float(min(b, t0[i] + (want - (cum[i] - moved[i])) / inside[i, 2]))


def _draw_lanes(
    ax: Axes,
    name: str,
    s: Schedule,
    lanes: list[str],
    window: tuple[float, float],
    scale: float,
    graph: Any = None,
) -> set[str]:
    """Ops, chunks and links of one schedule; returns the op kinds drawn (for the legend),
    and which of :data:`ROUTER_MARKS` it drew."""
    y_of = {lane: i for i, lane in enumerate(lanes)}
    ops = [e for e in s.events if _overlaps(e.start_s, e.end_s, window)]
    colours = [KIND_COLOURS.get(e.kind, OTHER_COLOUR) for e in ops]
    thin = len(ops) < DENSE  # white edges separate ops only when they are wide enough to show
    coll = PolyCollection(
        _rects([(e.start_s, e.end_s, y_of[e.resource]) for e in ops], scale),
        facecolors=colours,
        edgecolors="white",
        linewidths=0.5 if thin else 0.0,
    )
    coll.set_gid(f"ops:{name}")
    ax.add_collection(coll)
    _label_ops(ax, ops, y_of, window, scale)

    chunks = [c for c in s.chunks if _overlaps(c.start_s, c.end_s, window)]
    plain, parts = router_chunk_parts(s, chunks, graph)
    if plain:
        pf = y_of[PREFETCH_STREAM]
        cc = PolyCollection(
            _rects(_chunk_spans(plain, window, pf), scale),
            facecolors=KIND_COLOURS[PREFETCH_STREAM],
            edgecolors="white",
            linewidths=0.3 if len(chunks) < DENSE else 0.0,
        )
        cc.set_gid(f"chunks:{name}")
        ax.add_collection(cc)
    marks = _draw_router_parts(ax, name, parts, y_of, window, scale, len(chunks) < DENSE)
    by_node = {e.node: e for e in s.events}
    lx: list[float] = []
    ly: list[float] = []
    for c in s.chunks:
        cons = by_node.get(c.consumer)
        if cons is None or not _overlaps(
            min(c.end_s, cons.start_s), max(c.end_s, cons.start_s), window
        ):
            continue
        yc, ypf = y_of[cons.resource], y_of[PREFETCH_STREAM]
        sign = 1.0 if yc > ypf else -1.0  # from the chunk's edge facing the consumer's lane
        lx += [c.end_s * scale, cons.start_s * scale, math.nan]
        ly += [ypf + 0.4 * sign, yc - 0.4 * sign, math.nan]
    if lx:
        # one polyline broken by NaNs: one SVG path for all links instead of one per link
        (links,) = ax.plot(lx, ly, color=LINK_COLOUR, linewidth=0.6, alpha=0.55)
        links.set_gid(f"links:{name}")

    ax.set_ylim(len(lanes) - 0.5, -0.5)  # first stream on top
    ax.set_yticks(range(len(lanes)), lanes, fontsize=8)
    ax.tick_params(axis="y", length=0)
    ax.grid(axis="x", color="#E5E5E5", linewidth=0.5)
    ax.set_axisbelow(True)
    return {e.kind for e in ops} | ({PREFETCH_STREAM} if chunks else set()) | marks


def _draw_router_parts(
    ax: Axes,
    name: str,
    parts: Mapping[str, list[tuple[float, float]]],
    y_of: dict[str, int],
    window: tuple[float, float],
    scale: float,
    edges: bool,
) -> set[str]:
    """The parts of :func:`router_chunk_parts` on the prefetch lane; returns the marks drawn."""
    # a speculative chunk's parts are outlined (dark), so they stand apart from plain chunks
    style: dict[str, dict[str, Any]] = {
        SPEC_READ: {"facecolors": PREFETCH_COLOUR, "edgecolors": LINK_COLOUR, "linewidths": 0.7},
        SPEC_WASTED: {
            "facecolors": WASTED_COLOUR,
            "edgecolors": WASTED_HATCH_COLOUR,
            "linewidths": 0.7,
            "hatch": "////",
        },
        AFTER_ROUTER: {
            "facecolors": AFTER_ROUTER_COLOUR,
            "edgecolors": "white",
            "linewidths": 0.3 if edges else 0.0,
        },
    }
    gids = {SPEC_READ: "spec-read", SPEC_WASTED: "spec-wasted", AFTER_ROUTER: "after-router"}
    drawn = set()
    for mark, pairs in parts.items():
        if not pairs:
            continue
        coll = PolyCollection(
            _rects(_spans(pairs, window, y_of[PREFETCH_STREAM]), scale), **style[mark]
        )
        if mark == SPEC_WASTED and hasattr(coll, "set_hatchcolor"):  # matplotlib >= 3.10
            coll.set_hatchcolor(WASTED_HATCH_COLOUR)
        coll.set_gid(f"{gids[mark]}:{name}")
        ax.add_collection(coll)
        drawn.add(mark)
    return drawn


def _label_ops(
    ax: Axes, ops: list, y_of: dict[str, int], window: tuple[float, float], scale: float
) -> None:
    """Name the ops whose rectangles are wide enough for their name (zoomed views)."""
    span = window[1] - window[0]
    inches_per_s = (WIDTH_IN - 1.8) / span if span > 0 else 0.0
    for e in ops:
        label = re.sub(r"^L\d+\.", "", str(e.node))
        width_in = (min(e.end_s, window[1]) - max(e.start_s, window[0])) * inches_per_s
        if width_in < len(label) * 6.5 * 0.6 / 72 + 0.04:
            continue
        mid = (max(e.start_s, window[0]) + min(e.end_s, window[1])) / 2 * scale
        ax.text(
            mid,
            y_of[e.resource],
            label,
            ha="center",
            va="center",
            fontsize=6.5,
            color="white",
            clip_on=True,
        )


def _draw_layer_lines(
    axes: list[Axes], s: Schedule, window: tuple[float, float], scale: float
) -> None:
    first: dict[int, float] = {}
    for e in s.events:
        if e.layer >= 0 and (e.layer not in first or e.start_s < first[e.layer]):
            first[e.layer] = e.start_s
    shown = sorted((t, layer) for layer, t in first.items() if window[0] <= t < window[1])
    if not shown:
        return
    xs = [t * scale for t, _ in shown]
    for ax in axes:
        ax.vlines(
            xs,
            0,
            1,
            transform=ax.get_xaxis_transform(),
            colors=LAYER_LINE_COLOUR,
            linewidths=0.5,
            alpha=0.6,
        )
    step = math.ceil(len(shown) / MAX_LAYER_LABELS)
    for i, (t, layer) in enumerate(shown):
        if i % step == 0:
            axes[0].text(
                t * scale,
                1.0,
                f"L{layer}",
                transform=axes[0].get_xaxis_transform(),
                ha="left",
                va="bottom",
                fontsize=7,
                color=LAYER_LINE_COLOUR,
            )


def _legend_handles(kinds: set[str], schedules: Mapping[str, Schedule]) -> list:
    marks = [m for m in ROUTER_MARKS if m in kinds]
    kinds = kinds - set(ROUTER_MARKS)
    order = [k for k in KIND_COLOURS if k in kinds and k != PREFETCH_STREAM]
    handles: list = [Patch(color=KIND_COLOURS[k], label=k) for k in order]
    if kinds - set(KIND_COLOURS):
        handles.append(Patch(color=OTHER_COLOUR, label="op"))
    if PREFETCH_STREAM in kinds:
        handles.append(Patch(color=KIND_COLOURS[PREFETCH_STREAM], label="prefetch chunk"))
        handles.append(Line2D([], [], color=LINK_COLOUR, linewidth=0.8, label="chunk -> consumer"))
    for m in marks:
        if m == SPEC_WASTED:
            handles.append(
                Patch(
                    facecolor=WASTED_COLOUR,
                    edgecolor=WASTED_HATCH_COLOUR,
                    hatch="////",
                    linewidth=0.7,
                    label=m,
                )
            )
        else:
            handles.append(
                Patch(facecolor=PREFETCH_COLOUR, edgecolor=LINK_COLOUR, linewidth=0.7, label=m)
                if m == SPEC_READ
                else Patch(color=AFTER_ROUTER_COLOUR, label=m)
            )
    if any(_has_hardware(s) for s in schedules.values()):
        handles.append(Patch(color=HBM_OPS_COLOUR, label="HBM: ops"))
        handles.append(Patch(color=HBM_PREFETCH_COLOUR, label="HBM: prefetch"))
        handles.append(
            Line2D([], [], color="black", linestyle="--", linewidth=0.8, label="usable L2")
        )
        handles.append(
            Line2D([], [], color="black", linestyle=":", linewidth=0.9, label="HBM bandwidth")
        )
    return handles


def result_gantt(
    result: Result,
    path: str | Path,
    *,
    layers: tuple[int, int] | None = None,
    compare: bool = False,
    title: str = "",
    graph: Any = None,
) -> Path:
    """Write the picture of a solve's result (with compare=True: vanilla, greedy, streaming and
    optimised stacked); ``layers=(A, B)`` zooms on layers A..B (inclusive), without them a
    many-layer step gets the overview and the zoom on its first layers (:func:`picture`).
    The title defaults to the workload and the speedup (:func:`result_title`). Also
    ``preserve_cp.gantt(result, path)``."""
    schedules = (
        result.compared_schedules() if compare else {result.plan.name or "plan": result.schedule}
    )
    title = title or result_title(result, graph)
    return write_gantt(path, schedules, layers=layers, title=title, graph=graph)
