"""Chrome trace-event JSON (opens in Perfetto / chrome://tracing) for one or more schedules.

How to open the trace: go to https://ui.perfetto.dev and choose "Open trace file" (or drag
the JSON onto the page); chrome://tracing -> "Load" also works. Each plan is one process
("device 0" for a single schedule; the plan names, in the order given, when plans are
compared) with one track per stream: ``compute``, ``comm`` and ``prefetch`` (the HBM->L2
copies), plus an ``L2`` counter track showing the bytes held in L2 by prefetches. Every op
is a slice named after its graph node (``args.node``); a prefetch slice is named
``prefetch <tensor>``. Select a prefetch slice (or its consumer) to see its flow arrow
("prefetch->consumer") from the end of the copy to the op that reads the tensor.

Contract: complete events (``"ph": "X"``, ``ts``/``dur`` in microseconds) with ``pid`` =
device, ``tid`` = stream, ``name`` = op, ``args.node`` = graph node id; thread-name metadata
events naming each stream; counter events (``"ph": "C"``, ``name`` ``"L2"``,
``args.bytes``) for the L2 bytes held by prefetches; top-level ``otherData`` with
``l2_capacity_bytes`` (the device's L2 when the writer is told it, else the schedule's
budget), ``usable_l2_bytes`` (the budget the counter stays under) and ``makespan_s``. Time
leaves seconds only here (units.s_to_us).

Flows: each prefetch chunk gets a flow start (``"ph": "s"``) on the prefetch thread, bound
to the chunk's slice, and a flow finish (``"ph": "f"``, ``"bp": "e"``) at its consumer's
start on the consumer's thread, bound to the consumer's slice; both share an ``id`` unique
in the trace, ``"cat": "prefetch"`` and ``"name": "prefetch->consumer"``. A flow start
binds to the slice *enclosing* its timestamp, and the prefetch stream runs chunks back to
back, so the start sits at the chunk's last nanosecond (its end less ``min(1 ns, dur/2)``),
not exactly on its end, where the next chunk begins and viewers may bind it instead.

Comparing plans: :func:`write_trace` also takes a mapping ``{plan name: Schedule}``; each
plan becomes one process (pid 0, 1, ...; ``process_name`` = the plan name and a
``process_sort_index`` keeping the given order), thread ids are unique across the trace
(``pid * 1000 + k``), and ``otherData.plans`` holds each plan's makespan; the top-level
``makespan_s`` and ``l2_capacity_bytes`` are the last plan's (the optimised one, by
convention).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import input_error
from ..graph import PREFETCH_STREAM, stream_order
from ..outputs import write_output
from ..plan import Schedule, json_value
from ..units import s_to_us

FLOW_CAT = "prefetch"
FLOW_NAME = "prefetch->consumer"
#: thread ids of plan ``pid`` are ``pid * TID_STRIDE + 1, + 2, ...`` (unique in the trace)
TID_STRIDE = 1000
#: how far inside its chunk's slice a flow start sits, at most (microseconds: 1 ns)
_FLOW_START_INSET_US = 1e-3


def trace_events(
    schedule: Schedule,
    pid: int = 0,
    process_name: str = "device 0",
    *,
    sort_index: int | None = None,
    first_flow_id: int = 1,
) -> list[dict[str, Any]]:
    """The trace events of one schedule on one device (``pid``).

    Flow ids are ``first_flow_id, first_flow_id + 1, ...`` (one per chunk whose consumer is
    in the schedule); ``sort_index`` adds a ``process_sort_index`` metadata event.

    >>> from preserve_cp.plan import ChunkEvent, Event, Schedule
    >>> s = Schedule((Event("a", "compute", 0.0, 2e-6, "gemm", 0),), (), (), (), 2e-6, 0.0, 1.0)
    >>> [e["ph"] for e in trace_events(s)]
    ['M', 'M', 'M', 'X', 'C']
    >>> [e for e in trace_events(s) if e["ph"] == "X"][0]["dur"]
    2.0
    >>> c = ChunkEvent(0, "w", 8.0, "b", None, 0.0, 1e-6, 3e-6)
    >>> b = Event("b", "compute", 1e-6, 3e-6, "gemm", 0)
    >>> s2 = Schedule((b,), (c,), (), (), 3e-6, 16.0, 1.0)
    >>> [(e["ph"], e["ts"]) for e in trace_events(s2) if e["ph"] in "sf"]
    [('f', 1.0), ('s', 0.999)]
    """
    streams = stream_order({e.resource for e in schedule.events} | {PREFETCH_STREAM})
    tid = {s: pid * TID_STRIDE + i + 1 for i, s in enumerate(streams)}
    out: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": process_name}},
    ]
    if sort_index is not None:
        out.append(
            {
                "ph": "M",
                "name": "process_sort_index",
                "pid": pid,
                "tid": 0,
                "args": {"sort_index": sort_index},
            }
        )
    for s in streams:
        out.append(
            {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid[s], "args": {"name": s}}
        )

    # One flow per chunk whose consumer op is in the schedule (all of them, for a simulated one).
    op_of = {e.node: e for e in schedule.events}
    flow_id: dict[int, int] = {}  # chunk index -> flow id
    flows_into: dict[Any, list[int]] = {}  # consumer node -> chunk indices
    for k, c in enumerate(schedule.chunks):
        if c.consumer in op_of:
            flow_id[k] = first_flow_id + len(flow_id)
            flows_into.setdefault(c.consumer, []).append(k)

    # Each flow event directly follows the slice it binds to (viewers break timestamp ties by
    # file order: the consumer must already be open when its flow finish is read).
    for e in sorted(schedule.events, key=lambda e: (e.start_s, str(e.node))):
        start_us = s_to_us(e.start_s)
        out.append(
            {
                "ph": "X",
                "name": str(e.node),
                "cat": e.kind or "op",
                "pid": pid,
                "tid": tid[e.resource],
                "ts": start_us,
                "dur": s_to_us(e.end_s - e.start_s),
                "args": {
                    "node": json_value(e.node),
                    "kind": e.kind,
                    "layer": e.layer,
                    "l2_bytes": e.l2_bytes,
                },
            }
        )
        for k in flows_into.get(e.node, ()):
            out.append(
                {
                    "ph": "f",
                    "bp": "e",
                    "id": flow_id[k],
                    "cat": FLOW_CAT,
                    "name": FLOW_NAME,
                    "pid": pid,
                    "tid": tid[e.resource],
                    "ts": start_us,
                }
            )
    for k, c in sorted(enumerate(schedule.chunks), key=lambda kc: (kc[1].start_s, kc[0])):
        start_us, end_us = s_to_us(c.start_s), s_to_us(c.end_s)
        out.append(
            {
                "ph": "X",
                "name": f"prefetch {c.tensor}",
                "cat": "prefetch",
                "pid": pid,
                "tid": tid[PREFETCH_STREAM],
                "ts": start_us,
                "dur": end_us - start_us,
                "args": {
                    "node": json_value(c.consumer),
                    "tensor": c.tensor,
                    "bytes": c.bytes,
                    "anchor": json_value(c.anchor),
                    "l2_release_us": s_to_us(c.release_s),
                },
            }
        )
        if k in flow_id:
            inset = min(_FLOW_START_INSET_US, (end_us - start_us) / 2)
            out.append(
                {
                    "ph": "s",
                    "id": flow_id[k],
                    "cat": FLOW_CAT,
                    "name": FLOW_NAME,
                    "pid": pid,
                    "tid": tid[PREFETCH_STREAM],
                    "ts": max(start_us, end_us - inset),
                }
            )
    out.append({"ph": "C", "name": "L2", "pid": pid, "ts": 0.0, "args": {"bytes": 0.0}})
    for t, held in schedule.l2_profile():
        out.append({"ph": "C", "name": "L2", "pid": pid, "ts": s_to_us(t), "args": {"bytes": held}})
    return out


def trace_document(
    schedules: Schedule | Mapping[str, Schedule], *, device_l2_bytes: float | None = None
) -> dict[str, Any]:
    """The whole trace (``traceEvents`` and ``otherData``) of one schedule or of named plans.

    ``device_l2_bytes``: the device's whole L2 (``otherData.l2_capacity_bytes``); without it
    that key repeats the schedule's budget (``usable_l2_bytes``).

    >>> from preserve_cp.plan import Event, Schedule
    >>> s = Schedule((Event("a", "compute", 0.0, 2e-6, "gemm", 0),), (), (), (), 2e-6, 0.0, 1.0)
    >>> doc = trace_document({"vanilla": s, "optimised": s})
    >>> sorted({e["pid"] for e in doc["traceEvents"]}), doc["otherData"]["plans"]["optimised"]
    ([0, 1], {'makespan_s': 2e-06, 'prefetches': 0, 'peak_l2_bytes': 0.0})
    """
    if isinstance(schedules, Schedule):
        last = schedules
        events = trace_events(schedules)
        other: dict[str, Any] = {}
    else:
        if not isinstance(schedules, Mapping) or not schedules:
            raise input_error(
                "write_trace", "schedules", "a Schedule or a non-empty {name: Schedule}", schedules
            )
        events, other, next_flow = [], {"plans": {}}, 1
        for pid, (name, sched) in enumerate(schedules.items()):
            if not isinstance(sched, Schedule):
                raise input_error("write_trace", f"schedules[{name!r}]", "a Schedule", sched)
            ev = trace_events(sched, pid, str(name), sort_index=pid, first_flow_id=next_flow)
            next_flow += sum(1 for e in ev if e["ph"] == "s")
            events.extend(ev)
            other["plans"][str(name)] = {
                "makespan_s": sched.makespan_s,
                "prefetches": len(sched.chunks),
                "peak_l2_bytes": sched.peak_l2_bytes(),
            }
            last = sched
    return {
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "otherData": {
            "l2_capacity_bytes": (
                last.l2_capacity_bytes if device_l2_bytes is None else device_l2_bytes
            ),
            "usable_l2_bytes": last.l2_capacity_bytes,
            "makespan_s": last.makespan_s,
            "plan": last.plan_name,
            **other,
        },
    }


def write_trace(
    path: str | Path,
    schedule: Schedule | Mapping[str, Schedule],
    *,
    device_l2_bytes: float | None = None,
) -> Path:
    """Write the trace of ``schedule`` (or of ``{plan name: Schedule}``, compared) to ``path``.

    ``device_l2_bytes``: the device's whole L2, for ``otherData`` (:func:`trace_document`).

    ``-`` is standard output; a link is written through, a regular file replaced atomically
    (:mod:`preserve_cp.outputs`); an ``OSError`` becomes an ``InputError`` naming the path.
    """
    return write_output(path, json.dumps(trace_document(schedule, device_l2_bytes=device_l2_bytes)))
