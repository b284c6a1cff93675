"""Deadline benchmark: does ``time_limit_s`` bound the whole solve?

For every shipped model (decode and prefill, tp 8, fp8 on h100-sxm: the largest graphs the
suite ships) it builds the graph and runs ``solve(time_limit_s=LIMIT)``, and prints the wall
time of the solve, the overrun beyond the limit, the status (``time_limit`` when the deadline
cut a stage) and whether the plan verified. Then it times the issue's CLI command against the
CLI's own start-up (``preserve-cp hardware list``), both as subprocesses.

Target (issue 11): every solve returns within LIMIT + 0.5 s on 2 cores; the CLI command
``solve --model llama3.1-405b ... --time-limit 0.5`` within 1 s beyond start-up.
Usage: python bench/bench_deadline.py [--limit 0.5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import preserve_cp as pc

CLI = [sys.executable, "-m", "preserve_cp.cli"]
COMMAND = [
    "solve",
    "--model",
    "llama3.1-405b",
    "--hardware",
    "h100-sxm",
    "--phase",
    "decode",
    "--batch",
    "16",
    "--context",
    "8192",
    "--tp",
    "8",
    "--dtype",
    "fp8",
    "--time-limit",
    "0.5",
]


def _wall(args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run([*CLI, *args], check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=float, default=0.5)
    args = ap.parse_args()
    print(f"{'model':16s} {'phase':8s} {'solve_s':>8s} {'over_s':>7s} {'status':10s} verified")
    worst = 0.0
    for model in pc.list_models():
        for phase, batch, ctx in (("decode", 16, 8192), ("prefill", 1, 8192)):
            wl = pc.Workload(phase, batch, ctx, 8, "fp8", "fp8", "fp8")
            try:
                g = pc.build_graph(model, wl)
                t = time.perf_counter()
                r = pc.solve(g, "h100-sxm", time_limit_s=args.limit)
                dt = time.perf_counter() - t
            except pc.PreserveError as exc:
                print(f"{model:16s} {phase:8s} skipped: {str(exc)[:70]}")
                continue
            worst = max(worst, dt - args.limit)
            print(
                f"{model:16s} {phase:8s} {dt:8.3f} {dt - args.limit:7.3f} {r.status:10s} "
                f"{r.verified}"
            )
    print(f"worst overrun beyond the {args.limit} s limit: {worst:.3f} s (target <= 0.5 s)")
    start = statistics.median(_wall(["hardware", "list"]) for _ in range(3))
    cmd = statistics.median(_wall(COMMAND) for _ in range(3))
    print(f"CLI start-up (hardware list, median of 3): {start:.3f} s")
    print(f"preserve-cp {' '.join(COMMAND)}: {cmd:.3f} s, {cmd - start:.3f} s beyond start-up")


if __name__ == "__main__":
    main()
