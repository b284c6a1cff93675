"""Run sweep points on Dask (a local cluster by default, or an existing scheduler).

The main process is the only writer: workers return results, the main process stores each
one as it arrives (one atomic row per point). Interrupting a sweep loses at most the points
in flight; rerunning skips every stored point.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import InfeasibleError, InputError
from .spec import Point, apply_overrides
from .store import Store

RESULT_FIELDS = (
    "status",
    "makespan_s",
    "baseline_makespan_s",
    "greedy_makespan_s",
    "streaming_makespan_s",
    "fused_makespan_s",
    "speedup",
    "lower_bound_s",
    "gap",
    "verified",
    "method",
    "l2_capacity_bytes",
    "usable_l2_bytes",
    "prefetched_bytes",
    "solve_time_s",
    "tokens_per_s",
    "tokens_per_s_vanilla",
    "device_cost_usd",
    "tokens_per_s_per_kusd",
    "tokens_per_s_per_kusd_vanilla",
    "error",
)
#: the stored ``inputs`` object, flattened into CSV columns ``inputs.<key>.<key>``
INPUTS_PREFIX = "inputs"


def flatten(obj: Any, prefix: str) -> dict[str, Any]:
    """Nested mappings -> one level of dotted keys; lists become comma-joined text.

    >>> flatten({"model": {"name": "m", "file": None}, "plans": ["vanilla", "greedy"]}, "inputs")
    {'inputs.model.name': 'm', 'inputs.model.file': None, 'inputs.plans': 'vanilla,greedy'}
    """
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}"))
        return out
    if isinstance(obj, list | tuple):
        return {prefix: ",".join(str(x) for x in obj)}
    return {prefix: obj}


def solve_point(point: Point) -> dict[str, Any]:
    """Solve one point (runs on a worker). Errors of the point become its stored result.

    With ``plans`` in the point's solve options, the fast path
    (:func:`preserve_cp.estimate.estimate`): those baselines only, status ``baselines``.
    Every solved point's result carries ``inputs``, the object ``solve --json`` prints
    (:func:`preserve_cp.describe.solve_inputs`); an invalid or infeasible point's result is
    its status and error.
    """
    from ..describe import solve_inputs
    from ..estimate import estimate
    from ..graph import build_graph
    from ..hardware import load_hardware
    from ..solve import SolveOptions, solve

    opts = dict(point.solve)
    plans = opts.pop("plans", None)
    try:
        hw = apply_overrides(load_hardware(point.hardware, timing=point.timing), point.overrides)
        g = build_graph(point.model, point.workload)
        options = SolveOptions(**opts)  # SolveSpec's fields
        if plans:
            r = estimate(g, hw, plans=plans, options=options)
        else:
            r = solve(g, hw, options=options)
        inputs = solve_inputs(g, hw, options, model=point.model, plans=plans)
    except InfeasibleError as exc:
        return {"status": "infeasible", "error": str(exc)}
    except InputError as exc:
        return {"status": "invalid", "error": str(exc)}
    wl = point.workload
    tokens = wl.batch if wl.phase == "decode" else wl.batch * wl.context
    out: dict[str, Any] = {
        "status": r.status,
        "makespan_s": r.makespan_s,
        "baseline_makespan_s": r.baseline_makespan_s,
        "greedy_makespan_s": r.greedy_makespan_s,
        "streaming_makespan_s": r.streaming_makespan_s,
        "fused_makespan_s": r.fused_makespan_s,
        "speedup": r.speedup,
        "lower_bound_s": r.lower_bound_s,
        "gap": r.gap,
        "verified": r.verified,
        "method": r.method,
        "l2_capacity_bytes": hw.l2_capacity_bytes,  # the device's L2
        "usable_l2_bytes": r.usable_l2_bytes,  # what prefetches may hold
        "prefetched_bytes": r.plan.prefetched_bytes,
        "solve_time_s": r.solve_time_s,
        # throughput of the tp group: tokens of the step / step time
        "tokens_per_s": tokens / r.makespan_s,
        "tokens_per_s_vanilla": tokens / (r.baseline_makespan_s or r.makespan_s),
        "inputs": inputs,
    }
    if hw.spec is not None and hw.spec.cost is not None:
        from ..cost import cost_model

        group_cost = wl.tp * cost_model(hw).device_cost_usd(hw.l2_capacity_bytes)
        out["device_cost_usd"] = group_cost / wl.tp
        out["tokens_per_s_per_kusd"] = 1e3 * out["tokens_per_s"] / group_cost
        out["tokens_per_s_per_kusd_vanilla"] = 1e3 * out["tokens_per_s_vanilla"] / group_cost
    return out


def run_sweep(
    points: Sequence[Point],
    store: Store,
    *,
    scheduler: str | None = None,
    workers: int = 2,
    progress: Callable[[int, int, int], None] | None = None,
) -> dict[str, int]:
    """Solve every point not yet in ``store``; return counts (total, stored_before, solved).

    ``scheduler``: ``tcp://HOST:PORT`` of a running Dask scheduler; default a LocalCluster
    with ``workers`` single-threaded worker processes.
    """
    done = store.keys()
    todo: dict[str, Point] = {}
    for p in points:
        if p.key not in done:
            todo.setdefault(p.key, p)
    before = len({p.key for p in points}) - len(todo)
    total = before + len(todo)
    solved = 0
    if progress:
        progress(before, total, before)
    if todo:
        from distributed import Client, LocalCluster, as_completed

        cluster = None
        # distributed logs INFO lines (with tracebacks of closed comms) while it shuts down
        # after Ctrl-C; only errors are worth a user's screen
        dlog = logging.getLogger("distributed")
        old_level = dlog.level
        dlog.setLevel(logging.ERROR)
        try:
            if scheduler:
                try:
                    client = Client(scheduler, timeout="10s")
                except (OSError, TimeoutError) as exc:
                    raise InputError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
            else:
                # worker processes inherit an ignored SIGINT: Ctrl-C reaches this process
                # only, which closes the cluster (no half-dead workers printing tracebacks)
                main = threading.current_thread() is threading.main_thread()
                old_int = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
                try:
                    cluster = LocalCluster(
                        n_workers=workers,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=None,
                        silence_logs=logging.ERROR,
                        env={"DASK_LOGGING__DISTRIBUTED": "error"},
                    )
                finally:
                    if old_int is not None:
                        signal.signal(signal.SIGINT, old_int)
                client = Client(cluster)
            try:
                futures = {
                    client.submit(solve_point, p, key=f"point-{k}", pure=False): k
                    for k, p in todo.items()
                }
                for fut in as_completed(futures):
                    k = futures[fut]
                    res = fut.result()
                    store.put(k, {**todo[k].describe(), "key": k}, res)
                    solved += 1
                    if progress:
                        progress(before + solved, total, before)
            finally:
                client.close()
        finally:
            try:
                if cluster is not None:
                    cluster.close()
            finally:
                dlog.setLevel(old_level)
    return {"total": total, "stored_before": before, "solved": solved}


def text_progress(
    stream: Any = None, *, every_s: float = 10.0, clock: Callable[[], float] = time.perf_counter
) -> Callable[[int, int, int], None]:
    """Progress on stderr: a live carriage-return line on a terminal; on anything else (a log
    file, a pipe) a plain line at most every ``every_s`` seconds or each 10 % of the points,
    and always the last one.

    >>> import io
    >>> out = io.StringIO()
    >>> show = text_progress(out, clock=lambda: 0.0)
    >>> for done in range(0, 101):
    ...     show(done, 100, 0)
    >>> len(out.getvalue().splitlines()), "\\r" in out.getvalue()
    (11, False)
    """
    out = stream or sys.stderr
    live = bool(getattr(out, "isatty", lambda: False)())
    t0 = clock()
    last = {"t": -math.inf, "tenth": -1}

    def line(done: int, total: int, before: int) -> str:
        rate = (done - before) / max(1e-9, clock() - t0)
        return f"{done}/{total} points ({before} stored before, {rate:.2f}/s)"

    def show(done: int, total: int, before: int) -> None:
        if live:
            width = 30
            fill = int(width * done / total) if total else width
            out.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {line(done, total, before)}")
            if done >= total:
                out.write("\n")
            out.flush()
            return
        now = clock()
        tenth = 10 * done // total if total else 10
        if done >= total or tenth > last["tenth"] or now - last["t"] >= every_s:
            out.write(f"progress: {line(done, total, before)}\n")
            out.flush()
            last["t"], last["tenth"] = now, tenth

    return show


def export_csv(store: Store, path: str | Path, points: Sequence[Point] | None = None) -> Path:
    """Write the stored results (of ``points`` when given, else all) as CSV (``-``: standard
    output): the point's columns, :data:`RESULT_FIELDS`, then ``inputs`` flattened
    (``inputs.model.name``, ``inputs.hardware.calibrated``, ``inputs.workload.context``...,
    see :func:`flatten`; empty for rows stored without it)."""
    from ..outputs import write_output
    from ..viz._io import csv_text

    wanted = None if points is None else {p.key for p in points}
    rows = [
        {
            **pt,
            **{f: res.get(f) for f in RESULT_FIELDS},
            **flatten(res.get("inputs") or {}, INPUTS_PREFIX),
        }
        for key, pt, res in store.rows()
        if wanted is None or key in wanted
    ]
    return write_output(path, csv_text(rows))
