"""How the measured-kernel timing source moves the validation errors (docs/fidelity.md,
"Measured-kernel timing source").

Runs ``preserve-cp validate`` twice in-process (``compare(points, timing=...)``: the roofline,
then aiconfigurator-core's kernel tables) on the shipped validation set, keeps the points on
devices whose hardware file has a ``measured`` section, and prints the median |error| per
group (decode metrics, TTFT, end-to-end, every point) and split, with the number of points,
and how many GEMM/attention ops of those points' graphs the tables covered.

Usage: python bench/measured_timing.py      (needs pip install "preserve-cp[measured]")
"""

from __future__ import annotations

import statistics
from collections import Counter

from preserve_cp.graph import build_graph
from preserve_cp.hardware import list_hardware, load_hardware
from preserve_cp.measured import coverage
from preserve_cp.peers import GROUPS, needs
from preserve_cp.validate import (
    compare,
    decode_context,
    load_points,
    parse_precision,
    run_options,
)
from preserve_cp.workload import Workload

SPLITS = ("holdout", "train", "all")


def median_pct(errs: list[float]) -> str:
    return f"{statistics.median(errs) * 100:5.1f} %" if errs else "    -  "


def main() -> None:
    with_tables = {n for n in list_hardware() if load_hardware(n).measured is not None}
    points = [p for p in load_points() if p["hardware"] in with_tables]
    runs = {t: compare(points, timing=t) for t in ("roofline", "measured")}
    print(f"{len(points)} points on devices with tables: {sorted({p['hardware'] for p in points})}")
    print(f"{'group':7s} {'split':8s} {'n':>3s} {'roofline':>9s} {'measured':>9s}")
    for group, metrics in GROUPS.items():
        for split in SPLITS:
            keep = [
                i
                for i, p in enumerate(points)
                if (metrics is None or p["metric"] in metrics) and split in ("all", p["split"])
            ]
            errs = {
                t: [abs(rows[i].error) for i in keep if rows[i].error is not None]
                for t, rows in runs.items()
            }
            if errs["roofline"]:
                print(
                    f"{group:7s} {split:8s} {len(errs['roofline']):3d} "
                    f"{median_pct(errs['roofline']):>9s} {median_pct(errs['measured']):>9s}"
                )
    # how much of each step the tables timed (the rest stays on the roofline)
    hit = total = 0
    why: Counter[str] = Counter()
    for p in points:
        dt = parse_precision(str(p.get("precision", "")))
        if dt is None or p["metric"] not in {m for ms in GROUPS.values() if ms for m in ms}:
            continue
        step, prefill = needs(p)
        hw = load_hardware(p["hardware"], timing="measured")
        for phase, ctx, wanted in (
            ("decode", decode_context(p), step),
            ("prefill", int(p["input_tokens"]), prefill),
        ):
            if not wanted:
                continue
            opts = run_options(p)
            wl = Workload(phase, int(p["batch"]), ctx, int(p["tp"]), *dt, **opts)  # type: ignore[arg-type]
            if wl.pp > 1:
                continue
            g = build_graph(p["model"], wl)
            h, n = coverage(g, hw)
            hit, total = hit + h, total + n
            if h < n:
                why[f"{p['model']} {phase} {dt}"] += n - h
    print(f"GEMM/attention ops timed by the tables: {hit} of {total} ({hit / total * 100:.1f} %)")
    for k, v in why.most_common():
        print(f"  roofline kept for {v:5d} ops of {k}")
    print("per point (measured):")
    for p, r0, r1 in zip(points, runs["roofline"], runs["measured"], strict=True):
        e0 = "-" if r0.error is None else f"{r0.error * 100:+6.1f} %"
        e1 = "-" if r1.error is None else f"{r1.error * 100:+6.1f} %"
        print(f"  {p['id'][:56]:56s} {p['split']:7s} {e0:>9s} {e1:>9s}")


if __name__ == "__main__":
    main()
