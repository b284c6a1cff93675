"""Mixture-of-experts: routing statistics, the MoE block, shipped MoE models (issue 12)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import preserve_cp as pc
from preserve_cp.cli import main
from preserve_cp.graph import MoEBlock, layer_specs
from preserve_cp.models import ModelConfig
from preserve_cp.moe import (
    expected_distinct_experts,
    inclusion_probabilities,
    load_routing_trace,
)
from preserve_cp.plan import Plan


def moe_model(experts: int, top_k: int, **kw: object) -> ModelConfig:
    base = pc.load_model("qwen3-30b-a3b").model_dump()
    base.update(num_layers=2, num_experts=experts, experts_per_token=top_k, name="tiny-moe")
    base.update(kw)
    return ModelConfig(**base)


def expert_bytes_read(g, layer: int = 0) -> float:
    a, b = g.nodes[f"L{layer}.experts_gate_up"], g.nodes[f"L{layer}.experts_down"]
    return a["reads"][f"L{layer}.w_experts_gate_up"] + b["reads"][f"L{layer}.w_experts_down"]


@pytest.mark.parametrize(
    ("experts", "top_k", "batch"),
    [(8, 2, 1), (8, 2, 4), (8, 2, 16), (128, 8, 8), (128, 8, 64), (256, 8, 32), (16, 1, 3)],
)
def test_expert_bytes_follow_uniform_routing(experts: int, top_k: int, batch: int) -> None:
    m = moe_model(experts, top_k)
    tp = 2
    g = pc.build_graph(m, pc.Workload("decode", batch, 512, tp))
    one_expert = 3 * m.hidden_size * m.moe_intermediate_size / tp * 2  # bf16, per rank
    distinct = experts * (1 - (1 - top_k / experts) ** batch)
    assert expert_bytes_read(g) == pytest.approx(distinct * one_expert, rel=1e-6, abs=2)
    node = g.nodes["L0.experts_gate_up"]
    assert node["experts"] == pytest.approx(distinct)
    assert node["rows"] == pytest.approx(batch * top_k / distinct)
    # compute covers top_k experts per token, whatever the routing
    assert node["flops"] == 2.0 * batch * top_k * m.hidden_size * 2 * m.moe_intermediate_size / tp
    assert "L0.w_experts_gate_up" in node["prefetchable"]


def test_batch_one_reads_top_k_and_large_batch_all() -> None:
    m = moe_model(128, 8)
    one = 3 * m.hidden_size * m.moe_intermediate_size * 2
    small = expert_bytes_read(pc.build_graph(m, pc.Workload("decode", 1, 512, 1)))
    large = expert_bytes_read(pc.build_graph(m, pc.Workload("decode", 4096, 512, 1)))
    assert small == pytest.approx(8 * one, rel=1e-9)
    assert large == pytest.approx(128 * one, rel=1e-6)
    # prefill: B = batch x prompt tokens; 2 x 64 tokens of top-8 of 128 nearly cover them all
    pre = pc.build_graph(m, pc.Workload("prefill", 2, 64, 1))
    want = 128 * (1 - (1 - 8 / 128) ** 128)
    assert pre.nodes["L0.experts_down"]["experts"] == pytest.approx(want)


def test_weights_held_count_every_expert() -> None:
    m = moe_model(128, 8)
    same = moe_model(128, 8)
    g1 = pc.build_graph(m, pc.Workload("decode", 1, 512, 2))
    g64 = pc.build_graph(same, pc.Workload("decode", 64, 512, 2))
    assert g1.graph["weights_bytes_per_device"] == g64.graph["weights_bytes_per_device"]
    experts = 2 * 128 * 3 * m.hidden_size * m.moe_intermediate_size / 2 * 2
    assert g1.graph["weights_bytes_per_device"] > experts


@pytest.mark.parametrize(("experts", "top_k", "s"), [(8, 2, 1.0), (128, 8, 0.7), (64, 6, 1.2)])
def test_zipf_inclusion_probabilities(experts: int, top_k: int, s: float) -> None:
    pi = inclusion_probabilities(experts, top_k, f"zipf:{s}")
    assert sum(pi) == pytest.approx(top_k, rel=1e-9)
    assert all(0 <= p <= 1 for p in pi) and pi == sorted(pi, reverse=True)
    assert inclusion_probabilities(experts, top_k, "zipf:0") == pytest.approx(
        [top_k / experts] * experts
    )
    assert expected_distinct_experts(experts, top_k, 1, f"zipf:{s}") == pytest.approx(top_k)
    for b in (4, 16, 64):  # skewed popularity hits fewer distinct experts
        assert expected_distinct_experts(experts, top_k, b, f"zipf:{s}") < (
            expected_distinct_experts(experts, top_k, b)
        )


@pytest.mark.parametrize(
    ("experts", "top_k", "s", "tokens"),
    [(8, 2, 1.0, 4), (128, 8, 1.0, 32), (128, 8, 0.5, 8), (64, 6, 1.2, 16), (8, 2, 2.0, 4)],
)
def test_zipf_approximation_against_sampling(experts: int, top_k: int, s: float, tokens: int):
    """Top-k without replacement (sequential in popularity, Gumbel top-k) vs our formula."""
    rng = np.random.default_rng(12)
    p = np.arange(1, experts + 1, dtype=float) ** -s
    p /= p.sum()
    keys = np.log(p) + rng.gumbel(size=(3000, tokens, experts))
    picks = np.argsort(-keys, axis=2)[:, :, :top_k]
    sampled = np.mean([len(np.unique(x)) for x in picks])
    ours = expected_distinct_experts(experts, top_k, tokens, f"zipf:{s}")
    assert ours == pytest.approx(sampled, rel=0.02)


def test_routing_option() -> None:
    m = moe_model(128, 8)
    u = pc.build_graph(m, pc.Workload("decode", 32, 512, 1))
    z = pc.build_graph(m, pc.Workload("decode", 32, 512, 1, routing="zipf:1"))
    assert expert_bytes_read(z) < expert_bytes_read(u)
    assert z.graph["workload"]["routing"] == "zipf:1"
    assert "routing" not in u.graph["workload"]  # dense-era workload dicts unchanged
    for bad in ("zipf", "zipf:x", "zipf:-1", "top1", 3):
        with pytest.raises(pc.InputError, match=r"^workload: routing: expected 'uniform' or"):
            pc.Workload(routing=bad)  # type: ignore[arg-type]


def test_layer_schedule_and_shared_experts() -> None:
    m = moe_model(
        16, 2, num_layers=6, first_k_dense_replace=1, moe_layer_step=2, num_shared_experts=1
    )
    assert [m.is_moe_layer(i) for i in range(6)] == [False, True, False, True, False, True]
    specs = layer_specs(m, pc.Workload(tp=2))
    assert isinstance(specs[1].blocks[1], MoEBlock) and specs[1].blocks[1].shared_width == 384
    g = pc.build_graph(m, pc.Workload("decode", 4, 512, 2))
    assert "L0.gate_up" in g and "L0.router" not in g
    assert g.nodes["L1.shared_down"]["reads"]["L1.w_shared_down"] == 768 // 2 * 2048 * 2
    assert g.nodes["L1.router"]["reads"]["L1.w_router"] == 2048 * 16 * 2  # replicated
    assert list(g.successors("L1.experts_down")) == ["L1.shared_gate_up"]
    assert pc.validate_graph(g) is g


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"moe_intermediate_size": None}, "moe_intermediate_size to be given with num_experts"),
        ({"experts_per_token": 9, "num_experts": 8}, "experts_per_token (9) to be at most"),
        ({"first_k_dense_replace": 2}, "to leave at least one MoE layer of 2"),
        ({"shared_expert_intermediate_size": 64}, "only with num_shared_experts"),
        ({"num_experts": 0}, "num_experts: expected greater than 0"),
    ],
)
def test_moe_fields_validated(tmp_path, update: dict, message: str) -> None:
    import yaml

    data = moe_model(8, 2).model_dump()
    data.update(update)
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(pc.InputError) as e:
        pc.load_model(str(path))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_dense_fields_reject_moe_schedule(tmp_path) -> None:
    import yaml

    data = pc.load_model("llama3-8b").model_dump()
    data["first_k_dense_replace"] = 1
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(pc.InputError, match="first_k_dense_replace only with num_experts"):
        pc.load_model(str(path))


PUBLISHED = {  # name: (total, active) parameters, billions
    "mixtral-8x7b": (46.7, 12.9),
    "mixtral-8x22b": (141.0, 39.0),
    "qwen3-235b-a22b": (235.0, 22.0),
    "qwen3-30b-a3b": (30.5, 3.3),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_totals(name: str, capsys) -> None:
    assert main(["models", "show", name, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    total, active = PUBLISHED[name]
    assert out["total_params"] / 1e9 == pytest.approx(total, rel=0.01)
    assert out["active_params"] / 1e9 == pytest.approx(active, rel=0.02)
    assert out["moe_layers"] == out["num_layers"] == len(out["layer_schedule"])
    assert out["layer_schedule"][0] == "attention+moe"


def test_dense_totals_unchanged() -> None:
    c = pc.load_model("llama3-70b").param_counts()
    assert c["total"] == c["active"]
    assert c["total"] / 1e9 == pytest.approx(70.55, rel=0.001)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_shipped_moe_graphs_build(name: str) -> None:
    m = pc.load_model(name)
    for tp in (1, 2, 4, 8):
        g = pc.build_graph(m, pc.Workload("decode", 8, 1024, tp))
        assert pc.validate_graph(g) is g
        assert g.number_of_nodes() > m.num_layers * 10


def test_moe_decode_grows_with_batch_more_than_dense() -> None:
    """Vanilla decode step, batch 64 over batch 1, context 1024, tp 1, bf16, h200-sxm.

    Qwen3-30B-A3B (3.3 B active) reads ~8 experts per layer at batch 1 and ~126 of 128 at
    64; Qwen2.5-7B (7.6 B, dense) reads the same weights at any batch.
    """

    def step(name: str, batch: int) -> float:
        g = pc.build_graph(name, pc.Workload("decode", batch, 1024, 1))
        return pc.simulate(g, "h200-sxm", Plan("vanilla")).makespan_s

    moe = step("qwen3-30b-a3b", 64) / step("qwen3-30b-a3b", 1)
    dense = step("qwen2.5-7b", 64) / step("qwen2.5-7b", 1)
    assert moe > 3.0 and dense < 1.5 and moe > 2.5 * dense


# --- router-trace files (measured routing) ----------------------------------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "routing"


def write_trace(path: Path, layers: dict, *, tokens: int = 1000, top_k: int = 2, **kw) -> str:
    data = {
        "format": "preserve-cp-routing/1",
        "tokens": tokens,
        "top_k": top_k,
        "experts": 8,
        "layers": layers,
    }
    data.update(kw)
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


SKEWED = [900, 700, 150, 100, 50, 40, 30, 30]  # sums to 2000 = 1000 tokens x top-2


def test_uniform_trace_reproduces_the_uniform_formula(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "u.json", {"0": [250] * 8})
    for b in (1, 2, 4, 8, 16, 64, 1000):
        ours = expected_distinct_experts(8, 2, b, path)
        assert ours == pytest.approx(expected_distinct_experts(8, 2, b), rel=1e-12)
    # a sampled uniform router: counts near N k / E give the formula within sampling noise
    rng = np.random.default_rng(3)
    picks = np.argsort(rng.random((20000, 128)), axis=1)[:, :8]
    counts = np.bincount(picks.ravel(), minlength=128).tolist()
    data = {"format": "preserve-cp-routing/1", "tokens": 20000, "top_k": 8, "experts": 128}
    (tmp_path / "s.json").write_text(json.dumps({**data, "layers": {"0": counts}}))
    for b in (4, 32, 256):
        got = expected_distinct_experts(128, 8, b, str(tmp_path / "s.json"))
        assert got == pytest.approx(expected_distinct_experts(128, 8, b), rel=0.01)


def test_skewed_trace_reads_fewer_experts(tmp_path: Path) -> None:
    path = write_trace(tmp_path / "s.json", {"0": SKEWED})
    assert expected_distinct_experts(8, 2, 1, path) == pytest.approx(2.0)  # D = k at B = 1
    for b in (2, 4, 16, 64):
        assert expected_distinct_experts(8, 2, b, path) < expected_distinct_experts(8, 2, b)
    q = [c / 1000 for c in SKEWED]
    want = sum(1 - (1 - x) ** 4 for x in q)
    assert expected_distinct_experts(8, 2, 4, path) == pytest.approx(want, rel=1e-12)
    assert inclusion_probabilities(8, 2, path) == sorted(q, reverse=True)


def test_trace_layers_differ_in_the_built_graph(tmp_path: Path) -> None:
    default = [400, 300, 300, 250, 250, 200, 150, 150]
    path = write_trace(tmp_path / "t.json", {"0": [250] * 8, "5": SKEWED}, default=default)
    m = pc.load_model("mixtral-8x7b")
    g = pc.build_graph(m, pc.Workload("decode", 8, 1024, 2, routing=path))
    experts = [g.nodes[f"L{i}.experts_gate_up"]["experts"] for i in range(m.num_layers)]
    assert experts[0] == pytest.approx(expected_distinct_experts(8, 2, 8))
    assert experts[5] == pytest.approx(sum(1 - (1 - c / 1000) ** 8 for c in SKEWED))
    assert experts[5] < experts[1] < experts[0]
    assert len(set(experts)) == 3 and experts[1] == experts[31]  # the rest: 'default'
    assert g.nodes["L5.experts_down"]["experts"] == experts[5]
    assert g.graph["workload"]["routing"] == path
    u = pc.build_graph(m, pc.Workload("decode", 8, 1024, 2))
    assert expert_bytes_read(g, 5) < expert_bytes_read(u, 5)
    assert expert_bytes_read(g, 0) == pytest.approx(expert_bytes_read(u, 0))


def test_trace_is_read_once_per_change(tmp_path: Path, monkeypatch) -> None:
    from preserve_cp import moe

    reads: list[str] = []
    real = moe._read_trace
    monkeypatch.setattr(moe, "_read_trace", lambda p: reads.append(p) or real(p))
    path = write_trace(tmp_path / "t.json", {}, default=[250] * 8)
    m = pc.load_model("mixtral-8x7b")  # 32 MoE layers
    pc.build_graph(m, pc.Workload("decode", 4, 1024, 2, routing=path))
    pc.build_graph(m, pc.Workload("decode", 16, 1024, 2, routing=path))
    assert reads == [path]
    write_trace(tmp_path / "t.json", {}, default=SKEWED)
    os.utime(path, ns=(1, 1))  # a new modification time, whatever the clock's resolution
    g = pc.build_graph(m, pc.Workload("decode", 4, 1024, 2, routing=path))
    assert reads == [path, path]
    assert g.nodes["L3.experts_gate_up"]["experts"] < expected_distinct_experts(8, 2, 4)


BAD_TRACES = [  # (file text or a change to a good file, field named, words of the message)
    (None, "routing trace file not found", ""),
    ("{not json", "not valid JSON", "line 1"),
    ("[1, 2]", "expected a JSON object", "list"),
    ({"format": "preserve-cp-routing/2"}, "format: expected 'preserve-cp-routing/1'", "/2'"),
    ({"format": None}, "format: expected 'preserve-cp-routing/1'", "None"),
    ({"tokens": 0}, "tokens: expected an integer >= 1", "0"),
    ({"top_k": 9}, "top_k: expected an integer in [1, 8]", "9"),
    ({"layers": {"0": [250] * 7}}, "layers.0: expected a list of 8 counts", "found 7 counts"),
    ({"layers": {"0": [250] * 9}}, "layers.0: expected a list of 8 counts", "found 9 counts"),
    ({"layers": {"0": "250"}}, "layers.0: expected a list of 8 counts", "found str"),
    ({"layers": {"0": [-1, 501, *[250] * 6]}}, "layers.0[0]: expected a non-negative", "-1"),
    ({"layers": {"0": [250.5, 249.5, *[250] * 6]}}, "layers.0[0]: expected a non-negative", ""),
    ({"layers": {"0": [True, *[250] * 7]}}, "layers.0[0]: expected a non-negative", "True"),
    ({"layers": {"0": [250] * 7 + [249]}}, "layers.0: expected counts summing to tokens", "1999"),
    ({"layers": {"0": [1001, 999, *[0] * 6]}}, "layers.0[0]: expected at most tokens", "1001"),
    ({"layers": {"x": [250] * 8}}, "layers: expected keys that are layer indices", "'x'"),
    ({"layers": {"-1": [250] * 8}}, "layers: expected keys that are layer indices", "'-1'"),
    ({"layers": {"03": [250] * 8}}, "layers: expected keys that are layer indices", "'03'"),
    ({"layers": []}, "layers: expected an object", "[]"),
    ({"layers": {}}, "layers: expected at least one layer", ""),
    ({"default": [250] * 7}, "default: expected a list of 8 counts", "found 7 counts"),
    ({"defualt": [250] * 8}, "defualt: unknown field", ""),
    ({"experts": None}, "experts: expected an integer in [1, 65536]", "None"),
]


@pytest.mark.parametrize(("change", "field", "words"), BAD_TRACES)
def test_bad_trace_files_name_the_file_and_field(tmp_path: Path, change, field, words) -> None:
    path = tmp_path / "bad-trace.json"
    if isinstance(change, str):
        path.write_text(change, encoding="utf-8")
    elif isinstance(change, dict):
        good = json.loads(Path(write_trace(path, {"0": [250] * 8})).read_text())
        good.update(change)
        path.write_text(json.dumps(good), encoding="utf-8")
    for make in (
        lambda: pc.Workload("decode", 4, tp=1, routing=str(path)),
        lambda: expected_distinct_experts(8, 2, 4, str(path)),
    ):
        with pytest.raises(pc.InputError) as err:
            make()
        msg = str(err.value)
        assert msg.startswith(f"{path}: ") and field in msg and words in msg, msg
        assert "\n" not in msg


def test_trace_must_match_the_model_and_cover_its_layers(tmp_path: Path) -> None:
    m = pc.load_model("mixtral-8x7b")
    path = write_trace(tmp_path / "t.json", {"0": [250] * 8, "1": [250] * 8})
    wl = pc.Workload("decode", 4, 1024, 2, routing=path)  # the file itself is fine
    with pytest.raises(pc.InputError) as err:
        pc.build_graph(m, wl)
    assert str(err.value) == (
        f"{path}: layers: expected an entry for MoE layer 2 (or a 'default' entry), "
        "found entries for layers 0-1"
    )
    with pytest.raises(pc.InputError) as err:
        pc.build_graph(moe_model(128, 8), pc.Workload("decode", 4, tp=1, routing=path))
    assert str(err.value) == f"{path}: experts: expected 128 (the model's num_experts), found 8"
    with pytest.raises(pc.InputError) as err:
        pc.build_graph(moe_model(8, 1), pc.Workload("decode", 4, tp=1, routing=path))
    assert str(err.value) == f"{path}: top_k: expected 1 (the model's experts_per_token), found 2"
    # a dense model never reads the routing; other layers' entries are ignored
    pc.build_graph("llama3-8b", pc.Workload("decode", 4, tp=1, routing=path))
    pc.build_graph(moe_model(8, 2), pc.Workload("decode", 4, tp=1, routing=path))  # 2 layers: 0, 1


def test_not_a_routing_model_nor_a_file_keeps_the_old_message() -> None:
    for bad in ("top1", "zipf", "", "trace"):
        with pytest.raises(pc.InputError) as err:
            pc.Workload(routing=bad)
        assert str(err.value).startswith("workload: routing: expected 'uniform' or 'zipf:S'")
        assert "router-trace .json file" in str(err.value)


def test_docs_quote_the_trace_messages() -> None:
    page = " ".join(
        (Path(__file__).resolve().parent.parent / "docs" / "models.md")
        .read_text(encoding="utf-8")
        .split()
    )
    for text in (
        "trace.json: layers.3: expected a list of 8 counts (one per expert), found 7 counts",
        "trace.json: layers.3: expected counts summing to tokens x top_k = 4096 x 2 = 8192, "
        "found 8190",
        "trace.json: experts: expected 128 (the model's num_experts), found 8",
        "trace.json: layers: expected an entry for MoE layer 2 (or a 'default' entry), "
        "found entries for layers 0-1",
    ):
        assert f"`{text}`" in page, text


def test_example_trace_is_synthetic_reproducible_and_loads(tmp_path: Path) -> None:
    shipped = EXAMPLES / "mixtral-8x7b-skewed.json"
    done = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "make_skewed_trace.py"),
            "--out",
            str(tmp_path / "again.json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "again.json").read_text() == shipped.read_text()
    data = json.loads(shipped.read_text())
    assert data["description"].startswith("SYNTHETIC, not measured")
    trace = load_routing_trace(str(shipped))
    assert sorted(trace.layers) == list(range(32)) and trace.default is None
    g = pc.build_graph("mixtral-8x7b", pc.Workload("decode", 8, 1024, 2, routing=str(shipped)))
    experts = [g.nodes[f"L{i}.experts_gate_up"]["experts"] for i in range(32)]
    assert max(experts) < expected_distinct_experts(8, 2, 8) and len(set(experts)) == 32


@pytest.mark.slow  # about 17 s (three CLI solves of a MoE model): with the slow checks
def test_cli_routing_file(tmp_path: Path, capsys) -> None:
    shipped = str(EXAMPLES / "mixtral-8x7b-skewed.json")
    args = [
        "solve",
        "--model",
        "mixtral-8x7b",
        "--hardware",
        "h100-sxm",
        "--phase",
        "decode",
        "--batch",
        "4",
        "--context",
        "2048",
        "--tp",
        "2",
        "--time-limit",
        "5",
        "--json",
    ]
    assert main([*args, "--routing", shipped]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["inputs"]["workload"]["routing"] == shipped
    assert main([*args, "--routing", "uniform"]) == 0
    uniform = json.loads(capsys.readouterr().out)
    assert out["baseline_makespan_s"] < uniform["baseline_makespan_s"]  # fewer expert bytes
    bad = write_trace(tmp_path / "bad.json", {"0": [250] * 7 + [249]})
    assert main([*args, "--routing", bad]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"preserve-cp: error: {bad}: layers.0: expected counts")
    assert main([*args, "--routing", str(tmp_path / "missing.json")]) == 2
    assert "missing.json: routing trace file not found" in capsys.readouterr().err
    assert main([*args, "--routing", "top1"]) == 2
    assert "--routing: value: expected 'uniform' or" in capsys.readouterr().err
    short = write_trace(tmp_path / "short.json", {"0": [250] * 8})  # fails at graph build
    assert main([*args, "--routing", short]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "layers: expected an entry for MoE layer 1" in err


def test_docs_trace_example_is_a_valid_file(tmp_path: Path) -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "models.md").read_text("utf-8")
    section = page.split("### Measured routing: a router-trace file")[1].split("\n### ")[0]
    example = section.split("```json\n")[1].split("```")[0]
    path = tmp_path / "doc.json"
    path.write_text(example, encoding="utf-8")
    trace = load_routing_trace(str(path))
    assert (trace.tokens, trace.top_k, trace.experts, sorted(trace.layers)) == (4096, 2, 8, [0, 1])
    assert expected_distinct_experts(8, 2, 4, str(path), layer=7) == pytest.approx(
        expected_distinct_experts(8, 2, 4)
    )
