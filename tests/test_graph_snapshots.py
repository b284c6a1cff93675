"""The builder reproduces the graphs of the 17 dense models exactly (issue 12).

The fixtures were written by the builder before it became block-structured
(``python tests/graph_snapshot_cases.py``): a SHA-256 of every graph (nodes in order with all
attributes, edges in order, graph attributes) for 721 workloads, and three graphs in full.
"""

from __future__ import annotations

import gzip
import json

import pytest
from graph_snapshot_cases import FULL, HASHES, canonical, cases, digest, full_path, key

from preserve_cp.graph import build_graph

HASHED = json.loads(HASHES.read_text())
CASES = cases()


def test_every_case_is_pinned() -> None:
    keys = [key(n, wl) for n, wl in CASES]
    assert len(set(keys)) == len(keys) == len(HASHED)
    assert set(keys) == set(HASHED)
    assert len({n for n, _ in CASES}) == 17


@pytest.mark.parametrize("name", sorted({n for n, _ in CASES}))
def test_graphs_unchanged(name: str) -> None:
    moved = [
        key(n, wl)
        for n, wl in CASES
        if n == name and digest(build_graph(n, wl)) != HASHED[key(n, wl)]
    ]
    assert not moved, f"{len(moved)} graphs changed, e.g. {moved[:3]}"


@pytest.mark.parametrize("k", FULL)
def test_full_graphs_unchanged(k: str) -> None:
    want = json.loads(gzip.decompress(full_path(k).read_bytes()))
    (name, wl) = next((n, wl) for n, wl in CASES if key(n, wl) == k)
    got = json.loads(json.dumps(canonical(build_graph(name, wl))))
    assert got["graph"] == want["graph"]
    assert [n for n, _ in got["nodes"]] == [n for n, _ in want["nodes"]]
    for (n, a), (_, b) in zip(got["nodes"], want["nodes"], strict=True):
        assert a == b, n
    assert got["edges"] == want["edges"]
