"""Pictures people can read: the default whole-step picture (overview of every layer and the
zoomed Gantt of the first ones), its titles, and a numerical check that no text is clipped or
overlaps another (text bounding boxes from the renderer), on an 80-layer dense model and on a
MoE model; the same check on the validation and footprint plots."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from matplotlib.text import Text

import preserve_cp as pc
from preserve_cp.describe import solve_inputs
from preserve_cp.estimate import estimate
from preserve_cp.viz.gantt import (
    gantt_figure,
    picture,
    result_gantt,
    result_title,
    step_figure,
)
from preserve_cp.viz.overview import EMB, HEAD, layer_slots, overview_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def drawn_texts(fig) -> list[tuple[str, np.ndarray]]:
    """(text, [x0, y0, x1, y1] in pixels) of every text the figure draws: titles, labels,
    legends, annotations, and the tick labels of ticks inside their axis' view."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    tick_texts: set[int] = set()
    shown: list[Text] = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            pad = (hi - lo) * 1e-9
            for ticks in (axis.get_major_ticks(), axis.get_minor_ticks()):
                for tick in ticks:
                    for label in (tick.label1, tick.label2):
                        tick_texts.add(id(label))
                        inside = lo - pad <= tick.get_loc() <= hi + pad
                        if inside and tick.get_visible() and label.get_visible():
                            shown.append(label)
    for t in fig.findobj(Text):
        if id(t) not in tick_texts and t.get_visible():
            shown.append(t)
    out = []
    for t in shown:
        if not t.get_text().strip() or t.get_alpha() == 0:
            continue
        # an ancestor artist (axes, legend, subfigure) may hide it
        box = t.get_window_extent(renderer)
        out.append((t.get_text(), np.array([box.x0, box.y0, box.x1, box.y1])))
    return out


def assert_readable(fig, min_texts: int = 10) -> list[str]:
    """Every text box inside the figure, no two intersecting (0.5 px tolerance)."""
    texts = drawn_texts(fig)
    assert len(texts) >= min_texts
    w, h = fig.bbox.width, fig.bbox.height
    for text, (x0, y0, x1, y1) in texts:
        assert x0 >= -0.5 and y0 >= -0.5 and x1 <= w + 0.5 and y1 <= h + 0.5, (
            f"{text!r} is clipped: box {(x0, y0, x1, y1)} in a {w} x {h} figure"
        )
    clashes = []
    for (ta, a), (tb, b) in itertools.combinations(texts, 2):
        if min(a[2], b[2]) - max(a[0], b[0]) > 0.5 and min(a[3], b[3]) - max(a[1], b[1]) > 0.5:
            clashes.append((ta, tb, a.round(1).tolist(), b.round(1).tolist()))
    assert not clashes, f"{len(clashes)} overlapping texts, first: {clashes[:5]}"
    return [t for t, _ in texts]


@pytest.fixture(scope="module")
def dense():
    """Llama-3-70B int8 decode on 8 Ascend 910B2: 80 layers (~1 s)."""
    wl = pc.Workload("decode", 4, 16384, 8, "int8", "int8", "int8")
    g = pc.build_graph("llama3-70b", wl)
    r = pc.solve(g, "ascend-910b2")
    return r.with_inputs(solve_inputs(g, "ascend-910b2", model="llama3-70b")), g


@pytest.fixture(scope="module")
def moe():
    """Mixtral-8x7B fp8 decode on 8 H100 (32 MoE layers), baselines only (fast path)."""
    wl = pc.Workload("decode", 8, 4096, 8, "fp8", "fp8", "fp8")
    g = pc.build_graph("mixtral-8x7b", wl)
    r = estimate(g, "h100-sxm")
    return r.with_inputs(solve_inputs(g, "h100-sxm", model="mixtral-8x7b")), g


def test_slots_tile_the_step(dense):
    r, g = dense
    for name, s in r.compared_schedules().items():
        slots = layer_slots(s, g)
        labels = [x.label for x in slots]
        assert labels == [EMB, *map(str, range(80)), HEAD], name
        for a, b in itertools.pairwise(slots):
            assert a.end_s == b.start_s
        assert slots[0].start_s == 0.0 and slots[-1].end_s == pytest.approx(s.makespan_s)
        for x in slots:  # the categories add up to the window: the bars add up to the step
            assert sum(x.seconds.values()) == pytest.approx(x.end_s - x.start_s, abs=1e-12)
        assert sum(x.l2_bytes for x in slots) == pytest.approx(sum(e.l2_bytes for e in s.events))
        cov = [x.coverage for x in slots if x.label not in (EMB, HEAD)]
        assert all(c is not None and 0.0 <= c <= 1.0 for c in cov)
        if name == "vanilla":
            assert max(cov) == 0.0
        else:
            assert max(cov) > 0.0


def test_dense_step_picture_is_readable(dense):
    r, g = dense
    title = result_title(r, g)
    assert title.splitlines() == [
        "llama3-70b on ascend-910b2: decode, batch 4, context 16384, tp 8, int8",
        f"optimised: {r.makespan_s * 1e3:.4g} ms, {r.speedup:.3f}× vs vanilla, "
        f"{r.greedy_makespan_s / r.makespan_s:.3f}× vs greedy, "
        f"{r.streaming_makespan_s / r.makespan_s:.3f}× vs streaming",
    ]
    fig = picture(r.compared_schedules(), title=title, graph=g)
    texts = assert_readable(fig, min_texts=80)
    assert title in texts
    assert any(t.startswith("Whole step, 80 layers") for t in texts)
    assert "Zoom on layers 0 to 2" in texts
    for name in ("vanilla", "greedy", "streaming", "optimised"):
        assert any(t.startswith(f"{name}: ") for t in texts), name
    assert {"emb", "head", "0", "79", "layer"} <= set(texts)


def test_moe_step_picture_is_readable(moe):
    r, g = moe
    title = result_title(r, g)
    assert title.startswith("mixtral-8x7b on h100-sxm: decode, batch 8, context 4096, tp 8, fp8\n")
    assert f"{r.speedup:.3f}× vs vanilla" in title
    texts = assert_readable(picture(r.compared_schedules(), title=title, graph=g))
    assert any("experts" in t for t in texts)  # the zoom names the expert GEMMs


@pytest.mark.slow
def test_single_plan_and_zoom_pictures_are_readable(dense):
    r, g = dense
    title = result_title(r, g)
    assert_readable(step_figure({"optimised": r.schedule}, title=title, graph=g))
    assert_readable(gantt_figure(r.compared_schedules(), layers=(10, 11), title=title))
    assert_readable(overview_figure(r.compared_schedules(), title=title))  # MB strips


@pytest.mark.slow
def test_default_picture_files(dense, tmp_path):
    """`solve --gantt` without --layers draws the overview and the zoom."""
    r, g = dense
    png = result_gantt(r, tmp_path / "step.png", compare=True, graph=g)
    assert png.read_bytes()[:8] == PNG_MAGIC
    svg = pc.gantt(r, tmp_path / "step.svg", compare=True).read_text()
    assert "Whole step, 80 layers" in svg and "Zoom on layers 0 to 2" in svg
    assert "MB read from L2" in svg  # no graph given: the strips show MB, not coverage
    assert len(svg) < 1_500_000


def test_validation_plot_is_readable_and_grouped_by_source():
    from preserve_cp.describe import source_label
    from preserve_cp.validate import as_dicts, compare, load_points
    from preserve_cp.viz.paper_plots import validation_figure

    rows = as_dicts(compare(load_points()))
    fig = validation_figure(rows)
    texts = assert_readable(fig)
    groups = {source_label(r["source"]) for r in rows}
    assert len(groups) >= 5
    for label in groups:
        assert any(t.startswith(f"{label} (") for t in texts), label
    ax = fig.axes[0]
    assert "signed error" in ax.get_xlabel()
    drawn = sorted(float(c.get_offsets()[0][0]) for c in ax.collections if len(c.get_offsets()))
    want = sorted(100 * r["error"] for r in rows if r["error"] is not None)
    assert drawn == pytest.approx(want)  # one marker per predicted point, at its signed error


def test_footprint_plot_is_readable():
    from preserve_cp.footprint import footprints
    from preserve_cp.viz.footprint_plot import footprint_figure

    rows = footprints("llama3-70b", [1, 2, 4, 8, 16, 32], dtype="int8", batch=8, context=16384)
    assert_readable(footprint_figure("llama3-70b", rows))
