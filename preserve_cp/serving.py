"""Serving units: time per output token, tokens/s, one request's latency, and HBM capacity.

A step's makespan is what a serving engineer calls the **time per output token** (TPOT,
decode: every sequence of the batch gets one token per step) or the **time to first token**
(TTFT, prefill: the whole prompt in one step). From it:

* ``tokens_per_s`` = the tokens the step produces (decode: ``batch``; prefill: ``batch x
  context`` prompt tokens) / makespan, for the whole deployment: the devices the graph spans
  (``graph["devices"]`` when the graph says so, else the TP degree), which all work on the
  same step; ``tokens_per_s_per_device`` divides it by those devices;
* :func:`request_latency`: one request of ``prompt`` tokens and ``output_len`` generated
  tokens (the batch's requests arrive together): the prefill step at the prompt, then
  ``output_len`` decode steps at contexts ``prompt``, ``prompt + 1``, ...,
  ``prompt + output_len - 1``. The decode step is evaluated at a few contexts (every eighth
  of that range and both ends), linearly interpolated between them and summed over every
  step: not one step times ``output_len``;
* :func:`capacity`: the largest decode batch whose weights, KV-cache and activation workspace
  fit in a device's HBM, less the reserve a serving stack keeps (vLLM's
  ``gpu_memory_utilization``, default 0.9:
  https://docs.vllm.ai/en/latest/configuration/engine_args.html).

>>> from preserve_cp.graph import build_graph
>>> from preserve_cp.workload import Workload
>>> from preserve_cp.estimate import estimate
>>> g = build_graph("llama3-8b", Workload("decode", batch=4, context=1024, tp=4))
>>> s = step_serving(g, estimate(g, "h100-sxm", plans=["vanilla"]))
>>> s["devices"], s["plan"], s["tokens_per_s"] == 4 / s["tpot_s"]
(4, 'vanilla', True)
>>> context_points(1024, 256)
[1024, 1056, 1088, 1120, 1152, 1183, 1215, 1247, 1279]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx

from .plan import Result

#: vLLM's default share of device memory the engine may use (``gpu_memory_utilization``):
#: https://docs.vllm.ai/en/latest/configuration/engine_args.html
DEFAULT_MEMORY_UTILIZATION = 0.9
#: the decode step is evaluated at every 1/SEGMENTS of the output's context range
SEGMENTS = 8
#: Workload's largest batch
MAX_BATCH = 1 << 20


def deployment_devices(g: nx.DiGraph) -> int:
    """The devices the graph's step spans: ``graph["devices"]`` when set, else the TP degree.

    >>> deployment_devices(nx.DiGraph(tp=8)), deployment_devices(nx.DiGraph(tp=8, devices=16))
    (8, 16)
    """
    for key in ("devices", "tp"):
        v = g.graph.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v >= 1:
            return v
    wl = g.graph.get("workload")
    tp = wl.get("tp") if isinstance(wl, dict) else None
    return tp if isinstance(tp, int) and tp >= 1 else 1


def plan_makespans(r: Result) -> dict[str, float]:
    """Step time of every plan the ``--json`` object lists: vanilla, greedy, streaming and
    fused (those computed) and ``optimised`` when the optimiser ran."""
    out: dict[str, float] = {}
    for name, s in (
        ("vanilla", r.baseline_makespan_s),
        ("greedy", r.greedy_makespan_s),
        ("streaming", r.streaming_makespan_s),
        ("fused", r.fused_makespan_s),
    ):
        if s is not None:
            out[name] = s
    if r.optimiser_ran:
        out["optimised"] = r.makespan_s
    return out


def chosen_plan(r: Result) -> str:
    """The name the outputs give the chosen plan (``optimised`` when the optimiser ran)."""
    return "optimised" if r.optimiser_ran else r.plan.name


def _rate(tokens: float, step_s: float) -> float | None:
    return tokens / step_s if step_s > 0 and math.isfinite(step_s) else None


def step_metrics(
    phase: str, batch: int, context: int, devices: int, step_s: float
) -> dict[str, Any]:
    """TPOT and tokens/s (decode) or TTFT and prompt tokens/s (prefill) of one step.

    >>> step_metrics("decode", 8, 1024, 4, 0.02)
    {'tpot_s': 0.02, 'tokens_per_s': 400.0, 'tokens_per_s_per_device': 100.0}
    >>> step_metrics("prefill", 2, 1000, 4, 0.5)["prompt_tokens_per_s"]
    4000.0
    """
    if phase == "decode":
        rate = _rate(batch, step_s)
        return {
            "tpot_s": step_s,
            "tokens_per_s": rate,
            "tokens_per_s_per_device": None if rate is None else rate / devices,
        }
    rate = _rate(batch * context, step_s)
    return {
        "ttft_s": step_s,
        "prompt_tokens_per_s": rate,
        "prompt_tokens_per_s_per_device": None if rate is None else rate / devices,
    }


def step_serving(g: nx.DiGraph, r: Result) -> dict[str, Any] | None:
    """The ``serving`` object of ``--json`` for result ``r`` of graph ``g``: the chosen plan's
    serving units, and every listed plan's under ``plans`` (``None`` for a graph not built
    from a workload). ``request`` is ``None`` here (:func:`request_latency` fills it)."""
    wl = g.graph.get("workload")
    if not isinstance(wl, dict) or wl.get("phase") not in ("decode", "prefill"):
        return None
    phase, batch, context = wl["phase"], int(wl["batch"]), int(wl["context"])
    devices = deployment_devices(g)

    def metrics(step_s: float) -> dict[str, Any]:
        return step_metrics(phase, batch, context, devices, step_s)

    return {
        "phase": phase,
        "batch": batch,
        "context": context,
        "devices": devices,
        "plan": chosen_plan(r),
        **metrics(r.makespan_s),
        "plans": {n: metrics(s) for n, s in plan_makespans(r).items()},
        "request": None,
    }


# -- one request: prefill + decode steps at growing context --------------------------------
def context_points(prompt: int, output_len: int, segments: int = SEGMENTS) -> list[int]:
    """The decode contexts evaluated for ``output_len`` steps after a ``prompt``: every
    ``1/segments`` of ``[prompt, prompt + output_len - 1]`` and both ends (no repeats).

    >>> context_points(100, 1), context_points(100, 3)
    ([100], [100, 101, 102])
    """
    last = prompt + output_len - 1
    return sorted({prompt + round(k * (last - prompt) / segments) for k in range(segments + 1)})


def sum_steps(points: Sequence[tuple[int, float]]) -> float:
    """The sum of a step time over every integer context from the first point's to the
    last's, the step time linear between consecutive points (exact for linear data).

    >>> sum_steps([(10, 1.0), (13, 4.0)])  # 1 + 2 + 3 + 4
    10.0
    >>> sum_steps([(5, 2.0)])
    2.0
    """
    total = 0.0
    for (a, sa), (b, sb) in zip(points, points[1:], strict=False):
        # contexts a .. b-1 of this segment: their mean is the line's value at (a + b - 1) / 2
        total += (b - a) * (sa + (sb - sa) * (b - 1 - a) / (2 * (b - a)))
    return total + points[-1][1]


def activation_workspace(g: nx.DiGraph) -> tuple[float, str]:
    """The activation workspace of a step and the op that sets it: the largest, over the
    ops, of the bytes an op reads that are not its weights or KV-cache (everything but its
    ``prefetchable`` tensors, so also the small norm scales) plus the bytes it writes.

    One op's inputs and output are live together; an engine frees an intermediate after its
    last reader, so the step's peak is the largest op's (vLLM reserves the peak of a
    profiling forward pass besides the weights and gives the KV-cache the rest:
    https://docs.vllm.ai/en/latest/api/vllm/utils/mem_utils/ ``MemoryProfilingResult``).
    In-place collectives count twice: conservative.

    >>> h = nx.DiGraph()
    >>> h.add_node("a", reads={"w": 100, "x": 8}, prefetchable=["w"], writes_bytes=4)
    >>> h.add_node("b", reads={"y": 4}, writes_bytes=4)
    >>> activation_workspace(h)
    (12.0, 'a')
    """
    best, where = 0.0, ""
    for n, a in g.nodes(data=True):
        own = set(a.get("prefetchable") or ())
        b = float(a.get("writes_bytes", 0.0)) + sum(
            float(v) for t, v in (a.get("reads") or {}).items() if t not in own
        )
        if b > best:
            best, where = b, str(n)
    return best, where


@dataclass(frozen=True)
class Footprint:
    """What one device holds for a decode batch (bytes)."""

    batch: int
    weights_bytes: float
    kv_cache_bytes: float
    activation_bytes: float
    activation_op: str

    @property
    def total_bytes(self) -> float:
        return self.weights_bytes + self.kv_cache_bytes + self.activation_bytes


def footprint(g: nx.DiGraph) -> Footprint:
    """The per-device footprint of graph ``g`` (``build_graph``'s byte counts)."""
    act, op = activation_workspace(g)
    wl = g.graph.get("workload") or {}
    return Footprint(
        int(wl.get("batch", 1)),
        float(g.graph.get("weights_bytes_per_device", 0.0)),
        float(g.graph.get("kv_cache_bytes_per_device", 0.0)),
        act,
        op,
    )


def ms_text(s: float | None) -> str:
    """A time in ms below a second, else in s."""
    if s is None:
        return "-"
    return f"{s * 1e3:.4f} ms" if s < 1 else f"{s:.4f} s"


def num_text(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f}"


def serving_lines(serving: dict[str, Any] | None) -> list[str]:
    """The text lines of ``preserve-cp solve`` for a ``serving`` object (none without one)."""
    if not serving:
        return []
    s, plans = serving, serving["plans"]
    where = f"batch {s['batch']} on {s['devices']} device{'s' if s['devices'] != 1 else ''}"
    van = plans.get("vanilla")
    if s["phase"] == "decode":
        line = (
            f"decode, {where}: TPOT {ms_text(s['tpot_s'])} ({s['plan']}), "
            f"{num_text(s['tokens_per_s'])} tokens/s, "
            f"{num_text(s['tokens_per_s_per_device'])} per device"
        )
        if van is not None and s["plan"] != "vanilla":
            line += f"; vanilla {num_text(van['tokens_per_s'])} tokens/s"
    else:
        line = (
            f"prefill, {where} x {s['context']} tokens: TTFT {ms_text(s['ttft_s'])} ({s['plan']}), "
            f"{num_text(s['prompt_tokens_per_s'])} prompt tokens/s, "
            f"{num_text(s['prompt_tokens_per_s_per_device'])} per device"
        )
        if van is not None and s["plan"] != "vanilla":
            line += f"; vanilla {num_text(van['prompt_tokens_per_s'])} prompt tokens/s"
    lines = ["", line]
    q = s.get("request")
    if q:
        pts = q["points"]
        lines.append(
            f"request of {q['prompt_len']} prompt + {q['output_len']} output tokens "
            f"(batch {q['batch']}): e2e {q['e2e_latency_s']:.4f} s = TTFT "
            f"{ms_text(q['ttft_s'])} + {q['output_len']} decode steps, mean TPOT "
            f"{ms_text(q['tpot_s'])} ({q['plan']}; {q['method']} at {len(pts)} contexts "
            f"{pts[0]['context']}..{pts[-1]['context']}, linear between them)"
        )
        v = q["plans"].get("vanilla")
        if v is not None and q["plan"] != "vanilla":
            lines.append(
                f"  vanilla: e2e {v['e2e_latency_s']:.4f} s, TTFT {ms_text(v['ttft_s'])}, "
                f"mean TPOT {ms_text(v['tpot_s'])}"
            )
    return lines
