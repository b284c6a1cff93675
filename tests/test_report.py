"""The HTML report: content, escaping, size, self-containment, and a real headless browser.

The browser tests drive Chromium over the DevTools protocol on a pipe (``--remote-debugging-
pipe``, standard library only). That is what makes the console check trustworthy: Chromium's
``--enable-logging=stderr`` prints every console message at INFO level whatever its level
and never prints failed resource loads, while the protocol reports ``console.error``
(Runtime.consoleAPICalled), uncaught exceptions (Runtime.exceptionThrown), failed loads and
CSP blocks (Log.entryAdded at level error, Network.loadingFailed) and every request made
(Network.requestWillBeSent). ``test_detector_catches_errors`` proves the detector fails on a
page with such errors. The browser tests are skipped only when no Chromium binary is found.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import json
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from html import escape as html_escape
from html import unescape as html_unescape
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pytest

import preserve_cp as pc
from preserve_cp.errors import InputError
from preserve_cp.plan import ChunkEvent, Event, Plan, Prefetch, Result, Schedule
from preserve_cp.viz.report import (
    BEFORE_FIRST,
    SCRIPT,
    csp,
    prefetch_windows,
    render_report,
    window_totals,
    write_report,
)

SMALL_SVG = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
    '"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n'
    '<svg xmlns="http://www.w3.org/2000/svg" width="400" height="120" viewBox="0 0 400 120">'
    '<rect x="10" y="10" width="180" height="30" fill="#4c72b0"/>'
    '<rect x="200" y="50" width="150" height="30" fill="#55a868"/>'
    '<path d="M 10.123456 100 \nL 390.000001 100 \n" stroke="#000"/></svg>'
)
EVIL = "<script>alert(1)</script>"
MB2 = 2_000_000


@pytest.fixture(scope="module")
def solved():
    wl = pc.Workload("decode", 4, 16384, 8, "int8", "int8", "int8")
    g = pc.build_graph("llama3-70b", wl)
    hw = pc.load_hardware("ascend-910b2")
    return pc.solve(g, hw), g, hw, wl


@pytest.fixture(scope="module")
def report_file(solved, tmp_path_factory) -> Path:
    r, g, hw, wl = solved
    return write_report(tmp_path_factory.mktemp("report") / "report.html", r, g, hw, wl)


def _tiny(tensor: str = "w", consumer: str = "mm", model: str = "tiny"):
    """A hand-made timed graph and result: allreduce, then a gemm fed by one chunk."""
    g = nx.DiGraph(model=model)
    g.add_node("ar", kind="allreduce", resource="comm", duration=1e-6)
    g.add_node(consumer, kind="gemm", resource="compute", duration=2e-6)
    g.add_edge("ar", consumer)
    ev = (
        Event("ar", "comm", 0.0, 1e-6, "allreduce", 0),
        Event(consumer, "compute", 1e-6, 3e-6, "gemm", 0, 4e6),
    )
    ch = (ChunkEvent(0, tensor, 4e6, consumer, "ar", 0.2e-6, 0.9e-6, 3e-6),)
    s = Schedule(ev, ch, (), (), 3e-6, 1e8, 1e12, "opt")
    van = Schedule(ev, (), (), (), 3.5e-6, 1e8, 1e12, "vanilla")
    plan = Plan("opt", (Prefetch(tensor, 4e6, consumer, "ar"),))
    r = Result(
        "optimal",
        3e-6,
        3e-6,
        0.0,
        0.01,
        True,
        plan,
        s,
        baseline_makespan_s=3.5e-6,
        greedy_makespan_s=3.2e-6,
        l2_capacity_bytes=1e8,
        method="test",
        baselines={"vanilla": van},
    )
    return r, g


def _attr_values(page: str) -> list[str]:
    return re.findall(r"""[\w:-]+\s*=\s*(?:"([^"]*)"|'([^']*)')""", page)


# --- data ------------------------------------------------------------------------------------


def test_prefetch_windows_rows(solved):
    r, g, hw, _ = solved
    rows = prefetch_windows(r, g, hw)
    assert len(rows) == len(r.schedule.chunks) > 200
    keys = {"tensor", "bytes", "window", "consumer", "start_s", "end_s", "time_saved_s"}
    assert keys <= set(rows[0])
    collectives = {str(e.node) for e in r.schedule.events if e.kind in ("allreduce", "allgather")}
    for row in rows:
        assert row["window"] == BEFORE_FIRST or row["window"] in collectives
        if row["window_start_s"] is not None:
            assert row["window_start_s"] <= row["start_s"] + 1e-15
        assert row["time_saved_s"] >= 0.0
    # the savings add up to each consumer's duration without minus with its L2 bytes
    costs = pc.costs.op_costs(g, hw)
    ev = {e.node: e for e in r.schedule.events}
    want = sum(
        costs[c].duration_s(0.0) - costs[c].duration_s(ev[c].l2_bytes)
        for c in {ch.consumer for ch in r.schedule.chunks}
    )
    assert sum(row["time_saved_s"] for row in rows) == pytest.approx(want, rel=1e-9)
    assert want > 0
    wins = window_totals(rows)
    assert sum(w["chunks"] for w in wins) == len(rows)
    assert sum(w["bytes"] for w in wins) == pytest.approx(sum(c.bytes for c in r.schedule.chunks))
    starts = [w["window_start_s"] for w in wins if w["window_start_s"] is not None]
    assert starts == sorted(starts)


def test_time_saved_split_by_bytes():
    r, g = _tiny()
    g.add_node("mm", kind="gemm", resource="compute")  # roofline op: costed on hardware
    g.nodes["mm"].pop("duration")
    g.nodes["mm"].update(flops=0.0, reads={"w": 8e6}, prefetchable=["w"])
    chunks = (
        ChunkEvent(0, "w", 3e6, "mm", "ar", 0.1e-6, 0.5e-6, 3e-6),
        ChunkEvent(1, "w", 1e6, "mm", "ar", 0.5e-6, 0.9e-6, 3e-6),
    )
    sched = Schedule(r.schedule.events, chunks, (), (), 3e-6, 1e8, 1e12)
    r = dataclasses.replace(r, schedule=sched)
    hw = pc.load_hardware("ascend-910b2")
    rows = prefetch_windows(r, g, hw)
    cost = pc.costs.op_costs(g, hw)["mm"]
    total = cost.duration_s(0.0) - cost.duration_s(4e6)
    assert total > 0
    assert [x["time_saved_s"] for x in rows] == pytest.approx([0.75 * total, 0.25 * total])
    assert {x["window"] for x in rows} == {"ar"}
    # no hardware and an op without duration: the saving is unknown, not made up
    assert prefetch_windows(r, g, None)[0]["time_saved_s"] is None


# --- page ------------------------------------------------------------------------------------


def test_render_report_small_svg():
    r, g = _tiny()
    page = render_report(r, g, pc.load_hardware("ascend-910b2"), None, SMALL_SVG, title="T")
    assert page.startswith("<!DOCTYPE html>")
    assert re.search(r'<div class="pic" id="gantt"><svg\b', page)
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page
    assert 'd="M10.12 100L390 100"' in page  # path data compacted
    for text in ("optimal", "0.0035", "1.167×", "verified", "usable L2", "peak L2 held"):
        assert text in page
    assert "ascend-910b2.yaml" in page and "HBM bandwidth" in page
    assert "(estimate)" in page  # uncertain fields are marked
    assert "not calibrated" in page and "(fitted)" not in page  # the 910B2 has no calibration
    # one script, the page's own, allowed by its hash and nothing else
    assert page.count("<script") == 1 and f"<script>{SCRIPT}</script>" in page
    assert "script-src 'sha256-" in csp() and f'content="{html_escape(csp())}"' in page


def test_calibration_status_fitted_values_and_source_links():
    r, g = _tiny()
    hw = pc.load_hardware("h100-sxm")
    cal = hw.spec.calibration
    page = render_report(r, g, hw, None, SMALL_SVG, title="T")
    assert f"{len(cal.fitted)} values fitted to {len(cal.points)} train points" in page
    assert '<span class="fitted">(fitted)</span>' in page  # e.g. matrix efficiency
    fitted = page.split('<table id="fitted">', 1)[1].split("</table>", 1)[0]
    assert fitted.count("<tr>") == len(cal.fitted) + 1
    for path in cal.fitted:
        assert f"<code>{path}</code>" in fitted
    for src in hw.spec.sources:
        if src.url.startswith("https://"):
            assert f'<a href="{html_escape(src.url)}" rel="noopener noreferrer">' in page
    prior = render_report(r, g, pc.load_hardware("h100-sxm", calibrated=False), None, SMALL_SVG)
    assert "was not applied" in prior and "(fitted)" not in prior
    assert '<table id="fitted">' not in prior


def test_render_report_rejects_non_svg():
    r, g = _tiny()
    with pytest.raises(InputError, match="gantt_svg_text"):
        render_report(r, g, None, None, "<p>no picture</p>")


def test_escaping_user_strings():
    r, g = _tiny(tensor=EVIL, consumer="mm<img src=x>", model='m"<b>odel')
    hw = pc.load_hardware("ascend-910b2").with_overrides(name="<i>dev</i>")
    page = render_report(r, g, hw, None, SMALL_SVG, title="<u>t</u>")
    assert EVIL not in page and page.lower().count("<script") == 1  # only the page's own
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x>" not in page and "mm&lt;img src=x&gt;" in page
    assert "<b>odel" not in page and "<i>dev</i>" not in page and "<u>t</u>" not in page
    assert "m&quot;&lt;b&gt;odel" in page


def test_report_file_size_tables_and_self_contained(solved, report_file):
    r, _, _, _ = solved
    size = report_file.stat().st_size
    assert size < MB2, f"80-layer report is {size} bytes"
    page = report_file.read_text(encoding="utf-8")
    chunk_table = page.split('<table id="chunks" class="sortable">', 1)[1].split("</table>", 1)[0]
    assert chunk_table.count("<tr>") == len(r.schedule.chunks) + 1  # every chunk, and the head
    assert '<input type="search" id="chunk-filter"' in page
    assert '<table id="windows" class="sortable">' in page
    # every baseline, and the pictures: the overview of every layer and the zoomed Gantt
    plans = page.split('<table id="plans">', 1)[1].split("</table>", 1)[0]
    names = re.findall(r"<tr><td>(\w+)</td>", plans)
    assert names == ["vanilla", "greedy", "streaming", "fused", "optimised"]
    assert re.search(r'<div class="pic" id="overview"><svg\b', page)
    assert re.search(r'<div class="pic" id="gantt"><svg\b', page)
    assert "Whole step" not in page  # the report's pictures are separate, not the step view
    for title in ("decode, batch 4, context 16384, tp 8, int8", "× vs vanilla"):
        assert title in page  # the pictures' titles: the workload and the speedup
    # nothing is loaded from elsewhere: no external URL (or protocol-relative one) in any
    # attribute but the href of a link (followed only when clicked), no stylesheet, no src
    links = re.findall(r'<a href="([^"]*)" rel="noopener noreferrer">', page)
    assert links and all(u.startswith("https://") for u in links)
    for a, b in _attr_values(page):
        value = (a or b).strip().lower()
        if value.startswith(("http:", "https:", "//", "ftp:")):
            assert html_unescape(a or b) in map(html_unescape, links), value
    assert not re.search(r"<(?:img|script|iframe|link|source|object|embed)\b[^>]*\bsrc=", page)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page)
    assert '<link rel="stylesheet"' not in page
    assert "Content-Security-Policy" in page and "default-src &#x27;none&#x27;" in page


def test_write_report_errors_name_the_path(solved, tmp_path):
    r, g, hw, wl = solved
    bad = tmp_path / "no-such-folder" / "r.html"
    with pytest.raises(InputError, match="no-such-folder"):
        write_report(bad, r, g, hw, wl, layers=(0, 1))
    assert not bad.parent.exists()


def test_write_report_layers_window(solved, tmp_path):
    r, g, hw, wl = solved
    out = write_report(tmp_path / "w.html", r, g, hw, wl, layers=(0, 1), title="two layers")
    page = out.read_text(encoding="utf-8")
    assert "<title>two layers</title>" in page and '<div class="pic" id="gantt"><svg' in page
    assert [p.name for p in tmp_path.iterdir()] == ["w.html"]  # no temporary left behind


# --- browser ---------------------------------------------------------------------------------


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


needs_chromium = pytest.mark.skipif(_chromium() is None, reason="no chromium binary found")


class _Browser:
    """Headless Chromium driven over the DevTools protocol on fds 3 (in) and 4 (out)."""

    def __init__(self, exe: str, width: int = 1400, height: int = 1000):
        self.profile = tempfile.mkdtemp(prefix="preserve-cp-chromium-")
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()

        def wire() -> None:  # in the child: the protocol pipes become fds 3 and 4
            a = fcntl.fcntl(to_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--remote-debugging-pipe",
            f"--window-size={width},{height}",
            f"--user-data-dir={self.profile}",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "about:blank",
        ]
        self.log = open(os.path.join(self.profile, "stderr.log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [exe, *args],
            preexec_fn=wire,
            close_fds=False,  # Python's own fds are close-on-exec anyway
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        os.close(to_r)
        os.close(from_w)
        self.w = os.fdopen(to_w, "wb", buffering=0)
        self.r = os.fdopen(from_r, "rb", buffering=0)
        self.q: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = b""
        while data := self.r.read(1 << 16):
            buf += data
            *msgs, buf = buf.split(b"\0")
            for m in msgs:
                self.q.put(json.loads(m))
        self.q.put(None)

    def _next(self, deadline: float, what: str) -> dict[str, Any]:
        try:
            m = self.q.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"chromium: no answer to {what} in time") from None
        if m is None:
            raise AssertionError(f"chromium exited while waiting for {what}")
        return m

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.w.write(json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + 60
        while True:
            m = self._next(deadline, method)
            if m.get("id") == self.next_id:
                assert "error" not in m, f"{method}: {m['error']}"
                return m.get("result", {})
            self.events.append(m)

    def wait_for(self, method: str, timeout: float = 60) -> None:
        if any(m.get("method") == method for m in self.events):
            return
        deadline = time.monotonic() + timeout
        while True:
            m = self._next(deadline, method)
            self.events.append(m)
            if m.get("method") == method:
                return

    def settle(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                m = self.q.get(timeout=left)
            except queue.Empty:
                return
            if m is None:
                return
            self.events.append(m)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.w.write(json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.w.close()
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


def _open_page(
    path: Path, screenshot: Path | None = None, actions: str | None = None
) -> dict[str, Any]:
    """Load ``path`` in headless Chromium; return the problems, requests, Gantt facts, PNG,
    and (``actions``: a JavaScript expression giving JSON text) what the actions returned."""
    exe = _chromium()
    assert exe is not None
    b = _Browser(exe)
    try:
        target = b.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        sid = b.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            b.send(f"{domain}.enable", session=sid)
        url = path.resolve().as_uri()
        b.send("Page.navigate", {"url": url}, session=sid)
        b.wait_for("Page.loadEventFired")
        b.settle(0.5)  # late console messages and failed loads
        probe = """JSON.stringify((() => {
            const pic = (id) => {
                const g = document.getElementById(id);
                const svg = g && g.querySelector(':scope > svg');
                const box = svg ? svg.getBoundingClientRect() : null;
                return {svgs: svg ? 1 : 0,
                        shapes: svg ? svg.querySelectorAll('path, rect, use').length : 0,
                        box: box && {x: box.x, y: box.y, w: box.width, h: box.height}};
            };
            return {...pic('gantt'), overview: pic('overview'), title: document.title};
        })())"""
        res = b.send("Runtime.evaluate", {"expression": probe, "returnByValue": True}, sid)
        facts = json.loads(res["result"]["value"])
        if actions is not None:
            res = b.send("Runtime.evaluate", {"expression": actions, "returnByValue": True}, sid)
            assert "exceptionDetails" not in res, res
            facts["actions"] = json.loads(res["result"]["value"])
        if screenshot is not None:
            shot = b.send("Page.captureScreenshot", {"format": "png"}, session=sid)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        b.settle(0.2)
    finally:
        b.close()
    facts["problems"] = _problems(b.events)
    facts["requests"] = [
        m["params"]["request"]["url"]
        for m in b.events
        if m.get("method") == "Network.requestWillBeSent"
    ]
    facts["url"] = url
    return facts


def _problems(events: list[dict[str, Any]]) -> list[str]:
    """Every console error, uncaught exception, error log entry and failed load."""
    out = []
    for m in events:
        p = m.get("params", {})
        method = m.get("method")
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
            out.append(f"console.{p['type']}: {args}")
        elif method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            out.append(f"uncaught: {d.get('exception', {}).get('description', d.get('text'))}")
        elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
            e = p["entry"]
            out.append(f"log ({e['source']}): {e['text']} {e.get('url', '')}")
        elif method == "Network.loadingFailed":
            out.append(f"load failed: {p.get('errorText') or p.get('blockedReason')}")
    return out


@needs_chromium
def test_detector_catches_errors(tmp_path):
    """The console check can fail: a page with errors is flagged, one of each kind."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
        "<title>bad</title></head><body><p>bad page</p><img src='missing.png'>"
        "<script>console.error('deliberate error'); console.log('just a log line');</script>"
        "<script>undefinedFunction();</script></body></html>",
        encoding="utf-8",
    )
    facts = _open_page(bad)
    problems = "\n".join(facts["problems"])
    assert "console.error: deliberate error" in problems
    assert "uncaught: ReferenceError: undefinedFunction is not defined" in problems
    assert "Failed to load resource" in problems and "missing.png" in problems
    assert "just a log line" not in problems  # console.log is not an error
    assert any(u.endswith("missing.png") for u in facts["requests"])
    assert facts["svgs"] == 0  # and the Gantt check fails on a page without one


#: search the chunk table, then sort it by MB (twice: up, down) and by tensor, in the page
ACTIONS = """JSON.stringify((() => {
    const rows = () => Array.from(document.querySelectorAll('#chunks tbody tr'));
    const total = rows().length;
    const box = document.getElementById('chunk-filter');
    box.value = 'L1.w_qkv';
    box.dispatchEvent(new Event('input'));
    const shown = rows().filter(r => !r.hidden).map(r => r.cells[1].textContent);
    const count = document.getElementById('chunk-count').textContent;
    box.value = '';
    box.dispatchEvent(new Event('input'));
    const heads = document.querySelectorAll('#chunks thead th');
    heads[2].click();
    const up = rows().map(r => parseFloat(r.cells[2].textContent));
    heads[2].click();
    const down = rows().map(r => parseFloat(r.cells[2].textContent));
    heads[1].click();
    return {total, shown, count, up, down,
            names: rows().map(r => r.cells[1].textContent),
            after: rows().filter(r => !r.hidden).length,
            sort: heads[1].getAttribute('aria-sort')};
})())"""


@needs_chromium
def test_report_in_browser(solved, report_file, tmp_path):
    """The 80-layer report loads with no console error, fetches nothing, shows the overview
    and the Gantt; the chunk table's search and sort work."""
    r = solved[0]
    png = tmp_path / "report.png"
    facts = _open_page(report_file, screenshot=png, actions=ACTIONS)
    assert facts["problems"] == []
    assert facts["requests"] == [facts["url"]]  # the page itself and nothing else
    assert facts["title"].startswith("Prefetch plan: llama3-70b")
    assert facts["svgs"] == 1 and facts["shapes"] > 200
    over = facts["overview"]
    assert over["svgs"] == 1 and over["shapes"] > 400  # 5 plans x 82 bars at least
    assert over["box"]["w"] > 600 and over["box"]["h"] > 300, over
    act = facts["actions"]
    n = len(r.schedule.chunks)
    want = sum(c.tensor == "L1.w_qkv" for c in r.schedule.chunks)
    assert act["total"] == n and act["after"] == n
    assert act["shown"] == ["L1.w_qkv"] * want and want > 0
    assert act["count"] == f"{want} of {n} chunks"
    assert act["up"] == sorted(act["up"]) and act["down"] == sorted(act["down"], reverse=True)
    assert act["names"] == sorted(act["names"], key=str.lower) and act["sort"] == "ascending"
    box = facts["box"]
    assert box["w"] > 600 and box["h"] > 300, box
    assert box["y"] > over["box"]["y"] + over["box"]["h"]  # the zoom under the overview
    # the screenshot is not blank and the overview is on it, in colour
    assert png.stat().st_size > 20_000
    from matplotlib.image import imread

    img = imread(str(png))[..., :3]
    box = over["box"]
    top, left = max(0, int(box["y"])), max(0, int(box["x"]))
    assert top < img.shape[0] - 200, "the overview starts below the first screen"
    region = img[top : top + int(box["h"]), left : left + int(box["w"])]
    colours = np.unique((region * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 20
    assert region.std() > 0.05
