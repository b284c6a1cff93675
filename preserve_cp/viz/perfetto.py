"""Chrome trace-event JSON (opens in Perfetto / chrome://tracing) for a schedule.

Contract: complete events (``"ph": "X"``, ``ts``/``dur`` in microseconds) with ``pid`` =
device, ``tid`` = stream, ``name`` = op, ``args.node`` = graph node id; thread-name metadata
events naming each stream; counter events (``"ph": "C"``, ``name`` ``"L2"``,
``args.bytes``) for the L2 bytes held by prefetches; top-level ``otherData`` with
``l2_capacity_bytes`` and ``makespan_s``. Time leaves seconds only here (units.s_to_us).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..graph import PREFETCH_STREAM
from ..plan import Schedule
from ..units import s_to_us
from ._io import write_text_atomic  # kept importable from here: it used to live here

STREAM_ORDER = ("compute", "comm", PREFETCH_STREAM)


def _jsonable(x: Any) -> Any:
    return x if isinstance(x, str | int | float) or x is None else str(x)


def trace_events(
    schedule: Schedule, pid: int = 0, process_name: str = "device 0"
) -> list[dict[str, Any]]:
    """The trace events of one schedule on one device (``pid``).

    >>> from preserve_cp.plan import Event, Schedule
    >>> s = Schedule((Event("a", "compute", 0.0, 2e-6, "gemm", 0),), (), (), (), 2e-6, 0.0, 1.0)
    >>> [e["ph"] for e in trace_events(s)]
    ['M', 'M', 'M', 'X', 'C']
    >>> [e for e in trace_events(s) if e["ph"] == "X"][0]["dur"]
    2.0
    """
    streams = sorted(
        {e.resource for e in schedule.events} | {PREFETCH_STREAM},
        key=lambda s: (STREAM_ORDER.index(s) if s in STREAM_ORDER else 99, s),
    )
    tid = {s: i + 1 for i, s in enumerate(streams)}
    out: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": process_name}},
    ]
    for s in streams:
        out.append(
            {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid[s], "args": {"name": s}}
        )
    for e in sorted(schedule.events, key=lambda e: (e.start_s, str(e.node))):
        out.append(
            {
                "ph": "X",
                "name": str(e.node),
                "cat": e.kind or "op",
                "pid": pid,
                "tid": tid[e.resource],
                "ts": s_to_us(e.start_s),
                "dur": s_to_us(e.end_s - e.start_s),
                "args": {
                    "node": _jsonable(e.node),
                    "kind": e.kind,
                    "layer": e.layer,
                    "l2_bytes": e.l2_bytes,
                },
            }
        )
    for c in schedule.chunks:
        out.append(
            {
                "ph": "X",
                "name": f"prefetch {c.tensor}",
                "cat": "prefetch",
                "pid": pid,
                "tid": tid[PREFETCH_STREAM],
                "ts": s_to_us(c.start_s),
                "dur": s_to_us(c.end_s - c.start_s),
                "args": {
                    "node": _jsonable(c.consumer),
                    "tensor": c.tensor,
                    "bytes": c.bytes,
                    "anchor": _jsonable(c.anchor),
                    "l2_release_us": s_to_us(c.release_s),
                },
            }
        )
    out.append({"ph": "C", "name": "L2", "pid": pid, "ts": 0.0, "args": {"bytes": 0.0}})
    for t, held in schedule.l2_profile():
        out.append({"ph": "C", "name": "L2", "pid": pid, "ts": s_to_us(t), "args": {"bytes": held}})
    return out


def write_trace(path: str | Path, schedule: Schedule) -> Path:
    """Write the trace of ``schedule`` to ``path`` atomically (no half-written file)."""
    doc = {
        "traceEvents": trace_events(schedule),
        "displayTimeUnit": "ns",
        "otherData": {
            "l2_capacity_bytes": schedule.l2_capacity_bytes,
            "makespan_s": schedule.makespan_s,
            "plan": schedule.plan_name,
        },
    }
    return write_text_atomic(path, json.dumps(doc))
