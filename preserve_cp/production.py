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

:func:`gpu_fork_plan` is the other production policy on record, local-inference-lab/vllm's
(pull requests 576, 578, 586; GLM-5.3-Flash decode on RTX PRO 6000 Blackwell, TP4 over PCIe,
+7 % steps/s at concurrency 1; shared reference/moe.md 5). Its windows per decoder layer, as
PR 576 states them: **A** (inside attention, after the first projection) this layer's o_proj
(and, on MLA layers, the absorbed W_UK / W_UV, as the Kimi-K3 port PR 592 lists) plus an
8 MB head of the next layer's first projection; **B** (after the attention output, issued
before its all-reduce) the router weight and the next layer's first projection; **C** (at
the MoE all-reduce) the remainder. Budgets 26 / 35 / 20 MB (36 MB for window A on MLA
layers); routed-expert weights are never prefetched; prefill and decode steps above 256
tokens skip the path (PR 586).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import networkx as nx

from . import units
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


#: local-inference-lab/vllm PR 576: window budgets (decimal MB, as the fork's MB settings)
GPU_FORK_BUDGETS_BYTES: dict[str, float] = {
    "A": 26 * units.MB,
    "B": 35 * units.MB,
    "C": 20 * units.MB,
}
#: window A's budget on an MLA layer (its absorbed W_UK / W_UV join o_proj)
GPU_FORK_MLA_A_BYTES = 36 * units.MB
#: the head of the next layer's first projection that window A takes
GPU_FORK_HEAD_BYTES = 8 * units.MB
#: PR 586: decode batches above this many tokens (and prefill) skip the prefetch path
GPU_FORK_TOKEN_LIMIT = 256
#: a layer's first projection (MLA's fused q_a + kv_a in vLLM: fused_qkv_a_proj)
FIRST_PROJECTIONS = ("qkv", "q_a", "q_proj", "kv_a")
#: what window A takes of the layer itself besides the head: attention output weights
ATTENTION_OUTPUT = ("q_absorb", "v_absorb", "o_proj")


def _layer_ops(g: nx.DiGraph) -> dict[int, list[Any]]:
    """The ops of each layer (index >= 0) in topological order."""
    out: dict[int, list[Any]] = {}
    for n in nx.topological_sort(g):
        layer = int(g.nodes[n].get("layer", -1))
        if layer >= 0:
            out.setdefault(layer, []).append(n)
    return out


def _weights(g: nx.DiGraph, ops: list[Any], names: tuple[str, ...]) -> list[tuple[str, float, Any]]:
    """(tensor, bytes, consumer) of the GEMMs among ``ops`` whose name ends in ``names``."""
    out = []
    for n in ops:
        a = g.nodes[n]
        if a.get("kind") == "gemm" and str(n).rsplit(".", 1)[-1] in names:
            out += [(t, float(a["reads"][t]), n) for t in a.get("prefetchable", [])]
    return out


def _after(ops: list[Any], node: Any) -> Any:
    """The op that follows ``node`` in its layer (the node itself when it is the last)."""
    i = ops.index(node)
    return ops[min(i + 1, len(ops) - 1)]


def gpu_fork_plan(
    g: nx.DiGraph,
    budgets_bytes: Mapping[str, float] | None = None,
    mla_a_bytes: float = GPU_FORK_MLA_A_BYTES,
    head_bytes: float = GPU_FORK_HEAD_BYTES,
) -> Plan:
    """local-inference-lab/vllm's L2 prefetch policy (PR 576) on ``g``, named ``gpu-fork``.

    For each layer ``i`` with a layer after it, in prefetch-stream order:

    * window A, issued at the op after the layer's first projection (``qkv``; MLA: ``q_a``):
      the layer's attention output weights (``w_uk``, ``w_uv`` on MLA layers, ``w_o``), then
      ``head_bytes`` of layer ``i + 1``'s first projection(s), within ``budgets_bytes["A"]``
      (``mla_a_bytes`` on MLA layers);
    * window B, issued at the op after ``o_proj`` (the attention all-reduce under TP): the
      router weight, then layer ``i + 1``'s first projection from where A stopped, within
      ``budgets_bytes["B"]``;
    * window C, issued at the layer's last op (the MoE / MLP all-reduce under TP): the
      remainder of that projection, within ``budgets_bytes["C"]``.

    A weight that does not fit what is left of a budget is cut there (a leading byte range).
    Routed experts, shared experts, the dense MLP and the KV cache are never prefetched; the
    first layer's first projection has no window before it. Prefill and decode steps of more
    than 256 tokens get the empty plan.

    >>> import preserve_cp as pc
    >>> g = pc.build_graph("llama3-8b", pc.Workload("decode", 1, 2048, 4))
    >>> p = gpu_fork_plan(g)  # w_o 8.39 MB, w_qkv 12.58 MB per rank: no budget binds
    >>> for c in p.prefetches[:3]:
    ...     print(c.tensor, c.anchor, round(c.bytes / 1e6, 2), c.offset_bytes / 1e6)
    L0.w_o L0.rope 8.39 0.0
    L1.w_qkv L0.rope 8.0 0.0
    L1.w_qkv L0.attn_allreduce 4.58 8.0
    >>> prefill = pc.build_graph("llama3-8b", pc.Workload("prefill", 1, 512, 4))
    >>> p.name, gpu_fork_plan(prefill).prefetches
    ('gpu-fork', ())
    """
    budgets = dict(GPU_FORK_BUDGETS_BYTES if budgets_bytes is None else budgets_bytes)
    wl = g.graph.get("workload") or {}
    if wl.get("phase", "decode") != "decode" or int(wl.get("batch", 1)) > GPU_FORK_TOKEN_LIMIT:
        return Plan("gpu-fork")
    layers = _layer_ops(g)
    index = sorted(layers)
    out: list[Prefetch] = []
    for i, nxt in zip(index, index[1:], strict=False):
        ops = layers[i]
        first = _weights(g, ops, FIRST_PROJECTIONS)
        own = _weights(g, ops, ATTENTION_OUTPUT)
        if not first or not own:
            continue  # not a decoder layer this policy knows
        mla = any(str(n).endswith((".q_absorb", ".kv_a")) for n in ops)
        # the next layer's first projection(s): one byte stream the windows take in turn
        stream = _weights(g, layers[nxt], FIRST_PROJECTIONS)
        done = dict.fromkeys((t for t, _, _ in stream), 0.0)  # bytes taken so far
        windows: list[tuple[Any, float, list[tuple[str, float, Any]], float]] = [
            (_after(ops, first[0][2]), mla_a_bytes if mla else budgets["A"], own, head_bytes),
            (_after(ops, own[-1][2]), budgets["B"], _weights(g, ops, ("router",)), math.inf),
            (ops[-1], budgets["C"], [], math.inf),
        ]
        for anchor, budget, items, from_next in windows:
            left = float(budget)
            for t, size, consumer in items:
                take = min(size, left)
                if take > 0:
                    out.append(Prefetch(t, take, consumer, anchor))
                    left -= take
            left = min(left, from_next)
            for t, size, consumer in stream:
                take = min(size - done[t], left)
                if take > 0:
                    out.append(Prefetch(t, take, consumer, anchor, offset_bytes=done[t]))
                    done[t] += take
                    left -= take
    return Plan("gpu-fork", tuple(out))
