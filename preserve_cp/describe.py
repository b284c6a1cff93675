"""What a result was computed from: the ``inputs`` object of ``--json`` (output contract).

A saved result names its model (and the file it came from), its hardware (file, L2 capacity
and prefetch budget, whether the timing is calibrated), the workload with its precisions, the
solve options and the versions of preserve-cp and OR-Tools, so it can be identified later.

>>> from preserve_cp.graph import build_graph
>>> from preserve_cp.workload import Workload
>>> g = build_graph("llama3-8b", Workload("decode", batch=2, context=1024, tp=4))
>>> d = solve_inputs(g, "h100-sxm", model="llama3-8b")
>>> d["model"], d["hardware"]["file"], d["hardware"]["l2_capacity_bytes"]
({'name': 'llama3-8b', 'file': 'graphs/llama3-8b.yaml'}, 'hardware/h100-sxm.yaml', 50000000.0)
>>> d["workload"]["batch"], d["workload"]["kv_dtype"], d["options"]["method"]
(2, 'bf16', 'auto')
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import networkx as nx

from ._yaml import resolve_named_file
from .errors import InputError
from .hardware import Hardware, load_hardware
from .measured import tables_label
from .models import GRAPHS_DIR, ModelConfig
from .solve import SolveOptions

#: JSON Schema (draft 2020-12) of the whole ``preserve-cp solve --json`` object (package data)
SOLVE_SCHEMA = Path(__file__).resolve().parent / "schemas" / "solve.schema.json"


def solve_schema() -> dict[str, Any]:
    """The shipped JSON Schema of ``preserve-cp solve --json``.

    >>> solve_schema()["required"][:2]
    ['status', 'makespan_s']
    """
    return dict(json.loads(SOLVE_SCHEMA.read_text(encoding="utf-8")))


def package_version(dist: str) -> str | None:
    """The installed version of distribution ``dist`` (``None`` when it is not installed)."""
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """preserve-cp's and OR-Tools' versions (from package metadata; OR-Tools not imported)."""
    return {"preserve_cp": package_version("preserve-cp"), "ortools": package_version("ortools")}


def model_label(model: str | Path | ModelConfig | None) -> str | None:
    """How outputs name a model file: ``graphs/NAME.yaml`` when shipped, else its path
    (``None`` for a ModelConfig built in code)."""
    if model is None or isinstance(model, ModelConfig):
        return None
    try:
        path = resolve_named_file(str(model), GRAPHS_DIR, "model")
    except InputError:
        return str(model)
    return f"graphs/{path.name}" if path.resolve().parent == GRAPHS_DIR.resolve() else str(path)


def hardware_inputs(hw: Hardware, stack: str = "") -> dict[str, Any]:
    """The hardware part of ``inputs``: name, file, calibration, L2 capacity and budget, and
    (only when it is not the roofline) the op timing with the kernel tables it read for a
    step run by ``stack``."""
    out: dict[str, Any] = {
        "name": hw.name,
        "file": hw.source_file or None,
        "calibrated": hw.calibrated,
        "l2_capacity_bytes": hw.l2_capacity_bytes,
        "usable_l2_bytes": hw.usable_l2_bytes,
    }
    if hw.timing != "roofline":
        out["timing"] = {"kind": hw.timing, "tables": tables_label(hw, stack)}
    return out


def options_inputs(options: SolveOptions, plans: list[str] | None = None) -> dict[str, Any]:
    """The solve options of ``inputs`` (``plans``: the baselines asked for on the fast path,
    ``None`` for a full solve)."""
    return {
        "time_limit_s": options.time_limit_s,
        "work_limit": options.chain.work_limit,
        "seed": options.chain.seed,
        "budget_fraction": options.budget_fraction,
        "method": options.method,
        "plans": plans,
    }


def solve_inputs(
    graph: nx.DiGraph,
    hw: Hardware | str | None,
    options: SolveOptions | None = None,
    *,
    model: str | Path | ModelConfig | None = None,
    plans: list[str] | None = None,
) -> dict[str, Any]:
    """The ``inputs`` object for a solve of ``graph`` on ``hw`` with ``options``.

    ``model`` is what the graph was built from (a shipped NAME, a path or a ModelConfig); the
    graph itself carries the model's name and the workload (``build_graph``). A graph that was
    not built from a model has ``model`` and ``workload`` ``None``.
    """
    hardware = None if hw is None else load_hardware(hw)
    name = graph.graph.get("model")
    if isinstance(model, ModelConfig):
        name = model.name
    wl = graph.graph.get("workload")
    return {
        "model": None if name is None else {"name": name, "file": model_label(model)},
        "hardware": None
        if hardware is None
        else hardware_inputs(hardware, str((wl or {}).get("stack", ""))),
        "workload": dict(wl) if isinstance(wl, dict) else None,
        "options": options_inputs(options or SolveOptions(), plans),
        "versions": versions(),
    }


def source_label(source: str) -> str:
    """A short name for a point's source: the site and, on code hosts, the repository.

    >>> source_label("https://github.com/pytorch-labs/gpt-fast/blob/main/README.md (table)")
    'github.com/pytorch-labs/gpt-fast'
    >>> source_label("https://www.amd.com/en/developer/resources/rocm-hub/dev-ai.html")
    'amd.com/en'
    >>> source_label("")
    'no source given'
    """
    url = source.strip().split()[0] if source.strip() else ""
    if "://" not in url:
        return url or "no source given"
    host, _, path = url.split("://", 1)[1].partition("/")
    host = host.removeprefix("www.")
    parts = [p for p in path.split("/") if p]
    if host == "raw.githubusercontent.com":
        host = "github.com"
    keep = 2 if host in ("github.com", "gitlab.com", "huggingface.co") else 1
    return "/".join([host, *parts[:keep]])
