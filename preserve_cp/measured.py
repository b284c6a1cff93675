"""Measured kernel times: NVIDIA aiconfigurator-core's per-kernel tables (``--timing measured``).

aiconfigurator-core (Apache-2.0; ``pip install "preserve-cp[measured]"``) ships latencies
measured on real GPUs as parquet tables, ``systems/data/<system>/<op>/<backend>/<version>/``.
A hardware file's ``measured`` section names the system, backend and version; this module
reads two op families from them, lazily and once per process:

* ``gemm/gemm_perf.parquet``: one dense GEMM ``(m, n, k, gemm_dtype)``;
* ``attention/generation_attention_perf.parquet`` (decode: ``batch_size``, ``step`` = tokens
  already in the KV-cache, ``num_heads``, ``num_key_value_heads``, ``head_dim``,
  ``kv_cache_dtype``) and ``context_attention_perf.parquet`` (prefill: ``isl`` = prompt
  tokens, ``attn_dtype`` as well).
* ``moe/moe_perf.parquet``: one whole mixture-of-experts layer (TensorRT-LLM's fused MoE:
  the token permutation, the gate/up grouped GEMM, the activation and the down grouped GEMM)
  by ``num_tokens`` of the step, for one ``(moe_dtype, hidden_size, inter_size, topk,
  num_experts, moe_tp_size, moe_ep_size, distribution)``. The graph has the two grouped GEMMs
  as ops of their own (``experts_gate_up``, ``experts_down``), so each takes the share of the
  layer's time that its expert weights are of the layer's (2/3 and 1/3 for a gated MLP).
  Its floor is the same share of the layer's time, at the same tokens, with the smallest
  expert weights (hidden x inter) the file has for the same top-k, experts, layout and dtype
  (the layer itself when it is the smallest: then only what HBM's peak could move of its
  bytes is left for a prefetch to shorten, by costs.measured_parts). The graph's own
  ``experts_act`` op is then counted twice (a few µs, as RoPE in attention). Uniform routing
  reads the ``balanced`` rows; other routings keep the roofline.

Glossary (used word for word in the code):

table
    the rows of one file that share every categorical column (dtype, kv heads, head dim,
    window 0, one kernel source); its numeric columns span a *grid*.
kernel source
    the kernel a row was measured with (``torch_flow``, ``vllm_flash_attn_fa3`` ...); where a
    file holds several for the same key, the one with the most rows is used.
lookup
    the time at a shape: log-linear interpolation of ``log(latency)`` in ``log(coordinate)``
    between the two grid values around each coordinate (multilinear over the axes, so exact
    on a grid point and monotone between two rows that are); below an axis' smallest value,
    the smallest value's time (kernels that small are latency-bound); above its largest, that
    time x (x / largest)^g, ``g`` = 2 for the prompt length of prefill attention (causal work
    grows with its square) and 1 for every other axis (work grows linearly). A grid point the
    file lacks that the lookup needs, or a key it has no table for: no entry (the op keeps
    the roofline).
floor
    the lookup at the same shape with its byte-carrying sizes at the table's smallest (``n``
    and ``k`` of a GEMM, the tokens of attention): latency the op pays however few bytes it
    reads from HBM (TensorRT-LLM's fp8 GEMMs take 12.2 µs on an H100 even at n = k = 32);
    costs.measured_parts keeps it out of what a prefetch can shorten.

What a table's ``latency`` is (aiconfigurator's collectors): milliseconds per op, the mean
over CUDA-graph replays timed with CUDA events, so GPU time with no host launch cost (the
cost model adds its ``kernel_overhead`` on top, as for a roofline op). GEMMs run TensorRT-LLM's
``Linear`` (for fp8 the activation quantisation is part of it) over several copies of the
weight when it is small, so that repeated calls do not all hit L2; attention runs the whole
attention op on a fused QKV input (RoPE and the KV-cache append included, which the graph
also counts as its own ``rope`` op: a few µs per layer counted twice).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .hardware import Hardware, MeasuredSource

#: the one-line answer when the tables are asked for and the package is missing
INSTALL_HINT = (
    "timing measured: needs NVIDIA's kernel tables from aiconfigurator-core, which is not "
    'installed; install the extra: pip install "preserve-cp[measured]" (or use --timing '
    "roofline)"
)
#: our dtype names -> the tables' (bf16 and fp16 run at the same rate; the tables are bf16)
GEMM_DTYPES = {  # (weights, activations) -> gemm_dtype
    ("bf16", "bf16"): "bfloat16",
    ("fp16", "fp16"): "bfloat16",
    ("bf16", "fp16"): "bfloat16",
    ("fp16", "bf16"): "bfloat16",
    ("fp8", "fp8"): "fp8",
    ("int8", "bf16"): "int8_wo",
    ("int8", "fp16"): "int8_wo",
    ("int8", "int8"): "sq",
    ("fp4", "fp4"): "nvfp4",
    ("nvfp4", "nvfp4"): "nvfp4",
    ("fp4", "nvfp4"): "nvfp4",
    ("nvfp4", "fp4"): "nvfp4",
}
KV_DTYPES = {"bf16": "bfloat16", "fp16": "bfloat16", "fp8": "fp8"}
MS = 1e-3


@dataclass(frozen=True)
class Grid:
    """One table as a grid: sorted coordinates per axis, ``log`` of the time in seconds at
    each grid point (NaN where the file has no row), and the growth exponent per axis."""

    axes: tuple[np.ndarray, ...]
    log_time: np.ndarray
    growth: tuple[float, ...]
    kernel: str
    time: np.ndarray  # seconds at each grid point (NaN where no row): a grid point exactly

    def time_s(self, *point: float) -> float | None:
        """Seconds at ``point`` (one coordinate per axis), or None where the grid cannot say.

        >>> g = grid_from_rows([np.array([1, 4]), np.array([8, 8])], np.array([1.0, 4.0]),
        ...                    (1.0, 1.0), "k")
        >>> [round(g.time_s(m, 8) * 1e3, 9) for m in (1, 2, 4, 8)]  # log-linear, then x m
        [1.0, 2.0, 4.0, 8.0]
        """
        around: list[list[tuple[int, float]]] = []
        extra = 0.0  # log of the factor beyond the largest grid value
        for values, x, g in zip(self.axes, point, self.growth, strict=True):
            x = float(x)
            if not x > 0 or not math.isfinite(x):
                return None
            if x <= values[0]:
                around.append([(0, 1.0)])
            elif x >= values[-1]:
                around.append([(len(values) - 1, 1.0)])
                extra += g * math.log(x / values[-1])
            else:
                i = int(np.searchsorted(values, x, side="right")) - 1
                lo, hi = math.log(values[i]), math.log(values[i + 1])
                t = (math.log(x) - lo) / (hi - lo)
                around.append([(i, 1.0 - t), (i + 1, t)] if t > 0 else [(i, 1.0)])
        if extra == 0.0 and all(len(c) == 1 for c in around):  # a grid point: its row
            v = float(self.time[tuple(c[0][0] for c in around)])
            return None if math.isnan(v) else v
        total = 0.0
        for corner in itertools.product(*around):
            v = float(self.log_time[tuple(i for i, _ in corner)])
            if math.isnan(v):
                return None
            total += math.prod(w for _, w in corner) * v
        return math.exp(total + extra)


def grid_from_rows(
    coords: list[np.ndarray], latency_ms: np.ndarray, growth: tuple[float, ...], kernel: str
) -> Grid:
    """The grid of a table's rows (``coords``: one array per axis; repeated points: the mean)."""
    axes = tuple(np.unique(c.astype(float)) for c in coords)
    index = tuple(np.searchsorted(a, c.astype(float)) for a, c in zip(axes, coords, strict=True))
    shape = tuple(len(a) for a in axes)
    sums, counts = np.zeros(shape), np.zeros(shape)
    np.add.at(sums, index, latency_ms.astype(float))
    np.add.at(counts, index, 1.0)
    time = np.where(counts > 0, sums / np.maximum(counts, 1.0) * MS, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_time = np.log(time)
    return Grid(axes, log_time, growth, kernel, time)


# -- the files ---------------------------------------------------------------------------
def data_root() -> Path:
    """aiconfigurator-core's ``systems/data`` folder; InputError (the install hint) without it."""
    try:
        import aiconfigurator_core
        import pyarrow.parquet  # noqa: F401  (aiconfigurator-core's own dependency)
    except ImportError:
        raise InputError(INSTALL_HINT) from None
    return Path(aiconfigurator_core.__file__).resolve().parent / "systems" / "data"


def check_source(hw: Hardware) -> None:
    """Raise InputError when ``hw``'s ``measured`` section names tables that are not there
    (nothing to check without the section: every op keeps the roofline)."""
    if hw.measured is None:
        return
    root = data_root()
    for src in hw.measured.sources():
        gemm = root / src.system / "gemm" / src.backend
        if (gemm / src.version).is_dir():
            continue
        found = sorted(p.name for p in gemm.iterdir()) if gemm.is_dir() else []
        systems = sorted(p.name for p in root.iterdir() if p.is_dir())
        expected = (
            f"a version among {found}" if found else f"a system/backend among {systems[:12]}..."
        )
        raise InputError(
            f"{hw.source_file or hw.name}: measured: no aiconfigurator-core GEMM tables for "
            f"{src.system}/{src.backend}/{src.version}; expected {expected}"
        )


@functools.cache
def _columns(path: str, names: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The named columns of one parquet file (a missing column: None entries), or None."""
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.is_file():
        return None
    table = pq.read_table(p)
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name in table.column_names:
            out[name] = table.column(name).to_numpy(zero_copy_only=False)
        else:
            out[name] = np.array([None] * table.num_rows, dtype=object)
    return out


def _file(src: MeasuredSource, op: str, name: str) -> str:
    return str(data_root() / src.system / op / src.backend / src.version / f"{name}.parquet")


def _table(
    cols: dict[str, np.ndarray], keys: dict[str, Any], axes: tuple[str, ...], growth: tuple
) -> Grid | None:
    """The grid of the rows matching ``keys`` (one kernel source: the one with most rows)."""
    lat = cols["latency"].astype(float)
    mask = np.isfinite(lat) & (lat > 0)
    for col, want in keys.items():
        values = cols[col]
        if want == 0 and values.dtype == object:  # no window column: every row is window 0
            continue
        mask &= values == want
    if not mask.any():
        return None
    sources, counts = np.unique(cols["kernel_source"][mask].astype(str), return_counts=True)
    kernel = str(sources[int(np.argmax(counts))])
    mask &= cols["kernel_source"].astype(str) == kernel
    return grid_from_rows([cols[a][mask] for a in axes], lat[mask], growth, kernel)


GEMM_COLUMNS = ("kernel_source", "gemm_dtype", "m", "n", "k", "latency")
ATTENTION_COLUMNS = (
    "kernel_source",
    "batch_size",
    "isl",
    "step",
    "num_heads",
    "num_key_value_heads",
    "head_dim",
    "window_size",
    "attn_dtype",
    "kv_cache_dtype",
    "latency",
)


MOE_COLUMNS = (
    "kernel_source",
    "moe_dtype",
    "num_tokens",
    "hidden_size",
    "inter_size",
    "topk",
    "num_experts",
    "moe_tp_size",
    "moe_ep_size",
    "distribution",
    "latency",
)
#: our (weights, activations) dtypes -> the MoE table's moe_dtype, in order of preference
MOE_DTYPES = {
    ("bf16", "bf16"): ("bfloat16",),
    ("fp16", "fp16"): ("bfloat16",),
    ("fp8", "fp8"): ("fp8", "fp8_block"),  # per-tensor, else block-scaled (DeepSeek's) fp8
    ("fp4", "bf16"): ("w4a16_mxfp4",),
}


@functools.cache
def moe_grid(src: MeasuredSource, key: tuple[Any, ...]) -> Grid | None:
    """The MoE table over ``num_tokens`` for ``key`` = (moe_dtype, hidden_size, inter_size,
    topk, num_experts, moe_tp_size, moe_ep_size, distribution), or None."""
    cols = _columns(_file(src, "moe", "moe_perf"), MOE_COLUMNS)
    if cols is None:
        return None
    names = MOE_COLUMNS[1:2] + MOE_COLUMNS[3:10]
    return _table(cols, dict(zip(names, key, strict=True)), ("num_tokens",), (1.0,))


@functools.cache
def gemm_grid(src: MeasuredSource, gemm_dtype: str) -> Grid | None:
    """The GEMM table of ``gemm_dtype`` over (m, n, k), or None."""
    cols = _columns(_file(src, "gemm", "gemm_perf"), GEMM_COLUMNS)
    if cols is None:
        return None
    return _table(cols, {"gemm_dtype": gemm_dtype}, ("m", "n", "k"), (1.0, 1.0, 1.0))


@functools.cache
def decode_attention_grid(
    src: MeasuredSource, kv_dtype: str, kv_heads: int, head_dim: int
) -> Grid | None:
    """The decode-attention table over (heads, batch, cached tokens), or None."""
    cols = _columns(_file(src, "attention", "generation_attention_perf"), ATTENTION_COLUMNS)
    if cols is None:
        return None
    keys = {
        "kv_cache_dtype": kv_dtype,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "window_size": 0,
    }
    return _table(cols, keys, ("num_heads", "batch_size", "step"), (1.0, 1.0, 1.0))


@functools.cache
def prefill_attention_grid(
    src: MeasuredSource, attn_dtype: str, kv_dtype: str, kv_heads: int, head_dim: int
) -> Grid | None:
    """The prefill-attention table over (heads, batch, prompt tokens), or None."""
    cols = _columns(_file(src, "attention", "context_attention_perf"), ATTENTION_COLUMNS)
    if cols is None:
        return None
    keys = {
        "attn_dtype": attn_dtype,
        "kv_cache_dtype": kv_dtype,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "window_size": 0,
    }
    return _table(cols, keys, ("num_heads", "batch_size", "isl"), (1.0, 1.0, 2.0))


# -- lookups -----------------------------------------------------------------------------
@dataclass(frozen=True)
class OpTime:
    """A measured op: ``vanilla_s``, its time with nothing in L2, and ``floor_s``, the table's
    time at the same shape with its byte-carrying sizes at the table's smallest (``n`` and
    ``k`` of a GEMM; the tokens of attention): latency that fewer bytes from HBM cannot remove
    (kernel prologue, fp8 activation quantisation, split-K reduction ...)."""

    vanilla_s: float
    floor_s: float


def _measure(grid: Grid | None, point: tuple[float, ...], small: tuple[int, ...]) -> OpTime | None:
    """The time at ``point`` and its floor (the axes in ``small`` at their smallest value)."""
    t = None if grid is None else grid.time_s(*point)
    if grid is None or t is None:
        return None
    low = tuple(float(grid.axes[i][0]) if i in small else x for i, x in enumerate(point))
    floor = grid.time_s(*low)
    return OpTime(t, 0.0 if floor is None else min(t, floor))


def gemm_time(
    src: MeasuredSource, m: float, n: float, k: float, weight_dtype: str, act_dtype: str
) -> OpTime | None:
    """Measured time of one ``m x k`` by ``k x n`` GEMM, or None without a table entry.

    >>> from preserve_cp.hardware import load_hardware
    >>> src = load_hardware("h100-sxm").measured
    >>> t = gemm_time(src, 4096, 4096, 4096, "bf16", "bf16")  # a table row
    >>> round(t.vanilla_s * 1e6, 1), round(t.floor_s * 1e6, 2)  # floor: 4096 x 32 x 32
    (174.3, 3.01)
    """
    dtype = GEMM_DTYPES.get((weight_dtype, act_dtype))
    grid = None if dtype is None else gemm_grid(src, dtype)
    return _measure(grid, (float(m), float(n), float(k)), (1, 2))


def decode_attention_time(
    src: MeasuredSource,
    batch: int,
    context: float,
    heads: int,
    kv_heads: int,
    head_dim: int,
    kv_dtype: str,
) -> OpTime | None:
    """Measured time of one decode attention over ``context`` cached tokens per sequence."""
    kv = KV_DTYPES.get(kv_dtype)
    grid = None if kv is None else decode_attention_grid(src, kv, int(kv_heads), int(head_dim))
    return _measure(grid, (float(heads), float(batch), float(context)), (2,))


def prefill_attention_time(
    src: MeasuredSource,
    batch: int,
    prompt: float,
    heads: int,
    kv_heads: int,
    head_dim: int,
    act_dtype: str,
    kv_dtype: str,
) -> OpTime | None:
    """Measured time of one causal prefill attention over ``prompt`` tokens per sequence
    (fp8 attention when activations and KV-cache are both fp8, else bf16)."""
    kv = KV_DTYPES.get(kv_dtype)
    if kv is None or act_dtype not in ("bf16", "fp16", "fp8"):
        return None
    attn = "fp8" if act_dtype == "fp8" and kv == "fp8" else "bfloat16"
    grid = prefill_attention_grid(src, attn, kv, int(kv_heads), int(head_dim))
    return _measure(grid, (float(heads), float(batch), float(prompt)), (2,))


@dataclass(frozen=True)
class MoEShape:
    """What the MoE table is looked up by, for one expert GEMM of a built graph: the layer's
    ``hidden`` and per-rank expert width ``inter_rank``, and ``share``, the GEMM's part of the
    layer's expert weight bytes (:func:`moe_shapes`)."""

    hidden: int
    inter_rank: int
    share: float


def moe_time(
    src: MeasuredSource,
    tokens: float,
    shape: MoEShape,
    top_k: int,
    experts: int,
    tp: int,
    ep: int,
    weight_dtype: str,
    act_dtype: str,
    routing: str,
) -> OpTime | None:
    """Measured time of one expert GEMM: its ``shape.share`` of the whole MoE layer's time
    for ``tokens`` tokens (the experts of each rank are 1/(tp/ep) shards on ep ranks), or None.

    >>> from preserve_cp.hardware import load_hardware
    >>> src = load_hardware("h100-sxm").measured  # Mixtral-8x7B on TP 2, batch 8
    >>> t = moe_time(src, 8, MoEShape(4096, 7168, 1.0), 2, 8, 2, 1, "bf16", "bf16", "uniform")
    >>> round(t.vanilla_s * 1e6, 1), round(t.floor_s * 1e6, 1)  # the smallest Mixtral: itself
    (480.8, 480.8)
    """
    if routing != "uniform" or tp % ep:
        return None
    moe_tp = tp // ep
    for dtype in MOE_DTYPES.get((weight_dtype, act_dtype), ()):
        rest = (top_k, experts, moe_tp, ep, "balanced")
        grid = moe_grid(src, (dtype, shape.hidden, shape.inter_rank * moe_tp, *rest))
        t = None if grid is None else grid.time_s(float(tokens))
        if t is None:
            continue
        # the floor: the same layer with the smallest expert weights the file has
        floors = [
            f
            for h, i in moe_sizes(src, dtype, rest)
            if (g := moe_grid(src, (dtype, h, i, *rest))) is not None
            and (f := g.time_s(float(tokens))) is not None
        ]
        return OpTime(t * shape.share, min([t, *floors]) * shape.share)
    return None


@functools.cache
def moe_sizes(
    src: MeasuredSource, dtype: str, rest: tuple[Any, ...]
) -> tuple[tuple[int, int], ...]:
    """The (hidden_size, inter_size) pairs of the MoE file with ``dtype`` and ``rest`` =
    (topk, num_experts, moe_tp_size, moe_ep_size, distribution), smallest weights first."""
    cols = _columns(_file(src, "moe", "moe_perf"), MOE_COLUMNS)
    if cols is None:
        return ()
    mask = cols["moe_dtype"] == dtype
    for name, want in zip(MOE_COLUMNS[5:10], rest, strict=True):
        mask &= cols[name] == want
    sizes = zip(cols["hidden_size"][mask], cols["inter_size"][mask], strict=True)
    pairs = {(int(h), int(i)) for h, i in sizes}
    return tuple(sorted(pairs, key=lambda p: (p[0] * p[1], p)))


def moe_shapes(g: Any) -> dict[Any, MoEShape]:
    """The :class:`MoEShape` of every expert GEMM of a built graph (ops carrying ``experts``
    named ``L<i>.experts_gate_up`` / ``L<i>.experts_down``, with ``n`` and ``k``); layers
    without both keep the roofline (absent here)."""
    layers: dict[Any, dict[str, Any]] = {}
    for node, a in g.nodes(data=True):
        if a.get("kind") == "gemm" and "experts" in a and a.get("n") and a.get("k"):
            tail = str(node).rsplit(".", 1)[-1]
            if tail in ("experts_gate_up", "experts_down"):
                layers.setdefault(a.get("layer"), {})[tail] = (node, a)
    out: dict[Any, MoEShape] = {}
    for pair in layers.values():
        if len(pair) != 2:
            continue
        (up, au), (down, ad) = pair["experts_gate_up"], pair["experts_down"]
        wu, wd = float(au["n"]) * float(au["k"]), float(ad["n"]) * float(ad["k"])
        hidden, inter = int(ad["n"]), int(ad["k"])
        out[up] = MoEShape(hidden, inter, wu / (wu + wd))
        out[down] = MoEShape(hidden, inter, wd / (wu + wd))
    return out


def op_time(
    hw: Hardware, a: dict[str, Any], graph: dict[str, Any], moe: MoEShape | None = None
) -> OpTime | None:
    """The measured time of one op (node attributes ``a`` of a graph with graph attributes
    ``graph``), or None when the tables do not cover it: ops other than a dense GEMM, an
    expert GEMM or a standard attention, shapes without the attributes it is looked up by
    (``graph.SHAPE_ATTRIBUTES``), dtypes without a table, grid points the file lacks.

    An expert GEMM (``experts``) needs its ``moe`` shape (:func:`moe_shapes`) and the graph's
    ``moe`` attributes, and tensor-parallel attention (the tables' tokens are the step's on
    every rank); MLA attention and attention on sliding-window or chunked layers in prefill
    keep the roofline (the tables' windows are not the models')."""
    if hw.measured is None or "duration" in a:
        return None
    wl = graph.get("workload") or {}
    src = hw.measured.for_stack(str(wl.get("stack", "")))
    act = str(a.get("dtype", graph.get("dtype", "bf16")))
    kind = a.get("kind")
    if kind == "gemm":
        weight = str(a.get("weight_dtype", wl.get("weight_dtype", act)))
        if "experts" in a:
            info = graph.get("moe")
            if moe is None or not info or wl.get("attention", "tp") != "tp":
                return None
            return moe_time(
                src,
                float(info["tokens"]),
                moe,
                int(info["top_k"]),
                int(info["experts"]),
                int(graph.get("tp", 1)),
                int(info.get("ep", 1)),
                weight,
                act,
                str(info.get("routing", "uniform")),
            )
        if not all(a.get(f) for f in ("rows", "n", "k")):
            return None
        return gemm_time(src, a["rows"], a["n"], a["k"], weight, act)
    if kind != "attention" or not all(
        a.get(f) for f in ("context", "batch", "heads", "kv_heads", "head_dim")
    ):
        return None
    kv = str(wl.get("kv_dtype", act))
    shape = (int(a["batch"]), float(a["context"]), int(a["heads"]))
    if wl.get("phase") == "decode":
        # a window or chunk only caps the tokens read, which `context` already is
        return decode_attention_time(src, *shape, int(a["kv_heads"]), int(a["head_dim"]), kv)
    if wl.get("phase") == "prefill" and not a.get("window") and not a.get("chunk"):
        return prefill_attention_time(src, *shape, int(a["kv_heads"]), int(a["head_dim"]), act, kv)
    return None


def tables_label(hw: Hardware, stack: str = "") -> str | None:
    """``system/backend/version`` of the tables that time a step run by ``stack`` on ``hw``
    (None without a ``measured`` section).

    >>> from preserve_cp.hardware import load_hardware
    >>> tables_label(load_hardware("h100-sxm")), tables_label(load_hardware("ascend-910b2"))
    ('h100_sxm/trtllm/1.3.0rc20', None)
    >>> tables_label(load_hardware("h100-sxm"), "sglang")
    'h100_sxm/sglang/0.5.14'
    """
    if hw.measured is None:
        return None
    src = hw.measured.for_stack(stack)
    return f"{src.system}/{src.backend}/{src.version}"


def coverage(g: Any, hw: Hardware) -> tuple[int, int]:
    """(ops of graph ``g`` the tables time, GEMM and attention ops) on ``hw``."""
    shapes = moe_shapes(g)
    ops = [(n, a) for n, a in g.nodes(data=True) if a.get("kind") in ("gemm", "attention")]
    return sum(op_time(hw, a, g.graph, shapes.get(n)) is not None for n, a in ops), len(ops)


def timing_line(g: Any, hw: Hardware) -> str | None:
    """One line saying where op times come from, for a report (None for the roofline)."""
    if hw.timing != "measured":
        return None
    label = tables_label(hw, str((g.graph.get("workload") or {}).get("stack", "")))
    if label is None:
        return f"timing: measured, but {hw.name} has no kernel tables: the roofline for every op"
    hit, total = coverage(g, hw)
    return (
        f"timing: measured kernel tables (aiconfigurator-core {label}) for {hit} of {total} "
        "GEMM and attention ops; the roofline for the rest (docs/fidelity.md)"
    )
