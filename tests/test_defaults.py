"""One set of workload defaults (preserve_cp/defaults.py): ``Workload()``, every CLI command,
sweep specs, the footprint API and the docs state the same values."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
from pathlib import Path

from preserve_cp import defaults
from preserve_cp.cli import _parser, _subparsers
from preserve_cp.defaults import WORKLOAD_DEFAULTS
from preserve_cp.footprint import layer_footprint
from preserve_cp.sweep.spec import SweepSpec
from preserve_cp.workload import Workload

DOCS = Path(__file__).resolve().parent.parent / "docs"
#: option -> the Workload field it sets
OPTIONS = {f"--{name}": name for name in WORKLOAD_DEFAULTS}
#: commands known to have each option: a renamed or dropped option fails instead of passing
EXPECTED = {
    "phase": {"solve", "export"},
    "batch": {"solve", "export", "footprint"},
    "context": {"solve", "export", "capacity", "footprint"},
    "tp": {"solve", "export", "capacity"},
    "dtype": {"solve", "export", "capacity", "footprint"},
}


def _options() -> list[tuple[str, str, argparse.Action]]:
    """(command, option, action) of every option of every subcommand, nested ones too."""
    out = []
    for sp in _subparsers(_parser()):
        command = sp.prog.removeprefix("preserve-cp ")
        for a in sp._actions:
            out += [(command, opt, a) for opt in a.option_strings]
    return out


def test_the_defaults_are_the_documented_values() -> None:
    assert WORKLOAD_DEFAULTS == {
        "phase": "decode",
        "batch": 1,
        "context": 2048,
        "tp": 8,
        "dtype": "bf16",
    }
    assert WORKLOAD_DEFAULTS == {
        "phase": defaults.DEFAULT_PHASE,
        "batch": defaults.DEFAULT_BATCH,
        "context": defaults.DEFAULT_CONTEXT,
        "tp": defaults.DEFAULT_TP,
        "dtype": defaults.DEFAULT_DTYPE,
    }


def test_workload_fields_default_to_the_constants() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(Workload)}
    wl = Workload()
    for name in ("phase", "batch", "context", "tp"):
        assert fields[name] == getattr(wl, name) == WORKLOAD_DEFAULTS[name], name
    assert wl.weight_dtype == wl.act_dtype == wl.kv_dtype == WORKLOAD_DEFAULTS["dtype"]


def test_every_command_defaults_as_the_api() -> None:
    wl = Workload()
    seen: dict[str, set[str]] = {name: set() for name in WORKLOAD_DEFAULTS}
    for command, opt, a in _options():
        if opt not in OPTIONS:
            continue
        name = OPTIONS[opt]
        api = wl.weight_dtype if name == "dtype" else getattr(wl, name)
        assert a.default == WORKLOAD_DEFAULTS[name] == api, f"{command} {opt}: {a.default!r}"
        seen[name].add(command)
    for name, commands in EXPECTED.items():
        assert commands <= seen[name], f"--{name} missing from {commands - seen[name]}"


def test_every_other_workload_option_defaults_as_the_api() -> None:
    """--ep, --pp, --routing, --stack ...: an option named after a Workload field."""
    wl = Workload()
    fields = {f.name for f in dataclasses.fields(Workload)}
    checked = set()
    for command, opt, a in _options():
        if a.dest in fields and a.default is not None:  # None: "as --dtype"
            assert a.default == getattr(wl, a.dest), f"{command} {opt}: {a.default!r}"
            checked.add(a.dest)
    assert {"ep", "pp", "microbatches", "routing", "stack", "allreduce"} <= checked


def test_help_shows_each_default() -> None:
    for sp in _subparsers(_parser()):
        text = " ".join(sp.format_help().split())  # argparse wraps to the terminal's width
        for a in sp._actions:
            for opt in set(a.option_strings) & set(OPTIONS):
                assert f"(default: {a.default})" in text, f"{sp.prog} {opt}"


def test_sweep_spec_and_footprint_default_to_the_constants() -> None:
    spec = SweepSpec(models=["llama3-8b"], hardware=["h100-sxm"])
    lists = {"phase": spec.phases, "batch": spec.batch, "context": spec.context}
    lists |= {"tp": spec.tp, "dtype": spec.dtype}
    assert lists == {name: [v] for name, v in WORKLOAD_DEFAULTS.items()}
    params = inspect.signature(layer_footprint).parameters
    for name in ("dtype", "batch", "context"):
        assert params[name].default == WORKLOAD_DEFAULTS[name], name


def test_docs_state_the_constants() -> None:
    api = (DOCS / "api.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)` / `--\1` \| `([^`]+)` \| `(\w+)` \|$", api, re.M)
    assert {name: value for name, value, _ in rows} == {
        name: str(v) for name, v in WORKLOAD_DEFAULTS.items()
    }
    assert all(getattr(defaults, const) == WORKLOAD_DEFAULTS[name] for name, _, const in rows)
    sweep = (DOCS / "sweep-spec.md").read_text(encoding="utf-8")
    rows = re.findall(
        r"^\| `(phases|batch|context|tp|dtype)` \| [^|]+ \| `\[(\w+)\]` \|", sweep, re.M
    )
    assert {name.removesuffix("s") if name == "phases" else name: v for name, v in rows} == {
        name: str(v) for name, v in WORKLOAD_DEFAULTS.items()
    }
