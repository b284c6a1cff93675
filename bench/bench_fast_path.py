"""Fast-path benchmark: points per second of ``solve --plans vanilla`` (and of all four
baselines) against full solves, on a few shipped models.

For each model (decode, batch 4, tp 8, bf16 on ascend-910b2; the graph built and the
hardware file read once, outside the timing) it times ``estimate(plans=["vanilla"])``,
``estimate()`` (every baseline) and ``solve()`` (the optimiser, default options), each
REPEAT times, and prints points per second and the ratio of the fast path's rate to the
full solve's.

Then the same comparison through ``preserve-cp sweep``: one grid (llama3-8b decode on
ascend-910b2, batch x L2 capacity, SWEEP_POINTS points) swept twice on one local Dask cluster
of ``--workers`` processes (started once, outside the timing), with the spec's
``plans: [vanilla, greedy]`` (the fast path) and with full solves, each into a fresh store;
it prints sweep points per second of both and their ratio, measured in this one run.

Target (issue 15): the no-prefetch estimate of llama3-70b at least 20x faster than a full
solve. Usage: python bench/bench_fast_path.py [--repeat 5] [--workers 2] [--no-sweep]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import preserve_cp as pc
from preserve_cp.estimate import estimate
from preserve_cp.sweep import Store, SweepSpec, expand, run_sweep

MODELS = [("llama3-8b", 8192), ("llama3-70b", 16384), ("qwen2-72b", 16384)]
HARDWARE = "ascend-910b2"
SWEEP_PLANS = ["vanilla", "greedy"]
#: 2 batches x 8 L2 capacities of llama3-8b decode (32 layers), tp 4, int8
SWEEP = dict(
    models=["llama3-8b"],
    batch=[1, 8],
    context=[4096],
    tp=[4],
    dtype=["int8"],
    hardware=[HARDWARE],
    overrides={"l2_capacity_mb": [8, 16, 32, 48, 64, 96, 128, 192]},
)


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
    ap.add_argument("--workers", type=int, default=2, help="sweep: local Dask worker processes")
    ap.add_argument("--no-sweep", action="store_true", help="skip the sweep comparison")
    args = ap.parse_args()
    print(f"{'model':12s} {'vanilla/s':>10s} {'baselines/s':>12s} {'full/s':>8s} {'ratio':>7s}")
    hw = pc.load_hardware(HARDWARE)  # read once, as a sweep does
    for model, context in MODELS:
        g = pc.build_graph(model, pc.Workload("decode", batch=4, context=context, tp=8))
        fast = rate(lambda g=g: estimate(g, hw, plans=["vanilla"]), args.repeat)
        every = rate(lambda g=g: estimate(g, hw), args.repeat)
        full = rate(lambda g=g: pc.solve(g, hw), args.repeat)
        print(f"{model:12s} {fast:10.1f} {every:12.1f} {full:8.2f} {fast / full:6.1f}x")
    if not args.no_sweep:
        bench_sweep(args.workers)


def sweep_rate(scheduler: str, plans: list[str] | None, folder: Path) -> tuple[int, float]:
    """(points, points per second) of one sweep of :data:`SWEEP` into a fresh store."""
    points = expand(SweepSpec(**SWEEP, plans=plans))
    store = Store(folder / f"{'-'.join(plans or ['full'])}.sqlite")
    try:
        t0 = time.perf_counter()
        counts = run_sweep(points, store, scheduler=scheduler)
        wall = time.perf_counter() - t0
    finally:
        store.close()
    assert counts["solved"] == len(points), counts
    return len(points), len(points) / wall


def bench_sweep(workers: int) -> None:
    """Sweep points per second, fast path (``plans``) against full solves, one cluster."""
    from distributed import LocalCluster

    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
    ):
        addr = cluster.scheduler_address
        (Path(tmp) / "warm").mkdir()
        sweep_rate(addr, SWEEP_PLANS, Path(tmp) / "warm")  # imports on the workers
        n, fast = sweep_rate(addr, SWEEP_PLANS, Path(tmp))
        _, full = sweep_rate(addr, None, Path(tmp))
    print(
        f"\nsweep of {n} points (llama3-8b decode, batch x L2 capacity), {workers} workers:\n"
        f"{'plans ' + ','.join(SWEEP_PLANS):24s} {fast:8.2f} points/s\n"
        f"{'full solves':24s} {full:8.2f} points/s\n"
        f"{'ratio':24s} {fast / full:8.1f}x"
    )


if __name__ == "__main__":
    main()
