"""Import boundaries: ortools only inside optimize/; no stage imports one to its right."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "preserve_cp"
# pipeline order, left to right
STAGES = [
    "units",
    "errors",
    "_yaml",
    "hardware",
    "models",
    "workload",
    "graph",
    "costs",
    "plan",
    "simulate",
    "baselines",
    "optimize",
    "solve",
    "viz",
    "sweep",
    "cli",
]


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            out.add(("." * node.level) + mod)
    return out


def _stage(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def test_ortools_only_in_optimize():
    for f in PKG.rglob("*.py"):
        if "optimize" in f.parts:
            continue
        assert not any(i.startswith("ortools") for i in _imports(f)), f


def test_no_stage_imports_to_its_right():
    for f in PKG.rglob("*.py"):
        stage = _stage(f)
        if stage not in STAGES:
            continue
        for imp in _imports(f):
            name = imp.lstrip(".").split(".")[0]
            if imp.startswith("..") and name:
                target = name
            elif imp.startswith(".") and "optimize" in f.parts and name:
                continue  # inside the optimize package
            elif imp.startswith(".") and "viz" in f.parts and name:
                continue
            elif imp.startswith("."):
                target = name
            else:
                continue
            if target in STAGES:
                assert STAGES.index(target) <= STAGES.index(stage), f"{f.name} imports {imp}"
