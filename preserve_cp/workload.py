"""The inference workload a graph is built for: phase, batch, context, TP degree and dtypes."""

from __future__ import annotations

from dataclasses import InitVar, asdict, dataclass
from typing import Any, Literal

from .defaults import DEFAULT_BATCH, DEFAULT_CONTEXT, DEFAULT_DTYPE, DEFAULT_PHASE, DEFAULT_TP
from .errors import input_error
from .moe import parse_routing
from .units import DTYPE_BYTES

Phase = Literal["decode", "prefill"]
DTYPES = ("fp16", "bf16", "fp8", "int8", "fp4", "nvfp4")
ALLREDUCE_IMPLS = ("nccl", "custom")
LM_HEAD_MODES = ("sharded", "replicated")
ATTENTION_LAYOUTS = ("tp", "dp")
ALL_TO_ALL_KINDS = ("low_latency", "normal")
#: how a decode attention kernel reads a grouped-query KV cache (see Workload)
KV_READS = ("per_kv_head", "per_query_head")
#: fields whose default is left out of to_dict (graphs built before them do not move)
LAYOUT_DEFAULTS = {
    "routing": "uniform",
    "ep": 1,
    "attention": "tp",
    "pp": 1,
    "stage": 0,
    "microbatches": 1,
    "all_to_all": "low_latency",
    "kv_reads": "per_kv_head",
}


@dataclass(frozen=True)
class Workload:
    """One step of inference on a tensor-parallel group.

    ``decode``: one new token per sequence, attending over ``context`` cached tokens.
    ``prefill``: ``context`` prompt tokens per sequence, causal attention.

    How the software runs the step (these change costs, not the graph's shape, except
    ``lm_head``): ``graph_capture`` (CUDA graphs / compiled step vs eager launches),
    ``allreduce`` (``nccl``: the library's α-β collective; ``custom``: one-shot/two-shot
    kernel for small messages), ``lm_head`` (``sharded`` over TP ranks, or ``replicated``
    on every rank as some stacks do), ``stack`` (names the per-step host overhead in the
    hardware file, e.g. ``vllm``). ``routing`` (MoE models only: ``uniform`` or ``zipf:S``)
    sets how many distinct experts a step reads (:mod:`preserve_cp.moe`). ``kv_reads``: how
    the decode attention kernel reads a grouped-query KV cache: ``per_kv_head`` (each KV head
    once for its group of query heads, as FlashAttention, FlashInfer, XQA and today's paged
    kernels do) or ``per_query_head`` (every query head streams its KV head itself, as a
    multi-head kernel run on a GQA cache does: TensorRT-LLM's masked MHA before v0.7, whose
    changelog adds "MMHA optimization for MQA and GQA" in 0.7.0).

    Precisions: ``dtype`` sets weights, activations and KV-cache together (as the CLI's
    ``--dtype``; default bf16); ``weight_dtype``, ``act_dtype`` and ``kv_dtype`` override one.

    Defaults are those of every CLI command (:mod:`preserve_cp.defaults`): decode, batch 1,
    context 2048, tp 8, bf16.

    >>> w = Workload()
    >>> w.phase, w.batch, w.context, w.tp, w.weight_dtype
    ('decode', 1, 2048, 8, 'bf16')
    >>> Workload("decode", dtype="fp8", kv_dtype="bf16").weight_dtype
    'fp8'
    >>> Workload("decode", dtype="fp8", kv_dtype="bf16").kv_dtype
    'bf16'
    >>> Workload(phase="decode", batch=4, context=16384, tp=8).tokens
    4
    >>> Workload(phase="prefill", batch=2, context=1024, tp=8).tokens
    2048
    """

    phase: Phase = DEFAULT_PHASE  # the shared defaults (preserve_cp.defaults)
    batch: int = DEFAULT_BATCH
    context: int = DEFAULT_CONTEXT
    tp: int = DEFAULT_TP
    weight_dtype: str | None = None  # None: from ``dtype`` (always a str after __init__)
    act_dtype: str | None = None
    kv_dtype: str | None = None
    graph_capture: bool = True
    allreduce: str = "nccl"
    lm_head: str = "sharded"
    stack: str = ""
    routing: str = "uniform"
    ep: int = 1
    attention: str = "tp"
    pp: int = 1
    stage: int = 0
    microbatches: int = 1
    all_to_all: str = "low_latency"
    kv_reads: str = "per_kv_head"
    dtype: InitVar[str | None] = None

    def __post_init__(self, dtype: str | None) -> None:
        where = "workload"
        if dtype is not None and dtype not in DTYPES:
            raise input_error(where, "dtype", f"one of {', '.join(DTYPES)}", dtype)
        for field in ("weight_dtype", "act_dtype", "kv_dtype"):  # as the CLI's --dtype
            if getattr(self, field) is None:
                object.__setattr__(self, field, dtype or DEFAULT_DTYPE)
        if self.phase not in ("decode", "prefill"):
            raise input_error(where, "phase", "'decode' or 'prefill'", self.phase)
        for field, hi in (("batch", 1 << 20), ("context", 1 << 24), ("tp", 4096)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
                raise input_error(where, field, f"an integer in [1, {hi}]", value)
        for field in ("weight_dtype", "act_dtype", "kv_dtype"):
            value = getattr(self, field)
            if value not in DTYPES:
                raise input_error(where, field, f"one of {', '.join(DTYPES)}", value)
        if not isinstance(self.graph_capture, bool):
            raise input_error(where, "graph_capture", "true or false", self.graph_capture)
        for field, options in (("allreduce", ALLREDUCE_IMPLS), ("lm_head", LM_HEAD_MODES)):
            if getattr(self, field) not in options:
                raise input_error(
                    where, field, f"one of {', '.join(options)}", getattr(self, field)
                )
        if not isinstance(self.stack, str) or len(self.stack) > 64 or not self.stack.isprintable():
            raise input_error(where, "stack", "a short software-stack name", self.stack)
        parse_routing(self.routing, where)  # MoE routing model (preserve_cp.moe)
        for field, hi in (("ep", 4096), ("pp", 1024), ("microbatches", 1 << 20)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
                raise input_error(where, field, f"an integer in [1, {hi}]", value)
        for field, options in (
            ("attention", ATTENTION_LAYOUTS),
            ("all_to_all", ALL_TO_ALL_KINDS),
            ("kv_reads", KV_READS),
        ):
            if getattr(self, field) not in options:
                raise input_error(
                    where, field, f"one of {', '.join(options)}", getattr(self, field)
                )
        s = self.stage
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < self.pp:
            raise input_error(where, "stage", f"an integer in [0, {self.pp - 1}]", s)
        if self.tp % self.ep:
            raise input_error(
                where,
                "ep",
                f"a divisor of tp {self.tp} (experts EP x TP over the tp group)",
                self.ep,
            )
        if self.attention == "dp":
            if self.ep != self.tp:
                raise input_error(
                    where, "ep", f"tp ({self.tp}) with data-parallel attention", self.ep
                )
            if self.batch % self.tp:
                raise input_error(
                    where,
                    "batch",
                    f"a multiple of tp {self.tp} (data-parallel attention)",
                    self.batch,
                )
        if self.batch % self.microbatches:
            raise input_error(
                where, "microbatches", f"a divisor of batch {self.batch}", self.microbatches
            )

    @property
    def devices(self) -> int:
        """Devices of the deployment: ``tp`` per pipeline stage x ``pp`` stages."""
        return self.tp * self.pp

    @property
    def tokens(self) -> int:
        """Tokens processed by the step (batch for decode, batch x context for prefill)."""
        return self.batch if self.phase == "decode" else self.batch * self.context

    def bytes_of(self, kind: str) -> float:
        """Bytes per element of weights (``"weight"``), activations or KV-cache."""
        return DTYPE_BYTES[getattr(self, f"{kind}_dtype")]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key, default in LAYOUT_DEFAULTS.items():  # added later: older dicts do not move
            if d[key] == default:
                del d[key]
        return d
