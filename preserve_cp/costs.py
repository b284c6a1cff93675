"""Cost model: op durations (roofline, with part of the reads already in L2) and collectives (α-β).

Glossary: *HBM bytes* of an op are everything it reads or writes minus the bytes it finds
in L2; an op's *HBM rate* is its HBM bytes over its duration. A prefetch uses only the HBM
bandwidth the running ops leave (see simulate.py).

Roofline with an L2 term (compute kinds)::

    t(x) = max(flops / (peak * eff), (H - x) / B_hbm + λ, x / B_l2) + overhead

with ``x`` the prefetched bytes found in L2, ``H`` all HBM traffic without prefetch.
Collectives over ``n`` devices with message ``S`` and per-device link bandwidth ``B``::

    allreduce      α + steps * hop + 2 (n-1)/n * S / B
    allgather,
    reduce_scatter α + steps/2 * hop + (n-1)/n * S / B
    all_to_all     α + (n-1) * hop + (n-1)/n * S / B

``steps`` = 2(n-1) on a ring, 2 on a full mesh or switch (one-shot reduce-scatter +
all-gather), and 2 * sum(side-1) on a torus; α grows by ``rank_latency`` per rank beyond
the first. A run with ``allreduce: custom`` (one-shot/two-shot kernels such as vLLM's or
TensorRT-LLM's) costs an allreduce of S <= ``custom_allreduce_max`` as::

    one-shot (S <= custom_one_shot_max)   α_custom + (n-1) * S / B   (each rank reads every peer)
    two-shot                              α_custom + 2 (n-1)/n * S / B

Shape and size effects (each 0 by default, fitted per device by calibrate.py):

* GEMM efficiency vs shape: ``eff(M) = matmul_efficiency * (M / matmul_full_rows) ** p`` for
  ``M < matmul_full_rows`` (p = ``matmul_rows_exponent``; small-M GEMMs fill few tiles and
  waves, while a GEMV's time stays near its weight streaming);
* attention efficiency vs context: compute and HBM rates x ``C / (C + attention_half_context)``;
* HBM bandwidth vs transfer size: an op moving S bytes gets ``B_hbm * S / (S + hbm_half)``,
  i.e. pays a fixed ``hbm_half / B_hbm`` on top of ``S / B_hbm``; with x bytes in L2 it pays
  ``(S - x) / B_hbm + hbm_half / B_hbm``, and a prefetch chunk pays the same latency
  (machine.py), so the effect is the same for both;
* launch overhead per compute op: ``kernel_overhead`` with graph capture, else
  ``kernel_overhead_eager``;
* sampling and host work: ``step_overhead[stack]`` once per step, on the op marked ``samples``
  (the LM head).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import networkx as nx

from .errors import InputError
from .graph import COLLECTIVE_KINDS, MATMUL_KINDS
from .hardware import Hardware
from .units import COMPUTE_FALLBACK


@dataclass(frozen=True)
class OpCost:
    """Everything the scheduler needs about one op, in SI units.

    ``fixed_s`` is the part of the duration that prefetching cannot change (compute time,
    or the whole duration of a collective or user-timed op), ``hbm_bytes`` its traffic
    without prefetch, ``prefetchable_bytes`` the bytes that could come from L2.
    """

    node: Any
    resource: str
    compute_s: float
    overhead_s: float
    hbm_bytes: float
    prefetchable_bytes: float
    hbm_bw: float
    l2_bw: float
    fixed: bool
    hbm_latency_s: float = 0.0

    def duration_s(self, l2_bytes: float = 0.0) -> float:
        """Duration with ``l2_bytes`` of the op's reads already in L2."""
        if self.fixed:
            return self.compute_s + self.overhead_s
        x = min(max(l2_bytes, 0.0), self.prefetchable_bytes)
        return max(self.compute_s, self.hbm_time_s(x), x / self.l2_bw) + self.overhead_s

    def hbm_time_s(self, l2_bytes: float = 0.0) -> float:
        """The HBM term: the bytes not found in L2 at the HBM rate, plus the fixed latency
        of a transfer (the size effect, ``hbm_half`` / bandwidth; 0 without it)."""
        if self.hbm_bytes <= 0:
            return 0.0
        x = min(max(l2_bytes, 0.0), self.prefetchable_bytes)
        return (self.hbm_bytes - x) / self.hbm_bw + self.hbm_latency_s

    def hbm_bytes_with(self, l2_bytes: float = 0.0) -> float:
        """HBM traffic with ``l2_bytes`` served from L2."""
        return max(0.0, self.hbm_bytes - min(max(l2_bytes, 0.0), self.prefetchable_bytes))

    def min_duration_s(self) -> float:
        """Best case over every possible amount in L2 (for lower bounds)."""
        if self.fixed or self.prefetchable_bytes <= 0:
            return self.duration_s(0.0)
        # t(x) is convex; its minimum is at the crossing of the HBM and L2 terms or at an end
        cross = (
            (self.hbm_bytes + self.hbm_latency_s * self.hbm_bw)
            * self.l2_bw
            / (self.hbm_bw + self.l2_bw)
        )
        cands = {0.0, self.prefetchable_bytes, min(cross, self.prefetchable_bytes)}
        return min(self.duration_s(x) for x in cands)


def collective_time_s(
    kind: str, message_bytes: float, n: int, hw: Hardware, impl: str = "nccl"
) -> float:
    """α-β time of one collective over ``n`` devices of ``hw``.

    Worked example (Ascend 910B2 full mesh, 8 devices, 32 KiB): α 10 µs + 2 hops x 0.5 µs
    + 2 x 7/8 x 32768 B / (196 GB/s x 0.8) = 11.366 µs.

    >>> from preserve_cp.hardware import load_hardware
    >>> round(collective_time_s("allreduce", 32768, 8, load_hardware("ascend-910b2")) * 1e6, 3)
    11.366
    """
    latency, transfer = collective_parts(kind, message_bytes, n, hw, impl)
    return latency + transfer


def collective_parts(
    kind: str, message_bytes: float, n: int, hw: Hardware, impl: str = "nccl"
) -> tuple[float, float]:
    """(latency, transfer) seconds of a collective: the α part and the bandwidth part.

    ``impl="custom"`` selects the one-shot/two-shot kernel for allreduces it can take.
    """
    if n <= 1:
        return 0.0, 0.0
    bw = hw.link_bandwidth_bytes_per_s * hw.link_efficiency
    if impl == "custom" and kind == "allreduce" and message_bytes <= hw.custom_allreduce_max_bytes:
        lat = hw.custom_allreduce_latency_s
        lat = hw.collective_latency_s if lat is None else lat
        if message_bytes <= hw.custom_one_shot_max_bytes:
            return lat, (n - 1) * message_bytes / bw
        return lat, 2 * (n - 1) / n * message_bytes / bw
    topo = hw.topology
    if topo == "ring":
        steps = 2 * (n - 1)
    elif topo in ("full_mesh", "switch"):
        steps = 2
    else:
        dims = 2 if topo == "torus_2d" else 3
        side = max(2, round(n ** (1 / dims)))
        steps = 2 * dims * (side - 1)
    frac = (n - 1) / n
    alpha = hw.collective_latency_s + (n - 1) * hw.rank_latency_s
    if kind == "allreduce":
        return alpha + steps * hw.hop_latency_s, 2 * frac * message_bytes / bw
    if kind in ("allgather", "reduce_scatter"):
        return alpha + steps / 2 * hw.hop_latency_s, frac * message_bytes / bw
    if kind == "all_to_all":
        return alpha + (n - 1) * hw.hop_latency_s, frac * message_bytes / bw
    raise InputError(f"collective kind {kind!r}: expected one of {sorted(COLLECTIVE_KINDS)}")


def op_costs(g: nx.DiGraph, hw: Hardware | None) -> dict[Any, OpCost]:
    """Cost every op of ``g`` on ``hw`` (``hw`` may be None when every op has ``duration``)."""
    out: dict[Any, OpCost] = {}
    n_dev = int(g.graph.get("tp", hw.devices_per_node if hw else 1))
    default_dtype = g.graph.get("dtype", "bf16")
    wl = g.graph.get("workload") or {}
    impl = str(wl.get("allreduce", "nccl"))
    launch = hw.launch_overhead_s(bool(wl.get("graph_capture", True))) if hw else 0.0
    step = hw.step_overhead_for(str(wl.get("stack", ""))) if hw else 0.0
    for node, a in g.nodes(data=True):
        reads = a.get("reads", {}) or {}
        pf_bytes = float(sum(reads[t] for t in a.get("prefetchable", [])))
        hbm = float(sum(reads.values())) + float(a.get("writes_bytes", 0))
        if "duration" in a:
            out[node] = OpCost(
                node, a["resource"], float(a["duration"]), 0.0, hbm, 0.0, 1.0, 1.0, fixed=True
            )
            continue
        if hw is None:
            raise InputError(
                f"graph node {node!r}: duration: expected seconds when no hardware "
                "is given, found none"
            )
        kind = a["kind"]
        if kind in COLLECTIVE_KINDS:
            msg = float(sum(reads.values()))
            t = collective_time_s(kind, msg, n_dev, hw, impl)
            out[node] = OpCost(
                node,
                a["resource"],
                t,
                0.0,
                hbm,
                0.0,
                hw.effective_hbm_bytes_per_s,
                hw.l2_bandwidth_bytes_per_s,
                fixed=True,
            )
            continue
        dtype = a.get("dtype", default_dtype)
        if kind in MATMUL_KINDS:
            rate = hw.matmul_flops_per_s[compute_dtype(hw, dtype)] * hw.matmul_efficiency
            rows = a.get("rows")
            if rows and float(rows) < hw.matmul_full_rows:
                rate *= (float(rows) / hw.matmul_full_rows) ** hw.matmul_rows_exponent
        else:
            rate = hw.vector_flops_per_s * hw.vector_efficiency
        hbm_bw = hw.effective_hbm_bytes_per_s
        if kind == "attention" and a.get("context"):
            f = _ramp(float(a["context"]), hw.attention_half_context)
            rate, hbm_bw = rate * f, hbm_bw * f
        # the size effect as a fixed latency per transfer: S bytes at B S / (S + half) take
        # (S + half) / B, so with x of them in L2 the op pays (S - x) / B + half / B -- the
        # same cost a prefetch chunk pays for its own transfer (machine.py)
        hbm_lat = hw.hbm_half_bytes / hbm_bw if hbm > 0 else 0.0
        compute = float(a.get("flops", 0.0)) / rate
        out[node] = OpCost(
            node,
            a["resource"],
            compute,
            launch + (step if a.get("samples") else 0.0),
            hbm,
            pf_bytes,
            hbm_bw,
            hw.l2_bandwidth_bytes_per_s,
            fixed=False,
            hbm_latency_s=hbm_lat,
        )
    return out


def compute_dtype(hw: Hardware, dtype: str) -> str:
    """The format ``hw`` runs a ``dtype`` GEMM in: ``dtype`` when its file gives a matrix peak
    for it (computed natively), else the first of ``units.COMPUTE_FALLBACK[dtype]`` it has.

    >>> from preserve_cp.hardware import load_hardware
    >>> compute_dtype(load_hardware("b200"), "fp4"), compute_dtype(load_hardware("h100-sxm"), "fp4")
    ('fp4', 'fp8')
    >>> compute_dtype(load_hardware("a100-sxm-80g"), "fp8")
    'bf16'
    """
    if dtype in hw.matmul_flops_per_s:
        return dtype
    for alt in COMPUTE_FALLBACK.get(dtype, ()):
        if alt in hw.matmul_flops_per_s:
            return alt
    raise InputError(
        f"{hw.name}: compute.matmul_tflops.{dtype}: the device has no {dtype} peak and none of "
        f"its fallbacks ({', '.join(COMPUTE_FALLBACK.get(dtype, ())) or 'none'}); expected one "
        f"of {sorted(hw.matmul_flops_per_s)}"
    )


def _ramp(size: float, half: float) -> float:
    """size / (size + half): the share of the full rate reached at ``size`` (1 when half=0)."""
    if half <= 0 or size <= 0:
        return 1.0
    return size / (size + half)
