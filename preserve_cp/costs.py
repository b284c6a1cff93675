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
all-gather), and 2 * sum(side-1) on a torus; on a full mesh of ``D`` devices ``B`` is the
share of the device's links that reach the group, ``B (n-1)/(D-1)`` (one link per peer);
α grows by ``rank_latency`` per rank beyond the first. A run with ``allreduce: custom``
(one-shot/two-shot kernels such as vLLM's or TensorRT-LLM's) costs an allreduce of
S <= ``custom_allreduce_max`` as::

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

Measured timing (``Hardware.timing == "measured"``, preserve_cp/measured.py): a dense GEMM or
attention op that the device's kernel tables cover takes its vanilla time ``T`` from them
(interpolated), and its L2-hit variants follow in the same form (:func:`measured_parts`)::

    L         = the table's time at the same shape with its byte sizes at their smallest
                (the latency floor), at most T - H / B_peak
    compute_s = min(T, flops / rate)
    hbm_bw    = H / (T - L),  hbm_latency_s = L   (instead of the roofline's rate and hbm_half)
    t(x)      = max(compute_s, (H - x) / hbm_bw + L [+ x / B_l2], x / B_l2) + overhead

so ``t(0) = T + overhead`` and ``t`` stays convex piecewise-linear in ``x``. An op measured
faster than HBM could feed it (H / T above the peak: the table's run found part of its bytes
in L2) keeps ``T`` as its fixed time: prefetching cannot beat what was measured. Every other
op, and every op of a device without tables, keeps the roofline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import networkx as nx

from .errors import InputError
from .graph import COLLECTIVE_KINDS, MATMUL_KINDS
from .hardware import Hardware
from .measured import OpTime, check_source, moe_shapes, op_time
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
    l2_serial: bool = False  # hardware l2_hit_law "sum": the L2 bytes after the HBM bytes

    def duration_s(self, l2_bytes: float = 0.0) -> float:
        """Duration with ``l2_bytes`` of the op's reads already in L2: the compute time or the
        memory time, whichever is longer, plus the launch overhead. The memory time is
        ``(H - x) / HBM + latency + x / L2`` under the ``sum`` L2-hit law, the larger of the HBM
        and L2 terms under ``max``; either way convex piecewise-linear in ``x``."""
        if self.fixed:
            return self.compute_s + self.overhead_s
        x = min(max(l2_bytes, 0.0), self.prefetchable_bytes)
        if self.l2_serial:
            return max(self.compute_s, self.hbm_time_s(x) + x / self.l2_bw) + self.overhead_s
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


def group_link_bytes_per_s(hw: Hardware, n: int) -> float:
    """Achieved one-direction bandwidth from a device to the other ``n - 1`` devices of its
    group inside a node. Through a switch (NVSwitch) or on a ring it is the device's whole
    ``link_bandwidth x link_efficiency`` whatever ``n``. On a ``full_mesh`` of ``D`` devices
    that bandwidth is the sum of ``D - 1`` direct links, one per peer (HCCS on Ascend 910B,
    xGMI on MI300X, 3 RoCE ports per peer on Gaudi 3), and a group of ``n < D`` devices can use
    only the ``n - 1`` links to its members: ``B (n - 1) / (D - 1)``.

    >>> from preserve_cp.hardware import load_hardware
    >>> g3 = load_hardware("gaudi3", calibrated=False)  # 21 ports x 25 GB/s over 7 peers, x 0.8
    >>> [round(group_link_bytes_per_s(g3, n) / 1e9) for n in (2, 4, 8)]
    [60, 180, 420]
    >>> h100 = load_hardware("h100-sxm", calibrated=False)  # NVSwitch: the same for any group
    >>> group_link_bytes_per_s(h100, 2) == group_link_bytes_per_s(h100, 8)
    True
    """
    bw = hw.link_bandwidth_bytes_per_s * hw.link_efficiency
    d = hw.devices_per_node
    if hw.topology == "full_mesh" and 1 < n < d:
        return bw * (n - 1) / (d - 1)
    return bw


def collective_time_s(
    kind: str,
    message_bytes: float,
    n: int,
    hw: Hardware,
    impl: str = "nccl",
    variant: str = "normal",
) -> float:
    """α-β time of one collective over ``n`` devices of ``hw``.

    Worked example (Ascend 910B2 full mesh, 8 devices, 32 KiB): α 10 µs + 2 hops x 0.5 µs
    + 2 x 7/8 x 32768 B / (196 GB/s x 0.8) = 11.366 µs.

    >>> from preserve_cp.hardware import load_hardware
    >>> round(collective_time_s("allreduce", 32768, 8, load_hardware("ascend-910b2")) * 1e6, 3)
    11.366
    """
    latency, transfer = collective_parts(kind, message_bytes, n, hw, impl, variant)
    return latency + transfer


def collective_parts(
    kind: str,
    message_bytes: float,
    n: int,
    hw: Hardware,
    impl: str = "nccl",
    variant: str = "normal",
) -> tuple[float, float]:
    """(latency, transfer) seconds of a collective: the α part and the bandwidth part.

    ``impl="custom"`` selects the one-shot/two-shot kernel for allreduces it can take.
    ``variant="low_latency"`` prices an all-to-all as DeepEP's low-latency kernels
    (:func:`all_to_all_low_latency_parts`). A group larger than a node goes by levels
    (:func:`multi_node_parts`).
    """
    if n <= 1:
        return 0.0, 0.0
    if kind == "all_to_all" and variant == "low_latency":
        return all_to_all_low_latency_parts(message_bytes, n, hw)
    if n > hw.devices_per_node:
        return multi_node_parts(kind, message_bytes, n, hw)
    bw = group_link_bytes_per_s(hw, n)
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
    if kind == "p2p":  # inside a node; op_costs knows from p2p_devices when it is across
        return p2p_parts(message_bytes, False, hw)
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
    measured = hw is not None and hw.timing == "measured"
    moe = {}
    if measured:
        assert hw is not None
        check_source(hw)  # the install hint, or a section naming tables that are not there
        moe = moe_shapes(g)
    for node, a in g.nodes(data=True):
        reads = a.get("reads", {}) or {}
        pf_bytes = float(sum(reads[t] for t in a.get("prefetchable", [])))
        # reread_bytes: traffic beyond ``reads`` (a kernel reading a tensor more than once)
        hbm = float(sum(reads.values())) + float(a.get("writes_bytes", 0))
        hbm += float(a.get("reread_bytes", 0))
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
            group = int(a.get("group", n_dev))
            if kind == "p2p":  # pipeline send/recv between two devices, maybe in two nodes
                src, dst = a.get("p2p_devices", [0, 1])
                t = p2p_time_s(
                    msg, int(src) // hw.devices_per_node != int(dst) // hw.devices_per_node, hw
                )
            else:
                t = collective_time_s(kind, msg, group, hw, impl, str(a.get("variant", "normal")))
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
        timed = op_time(hw, a, g.graph, moe.get(node)) if measured else None
        if timed is not None:
            compute, hbm_bw, hbm_lat = measured_parts(timed, compute, hbm, hw)
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
            l2_serial=hw.l2_hit_law == "sum",
        )
    return out


def measured_parts(
    timed: OpTime, roofline_compute_s: float, hbm_bytes: float, hw: Hardware
) -> tuple[float, float, float]:
    """(compute_s, hbm_bw, hbm_latency_s) of a measured op, such that its duration with
    nothing in L2 is the measured ``T`` (plus the launch overhead added apart) and the bytes it
    finds in L2 shorten only the part of ``T`` above its floor ``L`` (``timed.floor_s``)::

        L        = min(floor, T - H / B_peak)   (>= 0: HBM cannot move H faster than its peak)
        hbm_bw   = H / (T - L)                  the rate the measurement implies
        hbm_lat  = L                            paid with or without prefetch
        compute  = min(T, flops / rate)         (T when T < H / B_peak: the run found part of
                                                 H in L2, prefetching cannot beat it)

    >>> from preserve_cp.hardware import load_hardware
    >>> from preserve_cp.measured import OpTime
    >>> h100 = load_hardware("h100-sxm")  # 3.35 TB/s peak
    >>> c, bw, lat = measured_parts(OpTime(20e-6, 12e-6), 4e-6, 10e6, h100)
    >>> c, round(bw / 1e12, 6), lat  # 10 MB in the 8 us above a 12 us floor: 1.25 TB/s
    (4e-06, 1.25, 1.2e-05)
    >>> measured_parts(OpTime(2e-6, 1e-6), 4e-6, 10e6, h100)[0]  # 5 TB/s: above the peak
    2e-06
    """
    t = timed.vanilla_s
    if hbm_bytes <= 0:
        return t, hw.effective_hbm_bytes_per_s, 0.0
    fastest = hbm_bytes / hw.hbm_bandwidth_bytes_per_s
    if t <= fastest:  # faster than HBM allows: the measured run hit L2
        return t, hbm_bytes / t, 0.0
    floor = min(max(timed.floor_s, 0.0), t - fastest)
    return min(t, roofline_compute_s), hbm_bytes / (t - floor), floor


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


def _nodes(n: int, hw: Hardware) -> tuple[int, int]:
    """(devices per node k, nodes m) of a group of ``n`` that fills whole nodes."""
    k = hw.devices_per_node
    if hw.scale_out_bytes_per_s is None:
        raise InputError(
            f"{hw.name}: scale_out: a collective over {n} devices spans "
            f"{-(-n // k)} nodes of {k}, and the hardware file has no scale_out section; "
            "expected one (NIC bandwidth, NICs per node, latency) or a group of at most "
            f"{k} devices"
        )
    if n % k:
        raise InputError(
            f"{hw.name}: a collective over {n} devices: expected whole nodes of {k} "
            f"(a multiple of {k})"
        )
    return k, n // k


def multi_node_parts(kind: str, message_bytes: float, n: int, hw: Hardware) -> tuple[float, float]:
    """(latency, transfer) of a collective over ``n`` devices on ``m = n / k`` nodes of ``k``,
    as NCCL runs it across nodes on a rail-optimised fabric:

    * allreduce: reduce-scatter inside each node, ``k`` parallel allreduces of ``S / k`` across
      the nodes (one per rail, each at the device's NIC share ``B_net``), all-gather inside:
      ``RS_k(S) + α_net + 2 (m - 1)/m · S / (k B_net) + AG_k(S)``;
    * all-gather / reduce-scatter: the inside part of ``S`` plus ``α_net + (m - 1)/m · S /
      (k B_net)`` across;
    * all-to-all: each device sends ``S``; ``(k - 1)/n`` of it stays in the node (node links),
      ``(n - k)/n`` crosses the NICs, both at once: ``α_net + max(local / B_link,
      remote / B_net)``.

    ``α_net`` is ``scale_out.collective_latency_us``; ``B_net`` = NIC bandwidth x efficiency x
    NICs per device.

    Worked example (h100-sxm priors, 16 KiB): inside one node 8 µs + 2 x 0.47 µs + 2 x 7/8 x
    16384 B / 360 GB/s = 9.02 µs; across two nodes reduce-scatter (8 + 0.47 µs + 0.04 µs) +
    20 µs + 2 x 1/2 x 16384 / (8 x 44 GB/s) (0.05 µs) + all-gather (8.51 µs) = 37.07 µs.

    >>> from preserve_cp.hardware import load_hardware
    >>> h100 = load_hardware("h100-sxm", calibrated=False)
    >>> t8 = collective_time_s("allreduce", 16384, 8, h100)
    >>> t16 = collective_time_s("allreduce", 16384, 16, h100)
    >>> round(t8 * 1e6, 2), round(t16 * 1e6, 2)
    (9.02, 37.07)
    """
    k, m = _nodes(n, hw)
    assert hw.scale_out_bytes_per_s is not None
    b_net = hw.scale_out_bytes_per_s
    alpha = hw.scale_out_latency_s
    if kind == "allreduce":
        rs = collective_parts("reduce_scatter", message_bytes, k, hw)
        ag = collective_parts("allgather", message_bytes, k, hw)
        across = 2 * (m - 1) / m * message_bytes / (k * b_net)
        return rs[0] + alpha + ag[0], rs[1] + across + ag[1]
    if kind in ("allgather", "reduce_scatter"):
        inside = collective_parts(kind, message_bytes, k, hw)
        return inside[0] + alpha, inside[1] + (m - 1) / m * message_bytes / (k * b_net)
    if kind == "all_to_all":
        link = hw.link_bandwidth_bytes_per_s * hw.link_efficiency
        local = message_bytes * (k - 1) / n
        remote = message_bytes * (n - k) / n
        return alpha, max(local / link, remote / b_net)
    raise InputError(f"collective kind {kind!r}: expected one of {sorted(COLLECTIVE_KINDS)}")


def all_to_all_low_latency_parts(message_bytes: float, n: int, hw: Hardware) -> tuple[float, float]:
    """MoE dispatch/combine with low-latency kernels (DeepEP's, for decode): every device
    sends ``S`` bytes (its tokens x top-k x hidden); the share for devices in its own node,
    ``min(1, k / n)``, moves over the node links while the rest crosses the NICs, at once:
    ``α_LL + max(local / B_link, remote / B_net)``, ``α_LL`` = ``scale_out.all_to_all_latency_us``.

    Fitted (bench/fit_deepep.py) to DeepEP's low-latency table on H800 + CX7 400G (128 tokens,
    hidden 7168, top-8, fp8 dispatch, bf16 combine) at EP 8, 32 and 128: α_LL 31.3 µs, local
    173 GB/s, remote 44.0 GB/s; the held-out EP 16, 64 and 256 rows come within 5.0 %.

    >>> from preserve_cp.hardware import load_hardware
    >>> h100 = load_hardware("h100-sxm", calibrated=False)
    >>> round(collective_time_s("all_to_all", 7.5e6, 64, h100, variant="low_latency") * 1e6, 1)
    180.4
    """
    k = hw.devices_per_node
    alpha = hw.all_to_all_latency_s
    if alpha is None:
        alpha = hw.scale_out_latency_s if n > k else hw.collective_latency_s
    link = group_link_bytes_per_s(hw, min(n, k))
    local = message_bytes * min(1.0, k / n)
    remote = message_bytes - local
    if remote > 0:
        _nodes(n, hw)
        assert hw.scale_out_bytes_per_s is not None
        return alpha, max(local / link, remote / hw.scale_out_bytes_per_s)
    return alpha, local / link


def p2p_time_s(message_bytes: float, across_nodes: bool, hw: Hardware) -> float:
    """One device sends ``message_bytes`` to another (pipeline stages): over the node links
    (``collective_latency`` + S / link), or across nodes (``scale_out`` latency + S / NIC share).

    >>> from preserve_cp.hardware import load_hardware
    >>> h100 = load_hardware("h100-sxm", calibrated=False)
    >>> round(p2p_time_s(1e6, False, h100) * 1e6, 2), round(p2p_time_s(1e6, True, h100) * 1e6, 2)
    (10.78, 42.73)
    """
    latency, transfer = p2p_parts(message_bytes, across_nodes, hw)
    return latency + transfer


def p2p_parts(message_bytes: float, across_nodes: bool, hw: Hardware) -> tuple[float, float]:
    """(latency, transfer) of :func:`p2p_time_s`."""
    if not across_nodes:
        return hw.collective_latency_s, message_bytes / group_link_bytes_per_s(hw, 2)
    if hw.scale_out_bytes_per_s is None:
        raise InputError(
            f"{hw.name}: scale_out: pipeline stages in different nodes need the network "
            "between nodes, and the hardware file has no scale_out section"
        )
    return hw.scale_out_latency_s, message_bytes / hw.scale_out_bytes_per_s


def _ramp(size: float, half: float) -> float:
    """size / (size + half): the share of the full rate reached at ``size`` (1 when half=0)."""
    if half <= 0 or size <= 0:
        return 1.0
    return size / (size + half)
