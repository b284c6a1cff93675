"""Per-layer memory footprint per device (the PRESERVE paper's Fig. 2 study).

For one transformer layer split over ``devices`` by tensor parallelism: the attention
weights (QKV + O projections), the MLP weights, and the KV-cache of one layer, per device.
KV heads are split as the graph splits them (:meth:`ModelConfig.kv_heads_per_rank`: evenly,
replicated one per device when devices outnumber them, or unevenly in between); MLA keeps its
latent cache whole on every device. For MoE models the layer is a MoE layer: the experts held
(all of them, ``1/devices`` of each) and those a decode step of ``batch`` reads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .defaults import DEFAULT_BATCH, DEFAULT_CONTEXT, DEFAULT_DTYPE
from .errors import input_error
from .models import ModelConfig, load_model
from .moe import expected_distinct_experts
from .units import DTYPE_BYTES


@dataclass(frozen=True)
class Footprint:
    """One layer's bytes on one device. For a MoE model the layer is a MoE layer:
    ``mlp_weights_bytes`` is what the device holds of it (every routed expert's ``1/devices``
    share, the shared experts, the router) and ``expert_weights_read_bytes`` what a decode step
    of ``batch`` sequences reads of it (the expected distinct experts, :mod:`preserve_cp.moe`,
    plus shared experts and router); for a dense model the two are the dense MLP's bytes."""

    devices: int
    attention_weights_bytes: float
    mlp_weights_bytes: float
    kv_cache_bytes: float
    expert_weights_read_bytes: float = 0.0
    layer: str = "dense"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def layer_footprint(
    model: ModelConfig | str,
    devices: int,
    *,
    dtype: str = DEFAULT_DTYPE,
    kv_dtype: str | None = None,
    batch: int = DEFAULT_BATCH,
    context: int = DEFAULT_CONTEXT,
    routing: str = "uniform",
) -> Footprint:
    """One layer's footprint per device (a MoE layer for a MoE model).

    ``dtype``, ``batch`` and ``context`` default as a ``Workload``'s do
    (:mod:`preserve_cp.defaults`).

    Llama-3-70B, int8, batch 8, context 16384, 8 devices: attention
    8192 x (8192 + 2 x 1024) + 8192 x 8192 bytes / 8; MLP 3 x 8192 x 28672 / 8;
    KV-cache 8 x 16384 x 2 x 128 (one KV head per device).

    >>> f = layer_footprint("llama3-70b", 8, dtype="int8", batch=8, context=16384)
    >>> f.attention_weights_bytes, f.mlp_weights_bytes, f.kv_cache_bytes
    (18874368.0, 88080384.0, 33554432.0)

    Weights take ``dtype`` unless the checkpoint stores a group narrower
    (:meth:`ModelConfig.weight_dtype`): gpt-oss-120b keeps its experts in fp4 (4.25 bits).
    Mixtral-8x7B at batch 4 reads 5.47 of its 8 experts per layer.

    >>> f = layer_footprint("mixtral-8x7b", 2, dtype="bf16", batch=4)
    >>> f.layer, round(f.expert_weights_read_bytes / f.mlp_weights_bytes, 3)
    ('moe', 0.684)
    """
    m = load_model(model)
    for name, v in (("devices", devices), ("batch", batch), ("context", context)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise input_error("footprint", name, "an integer >= 1", v)
    for name, d in (("dtype", dtype), ("kv_dtype", kv_dtype or dtype)):
        if d not in DTYPE_BYTES:
            raise input_error("footprint", name, f"one of {', '.join(DTYPE_BYTES)}", d)

    def wb(group: str) -> float:
        return DTYPE_BYTES[m.weight_dtype(group, dtype)]

    kb = DTYPE_BYTES[kv_dtype or dtype]
    h = m.hidden_size
    q_l = m.q_size / devices
    kv_l = m.kv_heads_per_rank(devices) * m.head_dim if devices <= m.num_heads else m.head_dim
    attn = (h * (q_l + 2 * kv_l) + q_l * h) * wb("attention")
    kv = batch * context * 2 * kv_l * kb
    if m.is_mla:  # absorbed MLA: the latent cache whole on every device (graph.MLABlock)
        assert m.kv_lora_rank and m.qk_rope_head_dim
        attn = m.attention_params(heads=m.num_heads / devices) * wb("attention")
        kv = batch * context * (m.kv_lora_rank + m.qk_rope_head_dim) * kb
    n_mats = 3 if m.mlp == "gated" else 2
    if not m.is_moe:
        mlp = n_mats * h * m.intermediate_size / devices * wb("mlp")
        return Footprint(devices, float(attn), float(mlp), float(kv), float(mlp))
    assert m.num_experts and m.experts_per_token and m.moe_intermediate_size
    layer = next(i for i in range(m.num_layers) if m.is_moe_layer(i))
    expert = n_mats * h * m.moe_intermediate_size / devices * wb("experts")
    fixed = h * m.num_experts * wb("router")
    fixed += n_mats * h * m.shared_intermediate / devices * wb("shared_experts")
    distinct = expected_distinct_experts(
        m.num_experts, m.experts_per_token, batch, routing, layer=layer
    )
    return Footprint(
        devices,
        float(attn),
        float(m.num_experts * expert + fixed),
        float(kv),
        float(distinct * expert + fixed),
        "moe",
    )


def footprints(model: ModelConfig | str, devices: list[int], **kw: Any) -> list[Footprint]:
    cfg = load_model(model)  # read once, not once per device count
    return [layer_footprint(cfg, d, **kw) for d in devices]
