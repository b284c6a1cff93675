"""Sweep specifications: a YAML grid -> a list of fully specified points, each with a key.

A point's key is the SHA-256 of its full input (model shape, hardware in SI after overrides,
workload, solver options, package version, result format), so a changed model or hardware
file is a new point, and an unchanged one is never solved twice.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import units
from .._yaml import read_yaml_mapping, validate
from ..defaults import DEFAULT_BATCH, DEFAULT_CONTEXT, DEFAULT_DTYPE, DEFAULT_PHASE, DEFAULT_TP
from ..errors import InputError
from ..estimate import PLANS
from ..hardware import Hardware, load_hardware
from ..models import load_model
from ..workload import DTYPES, Workload

VERSION = "0.1.0"
#: the kind of result a point stores; part of every key, so raising it makes a resumed sweep
#: solve its points again rather than keep rows that lack a field or predate a model change
#: (old stores still open; their rows just no longer match). 2: ``streaming_makespan_s``;
#: 3: ``inputs`` (what the point was computed from, as ``solve --json``) and ``plans``.
RESULTS_VERSION = 3

#: friendly override key -> (Hardware field, factor to SI)
OVERRIDES: dict[str, tuple[str, float]] = {
    "l2_capacity_mb": ("l2_capacity_bytes", units.MB),
    "l2_capacity_mib": ("l2_capacity_bytes", units.MIB),
    "l2_bandwidth_tb_per_s": ("l2_bandwidth_bytes_per_s", units.TB),
    "l2_prefetch_fraction": ("l2_prefetch_fraction", 1.0),
    "hbm_bandwidth_tb_per_s": ("hbm_bandwidth_bytes_per_s", units.TB),
    "hbm_capacity_gb": ("hbm_capacity_bytes", units.GB),
    "link_bandwidth_gb_per_s": ("link_bandwidth_bytes_per_s", units.GB),
    "collective_latency_us": ("collective_latency_s", units.US),
    "kernel_overhead_us": ("kernel_overhead_s", units.US),
}


class SolveSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    time_limit_s: float = Field(default=10.0, gt=0, le=3600)
    budget_fraction: float = Field(default=1.0, gt=0, le=1)
    workers: int = Field(default=1, ge=1, le=64)


class SweepSpec(BaseModel):
    """The YAML grid. Lists multiply; ``overrides`` maps friendly keys to value lists.

    ``plans`` (e.g. ``[vanilla, greedy]``) puts every point on the fast path
    (:func:`preserve_cp.estimate.estimate`, ``solve --plans``): only those baselines, no
    optimiser. Absent or ``null``: a full solve per point. ``timing`` (``roofline`` or
    ``measured``, as the CLI's ``--timing``) times every point's ops; absent: each hardware
    file's own (``roofline`` unless its ``measured`` section says ``default: true``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = "sweep"
    models: list[str] = Field(min_length=1)
    # a workload list left out holds the one shared default (preserve_cp.defaults)
    phases: list[str] = Field(default_factory=lambda: [DEFAULT_PHASE], min_length=1)
    batch: list[int] = Field(default_factory=lambda: [DEFAULT_BATCH], min_length=1)
    context: list[int] = Field(default_factory=lambda: [DEFAULT_CONTEXT], min_length=1)
    tp: list[int] = Field(default_factory=lambda: [DEFAULT_TP], min_length=1)
    dtype: list[str] = Field(default_factory=lambda: [DEFAULT_DTYPE], min_length=1)
    hardware: list[str] = Field(min_length=1)
    overrides: dict[str, list[float]] = Field(default_factory=dict)
    solve: SolveSpec = Field(default_factory=SolveSpec)
    plans: list[str] | None = Field(default=None, min_length=1)
    # op timing of every point: roofline or measured (kernel tables); absent: each file's own
    timing: Literal["roofline", "measured"] | None = None

    @field_validator("plans")
    @classmethod
    def _known_plans(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        bad = [p for p in value if p not in PLANS]
        if bad:
            raise ValueError(f"names from {', '.join(PLANS)}; found {', '.join(map(str, bad))}")
        return [p for p in PLANS if p in value]


@dataclass(frozen=True)
class Point:
    """One fully specified sweep point."""

    model: str
    hardware: str
    workload: Workload
    overrides: dict[str, float] = field(default_factory=dict)
    solve: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    timing: str = "roofline"  # the op timing of the point's hardware (Hardware.timing)

    @property
    def key(self) -> str:
        return point_key(self.fingerprint)

    def describe(self) -> dict[str, Any]:
        """Flat, human-oriented columns (for CSV export and tables)."""
        wl = self.workload
        return {
            "model": self.model,
            "hardware": self.hardware,
            "phase": wl.phase,
            "batch": wl.batch,
            "context": wl.context,
            "tp": wl.tp,
            "dtype": wl.weight_dtype,
            **({"plans": ",".join(self.solve["plans"])} if self.solve.get("plans") else {}),
            **({"timing": self.timing} if self.timing != "roofline" else {}),
            **{f"override.{k}": v for k, v in sorted(self.overrides.items())},
        }


def point_key(fingerprint: dict[str, Any]) -> str:
    text = json.dumps(fingerprint, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def apply_overrides(
    hw: Hardware, overrides: dict[str, float], where: str = "overrides"
) -> Hardware:
    """Hardware with friendly-unit overrides applied (``l2_capacity_mb: 104`` ...)."""
    changes: dict[str, float] = {}
    for key, value in overrides.items():
        if key not in OVERRIDES:
            raise InputError(
                f"{where}: {key}: unknown override; expected one of {', '.join(sorted(OVERRIDES))}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise InputError(f"{where}: {key}: expected a number >= 0, found {value!r}")
        fld, factor = OVERRIDES[key]
        changes[fld] = float(value) * factor
    return hw.with_overrides(**changes) if changes else hw


def hardware_fingerprint(hw: Hardware) -> dict[str, Any]:
    d = asdict(hw)
    d.pop("spec", None)
    d.pop("source_file", None)
    d.pop("uncertain", None)
    if hw.timing == "roofline":  # the tables are not read: points keep the keys they had
        d.pop("timing", None)
        d.pop("measured", None)
    return d


def load_spec(path: str | Path) -> SweepSpec:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: sweep spec file not found")
    return validate(SweepSpec, read_yaml_mapping(p), str(p))


def expand(spec: SweepSpec, where: str = "spec", *, plans: list[str] | None = None) -> list[Point]:
    """All points of the grid, in a deterministic order (``plans``: the fast path's baselines,
    overriding the spec's ``plans``).

    >>> s = SweepSpec(models=["llama3-8b"], hardware=["h100-sxm"], batch=[1, 4],
    ...               overrides={"l2_capacity_mb": [8, 104]})
    >>> pts = expand(s)
    >>> len(pts), pts[0].overrides, len({p.key for p in pts})
    (4, {'l2_capacity_mb': 8.0}, 4)
    """
    for d in spec.dtype:
        if d not in DTYPES:
            raise InputError(f"{where}: dtype: expected one of {', '.join(DTYPES)}, found {d!r}")
    models = {m: load_model(m) for m in spec.models}
    hws = {h: load_hardware(h, timing=spec.timing) for h in spec.hardware}
    keys = sorted(spec.overrides)
    grids = [spec.overrides[k] for k in keys]
    out: list[Point] = []
    solve = spec.solve.model_dump()
    solve["plans"] = plans if plans is not None else spec.plans
    for m, ph, b, c, tp, dt, h in itertools.product(
        spec.models, spec.phases, spec.batch, spec.context, spec.tp, spec.dtype, spec.hardware
    ):
        wl = Workload(ph, b, c, tp, dt, dt, dt)  # type: ignore[arg-type]
        for combo in itertools.product(*grids):
            ov = {k: float(v) for k, v in zip(keys, combo, strict=True)}
            out.append(make_point(m, h, wl, ov, solve, models[m], hws[h], where))
    return out


def make_point(
    model: str,
    hardware: str,
    workload: Workload,
    overrides: dict[str, float],
    solve: dict[str, Any],
    model_cfg: Any = None,
    hw: Hardware | None = None,
    where: str = "point",
) -> Point:
    """One point with its fingerprint (model shape, hardware after overrides, workload...)."""
    cfg = model_cfg if model_cfg is not None else load_model(model)
    base = hw if hw is not None else load_hardware(hardware)
    fp = {
        "version": VERSION,
        "results": RESULTS_VERSION,
        "model": cfg.model_dump(),
        "hardware": hardware_fingerprint(apply_overrides(base, overrides, where)),
        "workload": workload.to_dict(),
        "solve": solve,
    }
    return Point(model, hardware, workload, dict(overrides), dict(solve), fp, base.timing)
