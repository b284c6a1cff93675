"""Fast-path benchmark: points per second of ``solve --plans vanilla`` (and of all four
baselines) against full solves, on a few shipped models.

For each model (decode, batch 4, tp 8, bf16 on ascend-910b2; the graph built and the
hardware file read once, outside the timing) it times ``estimate(plans=["vanilla"])``,
``estimate()`` (every baseline) and ``solve()`` (the optimiser, default options), each
REPEAT times, and prints points per second and the ratio of the fast path's rate to the
full solve's.

Target (issue 15): the no-prefetch estimate of llama3-70b at least 20x faster than a full
solve. Usage: python bench/bench_fast_path.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

import preserve_cp as pc
from preserve_cp.estimate import estimate

MODELS = [("llama3-8b", 8192), ("llama3-70b", 16384), ("qwen2-72b", 16384)]
HARDWARE = "ascend-910b2"


def rate(fn, repeat: int) -> float:
    """Points per second: ``repeat`` calls of ``fn``, after one warm-up call."""
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return repeat / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"{'model':12s} {'vanilla/s':>10s} {'baselines/s':>12s} {'full/s':>8s} {'ratio':>7s}")
    hw = pc.load_hardware(HARDWARE)  # read once, as a sweep does
    for model, context in MODELS:
        g = pc.build_graph(model, pc.Workload("decode", batch=4, context=context, tp=8))
        fast = rate(lambda g=g: estimate(g, hw, plans=["vanilla"]), args.repeat)
        every = rate(lambda g=g: estimate(g, hw), args.repeat)
        full = rate(lambda g=g: pc.solve(g, hw), args.repeat)
        print(f"{model:12s} {fast:10.1f} {every:12.1f} {full:8.2f} {fast / full:6.1f}x")


if __name__ == "__main__":
    main()
