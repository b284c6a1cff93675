"""The communication of a step, by kind: how many collectives of each kind (allreduce,
all-gather, MoE all-to-all dispatch and combine, pipeline receive...), their total time, and
the MB the prefetch stream moved in the windows each kind opens (a window runs from a
collective's start to the next collective's start, as in :func:`viz.report.bytes_moved_per_window`).
"""

from __future__ import annotations

from typing import Any

from .graph import COLLECTIVE_KINDS
from .plan import Schedule


def collective_label(attrs: dict[str, Any]) -> str:
    """``allreduce``, ``all_to_all dispatch``, ``all_to_all combine``, ``p2p``...

    >>> collective_label({"kind": "all_to_all", "phase": "dispatch"})
    'all_to_all dispatch'
    >>> collective_label({"kind": "allreduce"})
    'allreduce'
    """
    phase = attrs.get("phase")
    return f"{attrs['kind']} {phase}" if phase else str(attrs["kind"])


def collectives_by_kind(
    schedule: Schedule, graph: Any, windows: list[tuple[str, float]] | None = None
) -> list[dict[str, Any]]:
    """One row per kind of collective in ``schedule``: ``kind``, ``count``, ``total_s`` (the sum
    of their durations), ``group`` sizes, and ``prefetched_mb`` moved in their windows
    (``windows``: :func:`viz.report.bytes_moved_per_window`'s answer, when the caller has it).

    >>> from preserve_cp.plan import Event, Schedule
    >>> import networkx as nx
    >>> g = nx.DiGraph()
    >>> g.add_node("ar", kind="allreduce"); g.add_node("d", kind="all_to_all", phase="dispatch")
    >>> ev = (Event("ar", "comm", 1.0, 2.0, "allreduce"),
    ...       Event("d", "comm", 3.0, 5.0, "all_to_all"))
    >>> s = Schedule(ev, (), (), ((0.0, 1.0, 2e6, 0.0), (1.0, 4.0, 1e6, 0.0)), 5.0, 10.0, 4.0)
    >>> rows = collectives_by_kind(s, g)
    >>> [(r["kind"], r["count"], r["total_s"], r["prefetched_mb"]) for r in rows]
    [('allreduce', 1, 1.0, 2.0), ('all_to_all dispatch', 1, 2.0, 1.0)]
    """
    from .viz.report import bytes_moved_per_window

    moved = dict(bytes_moved_per_window(schedule, graph) if windows is None else windows)
    rows: dict[str, dict[str, Any]] = {}
    for e in schedule.events:
        a = graph.nodes[e.node]
        if a.get("kind") not in COLLECTIVE_KINDS:
            continue
        label = collective_label(a)
        row = rows.setdefault(
            label, {"kind": label, "count": 0, "total_s": 0.0, "groups": set(), "bytes": 0.0}
        )
        row["count"] += 1
        row["total_s"] += e.end_s - e.start_s
        row["groups"].add(int(a.get("group", graph.graph.get("tp", 1))))
        row["bytes"] += moved.get(str(e.node), 0.0)
    return [
        {
            "kind": r["kind"],
            "count": r["count"],
            "total_s": r["total_s"],
            "group": sorted(r["groups"]),
            "prefetched_mb": r["bytes"] / 1e6,
        }
        for r in rows.values()
    ]
