"""One request's latency and a device's capacity: the serving computations that solve.

:func:`request_latency` (``solve --output-len``) evaluates the decode step at a few contexts and
integrates it; :func:`capacity` (``preserve-cp capacity``) finds the largest decode batch that
fits in HBM. The units and the arithmetic they share are in :mod:`preserve_cp.serving`; this
module runs the solves and the fast path behind them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx

from . import units
from .errors import InfeasibleError, input_error
from .plan import Result
from .serving import (
    DEFAULT_MEMORY_UTILIZATION,
    MAX_BATCH,
    Footprint,
    chosen_plan,
    context_points,
    deployment_devices,
    footprint,
    ms_text,
    num_text,
    plan_makespans,
    step_serving,
    sum_steps,
)


def _evaluate(g: nx.DiGraph, hw: Any, plans: Sequence[str] | None, options: Any) -> Result:
    from .estimate import estimate
    from .solve import solve

    if plans is None:
        return solve(g, hw, options=options)
    return estimate(g, hw, plans=plans, options=options)


def request_latency(
    model: Any,
    workload: Any,
    hw: Any,
    output_len: int,
    *,
    plans: Sequence[str] | None = None,
    options: Any = None,
    first: Result | None = None,
    build: Callable[[Any, Any], nx.DiGraph] | None = None,
) -> dict[str, Any]:
    """One request's latency: the ``request`` object of ``serving`` in ``--json``.

    ``workload`` is the decode workload at the prompt length (its ``context``); ``plans``
    the fast path's baselines (:func:`preserve_cp.estimate.estimate` at every point), or
    ``None`` to solve (the optimiser) at every point: the prefill step and the decode step at
    :func:`context_points`. ``first``: the result already computed at the prompt context.
    Every plan the points all list is integrated (``plans``); the top-level numbers follow
    each point's chosen plan (``plan``).
    """
    from .graph import build_graph

    build = build or build_graph
    if isinstance(output_len, bool) or not isinstance(output_len, int) or output_len < 1:
        raise input_error("--output-len", "value", "an integer >= 1", output_len)
    if workload.phase != "decode":
        raise input_error("--output-len", "phase", "decode (the prompt is --context)", "prefill")
    prompt, batch = workload.context, workload.batch
    contexts = context_points(prompt, output_len)
    pre = _evaluate(
        build(model, dataclasses.replace(workload, phase="prefill")), hw, plans, options
    )
    steps: list[Result] = []
    for c in contexts:
        if c == prompt and first is not None:
            steps.append(first)
        else:
            wl = dataclasses.replace(workload, context=c)
            steps.append(_evaluate(build(model, wl), hw, plans, options))
    per_point = [plan_makespans(r) | {"chosen": r.makespan_s} for r in steps]
    names = [n for n in plan_makespans(pre) if all(n in p for p in per_point)]

    def latency(ttft: float, key: str) -> dict[str, float]:
        decode = sum_steps([(c, p[key]) for c, p in zip(contexts, per_point, strict=True)])
        return {"ttft_s": ttft, "e2e_latency_s": ttft + decode, "tpot_s": decode / output_len}

    pre_spans = plan_makespans(pre)
    solved = plans is None
    how = "solve" if solved else f"fast path ({','.join(plans or [])})"
    return {
        "prompt_len": prompt,
        "output_len": output_len,
        "batch": batch,
        "method": how,
        "plan": "optimised" if solved else chosen_plan(steps[0]),
        **latency(pre.makespan_s, "chosen"),
        "plans": {n: latency(pre_spans[n], n) for n in names},
        "prefill_step_s": pre_spans | {"chosen": pre.makespan_s},
        "points": [{"context": c, "step_s": p} for c, p in zip(contexts, per_point, strict=True)],
        "statuses": sorted({r.status for r in (pre, *steps)}),
    }


# -- capacity: the largest batch that fits -------------------------------------------------
@dataclass(frozen=True)
class Capacity:
    """The answer of :func:`capacity` (bytes per device; ``decode`` as in ``serving``)."""

    model: str
    hardware: str
    workload: dict[str, Any]
    devices: int
    memory_utilization: float
    hbm_bytes: float
    usable_bytes: float
    kv_bytes_per_sequence: float
    fit: Footprint
    over: Footprint | None  # the batch one larger (None at the Workload's largest batch)
    decode: dict[str, Any] | None = None
    status: str = ""

    @property
    def max_batch(self) -> int:
        return self.fit.batch

    def to_dict(self) -> dict[str, Any]:
        """The ``preserve-cp capacity --json`` object."""

        def fp(f: Footprint | None) -> dict[str, Any] | None:
            if f is None:
                return None
            return {
                "batch": f.batch,
                "weights_bytes": f.weights_bytes,
                "kv_cache_bytes": f.kv_cache_bytes,
                "activation_bytes": f.activation_bytes,
                "activation_op": f.activation_op,
                "total_bytes": f.total_bytes,
            }

        return {
            "model": self.model,
            "hardware": self.hardware,
            "workload": self.workload,
            "devices": self.devices,
            "memory_utilization": self.memory_utilization,
            "hbm_bytes": self.hbm_bytes,
            "usable_bytes": self.usable_bytes,
            "max_batch": self.max_batch,
            "weights_bytes": self.fit.weights_bytes,
            "kv_bytes_per_sequence": self.kv_bytes_per_sequence,
            "activation_bytes": self.fit.activation_bytes,
            "activation_op": self.fit.activation_op,
            "at_max_batch": fp(self.fit),
            "at_next_batch": fp(self.over),
            "status": self.status,
            "decode": self.decode,
        }


def capacity(
    model: Any,
    workload: Any,
    hw: Any,
    *,
    memory_utilization: float = DEFAULT_MEMORY_UTILIZATION,
    solve: bool = False,
    options: Any = None,
) -> Capacity:
    """The largest decode batch of ``workload`` (its ``batch`` is ignored) whose weights,
    KV-cache and activation workspace (:func:`activation_workspace`) fit in
    ``memory_utilization`` of one device's HBM, and its decode step: vanilla on the fast path
    (:func:`preserve_cp.estimate.estimate`), and the optimiser's plan too with ``solve``.

    Raises InfeasibleError when not even one sequence fits.
    """
    from .graph import build_graph
    from .hardware import load_hardware

    if (
        isinstance(memory_utilization, bool)
        or not isinstance(memory_utilization, int | float)
        or not 0 < memory_utilization <= 1
    ):
        raise input_error(
            "--memory-utilization", "value", "a fraction in (0, 1]", memory_utilization
        )
    hardware = load_hardware(hw)
    budget = memory_utilization * hardware.hbm_capacity_bytes
    wl = dataclasses.replace(workload, phase="decode", batch=1)
    graphs: dict[int, nx.DiGraph] = {}
    fps: dict[int, Footprint] = {}

    def at(b: int) -> Footprint:
        if b not in fps:
            graphs[b] = build_graph(model, dataclasses.replace(wl, batch=b))
            fps[b] = footprint(graphs[b])
        return fps[b]

    one = at(1)
    name = str(graphs[1].graph.get("model", model))
    if one.total_bytes > budget:
        raise InfeasibleError(
            f"{name} on {hardware.name}: one sequence of context {wl.context} at tp {wl.tp} "
            f"needs {one.total_bytes / units.GB:.2f} GB per device (weights "
            f"{one.weights_bytes / units.GB:.2f} GB + KV-cache "
            f"{one.kv_cache_bytes / units.GB:.2f} GB + activations "
            f"{one.activation_bytes / units.GB:.3f} GB); {memory_utilization:g} of HBM is "
            f"{budget / units.GB:.2f} GB (raise tp or lower the context)"
        )
    # everything but the weights grows linearly with the batch: a first guess, then checked
    per_seq = one.kv_cache_bytes + one.activation_bytes
    guess = MAX_BATCH if per_seq <= 0 else int((budget - one.weights_bytes) // per_seq)
    lo, hi = 1, MAX_BATCH + 1  # at(lo) fits; hi does not (or is past the largest batch)
    guess = max(1, min(guess, MAX_BATCH))
    if at(guess).total_bytes <= budget:
        lo = guess
        step = 1
        while lo < MAX_BATCH:  # up by doubling steps until one does not fit
            nxt = min(lo + step, MAX_BATCH)
            if at(nxt).total_bytes > budget:
                hi = nxt
                break
            lo, step = nxt, step * 2
    else:
        hi = guess
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if at(mid).total_bytes <= budget:
            lo = mid
        else:
            hi = mid
    over = at(lo + 1) if lo < MAX_BATCH else None
    g = graphs[lo]
    r = _evaluate(g, hardware, None if solve else ["vanilla"], options)
    return Capacity(
        model=name,
        hardware=hardware.name,
        workload=dict(g.graph.get("workload") or {}),
        devices=deployment_devices(g),
        memory_utilization=float(memory_utilization),
        hbm_bytes=hardware.hbm_capacity_bytes,
        usable_bytes=budget,
        kv_bytes_per_sequence=one.kv_cache_bytes,
        fit=at(lo),
        over=over,
        decode=step_serving(g, r),
        status=r.status,
    )


# -- text ----------------------------------------------------------------------------------
def capacity_text(c: Capacity) -> str:
    """The text of ``preserve-cp capacity``."""
    wl, GB = c.workload, units.GB
    f, o = c.fit, c.over
    lines = [
        f"{c.model} on {c.hardware}: decode, context {wl.get('context')}, tp {wl.get('tp')}, "
        f"weights/acts/KV {wl.get('weight_dtype')}/{wl.get('act_dtype')}/{wl.get('kv_dtype')}",
        f"per device: HBM {c.hbm_bytes / GB:.2f} GB, usable {c.usable_bytes / GB:.2f} GB "
        f"(memory utilization {c.memory_utilization:g})",
        f"  weights                 {f.weights_bytes / GB:10.3f} GB",
        f"  KV-cache per sequence   {c.kv_bytes_per_sequence / units.MB:10.3f} MB",
        f"  activation workspace    {f.activation_bytes / units.MB:10.3f} MB at batch {f.batch} "
        f"(largest op's inputs + output: {f.activation_op})",
        f"largest batch: {f.batch} (weights {f.weights_bytes / GB:.3f} + KV-cache "
        f"{f.kv_cache_bytes / GB:.3f} + activations {f.activation_bytes / GB:.3f} = "
        f"{f.total_bytes / GB:.3f} GB of {c.usable_bytes / GB:.3f} GB)",
    ]
    if o is not None:
        lines.append(f"batch {o.batch} would need {o.total_bytes / GB:.3f} GB")
    d = c.decode
    if d:
        van = d["plans"].get("vanilla")
        if van is not None:
            lines.append(
                f"decode at batch {f.batch} on {c.devices} devices: vanilla step "
                f"{ms_text(van['tpot_s'])}, {num_text(van['tokens_per_s'])} tokens/s, "
                f"{num_text(van['tokens_per_s_per_device'])} per device"
            )
        opt = d["plans"].get("optimised")
        if opt is not None:
            lines.append(
                f"  optimised step {ms_text(opt['tpot_s'])}, "
                f"{num_text(opt['tokens_per_s'])} tokens/s, "
                f"{num_text(opt['tokens_per_s_per_device'])} per device (status {c.status})"
            )
    return "\n".join(lines)
