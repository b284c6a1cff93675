"""Periodic decomposition: solve a window of layers with a steady block, then tile it.

Identical transformer layers make the optimal plan (nearly) periodic. The window is

    prefix | prologue (s layers) | steady block x R (p layers each) | epilogue (E layers) | suffix

taken from the real chain (prologue = the first s layers, epilogue = the last E layers), with
the steady copies forced equal (``add_periodic_pattern``) and weighted in the objective by the
number of periods the full graph has. The steady block is then repeated over the middle
layers; prologue and epilogue keep their own solutions (boundary layers solved separately).
The tiled plan is simulated and verified on the full graph like every plan, and its gap is
measured against the full chain LP bound, so the decomposition never hides a loss.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx

from ..costs import OpCost
from ..machine import Machine
from ..plan import Plan, Prefetch
from .chain import ChainOptions, PeriodicSpec, lookahead_ops, solve_chain
from .common import CpOutcome, Deadline, eager, early_first


@dataclass(frozen=True)
class LayerStructure:
    prefix: list[Any]
    layers: list[list[Any]]
    suffix: list[Any]
    period: int

    @property
    def ops_per_layer(self) -> int:
        return len(self.layers[0])


def _signature(ops: list[Any], g: nx.DiGraph, costs: Mapping[Any, OpCost]) -> tuple:
    sig = []
    for n in ops:
        a, c = g.nodes[n], costs[n]
        pf = tuple(round(float(a["reads"][t])) for t in a.get("prefetchable", []))
        sig.append(
            (
                a.get("kind"),
                a["resource"],
                round(c.duration_s(0.0) * 1e12),
                round(c.min_duration_s() * 1e12),
                round(c.hbm_bytes),
                pf,
            )
        )
    return tuple(sig)


def layer_structure(
    chain: list[Any], g: nx.DiGraph, costs: Mapping[Any, OpCost], max_period: int = 4
) -> LayerStructure | None:
    """Split a chain into prefix, identical layers (up to a period) and suffix, or None.

    Layers are the ops with ``layer`` >= 0; they must be contiguous, in order 0, 1, ...
    """
    prefix: list[Any] = []
    layers: list[list[Any]] = []
    suffix: list[Any] = []
    for n in chain:
        layer = int(g.nodes[n].get("layer", -1))
        if layer < 0:
            (suffix if layers else prefix).append(n)
            continue
        if suffix:
            return None
        if layer == len(layers):
            layers.append([n])
        elif layer == len(layers) - 1:
            layers[-1].append(n)
        else:
            return None
    if len(layers) < 2:
        return None
    sigs = [_signature(ops, g, costs) for ops in layers]
    for p in range(1, max_period + 1):
        if len({len(ops) for ops in layers}) == 1 and all(
            sigs[i] == sigs[i + p] for i in range(len(sigs) - p)
        ):
            return LayerStructure(prefix, layers, suffix, p)
    return None


def solve_periodic(
    chain: list[Any],
    g: nx.DiGraph,
    costs: Mapping[Any, OpCost],
    machine: Machine,
    opts: ChainOptions,
    repeats: int = 3,
    deadline: Deadline | None = None,
) -> CpOutcome | None:
    """Solve a periodic window and tile it to the whole chain; None if the chain has no
    usable layer structure (the caller then solves it whole)."""
    st = layer_structure(chain, g, costs)
    if st is None:
        return None
    opl, p, L = st.ops_per_layer, st.period, len(st.layers)
    back = math.ceil(lookahead_ops(opts, chain, g) / opl)
    s = back + 1
    E = back + 1
    W = s + repeats * p + E
    if W + 2 * p > L:
        return None
    E += (L - W) % p
    W = s + repeats * p + E
    periods = (L - s - E) // p
    window = [*st.prefix]
    for layer in [*range(s + repeats * p), *range(L - E, L)]:
        window += st.layers[layer]
    window += st.suffix
    spec = PeriodicSpec(
        block_start=len(st.prefix) + s * opl, block_ops=p * opl, repeats=repeats, periods=periods
    )
    out = solve_chain(window, g, costs, machine, opts, periodic=spec, deadline=deadline)
    out.plan = _tile(out.plan, g, chain, window, st, s, E, periods, repeats)
    at = {n: i for i, n in enumerate(chain)}
    tiled_alternatives = tuple(  # tiling orders by host; these keep consumer order
        dataclasses.replace(
            tiled, prefetches=tuple(sorted(tiled.prefetches, key=lambda c: at[c.consumer]))
        )
        for tiled in (
            _tile(p, g, chain, window, st, s, E, periods, repeats) for p in out.alternatives
        )
    )
    out.alternatives = (
        tiled_alternatives
        + tuple(eager(p, chain[0]) for p in tiled_alternatives)
        + (early_first(out.plan, chain),)
    )
    out.stats.update(
        method="periodic",
        window_layers=W,
        period=p,
        periods=periods,
        window_projection_s=out.predicted_s,
    )
    # The weighted window objective is not a prediction of the tiled makespan (the prologue
    # may pre-fill the first steady copies in ways a long steady state cannot repeat), so no
    # prediction is claimed: the simulated makespan and the full LP bound are what count.
    out.predicted_s = None
    out.cp_bound_s = None
    return out


def _tile(
    plan: Plan,
    g: nx.DiGraph,
    chain: list[Any],
    window: list[Any],
    st: LayerStructure,
    s: int,
    E: int,
    periods: int,
    repeats: int,
) -> Plan:
    """Map the window plan onto the whole chain.

    Window nodes are real nodes of the chain. Chunks for block-0 consumers are repeated
    ``periods`` times, shifted by one period each; chunks for the other steady copies are
    dropped (the repetition stands for them); chunks for epilogue and suffix consumers
    keep their nodes, except that a host inside the steady region moves with the epilogue
    (by L - W layers) so it stays just before it, as in the window.
    """
    opl, p, L = st.ops_per_layer, st.period, len(st.layers)
    W = s + repeats * p + E
    pos = {n: i for i, n in enumerate(chain)}
    wpos = {n: i for i, n in enumerate(window)}
    pre = len(st.prefix)
    block0 = range(pre + s * opl, pre + (s + p) * opl)
    copies = range(block0.stop, pre + (s + repeats * p) * opl)
    steady_start = block0.start

    def moved(n: Any, layers: int) -> Any:
        return chain[pos[n] + layers * opl]

    def twin(consumer: Any, tensor: str, layers: int) -> str:
        idx = list(g.nodes[consumer]["prefetchable"]).index(tensor)
        return str(g.nodes[moved(consumer, layers)]["prefetchable"][idx])

    out: list[tuple[int, int, Prefetch]] = []
    for order, pf in enumerate(plan.prefetches):
        cw, hw = wpos[pf.consumer], wpos[pf.anchor]
        if cw in copies:
            continue
        if cw in block0:
            shifts = [(j * p, j * p) for j in range(periods)]  # (consumer, host) shifts
        elif cw >= copies.stop:  # epilogue or suffix consumer
            shifts = [(0, (L - W) if steady_start <= hw < copies.stop else 0)]
        else:
            shifts = [(0, 0)]
        for cs, hs in shifts:
            consumer = moved(pf.consumer, cs)
            host = moved(pf.anchor, hs)
            tensor = twin(pf.consumer, pf.tensor, cs) if cs else pf.tensor
            sync = chain[pos[host] + 1] if pf.sync is not None else None
            out.append(
                (
                    pos[host],
                    order,
                    Prefetch(tensor, pf.bytes, consumer, host, pf.delay_s, pf.offset_bytes, sync),
                )
            )
    out.sort(key=lambda x: (x[0], x[1]))
    return Plan("optimised", tuple(x[2] for x in out))
