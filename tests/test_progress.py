"""Sweep/reproduce progress: a live line on a terminal, occasional plain lines in a log."""

from __future__ import annotations

import io

from preserve_cp.sweep import text_progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_plain_line_per_tenth_not_a_flood():
    out = io.StringIO()
    show = text_progress(out, clock=lambda: 0.0)
    for done in range(3, 515):  # 514 points, 3 stored before (as `reproduce paper > log`)
        show(done, 514, 3)
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 10 <= len(lines) <= 12, lines
    assert all(line.startswith("progress: ") for line in lines)
    assert lines[-1].startswith("progress: 514/514 points (3 stored before")


def test_a_log_also_gets_a_line_every_ten_seconds():
    now = [0.0]
    out = io.StringIO()
    show = text_progress(out, every_s=10.0, clock=lambda: now[0])
    for done in range(0, 5):  # 5 of 1000 points: no new tenth, 25 s apart
        show(done, 1000, 0)
        now[0] += 25.0
    assert len(out.getvalue().splitlines()) == 5
    out2 = io.StringIO()
    show = text_progress(out2, every_s=10.0, clock=lambda: now[0])
    for done in range(0, 5):  # the same points within a second: one line
        show(done, 1000, 0)
        now[0] += 0.1
    assert len(out2.getvalue().splitlines()) == 1


def test_a_terminal_keeps_the_live_line():
    out = _Terminal()
    show = text_progress(out)
    for done in range(0, 11):
        show(done, 10, 0)
    text = out.getvalue()
    assert text.count("\r") == 11 and text.count("\n") == 1 and text.endswith("\n")
    assert f"[{'#' * 30}] 10/10 points (0 stored before" in text
