"""Pictures of a router-aware analysis of an MoE decode step (:mod:`preserve_cp.router`).

* :func:`router_gantt_figure`: the Gantt of the chosen (``optimised``) router-aware plan on
  the routing scenario the analysis kept (``RouterResult.shown_scenario``), zoomed on the
  first layers, with each speculative chunk split into the bytes the layer read and those it
  did not (wasted), and the chunks issued after the router marked (:mod:`.gantt`). What
  ``solve --gantt FILE`` writes to ``FILE`` with ``.router`` before the suffix.
* :func:`distribution_figure`: the step time of every plan over the routing scenarios, as an
  ECDF per plan and as a box per plan (median, quartiles, range, every scenario a dot, the
  expected step a diamond), with the clairvoyant bound on the expected step. Drawn from
  ``RouterResult.to_dict()`` (the ``router`` object of ``--json``), so a saved result can be
  drawn again. The HTML report inlines both (:mod:`.report`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from ..errors import input_error
from ..outputs import write_output
from ..router import SPEC
from ..units import MB
from ._io import figure_suffix, write_figure
from .gantt import (
    AFTER_ROUTER_COLOUR,
    SVG_RC,
    WIDTH_IN,
    figure_svg,
    gantt_figure,
    read_bytes,
)
from .overview import ZOOM_LAYERS, layer_count

#: the plans of :func:`preserve_cp.router.solve_router`, each its colour in the distributions
PLAN_COLOURS: dict[str, str] = {
    "vanilla": "#8C8C8C",
    "no expert prefetch": "#4C72B0",
    "after router": AFTER_ROUTER_COLOUR,
    "predicted greedy": "#DD8452",
    "optimised": "#2D8A4E",
}
_OTHER_COLOURS = ("#8172B3", "#C44E52", "#937860", "#DA8BC3")
BOUND_COLOUR = "#222222"


def router_title(rr: Any, heading: str = "") -> str:
    """The title of :func:`router_gantt_figure`: ``heading`` (e.g. the run's workload), the
    scenario shown and the predictor accuracy, then the expected step and, in the scenario
    shown, the speculative bytes read and wasted."""
    best = rr.best
    ci = best.ci95_s
    ms = 1e3
    read = wasted = 0.0
    if rr.schedule is not None and rr.shown_graph is not None:
        read, wasted = _speculative_bytes(rr.schedule, rr.shown_graph)
    lines = [heading] if heading else []
    lines.append(
        f"router-aware plan ({rr.chosen}) on routing scenario {rr.shown_scenario} of "
        f"{rr.scenarios} "
        + (
            f"({rr.routing}, seed {rr.seed}), predictor accuracy {rr.predictor_accuracy:g}"
            if rr.predictor_trace is None
            else f"(steps of predictor trace {rr.predictor_trace})"
        )
    )
    text = f"expected step {best.expected_s * ms:.4g} ms"
    if np.isfinite(ci):
        text += f" ± {ci * ms:.2g} ms (95 %)"
    if best.expected_s > 0:
        text += f", {rr.vanilla_s / best.expected_s:.3f}× vs vanilla's"
    if read or wasted:
        text += (
            f"; this scenario's speculative chunks: {read / MB:.1f} MB read, "
            f"{wasted / MB:.1f} MB wasted"
        )
    lines.append(text)
    return "\n".join(lines)


def _speculative_bytes(schedule: Any, graph: Any) -> tuple[float, float]:
    """Bytes of the speculative chunks the layers read, and the rest (wasted)."""
    size: dict[str, float] = {}
    hit: dict[str, float] = {}
    for c in schedule.chunks:
        if c.tensor.endswith(SPEC):
            size[c.tensor] = size.get(c.tensor, 0.0) + c.bytes
            hit[c.tensor] = read_bytes(graph, c) or 0.0
    read = sum(min(hit[t], size[t]) for t in size)
    return read, sum(size.values()) - read


def router_gantt_figure(
    rr: Any, *, layers: tuple[int, int] | None = None, heading: str = ""
) -> Figure:
    """The Gantt of ``rr``'s chosen plan on its shown scenario (``rr``: a
    :class:`~preserve_cp.router.RouterResult`), zoomed on ``layers``, titled by
    :func:`router_title`.

    Default zoom (:func:`router_zoom`): :data:`~.overview.ZOOM_LAYERS` layers from the first
    whose speculative chunk wasted bytes in that scenario (from the first layer when none
    did), so the picture shows read and wasted parts."""
    if rr.schedule is None or rr.shown_graph is None:
        raise input_error("router picture", "router result", "the schedule it shows", "none")
    schedules = {f"{rr.chosen}, routing scenario {rr.shown_scenario}": rr.schedule}
    if layers is None:
        layers = router_zoom(rr.schedule, rr.shown_graph)
    return gantt_figure(
        schedules, layers=layers, title=router_title(rr, heading), graph=rr.shown_graph
    )


def router_zoom(schedule: Any, graph: Any) -> tuple[int, int] | None:
    """:data:`~.overview.ZOOM_LAYERS` layers from the first layer whose speculative chunks
    wasted bytes (read fewer than they moved), else from the schedule's first layer; None for
    a schedule of at most that many layers (the whole of it)."""
    n = layer_count({"s": schedule})
    if n <= ZOOM_LAYERS:
        return None
    first = min(e.layer for e in schedule.events if e.layer >= 0)
    moved: dict[str, float] = {}
    for c in schedule.chunks:
        if c.tensor.endswith(SPEC):
            moved[c.tensor] = moved.get(c.tensor, 0.0) + c.bytes
    wasteful = []
    for c in schedule.chunks:
        if c.tensor in moved and c.consumer in graph.nodes:
            a = graph.nodes[c.consumer]
            read = float((a.get("reads") or {}).get(c.tensor, moved[c.tensor]))
            if read < moved[c.tensor] * (1 - 1e-9) and int(a.get("layer", -1)) >= first:
                wasteful.append(int(a["layer"]))
    start = min(wasteful, default=first)
    return start, min(start + ZOOM_LAYERS, n) - 1


def write_router_gantt(
    path: str | Path,
    rr: Any,
    *,
    layers: tuple[int, int] | None = None,
    heading: str = "",
) -> Path:
    """Write :func:`router_gantt_figure` to ``path`` (``.svg`` or ``.png``)."""
    if figure_suffix(path) == ".svg":
        with matplotlib.rc_context(SVG_RC):
            text = figure_svg(router_gantt_figure(rr, layers=layers, heading=heading))
        return write_output(path, text)
    return write_figure(path, router_gantt_figure(rr, layers=layers, heading=heading))


def distribution_figure(router: Mapping[str, Any], *, title: str = "") -> Figure:
    """The step time of every plan of ``router`` (``RouterResult.to_dict()``) over its routing
    scenarios: ECDFs (left) and one box per plan (right), on one time axis (ms).

    >>> d = {"plans": {"vanilla": {"makespans_s": [2e-3, 3e-3], "expected_makespan_s": 2.5e-3},
    ...                "optimised": {"makespans_s": [1e-3, 2e-3], "expected_makespan_s": 1.5e-3}},
    ...      "clairvoyant_bound_s": 1.2e-3}
    >>> fig = distribution_figure(d)
    >>> [ln.get_gid() for ln in fig.axes[0].lines if ln.get_gid()]
    ['ecdf:vanilla', 'ecdf:optimised', 'bound']
    """
    plans = {
        name: np.sort(np.asarray(p["makespans_s"], dtype=float)) * 1e3
        for name, p in router["plans"].items()
        if p.get("makespans_s")
    }
    if not plans:
        raise input_error("router", "plans", "plans with makespans_s", "none")
    colours = _plan_colours(list(plans))
    fig = Figure(figsize=(WIDTH_IN, 1.9 + 0.42 * len(plans)), layout="constrained")
    FigureCanvasAgg(fig)
    ecdf, box = fig.subplots(1, 2, width_ratios=[1.0, 1.0], sharex=True)
    for name, xs in plans.items():
        n = len(xs)
        ys = np.arange(1, n + 1) / n
        (line,) = ecdf.step(
            np.concatenate([[xs[0]], xs]),
            np.concatenate([[0.0], ys]),
            where="post",
            color=colours[name],
            linewidth=2.0 if name == "optimised" else 1.2,
            label=name,
        )
        line.set_gid(f"ecdf:{name.replace(' ', '-')}")
    bound = router.get("clairvoyant_bound_s")
    for ax in (ecdf, box):
        ax.grid(axis="x", color="#E5E5E5", linewidth=0.5)
        ax.set_axisbelow(True)
        ax.tick_params(labelsize=8)
        ax.set_xlabel("step time (ms)", fontsize=9)
        if bound:
            (b,) = ax.plot(
                [bound * 1e3] * 2,
                [0, 1],
                transform=ax.get_xaxis_transform(),
                color=BOUND_COLOUR,
                linestyle="--",
                linewidth=0.9,
            )
            if ax is ecdf:
                b.set_gid("bound")
    ecdf.set_ylim(0, 1.02)
    ecdf.set_ylabel("share of scenarios\nwith a step ≤ t", fontsize=9)
    ecdf.set_title("ECDF of the step per plan", loc="left", fontsize=9)
    names = list(plans)
    for i, name in enumerate(names):
        xs = plans[name]
        q1, med, q3 = np.percentile(xs, [25, 50, 75])
        c = colours[name]
        box.plot([xs[0], xs[-1]], [i, i], color=c, linewidth=1.0)
        box.add_patch(
            Rectangle((q1, i - 0.3), max(q3 - q1, 0.0), 0.6, facecolor=c, alpha=0.35, edgecolor=c)
        )
        box.plot([med, med], [i - 0.3, i + 0.3], color=c, linewidth=2.0)
        jitter = (np.arange(len(xs)) % 5 - 2) * 0.05
        box.plot(xs, i + jitter, "o", color=c, markersize=2.5, alpha=0.8)
        mean = router["plans"][name].get("expected_makespan_s", float(np.mean(xs) / 1e3)) * 1e3
        box.plot([mean], [i], "D", color="white", markeredgecolor="black", markersize=5)
    box.set_yticks(range(len(names)), names, fontsize=8)
    box.set_ylim(len(names) - 0.5, -0.5)
    box.tick_params(axis="y", length=0)
    box.set_title("per plan: range, quartiles, median; dots: scenarios", loc="left", fontsize=9)
    handles = [
        Line2D([], [], color=colours[n], linewidth=2.0 if n == "optimised" else 1.2, label=n)
        for n in names
    ]
    handles.append(
        Line2D(
            [],
            [],
            marker="D",
            color="white",
            markeredgecolor="black",
            linestyle="",
            label="expected",
        )
    )
    if bound:
        handles.append(
            Line2D(
                [],
                [],
                color=BOUND_COLOUR,
                linestyle="--",
                linewidth=0.9,
                label="clairvoyant bound on the expected step",
            )
        )
    fig.legend(
        handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False
    )
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _plan_colours(names: list[str]) -> dict[str, str]:
    out, spare = {}, list(_OTHER_COLOURS)
    for name in names:
        out[name] = PLAN_COLOURS.get(name) or (spare.pop(0) if spare else "#555555")
    return out
