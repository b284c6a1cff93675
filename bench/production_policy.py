"""Predicted gain of vLLM-Ascend's production prefetch policy, the paper's greedy and the
optimised plan, beside the gains the production deployments report.

Reported (vllm-ascend pull requests 2550 and 1509, weight-prefetch guide; shared
reference/moe.md 5):

* PR 2550, Qwen3-235B-A22B w8a8 on A3, decode-only, tp1 dp16: P90 TPOT 109 -> 102 ms (1.069x);
* PR 1509, a DeepSeek-style w8a8 MoE on two Atlas 800T A2 nodes (16 x 910B), MoE w1 prefetch
  of 100 MB: with expert parallel 90.71 -> 92.65 output tok/s (1.021x), without 103.83 -> 104.20
  (80 MB; 1.004x).

What the sources do not state is assumed and printed with the results: batch (max-num-seqs
144 per DP rank, the value the guide says the defaults were tuned at, for PR 2550; 96 tokens,
the MoE prefetch threshold, for PR 1509), context 2048, the model of PR 1509 (deepseek-v3),
and one 910C die of A3 modelled as an ascend-910b2 (A3 software sees each die as a device).
PR 2550's tp1 dp16 runs data-parallel attention with the experts spread over the 16 dies
(--attention dp --tp 16 --ep 16: 235 B parameters do not fit one die); PR 1509 with expert
parallel is --tp 16 --ep 16, without it --tp 16.

Each deployment is solved with the prefetch share during compute ops at 0 (the default:
prefetches move only while no compute kernel runs) and 1 (optimistic). Usage:
python bench/production_policy.py
"""

from __future__ import annotations

import dataclasses
import time

import preserve_cp as pc
from preserve_cp.costs import op_costs
from preserve_cp.machine import machine_for
from preserve_cp.production import DEFAULT_RATIOS, production_plan
from preserve_cp.simulate import simulate

CASES = [
    (
        "PR 2550 Qwen3-235B w8a8 tp1 dp16 (A3 dies)",
        "qwen3-235b-a22b",
        pc.Workload("decode", 16 * 144, 2048, 16, dtype="int8", ep=16, attention="dp"),
        109 / 102,
        DEFAULT_RATIOS,
    ),
    (
        "PR 1509 DeepSeek-style w8a8, EP (2 x A2)",
        "deepseek-v3",
        pc.Workload("decode", 96, 2048, 16, dtype="int8", ep=16),
        92.65 / 90.71,
        {"moe": {"gate_up": 1.0}},
    ),
    (
        "PR 1509 DeepSeek-style w8a8, no EP (2 x A2)",
        "deepseek-v3",
        pc.Workload("decode", 96, 2048, 16, dtype="int8"),
        104.20 / 103.83,
        {"moe": {"gate_up": 1.0}},
    ),
]


def main() -> None:
    hw0 = pc.load_hardware("ascend-910b2")
    print(
        f"{'deployment':46s} {'share':>5s} {'reported':>9s} {'production':>10s} "
        f"{'greedy':>7s} {'optimised':>9s} {'time_s':>7s}"
    )
    for name, model, wl, reported, ratios in CASES:
        g = pc.build_graph(model, wl)
        for share in (0.0, 1.0):
            hw = dataclasses.replace(hw0, prefetch_share_during_ops=share)
            t = time.perf_counter()
            r = pc.solve(g, hw, time_limit_s=60)
            costs = op_costs(g, hw)
            prod = simulate(g, costs, production_plan(g, ratios), machine_for(hw)).makespan_s
            base = r.baseline_makespan_s or r.makespan_s
            print(
                f"{name:46s} {share:5.1f} {reported:8.3f}x {base / prod:9.3f}x "
                f"{base / (r.greedy_makespan_s or base):6.3f}x {r.speedup or 1:8.3f}x "
                f"{time.perf_counter() - t:7.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
