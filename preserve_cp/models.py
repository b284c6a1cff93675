"""Model description: YAML -> validated :class:`ModelConfig` (dense transformer decoders).

Shapes follow the Hugging Face ``config.json`` names. The layer description is data-driven
(``mlp``, ``block``, ``sliding_window``...), so new layer kinds arrive as additions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from ._yaml import data_dir, not_bool, read_yaml_mapping, resolve_named_file, validate

GRAPHS_DIR = data_dir("graphs")
Count = Annotated[int, BeforeValidator(not_bool)]


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

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) to be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})"
            )
        if (self.sliding_window is None) != (self.sliding_window_layers is None):
            raise ValueError("sliding_window and sliding_window_layers to be given together")
        for path in self.uncertain:
            if path.split(".")[0] not in type(self).model_fields:
                raise ValueError(f"field names in uncertain ({path!r} is not one)")
        return self

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
        attn = self.hidden_size * (self.q_size + 2 * self.kv_size) + self.q_size * self.hidden_size
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
