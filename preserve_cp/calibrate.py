"""Fit a device's cost-model parameters to the training points of the validation set.

``preserve-cp calibrate NAME [--write]`` fits, for one hardware file, the parameters of the
cost model (costs.py) that the device's **training** points can inform, and records them in
the file's ``calibration`` section (points, fitted values, date). Held-out points are never
read: the fit selects ``split == "train"`` before anything else.

Objective (minimised by a deterministic bounded pattern search)::

    mean over points of log(predicted / measured)^2
    + PRIOR_WEIGHT * sum over parameters of ((value - prior) / (hi - lo))^2

The second term keeps every parameter near the value written in its section (the prior, from
the cited sources) unless the training points pull it away; a parameter that changes no
training prediction is not fitted at all, so it keeps its prior.
"""

from __future__ import annotations

import datetime as _dt
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ._yaml import read_yaml_mapping, resolve_named_file, validate
from .errors import InfeasibleError, InputError, input_error
from .hardware import (
    HARDWARE_DIR,
    Hardware,
    HardwareSpec,
    apply_calibration,
    hardware_from_mapping,
    hardware_label,
)
from .outputs import write_output
from .validate import DEFAULT_SET, load_points, predict

PRIOR_WEIGHT = 0.02
"""Weight of the pull toward the prior (chosen before any fit; see docs/fidelity.md)."""

# (dotted path, lower bound, upper bound); order is the search order
PARAMETERS: tuple[tuple[str, float, float], ...] = (
    ("memory.hbm_efficiency", 0.4, 0.98),
    ("compute.matmul_efficiency", 0.15, 0.95),
    ("compute.matmul_full_rows", 0.0, 4096.0),
    ("compute.matmul_rows_exponent", 0.2, 1.0),
    ("compute.attention_half_context", 0.0, 4096.0),
    ("memory.hbm_half_mib", 0.0, 32.0),
    ("compute.kernel_overhead_us", 0.0, 15.0),
    ("compute.kernel_overhead_eager_us", 0.0, 100.0),
    ("interconnect.collective_latency_us", 1.0, 60.0),
    ("interconnect.rank_latency_us", 0.0, 10.0),
    ("interconnect.custom_allreduce_latency_us", 1.0, 30.0),
    ("scale_out.collective_latency_us", 2.0, 300.0),
)
STEP_OVERHEAD = ("compute.step_overhead_us", 0.0, 20000.0)  # one per stack in the points


@dataclass(frozen=True)
class Fit:
    hardware: str
    set: str
    date: str
    points: tuple[str, ...]
    fitted: dict[str, float]
    before: float
    after: float


def _get(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _prior(spec: HardwareSpec, data: dict[str, Any], path: str) -> float:
    """The value in effect without calibration (resolving optional fields' fallbacks)."""
    value = _get(data, path)
    if value is not None:
        return float(value)
    fallbacks = {
        "compute.kernel_overhead_eager_us": "compute.kernel_overhead_us",
        "interconnect.custom_allreduce_latency_us": "interconnect.collective_latency_us",
    }
    if path in fallbacks:
        return _prior(spec, data, fallbacks[path])
    if path.startswith(STEP_OVERHEAD[0] + "."):
        return float(spec.compute.step_overhead_us.get("default", 0.0))
    node: Any = spec
    for part in path.split("."):
        node = getattr(node, part)
    return float(node)


def _hardware(data: dict[str, Any], fitted: dict[str, float], where: str) -> Hardware:
    """The device with trial values in place of its priors (``data`` has no section)."""
    return hardware_from_mapping(apply_calibration(data, fitted), where)


def _predictions(points: list[dict[str, Any]], hw: Hardware) -> list[float | None]:
    out: list[float | None] = []
    for p in points:
        try:
            out.append(predict(p, hw))
        except (InfeasibleError, InputError):
            out.append(None)
    return out


def _loss(points: list[dict[str, Any]], preds: Sequence[float | None]) -> float:
    errs = [math.log(v / float(p["value"])) ** 2 for p, v in zip(points, preds, strict=True) if v]
    return sum(errs) / len(errs) if errs else 0.0


def _median_abs(points: list[dict[str, Any]], preds: Sequence[float | None]) -> float:
    errs = [abs(v / float(p["value"]) - 1) for p, v in zip(points, preds, strict=True) if v]
    return statistics.median(errs) if errs else 0.0


def training_points(name: str, points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points of device ``name`` in the training split (the only ones a fit may read)."""
    return [p for p in points if p.get("split") == "train" and p.get("hardware") == name]


def calibrate(
    hardware: str | Path,
    set_path: str | Path | None = None,
    *,
    date: str | None = None,
    only: Sequence[str] | None = None,
) -> Fit:
    """Fit ``hardware``'s parameters to its training points; nothing is written.

    ``only`` (point ids) restricts the fit to those training points: how a recorded
    calibration is reproduced from the ``points`` it lists, when training points were added
    to the set after it (the next ``--write`` fits them all)."""
    path = resolve_named_file(str(hardware), HARDWARE_DIR, "hardware")
    data = read_yaml_mapping(path)
    data.pop("calibration", None)  # always fit from the priors
    where = hardware_label(path)
    spec = validate(HardwareSpec, data, where)
    set_file = Path(set_path) if set_path is not None else DEFAULT_SET
    candidates = training_points(spec.name, load_points(set_file))
    if only is not None:
        missing = sorted(set(only) - {str(p["id"]) for p in candidates})
        if missing:
            raise input_error(
                f"{set_file}", "points", f"training points of {spec.name}", missing[0]
            )
        candidates = [p for p in candidates if str(p["id"]) in set(only)]
    at_prior = _predictions(candidates, _hardware(data, {}, where))
    train = [p for p, v in zip(candidates, at_prior, strict=True) if v is not None]
    base = [v for v in at_prior if v is not None]
    if not train:
        raise InputError(
            f"{set_file}: points: no training point on hardware {spec.name!r} that the model "
            "can run; expected at least one (split: train)"
        )
    stacks = sorted({str(p["stack"]) for p in train if p.get("stack")})
    # a parameter of an optional section the file does not have (scale_out) has no prior
    params = [p for p in PARAMETERS if getattr(spec, p[0].split(".")[0]) is not None] + [
        (f"{STEP_OVERHEAD[0]}.{s}", STEP_OVERHEAD[1], STEP_OVERHEAD[2]) for s in stacks
    ]
    prior = {path_: _prior(spec, data, path_) for path_, _, _ in params}

    # fit only what moves a training prediction
    active: list[tuple[str, float, float]] = []
    for p_, lo, hi in params:
        probe = min(hi, max(lo, prior[p_] + 0.1 * (hi - lo)))
        if probe == prior[p_]:
            probe = max(lo, prior[p_] - 0.1 * (hi - lo))
        moved = _predictions(train, _hardware(data, {p_: probe}, where))
        if any(a and b and abs(a / b - 1) > 1e-6 for a, b in zip(moved, base, strict=True)):
            active.append((p_, lo, hi))

    def objective(values: dict[str, float]) -> float:
        preds = _predictions(train, _hardware(data, values, where))
        reg = sum(((values[k] - prior[k]) / (hi - lo)) ** 2 for k, lo, hi in active)
        return _loss(train, preds) + PRIOR_WEIGHT * reg

    cur = {k: min(hi, max(lo, prior[k])) for k, lo, hi in active}
    best = objective(cur)
    step = 0.25
    while step >= 1 / 256 and active:
        improved = False
        for k, lo, hi in active:
            for sign in (1.0, -1.0):
                trial = dict(cur)
                trial[k] = min(hi, max(lo, cur[k] + sign * step * (hi - lo)))
                if trial[k] == cur[k]:
                    continue
                val = objective(trial)
                if val < best - 1e-12:
                    cur, best, improved = trial, val, True
                    break
        if not improved:
            step /= 2
    fitted = {k: float(f"{v:.4g}") for k, v in cur.items()}
    after = _predictions(train, _hardware(data, fitted, where))
    return Fit(
        hardware=spec.name,
        set=_display(set_file),
        date=date or _dt.date.today().isoformat(),
        points=tuple(str(p["id"]) for p in train),
        fitted=fitted,
        before=_median_abs(train, base),
        after=_median_abs(train, after),
    )


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(HARDWARE_DIR.parent))
    except ValueError:
        return path.name


MARKER = "# --- calibration (written by `preserve-cp calibrate`; keep it last) ---"


def section_yaml(fit: Fit) -> str:
    """The ``calibration`` section as YAML text, with its marker comment."""
    lines = [
        MARKER,
        f"# Fitted on the training split of {fit.set} only, never on held-out points. The",
        "# values in the sections above are the priors; these replace them on load",
        "# (`--uncalibrated` ignores them). See docs/fidelity.md.",
        "calibration:",
        f"  date: '{fit.date}'",
        f"  set: {fit.set}",
        "  split: train",
        "  points:",
        *[f"    - {p}" for p in fit.points],
        "  fitted:",
        *[f"    {k}: {v:g}" for k, v in fit.fitted.items()],
        "  train_median_abs_error:",
        f"    before: {fit.before:.4f}",
        f"    after: {fit.after:.4f}",
    ]
    return "\n".join(lines) + "\n"


def write_section(hardware: str | Path, text: str) -> Path:
    """Replace (or append) the calibration section of a hardware file and check that the
    result still loads. A regular file is replaced atomically; a link is written through (it
    stays a link)."""
    path = resolve_named_file(str(hardware), HARDWARE_DIR, "hardware")
    old = path.read_text(encoding="utf-8")
    head = old.split(MARKER, 1)[0]
    if "\ncalibration:" in head:
        raise InputError(
            f"{hardware_label(path)}: calibration: a section without the marker comment exists; "
            "expected it to be written by `preserve-cp calibrate` (remove it by hand)"
        )
    new = head.rstrip("\n") + "\n\n" + text
    hardware_from_mapping(yaml.safe_load(new), hardware_label(path))  # it must still load
    write_output(path, new)
    return path
