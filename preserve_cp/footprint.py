"""Per-layer memory footprint per device (the PRESERVE paper's Fig. 2 study).

For one transformer layer split over ``devices`` by tensor parallelism: the attention
weights (QKV + O projections), the MLP weights, and the KV-cache of one layer, per device.
KV heads are split when they divide evenly, and replicated (one head per device) when there
are more devices than KV heads.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .errors import input_error
from .models import ModelConfig, load_model
from .units import DTYPE_BYTES


@dataclass(frozen=True)
class Footprint:
    devices: int
    attention_weights_bytes: float
    mlp_weights_bytes: float
    kv_cache_bytes: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def layer_footprint(
    model: ModelConfig | str,
    devices: int,
    *,
    dtype: str = "int8",
    kv_dtype: str | None = None,
    batch: int = 8,
    context: int = 16384,
) -> Footprint:
    """One layer's footprint per device.

    Llama-3-70B, int8, 8 devices: attention 8192 x (8192 + 2 x 1024) + 8192 x 8192 bytes / 8;
    MLP 3 x 8192 x 28672 / 8; KV-cache 8 x 16384 x 2 x 128 (one KV head per device).

    >>> f = layer_footprint("llama3-70b", 8)
    >>> f.attention_weights_bytes, f.mlp_weights_bytes, f.kv_cache_bytes
    (18874368.0, 88080384.0, 33554432.0)
    """
    m = load_model(model)
    for name, v in (("devices", devices), ("batch", batch), ("context", context)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise input_error("footprint", name, "an integer >= 1", v)
    for name, d in (("dtype", dtype), ("kv_dtype", kv_dtype or dtype)):
        if d not in DTYPE_BYTES:
            raise input_error("footprint", name, f"one of {', '.join(DTYPE_BYTES)}", d)
    wb = DTYPE_BYTES[dtype]
    kb = DTYPE_BYTES[kv_dtype or dtype]
    h = m.hidden_size
    q_l = m.q_size / devices
    kv_heads_l = max(1.0, m.num_kv_heads / devices)
    kv_l = math.ceil(kv_heads_l) * m.head_dim
    attn = (h * (q_l + 2 * kv_l) + q_l * h) * wb
    n_mats = 3 if m.mlp == "gated" else 2
    mlp = n_mats * h * m.intermediate_size / devices * wb
    kv = batch * context * 2 * kv_l * kb
    if m.is_mla:  # absorbed MLA: the latent cache whole on every device (graph.MLABlock)
        assert m.kv_lora_rank and m.qk_rope_head_dim
        attn = m.attention_params(heads=m.num_heads / devices) * wb
        kv = batch * context * (m.kv_lora_rank + m.qk_rope_head_dim) * kb
    return Footprint(devices, float(attn), float(mlp), float(kv))


def footprints(model: ModelConfig | str, devices: list[int], **kw: Any) -> list[Footprint]:
    cfg = load_model(model)  # read once, not once per device count
    return [layer_footprint(cfg, d, **kw) for d in devices]
