"""The machine every plan runs on: shared-memory parameters, and the fit check.

``Machine`` is what the simulator, the verifier, the bounds and the optimiser models read
about a device besides the per-op costs (costs.py). Rules it parameterises (simulate.py):

* a prefetch moves bytes at ``min(prefetch peak, share x (HBM bandwidth - HBM rate of the
  running ops))``, where ``share`` is ``op_share`` while a compute op runs and 1 while only
  collectives (or nothing) run: how much of the bandwidth a running kernel leaves is really
  available to a concurrent transfer is a hardware parameter
  (``memory.prefetch_share_during_ops``), not a free gift of the model;
* every prefetch chunk first pays ``chunk_latency_s`` (no bytes move, its L2 is reserved):
  the same fixed cost per transfer that an op pays in its HBM term (``hbm_half`` / HBM
  bandwidth; see costs.py), so a transfer of S bytes costs the same whether an op or the
  prefetch stream makes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import networkx as nx

from . import units
from .errors import InfeasibleError
from .hardware import Hardware


@dataclass(frozen=True)
class Machine:
    """The shared-memory parameters the simulator needs (SI)."""

    hbm_bytes_per_s: float = math.inf
    prefetch_bytes_per_s: float = math.inf
    l2_capacity_bytes: float = 0.0
    contention: bool = True
    op_share: float = 1.0
    chunk_latency_s: float = 0.0
    #: > 0: prefetched lines are evicted by the ops' traffic (random replacement over this
    #: many bytes of L2; hardware ``l2_eviction: random``); 0: they are protected
    eviction_bytes: float = 0.0


def machine_for(hw: Hardware | None, contention: bool = True) -> Machine:
    """The simulator's view of ``hw`` (no L2, infinite bandwidth without hardware).

    >>> from preserve_cp.hardware import load_hardware
    >>> m = machine_for(load_hardware("h100-sxm"))
    >>> round(m.chunk_latency_s * 1e6, 3), m.op_share
    (1.216, 0.0)
    """
    if hw is None:
        return Machine(contention=contention)
    bw = hw.effective_hbm_bytes_per_s
    return Machine(
        bw,
        hw.effective_prefetch_bytes_per_s,
        hw.usable_l2_bytes,
        contention,
        hw.prefetch_share_during_ops,
        hw.hbm_half_bytes / bw if bw > 0 else 0.0,
        hw.l2_capacity_bytes if hw.l2_eviction == "random" else 0.0,
    )


def check_fits(g: nx.DiGraph, hw: Hardware) -> None:
    """Raise InfeasibleError when the step's weights and KV-cache exceed one device's HBM."""
    w = g.graph.get("weights_bytes_per_device")
    kv = g.graph.get("kv_cache_bytes_per_device")
    if w is None or kv is None:
        return
    need = float(w) + float(kv)
    if need > hw.hbm_capacity_bytes:
        wl = g.graph.get("workload", {})
        raise InfeasibleError(
            f"{g.graph.get('model', 'model')} on {hw.name}: batch {wl.get('batch')}, context "
            f"{wl.get('context')}, tp {wl.get('tp')} needs {need / units.GB:.1f} GB per device "
            f"(weights {float(w) / units.GB:.1f} GB + KV-cache {float(kv) / units.GB:.1f} GB); "
            f"HBM holds {hw.hbm_capacity_bytes / units.GB:.1f} GB: over by "
            f"{(need - hw.hbm_capacity_bytes) / units.GB:.1f} GB (raise tp or lower batch/context)"
        )
