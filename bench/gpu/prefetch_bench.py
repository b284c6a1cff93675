"""Real-GPU check of the HBM->L2 prefetch mechanism on one H100/H200, against the model.

Two measurements per weight size (fp16 matrices smaller than the L2, batch-1 GEMV y = W x):

(a) *streaming vs resident*: the GEMV after an L2 flush (a read of a buffer twice the L2
    size) versus the same GEMV run a second time back to back (W already in L2);
(b) *the PRESERVE pattern*: a stand-in for the allreduce (``torch.cuda._sleep`` calibrated to
    ``--standin-us``, one busy block, no HBM traffic) on the main stream while a side stream
    reads W (a sum over W, so W lands in L2); the GEMV waits for both (events). Versus the
    same stand-in then GEMV without the side stream. Saving = vanilla - prefetch.

Every number is the median over ``--reps`` repetitions timed with CUDA events, with the L2
flushed before each repetition (outside the timed region).

For each size the model's prediction comes from ``preserve_cp``: the GEMV as a ``gemm`` node
costed by ``op_costs`` on the chosen hardware file (streaming = ``duration_s(0)``, resident
= ``duration_s(W bytes)``), and (b) as a 2-op chain *stand-in (fixed, the measured stand-in
time) -> gemv* simulated vanilla and with one Prefetch of W anchored at the stand-in, with
``simulate`` on ``machine_for(hw)`` -- exactly what the solver's referee would say.

torch is not a dependency of the package: it is imported inside the GPU functions only.
Usage::

    python bench/gpu/prefetch_bench.py --dry-run --hardware h100-sxm   # model only, no GPU
    python bench/gpu/prefetch_bench.py --hardware h100-sxm --out bench/gpu/results-h100.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import networkx as nx

from preserve_cp.costs import op_costs
from preserve_cp.hardware import load_hardware
from preserve_cp.plan import Plan, Prefetch
from preserve_cp.simulate import simulate
from preserve_cp.solve import machine_for
from preserve_cp.units import MB, US

SCHEMA = "preserve_cp.gpu_prefetch_bench/1"
NO_GPU = "no CUDA GPU found: run with --dry-run to see the model's predictions"
K_DEFAULT = 4096  # GEMV inner dimension (hidden size); W is (n, K) fp16
DTYPE_BYTES = 2  # fp16
COMPARED = ("streaming_s", "resident_s", "vanilla_s", "prefetch_s", "saving_s")


# --------------------------------------------------------------------------- CPU-side logic
def sizes_mb(l2_bytes: float) -> list[int]:
    """Weight sizes (decimal MB) to test: multiples of ~L2/6, none above 65 % of the L2.

    They stay below the L2 and below the share of it the model lets prefetches hold.

    >>> sizes_mb(50e6)
    [8, 16, 24, 32]
    """
    l2_mb = l2_bytes / MB
    step = max(1, round(l2_mb / 6))
    out = [s for s in range(step, int(l2_mb) + 1, step) if s <= 0.65 * l2_mb]
    return out or [max(1, int(l2_mb / 4))]


def gemv_shape(weight_bytes: float, k: int = K_DEFAULT) -> tuple[int, int]:
    """(n, k) of an fp16 matrix of about ``weight_bytes`` (n rows of k elements)."""
    return max(1, round(weight_bytes / (DTYPE_BYTES * k))), k


def _bench_graph(weight_bytes: float, standin_s: float, k: int) -> nx.DiGraph:
    n = weight_bytes / (DTYPE_BYTES * k)
    g = nx.DiGraph(tp=1, dtype="fp16")
    g.add_node("standin", resource="compute", duration=float(standin_s), reads={}, layer=0)
    g.add_node(
        "gemv",
        kind="gemm",
        resource="compute",
        flops=2.0 * n * k,
        reads={"W": float(weight_bytes), "x": float(k * DTYPE_BYTES)},
        writes_bytes=float(n * DTYPE_BYTES),
        prefetchable=["W"],
        layer=0,
    )
    g.add_edge("standin", "gemv")
    return g


def predict(
    hardware_name: str,
    weight_bytes: float,
    standin_s: float,
    k: int = K_DEFAULT,
    *,
    calibrated: bool = True,
) -> dict[str, Any]:
    """The model's numbers for one weight size (seconds, bytes).

    ``streaming_s``/``resident_s``: GEMV with nothing / all of W in L2 (measurement a).
    ``vanilla_s``/``prefetch_s``: simulated stand-in -> GEMV without / with a prefetch of W
    anchored at the stand-in (measurement b); ``saving_s`` their difference.
    ``moved_bytes``: what the prefetch moves during the stand-in window at the effective
    prefetch rate; ``saving_window_s`` = duration_s(0) - duration_s(moved_bytes), the same
    saving in closed form (equal to ``saving_s`` when the prefetch ends inside the window).
    ``calibrated=False`` uses the hardware file's priors instead of its calibration.
    """
    hw = load_hardware(hardware_name, calibrated=calibrated)
    g = _bench_graph(weight_bytes, standin_s, k)
    costs = op_costs(g, hw)
    gemv = costs["gemv"]
    machine = machine_for(hw)
    vanilla = simulate(g, costs, Plan("vanilla"), machine)
    plan = Plan("prefetch", (Prefetch("W", float(weight_bytes), "gemv", "standin"),))
    pref = simulate(g, costs, plan, machine)
    moved = min(float(weight_bytes), standin_s * machine.prefetch_bytes_per_s)
    return {
        "hardware": hw.name,
        "weight_bytes": float(weight_bytes),
        "standin_s": float(standin_s),
        "streaming_s": gemv.duration_s(0.0),
        "resident_s": gemv.duration_s(float(weight_bytes)),
        "vanilla_s": vanilla.makespan_s,
        "prefetch_s": pref.makespan_s,
        "saving_s": vanilla.makespan_s - pref.makespan_s,
        "moved_bytes": moved,
        "saving_window_s": gemv.duration_s(0.0) - gemv.duration_s(moved),
        "prefetch_dropped": bool(pref.dropped),
        "fits_usable_l2": float(weight_bytes) <= hw.usable_l2_bytes,
    }


def compare(measured: dict[str, Any], predicted: dict[str, Any]) -> dict[str, Any]:
    """Per quantity in both dicts: measured, predicted, ratio = measured / predicted,
    error_s = measured - predicted, rel_error = error / predicted (None when predicted is 0).
    """
    out: dict[str, Any] = {}
    for key in COMPARED:
        if key not in measured or key not in predicted:
            continue
        m, p = float(measured[key]), float(predicted[key])
        ok = p != 0 and math.isfinite(p)
        out[key] = {
            "measured": m,
            "predicted": p,
            "ratio": m / p if ok else None,
            "error_s": m - p,
            "rel_error": (m - p) / p if ok else None,
        }
    return out


def versions() -> dict[str, str | None]:
    """torch / CUDA / driver / preserve_cp versions, None where unavailable."""
    out: dict[str, str | None] = {"torch": None, "cuda": None, "driver": None}
    try:
        out["preserve_cp"] = importlib.metadata.version("preserve_cp")
    except Exception:  # pragma: no cover - the package is installed
        out["preserve_cp"] = None
    try:
        import torch

        out["torch"] = torch.__version__
        out["cuda"] = torch.version.cuda
    except Exception:
        pass
    try:
        r = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if r.returncode == 0 and r.stdout.strip():
            out["driver"] = r.stdout.strip().splitlines()[0]
    except Exception:
        pass
    return out


def result_document(
    device_name: str,
    hardware_name: str,
    rows: list[dict[str, Any]],
    versions_info: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    *,
    calibrated: bool = True,
) -> dict[str, Any]:
    """The JSON saved in the repo: date, GPU, versions, hardware-file values, per-size rows.

    Each row holds ``size_mb``, ``weight_bytes``, ``measured``, ``predicted`` and
    ``compare`` (see :func:`compare`).
    """
    hw = load_hardware(hardware_name, calibrated=calibrated)
    return {
        "schema": SCHEMA,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "device": device_name,
        "hardware": hw.name,
        "versions": versions() if versions_info is None else dict(versions_info),
        "model_inputs": {
            "hbm_bytes_per_s": hw.hbm_bandwidth_bytes_per_s,
            "hbm_efficiency": hw.hbm_efficiency,
            "effective_hbm_bytes_per_s": hw.effective_hbm_bytes_per_s,
            "l2_bytes_per_s": hw.l2_bandwidth_bytes_per_s,
            "l2_capacity_bytes": hw.l2_capacity_bytes,
            "usable_l2_bytes": hw.usable_l2_bytes,
            "kernel_overhead_s": hw.kernel_overhead_s,
            "hbm_half_bytes": hw.hbm_half_bytes,
            "calibrated": hw.calibrated,
        },
        "settings": dict(settings or {}),
        "rows": list(rows),
    }


def _us(x: float) -> str:
    return f"{x / US:8.2f}"


def format_predictions(preds: list[dict[str, Any]]) -> str:
    head = (
        "size_MB  stream_us  resident_us  standin_us  moved_MB  vanilla_us  prefetch_us  saving_us"
    )
    lines = [head]
    for p in preds:
        lines.append(
            f"{p['weight_bytes'] / MB:7.2f}  {_us(p['streaming_s'])}   {_us(p['resident_s'])}"
            f"     {_us(p['standin_s'])}  {p['moved_bytes'] / MB:8.2f}    {_us(p['vanilla_s'])}"
            f"     {_us(p['prefetch_s'])}   {_us(p['saving_s'])}"
        )
    return "\n".join(lines)


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = ["size_MB  quantity       measured_us  predicted_us  ratio"]
    for r in rows:
        for key, c in r["compare"].items():
            ratio = "  n/a" if c["ratio"] is None else f"{c['ratio']:5.2f}"
            lines.append(
                f"{r['weight_bytes'] / MB:7.2f}  {key:<13}  {_us(c['measured'])}     "
                f"{_us(c['predicted'])}     {ratio}"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------- GPU side
def _cuda_torch() -> Any | None:
    """torch when a CUDA GPU is usable, else None (torch missing or no device)."""
    try:
        import torch
    except ImportError:
        return None
    try:
        return torch if torch.cuda.is_available() and torch.cuda.device_count() > 0 else None
    except Exception:
        return None


def _median_s(torch: Any, setup: Any, body: Any, reps: int, warmup: int = 5) -> float:
    """Median seconds of ``body`` over ``reps`` runs, each after ``setup`` (untimed)."""
    for _ in range(warmup):
        setup()
        body()
    pairs = []
    for _ in range(reps):
        setup()
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        body()
        end.record()
        pairs.append((start, end))
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in pairs) * 1e-3


class _Gpu:
    """Buffers shared by every size: the L2 flush buffer and the calibrated stand-in."""

    def __init__(self, torch: Any, l2_bytes: float, reps: int) -> None:
        self.torch = torch
        self.reps = reps
        n = int(2 * l2_bytes) // DTYPE_BYTES
        self.flush_buf = torch.ones(n, device="cuda", dtype=torch.float16)
        self.flush_sink = torch.empty((), device="cuda", dtype=torch.float32)
        self.side = torch.cuda.Stream()
        self.cycles = 0

    def flush(self) -> None:
        """Evict the L2 by reading a buffer twice its size."""
        self.torch.sum(self.flush_buf, 0, dtype=self.torch.float32, out=self.flush_sink)

    def calibrate(self, target_s: float) -> float:
        """Pick ``_sleep`` cycles for ``target_s``; return the measured stand-in median."""
        torch, noop = self.torch, (lambda: None)
        c0, c1 = 10_000, 200_000
        t0 = _median_s(torch, noop, lambda: torch.cuda._sleep(c0), 50)
        t1 = _median_s(torch, noop, lambda: torch.cuda._sleep(c1), 50)
        slope = max((t1 - t0) / (c1 - c0), 1e-15)
        self.cycles = max(1, int(c0 + (target_s - t0) / slope))
        return _median_s(torch, self.flush, self.standin, self.reps)

    def standin(self) -> None:
        self.torch.cuda._sleep(self.cycles)

    def measure(self, weight_bytes: float, k: int = K_DEFAULT) -> dict[str, Any]:
        torch, reps = self.torch, self.reps
        n, k = gemv_shape(weight_bytes, k)
        w = torch.randn(n, k, device="cuda", dtype=torch.float16)
        x = torch.randn(k, device="cuda", dtype=torch.float16)
        y = torch.empty(n, device="cuda", dtype=torch.float16)
        sink = torch.empty((), device="cuda", dtype=torch.float32)

        def gemv() -> None:
            torch.mv(w, x, out=y)

        def touch() -> None:  # read-only pass over W: leaves it in L2
            torch.sum(w, (0, 1), dtype=torch.float32, out=sink)

        def flush_then_gemv() -> None:
            self.flush()
            gemv()

        def vanilla() -> None:
            self.standin()
            gemv()

        def with_prefetch() -> None:
            main = torch.cuda.current_stream()
            self.side.wait_stream(main)  # starts with the stand-in, after the flush
            with torch.cuda.stream(self.side):
                touch()
            self.standin()
            main.wait_stream(self.side)  # the GEMV waits for the prefetch
            gemv()

        streaming = _median_s(torch, self.flush, gemv, reps)
        resident = _median_s(torch, flush_then_gemv, gemv, reps)
        touch_s = _median_s(torch, self.flush, touch, reps)
        standin_s = _median_s(torch, self.flush, self.standin, reps)
        van = _median_s(torch, self.flush, vanilla, reps)
        pre = _median_s(torch, self.flush, with_prefetch, reps)
        wb = float(n * k * DTYPE_BYTES)
        return {
            "weight_bytes": wb,
            "shape": [n, k],
            "streaming_s": streaming,
            "resident_s": resident,
            "touch_s": touch_s,
            "standin_s": standin_s,
            "vanilla_s": van,
            "prefetch_s": pre,
            "saving_s": van - pre,
            "stream_bytes_per_s": wb / streaming,
            "resident_bytes_per_s": wb / resident,
            "touch_bytes_per_s": wb / touch_s,
        }


def run_gpu(
    torch: Any, hardware_name: str, sizes: list[int], standin_us: float, reps: int
) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """Measure every size on the current GPU; return (device name, rows, settings)."""
    hw = load_hardware(hardware_name)
    props = torch.cuda.get_device_properties(0)
    l2 = float(getattr(props, "L2_cache_size", 0) or hw.l2_capacity_bytes)
    gpu = _Gpu(torch, l2, reps)
    standin_s = gpu.calibrate(standin_us * US)
    rows = []
    for size in sizes:
        m = gpu.measure(size * MB)
        p = predict(hardware_name, m["weight_bytes"], m["standin_s"])
        rows.append(
            {
                "size_mb": size,
                "weight_bytes": m["weight_bytes"],
                "measured": m,
                "predicted": p,
                "compare": compare(m, p),
            }
        )
    settings = {
        "reps": reps,
        "standin_target_s": standin_us * US,
        "standin_calibrated_s": standin_s,
        "sleep_cycles": gpu.cycles,
        "device_l2_bytes": l2,
        "flush_bytes": 2 * l2,
        "k": K_DEFAULT,
        "dtype": "fp16",
    }
    return str(props.name), rows, settings


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hardware", default="h100-sxm", choices=["h100-sxm", "h200-sxm"])
    ap.add_argument("--out", default=None, help="JSON file (default bench/gpu/results-<gpu>.json)")
    ap.add_argument("--dry-run", action="store_true", help="print the model's predictions only")
    ap.add_argument("--standin-us", type=float, default=15.0, help="stand-in target (us)")
    ap.add_argument("--reps", type=int, default=200, help="repetitions per median")
    ap.add_argument("--sizes", default=None, help="comma list of weight sizes in MB")
    args = ap.parse_args(argv)

    hw = load_hardware(args.hardware)
    sizes = (
        [int(s) for s in args.sizes.split(",") if s.strip()]
        if args.sizes
        else sizes_mb(hw.l2_capacity_bytes)
    )
    if args.dry_run:
        preds = [predict(args.hardware, s * MB, args.standin_us * US) for s in sizes]
        print(f"model predictions on {hw.name} (stand-in {args.standin_us:g} us, fp16 GEMV)")
        print(format_predictions(preds))
        return 0

    torch = _cuda_torch()
    if torch is None:
        print(NO_GPU, file=sys.stderr)
        return 2
    device, rows, settings = run_gpu(torch, args.hardware, sizes, args.standin_us, args.reps)
    if hw.name.split("-")[0].upper() not in device.upper():
        print(f"warning: GPU is {device!r} but --hardware is {hw.name}", file=sys.stderr)
    doc = result_document(device, args.hardware, rows, settings=settings)
    out = Path(args.out or f"bench/gpu/results-{hw.name.split('-')[0]}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"{device} vs model {hw.name}")
    print(format_rows(rows))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
