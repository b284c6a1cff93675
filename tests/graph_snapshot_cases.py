"""The graphs pinned by tests/test_graph_snapshots.py, and how they are written down.

Regenerate (only when a change of the graphs is intended) with
``python tests/graph_snapshot_cases.py``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import networkx as nx

from preserve_cp.errors import InputError
from preserve_cp.graph import SHAPE_ATTRIBUTES, build_graph, check_tp
from preserve_cp.models import load_model
from preserve_cp.workload import Workload

DIR = Path(__file__).parent / "fixtures" / "graph_snapshots"
HASHES = DIR / "hashes.json"
#: the 17 dense models shipped before the block-structured builder
MODELS = [
    "falcon-180b",
    "falcon-40b",
    "gemma2-27b",
    "gpt3-175b",
    "llama2-13b",
    "llama2-70b",
    "llama2-7b",
    "llama3-70b",
    "llama3-8b",
    "llama3.1-405b",
    "opt-66b",
    "phi3-medium",
    "phi3-small",
    "qwen2-72b",
    "qwen2-7b",
    "qwen2.5-72b",
    "qwen2.5-7b",
]
#: graphs kept in full (a readable diff when a hash moves)
FULL = (
    "llama3-70b|decode|4|16384|8|int8|sharded",
    "gemma2-27b|prefill|2|8192|2|bf16|sharded",
    "falcon-40b|decode|3|2048|8|bf16|replicated",
)


def cases() -> list[tuple[str, Workload]]:
    out = []
    for name in MODELS:
        m = load_model(name)
        for tp in (1, 2, 4, 8):
            try:
                check_tp(m, tp)
            except InputError:
                continue
            kv = m.num_kv_heads
            if kv % tp and tp % kv:  # the tps the old builder accepted: KV heads split evenly
                continue  # or replicated evenly (uneven replication came later)
            for phase, batch, context in (
                ("decode", 1, 1000),
                ("decode", 4, 16384),
                ("decode", 3, 2048),
                ("prefill", 1, 3000),
                ("prefill", 2, 8192),
            ):
                for dtype in ("bf16", "int8"):
                    for lm_head in ("sharded", "replicated"):
                        if lm_head == "replicated" and (dtype == "int8" or batch != 3):
                            continue
                        wl = Workload(
                            phase, batch, context, tp, dtype, dtype, dtype, lm_head=lm_head
                        )
                        out.append((name, wl))
        # mixed precisions once per model
        out.append((name, Workload("decode", 8, 4096, 1, "int8", "bf16", "fp8")))
    return out


def key(name: str, wl: Workload) -> str:
    return "|".join(
        str(x) for x in (name, wl.phase, wl.batch, wl.context, wl.tp, wl.weight_dtype, wl.lm_head)
    ) + ("" if wl.weight_dtype == wl.kv_dtype else f"|kv={wl.kv_dtype}|act={wl.act_dtype}")


def canonical(g: nx.DiGraph) -> dict[str, Any]:
    """Every node (in order) with all attributes, every edge (in order), the graph attributes.

    The optional shape attributes added later (``graph.SHAPE_ATTRIBUTES``: ``n``, ``k``,
    ``batch``, ``heads`` ...) are left out, so the pinned hashes keep proving that every
    attribute the graphs had then is unchanged."""
    return {
        "graph": g.graph,
        "nodes": [
            [n, {k: v for k, v in a.items() if k not in SHAPE_ATTRIBUTES}]
            for n, a in g.nodes(data=True)
        ],
        "edges": [[u, v] for u, v in g.edges()],
    }


def dump(g: nx.DiGraph) -> str:
    return json.dumps(canonical(g), sort_keys=True, separators=(",", ":"))


def digest(g: nx.DiGraph) -> str:
    return hashlib.sha256(dump(g).encode()).hexdigest()


def full_path(k: str) -> Path:
    return DIR / (k.replace("|", "_") + ".json.gz")


def write() -> None:
    DIR.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for name, wl in cases():
        k = key(name, wl)
        g = build_graph(name, wl)
        hashes[k] = digest(g)
        if k in FULL:
            full_path(k).write_bytes(gzip.compress(dump(g).encode(), mtime=0))
    HASHES.write_text(json.dumps(hashes, indent=0, sort_keys=True) + "\n")
    print(f"{len(hashes)} graphs")


if __name__ == "__main__":
    write()
