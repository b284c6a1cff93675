"""Fuzzing: mutated hardware/model YAML and malformed graphs end in a clean error or a
valid verified plan. Small corpus by default; large under the ``slow`` marker."""

from __future__ import annotations

import copy
import math
import random
from pathlib import Path

import networkx as nx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import preserve_cp as pc
from preserve_cp import InputError, PreserveError
from preserve_cp.cli import main

ROOT = Path(__file__).resolve().parent.parent
HW_FILES = sorted((ROOT / "hardware").glob("*.yaml"))
MODEL_FILES = sorted((ROOT / "graphs").glob("*.yaml"))
ODD_VALUES = [
    None,
    True,
    "x",
    "",
    -1,
    0,
    -0.0,
    1e308,
    -1e308,
    float("nan"),
    float("inf"),
    10**30,
    [],
    {},
    [1, 2],
    {"a": 1},
    3.5,
]


def _paths(d, prefix=()):
    """Every key path of a nested mapping (lists indexed)."""
    if isinstance(d, dict):
        for k, v in d.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


def _set(d, path, value, delete=False):
    node = d
    for k in path[:-1]:
        node = node[k]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value


def _load_text(kind: str, text: str | bytes, tmp: Path):
    f = tmp / f"fuzz-{kind}.yaml"
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    if kind == "hardware":
        return pc.load_hardware(str(f))
    return pc.load_model(str(f))


def _mutations(data, rng: random.Random, n: int):
    paths = list(_paths(data))
    for _ in range(n):
        d = copy.deepcopy(data)
        path = rng.choice(paths)
        op = rng.randrange(4)
        try:
            if op == 0:
                _set(d, path, None, delete=True)
            elif op == 1:
                _set(d, path, rng.choice(ODD_VALUES))
            elif op == 2:
                _set(d, (*path[:-1], f"unknown_{rng.randrange(99)}"), 1)
            else:
                _set(d, path, _deep(rng.randrange(5, 60)))
        except (TypeError, KeyError, IndexError):
            continue
        yield d


def _deep(n):
    v: object = 1
    for _ in range(n):
        v = {"k": v}
    return v


def _check_loads_or_clean_error(kind, text, tmp):
    try:
        obj = _load_text(kind, text, tmp)
    except InputError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg and "fuzz-" in msg  # names the file, one line
        return None
    return obj


def _fuzz_files(files, kind, per_file, tmp, seed=0):
    rng = random.Random(seed)
    cases = accepted = 0
    for f in files:
        data = yaml.safe_load(f.read_text())
        for d in _mutations(data, rng, per_file):
            text = yaml.safe_dump(d, allow_unicode=True)
            obj = _check_loads_or_clean_error(kind, text, tmp)
            cases += 1
            if obj is None:
                continue
            accepted += 1
            if kind == "hardware":  # an accepted file must still produce a verified plan
                for v in (obj.hbm_bandwidth_bytes_per_s, obj.l2_capacity_bytes):
                    assert math.isfinite(v) and v > 0
    return cases, accepted


def test_fuzz_shipped_yaml_small(tmp_path):
    c1, _ = _fuzz_files(HW_FILES, "hardware", 8, tmp_path)
    c2, _ = _fuzz_files(MODEL_FILES, "model", 6, tmp_path)
    assert c1 + c2 >= 150


@pytest.mark.slow
def test_fuzz_shipped_yaml_large(tmp_path):
    c1, a1 = _fuzz_files(HW_FILES, "hardware", 120, tmp_path, seed=1)
    c2, a2 = _fuzz_files(MODEL_FILES, "model", 80, tmp_path, seed=1)
    assert c1 + c2 >= 2500


@pytest.mark.parametrize(
    "blob",
    [
        b"\xff\xfe\x00bad",
        b"name: [unclosed",
        b"!!python/object/apply:os.system ['true']",
        b"a: &a [*a]",
        b"- 1\n- 2",
        b"",
        b"name: x\n" * 10,
        b"\t\tname: x",
        b"{" * 5000,
        "name: \u2603\ncompute: 1".encode(),
    ],
)
def test_hostile_blobs(tmp_path, blob):
    for kind in ("hardware", "model"):
        with pytest.raises(InputError):
            _load_text(kind, blob, tmp_path)


def test_accepted_mutations_still_solve(tmp_path):
    """Mutations that validation accepts (e.g. a changed efficiency) give verified plans."""
    data = yaml.safe_load((ROOT / "hardware" / "h100-sxm.yaml").read_text())
    g = pc.build_graph("llama3-8b", pc.Workload("decode", 2, 2048, 4))
    for eff, l2 in [(0.05, 1), (1.0, 500), (0.5, 0.001)]:
        d = copy.deepcopy(data)
        d["memory"]["hbm_efficiency"] = eff
        d["memory"]["l2_capacity_mb"] = l2
        hw = _load_text("hardware", yaml.safe_dump(d), tmp_path)
        r = pc.solve(g, hw, time_limit_s=2)
        assert r.verified and r.makespan_s <= r.baseline_makespan_s * (1 + 1e-12)


# -- graphs --------------------------------------------------------------------------------
@st.composite
def bad_graphs(draw):
    n = draw(st.integers(1, 8))
    g = nx.DiGraph()
    for i in range(n):
        attrs = {
            "duration": draw(st.sampled_from([1.0, 0.0, 2.5, -1.0, float("nan"), "x", None, 1e9])),
            "resource": draw(st.sampled_from(["m", "n", "", None, 3, "prefetch"])),
        }
        if draw(st.booleans()):
            del attrs[draw(st.sampled_from(["duration", "resource"]))]
        g.add_node(i, **attrs)
    for _ in range(draw(st.integers(0, 12))):
        g.add_edge(draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1)))
    return g


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(g=bad_graphs())
def test_random_graphs_clean_error_or_verified(g):
    try:
        r = pc.solve(g, time_limit_s=1)
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    assert r.verified and len(r.schedule.events) == g.number_of_nodes()
    assert r.lower_bound_s <= r.makespan_s


def test_hundred_thousand_node_graph():
    """A 100k-op disconnected graph: solved (or scheduled) and verified in bounded time."""
    g = nx.DiGraph()
    for i in range(100_000):
        g.add_node(i, duration=1.0, resource=f"r{i % 4}")
        if i % 10:
            g.add_edge(i - 1, i)
    r = pc.solve(g, time_limit_s=5)
    # resource r0 holds 25,000 ops and never ends a chain of 10 (tail >= 1): bound 25,001
    assert r.verified and r.makespan_s == r.lower_bound_s == 25_001.0 and r.status == "optimal"


def test_cli_with_fuzzed_hardware_file(tmp_path, capsys):
    data = yaml.safe_load((ROOT / "hardware" / "ascend-910b2.yaml").read_text())
    data["interconnect"]["devices_per_node"] = -3
    f = tmp_path / "hw.yaml"
    f.write_text(yaml.safe_dump(data))
    assert main(["solve", "--model", "llama3-8b", "--hardware", str(f), "--tp", "4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "devices_per_node" in err


def test_every_error_is_a_preserve_error():
    assert issubclass(pc.InfeasibleError, PreserveError)
    assert issubclass(pc.SolverError, PreserveError)


def test_no_eval_pickle_or_dynamic_import_in_the_package():
    """Security: user input never reaches eval/exec, pickle or a dynamic import."""
    import ast

    banned_calls = {"eval", "exec", "compile", "__import__"}
    banned_modules = {"pickle", "cPickle", "dill", "marshal", "shelve", "importlib"}
    for py in (ROOT / "preserve_cp").rglob("*.py"):
        tree = ast.parse(py.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in banned_calls, f"{py}: {node.func.id}()"
            if isinstance(node, ast.Import):
                assert not {a.name.split(".")[0] for a in node.names} & banned_modules, py
            # importlib.metadata reads installed versions (describe.py); it imports nothing
            if isinstance(node, ast.ImportFrom) and node.module != "importlib.metadata":
                assert (node.module or "").split(".")[0] not in banned_modules, py
