"""Validation against published measurements (``preserve-cp validate``).

Each point of ``validation/measurements.yaml`` is run through the model as a plain solve of
the *vanilla* plan (the measured stacks do not prefetch) and compared with the published
value, metric by metric:

* ``time_per_output_token_ms``: one decode step at context input + output/2 (the mean step);
* ``tokens_per_s_per_user``: output / (prefill + output x step); ``output_tokens_per_s_total``:
  batch x output / (prefill + output x step) — published throughputs include the prompt;
* ``ttft_ms``: the prefill of the input tokens;
* ``e2e_latency_s``: prefill + output x the mean decode step (exact for linear growth);
* ``allreduce_latency_us``: the collective time (library α-β or custom kernel);
  ``allreduce_busbw_gb_per_s``: NCCL's bus bandwidth 2 (n-1)/n x message / time;
* ``all_to_all_latency_us``: one MoE dispatch or combine over ``ep`` ranks, each sending
  ``tokens x top_k x hidden`` elements (fp8 plus one fp32 scale per 128 for ``dispatch``,
  bf16 for ``combine``), priced by the point's ``all_to_all`` kernels (default low-latency).

Layout fields (``ep``, ``attention``, ``pp``, ``microbatches``, ``all_to_all``) and the
attention kernel's ``kv_reads`` go into the workload when a point gives them; a
tensor-parallel group larger than a node goes across nodes through the hardware's
``scale_out`` section. A pipeline (``pp`` > 1) step is
:func:`pipeline.pipeline_step_s` of the vanilla stage times for one micro-batch each.

How the stack ran the step comes from the point's ``stack``, ``cuda_graphs``, ``allreduce``
and ``lm_head`` fields (see :func:`run_options`). The error is signed:
(predicted - measured) / measured. Points the model cannot express are
reported as skipped with the reason (e.g. int4 weights, a model that is not shipped).
"""

from __future__ import annotations

import functools
import math
import re
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import networkx as nx

from ._yaml import data_dir, read_yaml_mapping
from .costs import collective_time_s, op_costs
from .errors import InfeasibleError, InputError
from .graph import build_graph
from .hardware import Hardware, list_hardware, load_hardware
from .machine import check_fits, machine_for
from .measured import check_source
from .models import list_models
from .pipeline import pipeline_step_s, stage_workloads
from .plan import Plan
from .simulate import simulate
from .workload import Workload

DEFAULT_SET = data_dir("validation") / "measurements.yaml"
#: fields of a point that set the parallel layout (Workload fields; defaults when absent)
LAYOUT_FIELDS = {
    "ep": int,
    "attention": str,
    "pp": int,
    "microbatches": int,
    "all_to_all": str,
    "kv_reads": str,
}
#: bytes per element of an MoE all-to-all by phase: fp8 with one fp32 scale per 128 (DeepEP's
#: dispatch), bf16 (combine)
ALL_TO_ALL_ELEMENT_BYTES = {"dispatch": 1 + 4 / 128, "combine": 2.0}
DECODE_METRICS = ("time_per_output_token_ms", "tokens_per_s_per_user", "output_tokens_per_s_total")
#: metrics made of a model's decode step and prefill (the rest are collectives)
STEP_METRICS = (*DECODE_METRICS, "ttft_ms", "e2e_latency_s")


@dataclass(frozen=True)
class Comparison:
    id: str
    split: str
    hardware: str
    model: str
    tp: int
    batch: int
    metric: str
    measured: float
    predicted: float | None
    error: float | None
    skipped: str = ""
    source: str = ""  # where the measurement was published (the point's ``source``)


def parse_precision(text: str) -> tuple[str, str, str] | None:
    """(weights, activations, KV) dtypes from a free-text precision, or None if unsupported.

    >>> parse_precision("int8 weight-only (per-channel), bf16 activations/KV")
    ('int8', 'bf16', 'bf16')
    >>> parse_precision("fp8 weights/activations (--enable_fp8), fp8 KV cache")
    ('fp8', 'fp8', 'fp8')
    >>> parse_precision("int4 weight-only") is None
    True
    """
    t = text.lower()
    if "int4" in t or "fp4" in t:
        return None
    act = "fp16" if re.search(r"\bfp16\b|float16", t) and "bf16" not in t else "bf16"
    if t.startswith("fp8") or "fp8 weights" in t:
        kv = "fp8" if "kv" in t or t.strip() == "fp8" or "'llama" in t else act
        return "fp8", "fp8", kv
    if "int8 weight-only" in t:
        return "int8", act, act
    return act, act, act


@functools.lru_cache(maxsize=256)
def _graph(model: str, wl: Workload) -> nx.DiGraph:
    return build_graph(model, wl)


def run_options(p: dict[str, Any]) -> dict[str, Any]:
    """How the point's software ran the step, as Workload fields (defaults where unstated).

    >>> run_options({"stack": "vllm", "cuda_graphs": "unknown", "allreduce": "custom"})
    {'graph_capture': True, 'allreduce': 'custom', 'lm_head': 'sharded', 'stack': 'vllm'}
    >>> run_options({"stack": "sglang", "ep": 8, "attention": "dp"})["ep"]
    8
    """
    graphs = p.get("cuda_graphs", True)
    opts: dict[str, Any] = {
        "graph_capture": graphs if isinstance(graphs, bool) else True,
        "allreduce": str(p.get("allreduce", "nccl")),
        "lm_head": str(p.get("lm_head", "sharded")),
        "stack": str(p.get("stack", "")),
    }
    for key, kind in LAYOUT_FIELDS.items():  # the parallel layout, where the point states one
        if p.get(key) is not None:
            opts[key] = kind(p[key])
    return opts


def _vanilla_s(
    phase: str,
    model: str,
    hw: Hardware,
    batch: int,
    context: int,
    tp: int,
    dt: tuple[str, str, str],
    opts: dict[str, Any],
) -> float:
    """Simulated step time of the vanilla plan (what a stack without prefetching runs); with
    pipeline stages, the pipeline's step over the stages' vanilla times."""
    wl = Workload(phase, batch, max(1, context), tp, *dt, **opts)  # type: ignore[arg-type]
    if wl.pp > 1:
        stages = [_stage_vanilla_s(model, w, hw) for w in stage_workloads(wl)]
        return pipeline_step_s(stages, wl.microbatches)
    return _stage_vanilla_s(model, wl, hw)


def _stage_vanilla_s(model: str, wl: Workload, hw: Hardware) -> float:
    g = _graph(model, wl)
    check_fits(g, hw)
    return simulate(g, op_costs(g, hw), Plan("vanilla"), machine_for(hw)).makespan_s


def predict(p: dict[str, Any], hw: Hardware | None = None, *, calibrated: bool = True) -> float:
    """The model's value for one point, in the point's metric and unit (on ``hw`` if given)."""
    hw = hw if hw is not None else load_hardware(p["hardware"], calibrated=calibrated)
    metric = p["metric"]
    opts = run_options(p)
    if metric.startswith("allreduce"):
        n = int(p["devices"])
        msg = float(p["message_bytes"])
        t = collective_time_s("allreduce", msg, n, hw, opts["allreduce"])
        if metric == "allreduce_latency_us":
            return t * 1e6
        return 2 * (n - 1) / n * msg / t / 1e9
    if metric == "all_to_all_latency_us":
        return _all_to_all_us(p, hw)
    dt = parse_precision(str(p["precision"]))
    if dt is None:
        raise InputError(f"{p['id']}: precision: unsupported ({p['precision']})")
    if metric not in STEP_METRICS:
        raise InputError(f"{p['id']}: metric: unknown {metric!r}")
    b, tp = int(p["batch"]), int(p["tp"])
    step = pre = None
    if metric != "ttft_ms":
        step = _vanilla_s("decode", p["model"], hw, b, decode_context(p), tp, dt, opts)
    if metric != "time_per_output_token_ms":
        pre = _vanilla_s("prefill", p["model"], hw, b, int(p["input_tokens"]), tp, dt, opts)
    return metric_value(p, step, pre)


def decode_context(p: dict[str, Any]) -> int:
    """Context of the mean decode step, at which every decode metric is priced (a step's
    cost grows linearly with its context, so ``output`` steps cost ``output`` x this one).

    >>> decode_context({"input_tokens": 128, "output_tokens": 2048})
    1152
    >>> decode_context({"input_tokens": 5, "output_tokens": 201})
    105
    """
    return int(p["input_tokens"]) + int(p["output_tokens"]) // 2


def metric_value(p: dict[str, Any], step_s: float | None, prefill_s: float | None) -> float:
    """The point's metric, in its unit, from one decode step and the prefill (seconds).

    >>> point = {"metric": "tokens_per_s_per_user", "batch": 1, "output_tokens": 200}
    >>> round(metric_value(point, 0.01, 0.02), 3)  # 200 / (0.02 + 200 x 0.01)
    99.01
    >>> metric_value({"metric": "ttft_ms", "output_tokens": 1}, None, 0.036)
    36.0
    """
    metric = str(p["metric"])
    if metric == "time_per_output_token_ms":
        assert step_s is not None
        return step_s * 1e3
    assert prefill_s is not None
    if metric == "ttft_ms":
        return prefill_s * 1e3
    assert step_s is not None
    out = int(p["output_tokens"])
    e2e = prefill_s + out * step_s
    if metric == "e2e_latency_s":
        return e2e
    if metric == "tokens_per_s_per_user":
        return out / e2e
    if metric == "output_tokens_per_s_total":
        return int(p["batch"]) * out / e2e
    raise InputError(f"{p.get('id', 'point')}: metric: unknown {metric!r}")


def _all_to_all_us(p: dict[str, Any], hw: Hardware) -> float:
    """One MoE dispatch/combine of the point (µs): every rank sends tokens x top_k x hidden
    elements of its phase's size over ``ep`` ranks."""
    phase = str(p.get("phase", ""))
    if phase not in ALL_TO_ALL_ELEMENT_BYTES:
        raise InputError(f"{p['id']}: phase: expected dispatch or combine, found {phase!r}")
    size = int(p["tokens"]) * int(p["top_k"]) * int(p["hidden"]) * ALL_TO_ALL_ELEMENT_BYTES[phase]
    kind = str(p.get("all_to_all", "low_latency"))
    return collective_time_s("all_to_all", size, int(p["ep"]), hw, variant=kind) * 1e6


def load_points(path: str | Path | None = None) -> list[dict[str, Any]]:
    f = Path(path) if path is not None else DEFAULT_SET
    data = read_yaml_mapping(f)
    pts = data.get("points")
    if not isinstance(pts, list) or not pts:
        raise InputError(f"{f}: points: expected a non-empty list")
    for i, p in enumerate(pts):
        for key in ("id", "split", "hardware", "model", "metric", "value"):
            if not isinstance(p, dict) or key not in p:
                raise InputError(f"{f}: points[{i}].{key}: required field is missing")
        if (
            not isinstance(p["value"], int | float)
            or not math.isfinite(p["value"])
            or p["value"] <= 0
        ):
            raise InputError(f"{f}: points[{i}].value: expected a number > 0")
    return pts


def compare(
    points: list[dict[str, Any]], *, calibrated: bool = True, timing: str | None = "roofline"
) -> list[Comparison]:
    """Every point's prediction and signed error (``timing``: ``roofline`` or ``measured``,
    the op timing of every device, :meth:`Hardware.with_timing`; None: each file's own)."""
    shipped_hw, shipped_models = set(list_hardware()), set(list_models())
    devices = {  # each device file read once
        name: load_hardware(name, calibrated=calibrated, timing=timing)
        for name in {str(p["hardware"]) for p in points} & shipped_hw
    }
    for hw in devices.values():  # the install hint once, not a skip reason on every point
        if hw.timing == "measured":
            check_source(hw)
    out = []
    for p in points:
        base: dict[str, Any] = dict(
            id=str(p["id"]),
            split=str(p["split"]),
            hardware=str(p["hardware"]),
            model=str(p["model"]),
            tp=int(p.get("tp") or p.get("devices") or 1),
            batch=int(p.get("batch") or 0),
            metric=str(p["metric"]),
            measured=float(p["value"]),
            source=str(p.get("source") or ""),
        )
        reason = ""
        if p["hardware"] not in shipped_hw:
            reason = "hardware not shipped"
        elif p["model"] != "none" and p["model"] not in shipped_models:
            reason = "model not shipped"
        pred = None
        if not reason:
            try:
                pred = predict(p, devices[p["hardware"]])
            except InfeasibleError:
                reason = "does not fit in HBM in the model"
            except InputError as exc:
                reason = str(exc).split(": ", 1)[-1]
        measured = float(base["measured"])
        err = None if pred is None else (pred - measured) / measured
        out.append(Comparison(**base, predicted=pred, error=err, skipped=reason))
    return out


def summary(rows: list[Comparison]) -> dict[str, Any]:
    """Median |error| and share within 10 % per split (and decode-only holdout)."""
    res: dict[str, Any] = {"points": len(rows), "skipped": sum(bool(r.skipped) for r in rows)}
    decode = {"time_per_output_token_ms", "tokens_per_s_per_user", "output_tokens_per_s_total"}
    groups = {
        "train": [r for r in rows if r.split == "train"],
        "holdout": [r for r in rows if r.split == "holdout"],
        "holdout_decode": [r for r in rows if r.split == "holdout" and r.metric in decode],
    }
    for name, grp in groups.items():
        errs = [abs(r.error) for r in grp if r.error is not None]
        res[name] = {
            "n": len(errs),
            "median_abs_error": statistics.median(errs) if errs else None,
            "share_within_10pct": sum(e <= 0.10 for e in errs) / len(errs) if errs else None,
        }
    return res


def as_dicts(rows: list[Comparison]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
