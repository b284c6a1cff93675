"""preserve-cp: provably good HBM-to-L2 prefetch plans for tensor-parallel LLM inference.

Public API: :func:`load_model`, :func:`load_hardware`, :func:`build_graph`, :func:`solve`,
:func:`simulate`, :func:`gantt`, plus the :class:`Workload` and result types.
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx

from .costs import op_costs
from .errors import InfeasibleError, InputError, PreserveError, SolverError
from .graph import build_graph, validate_graph
from .hardware import Hardware, list_hardware, load_hardware
from .machine import machine_for
from .models import ModelConfig, list_models, load_model
from .plan import Plan, Prefetch, Result, Schedule
from .simulate import simulate as _run_plan
from .solve import SolveOptions, solve
from .workload import Workload


def gantt(
    result: Result,
    path: str,
    *,
    layers: tuple[int, int] | None = None,
    compare: bool = False,
    title: str = "",
) -> Path:
    """Write the Gantt of ``result`` (``.svg``/``.png``); see :mod:`preserve_cp.viz.gantt`.

    ``compare=True`` stacks vanilla, greedy, streaming and the optimised plan;
    ``layers=(A, B)`` zooms on layers A..B. (Imported on call: drawing needs matplotlib.)
    """
    from .viz.gantt import result_gantt

    return result_gantt(result, path, layers=layers, compare=compare, title=title)


def simulate(graph: nx.DiGraph, hw: Hardware | str | None, plan: Plan) -> Schedule:
    """Execute ``plan`` on ``graph`` with ``hw``'s cost model and return the schedule.

    >>> g = build_graph("llama3-8b", Workload("decode", 1, 1024, 4))
    >>> s = simulate(g, "h100-sxm", Plan("vanilla"))
    >>> s.makespan_s > 0 and len(s.events) == g.number_of_nodes()
    True
    """
    hardware = None if hw is None else load_hardware(hw)
    g = validate_graph(graph, need_duration=hardware is None)
    return _run_plan(g, op_costs(g, hardware), plan, machine_for(hardware))


__all__ = [
    "Hardware",
    "InfeasibleError",
    "InputError",
    "ModelConfig",
    "Plan",
    "Prefetch",
    "PreserveError",
    "Result",
    "Schedule",
    "SolveOptions",
    "SolverError",
    "Workload",
    "build_graph",
    "gantt",
    "list_hardware",
    "list_models",
    "load_hardware",
    "load_model",
    "simulate",
    "solve",
]
