"""The error contract (DESIGN.md, "Errors (contract)").

Bad input raises one typed exception (a PreserveError: InputError or InfeasibleError) whose
message names the file (or object), the field and what is expected. The CLI prints it as
exactly one line on stderr starting with ``preserve-cp: error:``, exits with status 2, writes
nothing to stdout, shows no traceback and creates no output file. YAML is read with
``yaml.safe_load`` only.

CLI cases that exercise process-level behaviour (tracebacks, hostile YAML, argparse) run in a
subprocess; the many field-level mutations of shipped files run ``cli.main`` in-process (same
code path, a second faster) and also through the library loaders.
"""

from __future__ import annotations

import copy
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import networkx as nx
import pytest
import yaml

import preserve_cp
from preserve_cp import InfeasibleError, InputError, PreserveError, Workload
from preserve_cp.cli import main
from preserve_cp.hardware import HARDWARE_DIR, list_hardware, load_hardware
from preserve_cp.models import GRAPHS_DIR, list_models, load_model

PREFIX = "preserve-cp: error:"
# A small, fast workload: anything that must get as far as the solver uses it.
SMALL = ["--batch", "1", "--context", "512", "--tp", "4", "--time-limit", "1"]


# ----------------------------------------------------------------------------- helpers
def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``preserve-cp ARGS`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "preserve_cp.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def one_error_line(rc: int | None, out: str, err: str) -> str:
    """Assert the CLI error contract; return the message after the prefix."""
    assert rc == 2, f"exit status {rc}, stderr: {err!r}"
    assert "Traceback" not in err, err
    assert out == "", f"stdout not empty: {out!r}"
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, found {len(lines)}: {err!r}"
    assert err.endswith("\n")
    assert lines[0].startswith(PREFIX), lines[0]
    msg = lines[0][len(PREFIX) :].strip()
    assert msg
    return msg


def cli_error(*args: str, cwd: Path | None = None) -> str:
    p = run_cli(*args, cwd=cwd)
    return one_error_line(p.returncode, p.stdout, p.stderr)


def main_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Same contract, in-process (``main`` must return 2, not raise)."""
    capsys.readouterr()
    try:
        rc: int | None = main(list(args))
    except SystemExit as exc:  # argparse errors
        rc = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return one_error_line(rc, out, err)


def dump(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def shipped(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


HW_BASE = shipped(HARDWARE_DIR / "ascend-910b2.yaml")
MODEL_BASE = shipped(GRAPHS_DIR / "llama3-70b.yaml")


# ----------------------------------------------------------------------------- 1. unknown names
@pytest.mark.parametrize(
    ("flag", "kind", "known"),
    [
        ("--model", "model", list_models()),
        ("--hardware", "hardware", list_hardware()),
    ],
)
def test_unknown_name_lists_known_names(flag: str, kind: str, known: list[str]) -> None:
    args = {"--model": "llama3-8b", "--hardware": "h100-sxm", flag: "no-such-thing"}
    msg = cli_error("solve", *(x for kv in args.items() for x in kv), *SMALL)
    assert f"unknown {kind} 'no-such-thing'" in msg
    for name in known:
        assert name in msg


@pytest.mark.parametrize("loader", [load_model, load_hardware])
def test_unknown_name_library(loader: Any) -> None:
    with pytest.raises(InputError, match="no-such-thing"):
        loader("no-such-thing")


# ----------------------------------------------------------------------------- 2. missing paths
@pytest.mark.parametrize("flag", ["--model", "--hardware"])
def test_path_that_does_not_exist(flag: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "x.yaml"
    args = {"--model": "llama3-8b", "--hardware": "h100-sxm", flag: str(missing)}
    msg = cli_error("solve", *(x for kv in args.items() for x in kv), *SMALL)
    assert str(missing) in msg
    assert "not found" in msg


# ----------------------------------------------------------------------------- 3. malformed YAML
@pytest.mark.parametrize("flag", ["--model", "--hardware"])
def test_malformed_yaml_names_file_and_line(flag: str, tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\nsources: [a, b\nhidden_size: 3\n", encoding="utf-8")
    args = {"--model": "llama3-8b", "--hardware": "h100-sxm", flag: str(bad)}
    msg = cli_error("solve", *(x for kv in args.items() for x in kv), *SMALL)
    assert "broken.yaml" in msg
    assert "malformed YAML" in msg
    assert re.search(r"line \d+", msg), msg


# ----------------------------------------------------------------------------- 4. hostile tags
@pytest.mark.parametrize(
    "payload",
    [
        '!!python/object/apply:os.system ["touch {marker}"]',
        "!!python/name:os.system",
        '!!python/object/apply:subprocess.check_call [["touch", "{marker}"]]',
    ],
)
@pytest.mark.parametrize("flag", ["--hardware", "--model"])
def test_hostile_yaml_tags_are_not_executed(flag: str, payload: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"name: {payload.format(marker=marker)}\nvendor: x\n", encoding="utf-8")
    args = {"--model": "llama3-8b", "--hardware": "h100-sxm", flag: str(evil)}
    msg = cli_error("solve", *(x for kv in args.items() for x in kv), *SMALL)
    assert "evil.yaml" in msg
    assert not marker.exists(), "a YAML python tag was executed"


def test_hostile_yaml_library(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f'name: !!python/object/apply:os.system ["touch {marker}"]\n', encoding="utf-8")
    with pytest.raises(InputError, match="evil.yaml"):
        load_hardware(evil)
    with pytest.raises(InputError, match="evil.yaml"):
        load_model(evil)
    assert not marker.exists()


def test_sources_use_safe_load_only() -> None:
    src = Path(preserve_cp.__file__).parent
    for py in src.rglob("*.py"):
        text = py.read_text(encoding="utf-8")
        assert not re.search(r"yaml\.(load|unsafe_load|full_load|load_all)\s*\(", text), py
        assert "Loader=" not in text, py


# ----------------------------------------------------------------------------- 5. non-UTF-8
@pytest.mark.parametrize("flag", ["--hardware", "--model"])
def test_non_utf8_bytes(flag: str, tmp_path: Path) -> None:
    bad = tmp_path / "latin.yaml"
    bad.write_bytes(b"name: caf\xe9\nvendor: \xff\xfe\n")
    args = {"--model": "llama3-8b", "--hardware": "h100-sxm", flag: str(bad)}
    msg = cli_error("solve", *(x for kv in args.items() for x in kv), *SMALL)
    assert "latin.yaml" in msg
    assert "UTF-8" in msg


# ----------------------------------------------------------------------------- 6. not a mapping
@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("- a\n- b\n", "list"),
        ("just a string\n", "str"),
        ("42\n", "int"),
        ("", "NoneType"),
    ],
)
def test_top_level_not_a_mapping(text: str, found: str, tmp_path: Path) -> None:
    bad = tmp_path / "notmap.yaml"
    bad.write_text(text, encoding="utf-8")
    msg = cli_error("solve", "--model", "llama3-8b", "--hardware", str(bad), *SMALL)
    assert "notmap.yaml" in msg
    assert "mapping" in msg
    assert found in msg
    with pytest.raises(InputError, match="mapping"):
        load_model(bad)


# ----------------------------------------------------------------------------- 7. hardware fields
def _set(section: str, key: str, value: Any) -> Any:
    def f(d: dict[str, Any]) -> None:
        d[section][key] = value

    return f


def _pop(section: str, key: str) -> Any:
    def f(d: dict[str, Any]) -> None:
        d[section].pop(key)

    return f


def _add_uncertain(d: dict[str, Any]) -> None:
    d["uncertain"].append("memory.hbm_speed_tb_per_s")


HBM = "memory.hbm_bandwidth_tb_per_s"
HW_MUTATIONS = {
    "missing": (_pop("memory", "hbm_bandwidth_tb_per_s"), [HBM, "missing"]),
    "negative": (_set("memory", "hbm_bandwidth_tb_per_s", -1.6), [HBM, "> 0", "-1.6"]),
    "zero": (_set("memory", "hbm_bandwidth_tb_per_s", 0), [HBM, "> 0"]),
    "non-numeric": (_set("memory", "hbm_bandwidth_tb_per_s", "fast"), [HBM, "number", "fast"]),
    "boolean": (_set("memory", "hbm_bandwidth_tb_per_s", True), [HBM, "number"]),
    "list": (_set("memory", "hbm_bandwidth_tb_per_s", [1.6]), [HBM, "number"]),
    "nan": (_set("memory", "hbm_bandwidth_tb_per_s", math.nan), [HBM, "finite", "nan"]),
    "inf": (_set("memory", "hbm_bandwidth_tb_per_s", math.inf), [HBM, "finite", "inf"]),
    "unknown key": (
        _set("memory", "hbm_bandwith_tb_per_s", 1.6),
        ["memory.hbm_bandwith_tb_per_s", "unknown field"],
    ),
    "both l2 units": (
        _set("memory", "l2_capacity_mb", 201.3),
        ["memory", "l2_capacity_mb", "l2_capacity_mib", "exactly one"],
    ),
    "no l2 unit": (
        _pop("memory", "l2_capacity_mib"),
        ["memory", "l2_capacity_mb", "l2_capacity_mib", "exactly one"],
    ),
    "uncertain names no field": (_add_uncertain, ["uncertain", "memory.hbm_speed_tb_per_s"]),
    "efficiency above 1": (
        _set("memory", "hbm_efficiency", 1.5),
        ["memory.hbm_efficiency", "(0, 1]", "1.5"],
    ),
    "bad topology": (
        _set("interconnect", "topology", "star"),
        ["interconnect.topology", "ring", "star"],
    ),
    "devices 0": (
        _set("interconnect", "devices_per_node", 0),
        ["interconnect.devices_per_node", "1"],
    ),
    "negative latency": (
        _set("interconnect", "collective_latency_us", -10),
        ["interconnect.collective_latency_us", ">= 0"],
    ),
}


@pytest.mark.parametrize("case", list(HW_MUTATIONS))
def test_hardware_field_errors(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mutate, needles = HW_MUTATIONS[case]
    data = copy.deepcopy(HW_BASE)
    mutate(data)
    path = dump(tmp_path / "ascend-910b2-mutated.yaml", data)
    with pytest.raises(InputError) as info:
        load_hardware(path)
    lib_msg = str(info.value)
    assert len(lib_msg.splitlines()) == 1
    msg = main_error(capsys, "solve", "--model", "llama3-8b", "--hardware", str(path), *SMALL)
    assert msg == lib_msg
    assert "ascend-910b2-mutated.yaml" in msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    assert "{" not in msg, f"message dumps a whole mapping: {msg}"


def test_hardware_yaml_on_means_boolean_not_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """YAML 1.1 reads ``on`` as true: it must not silently become 1 device per node."""
    text = (HARDWARE_DIR / "ascend-910b2.yaml").read_text(encoding="utf-8")
    text = text.replace("devices_per_node: 8", "devices_per_node: on")
    path = tmp_path / "on.yaml"
    path.write_text(text, encoding="utf-8")
    msg = main_error(capsys, "hardware", "show", str(path))
    assert "on.yaml" in msg and "interconnect.devices_per_node" in msg


# ----------------------------------------------------------------------------- 8. model fields
def _mset(key: str, value: Any) -> Any:
    def f(d: dict[str, Any]) -> None:
        d[key] = value

    return f


def _mpop(key: str) -> Any:
    def f(d: dict[str, Any]) -> None:
        d.pop(key)

    return f


MODEL_MUTATIONS = {
    "num_heads negative": (_mset("num_heads", -64), ["num_heads", "greater than 0", "-64"]),
    "hidden_size non-numeric": (_mset("hidden_size", "big"), ["hidden_size", "integer", "big"]),
    "hidden_size fractional": (_mset("hidden_size", 8192.5), ["hidden_size", "integer"]),
    "num_layers boolean": (_mset("num_layers", True), ["num_layers", "number"]),
    "heads not a multiple of kv heads": (
        _mset("num_heads", 60),
        ["num_heads", "num_kv_heads", "multiple"],
    ),
    "num_layers missing": (_mpop("num_layers"), ["num_layers", "missing"]),
    "unknown key": (_mset("num_layer", 80), ["num_layer", "unknown field"]),
    "bad mlp": (_mset("mlp", "moe"), ["mlp", "gated", "moe"]),
    "uncertain names no field": (_mset("uncertain", ["num_expert"]), ["uncertain", "num_expert"]),
}


@pytest.mark.parametrize("case", list(MODEL_MUTATIONS))
def test_model_field_errors(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mutate, needles = MODEL_MUTATIONS[case]
    data = copy.deepcopy(MODEL_BASE)
    mutate(data)
    path = dump(tmp_path / "llama3-70b-mutated.yaml", data)
    with pytest.raises(InputError) as info:
        load_model(path)
    lib_msg = str(info.value)
    assert len(lib_msg.splitlines()) == 1
    msg = main_error(capsys, "solve", "--model", str(path), "--hardware", "h100-sxm", *SMALL)
    assert msg == lib_msg
    assert "llama3-70b-mutated.yaml" in msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    assert "{" not in msg, f"message dumps a whole mapping: {msg}"


# ----------------------------------------------------------------------------- 9. tp vs heads
@pytest.mark.parametrize(
    ("model", "needles"),
    [
        ("qwen2-7b", ["qwen2-7b", "tp 8", "num_heads 28"]),
        ("qwen2.5-7b", ["qwen2.5-7b", "tp 8", "num_heads 28"]),
    ],
)
def test_tp_must_divide_heads(model: str, needles: list[str]) -> None:
    msg = cli_error(
        "solve",
        "--model",
        model,
        "--hardware",
        "h100-sxm",
        "--tp",
        "8",
        "--batch",
        "1",
        "--context",
        "512",
        "--time-limit",
        "1",
    )
    for needle in needles:
        assert needle in msg
    with pytest.raises(InputError, match=needles[-1]):
        preserve_cp.build_graph(model, Workload("decode", 1, 512, 8))


# ----------------------------------------------------------------------------- 10. CLI arguments
@pytest.mark.parametrize(
    ("override", "needle"),
    [
        (["--batch", "0"], "batch"),
        (["--batch", "-3"], "batch"),
        (["--context", "abc"], "--context"),
        (["--context", "0"], "context"),
        (["--tp", "0"], "tp"),
        (["--time-limit", "0"], "--time-limit"),
        (["--time-limit", "-1"], "--time-limit"),
        (["--time-limit", "nan"], "--time-limit"),
        (["--work-limit", "0"], "--work-limit"),
        (["--work-limit", "inf"], "--work-limit"),
        (["--phase", "train"], "--phase"),
        (["--dtype", "fp64"], "--dtype"),
    ],
)
def test_cli_argument_errors(override: list[str], needle: str) -> None:
    msg = cli_error("solve", "--model", "llama3-8b", "--hardware", "h100-sxm", *SMALL, *override)
    assert needle in msg


def test_cli_missing_subcommand_and_argument() -> None:
    assert "required" in cli_error()
    assert "--hardware" in cli_error("solve", "--model", "llama3-8b")


# ----------------------------------------------------------------------------- 11. infeasible
INFEASIBLE = [
    "--model",
    "llama3.1-405b",
    "--hardware",
    "h100-sxm",
    "--tp",
    "4",
    "--dtype",
    "bf16",
    "--time-limit",
    "1",
]


def test_infeasible_does_not_fit_hbm() -> None:
    msg = cli_error("solve", *INFEASIBLE)
    assert "llama3.1-405b" in msg and "h100-sxm" in msg
    need = re.search(r"needs ([\d.]+) GB", msg)
    over = re.search(r"over by ([\d.]+) GB", msg)
    assert need and over, msg
    assert float(need.group(1)) > 80.0
    assert float(over.group(1)) > 0


def test_infeasible_library() -> None:
    g = preserve_cp.build_graph("llama3.1-405b", Workload("decode", 1, 2048, 4))
    with pytest.raises(InfeasibleError, match=r"over by [\d.]+ GB") as info:
        preserve_cp.solve(g, "h100-sxm", time_limit_s=1)
    assert isinstance(info.value, PreserveError)
    assert not isinstance(info.value, InputError)


# ----------------------------------------------------------------------------- 12. graphs
def _graph(edges: list[tuple[str, str]]) -> nx.DiGraph:
    g = nx.DiGraph(edges)
    for n in g:
        g.nodes[n].update(duration=1.0, resource="m")
    return g


def _cyclic() -> Any:
    return _graph([("a", "b"), ("b", "c"), ("c", "a")])


def _negative_duration() -> Any:
    g = _graph([("a", "b")])
    g.nodes["b"]["duration"] = -2.0
    return g


def _nan_duration() -> Any:
    g = _graph([("a", "b")])
    g.nodes["b"]["duration"] = math.nan
    return g


def _no_resource() -> Any:
    g = _graph([("a", "b")])
    del g.nodes["b"]["resource"]
    return g


def _self_loop() -> Any:
    return _graph([("a", "b"), ("b", "b")])


def _no_duration() -> Any:
    g = _graph([("a", "b")])
    del g.nodes["a"]["duration"]
    return g


GRAPH_CASES = {
    "cycle": (_cyclic, ["cycle", "a -> b -> c -> a"]),
    "negative duration": (_negative_duration, ["'b'", "duration", ">= 0"]),
    "nan duration": (_nan_duration, ["'b'", "duration", "finite"]),
    "no resource": (_no_resource, ["'b'", "resource"]),
    "self-loop": (_self_loop, ["self-loop", "b -> b"]),
    "not a DiGraph (list)": (lambda: [("a", "b")], ["DiGraph", "list"]),
    "not a DiGraph (undirected)": (lambda: nx.Graph([("a", "b")]), ["DiGraph", "Graph"]),
    "empty graph": (nx.DiGraph, ["at least one node"]),
    "no duration, no hardware": (_no_duration, ["'a'", "duration", "no hardware"]),
}


@pytest.mark.parametrize("case", list(GRAPH_CASES))
def test_solve_rejects_bad_graphs(case: str) -> None:
    make, needles = GRAPH_CASES[case]
    with pytest.raises(InputError) as info:
        preserve_cp.solve(make(), time_limit_s=1)
    msg = str(info.value)
    assert len(msg.splitlines()) == 1
    assert msg.startswith("graph")
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_valid_graph_still_solves() -> None:
    r = preserve_cp.solve(_graph([("a", "b")]), time_limit_s=1)
    assert r.makespan_s == 2.0


# ----------------------------------------------------------------------------- 13. --trace
def test_trace_in_missing_folder(tmp_path: Path) -> None:
    trace = tmp_path / "no-such-dir" / "t.json"
    msg = cli_error(
        "solve", "--model", "llama3-8b", "--hardware", "h100-sxm", *SMALL, "--trace", str(trace)
    )
    assert "--trace" in msg and str(trace) in msg
    assert not trace.parent.exists()


def test_trace_that_is_a_folder(tmp_path: Path) -> None:
    msg = cli_error(
        "solve", "--model", "llama3-8b", "--hardware", "h100-sxm", *SMALL, "--trace", str(tmp_path)
    )
    assert "--trace" in msg
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "bad",
    [
        ["--model", "no-such-model", "--hardware", "h100-sxm", *SMALL],
        INFEASIBLE,
    ],
)
def test_failed_solve_creates_no_trace(bad: list[str], tmp_path: Path) -> None:
    trace = tmp_path / "t.json"
    cli_error("solve", *bad, "--trace", str(trace), cwd=tmp_path)
    assert list(tmp_path.iterdir()) == [], "a failed run left files behind"


def test_write_trace_oserror_is_input_error(tmp_path: Path) -> None:
    from preserve_cp.plan import Event, Schedule
    from preserve_cp.viz.perfetto import write_trace

    s = Schedule((Event("a", "compute", 0.0, 2e-6, "gemm", 0),), (), (), (), 2e-6, 0.0, 1.0)
    target = tmp_path / "missing" / "t.json"
    with pytest.raises(InputError, match="missing"):
        write_trace(target, s)
    with pytest.raises(InputError, match=re.escape(str(tmp_path))):
        write_trace(tmp_path, s)  # a folder, not a file
    assert list(tmp_path.iterdir()) == [], "a temporary file was left behind"


# ----------------------------------------------------------------------------- 14. --debug
def test_debug_shows_traceback() -> None:
    p = run_cli("--debug", "solve", "--model", "no-such-model", "--hardware", "h100-sxm", *SMALL)
    assert p.returncode != 0
    assert "Traceback" in p.stderr
    assert "InputError" in p.stderr
    assert p.stdout == ""


@pytest.mark.parametrize("limit", [None, 0, -1.0, float("inf"), float("nan"), True, "5"])
def test_solve_time_limit_must_be_finite_seconds(limit) -> None:
    import preserve_cp as pc

    g = pc.build_graph("llama3-8b", pc.Workload("decode", 1, 1024, 8))
    with pytest.raises(pc.InputError, match="solve: time_limit_s: expected a finite number"):
        pc.solve(g, "h100-sxm", time_limit_s=limit)
