"""The dataflow graph: ``build_graph(model, workload)`` and the graph contract.

Glossary (used word for word in the code):

op
    a node of the graph; runs on one *stream* (its ``resource``).
stream
    a serial executor: ``compute``, ``comm``, ``prefetch`` or any user string.
prefetchable tensor
    a weight or KV-cache tensor named in an op's ``prefetchable`` list; it may be copied from
    HBM into L2 ahead of the op that reads it (its *consumer*).

Node attributes (contract): ``kind``, ``resource``, ``flops``, ``reads`` (tensor -> bytes),
``writes_bytes``, ``prefetchable`` (names in ``reads``), ``layer``; optional ``duration``
(seconds; bypasses the cost model), ``dtype`` (compute dtype, default the graph's) and
``reread_bytes`` (HBM traffic beyond ``reads``: a kernel that reads a tensor more than once,
e.g. decode attention with ``Workload.kv_reads`` ``per_query_head``; never prefetched).
Collectives read their message (``reads``) and run over ``graph.graph["tp"]`` devices.
Grouped expert GEMMs (``L<i>.experts_gate_up``, ``L<i>.experts_down``) also carry
``experts``, the expected number of distinct experts read, and ``rows`` per expert.

Shape attributes (optional, :data:`SHAPE_ATTRIBUTES`; what measured kernel tables are looked
up by, preserve_cp/measured.py): a GEMM carries its per-device ``n`` (output features) and
``k`` (input features) beside ``rows`` (M) and its ``weight_dtype``; a standard attention op
(MHA/GQA/MQA) carries ``batch`` (sequences on the device), ``heads`` and ``kv_heads`` (per
device), ``head_dim``, and ``window`` / ``chunk`` on sliding-window / chunked-local layers.
Batched per-head GEMMs (MLA's absorptions) and MLA attention carry none.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import networkx as nx

from .errors import InputError, input_error
from .models import ModelConfig, load_model
from .moe import expected_distinct_experts
from .units import DTYPE_BYTES
from .workload import Workload

COLLECTIVE_KINDS = frozenset({"allreduce", "allgather", "reduce_scatter", "all_to_all", "p2p"})
MATMUL_KINDS = frozenset({"gemm", "attention"})
#: optional node attributes giving an op's shape (added after the graph contract was first
#: pinned; the cost model reads them only for measured timing)
SHAPE_ATTRIBUTES = (
    "n",
    "k",
    "weight_dtype",
    "batch",
    "heads",
    "kv_heads",
    "head_dim",
    "window",
    "chunk",
)
PREFETCH_STREAM = "prefetch"


def stream_order(streams: Iterable[str]) -> list[str]:
    """Streams in display order: compute, comm, prefetch, then the others by name.

    >>> stream_order(["prefetch", "dma", "comm", "compute"])
    ['compute', 'comm', 'prefetch', 'dma']
    """
    first = ("compute", "comm", PREFETCH_STREAM)
    return sorted(streams, key=lambda s: (first.index(s) if s in first else len(first), s))


def check_tp(model: ModelConfig, tp: int) -> None:
    """Raise InputError when ``tp`` cannot split the model's heads or MLP.

    >>> check_tp(load_model("llama3-70b"), 8)
    >>> check_tp(load_model("qwen2-7b"), 8)
    Traceback (most recent call last):
    ...
    preserve_cp.errors.InputError: qwen2-7b: tp 8 does not divide num_heads 28 ...
    """
    if model.num_heads % tp:
        raise InputError(
            f"{model.name}: tp {tp} does not divide num_heads {model.num_heads}; "
            f"expected a tp among {_divisors(model.num_heads)}"
        )
    dense_layers = not all(model.is_moe_layer(l) for l in range(model.num_layers))
    if dense_layers and model.intermediate_size % tp:
        raise InputError(
            f"{model.name}: tp {tp} does not divide intermediate_size {model.intermediate_size}"
        )
    for field in ("moe_intermediate_size", "shared_intermediate"):
        width = getattr(model, field)
        if width and width % tp:
            raise InputError(f"{model.name}: tp {tp} does not divide {field} {width}")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, min(n, 64) + 1) if n % d == 0]


def build_graph(model: ModelConfig | str, workload: Workload) -> nx.DiGraph:
    """Build the per-device op graph of one inference step under Megatron-style TP.

    QKV and gate/up projections are column-parallel, O and down projections row-parallel
    with an allreduce after each (one per layer for parallel attention+MLP blocks). KV heads
    are split across devices, or replicated when ``tp`` exceeds their number. Embedding and
    LM head are vocab-parallel. A layer is the sequence of blocks :func:`layer_specs` gives
    (attention; dense MLP or mixture of experts); MoE experts are TP-sharded, each rank holding
    ``1/tp`` of every expert, and a step reads the expected distinct experts' weights. MLA
    attention (DeepSeek-V3) is built in its absorbed form (:class:`MLABlock`): ``num_heads/tp``
    query heads per rank over the whole latent KV cache, which TP does not split.

    Examples
    --------
    >>> g = build_graph("llama3-70b", Workload(phase="decode", batch=4, context=16384, tp=8,
    ...                 weight_dtype="int8", act_dtype="int8", kv_dtype="int8"))
    >>> g.nodes["L0.qkv"]["reads"]["L0.w_qkv"]  # 8192 x (1024 + 2 x 128) int8 bytes
    10485760
    >>> g.nodes["L0.attention"]["reads"]["L0.kv_cache"]  # 4 x 16384 x 2 x 128 bytes
    16777216
    >>> sum(1 for _, a in g.nodes(data=True) if a["kind"] == "allreduce")
    161
    """
    model = load_model(model)
    check_tp(model, workload.tp)
    return _Builder(model, workload).build()


# -- layer description: a layer is a sequence of blocks, described by data ----------------
@dataclass(frozen=True)
class AttentionBlock:
    """Self-attention: MHA, GQA or MQA (``kv_heads`` per rank: ModelConfig.kv_heads_per_rank),
    its KV read capped at ``window`` tokens on sliding-window layers, or limited to the current
    ``chunk`` on chunked-local layers (Llama 4). ``qk_norm``: ``"rms"`` (a weight per head
    dimension: Qwen3, OLMo 2), ``"l2"`` (weightless: Llama 4) or None; ``rope`` False on NoPE
    layers; ``sinks``: a learned sink logit per head (gpt-oss); ``o_bias``: a bias on o_proj."""

    kv_heads: int
    window: int | None = None
    qk_norm: str | None = None
    chunk: int | None = None
    rope: bool = True
    sinks: bool = False
    o_bias: bool = False
    allreduce: ClassVar[str] = "attn_allreduce"


@dataclass(frozen=True)
class MLPBlock:
    """Dense MLP, ``gated`` (gate and up in one GEMM) or plain; ``width`` is per rank."""

    width: int
    gated: bool = True
    allreduce: ClassVar[str] = "mlp_allreduce"


@dataclass(frozen=True)
class MoEBlock:
    """Mixture of experts: a router, ``experts`` routed experts of which each token uses
    ``top_k`` (each rank holds ``1/tp`` of every expert: ``width`` is per rank), and shared
    experts always used (``shared_width`` per rank, 0 without them). ``distinct`` is the
    expected number of distinct experts the step's tokens route to (:mod:`preserve_cp.moe`).

    With expert parallelism (``ep`` > 1) a rank holds ``experts`` = E / ep whole experts (or
    their ``1 / (tp / ep)`` shards: EP x TP), ``distinct`` is its share of the distinct experts,
    and each rank sends its ``tokens`` (the step's tokens / ep) to the experts' ranks by an
    all-to-all (dispatch) and takes the results back (combine): ``tokens x top_k``
    token-expert pairs per rank."""

    experts: int
    top_k: int
    width: int
    distinct: float
    shared_width: int = 0
    gated: bool = True
    ep: int = 1
    tokens: float = 0.0
    allreduce: ClassVar[str] = "mlp_allreduce"


@dataclass(frozen=True)
class MLABlock:
    """Multi-head latent attention (DeepSeek-V2/V3) in the absorbed form, ``heads`` query heads
    per rank (``num_heads / tp``); ``q_lora_rank`` None: no query compression.

    The latent KV cache (``kv_lora_rank + qk_rope`` elements per token per layer, one latent
    shared by all heads) is not split by TP: every rank holds and reads all of it, an MQA with
    ``heads`` query heads of width ``kv_lora_rank + qk_rope`` (TRT-LLM's DeepSeek-R1 B200
    blog: "like an MQA with num_q_heads = 128 / TP8 = 16")."""

    heads: int
    q_lora_rank: int | None
    kv_lora_rank: int
    qk_nope: int
    qk_rope: int
    v_head: int
    allreduce: ClassVar[str] = "attn_allreduce"


Block = AttentionBlock | MLABlock | MLPBlock | MoEBlock


@dataclass(frozen=True)
class LayerSpec:
    """The blocks of one layer, in order. ``parallel``: every block reads the layer input and
    one allreduce follows them all (Falcon); otherwise each block is followed by its own."""

    blocks: tuple[Block, ...]
    parallel: bool = False
    layer: int = 0


def layer_specs(model: ModelConfig, workload: Workload) -> list[LayerSpec]:
    """The per-layer schedule of blocks of ``model`` on one rank.

    >>> specs = layer_specs(load_model("gemma2-27b"), Workload(context=8192, tp=8))
    >>> specs[0].blocks[0].window, specs[0].blocks[0].kv_heads, specs[0].blocks[1]
    (4096, 2, MLPBlock(width=4608, gated=True))
    >>> specs[1].blocks[0].window is None
    True
    """
    tp = workload.tp
    # attention (and dense MLPs) over tp ranks, or data-parallel: each rank its batch / tp
    att = 1 if workload.attention == "dp" else tp
    ep = workload.ep
    moe_tp = tp // ep  # experts EP x TP: each expert split over tp / ep ranks
    kv_heads = model.kv_heads_per_rank(att)
    gated = model.mlp == "gated"
    # every block but the attention window depends on the model and workload, not the layer
    mla: Block | None = None
    if model.is_mla:
        assert model.kv_lora_rank and model.qk_nope_head_dim and model.qk_rope_head_dim
        assert model.v_head_dim
        mla = MLABlock(
            model.num_heads // att,
            model.q_lora_rank,
            model.kv_lora_rank,
            model.qk_nope_head_dim,
            model.qk_rope_head_dim,
            model.v_head_dim,
        )
    moe: dict[float, Block] = {}  # by expected distinct experts: equal layers share a block

    def moe_block(layer: int) -> Block:
        assert model.num_experts and model.experts_per_token and model.moe_intermediate_size
        distinct = expected_distinct_experts(
            model.num_experts,
            model.experts_per_token,
            workload.tokens,
            workload.routing,
            layer=layer,
        )
        if distinct not in moe:
            moe[distinct] = MoEBlock(
                model.num_experts // ep,
                model.experts_per_token,
                model.moe_intermediate_size // moe_tp,
                distinct / ep,
                model.shared_intermediate // att,
                gated,
                ep,
                workload.tokens / ep,
            )
        return moe[distinct]

    if ep > 1 and model.num_experts and model.num_experts % ep:
        raise InputError(
            f"{model.name}: ep {ep} does not divide num_experts {model.num_experts}; "
            f"expected an ep among {_divisors(model.num_experts)}"
        )
    dense = MLPBlock(model.intermediate_size // att, gated)
    parallel = model.block == "parallel"
    out = []
    for l in stage_layers(model.num_layers, workload):
        window = model.sliding_window if model.uses_window(l) else None
        rope = model.uses_rope(l)
        qk_norm = "rms" if model.qk_norm else "l2" if model.qk_l2_norm and rope else None
        attn = mla or AttentionBlock(
            kv_heads,
            window,
            qk_norm,
            model.attention_chunk_size if model.uses_chunks(l) else None,
            rope,
            model.attention_sinks,
            model.o_bias,
        )
        mlp = moe_block(l) if model.is_moe_layer(l) else dense
        out.append(LayerSpec((attn, mlp), parallel=parallel, layer=l))
    return out


def stage_layers(layers: int, workload: Workload) -> range:
    """The layers of pipeline stage ``workload.stage`` of ``workload.pp``: contiguous, the
    first ``layers mod pp`` stages one layer more (Megatron's split when it does not divide).

    >>> [list(stage_layers(7, Workload(pp=3, stage=s))) for s in range(3)]
    [[0, 1, 2], [3, 4], [5, 6]]
    """
    pp, s = workload.pp, workload.stage
    base, extra = divmod(layers, pp)
    start = s * base + min(s, extra)
    return range(start, start + base + (1 if s < extra else 0))


class _Builder:
    def __init__(self, model: ModelConfig, wl: Workload) -> None:
        self.m, self.wl = model, wl
        self.g = nx.DiGraph()
        self.last: str | None = None
        tp = wl.tp
        self.wb, self.kb = wl.bytes_of("weight"), wl.bytes_of("kv")
        # 8-bit activations exist only as GEMM inputs (``qb``), quantized by the kernel that
        # makes them; the GEMMs write 16-bit, and the residual stream, norms, attention's
        # inputs and outputs and the collectives stay 16-bit (``ab``): vLLM's fp8 W8A8 and
        # w8a8 int8 linear methods quantize the input per call and return the model dtype,
        # TensorRT-LLM's fp8 GEMMs output fp16/bf16 before the allreduce, Intel Neural
        # Compressor's fp8 on Gaudi quantizes Linear/matmul inputs only (docs/fidelity.md)
        self.qb = wl.bytes_of("act")
        self.ab = max(self.qb, 2.0)
        # the checkpoint's narrower groups keep their precision (ModelConfig.weight_dtype)
        chosen = {g: model.weight_dtype(g, str(wl.weight_dtype)) for g in model.weight_dtypes}
        self.group_dtype: dict[str, str] = {g: d for g, d in chosen.items() if d != wl.weight_dtype}
        # data-parallel attention: every rank runs attention, dense MLPs, embedding and LM head
        # whole, on its batch / tp sequences; only the experts are spread (EP)
        self.att = 1 if wl.attention == "dp" else tp
        self.q_l = model.q_size // self.att
        self.vocab_l = math.ceil(model.vocab_size / self.att)
        # some stacks keep the embedding and LM head whole on every rank (no logits gather)
        self.vocab_head = model.vocab_size if wl.lm_head == "replicated" else self.vocab_l
        self.batch = wl.batch // (tp // self.att)
        self.T = wl.tokens // (tp // self.att)
        self.weights_bytes = 0.0
        self.kv_bytes = 0.0

    # -- helpers -------------------------------------------------------------------
    def wbytes(self, group: str) -> float:
        """Bytes per weight element of ``group`` (embedding, attention, mlp, router, experts,
        shared_experts, lm_head)."""
        dtype = self.group_dtype.get(group)
        return DTYPE_BYTES[dtype] if dtype else self.wb

    def op(
        self,
        name: str,
        kind: str,
        layer: int,
        *,
        resource: str = "compute",
        flops: float = 0.0,
        reads: dict[str, float] | None = None,
        writes: float = 0.0,
        prefetchable: tuple[str, ...] = (),
        after: tuple[str, ...] | None = None,
        **extra: Any,
    ) -> str:
        reads = {k: int(round(v)) for k, v in (reads or {}).items()}
        self.g.add_node(
            name,
            kind=kind,
            resource=resource,
            flops=float(flops),
            reads=reads,
            writes_bytes=int(round(writes)),
            prefetchable=list(prefetchable),
            layer=layer,
            **extra,
        )
        preds = after if after is not None else ((self.last,) if self.last else ())
        for p in preds:
            self.g.add_edge(p, name)
        self.last = name
        return name

    def gemm(
        self,
        name: str,
        layer: int,
        k: int,
        n: int,
        weight: str,
        *,
        group: str,
        bias: bool = False,
        after: tuple[str, ...] | None = None,
    ) -> str:
        w = (k * n + (n if bias else 0)) * self.wbytes(group)
        self.weights_bytes += w
        return self.op(
            name,
            "gemm",
            layer,
            flops=2.0 * self.T * k * n,
            reads={weight: w, f"{name}.in": self.T * k * self.qb},
            writes=self.T * n * self.ab,
            prefetchable=(weight,),
            after=after,
            rows=self.T,
            n=n,
            k=k,
            weight_dtype=self.group_dtype.get(group, str(self.wl.weight_dtype)),
        )

    def norm(self, name: str, layer: int, after: tuple[str, ...] | None = None) -> str:
        h = self.m.hidden_size
        return self.op(
            name,
            "norm",
            layer,
            flops=5.0 * self.T * h,
            reads={f"{name}.in": 2 * self.T * h * self.ab, f"{name}.w": h * self.wb},
            writes=2 * self.T * h * self.ab,
            after=after,
        )

    def allreduce(self, name: str, layer: int, after: tuple[str, ...] | None = None) -> str:
        msg = self.T * self.m.hidden_size * self.ab
        return self.op(
            name,
            "allreduce",
            layer,
            resource="comm",
            reads={f"{name}.in": msg},
            writes=msg,
            after=after,
        )

    # -- blocks --------------------------------------------------------------------
    def block(self, l: int, b: Block, after: tuple[str, ...] | None = None) -> str:
        if isinstance(b, AttentionBlock):
            return self.attention_block(l, b, after)
        if isinstance(b, MLABlock):
            return self.mla_block(l, b, after)
        if isinstance(b, MLPBlock):
            return self.mlp_block(l, b, after)
        return self.moe_block(l, b, after)

    def attention_block(self, l: int, b: AttentionBlock, after: tuple[str, ...] | None) -> str:
        """Norm, QKV, [qk-norm], [RoPE], attention, o_proj.

        Decode reads the KV-cache of the tokens the new one attends to: all ``context`` cached
        tokens, at most ``window`` on sliding-window layers, and on chunked-local layers only
        those of its own chunk, ``context mod chunk`` (a step at context 16384 with chunks of
        8192 starts a new chunk and reads none). Prefill counts the causal (query, key) pairs
        within those limits."""
        m, wl, T = self.m, self.wl, self.T
        h = m.hidden_size
        kv_l = b.kv_heads * m.head_dim
        aw = self.wbytes("attention")
        self.norm(f"L{l}.attn_norm", l, after=after)
        self.gemm(
            f"L{l}.qkv",
            l,
            h,
            self.q_l + 2 * kv_l,
            f"L{l}.w_qkv",
            group="attention",
            bias=m.qkv_bias,
        )
        if b.qk_norm:  # over each query and key head: RMSNorm with a weight, or a plain L2
            reads = {f"L{l}.qk_norm.in": T * (self.q_l + kv_l) * self.ab}
            if b.qk_norm == "rms":  # Qwen3, OLMo 2
                self.weights_bytes += 2 * m.head_dim * self.wb
                reads[f"L{l}.qk_norm.w"] = 2 * m.head_dim * self.wb
            self.op(
                f"L{l}.qk_norm",
                "norm",
                l,
                flops=5.0 * T * (self.q_l + kv_l),
                reads=reads,
                writes=T * (self.q_l + kv_l) * self.ab,
            )
        if b.rope:
            self.op(
                f"L{l}.rope",
                "elementwise",
                l,
                flops=6.0 * T * (self.q_l + kv_l),
                reads={f"L{l}.rope.in": T * (self.q_l + 2 * kv_l) * self.ab},
                writes=T * (self.q_l + 2 * kv_l) * self.ab,
            )
        c = wl.context
        ctx = c
        if b.window:
            ctx = min(c, b.window)
        if b.chunk:  # decode: the new token's chunk so far; prefill: the tokens kept
            ctx = c % b.chunk if wl.phase == "decode" else min(c, b.chunk)
        kv_layer = self.batch * ctx * 2 * kv_l * self.kb
        self.kv_bytes += self.batch * c * 2 * kv_l * self.kb
        extra: dict[str, float] = {}
        if b.sinks:  # one learned logit per query head, joining the softmax
            heads_l = self.q_l // m.head_dim
            self.weights_bytes += heads_l * aw
            extra[f"L{l}.sinks"] = heads_l * aw
        shape: dict[str, Any] = {
            "batch": self.batch,
            "heads": self.q_l // m.head_dim,
            "kv_heads": b.kv_heads,
            "head_dim": m.head_dim,
        }
        if b.window:
            shape["window"] = b.window
        if b.chunk:
            shape["chunk"] = b.chunk
        if wl.phase == "decode":
            group = shape["heads"] / b.kv_heads
            reread: dict[str, Any] = {}
            if wl.kv_reads == "per_query_head" and group > 1:
                # each query head streams its KV head itself: the group's other heads read the
                # layer's KV cache again (from HBM: not a tensor the prefetcher can place)
                reread["reread_bytes"] = int(round((group - 1) * kv_layer))
            self.op(
                f"L{l}.attention",
                "attention",
                l,
                flops=4.0 * self.batch * ctx * self.q_l,
                reads={
                    f"L{l}.kv_cache": kv_layer,
                    f"L{l}.q": T * self.q_l * self.ab,
                    **extra,
                },
                writes=T * self.q_l * self.ab + self.batch * 2 * kv_l * self.kb,
                prefetchable=(f"L{l}.kv_cache",),
                context=ctx,
                **shape,
                **reread,
            )
        else:
            if b.chunk:  # causal within each chunk of the prompt
                full, rem = divmod(c, b.chunk)
                pairs = self.batch * (full * b.chunk * (b.chunk + 1) / 2 + rem * (rem + 1) / 2)
            else:
                pairs = self.batch * (
                    ctx * (ctx + 1) / 2 if ctx == c else ctx * c - ctx * (ctx - 1) / 2
                )
            self.op(
                f"L{l}.attention",
                "attention",
                l,
                flops=4.0 * pairs * self.q_l,
                reads={f"L{l}.qkv_act": T * (self.q_l + 2 * kv_l) * self.ab, **extra},
                writes=T * self.q_l * self.ab + kv_layer,
                context=ctx,
                **shape,
            )
        return self.gemm(
            f"L{l}.o_proj", l, self.q_l, h, f"L{l}.w_o", group="attention", bias=b.o_bias
        )

    def head_gemm(self, name: str, l: int, heads: int, k: int, n: int, weight: str) -> str:
        """``heads`` batched GEMMs (one k x n weight per head) over the step's tokens."""
        T, ab = self.T, self.ab
        w = heads * k * n * self.wbytes("attention")
        self.weights_bytes += w
        return self.op(
            name,
            "gemm",
            l,
            flops=2.0 * T * heads * k * n,
            reads={weight: w, f"{name}.in": T * heads * k * self.qb},
            writes=T * heads * n * ab,
            prefetchable=(weight,),
            rows=T,
        )

    def latent_norm(self, name: str, l: int, width: int) -> str:
        """RMSNorm over a ``width``-wide latent (MLA's q_a_layernorm, kv_a_layernorm)."""
        self.weights_bytes += width * self.wb
        return self.op(
            name,
            "norm",
            l,
            flops=5.0 * self.T * width,
            reads={f"{name}.in": self.T * width * self.ab, f"{name}.w": width * self.wb},
            writes=self.T * width * self.ab,
        )

    def mla_block(self, l: int, b: MLABlock, after: tuple[str, ...] | None) -> str:
        """MLA in the absorbed form (W_UK folded into the query, W_UV applied after attention),
        per rank, ``H = b.heads`` (num_heads / tp), ``r = kv_lora_rank``, ``T`` tokens::

            q_a       hidden -> q_lora_rank, replicated (vLLM deepseek_v2.py ReplicatedLinear
                      q_a_proj / fused_qkv_a_proj; SGLang deepseek_v2.py likewise)
            q_a_norm  RMSNorm over q_lora_rank
            q_b       q_lora_rank -> H (qk_nope + qk_rope), column-parallel
                      (without q_lora_rank: q_proj hidden -> H (qk_nope + qk_rope))
            kv_a      hidden -> r + qk_rope, replicated on every rank
            kv_a_norm RMSNorm over r
            q_absorb  H batched GEMMs qk_nope -> r with W_UK: 2 T H qk_nope r FLOPs,
                      H qk_nope r weight elements
            rope      on H qk_rope query and qk_rope key elements per token
            attention MQA over the latent cache: B ctx (r + qk_rope) KV-dtype bytes read
                      (the whole cache, not split by TP: prefetchable), 2 B ctx H (2 r + qk_rope)
                      FLOPs (scores over r + qk_rope, output over r)
            v_absorb  H batched GEMMs r -> v_head with W_UV: 2 T H r v_head FLOPs,
                      H v_head r weight elements
            o_proj    H v_head -> hidden, row-parallel (the allreduce follows)

        Prefill uses the same absorbed form (an upper bound on its FLOPs; stacks often
        decompress the latent there instead), causal pairs as for standard attention.
        """
        m, wl, T, ab = self.m, self.wl, self.T, self.ab
        h, H, r = m.hidden_size, b.heads, b.kv_lora_rank
        qk = b.qk_nope + b.qk_rope
        latent = r + b.qk_rope
        self.norm(f"L{l}.attn_norm", l, after=after)
        if b.q_lora_rank:
            self.gemm(f"L{l}.q_a", l, h, b.q_lora_rank, f"L{l}.w_q_a", group="attention")
            self.latent_norm(f"L{l}.q_a_norm", l, b.q_lora_rank)
            self.gemm(f"L{l}.q_b", l, b.q_lora_rank, H * qk, f"L{l}.w_q_b", group="attention")
        else:
            self.gemm(f"L{l}.q_proj", l, h, H * qk, f"L{l}.w_q", group="attention")
        self.gemm(f"L{l}.kv_a", l, h, latent, f"L{l}.w_kv_a", group="attention")
        self.latent_norm(f"L{l}.kv_a_norm", l, r)
        self.head_gemm(f"L{l}.q_absorb", l, H, b.qk_nope, r, f"L{l}.w_uk")
        self.op(
            f"L{l}.rope",
            "elementwise",
            l,
            flops=6.0 * T * (H + 1) * b.qk_rope,
            reads={f"L{l}.rope.in": T * (H + 1) * b.qk_rope * ab},
            writes=T * (H + 1) * b.qk_rope * ab,
        )
        ctx = wl.context
        kv_layer = self.batch * ctx * latent * self.kb
        self.kv_bytes += kv_layer
        if wl.phase == "decode":
            self.op(
                f"L{l}.attention",
                "attention",
                l,
                flops=2.0 * self.batch * ctx * H * (2 * r + b.qk_rope),
                reads={f"L{l}.kv_cache": kv_layer, f"L{l}.q": T * H * latent * ab},
                writes=T * H * r * ab + self.batch * latent * self.kb,
                prefetchable=(f"L{l}.kv_cache",),
                context=ctx,
            )
        else:
            pairs = self.batch * ctx * (ctx + 1) / 2
            self.op(
                f"L{l}.attention",
                "attention",
                l,
                flops=2.0 * pairs * H * (2 * r + b.qk_rope),
                reads={f"L{l}.qkv_act": T * (H + 1) * latent * ab},
                writes=T * H * r * ab + kv_layer,
                context=ctx,
            )
        self.head_gemm(f"L{l}.v_absorb", l, H, r, b.v_head, f"L{l}.w_uv")
        return self.gemm(f"L{l}.o_proj", l, H * b.v_head, h, f"L{l}.w_o", group="attention")

    def dense_mlp(self, l: int, prefix: str, width: int, gated: bool) -> str:
        """gate_up -> act -> down, the ops of a dense MLP (or of the shared experts)."""
        T, h = self.T, self.m.hidden_size
        n_up = 2 * width if gated else width
        group = "shared_experts" if prefix else "mlp"
        self.gemm(f"L{l}.{prefix}gate_up", l, h, n_up, f"L{l}.w_{prefix}gate_up", group=group)
        self.op(
            f"L{l}.{prefix}act",
            "elementwise",
            l,
            flops=8.0 * T * width,
            reads={f"L{l}.{prefix}act.in": T * n_up * self.ab},
            writes=T * width * self.ab,
        )
        return self.gemm(f"L{l}.{prefix}down", l, width, h, f"L{l}.w_{prefix}down", group=group)

    def mlp_block(self, l: int, b: MLPBlock, after: tuple[str, ...] | None) -> str:
        self.norm(f"L{l}.mlp_norm", l, after=after)
        return self.dense_mlp(l, "", b.width, b.gated)

    def moe_block(self, l: int, b: MoEBlock, after: tuple[str, ...] | None) -> str:
        """Router (replicated), top-k, routed experts as grouped GEMMs, then shared experts.

        The routed experts' weights read are those of the ``distinct`` experts expected to be
        hit (each rank its 1/tp of each); compute covers ``top_k`` experts per token; a
        grouped GEMM multiplies ``T * top_k / distinct`` rows per expert.
        """
        T, h, ab = self.T, self.m.hidden_size, self.ab
        self.norm(f"L{l}.mlp_norm", l, after=after)
        # vLLM (mixtral.py, qwen3_moe.py: ReplicatedLinear gate) keeps the router whole on
        # every rank: hidden x experts
        self.gemm(f"L{l}.router", l, h, b.experts, f"L{l}.w_router", group="router")
        self.op(
            f"L{l}.topk",
            "elementwise",
            l,
            flops=4.0 * T * b.experts,  # softmax and selection over the router logits
            reads={f"L{l}.topk.in": T * b.experts * ab},
            writes=T * b.top_k * 8,  # expert ids and weights
        )
        n_up = 2 * b.width if b.gated else b.width
        rows = b.tokens * b.top_k  # token-expert pairs this rank's experts serve
        per_expert = rows / b.distinct
        if b.ep > 1:  # each rank sends its tokens / ep to the experts' ranks, quantized as
            # the expert GEMMs read them (DeepEP's low-latency dispatch sends fp8)
            self.all_to_all(f"L{l}.moe_dispatch", l, b, "dispatch", self.qb)
        ew = self.wbytes("experts")
        for name, k, n in (("experts_gate_up", h, n_up), ("experts_down", b.width, h)):
            w = f"L{l}.w_{name}"
            self.weights_bytes += b.experts * k * n * ew  # held: every expert
            if name == "experts_down":
                self.op(
                    f"L{l}.experts_act",
                    "elementwise",
                    l,
                    flops=8.0 * rows * b.width,
                    reads={f"L{l}.experts_act.in": rows * n_up * ab},
                    writes=rows * b.width * ab,
                )
            self.op(
                f"L{l}.{name}",
                "gemm",
                l,
                flops=2.0 * rows * k * n,
                reads={w: b.distinct * k * n * ew, f"L{l}.{name}.in": rows * k * self.qb},
                writes=rows * n * ab,
                prefetchable=(w,),
                rows=per_expert,
                experts=b.distinct,
                n=n,
                k=k,
                weight_dtype=self.group_dtype.get("experts", str(self.wl.weight_dtype)),
            )
        if b.ep > 1:  # and takes its tokens' results back, combined in bf16 (or wider)
            self.all_to_all(f"L{l}.moe_combine", l, b, "combine", ab)
        if b.shared_width:
            return self.dense_mlp(l, "shared_", b.shared_width, b.gated)
        return self.last or ""

    def all_to_all(self, name: str, l: int, b: MoEBlock, phase: str, elem: float) -> str:
        """MoE dispatch or combine over the ``b.ep`` ranks holding the experts: each rank sends
        ``tokens x top_k`` hidden vectors (DeepEP's layout), ``elem`` bytes per element."""
        msg = b.tokens * b.top_k * self.m.hidden_size * elem
        return self.op(
            name,
            "all_to_all",
            l,
            resource="comm",
            reads={f"{name}.in": msg},
            writes=msg,
            group=b.ep,
            variant=self.wl.all_to_all,
            phase=phase,
        )

    def p2p(self, name: str, src_stage: int) -> str:
        """The activations of the step's tokens coming from pipeline stage ``src_stage`` (one
        op on the receiving stage's comm stream: the sender does not wait for it)."""
        msg = self.T * self.m.hidden_size * self.ab
        tp = self.wl.tp
        return self.op(
            name,
            "p2p",
            -1,
            resource="comm",
            reads={f"{name}.in": msg},
            writes=msg,
            group=2,
            p2p_devices=[src_stage * tp, (src_stage + 1) * tp],
        )

    def layer(self, l: int, spec: LayerSpec) -> None:
        tp = self.att  # data-parallel attention: no allreduce (EP combine returns outputs)
        if spec.parallel:
            # Same stream, so later blocks run after the first: a control edge keeps the
            # execution order explicit (data-wise all read the layer input).
            layer_in = self.last
            outs = [self.block(l, spec.blocks[0])]
            for b in spec.blocks[1:]:
                outs.append(
                    self.block(l, b, after=(layer_in, outs[-1]) if layer_in else (outs[-1],))
                )
            if tp > 1:
                self.allreduce(f"L{l}.allreduce", l, after=(outs[0], outs[-1]))
            return
        for b in spec.blocks:
            self.block(l, b)
            if tp > 1:
                self.allreduce(f"L{l}.{b.allreduce}", l)

    def build(self) -> nx.DiGraph:
        m, wl, T = self.m, self.wl, self.T
        h = m.hidden_size
        tp = self.att
        first, last = wl.stage == 0, wl.stage == wl.pp - 1
        if first:
            emb_w = self.vocab_head * h * self.wbytes("embedding")
            self.weights_bytes += emb_w
            self.op(
                "embedding",
                "embedding",
                -1,
                flops=0.0,
                reads={"embedding.rows": T * h * self.wbytes("embedding")},
                writes=T * h * self.ab,
            )
            if tp > 1:
                self.allreduce("embedding.allreduce", -1)
        else:
            self.p2p("pp.recv", wl.stage - 1)
        specs = layer_specs(m, wl)
        for spec in specs:
            self.layer(spec.layer, spec)
        # norms' small weights are counted once per layer in weights_bytes
        self.weights_bytes += 2 * len(specs) * h * self.wb
        if not last:  # the activations go to the next stage, whose graph starts with the
            return self.finish()  # transfer (pp.recv): counted once, on the receiving side
        self.norm("final_norm", -1)
        head_w = "embedding.w" if m.tied_embeddings else "lm_head.w"
        vocab_head = self.vocab_head  # whole vocabulary when replicated
        hw_bytes = self.wbytes("embedding" if m.tied_embeddings else "lm_head")
        if not m.tied_embeddings:
            self.weights_bytes += vocab_head * h * hw_bytes
        self.op(
            "lm_head",
            "gemm",
            -1,
            flops=2.0 * self.batch * h * vocab_head,
            reads={head_w: vocab_head * h * hw_bytes, "lm_head.in": self.batch * h * self.ab},
            writes=self.batch * vocab_head * 4,
            prefetchable=(head_w,),
            rows=self.batch,
            samples=True,
            n=vocab_head,
            k=h,
            weight_dtype=self.group_dtype.get(
                "embedding" if m.tied_embeddings else "lm_head", str(wl.weight_dtype)
            ),
        )
        if tp > 1 and wl.lm_head == "sharded":
            logits = self.batch * self.vocab_l * tp * 4
            self.op(
                "lm_head.allgather",
                "allgather",
                -1,
                resource="comm",
                reads={"lm_head.logits": logits},
                writes=logits,
            )
        self.weights_bytes += h * self.wb  # the final norm
        return self.finish()

    def finish(self) -> nx.DiGraph:
        m, wl = self.m, self.wl
        self.g.graph.update(
            model=m.name,
            workload=wl.to_dict(),
            tp=wl.tp,
            dtype=wl.act_dtype,
            weights_bytes_per_device=self.weights_bytes,
            kv_cache_bytes_per_device=self.kv_bytes,
        )
        if self.group_dtype:  # the checkpoint's narrower weight groups (absent: all weight_dtype)
            self.g.graph["weight_dtypes"] = dict(sorted(self.group_dtype.items()))
        if wl.devices != wl.tp:  # pipeline stages: the deployment spans tp x pp devices
            self.g.graph.update(devices=wl.devices, pp=wl.pp, stage=wl.stage)
        if m.num_experts and m.experts_per_token:  # what routing scenarios need (router.py)
            self.g.graph["moe"] = {
                "experts": m.num_experts,
                "top_k": m.experts_per_token,
                "ep": wl.ep,
                "tokens": wl.tokens,
                "routing": wl.routing,
            }
        return self.g


# ---------------------------------------------------------------------------------------
def tensor_readers(g: nx.DiGraph) -> dict[str, list[Any]]:
    """The ops that read each tensor, in node order.

    >>> g = nx.DiGraph()
    >>> g.add_node("a", reads={"w": 4, "x": 1}); g.add_node("b", reads={"w": 4})
    >>> tensor_readers(g)
    {'w': ['a', 'b'], 'x': ['a']}
    """
    out: dict[str, list[Any]] = {}
    for n, a in g.nodes(data=True):
        for t in a.get("reads") or {}:
            out.setdefault(t, []).append(n)
    return out


def validate_graph(g: Any, *, need_duration: bool = False) -> nx.DiGraph:
    """Check a user's graph against the contract; raise InputError naming node and field.

    >>> g = nx.DiGraph([("a", "b")])
    >>> nx.set_node_attributes(g, {"a": {"duration": 1.0, "resource": "m"},
    ...                            "b": {"duration": 2.0, "resource": "m"}})
    >>> validate_graph(g, need_duration=True) is g
    True
    >>> g.add_edge("b", "a")
    >>> validate_graph(g)
    Traceback (most recent call last):
    ...
    preserve_cp.errors.InputError: graph: edges: expected a DAG, found a cycle a -> b -> a
    """
    if not isinstance(g, nx.DiGraph):
        raise input_error("graph", "type", "a networkx.DiGraph", type(g).__name__)
    if g.number_of_nodes() == 0:
        raise input_error("graph", "nodes", "at least one node", 0)
    wl = g.graph.get("workload")
    if wl is not None and not isinstance(wl, dict):
        raise input_error("graph", "workload", "a mapping (Workload.to_dict())", wl)
    loops = list(nx.selfloop_edges(g))
    if loops:
        raise input_error("graph", "edges", "no self-loops", f"{loops[0][0]} -> {loops[0][0]}")
    if not nx.is_directed_acyclic_graph(g):
        cycle = nx.find_cycle(g)
        path = " -> ".join(str(u) for u, _ in cycle) + f" -> {cycle[0][0]}"
        raise InputError(f"graph: edges: expected a DAG, found a cycle {path}")
    for n, a in g.nodes(data=True):
        where = f"graph node {n!r}"
        if not isinstance(a.get("resource"), str) or not a.get("resource"):
            raise input_error(where, "resource", "a non-empty string", a.get("resource"))
        if a["resource"] == PREFETCH_STREAM:
            raise input_error(
                where, "resource", "a stream other than 'prefetch' (reserved)", a["resource"]
            )
        if "duration" in a:
            d = a["duration"]
            if (
                isinstance(d, bool)
                or not isinstance(d, int | float)
                or not math.isfinite(d)
                or d < 0
            ):
                raise input_error(where, "duration", "a finite number of seconds >= 0", d)
        elif need_duration:
            raise input_error(where, "duration", "seconds (no hardware was given)", None)
        else:
            _check_costed(where, a)
        reads = a.get("reads", {})
        if not isinstance(reads, dict):
            raise input_error(where, "reads", "a mapping tensor -> bytes", reads)
        for t, b in reads.items():
            if (
                isinstance(b, bool)
                or not isinstance(b, int | float)
                or not math.isfinite(b)
                or b < 0
            ):
                raise input_error(where, f"reads.{t}", "bytes >= 0", b)
        pf = a.get("prefetchable", [])
        if not isinstance(pf, list | tuple) or any(t not in reads for t in pf):
            raise input_error(where, "prefetchable", "a list of names found in reads", pf)
        layer = a.get("layer", -1)
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise input_error(where, "layer", "an integer", layer)
    return g


SHAPE_NUMBERS = tuple(f for f in SHAPE_ATTRIBUTES if f != "weight_dtype")


def _check_costed(where: str, a: dict[str, Any]) -> None:
    if not isinstance(a.get("kind"), str):
        raise input_error(where, "kind", "an op kind such as 'gemm' (or a duration)", a.get("kind"))
    # rows, context and the shape attributes are optional
    for field in ("flops", "writes_bytes", "reread_bytes", "rows", "context", *SHAPE_NUMBERS):
        v = a.get(field, 0)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise input_error(where, field, "a finite number >= 0", v)
    wd = a.get("weight_dtype")
    if wd is not None and not isinstance(wd, str):
        raise input_error(where, "weight_dtype", "a dtype name such as 'bf16'", wd)
    if not isinstance(a.get("samples", False), bool):
        raise input_error(where, "samples", "true or false", a.get("samples"))
