"""Hugging Face config.json import (issue 12, item 4): fixtures give the shipped graphs exactly."""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import pytest

from preserve_cp import Workload, build_graph
from preserve_cp.cli import main
from preserve_cp.errors import InputError
from preserve_cp.hf_import import config_to_model, import_config, load_model, read_config
from preserve_cp.models import load_model as load_shipped

FIXTURES = Path(__file__).parent / "fixtures" / "hf_configs"
SHIPPED = sorted(p.stem for p in FIXTURES.glob("*.json"))
META = {"name", "description", "hf_repo", "sources", "uncertain"}
WORKLOADS = [
    Workload("decode", batch=4, context=1024, tp=4),
    Workload("prefill", batch=1, context=512, tp=2),
]


def _shape(m):
    return {k: v for k, v in m.model_dump().items() if k not in META}


def _same_graph(a: nx.DiGraph, b: nx.DiGraph) -> None:
    assert a.graph == b.graph
    assert list(a.nodes) == list(b.nodes)
    for n in a.nodes:
        assert a.nodes[n] == b.nodes[n], n
    assert sorted(a.edges) == sorted(b.edges)


@pytest.mark.parametrize("name", SHIPPED)
def test_fixture_imports_to_the_shipped_graph(name: str) -> None:
    path = FIXTURES / f"{name}.json"
    cfg = read_config(path)
    if "quantization_config" in cfg:  # DeepSeek-V3's fp8 block quantisation: --dtype instead
        with pytest.raises(InputError, match="quantization_config: checkpoint precisions"):
            import_config(path)
        del cfg["quantization_config"]
        imported = config_to_model(cfg, name, str(path))
    else:
        imported = import_config(path)
    shipped = load_shipped(name)
    assert imported.name == name
    assert _shape(imported) == _shape(shipped)
    for wl in WORKLOADS:
        _same_graph(build_graph(imported, wl), build_graph(shipped, wl))


@pytest.mark.parametrize(
    ("name", "published"),
    [("mistral-7b", 7.24e9), ("llama3.2-1b", 1.24e9), ("llama3.2-3b", 3.21e9)],
)
def test_new_models_match_published_totals(name: str, published: float) -> None:
    total = load_shipped(name).param_counts()["total"]
    assert abs(total / published - 1) < 0.01


def _cfg(**over):
    base = read_config(FIXTURES / "llama3-8b.json")
    return {**base, **over}


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"kv_lora_rank": 512}, "cfg.json: kv_lora_rank: MLA attention only with model_type"),
        ({"attention_chunk_size": 8192}, "cfg.json: attention_chunk_size: chunked local"),
        ({"mlp_only_layers": [0]}, "cfg.json: mlp_only_layers:"),
        ({"attention_bias": True}, "cfg.json: attention_bias:"),
        ({"quantization_config": {"quant_method": "fp8"}}, "cfg.json: quantization_config:"),
        ({"frobnicate": 1}, "cfg.json: frobnicate: unknown field"),
        ({"model_type": "gemma2"}, "cfg.json: model_type: expected one of"),
        ({"sliding_window": 4096}, "cfg.json: sliding_window:"),
        ({"hidden_act": "mish"}, "cfg.json: hidden_act:"),
        ({"layer_types": ["full_attention", "linear_attention"] * 16}, "linear_attention"),
        ({"model_type": "qwen2", "use_sliding_window": True}, "cfg.json: use_sliding_window:"),
        (
            {"num_local_experts": 8, "num_experts": 16, "num_experts_per_tok": 2},
            "cfg.json: num_experts: 16 disagrees with num_local_experts 8",
        ),
        ({"num_hidden_layers": "many"}, "cfg.json: num_layers:"),
    ],
)
def test_unsupported_fields_are_one_line_errors(over, message) -> None:
    with pytest.raises(InputError) as exc:
        config_to_model(_cfg(**over), "x", "cfg.json")
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_text_config_nesting_is_read() -> None:
    inner = {**_cfg(), "model_type": "llama"}
    outer = {"model_type": "llama4", "architectures": ["X"], "text_config": inner}
    assert _shape(config_to_model(outer, "x", "c.json")) == _shape(load_shipped("llama3-8b"))
    inner["attention_chunk_size"] = 8192  # Llama 4's chunked attention: refused, named
    with pytest.raises(InputError, match="attention_chunk_size"):
        config_to_model(outer, "x", "c.json")


def test_aliases_and_defaults() -> None:
    cfg = _cfg(num_key_value_heads=None, n_routed_experts=16, experts_per_token=2)
    cfg.update(moe_intermediate_size=1024, n_shared_experts=1, first_k_dense_replace=1)
    m = config_to_model(cfg, "x", "c.json")
    assert (m.num_kv_heads, m.head_dim) == (32, 128)
    assert (m.num_experts, m.experts_per_token, m.moe_intermediate_size) == (16, 2, 1024)
    assert (m.num_shared_experts, m.first_k_dense_replace) == (1, 1)
    assert not m.is_moe_layer(0) and m.is_moe_layer(1)
    swa = ["sliding_attention", "full_attention"] * 16
    m = config_to_model(_cfg(model_type="mistral", sliding_window=128, layer_types=swa), "x", "c")
    assert (m.sliding_window, m.sliding_window_layers) == (128, "even")


def test_load_model_takes_a_config_path() -> None:
    assert load_model(str(FIXTURES / "mixtral-8x7b.json")).num_experts == 8
    assert load_model("llama3-8b").num_layers == 32


def test_cli_import_writes_and_refuses_to_overwrite(tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.yaml"
    src = str(FIXTURES / "qwen3-30b-a3b.json")
    assert (
        main(["models", "import", src, "--name", "q", "--out", str(out), "--hf-repo", "a/b"]) == 0
    )
    m = load_shipped(str(out))
    assert (
        m.name == "q" and m.hf_repo == "a/b" and _shape(m) == _shape(load_shipped("qwen3-30b-a3b"))
    )
    assert any(s.url == src for s in m.sources)
    capsys.readouterr()
    assert main(["models", "import", src, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err
    assert main(["models", "import", src, "--out", str(out), "--force"]) == 0


def test_cli_model_config_json_and_routing(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(read_config(FIXTURES / "mixtral-8x7b.json")))
    args = ["solve", "--model", str(cfg), "--hardware", "h100-sxm", "--plans", "vanilla"]
    assert main([*args, "--batch", "8", "--routing", "zipf:1.2"]) == 0
    assert capsys.readouterr().out.startswith(f"{tmp_path.name} on h100-sxm")
    assert main([*args, "--routing", "zipf"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--routing" in err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model_type": "deepseek_v3", "attention_chunk_size": 8192}))
    assert main(["models", "show", str(bad)]) == 2
    assert "attention_chunk_size: chunked local attention" in capsys.readouterr().err


def test_deepseek_v3_mla_import() -> None:
    """MLA fields map by name; head_dim becomes qk_nope + qk_rope; MTP and routing details
    (n_group, topk_group, scoring_func...) are ignored; moe_layer_freq other than 1 refused."""
    cfg = read_config(FIXTURES / "deepseek-v3.json")
    del cfg["quantization_config"]
    m = config_to_model(cfg, "dsv3", "config.json")
    assert (m.head_dim, m.kv_lora_rank, m.q_lora_rank, m.v_head_dim) == (192, 512, 1536, 128)
    assert (m.num_experts, m.num_shared_experts, m.first_k_dense_replace) == (256, 1, 3)
    with pytest.raises(InputError, match="moe_layer_freq: only 1"):
        config_to_model({**cfg, "moe_layer_freq": 2}, "dsv3", "config.json")
    lite = {**cfg, "q_lora_rank": None}  # DeepSeek-V2-Lite style: no query compression
    assert config_to_model(lite, "lite", "config.json").q_lora_rank is None
    with pytest.raises(InputError, match="v_head_dim"):
        config_to_model({**cfg, "v_head_dim": None}, "dsv3", "config.json")
