"""Gantt pictures (viz.gantt): files, sizes, zoom, panels, errors, and Result.gantt."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import preserve_cp as pc
from preserve_cp.errors import InputError
from preserve_cp.units import MB, TB
from preserve_cp.viz.gantt import gantt_figure, gantt_svg, parse_layers, write_gantt

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def result():
    """Llama-3-70B decode on 4 Ascend 910B2 (80 layers, ~900 ops, ~1,100 chunks; ~1 s)."""
    g = pc.build_graph("llama3-70b", pc.Workload("decode", 4, 16384, 8, "int8", "int8", "int8"))
    return pc.solve(g, "ascend-910b2")


@pytest.fixture(scope="module")
def schedules(result):
    return {
        "vanilla": result.baselines["vanilla"],
        "greedy": result.baselines["greedy"],
        "optimised": result.schedule,
    }


@pytest.fixture(scope="module")
def full_svg(schedules):
    return gantt_svg(schedules, title="Llama-3-70B decode")


def _by_gid(fig, gid):
    for ax in fig.axes:
        for artist in [*ax.collections, *ax.lines, *ax.patches]:
            if artist.get_gid() == gid:
                return artist
    raise AssertionError(f"no artist with gid {gid!r}")


def _drawn_elements(svg: str) -> int:
    return sum(
        1 for el in ET.fromstring(svg).iter() if el.tag.rsplit("}", 1)[-1] in ("path", "rect")
    )


def _window(schedules, a, b):
    """Layer a's first op start to layer b's last op end, the union over the schedules."""
    w0 = min(e.start_s for s in schedules.values() for e in s.events if e.layer == a)
    w1 = max(e.end_s for s in schedules.values() for e in s.events if e.layer == b)
    return w0, w1


def test_full_compare_files(tmp_path, schedules, full_svg):
    svg = write_gantt(tmp_path / "cmp.svg", schedules, title="Llama-3-70B decode")
    png = write_gantt(tmp_path / "cmp.PNG", schedules)
    assert svg.read_text() == full_svg  # deterministic: no date, fixed hash salt
    assert png.read_bytes()[:8] == PNG_MAGIC
    root = ET.fromstring(svg.read_text())
    assert root.tag.endswith("svg")
    # without --layers a many-layer step is the overview and the zoom on layers 0 to 2
    assert "Whole step, 80 layers" in full_svg and "Zoom on layers 0 to 2" in full_svg
    assert svg.stat().st_size < 1 * MB
    assert "<text" in full_svg and "gemm" in full_svg  # svg.fonttype none: text stays text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp.PNG", "cmp.svg"]  # no temp left


def test_whole_step_in_detail_stays_available(schedules):
    """gantt_figure without layers (or --layers 0:79) still draws every op of the step."""
    big = gantt_svg(schedules, layers=(0, 79))
    assert "Whole step" not in big and _drawn_elements(big) > 1000
    assert len(big) < 2 * MB  # ~1.15 MB measured for 3 x 885 ops, 1,514 chunks


def test_full_figure_layout(schedules):
    fig = gantt_figure(schedules)
    # 3 blocks of lanes + L2 + HBM panels, one legend, one shared time axis in ms
    assert len(fig.axes) == 9 and len(fig.legends) == 1
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["compute", "comm", "prefetch"]
    assert fig.axes[-1].get_xlabel() == "time (ms)"
    longest = max(s.makespan_s for s in schedules.values())
    assert fig.axes[0].get_xlim() == pytest.approx((0.0, longest * 1e3))
    assert len(_by_gid(fig, "ops:vanilla").get_paths()) == len(schedules["vanilla"].events)


def test_zoom_draws_only_what_overlaps(schedules, full_svg):
    fig = gantt_figure(schedules, layers=(0, 2))
    w0, w1 = _window(schedules, 0, 2)
    assert fig.axes[0].get_xlim() == pytest.approx((w0 * 1e3, w1 * 1e3))
    for name, s in schedules.items():
        assert all(e.end_s > e.start_s for e in s.events)  # no zero-length ops to special-case
        overlapping = [e for e in s.events if e.start_s < w1 and e.end_s > w0]
        # every op of layers 0-2 of this schedule is inside; the faster plans show more layers
        assert {e.node for e in s.events if 0 <= e.layer <= 2} <= {e.node for e in overlapping}
        assert len(_by_gid(fig, f"ops:{name}").get_paths()) == len(overlapping)
    assert len(_by_gid(fig, "links:optimised").get_xdata()) > 0
    assert _drawn_elements(gantt_svg(schedules, layers=(0, 2))) < _drawn_elements(full_svg)


def test_l2_panel_is_exact_and_under_capacity(schedules):
    fig = gantt_figure(schedules)
    for name in ("greedy", "optimised"):
        s = schedules[name]
        held = np.asarray(_by_gid(fig, f"l2:{name}").get_ydata()) * MB
        assert held.max() == pytest.approx(s.peak_l2_bytes())  # drawn exactly, not binned
        assert held.max() <= s.l2_capacity_bytes


def test_hbm_panel_keeps_the_bytes_moved(schedules):
    """Binning averages over time, so the area under the total curve is the bytes moved."""
    fig = gantt_figure(schedules)
    s = schedules["optimised"]
    moved = sum((pf + main) * (t1 - t0) for t0, t1, pf, main in s.rate_segments)
    x, y = _by_gid(fig, "hbm:optimised").get_xy().T  # ms, TB/s
    area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))  # shoelace
    assert area * 1e-3 * TB == pytest.approx(moved, rel=1e-6)


@pytest.mark.parametrize("text, expected", [("0:2", (0, 2)), (" 7 : 7 ", (7, 7))])
def test_parse_layers(text, expected):
    assert parse_layers(text) == expected


@pytest.mark.parametrize("text", ["2:1", "a:b", "-1:2", "3", "", "1:2:3", "1.5:2"])
def test_parse_layers_errors(text):
    with pytest.raises(InputError) as err:
        parse_layers(text)
    assert str(err.value) == f"--layers: expected A:B with 0 <= A <= B, found '{text}'"


def test_write_errors(tmp_path, schedules):
    with pytest.raises(InputError, match=r"plan\.pdf: suffix: expected '\.svg' or '\.png'"):
        write_gantt(tmp_path / "plan.pdf", schedules)
    missing = tmp_path / "no" / "such" / "plan.png"
    with pytest.raises(InputError, match="no/such/plan.png: folder .*/no/such does not exist"):
        write_gantt(missing, schedules, layers=(0, 0))
    with pytest.raises(InputError, match=r"layers: expected .*\(0:79\), found '80:81'"):
        gantt_figure(schedules, layers=(80, 81))
    assert list(tmp_path.iterdir()) == []


def test_plain_dag_has_no_hardware_panels(tmp_path, ft06_graph):
    r = pc.solve(ft06_graph, time_limit_s=20)
    fig = gantt_figure({"optimised": r.schedule})
    # one lane axis, machines m0..m5, no prefetch lane, time in s (55 s makespan)
    assert len(fig.axes) == 1
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [f"m{i}" for i in range(6)]
    assert fig.axes[0].get_xlabel() == "time (s)"
    assert len(_by_gid(fig, "ops:optimised").get_paths()) == 36
    out = pc.gantt(r, tmp_path / "ft06.svg", compare=True)
    ET.fromstring(out.read_text())
    assert "Whole step" not in out.read_text()  # no layers: the plain Gantt is the picture
    with pytest.raises(InputError, match="layers"):
        gantt_figure({"optimised": r.schedule}, layers=(0, 0))


def test_result_gantt(tmp_path, result):
    out = pc.gantt(result, tmp_path / "r.png", layers=(0, 1), compare=True, title="zoom")
    assert out == tmp_path / "r.png" and out.read_bytes()[:8] == PNG_MAGIC
    single = pc.gantt(result, tmp_path / "r.svg")
    assert 'id="ops:optimised"' in single.read_text()


def test_no_pyplot():
    """The figure is a bare matplotlib Figure: pyplot (global figure state) never loads."""
    code = (
        "import sys\n"
        "from preserve_cp.plan import Event, Schedule\n"
        "from preserve_cp.viz.gantt import gantt_svg\n"
        "s = Schedule((Event('a', 'm1', 0.0, 1.0),), (), (), (), 1.0, 0.0, 1.0)\n"
        "gantt_svg({'p': s})\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
