"""Design-space sweeps: grid expansion, SQLite store keyed by input hash, Dask execution."""

from .run import export_csv, run_sweep, solve_point, text_progress
from .spec import OVERRIDES, Point, SweepSpec, apply_overrides, expand, load_spec
from .store import Store

__all__ = [
    "OVERRIDES",
    "Point",
    "Store",
    "SweepSpec",
    "apply_overrides",
    "expand",
    "export_csv",
    "load_spec",
    "run_sweep",
    "solve_point",
    "text_progress",
]
