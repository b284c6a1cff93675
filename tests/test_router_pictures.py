"""Pictures of router-aware prefetch (issue 13): speculative chunks split into read and wasted
bytes in the Gantt, the plans' step distributions, the report section, the CLI's
``.router`` picture."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from test_pictures import assert_readable

import preserve_cp as pc
import preserve_cp.router as router_mod
from preserve_cp.cli import main
from preserve_cp.describe import solve_inputs
from preserve_cp.estimate import estimate
from preserve_cp.hardware import load_hardware
from preserve_cp.machine import machine_for
from preserve_cp.plan import ChunkEvent, Event, Schedule
from preserve_cp.router import evaluate_one, sample_scenarios, scenario_set, solve_router
from preserve_cp.viz.gantt import (
    AFTER_ROUTER,
    ROUTER_MARKS,
    SPEC_READ,
    SPEC_WASTED,
    gantt_figure,
    router_chunk_parts,
)
from preserve_cp.viz.report import render_report, write_report
from preserve_cp.viz.router_plot import distribution_figure, router_gantt_figure, router_zoom

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HW = "h200-sxm"


def _graph():
    return pc.build_graph("mixtral-8x7b", pc.Workload("decode", 4, 4096, 8, "fp8"))


@pytest.fixture(scope="module")
def rr():
    """Mixtral-8x7B fp8 decode on 8 H200, 4 routing scenarios, a predictor of accuracy 0.6
    (so speculative chunks waste bytes); ~3 s."""
    return solve_router(_graph(), HW, predictor_accuracy=0.6, scenarios=4, target_ci=1.0)


def _by_gid(fig, gid):
    for ax in fig.axes:
        for artist in ax.collections:
            if artist.get_gid() == gid:
                return artist
    return None


def _spans_ms(coll) -> list[tuple[float, float]]:
    """(x0, x1) of each rectangle of a PolyCollection (ms)."""
    out = []
    for p in coll.get_paths():
        xs = p.vertices[:, 0]
        out.append((float(xs.min()), float(xs.max())))
    return sorted(out)


def _moved(s: Schedule, a: float, b: float) -> float:
    """Bytes the prefetch stream moved in [a, b] (its rates)."""
    return sum(pf * max(0.0, min(t1, b) - max(t0, a)) for t0, t1, pf, _ in s.rate_segments)


def _legend(fig) -> list[str]:
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def test_speculative_chunks_are_split_into_read_and_wasted_bytes(rr):
    s, h = rr.schedule, rr.shown_graph
    spec = [c for c in s.chunks if c.tensor.endswith(":spec")]
    assert spec
    hit = {c.tensor: h.nodes[c.consumer]["reads"][c.tensor] for c in spec}
    wasted = sum(c.bytes - hit[c.tensor] for c in spec)
    assert wasted > 0 and sum(hit.values()) > 0  # accuracy 0.6: some of both
    fig = gantt_figure({"p": s}, graph=h)  # the whole step: every chunk drawn, none merged
    read_c, waste_c = _by_gid(fig, "spec-read:p"), _by_gid(fig, "spec-wasted:p")
    assert read_c is not None and waste_c is not None
    read_ms, waste_ms = _spans_ms(read_c), _spans_ms(waste_c)
    # what is drawn is router_chunk_parts' split (ms)
    _, parts = router_chunk_parts(s, s.chunks, h)
    assert read_ms == pytest.approx(sorted((a * 1e3, b * 1e3) for a, b in parts[SPEC_READ]))
    assert waste_ms == pytest.approx(sorted((a * 1e3, b * 1e3) for a, b in parts[SPEC_WASTED]))
    # per chunk: the read part from its start, the wasted part to its end, meeting in between
    for c in spec:
        mine_r = [p for p in parts[SPEC_READ] if c.start_s <= p[0] and p[1] <= c.end_s]
        mine_w = [p for p in parts[SPEC_WASTED] if c.start_s <= p[0] and p[1] <= c.end_s]
        span = sum(b - a for a, b in mine_r + mine_w)
        assert span == pytest.approx(c.end_s - c.start_s, rel=1e-9, abs=1e-15)
        if mine_r and mine_w:
            assert mine_r[0][0] == c.start_s and mine_w[0][1] == c.end_s
            assert mine_r[0][1] == pytest.approx(mine_w[0][0], abs=1e-15)
        # each part moved exactly its bytes (the prefetch stream's rate over the part)
        read_bytes = sum(_moved(s, a, b) for a, b in mine_r)
        assert read_bytes == pytest.approx(hit[c.tensor], rel=1e-6, abs=1.0)
    assert sum(_moved(s, a, b) for a, b in parts[SPEC_WASTED]) == pytest.approx(wasted, rel=1e-6)
    # the other chunks stay plain green; the legend names the parts drawn
    plain = _by_gid(fig, "chunks:p")
    assert len(plain.get_paths()) == len(s.chunks) - len(spec)
    labels = _legend(fig)
    assert SPEC_READ in labels and SPEC_WASTED in labels and "prefetch chunk" in labels
    assert (AFTER_ROUTER in labels) == any(c.tensor.endswith(":rest") for c in s.chunks)
    # without the scenario graph the read bytes are not known: plain chunks, no marks
    fig = gantt_figure({"p": s})
    assert len(_by_gid(fig, "chunks:p").get_paths()) == len(s.chunks)
    assert _by_gid(fig, "spec-read:p") is None and not set(_legend(fig)) & set(ROUTER_MARKS)


def test_post_router_chunks_are_marked(rr):
    g = _graph()
    hw = load_hardware(HW)
    ss = scenario_set(g, hw, machine_for(hw), sample_scenarios(g, 1, accuracy=0.6))
    h, s = evaluate_one(ss, rr.plans["after router"], 0)
    rest = [c for c in s.chunks if c.tensor.endswith(":rest")]
    assert rest and not any(c.tensor.endswith(":spec") for c in s.chunks)
    fig = gantt_figure({"after router": s}, graph=h)
    drawn = _by_gid(fig, "after-router:after router")
    assert len(drawn.get_paths()) == len(rest)
    assert _spans_ms(drawn) == pytest.approx(sorted((c.start_s * 1e3, c.end_s * 1e3) for c in rest))
    labels = _legend(fig)
    assert AFTER_ROUTER in labels and SPEC_READ not in labels and SPEC_WASTED not in labels


def test_plain_plans_draw_no_router_marks():
    """A dense plan's chunks (tensors without :spec / :rest) are drawn as before."""
    ev = (
        Event("ar", "comm", 0.0, 1e-6, "allreduce", 0),
        Event("mm", "compute", 1e-6, 3e-6, "gemm", 0),
    )
    ch = (ChunkEvent(0, "w", 4e6, "mm", "ar", 0.2e-6, 0.9e-6, 3e-6),)
    s = Schedule(ev, ch, (), ((0.2e-6, 0.9e-6, 4e6 / 0.7e-6, 0.0),), 3e-6, 1e8, 1e12)
    g = nx.DiGraph()
    g.add_node("mm", reads={"w": 4e6})
    fig = gantt_figure({"p": s}, graph=g)
    assert len(_by_gid(fig, "chunks:p").get_paths()) == 1
    assert not [
        c
        for ax in fig.axes
        for c in ax.collections
        if (c.get_gid() or "").startswith(("spec", "after"))
    ]
    assert not set(_legend(fig)) & set(ROUTER_MARKS)


def test_router_picture_is_readable_and_zooms_on_waste(rr):
    zoom = router_zoom(rr.schedule, rr.shown_graph)
    assert zoom is not None and zoom[1] - zoom[0] == 2
    # the zoom starts at the first layer whose speculative chunk wasted bytes
    h = rr.shown_graph
    waste_layers = [
        h.nodes[c.consumer]["layer"]
        for c in rr.schedule.chunks
        if c.tensor.endswith(":spec") and h.nodes[c.consumer]["reads"][c.tensor] < c.bytes
    ]
    assert zoom[0] == min(waste_layers)
    heading = "mixtral-8x7b on h200-sxm: decode, batch 4, context 4096, tp 8, fp8"
    fig = router_gantt_figure(rr, heading=heading)
    texts = assert_readable(fig)
    title = next(t for t in texts if t.startswith(heading))
    assert f"routing scenario {rr.shown_scenario} of {rr.scenarios}" in title
    assert "predictor accuracy 0.6" in title
    assert f"expected step {rr.best.expected_s * 1e3:.4g} ms" in title
    assert "MB wasted" in title
    assert SPEC_WASTED in texts and SPEC_READ in texts


def test_distribution_figure(rr):
    d = rr.to_dict()
    fig = distribution_figure(d)
    assert_readable(fig)
    lines = {ln.get_gid(): ln for ln in fig.axes[0].lines if ln.get_gid()}
    for name, p in d["plans"].items():
        ln = lines[f"ecdf:{name.replace(' ', '-')}"]
        xs, ys = np.asarray(ln.get_xdata()), np.asarray(ln.get_ydata())
        assert xs[1:] == pytest.approx(sorted(x * 1e3 for x in p["makespans_s"]))
        assert ys[0] == 0.0 and ys[-1] == 1.0 and all(np.diff(ys) > 0)
    assert lines["bound"].get_xdata()[0] == pytest.approx(d["clairvoyant_bound_s"] * 1e3)
    names = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    assert names == list(d["plans"])


def _attr_urls(page: str) -> list[str]:
    vals = re.findall(r"""[\w:-]+\s*=\s*(?:"([^"]*)"|'([^']*)')""", page)
    return [(a or b) for a, b in vals if (a or b).strip().lower().startswith(("http", "//"))]


def test_report_router_section(rr, tmp_path):
    g = _graph()
    r = estimate(g, HW).with_inputs(solve_inputs(g, HW, model="mixtral-8x7b"))
    wl = pc.Workload("decode", 4, 4096, 8, "fp8")
    hw = load_hardware(HW)
    out = write_report(
        tmp_path / "r.html", r.with_router(rr.to_dict()), g, hw, wl, router_result=rr
    )
    page = out.read_text(encoding="utf-8")
    assert "<h2>Router-aware prefetch (MoE)</h2>" in page
    table = page.split('<table id="router-plans">', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td>([^<]+)</td>", table)
    assert rows == [
        "vanilla", "no expert prefetch", "after router", "predicted greedy", "optimised (chosen)"
    ]  # fmt: skip
    best = rr.best
    assert f"{best.expected_s * 1e3:.4f}" in table and f"{best.percentile_s(95) * 1e3:.4f}" in table
    assert f"{rr.vanilla_s / best.expected_s:.3f}×" in table
    assert f"{best.wasted_bytes / 1e6:.2f}" in table and f"{best.hit_rate:.3f}" in table
    assert "clairvoyant bound" in page and f"{rr.bound_s * 1e3:.4f} ms" in page
    # the distribution and the chosen plan's Gantt, inline SVG, with hit and wasted marked
    dist = re.search(
        r'<div class="pic" id="router-distribution">(<svg\b.*?</svg>)</div>', page, re.S
    )
    gantt = re.search(r'<div class="pic" id="router-gantt">(<svg\b.*?</svg>)</div>', page, re.S)
    assert dist and gantt
    assert 'id="ecdf:optimised"' in dist.group(1)
    assert 'id="spec-wasted:' in gantt.group(1) and 'id="spec-read:' in gantt.group(1)
    assert "speculative: wasted" in gantt.group(1)
    # section order: after the schedules, before the prefetch windows
    assert page.index('id="gantt"') < page.index("Router-aware") < page.index("Prefetch windows")
    # self-contained: no external URL but the hardware file's source links
    links = re.findall(r'<a href="([^"]*)" rel="noopener noreferrer">', page)
    assert set(_attr_urls(page)) <= set(links)
    assert not re.search(r"<(?:img|script|iframe|link|source|object|embed)\b[^>]*\bsrc=", page)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page)
    # without the RouterResult: the table and the distribution, no Gantt
    page = write_report(tmp_path / "d.html", r.with_router(rr.to_dict()), g, hw, wl).read_text()
    assert 'id="router-distribution"' in page and 'id="router-gantt"' not in page
    # without a router analysis: no section
    svg = '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"></svg>'
    assert "Router-aware" not in render_report(r, g, hw, wl, svg)


SOLVE = [
    "solve", "--model", "mixtral-8x7b", "--hardware", HW, "--batch", "4", "--context", "4096",
    "--tp", "8", "--dtype", "fp8", "--scenarios", "4", "--time-limit", "5",
]  # fmt: skip


def test_cli_writes_the_router_picture(tmp_path, monkeypatch, capsys):
    # 4 scenarios, not more (the CI target would take it to 24: slower, not different)
    monkeypatch.setattr(
        router_mod, "solve_router", functools.partial(router_mod.solve_router, target_ci=1.0)
    )
    g, rep = tmp_path / "g.png", tmp_path / "r.html"
    assert main([*SOLVE, "--routing", "uniform", "--gantt", str(g), "--report", str(rep)]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png", "g.router.png", "r.html"]
    assert (tmp_path / "g.router.png").read_bytes()[:8] == PNG_MAGIC
    page = rep.read_text(encoding="utf-8")
    assert 'id="router-distribution"' in page and 'id="router-gantt"' in page
    assert "routing scenario 0 of 4 (uniform, seed 0), predictor accuracy 0.9" in page
    # without router-aware prefetch: no second picture
    plain = tmp_path / "plain"
    plain.mkdir()
    assert main([*SOLVE, "--plans", "vanilla", "--gantt", str(plain / "g.svg")]) == 0
    assert [p.name for p in plain.iterdir()] == ["g.svg"]


def test_cli_router_picture_path_errors(tmp_path, capsys):
    missing = tmp_path / "no" / "g.png"
    assert main([*SOLVE, "--routing", "uniform", "--gantt", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--gantt" in err and "does not exist (create it first)" in err
    # the .router file's own path is checked too, before the solve
    (tmp_path / "g.router.png").mkdir()
    assert main([*SOLVE, "--predictor-accuracy", "0.8", "--gantt", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"preserve-cp: error: --gantt {tmp_path / 'g.router.png'}: is a folder; expected a file "
        "name\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.router.png"]  # nothing written


def test_router_path():
    from preserve_cp.cli import _router_path

    assert _router_path("out/g.png") == str(Path("out/g.router.png"))
    assert _router_path("g.v2.svg") == "g.v2.router.svg"
