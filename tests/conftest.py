"""Shared fixtures: unit-rate hardware so expected times can be derived by hand."""

from __future__ import annotations

import pytest

from preserve_cp.costs import OpCost


def fixed(node: str, resource: str, seconds: float, hbm_bytes: float = 0.0) -> OpCost:
    """An op of fixed duration (like a collective) on a unit-rate machine."""
    return OpCost(node, resource, seconds, 0.0, hbm_bytes, 0.0, 1.0, 8.0, True)


def reader(
    node: str,
    resource: str,
    hbm_bytes: float,
    prefetchable: float,
    compute_s: float = 0.0,
    l2_bw: float = 8.0,
) -> OpCost:
    """A roofline op on HBM 1 B/s, L2 ``l2_bw`` B/s, no launch overhead."""
    return OpCost(node, resource, compute_s, 0.0, hbm_bytes, prefetchable, 1.0, l2_bw, False)


@pytest.fixture
def ft06_graph():
    """Fisher & Thompson 6x6 job shop (optimum 55; OR-Library / JSPLIB)."""
    import networkx as nx

    rows = [
        "2 1 0 3 1 6 3 7 5 3 4 6",
        "1 8 2 5 4 10 5 10 0 10 3 4",
        "2 5 3 4 5 8 0 9 1 1 4 7",
        "1 5 0 5 2 5 3 3 4 8 5 9",
        "2 9 1 3 4 5 5 4 0 3 3 1",
        "1 3 3 3 5 9 0 10 4 4 2 1",
    ]
    g = nx.DiGraph()
    for j, row in enumerate(rows):
        v = list(map(int, row.split()))
        prev = None
        for k in range(0, len(v), 2):
            n = f"j{j}.o{k // 2}"
            g.add_node(n, duration=float(v[k + 1]), resource=f"m{v[k]}")
            if prev is not None:
                g.add_edge(prev, n)
            prev = n
    return g


def stored_rows(store) -> int:
    """Rows in a sweep's SQLite store (0 while the file does not exist yet)."""
    import sqlite3

    if not store.exists():
        return 0
    with sqlite3.connect(store) as db:
        try:
            return int(db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
        except sqlite3.OperationalError:  # the file is there, its table not yet: no rows
            return 0


def wait_for_rows(store, proc, at_least: int, timeout_s: float = 240.0) -> int:
    """Poll a running sweep until its store holds ``at_least`` rows or the process ends."""
    import time

    deadline = time.time() + timeout_s
    n = 0
    while time.time() < deadline and proc.poll() is None:
        n = stored_rows(store)
        if n >= at_least:
            break
        time.sleep(0.2)
    return n


def tensor_spans(chain, g):
    """(first reader, last reader, size) of the prefetchable tensors of a chain graph: the
    positions of the first and last op reading each tensor, and its bytes as first read."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    size: dict[str, float] = {}
    for k, node in enumerate(chain):
        a = g.nodes[node]
        for t in a.get("reads", {}) or {}:
            first.setdefault(t, k)
            last[t] = k
        for t in a.get("prefetchable", []):
            if float(a["reads"][t]) > 0:
                size.setdefault(t, float(a["reads"][t]))
    return first, last, size
