"""Model description: YAML -> validated :class:`ModelConfig` (decoder-only transformers).

Shapes follow the Hugging Face ``config.json`` names. The layer description is data-driven
(``mlp``, ``block``, ``sliding_window``...), so new layer kinds arrive as additions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from ._yaml import data_dir, not_bool, read_yaml_mapping, resolve_named_file, validate
from .units import DTYPE_BYTES

GRAPHS_DIR = data_dir("graphs")
Count = Annotated[int, BeforeValidator(not_bool)]
#: weight groups a checkpoint may store in different precisions
WeightGroup = Literal[
    "embedding", "attention", "mlp", "router", "experts", "shared_experts", "lm_head"
]
WeightDtype = Literal["fp16", "bf16", "fp8", "int8", "fp4", "nvfp4"]


class _Src(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    tag: str = Field(min_length=1)
    url: str = Field(min_length=1)
    used_for: str = ""


class ModelConfig(BaseModel):
    """A dense decoder-only transformer.

    Examples
    --------
    >>> m = load_model("llama3-70b")
    >>> (m.num_layers, m.num_kv_heads, m.head_dim)
    (80, 8, 128)
    >>> m.q_size, m.kv_size
    (8192, 1024)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    hf_repo: str = ""
    sources: list[_Src] = Field(min_length=1)
    uncertain: list[str] = Field(default_factory=list)
    hidden_size: Count = Field(gt=0, le=1_000_000)
    intermediate_size: Count = Field(gt=0, le=10_000_000)
    num_layers: Count = Field(gt=0, le=10_000)
    num_heads: Count = Field(gt=0, le=100_000)
    num_kv_heads: Count = Field(gt=0, le=100_000)
    head_dim: Count = Field(gt=0, le=100_000)
    vocab_size: Count = Field(gt=0, le=100_000_000)
    mlp: Literal["gated", "plain"] = "gated"
    activation: Literal["silu", "gelu", "relu", "gelu_tanh"] = "silu"
    block: Literal["sequential", "parallel"] = "sequential"
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    qkv_bias: bool = False
    tied_embeddings: bool = False
    sliding_window: Count | None = Field(default=None, gt=0)
    sliding_window_layers: Literal["all", "even", "odd"] | None = None
    max_context: Count = Field(default=131072, gt=0)
    qk_norm: bool = False
    # mixture of experts (all None/0: a dense model)
    num_experts: Count | None = Field(default=None, gt=0, le=100_000)
    experts_per_token: Count | None = Field(default=None, gt=0, le=100_000)
    moe_intermediate_size: Count | None = Field(default=None, gt=0, le=10_000_000)
    num_shared_experts: Count = Field(default=0, ge=0, le=1_000)
    shared_expert_intermediate_size: Count | None = Field(default=None, gt=0, le=10_000_000)
    first_k_dense_replace: Count = Field(default=0, ge=0, le=10_000)
    moe_layer_step: Count = Field(default=1, gt=0, le=10_000)
    # multi-head latent attention (DeepSeek-V2/V3 MLA; all None: standard attention). With MLA,
    # head_dim is qk_nope_head_dim + qk_rope_head_dim and num_kv_heads is num_heads.
    q_lora_rank: Count | None = Field(default=None, gt=0, le=1_000_000)
    kv_lora_rank: Count | None = Field(default=None, gt=0, le=1_000_000)
    qk_nope_head_dim: Count | None = Field(default=None, gt=0, le=100_000)
    qk_rope_head_dim: Count | None = Field(default=None, gt=0, le=100_000)
    v_head_dim: Count | None = Field(default=None, gt=0, le=100_000)
    # attention variants (Llama 4, gpt-oss)
    o_bias: bool = False  # a bias on the output projection (gpt-oss attention_bias)
    attention_sinks: bool = False  # one learned sink logit per head (gpt-oss)
    attention_chunk_size: Count | None = Field(default=None, gt=0)  # chunked local attention
    nope_layers: list[Count] = Field(default_factory=list)  # layers without RoPE (global)
    qk_l2_norm: bool = False  # weightless L2 norm of q and k on RoPE layers (Llama 4)
    # the checkpoint's precisions per weight group (e.g. gpt-oss: experts fp4): a group the
    # checkpoint stores narrower than the workload's weight dtype keeps its own precision
    weight_dtypes: dict[WeightGroup, WeightDtype] = Field(default_factory=dict)
    # parameters in the checkpoint outside the text decoder (e.g. a vision encoder): counted in
    # total_params only, never in the graph
    other_params: Count = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) to be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})"
            )
        if (self.sliding_window is None) != (self.sliding_window_layers is None):
            raise ValueError("sliding_window and sliding_window_layers to be given together")
        self._consistent_moe()
        self._consistent_mla()
        if self.attention_chunk_size is not None and self.sliding_window is not None:
            raise ValueError("attention_chunk_size or sliding_window, not both")
        bad = [layer for layer in self.nope_layers if layer >= self.num_layers]
        if bad:
            raise ValueError(f"nope_layers below num_layers ({self.num_layers}); {bad[0]} is not")
        if len(set(self.nope_layers)) != len(self.nope_layers):
            raise ValueError("nope_layers without repeats")
        moe_only = {"router", "experts", "shared_experts"} & set(self.weight_dtypes)
        if moe_only and not self.is_moe:
            raise ValueError(f"weight_dtypes.{sorted(moe_only)[0]} only with num_experts")
        for path in self.uncertain:
            if path.split(".")[0] not in type(self).model_fields:
                raise ValueError(f"field names in uncertain ({path!r} is not one)")
        return self

    def _consistent_moe(self) -> None:
        moe = ("num_experts", "experts_per_token", "moe_intermediate_size")
        given = [f for f in moe if getattr(self, f) is not None]
        if given and len(given) < len(moe):
            missing = next(f for f in moe if getattr(self, f) is None)
            raise ValueError(
                f"{missing} to be given with {given[0]} (a MoE model needs all of {', '.join(moe)})"
            )
        if not given:
            for f in (
                "num_shared_experts",
                "shared_expert_intermediate_size",
                "first_k_dense_replace",
            ):
                if getattr(self, f):
                    raise ValueError(f"{f} only with num_experts (a MoE model)")
            if self.moe_layer_step != 1:
                raise ValueError("moe_layer_step only with num_experts (a MoE model)")
            return
        assert self.num_experts is not None and self.experts_per_token is not None
        if self.experts_per_token > self.num_experts:
            raise ValueError(
                f"experts_per_token ({self.experts_per_token}) to be at most "
                f"num_experts ({self.num_experts})"
            )
        if self.shared_expert_intermediate_size is not None and not self.num_shared_experts:
            raise ValueError("shared_expert_intermediate_size only with num_shared_experts >= 1")
        if not any(self.is_moe_layer(i) for i in range(self.num_layers)):
            raise ValueError(
                f"first_k_dense_replace ({self.first_k_dense_replace}) and moe_layer_step "
                f"({self.moe_layer_step}) to leave at least one MoE layer of {self.num_layers}"
            )

    def _consistent_mla(self) -> None:
        mla = ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
        given = [f for f in mla if getattr(self, f) is not None]
        if not given:
            if self.q_lora_rank is not None:
                raise ValueError("q_lora_rank only with kv_lora_rank (an MLA model)")
            return
        if len(given) < len(mla):
            missing = next(f for f in mla if getattr(self, f) is None)
            raise ValueError(
                f"{missing} to be given with {given[0]} (MLA needs all of {', '.join(mla)})"
            )
        assert self.qk_nope_head_dim is not None and self.qk_rope_head_dim is not None
        qk = self.qk_nope_head_dim + self.qk_rope_head_dim
        if self.head_dim != qk:
            raise ValueError(
                f"head_dim ({self.head_dim}) to be qk_nope_head_dim + qk_rope_head_dim ({qk}) "
                "with MLA"
            )
        if self.num_kv_heads != self.num_heads:
            raise ValueError(
                f"num_kv_heads ({self.num_kv_heads}) to be num_heads ({self.num_heads}) with MLA"
            )
        for f in (
            "qkv_bias",
            "o_bias",
            "qk_norm",
            "qk_l2_norm",
            "sliding_window",
            "attention_chunk_size",
            "attention_sinks",
        ):
            if getattr(self, f):
                raise ValueError(f"{f} not with MLA (kv_lora_rank); not supported yet")

    @property
    def is_mla(self) -> bool:
        """Whether attention is multi-head latent attention (``kv_lora_rank`` given)."""
        return self.kv_lora_rank is not None

    def attention_params(self, heads: float | None = None) -> int:
        """Weight elements of one layer's attention (projections, QKV bias, qk-norm, MLA norms).

        ``heads`` (MLA only): the query heads one device holds (default all of them); the
        down-projections and their norms are whole on every device.

        MLA: ``W_DQ`` hidden x q_lora_rank (+ its norm) and ``W_UQ+QR`` q_lora_rank x heads x
        (qk_nope + qk_rope) (or hidden x ... without q_lora_rank), ``W_DKV+KR`` hidden x
        (kv_lora_rank + qk_rope) (+ its norm), ``W_UK|UV`` kv_lora_rank x heads x (qk_nope +
        v_head), ``W_O`` heads x v_head x hidden.

        >>> load_model("deepseek-v3").attention_params()
        187107328
        """
        h = self.hidden_size
        if self.is_mla:
            assert self.kv_lora_rank and self.qk_nope_head_dim and self.qk_rope_head_dim
            assert self.v_head_dim
            r, rope = self.kv_lora_rank, self.qk_rope_head_dim
            heads = self.num_heads if heads is None else heads
            q_out = heads * (self.qk_nope_head_dim + rope)
            ql = self.q_lora_rank
            q = (h + 1) * ql + ql * q_out if ql else h * q_out
            kv = h * (r + rope) + r + r * heads * (self.qk_nope_head_dim + self.v_head_dim)
            return round(q + kv + heads * self.v_head_dim * h)
        attn = h * (self.q_size + 2 * self.kv_size) + self.q_size * h
        attn += (self.q_size + 2 * self.kv_size) if self.qkv_bias else 0
        attn += h if self.o_bias else 0
        attn += 2 * self.head_dim if self.qk_norm else 0
        attn += self.num_heads if self.attention_sinks else 0
        return attn

    def weight_dtype(self, group: str, dtype: str) -> str:
        """The precision of weight ``group`` when weights are deployed in ``dtype``: the
        checkpoint's own (``weight_dtypes``) where it is narrower, else ``dtype``.

        >>> m = load_model("gpt-oss-120b")
        >>> m.weight_dtype("experts", "bf16"), m.weight_dtype("attention", "bf16")
        ('fp4', 'bf16')
        >>> m.weight_dtype("experts", "fp4")
        'fp4'
        """
        own = self.weight_dtypes.get(group)  # type: ignore[call-overload]
        if own is not None and DTYPE_BYTES[own] < DTYPE_BYTES[dtype]:
            return str(own)
        return dtype

    def kv_heads_per_rank(self, tp: int) -> int:
        """KV heads one of ``tp`` ranks holds: the most any rank needs for its query heads.

        Query heads are split evenly (``num_heads / tp`` per rank, in order); query head ``i``
        reads KV head ``i // (num_heads / num_kv_heads)``. That is ``num_kv_heads / tp`` when
        ``tp`` divides the KV heads, one (replicated) when the KV heads divide ``tp``, and in
        between -- Phi-3-medium's 10 KV heads over 4 ranks -- a rank whose query heads straddle
        two groups holds both (3 at tp 4, 2 at tp 8), the KV heads on the boundary duplicated.

        >>> m = load_model("phi3-medium")
        >>> [m.kv_heads_per_rank(tp) for tp in (1, 2, 4, 8)]
        [10, 5, 3, 2]
        >>> load_model("llama3-70b").kv_heads_per_rank(16)
        1
        """
        q_per_rank = self.num_heads // tp
        group = self.num_heads // self.num_kv_heads
        return max(
            ((r + 1) * q_per_rank - 1) // group - (r * q_per_rank) // group + 1 for r in range(tp)
        )

    def uses_rope(self, layer: int) -> bool:
        """Whether ``layer`` applies rotary position embeddings (all but ``nope_layers``)."""
        return layer not in self.nope_layers

    def uses_chunks(self, layer: int) -> bool:
        """Whether ``layer`` attends within its ``attention_chunk_size`` chunk only (Llama 4:
        every RoPE layer; the NoPE layers attend globally)."""
        return self.attention_chunk_size is not None and self.uses_rope(layer)

    @property
    def is_moe(self) -> bool:
        """Whether the model has routed experts."""
        return self.num_experts is not None

    def is_moe_layer(self, layer: int) -> bool:
        """Whether ``layer`` has a MoE block instead of the dense MLP.

        Layer ``l`` is MoE when ``l >= first_k_dense_replace`` and ``(l + 1) % moe_layer_step
        == 0`` (DeepSeek's ``first_k_dense_replace``; Qwen's ``decoder_sparse_step`` and
        Llama 4's ``interleave_moe_layer_step`` count the same way).

        >>> m = load_model("qwen3-30b-a3b")
        >>> m.is_moe_layer(0), load_model("llama3-8b").is_moe_layer(0)
        (True, False)
        """
        return (
            self.num_experts is not None
            and layer >= self.first_k_dense_replace
            and (layer + 1) % self.moe_layer_step == 0
        )

    @property
    def shared_intermediate(self) -> int:
        """Total inner width of the shared experts (0 without them)."""
        if not self.num_shared_experts:
            return 0
        width = self.shared_expert_intermediate_size or self.moe_intermediate_size or 0
        return self.num_shared_experts * width

    def param_counts(self) -> dict[str, int]:
        """Parameters: ``total`` (every weight of the checkpoint), ``active`` per token, and
        ``active_no_embedding``.

        ``total`` counts the embedding, the LM head (once when tied), every norm weight and
        bias, every expert, and ``other_params`` (e.g. a vision encoder). ``active`` counts what
        is left when each MoE layer keeps its ``experts_per_token`` routed experts (plus the
        router and shared experts) and ``other_params`` go: the convention of the Mixtral,
        Qwen3-MoE and DeepSeek-V3 model cards. ``active_no_embedding`` also leaves out the
        input embedding table (a token reads one row of it; the LM head stays): the convention
        of the gpt-oss model card.

        >>> c = load_model("mixtral-8x7b").param_counts()
        >>> round(c["total"] / 1e9, 2), round(c["active"] / 1e9, 2)
        (46.7, 12.88)
        >>> round(c["active_no_embedding"] / 1e9, 2)
        12.75
        """
        h = self.hidden_size
        attn = self.attention_params()
        norms = 2 * h
        n_mats = 3 if self.mlp == "gated" else 2
        dense = n_mats * h * self.intermediate_size
        total = active = 0
        for layer in range(self.num_layers):
            total += attn + norms
            active += attn + norms
            if self.is_moe_layer(layer):
                assert self.num_experts and self.experts_per_token and self.moe_intermediate_size
                expert = n_mats * h * self.moe_intermediate_size
                fixed = h * self.num_experts + n_mats * h * self.shared_intermediate
                total += fixed + self.num_experts * expert
                active += fixed + self.experts_per_token * expert
            else:
                total += dense
                active += dense
        head = self.vocab_size * h + h  # LM head (or the tied embedding) and the final norm
        embedding = 0 if self.tied_embeddings else self.vocab_size * h
        return {
            "total": total + head + embedding + self.other_params,
            "active": active + head + embedding,
            "active_no_embedding": active + head,
        }

    def layer_schedule(self) -> list[str]:
        """One word per layer: its blocks, e.g. ``attention+mlp``, ``attention(window 4096)+moe``,
        ``mla+moe`` (multi-head latent attention).

        >>> load_model("gemma2-27b").layer_schedule()[:2]
        ['attention(window 4096)+mlp', 'attention+mlp']
        """
        out = []
        for layer in range(self.num_layers):
            attn = (
                f"attention(window {self.sliding_window})"
                if self.uses_window(layer)
                else f"attention(chunk {self.attention_chunk_size})"
                if self.uses_chunks(layer)
                else "mla"
                if self.is_mla
                else "attention"
            )
            if self.nope_layers and not self.uses_rope(layer):
                attn += "(nope)"
            out.append(attn + ("+moe" if self.is_moe_layer(layer) else "+mlp"))
        return out

    def summary(self) -> dict[str, object]:
        """Every field, with ``total_params``, ``active_params`` and the layer schedule."""
        counts = self.param_counts()
        return {
            **self.model_dump(),
            "total_params": counts["total"],
            "active_params": counts["active"],
            "active_params_no_embedding": counts["active_no_embedding"],
            "params_definition": (
                "total: every weight of the checkpoint (embedding and LM head once when "
                "tied, other_params such as a vision encoder included); active: all but the "
                "routed experts a token does not use (experts_per_token routed experts plus "
                "router and shared experts per MoE layer) and other_params; "
                "active_no_embedding: active without the input embedding table"
            ),
            "moe_layers": sum(self.is_moe_layer(i) for i in range(self.num_layers)),
            "layer_schedule": self.layer_schedule(),
        }

    @property
    def q_size(self) -> int:
        """Width of the query projection (heads x head_dim)."""
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        """Width of one of the K or V projections (kv heads x head_dim)."""
        return self.num_kv_heads * self.head_dim

    def uses_window(self, layer: int) -> bool:
        """Whether ``layer`` attends over a sliding window only."""
        if self.sliding_window_layers is None:
            return False
        if self.sliding_window_layers == "all":
            return True
        return (layer % 2 == 0) == (self.sliding_window_layers == "even")

    def params_per_layer(self) -> int:
        """Weight elements of one transformer layer (projections only; norms and biases aside).

        >>> load_model("llama3-70b").params_per_layer()
        855638016
        """
        h = self.hidden_size
        attn = (
            self.attention_params()
            if self.is_mla
            else h * (self.q_size + 2 * self.kv_size) + self.q_size * h
        )
        n_mats = 3 if self.mlp == "gated" else 2
        return attn + n_mats * self.hidden_size * self.intermediate_size


def load_model(name_or_path: str | Path | ModelConfig) -> ModelConfig:
    """Load a shipped model by NAME or a user's model YAML by path.

    >>> load_model("llama3-8b").vocab_size
    128256
    """
    if isinstance(name_or_path, ModelConfig):
        return name_or_path
    path = resolve_named_file(str(name_or_path), GRAPHS_DIR, "model")
    data = read_yaml_mapping(path)
    return validate(ModelConfig, data, str(path.name if path.parent == GRAPHS_DIR else path))


def list_models() -> list[str]:
    """Names of the shipped model files.

    >>> "llama3-70b" in list_models()
    True
    """
    return sorted(p.stem for p in GRAPHS_DIR.glob("*.yaml"))
