"""``preserve-cp solve --json`` validates against the shipped JSON Schema (and names its inputs).

The validator below covers the subset of JSON Schema the shipped schema uses; a keyword
outside that subset fails the test rather than being skipped silently.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from preserve_cp.cli import main
from preserve_cp.describe import SOLVE_SCHEMA, solve_schema

#: the keywords the validator understands (annotations are ignored, the rest are checked)
KEYWORDS = {"type", "enum", "minimum", "required", "properties", "additionalProperties"}
KEYWORDS |= {"items", "$ref", "maximum"}
ANNOTATIONS = {"$schema", "$defs", "title", "description"}
TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _is(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, TYPES[kind])


def validate(value: Any, schema: dict[str, Any], root: dict[str, Any], where: str = "$") -> None:
    """Raise AssertionError naming the first place ``value`` breaks ``schema``."""
    unknown = set(schema) - KEYWORDS - ANNOTATIONS
    assert not unknown, f"{where}: schema keywords the test validator lacks: {unknown}"
    if "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/$defs/"), ref
        validate(value, root["$defs"][ref.removeprefix("#/$defs/")], root, where)
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        assert any(_is(value, k) for k in kinds), f"{where}: {value!r} is not {kinds}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if "minimum" in schema and _is(value, "number"):
        assert value >= schema["minimum"], f"{where}: {value} < {schema['minimum']}"
    if "maximum" in schema and _is(value, "number"):
        assert value <= schema["maximum"], f"{where}: {value} > {schema['maximum']}"
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            assert key in value, f"{where}: missing {key!r}"
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                validate(item, props[key], root, f"{where}.{key}")
            elif extra is False:
                raise AssertionError(f"{where}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                validate(item, extra, root, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            validate(item, schema["items"], root, f"{where}[{i}]")


ARGS = [
    "solve",
    "--model",
    "llama3-8b",
    "--hardware",
    "h100-sxm",
    "--batch",
    "2",
    "--context",
    "1024",
    "--tp",
    "4",
    "--dtype",
    "fp8",
    "--time-limit",
    "10",
    "--json",
]


def test_the_validator_catches_what_it_should():
    schema = solve_schema()
    with pytest.raises(AssertionError, match="missing 'inputs'"):
        validate({k: None for k in schema["required"] if k != "inputs"}, schema, schema)
    small = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}
    with pytest.raises(AssertionError, match=r"\$\.n: 0 < 1"):
        validate({"n": 0}, small, small)
    with pytest.raises(AssertionError, match="is not"):
        validate({"n": True}, small, small)
    with pytest.raises(AssertionError, match=r"\$: 4 > 3"):
        validate(4, {"maximum": 3}, {})
    with pytest.raises(AssertionError, match="lacks"):
        validate(1, {"exclusiveMaximum": 3}, {})


def test_solve_json_names_its_inputs_and_matches_the_schema(capsys):
    assert SOLVE_SCHEMA.is_file() and SOLVE_SCHEMA.parent.name == "schemas"
    assert main(ARGS) == 0
    out = json.loads(capsys.readouterr().out)
    schema = solve_schema()
    validate(out, schema, schema)
    inputs = out["inputs"]
    assert inputs["model"] == {"name": "llama3-8b", "file": "graphs/llama3-8b.yaml"}
    hw = inputs["hardware"]
    assert hw["name"] == "h100-sxm" and hw["file"] == "hardware/h100-sxm.yaml"
    assert hw["calibrated"] is True
    wl = inputs["workload"]
    assert (wl["phase"], wl["batch"], wl["context"], wl["tp"]) == ("decode", 2, 1024, 4)
    assert wl["weight_dtype"] == wl["act_dtype"] == wl["kv_dtype"] == "fp8"
    opts = inputs["options"]
    assert opts["time_limit_s"] == 10 and opts["work_limit"] == 0.25 and opts["seed"] == 0
    assert inputs["versions"]["preserve_cp"] and inputs["versions"]["ortools"]
    # the device's L2 and the prefetch budget (H100: 50 MB, 75 % of it usable)
    assert out["l2_capacity_bytes"] == pytest.approx(50e6) == hw["l2_capacity_bytes"]
    assert out["usable_l2_bytes"] == pytest.approx(37.5e6) == hw["usable_l2_bytes"]
    # serving units: the step is the time per output token of the 2 sequences on 4 devices
    serving = out["serving"]
    assert (serving["phase"], serving["batch"], serving["devices"]) == ("decode", 2, 4)
    assert serving["plan"] == "optimised" and serving["tpot_s"] == out["makespan_s"]
    assert serving["tokens_per_s"] == pytest.approx(2 / out["makespan_s"])
    assert serving["plans"]["vanilla"]["tpot_s"] == out["baseline_makespan_s"]
    assert serving["request"] is None


def _fast_json(capsys, plans: str, *extra: str) -> dict[str, Any]:
    """``solve --plans PLANS --json`` of ARGS with ``extra``, checked against the schema."""
    schema = solve_schema()
    assert main([a for a in ARGS if a != "--json"] + ["--plans", plans, "--json", *extra]) == 0
    out = json.loads(capsys.readouterr().out)
    validate(out, schema, schema)
    return out


def test_serving_fields_of_the_fast_path_and_a_request_match_the_schema(capsys):
    schema = solve_schema()
    fast = [a for a in ARGS if a != "--json"] + ["--plans", "vanilla,fused", "--json"]
    out = _fast_json(capsys, "vanilla,fused", "--output-len", "32")
    q = out["serving"]["request"]
    assert q["output_len"] == 32 and q["prompt_len"] == 1024 and q["method"].startswith("fast")
    assert set(q["plans"]) == {"vanilla", "fused"}
    assert q["e2e_latency_s"] == pytest.approx(q["ttft_s"] + 32 * q["tpot_s"])
    assert main([*fast, "--phase", "prefill"]) == 0
    out = json.loads(capsys.readouterr().out)
    validate(out, schema, schema)
    serving = out["serving"]
    assert serving["phase"] == "prefill" and serving["ttft_s"] == out["makespan_s"]
    assert "tpot_s" not in serving and serving["request"] is None
    assert serving["prompt_tokens_per_s"] == pytest.approx(2 * 1024 / out["makespan_s"])
    bad = dict(out, serving=dict(serving, ttft_s=-1.0))
    with pytest.raises(AssertionError, match="ttft_s"):
        validate(bad, schema, schema)


def test_uncalibrated_and_a_model_path_are_named(tmp_path, capsys):
    from preserve_cp.models import GRAPHS_DIR

    mine = tmp_path / "my-model.yaml"
    mine.write_text((GRAPHS_DIR / "llama3-8b.yaml").read_text())
    args = [*ARGS, "--uncalibrated", "--time-limit", "5"]
    args[args.index("llama3-8b")] = str(mine)
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    schema = solve_schema()
    validate(out, schema, schema)
    assert out["inputs"]["model"]["file"] == str(mine)
    assert out["inputs"]["hardware"]["calibrated"] is False


def test_a_non_default_kv_reads_is_named_and_matches_the_schema(capsys):
    out = _fast_json(capsys, "vanilla", "--kv-reads", "per_query_head")
    assert out["inputs"]["workload"]["kv_reads"] == "per_query_head"
    default = _fast_json(capsys, "vanilla")
    assert "kv_reads" not in default["inputs"]["workload"]
    # llama3-8b has 4 query heads per KV head: the re-reads make the step longer
    assert out["baseline_makespan_s"] > default["baseline_makespan_s"]
