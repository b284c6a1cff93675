"""The --trace output checked against the Chrome trace-event format, flows and plan comparison.

``trace_problems`` is a real checker of the format (what Perfetto and chrome://tracing need),
not a mock: it returns every rule a document breaks, and the negative tests show it can fail.
"""

from __future__ import annotations

import copy
import json
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

import preserve_cp as pc
from preserve_cp.errors import InputError
from preserve_cp.viz.perfetto import trace_document, write_trace

METADATA_NAMES = {"process_name", "thread_name", "process_sort_index", "thread_sort_index"}
PLANS = ("vanilla", "greedy", "optimised")


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def trace_problems(doc: Any) -> list[str]:
    """Every way ``doc`` breaks the trace-event format (JSON object form); [] if none."""
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        return ['top level must be an object with a "traceEvents" list']
    bad: list[str] = []
    slices: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    starts: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    finishes: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for i, e in enumerate(doc["traceEvents"]):
        if not isinstance(e, dict) or not isinstance(e.get("ph"), str):
            bad.append(f"event {i}: no ph")
            continue
        ph, before = e["ph"], len(bad)
        if not isinstance(e.get("pid"), int):
            bad.append(f"event {i} ({ph}): no integer pid")
        if ph == "X":
            if not isinstance(e.get("name"), str):
                bad.append(f"X {i}: no name")
            if not (_number(e.get("ts")) and e["ts"] >= 0):
                bad.append(f"X {i}: ts must be a number >= 0, got {e.get('ts')!r}")
            if not (_number(e.get("dur")) and e["dur"] >= 0):
                bad.append(f"X {i}: dur must be a number >= 0, got {e.get('dur')!r}")
            if not isinstance(e.get("tid"), int):
                bad.append(f"X {i}: no integer tid")
            if len(bad) == before:
                slices[(e["pid"], e["tid"])].append(e)
        elif ph == "C":
            args = e.get("args")
            if not isinstance(e.get("name"), str):
                bad.append(f"C {i}: no name")
            if not (_number(e.get("ts")) and e["ts"] >= 0):
                bad.append(f"C {i}: ts must be a number >= 0")
            if not (isinstance(args, dict) and args and all(_number(v) for v in args.values())):
                bad.append(f"C {i}: args must hold numeric values, got {args!r}")
        elif ph == "M":
            args = e.get("args")
            if e.get("name") not in METADATA_NAMES:
                bad.append(f"M {i}: unknown metadata name {e.get('name')!r}")
            elif not isinstance(args, dict):
                bad.append(f"M {i}: no args")
            elif e["name"].endswith("_name") and not isinstance(args.get("name"), str):
                bad.append(f"M {i}: {e['name']} needs args.name")
            elif e["name"].endswith("_sort_index") and not isinstance(args.get("sort_index"), int):
                bad.append(f"M {i}: {e['name']} needs an integer args.sort_index")
            if e.get("name") == "thread_name" and not isinstance(e.get("tid"), int):
                bad.append(f"M {i}: thread_name needs a tid")
        elif ph in ("s", "f"):
            missing = [k for k in ("id", "ts", "tid", "cat", "name") if k not in e]
            if missing or not _number(e["ts"]):
                bad.append(f"{ph} {i}: needs id, numeric ts, tid, cat, name (missing {missing})")
                continue
            if ph == "f" and e.get("bp") != "e":
                bad.append(f"f {i}: must bind to its enclosing slice (bp 'e'), got {e.get('bp')!r}")
            (starts if ph == "s" else finishes)[e["id"]].append(e)
    if bad:
        return bad

    def enclosing(e: dict[str, Any]) -> list[dict[str, Any]]:
        on = slices.get((e["pid"], e["tid"]), [])
        return [x for x in on if x["ts"] <= e["ts"] <= x["ts"] + x["dur"]]

    for fid in finishes.keys() - starts.keys():
        bad.append(f"flow {fid}: finish without a start")
    for fid, ss in starts.items():
        ff = finishes.get(fid, [])
        if len(ss) != 1 or len(ff) != 1:
            bad.append(f"flow {fid}: {len(ss)} start(s) and {len(ff)} finish(es), want 1 and 1")
            continue
        s, f = ss[0], ff[0]
        if (s["cat"], s["name"]) != (f["cat"], f["name"]):
            bad.append(f"flow {fid}: start and finish differ in cat/name")
        if s["pid"] != f["pid"]:
            bad.append(f"flow {fid}: start and finish in different processes")
        if f["ts"] < s["ts"]:
            bad.append(f"flow {fid}: finishes before it starts")
        chunk = enclosing(s)
        if len(chunk) != 1:
            bad.append(
                f"flow {fid}: start at {s['ts']} lies in {len(chunk)} slices on "
                f"(pid {s['pid']}, tid {s['tid']}), want exactly 1"
            )
            continue
        consumer = chunk[0]["args"].get("node")
        on = slices.get((f["pid"], f["tid"]), [])
        if not any(x["ts"] == f["ts"] and x["args"].get("node") == consumer for x in on):
            bad.append(
                f"flow {fid}: finish at {f['ts']} is not the start of consumer {consumer!r} "
                f"on (pid {f['pid']}, tid {f['tid']})"
            )
    return bad


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def result() -> pc.Result:
    g = pc.build_graph("llama3-8b", pc.Workload("decode", 4, 8192, 4, "int8", "int8", "int8"))
    return pc.solve(g, "ascend-910b2")


@pytest.fixture(scope="module")
def plans(result: pc.Result) -> dict[str, pc.Schedule]:
    b = result.baselines
    return {"vanilla": b["vanilla"], "greedy": b["greedy"], "optimised": result.schedule}


@pytest.fixture(scope="module")
def single_doc(result: pc.Result, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("trace") / "single.json"
    assert write_trace(path, result.schedule) == path
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def compare_doc(
    plans: dict[str, pc.Schedule], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("trace") / "compare.json"
    write_trace(path, plans)
    return json.loads(path.read_text())


def _by_pid(doc: dict[str, Any], ph: str) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in doc["traceEvents"]:
        if e["ph"] == ph:
            out[e["pid"]].append(e)
    return out


def _meta(doc: dict[str, Any], name: str) -> dict[int, Any]:
    return {
        e["pid"]: e["args"]
        for e in doc["traceEvents"]
        if e["ph"] == "M" and e["name"] == name and name != "thread_name"
    }


# ----------------------------------------------------------------------------- valid traces
def test_single_schedule_trace_is_valid(result: pc.Result, single_doc: dict[str, Any]) -> None:
    s = result.schedule
    assert trace_problems(single_doc) == []
    assert _meta(single_doc, "process_name") == {0: {"name": "device 0"}}
    threads = {
        e["args"]["name"]
        for e in single_doc["traceEvents"]
        if e["ph"] == "M" and e["name"] == "thread_name"
    }
    assert {"compute", "comm", "prefetch"} <= threads
    assert s.chunks, "the optimised plan should prefetch something"
    assert len(_by_pid(single_doc, "s")[0]) == len(s.chunks) == len(_by_pid(single_doc, "f")[0])
    flows = [e for e in single_doc["traceEvents"] if e["ph"] in "sf"]
    assert {(e["cat"], e["name"]) for e in flows} == {("prefetch", "prefetch->consumer")}
    # every chunk's consumer receives exactly as many arrows as it has chunks
    xs = _by_pid(single_doc, "X")[0]
    starts_at = {(x["tid"], x["ts"]): x["args"]["node"] for x in xs if x["cat"] != "prefetch"}
    got = Counter(starts_at[(f["tid"], f["ts"])] for f in _by_pid(single_doc, "f")[0])
    assert got == Counter(c.consumer for c in s.chunks)
    other = single_doc["otherData"]
    assert other["makespan_s"] == pytest.approx(s.makespan_s)
    assert other["l2_capacity_bytes"] == pytest.approx(s.l2_capacity_bytes)
    assert max(x["ts"] + x["dur"] for x in xs) == pytest.approx(s.makespan_s * 1e6, rel=1e-9)
    cap = other["l2_capacity_bytes"] * (1 + 1e-9)
    assert all(c["name"] == "L2" and c["args"]["bytes"] <= cap for c in _by_pid(single_doc, "C")[0])


def test_compare_trace_has_one_process_per_plan(
    plans: dict[str, pc.Schedule], compare_doc: dict[str, Any]
) -> None:
    assert trace_problems(compare_doc) == []
    assert _meta(compare_doc, "process_name") == {i: {"name": n} for i, n in enumerate(PLANS)}
    assert _meta(compare_doc, "process_sort_index") == {
        i: {"sort_index": i} for i in range(len(PLANS))
    }
    other = compare_doc["otherData"]
    assert list(other["plans"]) == list(PLANS)
    for name, sched in plans.items():
        assert other["plans"][name]["makespan_s"] == pytest.approx(sched.makespan_s)
    assert other["makespan_s"] == pytest.approx(plans["optimised"].makespan_s)
    assert other["l2_capacity_bytes"] == pytest.approx(plans["optimised"].l2_capacity_bytes)
    assert (
        other["plans"]["optimised"]["makespan_s"]
        <= other["plans"]["greedy"]["makespan_s"]
        <= other["plans"]["vanilla"]["makespan_s"]
    )

    xs, flows, counters = (
        _by_pid(compare_doc, "X"),
        _by_pid(compare_doc, "s"),
        _by_pid(compare_doc, "C"),
    )
    cap = other["l2_capacity_bytes"] * (1 + 1e-9)
    for pid, (name, sched) in enumerate(plans.items()):
        assert len(flows[pid]) == len(sched.chunks), name
        end_us = max(x["ts"] + x["dur"] for x in xs[pid])
        assert end_us == pytest.approx(sched.makespan_s * 1e6, rel=1e-9), name
        assert counters[pid] and max(c["args"]["bytes"] for c in counters[pid]) <= cap, name
    assert len(flows[0]) == 0 and len(flows[1]) > 0 and len(flows[2]) > 0
    # thread ids do not repeat across processes (Perfetto keys threads by tid)
    tids_of = defaultdict(set)
    for e in compare_doc["traceEvents"]:
        if e["ph"] == "M" and e["name"] == "thread_name":
            tids_of[e["tid"]].add(e["pid"])
    assert all(len(p) == 1 for p in tids_of.values())
    ids = [e["id"] for e in compare_doc["traceEvents"] if e["ph"] == "s"]
    assert len(ids) == len(set(ids)) == sum(len(s.chunks) for s in plans.values())


def test_trace_document_is_what_write_trace_writes(
    plans: dict[str, pc.Schedule], compare_doc: dict[str, Any]
) -> None:
    assert json.loads(json.dumps(trace_document(plans))) == compare_doc


# ----------------------------------------------------------------------------- the checker can fail
def _drop_first_finish(doc: dict[str, Any]) -> None:
    ev = doc["traceEvents"]
    ev.remove(next(e for e in ev if e["ph"] == "f"))


def _negative_dur(doc: dict[str, Any]) -> None:
    next(e for e in doc["traceEvents"] if e["ph"] == "X")["dur"] = -1.0


def _unbound_finish(doc: dict[str, Any]) -> None:
    del next(e for e in doc["traceEvents"] if e["ph"] == "f")["bp"]


def _start_on_chunk_boundary(doc: dict[str, Any]) -> None:
    """Put a flow start exactly where one chunk ends and the next begins (ambiguous)."""
    ev = doc["traceEvents"]
    chunk_starts = {e["ts"] for e in ev if e["ph"] == "X" and e["cat"] == "prefetch"}
    for e in ev:
        if e["ph"] == "s":
            end = min(
                (x["ts"] + x["dur"] for x in ev if x["ph"] == "X" and x["cat"] == "prefetch"),
                key=lambda t: abs(t - e["ts"]),
            )
            if end in chunk_starts:
                e["ts"] = end
                return
    raise AssertionError("no back-to-back chunks to test with")


def _finish_off_consumer(doc: dict[str, Any]) -> None:
    next(e for e in doc["traceEvents"] if e["ph"] == "f")["ts"] += 0.5


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_drop_first_finish, "1 start(s) and 0 finish(es)"),
        (_negative_dur, "dur must be a number >= 0"),
        (_unbound_finish, "bp 'e'"),
        (_start_on_chunk_boundary, "want exactly 1"),
        (_finish_off_consumer, "is not the start of consumer"),
    ],
)
def test_checker_rejects_broken_traces(
    single_doc: dict[str, Any], mutate: Any, message: str
) -> None:
    doc = copy.deepcopy(single_doc)
    mutate(doc)
    problems = trace_problems(doc)
    assert problems and any(message in p for p in problems), problems


def test_checker_rejects_a_bare_list() -> None:
    assert trace_problems([]) and trace_problems({"traceEvents": [{"ph": "X"}]})


# ----------------------------------------------------------------------------- writing
def test_compare_write_is_atomic_and_names_the_path(
    plans: dict[str, pc.Schedule], tmp_path: Path
) -> None:
    with pytest.raises(InputError, match="missing"):
        write_trace(tmp_path / "missing" / "t.json", plans)
    with pytest.raises(InputError, match="non-empty"):
        write_trace(tmp_path / "t.json", {})
    assert list(tmp_path.iterdir()) == []
