"""Router-aware prefetch from a predictor trace: logged (predicted, actual) expert ids per step
and MoE layer as the routing scenarios (preserve_cp/predictor_trace.py, docs/moe.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_router import SCHEMA, tiny_moe

import preserve_cp as pc
from preserve_cp.cli import main
from preserve_cp.hardware import load_hardware
from preserve_cp.machine import machine_for
from preserve_cp.predictor_trace import PREDICTOR_FORMAT
from preserve_cp.router import (
    LayerDraw,
    evaluate,
    load_predictor_trace,
    router_lines,
    sample_scenarios,
    scenario_set,
    solve_router,
    write_predictor_trace,
)

HW = "h200-sxm"
# the tiny MoE of test_router.py: 2 MoE layers (0, 1), 4 experts, top-1; batch 2 -> 2 tokens
HEADER = {"format": PREDICTOR_FORMAT, "experts": 4, "top_k": 1, "tokens": 2}


def tiny_graph() -> Any:
    return pc.build_graph(tiny_moe(), pc.Workload("decode", 2, 1024, 8, "fp8"))


def write_lines(path: Path, objs: list[Any]) -> str:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs), encoding="utf-8")
    return str(path)


def hand_steps() -> list[dict[str, Any]]:
    """Three steps, counted by hand (union over the 2 tokens; named, selected, both):
    step 0: L0 {1, 3} vs {1, 3}: 2, 2, 2;  L1 {0} vs {0, 2}: 1, 2, 1
    step 1: L0 {2} vs {0}: 1, 1, 0;        L1 {1, 2, 3} vs {1}: 3, 1, 1
    step 2: L0 {0} vs {0}: 1, 1, 1;        L1 {3} vs {3}: 1, 1, 1
    named 9, selected 8, both 6."""
    return [
        {
            "step": 0,
            "layers": {
                "0": {"predicted": [1, 3], "actual": [[1], [3]]},
                "1": {"predicted": [[0], [0]], "actual": [0, 2]},  # per-token predictions
            },
        },
        {
            "step": 1,
            "layers": {
                "0": {"predicted": [2], "actual": [[0], [0]]},
                "1": {"predicted": [1, 2, 3], "actual": [1]},
            },
        },
        {
            "layers": {  # no label: optional
                "0": {"predicted": [0], "actual": [[0], [0]]},
                "1": {"predicted": [3], "actual": [[3], [3]]},
            },
        },
    ]


# -- reading, and the round trip ------------------------------------------------------------


def test_hand_trace_counts_and_measured_precision_recall(tmp_path: Path) -> None:
    g = tiny_graph()
    p = write_lines(tmp_path / "t.jsonl", [HEADER, *hand_steps()])
    sc = load_predictor_trace(p, g)
    assert [s.layers[0] for s in sc] == [LayerDraw(2, 2, 2), LayerDraw(1, 1, 0), LayerDraw(1, 1, 1)]
    assert [s.layers[1] for s in sc] == [LayerDraw(2, 1, 1), LayerDraw(1, 3, 1), LayerDraw(1, 1, 1)]
    r = solve_router(g, HW, trace=p, scenarios=3, target_ci=1.0)
    d = r.to_dict()
    # 6 of the 9 named were selected, 6 of the 8 selected were named (hand_steps' docstring)
    assert d["predictor_precision"] == pytest.approx(6 / 9)
    assert d["predictor_recall"] == pytest.approx(6 / 8)
    assert d["predictor_accuracy"] is None and d["predictor_trace"] == p
    assert d["trace_steps"] == 3 and d["scenarios"] == 3


def test_round_trip_sampler_trace_scenarios_same_expected_makespan(tmp_path: Path) -> None:
    g = tiny_graph()
    hw = load_hardware(HW)
    p = str(tmp_path / "sampled.jsonl")
    sampled = sample_scenarios(g, 6, accuracy=0.7, seed=5)
    write_predictor_trace(sampled, p)
    loaded = load_predictor_trace(p, g)
    assert loaded == sampled  # the per-layer counts
    for a, b in zip(sampled, loaded, strict=True):  # and the ids behind them
        assert a.step is not None and b.step is not None
        for ly, x in a.step.layers.items():
            y = b.step.layers[ly]
            assert (x.actual == y.actual).all() and (x.predicted == y.predicted).all()
    by_sampling = solve_router(g, hw, predictor_accuracy=0.7, scenarios=6, seed=5, target_ci=1.0)
    by_trace = solve_router(g, hw, trace=p, scenarios=6, seed=5, target_ci=1.0)
    assert by_trace.scenarios == by_sampling.scenarios == 6
    # the same scenarios give every plan the same steps, whichever set it is evaluated on
    m = machine_for(hw)
    on_trace = scenario_set(g, hw, m, by_trace.draws)
    on_samples = scenario_set(g, hw, m, by_sampling.draws)
    for name, plan in by_sampling.plans.items():
        assert evaluate(on_trace, plan).makespans_s == by_sampling.evaluations[name].makespans_s
    for name, plan in by_trace.plans.items():
        assert evaluate(on_samples, plan).makespans_s == by_trace.evaluations[name].makespans_s
    # and the expected step the two runs report is the same
    assert by_trace.best.expected_s == pytest.approx(by_sampling.best.expected_s, rel=1e-12)


def test_perfect_trace_reaches_the_bound_within_the_gap_as_accuracy_one(tmp_path: Path) -> None:
    """A trace whose predictions are the selected experts, written by hand from the sampler's
    routings at accuracy 0.3 (the routings do not depend on the accuracy), is the accuracy-1
    scenario set: the same result, bound and gap."""
    g = tiny_graph()
    steps = []
    for s in sample_scenarios(g, 6, accuracy=0.3, seed=5):
        assert s.step is not None
        layers = {}
        for ly, d in s.step.layers.items():
            assert d.per_token is not None
            ids = sorted({int(x) for x in d.per_token.ravel()})
            layers[str(ly)] = {"predicted": ids, "actual": d.per_token.tolist()}
        steps.append({"layers": layers})
    p = write_lines(tmp_path / "perfect.jsonl", [HEADER, *steps])
    r = solve_router(g, HW, trace=p, scenarios=6, seed=5, target_ci=1.0)
    d = r.to_dict()
    assert d["predictor_precision"] == d["predictor_recall"] == 1.0
    assert r.best.hit_rate in (None, pytest.approx(1.0))
    bound, gap = d["clairvoyant_bound_s"], d["gap"]
    assert bound is not None and bound <= d["expected_makespan_s"]
    assert d["expected_makespan_s"] <= bound * (1 + gap) * (1 + 1e-12)
    one = solve_router(g, HW, predictor_accuracy=1.0, scenarios=6, seed=5, target_ci=1.0)
    assert d["expected_makespan_s"] == pytest.approx(one.best.expected_s, rel=1e-12)
    assert bound == pytest.approx(one.bound_s, rel=1e-12)
    assert gap < 0.03


def test_steps_used_in_order_up_to_the_adaptive_maximum(tmp_path: Path) -> None:
    g = tiny_graph()
    p = str(tmp_path / "t.jsonl")
    write_predictor_trace(sample_scenarios(g, 6, accuracy=0.5, seed=2), p)
    steps = load_predictor_trace(p, g)
    r = solve_router(g, HW, trace=p, scenarios=4, target_ci=1.0)
    assert r.scenarios == 4 and r.draws == steps[:4] and r.trace_steps == 6
    assert "steps 1-4 of the 6 in predictor trace" in "\n".join(router_lines(r.to_dict()))
    # a half-width target that is never met: more steps, in order, at most max_scenarios
    r = solve_router(g, HW, trace=p, scenarios=2, target_ci=1e-9, max_scenarios=5)
    assert r.scenarios == 5 and r.draws == steps[:5]
    # --scenarios above the trace's steps: all of them
    assert solve_router(g, HW, trace=p, scenarios=16, target_ci=1.0).scenarios == 6


def test_accuracy_and_trace_are_exclusive(tmp_path: Path) -> None:
    g = tiny_graph()
    p = write_lines(tmp_path / "t.jsonl", [HEADER, *hand_steps()])
    with pytest.raises(pc.InputError, match="expected exactly one of the two.*found both"):
        solve_router(g, HW, predictor_accuracy=0.5, trace=p)
    with pytest.raises(pc.InputError, match="found neither"):
        solve_router(g, HW)


# -- the CLI: JSON, schema, errors ------------------------------------------------------------


@pytest.fixture
def tiny_yaml(tmp_path: Path) -> str:
    path = tmp_path / "tiny-moe.yaml"
    path.write_text(yaml.safe_dump(tiny_moe().model_dump()), encoding="utf-8")
    return str(path)


def _args(model: str, trace: str, *extra: str) -> list[str]:
    return [
        "solve", "--model", model, "--hardware", HW, "--phase", "decode", "--batch", "2",
        "--context", "1024", "--tp", "8", "--dtype", "fp8", "--predictor-trace", trace, *extra,
    ]  # fmt: skip


def test_cli_json_carries_the_trace_fields_and_validates(
    tmp_path: Path, tiny_yaml: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_json_schema import validate

    g = tiny_graph()
    p = str(tmp_path / "t.jsonl")
    write_predictor_trace(sample_scenarios(g, 6, accuracy=0.6, seed=1), p)
    assert main(_args(tiny_yaml, p, "--scenarios", "4", "--json")) == 0
    d = json.loads(capsys.readouterr().out)
    schema = json.loads(SCHEMA.read_text())
    validate(d, schema, schema)
    r = d["router"]
    assert r["predictor_trace"] == p and r["trace_steps"] == 6 and r["predictor_accuracy"] is None
    n = r["scenarios"]  # the first 4 steps, more only for the half-width target
    assert 4 <= n <= 6 and (n == 4 or r["ci95_half_width_s"] <= 0.005 * r["expected_makespan_s"])
    # precision and recall counted here from the file's ids, over the steps used
    named = selected = both = 0
    for line in Path(p).read_text().splitlines()[1 : n + 1]:
        for e in json.loads(line)["layers"].values():
            pred, act = set(e["predicted"]), {i for tok in e["actual"] for i in tok}
            named, selected, both = named + len(pred), selected + len(act), both + len(pred & act)
    assert r["predictor_precision"] == pytest.approx(both / named)
    assert r["predictor_recall"] == pytest.approx(both / selected)
    for k in ("expected_makespan_s", "p50_makespan_s", "p95_makespan_s", "expert_hit_rate"):
        assert d[k] == r[k]
    assert r["verified"] and r["clairvoyant_bound_s"] <= r["expected_makespan_s"]


def _mutated(change: Any) -> list[Any]:
    objs: list[Any] = [dict(HEADER), *hand_steps()]
    change(objs)
    return objs


def _set(path: list[Any], value: Any) -> Any:
    def change(objs: list[Any]) -> None:
        target = objs
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _drop(path: list[Any]) -> Any:
    def change(objs: list[Any]) -> None:
        target = objs
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


BAD = {
    "id out of range": (
        _set([2, "layers", "1", "actual", 0], 4),
        "line 3 (step 1): layers.1.actual[0]: expected an expert id in [0, 3], found 4",
    ),
    "id out of range per token": (
        _set([1, "layers", "0", "actual", 1], [7]),
        "line 2 (step 0): layers.0.actual[1][0]: expected an expert id in [0, 3], found 7",
    ),
    "missing layer": (
        _drop([1, "layers", "1"]),
        "line 2 (step 0): layers: expected an entry for every MoE layer of the model (0-1), "
        "missing 1",
    ),
    "extra layer": (
        _set([3, "layers", "2"], {"predicted": [0], "actual": [0]}),
        "line 4: layers.2: expected only the model's MoE layers (0-1), found layer 2",
    ),
    "empty predicted": (
        _set([1, "layers", "0", "predicted"], []),
        "line 2 (step 0): layers.0.predicted: expected a non-empty list of expert ids",
    ),
    "top-k per token": (
        _set([1, "layers", "0", "actual", 0], [1, 2]),
        "line 2 (step 0): layers.0.actual[0]: expected 1 expert ids (top_k) per token, found 2",
    ),
    "token count": (
        _set([1, "layers", "0", "actual"], [[1], [2], [3]]),
        "line 2 (step 0): layers.0.actual: expected 2 per-token lists (the header's tokens), "
        "found 3",
    ),
    "duplicate id": (
        _set([2, "layers", "1", "predicted"], [1, 2, 1]),
        "line 3 (step 1): layers.1.predicted: expected distinct expert ids, found 1 twice",
    ),
    "not an id": (
        _set([2, "layers", "1", "predicted"], [1, "2"]),
        "line 3 (step 1): layers.1.predicted[1]: expected an expert id in [0, 3], found '2'",
    ),
    "header experts": (
        _set([0, "experts"], 8),
        "line 1: experts: expected 4 (the model's num_experts), found 8",
    ),
    "header tokens": (
        _set([0, "tokens"], 4),
        "line 1: tokens: expected 2 (the workload's tokens per step",
    ),
    "header format": (
        _set([0, "format"], "preserve-cp-routing/1"),
        "line 1: format: expected 'preserve-cp-predictor-trace/1', found 'preserve-cp-routing/1'",
    ),
    "no header": (
        _drop([0]),
        "line 1: format: required field is missing (the first line is the header",
    ),
    "unknown step field": (
        _set([1, "weights"], 1),
        "line 2: weights: unknown field (a step has 'step' and 'layers')",
    ),
    "no steps": (lambda objs: objs.__delitem__(slice(1, None)), "expected at least one step"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_cli_malformed_trace_is_one_line_naming_file_and_place(
    case: str, tmp_path: Path, tiny_yaml: str, capsys: pytest.CaptureFixture[str]
) -> None:
    change, message = BAD[case]
    p = write_lines(tmp_path / "bad.jsonl", _mutated(change))
    assert main(_args(tiny_yaml, p)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{p}: {message}" in err, err


def test_cli_unreadable_files_and_option_errors(
    tmp_path: Path, tiny_yaml: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def one_line(args: list[str], message: str) -> None:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err

    missing = str(tmp_path / "none.jsonl")
    one_line(_args(tiny_yaml, missing), f"{missing}: predictor trace file not found")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    one_line(_args(tiny_yaml, str(empty)), f"{empty}: expected a header line")
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(HEADER) + "\n{layers: 1}\n")
    one_line(_args(tiny_yaml, str(broken)), f"{broken}: line 2: not valid JSON (column 2:")
    good = write_lines(tmp_path / "t.jsonl", [HEADER, *hand_steps()])
    one_line(
        _args(tiny_yaml, good, "--predictor-accuracy", "0.8"),
        f"--predictor-trace {good}: expected either --predictor-trace or --predictor-accuracy, "
        "found both",
    )
    one_line(
        ["solve", "--model", "llama3-8b", "--hardware", HW, "--predictor-trace", good],
        "--predictor-trace: model: expected an MoE model in --phase decode",
    )


def test_cli_text_report_and_picture_name_the_trace(
    tmp_path: Path, tiny_yaml: str, capsys: pytest.CaptureFixture[str]
) -> None:
    p = write_lines(tmp_path / "t.jsonl", [HEADER, *hand_steps()])
    report, gantt = tmp_path / "r.html", tmp_path / "g.svg"
    assert main(_args(tiny_yaml, p, "--report", str(report), "--gantt", str(gantt))) == 0
    out = capsys.readouterr().out
    # 3 steps in the file, fewer than --scenarios (16): all of them
    assert (
        f"3 routing scenarios (steps 1-3 of the 3 in predictor trace {p}), predictor precision "
        "0.667, recall 0.750 (measured on those steps, expert ids)" in out
    )
    page = report.read_text(encoding="utf-8")
    assert "<th>predictor trace</th>" in page and "precision 0.667, recall 0.750" in page
    picture = (tmp_path / "g.router.svg").read_text(encoding="utf-8")
    assert "predictor trace" in picture
