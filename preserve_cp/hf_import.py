"""Hugging Face ``config.json`` -> :class:`ModelConfig` (offline: the file is read, nothing
is downloaded).

Policy (it cannot silently mis-build a graph): every top-level field of the config (after
unnesting ``text_config``, as Llama 4 has it) is in exactly one of three sets, or the import
fails with the one-line error naming it:

* *mapped* fields become model fields (``num_hidden_layers`` -> ``num_layers``,
  ``num_local_experts`` / ``n_routed_experts`` / ``num_experts`` -> ``num_experts``...);
* *unsupported* fields change the architecture in a way the schema cannot represent yet
  (``attention_chunk_size``, a non-empty ``mlp_only_layers``...): when set (not null, false, 0
  or empty) the import fails naming the field;
* *ignored* fields do not change the graph (rope settings, dropout, token ids, dtype...).

``model_type`` must be one whose implicit features are known (Qwen2 has a QKV bias, Qwen3 a
qk-norm, neither written in the config; :data:`MODEL_TYPES`): ``llama``, ``mistral``,
``mixtral``, ``qwen2``, ``qwen3``, ``qwen3_moe``, ``phi3`` (its window on every layer),
``gemma2`` (the window on the even layers; tied embeddings by default), ``falcon`` (plain GELU
MLP, LayerNorm; ``new_decoder_architecture``: parallel attention+MLP with ``num_kv_heads``),
``opt`` (plain MLP of ``ffn_dim``, LayerNorm, biases), ``deepseek_v3`` (MLA:
``kv_lora_rank``, ``q_lora_rank``, ``qk_nope_head_dim``, ``qk_rope_head_dim``,
``v_head_dim``; ``head_dim`` becomes qk_nope + qk_rope). DeepSeek's routing details
(``n_group``, ``topk_group``, ``topk_method``, ``scoring_func``, ``routed_scaling_factor``) keep
each expert's per-token probability at k/E under uniform routing, so the graph does not change:
ignored. ``num_nextn_predict_layers`` (the multi-token-prediction module) is excluded: a plain
decode step does not run it.

Gemma 2's ``attn_logit_softcapping`` and ``final_logit_softcapping`` (tanh caps on the attention
scores and the logits) are ignored: elementwise on tensors the graph already has, they add no
weight, no KV byte and no GEMM. A field a model type does not read (Falcon's
``parallel_attn`` elsewhere, OPT's ``ffn_dim``...) stays an error. Parts of an architecture
that no field states and the schema cannot represent are named in the imported description
(``not represented: ...``): Gemma 2's post-attention/post-feedforward norms and embedding
scale, OPT's output-projection and MLP biases; the shipped gemma2-27b and opt-66b make the same
approximations. Phi-3-small (``phi3small``) is refused by its block-sparse attention
(``dense_attention_every_n_layers``).

>>> m = config_to_model({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
...     "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 100,
...     "rms_norm_eps": 1e-5}, "tiny", "config.json")
>>> (m.num_kv_heads, m.head_dim, m.norm)
(4, 16, 'rmsnorm')
>>> config_to_model({"model_type": "llama", "mlp_bias": True}, "x", "c.json")
Traceback (most recent call last):
...
preserve_cp.errors.InputError: c.json: mlp_bias: MLP biases are not supported yet
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from ._yaml import validate
from .errors import InputError, input_error, json_object
from .models import ModelConfig
from .models import load_model as _load_named_model


class ModelType(NamedTuple):
    """What a ``model_type`` implies beyond its config's fields.

    ``qkv_bias``, ``qk_norm``: features its code has that no field states; ``window``: how its
    ``sliding_window`` applies (``none``: not used, ``all`` layers, ``flag``: only with
    ``use_sliding_window``, ``even``: the even layers); ``fields``: config fields read only for
    this type (an error elsewhere); ``defaults``: its transformers config class's defaults of
    fields its config.json may leave out; ``not_represented``: implicit parts of the
    architecture the schema has no place for, written into the imported description.
    """

    qkv_bias: bool
    qk_norm: bool
    window: str
    fields: frozenset[str] = frozenset()
    defaults: tuple[tuple[str, Any], ...] = ()
    not_represented: str = ""


#: model types whose implicit (unwritten) features are known
MODEL_TYPES: dict[str, ModelType] = {
    "llama": ModelType(False, False, "none"),
    "mistral": ModelType(False, False, "all"),
    "mixtral": ModelType(False, False, "all"),
    "qwen2": ModelType(True, False, "flag"),
    "qwen3": ModelType(False, True, "flag"),
    "qwen3_moe": ModelType(False, True, "flag"),
    "deepseek_v3": ModelType(False, False, "none"),
    "phi3": ModelType(False, False, "all"),
    "gemma2": ModelType(
        False,
        False,
        "even",
        frozenset({"hidden_activation", "sliding_window_size", "query_pre_attn_scalar"}),
        (("tie_word_embeddings", True),),
        "the post-attention and post-feedforward RMSNorms and the sqrt(hidden_size) "
        "embedding scale",
    ),
    "falcon": ModelType(
        False,
        False,
        "none",
        frozenset(
            {
                "new_decoder_architecture",
                "parallel_attn",
                "multi_query",
                "num_kv_heads",
                "num_ln_in_parallel_attn",
                "bias",
                "ffn_hidden_size",
                "activation",
            }
        ),
        (
            ("tie_word_embeddings", True),
            ("max_position_embeddings", 2048),
            ("new_decoder_architecture", False),
            ("parallel_attn", True),
            ("multi_query", True),
            ("bias", False),
            ("activation", "gelu"),
        ),
    ),
    # Llama 4 (text_config's model_type): chunked-local attention on the RoPE layers, NoPE and
    # global on every no_rope_layer_interval-th, weightless qk-norm, a shared expert per MoE layer
    "llama4_text": ModelType(
        False,
        False,
        "none",
        frozenset(
            {
                "attention_chunk_size",
                "no_rope_layers",
                "no_rope_layer_interval",
                "use_qk_norm",
                "intermediate_size_mlp",
                "moe_layers",
                "attn_temperature_tuning",
                "floor_scale",
                "attn_scale",
                "for_llm_compressor",
                "vision_config",
            }
        ),
        (("no_rope_layer_interval", 4), ("interleave_moe_layer_step", 1)),
        "the NoPE layers' attention-temperature scaling (one multiply per query element)",
    ),
    # gpt-oss: q, k, v and o biases (attention_bias), one sink logit per head, MXFP4 experts
    "gpt_oss": ModelType(
        False,
        False,
        "none",
        frozenset(
            {"swiglu_limit", "initial_context_length", "rope_ntk_alpha", "rope_ntk_beta"}
            | {"rope_scaling_factor"}
        ),
        (),
        "the router's and the experts' biases (0.04 % of the weights) and the SwiGLU clamp",
    ),
    "opt": ModelType(
        True,
        False,
        "none",
        frozenset(
            {
                "ffn_dim",
                "activation_function",
                "do_layer_norm_before",
                "word_embed_proj_dim",
                "enable_bias",
                "_remove_final_layer_norm",
                "layer_norm_elementwise_affine",
                "output_projection",
            }
        ),
        (
            ("tie_word_embeddings", True),
            ("max_position_embeddings", 2048),
            ("enable_bias", True),
            ("do_layer_norm_before", True),
            ("activation_function", "relu"),
        ),
        "the biases of the output projection and of both MLP projections (only the QKV "
        "bias is represented)",
    ),
}

#: MLA fields, mapped by name (DeepSeek-V2/V3 config names = model field names)
MLA_FIELDS = ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")

#: fields that change the architecture in ways the schema cannot represent (when set)
UNSUPPORTED: dict[str, str] = {
    "attention_chunk_size": "chunked local attention is imported for model_type llama4 only",
    "no_rope_layers": "NoPE layers are imported for model_type llama4 only",
    "use_qk_norm": "weightless qk-norm is imported for model_type llama4 only",
    "intermediate_size_mlp": "a dense MLP width apart from the expert width: llama4 only",
    "mlp_only_layers": "a per-layer list of dense layers is not supported yet",
    "moe_layers": "a per-layer list of MoE layers is not supported yet",
    "sliding_window_pattern": "alternating sliding/global attention patterns are not supported yet",
    "dense_attention_every_n_layers": (
        "block-sparse attention layers (Phi-3-small) are not supported yet"
    ),
    "alibi": "ALiBi attention biases are not imported yet",
    "mlp_bias": "MLP biases are not supported yet",
    "parallel_attn": "parallel attention+MLP blocks are not imported yet (write the YAML)",
    "parallel_residual": "parallel attention+MLP blocks are not imported yet (write the YAML)",
    "shared_expert_gate": "a gated shared expert is not supported yet",
}

#: fields that do not change the graph
IGNORED = frozenset(
    {
        "_name_or_path",
        "architectures",
        "attention_dropout",
        "auto_map",
        "aux_loss_alpha",
        "ep_size",  # DeepSeek's remote code; the serving stack decides expert parallelism
        # DeepSeek routing: group-limited top-k keeps each expert's per-token probability k/E
        # under uniform routing, so the expected distinct experts (and the graph) are the same
        "n_group",
        "topk_group",
        "topk_method",
        "scoring_func",
        "routed_scaling_factor",
        "seq_aux",
        # the multi-token-prediction module: excluded, a plain decode step does not run it
        "num_nextn_predict_layers",
        "bos_token_id",
        # Gemma 2: tanh caps on the attention scores and the final logits, elementwise on
        # tensors the graph already has: no weight, no KV byte, no GEMM changes
        "attn_logit_softcapping",
        "final_logit_softcapping",
        "cache_implementation",  # the generation cache class, a runtime choice
        "_attn_implementation",  # the attention kernel, a runtime choice
        "_attn_implementation_autoset",
        # dropout and initialisation (training only)
        "dropout",
        "activation_dropout",
        "embd_pdrop",
        "resid_pdrop",
        "layerdrop",
        "init_std",
        "prefix",  # OPT: a tokenizer prefix string
        "original_max_position_embeddings",  # Phi-3: the rope scaling's base context
        "dtype",
        "eos_token_id",
        "hidden_dropout",
        "initializer_range",
        "max_window_layers",  # read only with use_sliding_window (then an error)
        "norm_topk_prob",
        "output_router_logits",
        "pad_token_id",
        "pretraining_tp",
        "rope_parameters",
        "rope_scaling",
        "rope_theta",
        "router_aux_loss_coef",
        "router_jitter_noise",
        "torch_dtype",
        "transformers_version",
        "unsloth_fixed",
        "use_cache",
        # a multimodal wrapper's top level (the text decoder is in text_config)
        "vision_config",
        "boi_token_index",
        "eoi_token_index",
        "image_token_index",
    }
)

MAPPED = frozenset(
    {
        "model_type",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "intermediate_size",
        "vocab_size",
        "tie_word_embeddings",
        "rms_norm_eps",
        "layer_norm_eps",
        "layer_norm_epsilon",
        "hidden_act",
        "sliding_window",
        "use_sliding_window",
        "layer_types",
        "max_position_embeddings",
        "attention_bias",
        "num_local_experts",
        "n_routed_experts",
        "num_experts",
        "num_experts_per_tok",
        "experts_per_token",
        "moe_intermediate_size",
        "n_shared_experts",
        "shared_expert_intermediate_size",
        "first_k_dense_replace",
        "decoder_sparse_step",
        "moe_layer_step",
        "interleave_moe_layer_step",
        "moe_layer_freq",
        "quantization_config",
        *MLA_FIELDS,
    }
)

ACTIVATIONS = {
    "silu": "silu",
    "swish": "silu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
}


def _set(value: Any) -> bool:
    """Whether a field is *set* (null, false, 0 and empty lists/mappings are not)."""
    return value is not None and value is not False and value != 0 and value not in ([], {})


def _unnest(config: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The text decoder's fields: ``text_config``'s, with the wrapper's other fields."""
    if not isinstance(config, Mapping):
        raise InputError(f"{where}: expected a JSON object, found {type(config).__name__}")
    text = config.get("text_config")
    if text is None:
        return dict(config)
    if not isinstance(text, Mapping):
        raise input_error(where, "text_config", "an object", text)
    outer = {k: v for k, v in config.items() if k not in ("text_config", "model_type")}
    return {**outer, **text}


def _one_of(cfg: Mapping[str, Any], names: tuple[str, ...], where: str) -> Any:
    """The value of the first alias given; an error when two aliases disagree."""
    given = [(n, cfg[n]) for n in names if cfg.get(n) is not None]
    for n, v in given[1:]:
        if v != given[0][1]:
            raise InputError(f"{where}: {n}: {v!r} disagrees with {given[0][0]} {given[0][1]!r}")
    return given[0][1] if given else None


def _window(cfg: Mapping[str, Any], rule: str, layers: Any, where: str) -> tuple[Any, Any]:
    """(sliding_window, sliding_window_layers) from the window fields and the model type."""
    window = cfg.get("sliding_window")
    kinds = cfg.get("layer_types")
    if kinds is not None:
        if not isinstance(kinds, list) or len(kinds) != layers:
            raise input_error(where, "layer_types", f"a list of {layers} layer kinds", kinds)
        unknown = sorted({k for k in kinds} - {"full_attention", "sliding_attention"})
        if unknown:
            raise InputError(
                f"{where}: layer_types: layer kind {unknown[0]!r} is not supported yet"
            )
        sliding = [k == "sliding_attention" for k in kinds]
        if not any(sliding):
            return None, None
        if window is None:
            raise input_error(where, "sliding_window", "a window for sliding_attention", window)
        for pattern, test in (
            ("all", lambda i: True),
            ("even", lambda i: i % 2 == 0),
            ("odd", lambda i: i % 2 == 1),
        ):
            if all(s == test(i) for i, s in enumerate(sliding)):
                return window, pattern
        raise InputError(
            f"{where}: layer_types: this pattern of sliding layers is not supported yet "
            "(all, even or odd layers only)"
        )
    if rule == "flag":  # Qwen: sliding_window applies only with use_sliding_window
        if _set(cfg.get("use_sliding_window")):
            raise InputError(
                f"{where}: use_sliding_window: per-layer sliding windows (max_window_layers) "
                "are not supported yet"
            )
        return None, None
    if window is None:
        return None, None
    if rule == "even":  # Gemma 2: layer_idx % 2 == 0 slides, the odd layers are global
        return window, "even"
    if rule == "none":
        raise InputError(
            f"{where}: sliding_window: this model type does not use it in transformers; "
            "remove it or give a model_type that does"
        )
    return window, "all"


def _plain_layout(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """No type-specific fields: the model fields config_to_model derives stand."""
    return {}


def _gemma2_layout(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """Gemma 2: ``hidden_activation`` and ``sliding_window_size`` are older names of
    ``hidden_act`` and ``sliding_window`` (they must agree); ``query_pre_attn_scalar`` only
    sets the attention scale."""
    for alias, name in (
        ("hidden_activation", "hidden_act"),
        ("sliding_window_size", "sliding_window"),
    ):
        value = _one_of(cfg, (name, alias), where)
        if value is not None:
            cfg[name] = value
    return {}


def _falcon_layout(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """Falcon: plain GELU MLP of ``ffn_hidden_size`` (4 x hidden by default), LayerNorm.

    ``new_decoder_architecture`` (40B, 180B): attention and MLP in parallel, each with its own
    LayerNorm, ``num_kv_heads`` KV heads. Otherwise ``multi_query`` gives 1 KV head (or one
    per head), and ``parallel_attn`` parallel blocks sharing one LayerNorm (7B): not supported
    yet, as is ``num_ln_in_parallel_attn`` 1 (the same sharing) and ``bias`` (a bias on every
    linear layer)."""
    if _set(cfg.get("bias")):
        raise InputError(f"{where}: bias: biases on every linear layer are not supported yet")
    heads = cfg.get("num_attention_heads")
    if cfg.get("new_decoder_architecture"):
        if cfg.get("num_ln_in_parallel_attn", 2) != 2:
            raise InputError(
                f"{where}: num_ln_in_parallel_attn: attention and MLP sharing one LayerNorm "
                "is not supported yet"
            )
        kv = _one_of(cfg, ("num_key_value_heads", "num_kv_heads"), where)
        block = "parallel"
    else:
        if cfg.get("parallel_attn"):
            raise InputError(
                f"{where}: parallel_attn: parallel attention+MLP sharing one LayerNorm "
                "(without new_decoder_architecture) is not supported yet"
            )
        kv = 1 if cfg.get("multi_query") else heads
        block = "sequential"
    cfg["num_key_value_heads"] = kv
    cfg["hidden_act"] = cfg.get("activation")
    hidden = cfg.get("hidden_size")
    width = cfg.get("ffn_hidden_size")
    if width is None and isinstance(hidden, int):
        width = 4 * hidden
    cfg["intermediate_size"] = width
    return {"mlp": "plain", "block": block, "norm": "layernorm", "qkv_bias": False}


def _opt_layout(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """OPT: plain MLP of ``ffn_dim`` (``activation_function``), pre-LayerNorm blocks
    (``do_layer_norm_before``; post-LN, OPT-350m, is not supported yet), biases on every linear
    layer unless ``enable_bias`` is false (the schema represents the QKV bias only, as the
    shipped opt-66b does: the description says so). ``word_embed_proj_dim`` other than
    ``hidden_size`` (an embedding projection), ``_remove_final_layer_norm`` and a
    LayerNorm without weights are not supported yet."""
    if not cfg.get("do_layer_norm_before"):
        raise InputError(
            f"{where}: do_layer_norm_before: post-LayerNorm blocks are not supported yet"
        )
    proj = cfg.get("word_embed_proj_dim")
    if proj is not None and proj != cfg.get("hidden_size"):
        raise InputError(
            f"{where}: word_embed_proj_dim: an embedding projection ({proj} != hidden_size) "
            "is not supported yet"
        )
    if _set(cfg.get("_remove_final_layer_norm")):
        raise InputError(
            f"{where}: _remove_final_layer_norm: a model without final LayerNorm "
            "is not supported yet"
        )
    if cfg.get("layer_norm_elementwise_affine", True) is not True:
        raise InputError(
            f"{where}: layer_norm_elementwise_affine: LayerNorms without weights "
            "are not supported yet"
        )
    cfg["hidden_act"] = cfg.get("activation_function")
    cfg["intermediate_size"] = cfg.get("ffn_dim")
    out: dict[str, Any] = {"mlp": "plain", "norm": "layernorm"}
    if not cfg.get("enable_bias"):
        out.update(qkv_bias=False, not_represented="")
    return out


def llama4_vision_params(vision: Mapping[str, Any], text_hidden: int) -> int:
    """Parameters of Llama 4's vision encoder and projector from ``vision_config`` (transformers
    Llama4VisionModel and Llama4MultiModalProjector): the patch embedding (``num_channels x
    patch_size^2 -> hidden``, no bias), the class embedding, ``(image_size / patch_size)^2 + 1``
    position embeddings, two LayerNorms (weight and bias) around ``num_hidden_layers`` ViT layers
    (q, k, v, o with biases; fc1 hidden -> intermediate and fc2 back, with biases; two
    LayerNorms), the pixel-shuffle MLP (``intermediate_size -> projector_input_dim ->
    projector_output_dim``, no biases) and the projector ``vision_output_dim -> text hidden``
    (``multi_modal_projector_bias``).

    >>> llama4_vision_params({"hidden_size": 1408, "intermediate_size": 5632,
    ...     "num_hidden_layers": 34, "image_size": 336, "patch_size": 14, "num_channels": 3,
    ...     "projector_input_dim": 4096, "projector_output_dim": 4096,
    ...     "vision_output_dim": 4096}, 5120)
    871932416
    """

    def need(key: str) -> int:
        v = vision.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise input_error("vision_config", key, "an integer >= 0", v)
        return v

    h, inter, layers = need("hidden_size"), need("intermediate_size"), need("num_hidden_layers")
    patch, size = need("patch_size"), need("image_size")
    chans = int(vision.get("num_channels", 3))
    p_in, p_out, v_out = (
        need("projector_input_dim"),
        need("projector_output_dim"),
        need("vision_output_dim"),
    )
    embed = chans * patch * patch * h + h + ((size // patch) ** 2 + 1) * h + 4 * h
    layer = 4 * (h * h + h) + (h * inter + inter) + (inter * h + h) + 4 * h
    adapter = inter * p_in + p_out * p_out
    projector = v_out * text_hidden + (
        text_hidden if vision.get("multi_modal_projector_bias") else 0
    )
    return embed + layers * layer + adapter + projector


def _llama4_layout(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """Llama 4 (transformers Llama4TextConfig): ``intermediate_size`` is the expert width (and
    the one shared expert's), ``intermediate_size_mlp`` the dense MLP's; ``no_rope_layers``
    (1: RoPE) empty means RoPE everywhere but each ``no_rope_layer_interval``-th layer; the
    RoPE layers attend within ``attention_chunk_size`` chunks and, with ``use_qk_norm``, apply
    the weightless L2 qk-norm; ``moe_layers`` must be interleave_moe_layer_step's default;
    ``vision_config`` counts in ``other_params``."""
    layers = cfg.get("num_hidden_layers")
    if not isinstance(layers, int) or layers < 1:
        raise input_error(where, "num_hidden_layers", "an integer >= 1", layers)
    rope = cfg.get("no_rope_layers") or []
    interval = cfg.get("no_rope_layer_interval")
    if not rope:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise input_error(where, "no_rope_layer_interval", "an integer >= 1", interval)
        rope = [int((i + 1) % interval != 0) for i in range(layers)]
    if not isinstance(rope, list) or len(rope) != layers or any(v not in (0, 1) for v in rope):
        raise input_error(where, "no_rope_layers", f"a list of {layers} zeros and ones", rope)
    step = cfg.get("interleave_moe_layer_step")
    moe_layers = cfg.get("moe_layers")
    if (
        moe_layers is not None
        and isinstance(step, int)
        and step >= 1
        and list(moe_layers) != list(range(step - 1, layers, step))
    ):
        raise InputError(
            f"{where}: moe_layers: a list apart from interleave_moe_layer_step's "
            "is not supported yet"
        )
    experts = cfg.get("num_local_experts")
    if experts:
        cfg["moe_intermediate_size"] = cfg.get("intermediate_size")
        cfg["n_shared_experts"] = 1  # Llama4TextMoe: one shared expert of the expert width
    if cfg.get("intermediate_size_mlp") is not None:
        cfg["intermediate_size"] = cfg["intermediate_size_mlp"]
    out: dict[str, Any] = {
        "nope_layers": [i for i, v in enumerate(rope) if not v],
        "qk_l2_norm": bool(cfg.get("use_qk_norm")),
    }
    if cfg.get("attention_chunk_size") is not None:
        out["attention_chunk_size"] = cfg["attention_chunk_size"]
    vision = cfg.get("vision_config")
    if isinstance(vision, Mapping) and isinstance(cfg.get("hidden_size"), int):
        out["other_params"] = llama4_vision_params(vision, cfg["hidden_size"])
    return out


def _gpt_oss_layout(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """gpt-oss: ``attention_bias`` puts biases on q, k, v and o; every layer has one learned
    sink logit per head; ``layer_types`` alternate the ``sliding_window`` (see _window)."""
    bias = bool(cfg.pop("attention_bias", False))
    return {"qkv_bias": bias, "o_bias": bias, "attention_sinks": True}


_LAYOUTS: dict[str, Callable[[dict[str, Any], str], dict[str, Any]]] = {
    "llama4_text": _llama4_layout,
    "gpt_oss": _gpt_oss_layout,
    "gemma2": _gemma2_layout,
    "falcon": _falcon_layout,
    "opt": _opt_layout,
}


def config_to_model(
    config: Mapping[str, Any], name: str, source: str, hf_repo: str = ""
) -> ModelConfig:
    """A validated :class:`ModelConfig` from a Hugging Face ``config.json`` mapping.

    ``source`` (the file, as the user named it) starts every error message and is cited in
    ``sources``; ``hf_repo`` (``owner/name``) adds the config's Hugging Face URL.
    """
    where = source
    cfg = _unnest(config, where)
    mtype = cfg.get("model_type")
    kind = MODEL_TYPES.get(mtype) if isinstance(mtype, str) else None
    own = kind.fields if kind else frozenset()
    for field, why in UNSUPPORTED.items():
        if field in cfg and field not in own and _set(cfg[field]):
            raise InputError(f"{where}: {field}: {why}")
    if kind is None:
        raise input_error(
            where,
            "model_type",
            f"one of {', '.join(MODEL_TYPES)} (others not supported yet)",
            mtype,
        )
    for field in cfg:
        known = field in MAPPED or field in IGNORED or field in UNSUPPORTED or field in own
        if not known:
            raise InputError(
                f"{where}: {field}: unknown field (it may change the architecture; "
                "see docs/models.md, Import a Hugging Face config)"
            )
    cfg = {**dict(kind.defaults), **{k: v for k, v in cfg.items() if v is not None}}
    qkv_bias, qk_norm, rule = kind.qkv_bias, kind.qk_norm, kind.window
    layout = _LAYOUTS.get(str(mtype), _plain_layout)(cfg, where)
    qkv_bias = layout.pop("qkv_bias", qkv_bias)
    not_represented = layout.pop("not_represented", kind.not_represented)
    if _set(cfg.get("attention_bias")):
        raise InputError(
            f"{where}: attention_bias: a bias on every attention projection (o_proj too) "
            "is not supported yet"
        )
    hidden, heads = cfg.get("hidden_size"), cfg.get("num_attention_heads")
    head_dim = cfg.get("head_dim")
    mla = {f: cfg[f] for f in MLA_FIELDS if cfg.get(f) is not None}
    if mla and mtype != "deepseek_v3":
        first = next(iter(mla))
        raise InputError(
            f"{where}: {first}: MLA attention only with model_type deepseek_v3, not {mtype}"
        )
    if mla:
        nope, rope = cfg.get("qk_nope_head_dim"), cfg.get("qk_rope_head_dim")
        if isinstance(nope, int) and isinstance(rope, int) and head_dim is None:
            head_dim = nope + rope  # MLA: the query/key head width
    if head_dim is None and isinstance(hidden, int) and isinstance(heads, int) and heads > 0:
        if hidden % heads:
            raise input_error(where, "head_dim", f"given (hidden_size {hidden} % heads)", None)
        head_dim = hidden // heads
    act = cfg.get("hidden_act", "silu")
    if act not in ACTIVATIONS:
        raise input_error(where, "hidden_act", f"one of {', '.join(ACTIVATIONS)}", act)
    if cfg.get("layer_norm_eps") is not None or cfg.get("layer_norm_epsilon") is not None:
        if cfg.get("rms_norm_eps") is not None:
            raise InputError(f"{where}: layer_norm_eps: given with rms_norm_eps (which norm?)")
        norm = "layernorm"
    else:
        norm = "rmsnorm"
    norm = layout.pop("norm", norm)
    layers = cfg.get("num_hidden_layers")
    window, window_layers = _window(cfg, rule, layers, where)
    data: dict[str, Any] = {
        "name": name,
        "description": f"imported from {Path(source).name} (model_type {mtype})"
        + (f"; not represented: {not_represented}" if not_represented else ""),
        "hf_repo": hf_repo,
        "sources": [
            {
                "tag": "HF-config",
                "url": source,
                "used_for": "all shapes (preserve-cp models import)",
            }
        ],
        "hidden_size": hidden,
        "intermediate_size": cfg.get("intermediate_size"),
        "num_layers": layers,
        "num_heads": heads,
        "num_kv_heads": cfg.get("num_key_value_heads") or heads,
        "head_dim": head_dim,
        "vocab_size": cfg.get("vocab_size"),
        "mlp": layout.pop("mlp", "gated"),
        "activation": ACTIVATIONS[act],
        "block": layout.pop("block", "sequential"),
        "norm": norm,
        "qkv_bias": qkv_bias,
        "tied_embeddings": bool(cfg.get("tie_word_embeddings", False)),
        "sliding_window": window,
        "sliding_window_layers": window_layers,
        "qk_norm": qk_norm,
    }
    if hf_repo:
        data["sources"].insert(
            0,
            {
                "tag": f"HF-{hf_repo}",
                "url": f"https://huggingface.co/{hf_repo}/blob/main/config.json",
                "used_for": "all shapes (preserve-cp models import)",
            },
        )
    if cfg.get("max_position_embeddings") is not None:
        data["max_context"] = cfg["max_position_embeddings"]
    data.update(mla)
    data.update(_moe(cfg, where))
    data.update(layout)  # the type's own fields (chunks, NoPE layers, sinks, other_params...)
    model = validate(ModelConfig, data, where)
    precisions = _precisions(cfg.get("quantization_config"), where)
    if not precisions:
        return model
    has = {"attention", "embedding", "lm_head"}  # the groups this model has weights in
    if model.is_moe:
        has |= {"router", "experts"} | ({"shared_experts"} if model.num_shared_experts else set())
    if not all(model.is_moe_layer(i) for i in range(model.num_layers)):
        has.add("mlp")
    data["weight_dtypes"] = {g: d for g, d in precisions.items() if g in has}
    return validate(ModelConfig, data, where)


#: weight groups a checkpoint quantizes when quantization_config names no exception: the linear
#: layers of attention, the MLPs and the experts (embedding, LM head and router stay as they are:
#: DeepSeek-V3's router is not a linear layer; gpt-oss lists them in modules_to_not_convert)
QUANTIZED_GROUPS = ("attention", "mlp", "experts", "shared_experts")
#: quant_method -> dtype (block scales included: units.DTYPE_BYTES)
QUANT_METHODS = {"fp8": "fp8", "mxfp4": "fp4"}
#: module-name fragments of modules_to_not_convert -> the weight group they keep unquantized
MODULE_GROUPS = (
    ("self_attn", "attention"),
    ("shared_expert", "shared_experts"),
    ("router", "router"),
    ("mlp.gate.", "router"),
    ("experts", "experts"),
    ("embed_tokens", "embedding"),
    ("lm_head", "lm_head"),
    ("mlp", "mlp"),
)
QUANT_KEYS = frozenset(
    {
        "quant_method",
        "fmt",
        "weight_block_size",
        "activation_scheme",
        "modules_to_not_convert",
        "ignored_layers",
    }
)


def _precisions(qc: Any, where: str) -> dict[str, str]:
    """The checkpoint's per-group weight precisions from ``quantization_config``.

    ``quant_method`` ``fp8`` (DeepSeek-V3's 128 x 128 blocks, one scale each: counted as fp8)
    or ``mxfp4`` (gpt-oss: 4.25 bits per weight with the block scales); the groups in
    :data:`QUANTIZED_GROUPS` take it, minus those ``modules_to_not_convert`` (or
    ``ignored_layers``) name. How activations are quantized (``activation_scheme``) is a
    deployment choice (``--act-dtype``), not the checkpoint's. Other methods and keys: the
    one-line error.

    >>> _precisions({"quant_method": "mxfp4", "modules_to_not_convert":
    ...     ["model.layers.*.self_attn", "model.layers.*.mlp.router", "lm_head"]}, "c.json")
    {'mlp': 'fp4', 'experts': 'fp4', 'shared_experts': 'fp4'}
    """
    if qc is None:
        return {}
    if not isinstance(qc, Mapping):
        raise input_error(where, "quantization_config", "an object", qc)
    for key in qc:
        if key not in QUANT_KEYS:
            raise InputError(
                f"{where}: quantization_config.{key}: not understood (known: "
                f"{', '.join(sorted(QUANT_KEYS))})"
            )
    method = qc.get("quant_method")
    if method not in QUANT_METHODS:
        raise input_error(
            where, "quantization_config.quant_method", f"one of {', '.join(QUANT_METHODS)}", method
        )
    keep: set[str] = set()
    for key in ("modules_to_not_convert", "ignored_layers"):
        names = qc.get(key) or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise input_error(where, f"quantization_config.{key}", "a list of module names", names)
        for n in names:
            group = next((g for frag, g in MODULE_GROUPS if frag in n + "."), None)
            if group is None:
                raise InputError(
                    f"{where}: quantization_config.{key}: module {n!r} matches no weight group"
                )
            keep.add(group)
    dtype = QUANT_METHODS[method]
    return {g: dtype for g in QUANTIZED_GROUPS if g not in keep}


def _moe(cfg: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The MoE fields (empty for a dense model)."""
    experts = _one_of(cfg, ("num_local_experts", "n_routed_experts", "num_experts"), where)
    top_k = _one_of(cfg, ("num_experts_per_tok", "experts_per_token"), where)
    if not experts:
        for f in ("n_shared_experts", "shared_expert_intermediate_size", "first_k_dense_replace"):
            if _set(cfg.get(f)):
                raise InputError(f"{where}: {f}: given without routed experts")
        return {}
    out: dict[str, Any] = {
        "num_experts": experts,
        "experts_per_token": top_k,
        # Mixtral: intermediate_size is the expert width
        "moe_intermediate_size": cfg.get("moe_intermediate_size") or cfg.get("intermediate_size"),
    }
    shared = cfg.get("n_shared_experts")
    shared_width = cfg.get("shared_expert_intermediate_size")
    if shared_width and shared is None:
        shared = 1
    if shared:
        out["num_shared_experts"] = shared
    if shared_width:
        out["shared_expert_intermediate_size"] = shared_width
    if cfg.get("first_k_dense_replace"):
        out["first_k_dense_replace"] = cfg["first_k_dense_replace"]
    step = _one_of(
        cfg, ("decoder_sparse_step", "moe_layer_step", "interleave_moe_layer_step"), where
    )
    if step is not None:
        out["moe_layer_step"] = step
    freq = cfg.get("moe_layer_freq")
    if freq is not None and freq != 1:
        # DeepSeek: MoE when layer % moe_layer_freq == 0, not (layer + 1) % step
        raise InputError(f"{where}: moe_layer_freq: only 1 is supported yet, found {freq!r}")
    return out


def read_config(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path``; one-line errors for a missing or malformed file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    return json_object(str(path), text)


def default_name(path: str | Path) -> str:
    """A model name from the file: its folder's name for ``config.json``, else its stem.

    >>> default_name("models/Mixtral-8x7B-v0.1/config.json"), default_name("mistral-7b.json")
    ('mixtral-8x7b-v0.1', 'mistral-7b')
    """
    p = Path(path)
    stem = p.parent.name if p.name == "config.json" and p.parent.name else p.stem
    return stem.lower() or "imported"


def import_config(path: str | Path, name: str = "", hf_repo: str = "") -> ModelConfig:
    """Read and convert a ``config.json`` file (see :func:`config_to_model`)."""
    return config_to_model(read_config(path), name or default_name(path), str(path), hf_repo)


def load_model(name_or_path: str | Path | ModelConfig) -> ModelConfig:
    """:func:`preserve_cp.models.load_model`, and a ``.json`` path goes through the importer.

    >>> load_model("llama3-8b").num_layers
    32
    """
    if isinstance(name_or_path, str | Path) and str(name_or_path).endswith(".json"):
        return import_config(name_or_path)
    return _load_named_model(name_or_path)


def model_yaml(model: ModelConfig, header: str = "") -> str:
    """The model as a YAML file (defaults left out), ``header`` as leading comment lines."""
    data = model.model_dump(exclude_none=True)
    fields = type(model).model_fields
    for key in (
        "hf_repo",
        "uncertain",
        "qk_norm",
        "num_shared_experts",
        "first_k_dense_replace",
        "moe_layer_step",
    ):
        if data.get(key) == fields[key].get_default(call_default_factory=True):
            data.pop(key)
    for src in data["sources"]:
        if not src.get("used_for"):
            src.pop("used_for", None)
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    lines = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return lines + body
