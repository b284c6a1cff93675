"""Import boundaries: ortools only inside optimize/; no stage imports one to its right."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "preserve_cp"
# pipeline order, left to right
STAGES = [
    "units",
    "defaults",
    "errors",
    "outputs",
    "_yaml",
    "hardware",
    "cost",
    "models",
    "hf_import",
    "moe",
    "predictor_trace",
    "footprint",
    "workload",
    "graph",
    "measured",
    "costs",
    "machine",
    "plan",
    "simulate",
    "baselines",
    "production",
    "serving",
    "optimize",
    "solve",
    "describe",
    "estimate",
    "deploy",
    "pipeline",
    "router",
    "viz",
    "comm",
    "sweep",
    "validate",
    "peers",
    "calibrate",
    "reproduce",
    "moe_study",
    "cli",
]


def _imports(path: Path) -> set[str]:
    return {imp for imp, _ in _scoped_imports(path.read_text())}


def _scoped_imports(source: str) -> set[tuple[str, bool]]:
    """(import, inside a function?) for every import in ``source``."""
    out: set[tuple[str, bool]] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.Import):
            out.update((a.name, in_function) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            out.add(("." * node.level + (node.module or ""), in_function))
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(source), False)
    return out


def _stage(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def test_ortools_only_in_optimize():
    for f in PKG.rglob("*.py"):
        if "optimize" in f.parts:
            continue
        assert not any(i.startswith("ortools") for i in _imports(f)), f


def _violations(stage: str, source: str, in_optimize: bool = False, in_viz: bool = False):
    """The imports of a module of ``stage`` that reach a stage to its right."""
    bad = []
    for imp, _ in _scoped_imports(source):  # a lazy import counts too
        name = imp.lstrip(".").split(".")[0]
        if imp.startswith("..") and name:
            target = name
        elif imp.startswith(".") and in_optimize and name:
            continue  # inside the optimize package
        elif imp.startswith(".") and in_viz and name:
            continue
        elif imp.startswith("."):
            target = name
        else:
            continue
        if target in STAGES and STAGES.index(target) > STAGES.index(stage):
            bad.append(imp)
    return bad


def test_no_stage_imports_to_its_right():
    for f in PKG.rglob("*.py"):
        if f.parent == PKG and f.name in ("__init__.py", "__main__.py"):
            continue  # the package's front door: it may import every stage
        stage = _stage(f)
        bad = _violations(stage, f.read_text(), "optimize" in f.parts, "viz" in f.parts)
        assert not bad, f"{f.name} imports {bad}"


def test_every_module_has_a_stage():
    """A new module must be placed in STAGES (the pipeline order), or the rules skip it."""
    for f in PKG.rglob("*.py"):
        if f.name in ("__init__.py", "__main__.py") and f.parent == PKG:
            continue
        assert _stage(f) in STAGES, f"{f.relative_to(PKG)}: add its stage to STAGES"


def test_no_optimiser_module_imports_the_simulator():
    """The optimiser models describe the machine (machine.py); only solve() runs plans."""
    for f in (PKG / "optimize").glob("*.py"):
        imports = _imports(f)
        assert not any(i.lstrip(".").startswith("simulate") for i in imports), f.name


def test_a_right_import_inside_a_function_is_still_a_violation():
    lazy = "def gantt(self):\n    from .viz.gantt import write_gantt\n"
    assert _violations("plan", lazy) == [".viz.gantt"]
    assert _violations("plan", "from .viz.gantt import write_gantt\n") == [".viz.gantt"]
