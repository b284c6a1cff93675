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
qk-norm, neither written in the config): ``llama``, ``mistral``, ``mixtral``, ``qwen2``,
``qwen3``, ``qwen3_moe``, ``deepseek_v3`` (MLA: ``kv_lora_rank``, ``q_lora_rank``,
``qk_nope_head_dim``, ``qk_rope_head_dim``, ``v_head_dim``; ``head_dim`` becomes qk_nope +
qk_rope). DeepSeek's routing details (``n_group``, ``topk_group``, ``topk_method``,
``scoring_func``, ``routed_scaling_factor``) keep each expert's per-token probability at k/E
under uniform routing, so the graph does not change: ignored. ``num_nextn_predict_layers`` (the
multi-token-prediction module) is excluded: a plain decode step does not run it.

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

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ._yaml import validate
from .errors import InputError, input_error
from .models import ModelConfig
from .models import load_model as _load_named_model

#: model types whose implicit (unwritten) features are known: (qkv_bias, qk_norm, window rule)
MODEL_TYPES: dict[str, tuple[bool, bool, str]] = {
    "llama": (False, False, "none"),
    "mistral": (False, False, "all"),
    "mixtral": (False, False, "all"),
    "qwen2": (True, False, "flag"),
    "qwen3": (False, True, "flag"),
    "qwen3_moe": (False, True, "flag"),
    "deepseek_v3": (False, False, "none"),
}

#: MLA fields, mapped by name (DeepSeek-V2/V3 config names = model field names)
MLA_FIELDS = ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")

#: fields that change the architecture in ways the schema cannot represent (when set)
UNSUPPORTED: dict[str, str] = {
    "attention_chunk_size": "chunked local attention is not supported yet",
    "no_rope_layers": "NoPE layers (with chunked attention) are not supported yet",
    "use_qk_norm": "weightless qk-norm (Llama 4) is not supported yet",
    "intermediate_size_mlp": "a dense MLP width apart from the expert width is not supported yet",
    "mlp_only_layers": "a per-layer list of dense layers is not supported yet",
    "moe_layers": "a per-layer list of MoE layers is not supported yet",
    "sliding_window_pattern": "alternating sliding/global attention patterns are not supported yet",
    "attn_logit_softcapping": "attention logit soft-capping is not supported yet",
    "final_logit_softcapping": "final logit soft-capping is not supported yet",
    "mlp_bias": "MLP biases are not supported yet",
    "parallel_attn": "parallel attention+MLP blocks are not imported yet (write the YAML)",
    "parallel_residual": "parallel attention+MLP blocks are not imported yet (write the YAML)",
    "shared_expert_gate": "a gated shared expert is not supported yet",
    "quantization_config": (
        "checkpoint precisions are not imported yet (remove it and pass --dtype)"
    ),
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
    if rule == "none":
        raise InputError(
            f"{where}: sliding_window: this model type does not use it in transformers; "
            "remove it or give a model_type that does"
        )
    return window, "all"


def config_to_model(
    config: Mapping[str, Any], name: str, source: str, hf_repo: str = ""
) -> ModelConfig:
    """A validated :class:`ModelConfig` from a Hugging Face ``config.json`` mapping.

    ``source`` (the file, as the user named it) starts every error message and is cited in
    ``sources``; ``hf_repo`` (``owner/name``) adds the config's Hugging Face URL.
    """
    where = source
    cfg = _unnest(config, where)
    for field, why in UNSUPPORTED.items():
        if field in cfg and _set(cfg[field]):
            raise InputError(f"{where}: {field}: {why}")
    mtype = cfg.get("model_type")
    if mtype not in MODEL_TYPES:
        raise input_error(
            where,
            "model_type",
            f"one of {', '.join(MODEL_TYPES)} (others not supported yet)",
            mtype,
        )
    for field in cfg:
        if field not in MAPPED and field not in IGNORED and field not in UNSUPPORTED:
            raise InputError(
                f"{where}: {field}: unknown field (it may change the architecture; "
                "see docs/models.md, Import a Hugging Face config)"
            )
    qkv_bias, qk_norm, rule = MODEL_TYPES[mtype]
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
    layers = cfg.get("num_hidden_layers")
    window, window_layers = _window(cfg, rule, layers, where)
    data: dict[str, Any] = {
        "name": name,
        "description": f"imported from {Path(source).name} (model_type {mtype})",
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
        "mlp": "gated",
        "activation": ACTIVATIONS[act],
        "block": "sequential",
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
    return validate(ModelConfig, data, where)


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
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


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
