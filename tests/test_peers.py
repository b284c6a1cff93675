"""``preserve-cp validate --compare``: the mapping each peer gets, the grouped table, and the
peers themselves where they are installed (``pip install "preserve-cp[peers]"``)."""

from __future__ import annotations

import ast
import importlib.metadata
import json
from pathlib import Path

import pytest
import yaml

from preserve_cp import peers
from preserve_cp.cli import main
from preserve_cp.hardware import load_hardware
from preserve_cp.validate import (
    _vanilla_s,
    compare,
    load_points,
    parse_precision,
    predict,
    run_options,
)

POINTS = {p["id"]: p for p in load_points()}
TTFT_A100 = "trtllm05-llama2-7b-a100-tp1-fp16-ttft-isl2048"  # llama2-7b, tp 1, 2048 tokens
ITL_H100 = "nim18-llama3.3-70b-h100-tp2-fp8-c1-500-2000-itl"
#: one point of each metric made of a model step, and a collective
SMALL = [
    "gptfast-llama2-7b-a100-tp1-bf16",  # tokens_per_s_per_user
    TTFT_A100,  # ttft_ms
    "trtllm05-llama2-7b-h100-tp1-fp8-bs64-128-128",  # output_tokens_per_s_total
    "vllmci-llama3-8b-h100-tp1-bs8",  # e2e_latency_s
    ITL_H100,  # time_per_output_token_ms
    "nccl1259-allreduce-h100-2gpu-nvls-512B",  # allreduce_latency_us
]


# ----------------------------------------------------------------------- the mapping, no peers


def test_decode_context_is_input_plus_half_the_output():
    p = POINTS[ITL_H100]  # 500 in, 2000 out
    assert peers.decode_context(p) == 500 + 1000
    assert peers.decode_context({"input_tokens": 5, "output_tokens": 200}) == 105
    assert peers.decode_context({"input_tokens": 5, "output_tokens": 201}) == 105  # floor


@pytest.mark.parametrize("pid", SMALL[:5])
def test_metric_value_is_validates_formula(pid):
    """A peer's step and prefill become the metric exactly as ours do in validate.predict."""
    p = POINTS[pid]
    hw = load_hardware(p["hardware"])
    dt = parse_precision(p["precision"])
    assert dt is not None
    args = (p["model"], hw, int(p["batch"]))
    tp, opts = int(p["tp"]), run_options(p)
    step_needed, prefill_needed = peers.needs(p)
    step = (
        _vanilla_s("decode", args[0], hw, args[2], peers.decode_context(p), tp, dt, opts)
        if step_needed
        else None
    )
    pre = (
        _vanilla_s("prefill", args[0], hw, args[2], int(p["input_tokens"]), tp, dt, opts)
        if prefill_needed
        else None
    )
    assert peers.metric_value(p, step, pre) == pytest.approx(predict(p, hw), rel=1e-12)


def test_metric_value_formulas_by_hand():
    p = {"batch": 64, "input_tokens": 128, "output_tokens": 128}
    step, pre = 0.010, 0.050  # s
    e2e = 0.050 + 128 * 0.010  # 1.33 s
    assert peers.metric_value({**p, "metric": "time_per_output_token_ms"}, step, None) == 10.0
    assert peers.metric_value({**p, "metric": "ttft_ms"}, None, pre) == 50.0
    assert peers.metric_value({**p, "metric": "e2e_latency_s"}, step, pre) == pytest.approx(e2e)
    assert peers.metric_value({**p, "metric": "tokens_per_s_per_user"}, step, pre) == (
        pytest.approx(128 / e2e)
    )
    assert peers.metric_value({**p, "metric": "output_tokens_per_s_total"}, step, pre) == (
        pytest.approx(64 * 128 / e2e)
    )


def test_needs_and_collectives():
    assert peers.needs({"metric": "time_per_output_token_ms"}) == (True, False)
    assert peers.needs({"metric": "ttft_ms"}) == (False, True)
    assert peers.needs({"metric": "output_tokens_per_s_total"}) == (True, True)
    with pytest.raises(peers.Unsupported, match="collective"):
        peers.needs({"metric": "allreduce_busbw_gb_per_s"})


def test_version_choice():
    assert peers.stack_version(POINTS[TTFT_A100]) == "0.5.0"  # "TensorRT-LLM v0.5.0 (..."
    assert peers.stack_version(POINTS["inferencex870-dsr1-h200-tp8-c8-tpot"]) == "0.5.7"
    assert peers.stack_version(POINTS[ITL_H100]) is None  # NIM names no TensorRT-LLM version
    assert peers.closest_version(["1.3.0rc20", "1.3.0rc23"], "0.5.0", "x") == "1.3.0rc20"
    assert peers.closest_version(["0.5.14", "0.5.16"], "0.5.7", "x") == "0.5.14"
    assert peers.closest_version(["0.5.14", "0.5.16"], "0.5.15.post1", "x") == "0.5.14"
    assert peers.closest_version(["0.5.14", "0.5.16"], None, "0.5.14") == "0.5.14"


def test_model_descriptions_from_the_shipped_shapes():
    from preserve_cp.models import load_model

    cfg = peers.hf_config(load_model("llama2-70b"))
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]) == (
        8192,
        28672,
        80,
    )
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"]) == (64, 8)
    moe = peers.hf_config(load_model("mixtral-8x7b"))
    assert moe["architectures"] == ["MixtralForCausalLM"] and moe["num_experts_per_tok"] == 2
    with pytest.raises(peers.Unsupported, match="neither a Llama nor a Mixtral"):
        peers.hf_config(load_model("falcon-180b"))  # parallel block, GELU MLP
    la = peers.LLMAnalysis.model_file(load_model("llama2-7b"))
    # two matrices of 4096 x 16512 hold what three of 4096 x 11008 do
    assert 2 * la["hidden_dim"] * la["ffn_embed_dim"] == 3 * 4096 * 11008
    with pytest.raises(peers.Unsupported, match="MLA"):
        peers.LLMAnalysis.model_file(load_model("deepseek-r1"))


# ------------------------------------------------------------------------ the table, no peers


class _Stub(peers.Peer):
    """A peer that predicts 1.1 x the measured value of every model-step point it has a
    device for (ids in ``fail`` it cannot express)."""

    name = "stub"
    dist = "stub-dist"
    module = "json"
    devices = {"a100-sxm-80g": "A100", "h100-sxm": "H100"}

    def __init__(self, fail: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.fail = fail

    def _load(self) -> None:
        pass

    def predict(self, p):
        if p["id"] in self.fail:
            return None, "stub cannot"
        try:
            peers.needs(p)
        except peers.Unsupported as exc:
            return None, str(exc)
        if p["hardware"] not in self.devices:
            return None, "no stub system"
        return 1.1 * p["value"], f"stub on {self.devices[p['hardware']]}"


def _small():
    pts = [POINTS[i] for i in SMALL]
    return pts, compare(pts)


def test_table_with_a_peer():
    pts, ours = _small()
    res = peers.compare_peers(pts, ours, [_Stub(frozenset({ITL_H100}))])
    groups = {(g["group"], g["split"]): g for g in res["groups"]}
    all_ = groups[("all", "all")]
    assert all_["points"] == 6
    assert all_["each"]["stub"]["n"] == 4  # not the collective, not the failed point
    assert all_["each"]["stub"]["median_abs_error"] == pytest.approx(0.10)
    assert all_["each"]["ours"]["n"] == 6
    assert all_["common_n"] == 4 == all_["common"]["ours"]["n"]
    assert groups[("decode", "all")]["each"]["stub"]["n"] == 2  # tokens/s: user, total
    assert groups[("ttft", "train")]["each"]["stub"]["n"] == 1
    row = next(r for r in res["points"] if r["id"] == ITL_H100)
    assert row["stub"] == {"predicted": None, "error": None, "note": "stub cannot"}
    text = peers.render(res)
    assert "stub " in text and "(a) each tool" in text and "(b) on the points" in text
    assert "10.0 % (4)" in text  # the stub's median on every point it models
    assert "1 x stub cannot" in text and "1 x a collective, not a model step" in text
    json.dumps(res)  # the --json output


def test_table_without_peers(monkeypatch):
    monkeypatch.setattr(
        peers.Peer, "available", lambda self: f"not installed (pip install {self.dist})"
    )
    pts, ours = _small()
    res = peers.compare_peers(pts, ours)
    assert [t["name"] for t in res["tools"]] == ["aiconfigurator", "GenZ", "llm-analysis"]
    assert all(set(r) == {"id", "split", "hardware", "model", "metric", "measured", "ours"}
               for r in res["points"])  # fmt: skip
    text = peers.render(res)
    assert "aiconfigurator: not installed (pip install aiconfigurator)" in text
    assert "GenZ: not installed (pip install genz-llm)" in text
    assert "llm-analysis: not installed (pip install llm-analysis)" in text
    assert text.splitlines()[5].split() == ["group", "split", "points", "ours"]  # ours alone


def test_a_missing_module_is_reported_not_raised():
    class Missing(_Stub):
        name = "missing"
        dist = "no-such-dist"
        module = "no_such_module_preserve_cp"

        def _load(self) -> None:
            import no_such_module_preserve_cp  # type: ignore[import-not-found]  # noqa: F401

    class Broken(_Stub):  # installed, but one of its own imports fails
        name = "broken"
        dist = "broken-dist"
        module = "json"

        def _load(self) -> None:
            import json.no_such_submodule_preserve_cp  # type: ignore[import-not-found]  # noqa: F401

    assert Broken().available().startswith("not usable: ModuleNotFoundError")
    peer = Missing()
    assert peer.available() == "not installed (pip install no-such-dist)"
    assert peers.Peer.predict(peer, POINTS[TTFT_A100]) == (
        None,
        "not installed (pip install no-such-dist)",
    )


def test_a_peer_in_its_own_process(monkeypatch):
    """GenZ runs in a worker process: a missing package there is "not installed", a failed
    import "not usable", and the package never imports the peer itself."""
    code = peers._GENZ_WORKER
    missing = code.replace("from GenZ import", "from no_such_module_preserve_cp import")
    monkeypatch.setattr(peers, "_GENZ_WORKER", missing)
    peer = peers.GenZ()
    peer.module = "no_such_module_preserve_cp"
    assert peer.available() == "not installed (pip install genz-llm)"
    assert peer.predict(POINTS[TTFT_A100]) == (None, "not installed (pip install genz-llm)")
    broken = code.replace("from GenZ import", "from json.no_such_submodule import")
    monkeypatch.setattr(peers, "_GENZ_WORKER", broken)
    assert peers.GenZ().available().startswith("not usable: ModuleNotFoundError")
    raising = code.replace(
        "from GenZ import decode_moddeling, prefill_moddeling",
        "def decode_moddeling(**kw):\n"
        "        raise ValueError('All params would not fit on chip')\n"
        "    prefill_moddeling = decode_moddeling",
    )
    monkeypatch.setattr(peers, "_GENZ_WORKER", raising)
    value, note = peers.GenZ().predict(POINTS[TTFT_A100])
    assert value is None and note == "GenZ failed: ValueError: All params would not fit on chip"
    tree = ast.parse(Path(peers.__file__).read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "GenZ" not in imported and "json" in imported


def test_cli_compare_without_peers(monkeypatch, tmp_path: Path, capsys):
    monkeypatch.setattr(
        peers.Peer, "available", lambda self: f"not installed (pip install {self.dist})"
    )
    data = {"points": [POINTS[i] for i in SMALL[:2]]}
    f = tmp_path / "points.yaml"
    f.write_text(yaml.safe_dump(data))
    assert main(["validate", "--set", str(f), "--compare"]) == 0
    out = capsys.readouterr().out
    assert "GenZ: not installed" in out and "decode  all" in out
    assert main(["validate", "--set", str(f), "--compare", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["calibrated"] is True and len(res["points"]) == 2
    assert {t["status"] for t in res["tools"]} == {
        "not installed (pip install aiconfigurator)",
        "not installed (pip install genz-llm)",
        "not installed (pip install llm-analysis)",
    }


# ------------------------------------------------------------------ the peers, where installed


def _pinned(dist: str, version: str) -> None:
    """Skip a test of exact numbers unless the peer is the version they were read from."""
    pytest.importorskip(dist.replace("-", "_") if dist != "genz-llm" else "GenZ")
    if importlib.metadata.version(dist) != version:
        pytest.skip(f"numbers read from {dist} {version}")


def test_aiconfigurator_prefill_against_its_gemm_table():
    """TTFT of Llama-2-7B, 2048 tokens, batch 1, A100, TensorRT-LLM v0.5.0 (measured 133 ms):
    aiconfigurator 0.12.0 on a100_sxm's trtllm 1.0.0 database. Its QKV and output projections
    are table rows at exactly this shape; read by hand from
    ``systems/data/a100_sxm/gemm/trtllm/1.0.0/gemm_perf.parquet`` (bfloat16, m 2048, k 4096):
    n 12288 (QKV): 0.816264533996582 ms; n 4096 (o_proj): 0.30702934265136717 ms."""
    _pinned("aiconfigurator", "0.12.0")
    aic = peers.AIConfigurator()
    p = POINTS[TTFT_A100]
    value, note = aic.predict(p)
    assert note == "trtllm 1.0.0 on a100_sxm"  # the closest database to v0.5.0 on an A100
    parts = aic.breakdown(p, "prefill")
    assert parts["context_qkv_gemm"] == pytest.approx(32 * 0.816264533996582, rel=1e-9)
    assert parts["context_proj_gemm"] == pytest.approx(32 * 0.30702934265136717, rel=1e-9)
    assert parts["context_ar_1"] == 0.0  # one GPU: no allreduce
    assert value == pytest.approx(sum(parts.values()), rel=1e-9)
    assert value == pytest.approx(121.536, abs=0.001)  # ms: -8.6 % against the 133 measured


def test_aiconfigurator_decode_step_is_one_step_at_the_mean_context():
    _pinned("aiconfigurator", "0.12.0")
    aic = peers.AIConfigurator()
    p = POINTS[ITL_H100]
    value, note = aic.predict(p)
    assert note == "trtllm 1.3.0rc20 on h100_sxm"  # NIM: TensorRT-LLM, version not stated
    step = aic.breakdown(p, "decode")  # one step at 500 + 2000 // 2
    assert value == pytest.approx(sum(step.values()), rel=1e-9)
    assert value == pytest.approx(18.621, abs=0.001)  # ms, measured 18.91
    assert step["generation_ar_1"] > 0  # tp 2: the allreduces are in the step


def test_aiconfigurator_backend_of_a_stack_without_tables():
    _pinned("aiconfigurator", "0.12.0")
    value, note = peers.AIConfigurator().predict(POINTS["gptfast-llama2-7b-a100-tp1-int8"])
    assert note == "trtllm 1.0.0 on a100_sxm (the default backend: no gpt-fast tables)"
    assert value is not None  # trtllm's A100 tables have int8 weight-only GEMMs


def test_aiconfigurator_says_why_it_cannot():
    pytest.importorskip("aiconfigurator")
    aic = peers.AIConfigurator()
    assert aic.predict(POINTS["oci-llama3.1-405b-mi300x-tp8-fp8-bs1-128-128"]) == (
        None,
        "mi300x: no aiconfigurator system for this GPU",
    )
    value, note = aic.predict(POINTS["trtllm05-falcon-180b-h100-tp8-fp8-ttft-isl2048"])
    assert value is None and "neither a Llama nor a Mixtral" in note
    value, note = aic.predict(POINTS["nccl1259-allreduce-h100-2gpu-nvls-512B"])
    assert value is None and note.endswith("a collective, not a model step")


def test_genz_and_llm_analysis_on_a_point():
    """Both are analytical: at batch 1 they stream the weights at the A100's datasheet
    bandwidth and come out faster than the measured 104.9 tokens/s (GenZ 164, llm-analysis
    152 with 0.0.16 and 0.2.2)."""
    p = POINTS["gptfast-llama2-7b-a100-tp1-bf16"]
    for module, peer in (("GenZ", peers.GenZ()), ("llm_analysis", peers.LLMAnalysis())):
        pytest.importorskip(module)
        value, note = peer.predict(p)
        assert value is not None, note
        assert 120 < value < 170, (peer.name, value)
        value, note = peer.predict(POINTS["vllmci-llama3-8b-h200-tp1-bs8"])
        assert value is None and "h200-sxm" in note
