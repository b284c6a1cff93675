"""Router-aware prefetch benchmark (issue 13): the study grid's rows and the scaling ratio.

Runs, in one process:
1. DeepSeek-V3, Qwen3-235B-A22B, Mixtral-8x7B and gpt-oss-120b decode (tp 8, context 4096,
   batch 4, uniform routing, predictor accuracy 0.9, 16 scenarios) on h200-sxm and b200 (fp8)
   and ascend-910b2 (int8): expected makespan / clairvoyant bound, the optimised plan's
   speedup over certain-only prefetch (no expert prefetch), hit rate, 95 % half-width of the
   expected step relative to it, and the solve time;
2. the scaling ratio: solve time of a 61-layer DeepSeek-V3 with 64 scenarios over the same
   model cut to 8 layers (issue target: within 10x).

Rows that do not fit in HBM are printed as skipped. Output is deterministic apart from the
time columns. Usage: python bench/bench_router.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time

import preserve_cp as pc
from preserve_cp.machine import check_fits
from preserve_cp.models import ModelConfig
from preserve_cp.router import solve_router

MODELS = ("deepseek-v3", "qwen3-235b-a22b", "mixtral-8x7b", "gpt-oss-120b")
DEVICES = {"h200-sxm": "fp8", "b200": "fp8", "ascend-910b2": "int8"}


def row(model: str | ModelConfig, dev: str, scenarios: int) -> tuple[object, float, str | None]:
    dt = DEVICES[dev]
    try:
        g = pc.build_graph(model, pc.Workload("decode", 4, 4096, 8, dt))
        check_fits(g, pc.load_hardware(dev))
    except pc.InfeasibleError:
        return None, 0.0, "skip: does not fit in HBM"
    t = time.perf_counter()
    r = solve_router(g, dev, predictor_accuracy=0.9, scenarios=scenarios)
    return r, time.perf_counter() - t, None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="h200-sxm only, no scaling ratio")
    args = ap.parse_args(argv)
    print(
        f"{'model':16s} {'device':13s} {'exp/bound':>9s} {'vs certain':>10s} {'hit':>6s} "
        f"{'ci95/exp':>8s} {'time_s':>7s}"
    )
    for model in MODELS:
        for dev in DEVICES:
            if args.quick and dev != "h200-sxm":
                continue
            r, dt, skip = row(model, dev, 16)
            head = f"{model:16s} {dev:13s}"
            if r is None:
                print(f"{head} {skip}")
                continue
            d = r.to_dict()  # type: ignore[attr-defined]
            certain = d["plans"]["no expert prefetch"]["expected_makespan_s"]
            hit = "-" if d["expert_hit_rate"] is None else f"{d['expert_hit_rate']:.3f}"
            ratio = d["expected_makespan_s"] / d["clairvoyant_bound_s"]
            print(
                f"{head} {ratio:9.5f} {certain / d['expected_makespan_s']:9.4f}x {hit:>6s} "
                f"{d['ci95_half_width_s'] / d['expected_makespan_s'] * 100:7.3f}% {dt:7.1f}",
                flush=True,
            )
    if args.quick:
        return 0
    full = pc.load_model("deepseek-v3")
    cut = ModelConfig(**{**full.model_dump(), "num_layers": 8, "name": "deepseek-v3-8l"})
    times = {}
    for name, m in (("61 layers", full), ("8 layers", cut)):
        _, dt, _ = row(m, "h200-sxm", 64)
        times[name] = dt
    print(
        f"scaling: solve_router(61 layers, 64 scenarios) / solve_router(8 layers, 64 "
        f"scenarios) = {times['61 layers'] / times['8 layers']:.2f} "
        f"({times['61 layers']:.1f} s / {times['8 layers']:.1f} s; target <= 10)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
