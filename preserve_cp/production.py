"""The prefetch policy that runs in production: vLLM's Ascend backend (vllm-ascend).

vllm-ascend prefetches weights into L2 on a side stream while vector ops run (RMSNorm,
SwiGLU, MoE gating top-k, quantize), with ``additional_config.weight_prefetch_config``:
``prefetch_ratio`` per linear kind -- ``attn`` ``qkv`` and ``o``, ``moe`` ``gate_up``, ``mlp``
``gate_up`` and ``down`` -- each prefetch capped at 18 MiB "due to the current size of the L2
cache" (``MAX_PREFETCH_WEIGHT_SIZE = 18 * 1024 * 1024``); the MoE prefetch only when the step
has at least 96 tokens (``MOE_PREFETCH_TOKEN_THRESHOLD``), the MLP one only below 500 tokens
(decode); default ratios ``{"attn": {"qkv": 1.0, "o": 1.0}, "moe": {"gate_up": 0.8}}``
(vllm-ascend weight-prefetch guide and ``vllm_ascend/ops/weight_prefetch.py``; shared
reference/moe.md 5).

:func:`production_plan` builds that policy as a plan for any graph of ours: for each GEMM of
a kind the ratios name, one chunk of ``min(ratio x weight, 18 MiB)`` anchored at the nearest
vector op before it (where vllm-ascend issues it). :func:`export_weight_prefetch_config` turns
an optimised plan back into the closest ``weight_prefetch_config``: per kind, the share of the
weight the plan prefetches in the steady-state layers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import networkx as nx

from .plan import Plan, Prefetch

#: vllm-ascend's cap per prefetch (bytes)
MAX_PREFETCH_BYTES = 18 * 1024 * 1024
MOE_TOKEN_THRESHOLD = 96
MLP_TOKEN_LIMIT = 500
#: the backend's default ratios (its configuration table); dense MLP ratios are opt-in
DEFAULT_RATIOS: dict[str, dict[str, float]] = {
    "attn": {"qkv": 1.0, "o": 1.0},
    "moe": {"gate_up": 0.8},
}
#: the guide's dense-model example (Qwen3-32B-W8A8, --max-num-seqs 72)
DENSE_EXAMPLE_RATIOS: dict[str, dict[str, float]] = {
    "attn": {"qkv": 1.0, "o": 1.0},
    "mlp": {"gate_up": 1.0, "down": 1.0},
}
VECTOR_KINDS = frozenset({"norm", "elementwise"})
#: our GEMM op names (after ``L<i>.``) -> vllm-ascend's (module, projection)
LINEAR_KINDS: dict[str, tuple[str, str]] = {
    "qkv": ("attn", "qkv"),
    "o_proj": ("attn", "o"),
    "experts_gate_up": ("moe", "gate_up"),
    "gate_up": ("mlp", "gate_up"),
    "down": ("mlp", "down"),
}


def linear_kind(node: Any) -> tuple[str, str] | None:
    """(module, projection) of a GEMM op in vllm-ascend's terms, or None.

    >>> linear_kind("L3.qkv"), linear_kind("L3.experts_gate_up"), linear_kind("L3.down")
    (('attn', 'qkv'), ('moe', 'gate_up'), ('mlp', 'down'))
    >>> linear_kind("L3.shared_down") is None
    True
    """
    return LINEAR_KINDS.get(str(node).rsplit(".", 1)[-1])


def production_plan(
    g: nx.DiGraph,
    ratios: Mapping[str, Mapping[str, float]] | None = None,
    cap_bytes: float = MAX_PREFETCH_BYTES,
) -> Plan:
    """vllm-ascend's policy on ``g``: one chunk per GEMM whose kind ``ratios`` names,
    ``min(ratio x weight bytes, cap)``, anchored at the last vector op before it.

    >>> import preserve_cp as pc
    >>> g = pc.build_graph("llama3-8b", pc.Workload("decode", 4, 2048, 8))
    >>> p = production_plan(g)
    >>> [(c.tensor, c.anchor) for c in p.prefetches[:2]]
    [('L0.w_qkv', 'L0.attn_norm'), ('L0.w_o', 'L0.rope')]
    >>> p.prefetches[0].bytes == g.nodes["L0.qkv"]["reads"]["L0.w_qkv"]  # ratio 1, < 18 MiB
    True
    """
    ratios = DEFAULT_RATIOS if ratios is None else ratios
    wl = g.graph.get("workload") or {}
    tokens = int(wl.get("batch", 1)) * (
        1 if wl.get("phase", "decode") == "decode" else int(wl.get("context", 1))
    )
    out = []
    last_vector = None
    for n in nx.topological_sort(g):
        a = g.nodes[n]
        if a.get("kind") in VECTOR_KINDS:
            last_vector = n
            continue
        kind = linear_kind(n) if a.get("kind") == "gemm" else None
        if kind is None or last_vector is None:
            continue
        module, proj = kind
        if module == "moe" and tokens < MOE_TOKEN_THRESHOLD:
            continue
        if module == "mlp" and tokens >= MLP_TOKEN_LIMIT:
            continue
        ratio = float(ratios.get(module, {}).get(proj, 0.0))
        for t in a.get("prefetchable", []):
            size = float(a["reads"][t])
            b = min(ratio * size, cap_bytes)
            if b > 0:
                out.append(Prefetch(t, b, n, last_vector))
    return Plan("vllm-ascend", tuple(out))


def export_weight_prefetch_config(plan: Plan, g: nx.DiGraph) -> dict[str, Any]:
    """The ``additional_config`` closest to ``plan``: per linear kind, the share of its weight
    the plan prefetches, averaged over the steady-state layers (every layer but the first and
    the last), rounded to 0.05; kinds the plan never prefetches are left out. vllm-ascend
    caps each prefetch at 18 MiB whatever the ratio.

    >>> import preserve_cp as pc
    >>> g = pc.build_graph("llama3-8b", pc.Workload("decode", 4, 2048, 8))
    >>> export_weight_prefetch_config(production_plan(g), g)["weight_prefetch_config"]
    {'enabled': True, 'prefetch_ratio': {'attn': {'qkv': 1.0, 'o': 1.0}}}
    """
    layers = sorted({int(a["layer"]) for _, a in g.nodes(data=True) if int(a["layer"]) >= 0})
    steady = set(layers[1:-1]) or set(layers)
    got: dict[str, float] = {}
    for c in plan.prefetches:
        got[c.tensor] = got.get(c.tensor, 0.0) + c.bytes
    shares: dict[tuple[str, str], list[float]] = {}
    for n, a in g.nodes(data=True):
        kind = linear_kind(n) if a.get("kind") == "gemm" else None
        if kind is None or int(a.get("layer", -1)) not in steady:
            continue
        for t in a.get("prefetchable", []):
            size = float(a["reads"][t])
            if size > 0:
                shares.setdefault(kind, []).append(min(1.0, got.get(t, 0.0) / size))
    ratio: dict[str, dict[str, float]] = {}
    for (module, proj), vals in sorted(shares.items()):
        r = round(sum(vals) / len(vals) * 20) / 20
        if r > 0:
            ratio.setdefault(module, {})[proj] = r
    order = {"attn": 0, "moe": 1, "mlp": 2}
    proj_order = {"qkv": 0, "o": 1, "gate_up": 2, "down": 3}
    ratio = {
        m: dict(sorted(ratio[m].items(), key=lambda kv: proj_order[kv[0]]))
        for m in sorted(ratio, key=order.__getitem__)
    }
    return {"weight_prefetch_config": {"enabled": bool(ratio), "prefetch_ratio": ratio}}
