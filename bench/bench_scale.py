"""Scale benchmark (issue: provably near-optimal plans for the largest models, in seconds).

Runs, in one process:
1. every shipped model x {decode, prefill} x tp {4, 8} on ascend-910b2 (int8) and h100-sxm
   (fp8), each with a workload sampled (seeded) from batch 1-64 and context 2K-32K, and
   prints makespan / lower bound, speedup vs vanilla, optimised vs greedy and vs streaming
   (the best simple rule: baselines.best_streaming), solve time; the summary names the rows
   where the optimiser beats streaming by the most and by the least;
2. the tight-L2 case (h100-sxm, Llama3-70B fp16 decode, tp 4);
3. the scaling ratio solve(80 layers) / solve(8 layers) of the same model;
4. the simulator throughput ratio simulate(100k-op graph) / networkx topological sort.

Output is deterministic apart from the time columns. Usage: python bench/bench_scale.py
[--quick] [--workers N]
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import networkx as nx

import preserve_cp as pc
from preserve_cp.costs import op_costs
from preserve_cp.machine import machine_for
from preserve_cp.simulate import simulate

DEVICES = {"ascend-910b2": "int8", "h100-sxm": "fp8"}
BATCHES = [1, 2, 4, 8, 16, 32, 64]
CONTEXTS = [2048, 4096, 8192, 16384, 32768]


def rows(quick: bool):
    rng = random.Random(2501_08192)
    for model in pc.list_models():
        for phase in ("decode", "prefill"):
            for tp in (4, 8):
                for dev in DEVICES:
                    b, c = rng.choice(BATCHES), rng.choice(CONTEXTS)
                    if phase == "prefill":
                        b = min(b, 4)  # prefill of up to 4 x 32K tokens
                    if quick and (tp == 4 or dev == "h100-sxm"):
                        continue
                    yield model, phase, tp, dev, b, c


def solve_row(model, phase, tp, dev, b, c, workers):
    dt = DEVICES[dev]
    try:
        g = pc.build_graph(model, pc.Workload(phase, b, c, tp, dt, dt, dt))
        t = time.perf_counter()
        r = pc.solve(g, dev, workers=workers)
        return r, time.perf_counter() - t, None
    except pc.InfeasibleError:
        return None, 0.0, "skip: does not fit in HBM"
    except pc.InputError as exc:
        return None, 0.0, "skip: " + str(exc).split(";")[0].split(": ", 1)[-1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tp 8 on ascend-910b2 only")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)

    print(
        f"{'model':14s} {'phase':7s} {'tp':>2s} {'device':12s} {'batch':>5s} {'ctx':>6s} "
        f"{'mk/LB':>8s} {'speedup':>8s} {'vs greedy':>9s} {'vs stream':>9s} {'method':15s} "
        f"{'time_s':>7s}"
    )
    worst, n, over = 1.0, 0, []
    vs_stream: list[tuple[float, str]] = []  # (streaming / optimised, row)
    for model, phase, tp, dev, b, c in rows(args.quick):
        r, dt, skip = solve_row(model, phase, tp, dev, b, c, args.workers)
        head = f"{model:14s} {phase:7s} {tp:2d} {dev:12s} {b:5d} {c:6d}"
        if r is None:
            print(f"{head} {skip}")
            continue
        ratio = r.makespan_s / r.lower_bound_s
        n += 1
        worst = max(worst, ratio)
        if ratio > 1.005:
            over.append(f"{model} {phase} tp{tp} {dev}")
        stream = "-"
        if r.streaming_makespan_s is not None:
            vs = r.streaming_makespan_s / r.makespan_s
            stream = f"{vs:.4f}"
            vs_stream.append((vs, f"{model} {phase} tp{tp} {dev} b{b} c{c}"))
        print(
            f"{head} {ratio:8.5f} {r.speedup:8.4f} {r.greedy_makespan_s / r.makespan_s:9.4f} "
            f"{stream:>9s} {r.method[:15]:15s} {dt:7.2f}"
        )
    print(
        f"\nrows solved: {n}; worst makespan/LB {worst:.5f}; rows above 1.005: {len(over)}"
        + (f" ({', '.join(over)})" if over else "")
    )
    if vs_stream:
        vs_stream.sort()
        print(
            f"optimised vs streaming over {len(vs_stream)} rows: most "
            + "; ".join(f"{v:.4f}x {row}" for v, row in vs_stream[::-1][:3])
            + "\n  least "
            + "; ".join(f"{v:.4f}x {row}" for v, row in vs_stream[:3])
        )
    else:
        print("optimised vs streaming: no row has a streaming baseline")

    print("\ntight L2: h100-sxm (50 MB L2), llama3-70b fp16 decode, tp 4, batch 4, ctx 16384")
    g = pc.build_graph("llama3-70b", pc.Workload("decode", 4, 16384, 4, "fp16", "fp16", "fp16"))
    r = pc.solve(g, "h100-sxm", workers=args.workers)
    st = r.streaming_makespan_s
    print(
        f"  vanilla {r.baseline_makespan_s * 1e3:.4f} ms, greedy "
        f"{r.greedy_makespan_s * 1e3:.4f} ms, streaming "
        + ("-" if st is None else f"{st * 1e3:.4f} ms")
        + f", optimised {r.makespan_s * 1e3:.4f} ms: "
        f"{r.greedy_makespan_s / r.makespan_s:.4f}x over greedy, "
        + ("" if st is None else f"{st / r.makespan_s:.4f}x over streaming, ")
        + f"{r.speedup:.4f}x over vanilla, makespan/LB {r.makespan_s / r.lower_bound_s:.5f}"
    )

    times = {}
    for layers in (8, 80):
        m = pc.load_model("llama3-70b").model_copy(update={"num_layers": layers})
        g = pc.build_graph(m, pc.Workload("decode", 4, 16384, 8, "int8", "int8", "int8"))
        t = time.perf_counter()
        pc.solve(g, "ascend-910b2", workers=args.workers)
        times[layers] = time.perf_counter() - t
    print(
        f"\nscaling: solve(80 layers) / solve(8 layers) = {times[80] / times[8]:.2f} "
        f"({times[80]:.2f} s / {times[8]:.2f} s)"
    )

    m = pc.load_model("llama3-8b").model_copy(update={"num_layers": 9091})
    g = pc.build_graph(m, pc.Workload("decode", 1, 2048, 4))
    hw = pc.load_hardware("h100-sxm")
    costs, mach = op_costs(g, hw), machine_for(hw)
    t = time.perf_counter()
    list(nx.topological_sort(g))
    topo = time.perf_counter() - t
    t = time.perf_counter()
    simulate(g, costs, pc.Plan("vanilla"), mach)
    sim = time.perf_counter() - t
    print(
        f"simulator: simulate({g.number_of_nodes()} ops) / topological_sort = "
        f"{sim / topo:.2f} ({sim:.2f} s / {topo:.2f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
