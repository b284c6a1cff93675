"""Regenerate every picture the documentation shows.

Usage::

    python docs/build_figures.py [--out DIR]

``DIR`` defaults to ``docs/figures`` (next to this script). Each schedule is solved with the
library (``preserve_cp.build_graph`` and ``preserve_cp.solve``, 30 s limit, seed 0:
the CLI's defaults) and drawn with ``preserve_cp.gantt``; the footprint plot uses
``preserve_cp.viz.footprint_plot``. The whole run takes well under a minute on 2 cores.

The ``paper-*.png`` pictures of docs/reproduction.md are not made here: they come from
``preserve-cp reproduce paper`` (several minutes of sweeps), as that page explains.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import preserve_cp as pc
from preserve_cp.footprint import footprints
from preserve_cp.viz._io import write_figure
from preserve_cp.viz.footprint_plot import footprint_figure

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "figures"
MODEL = "llama3-70b"


@dataclass(frozen=True)
class Case:
    """One solve and the Gantt pictures drawn from it."""

    stem: str
    hardware: str
    phase: Literal["decode", "prefill"]
    dtype: str
    batch: int
    context: int
    layers: tuple[int, int]
    optimised_only: bool = True  # also draw the optimised plan alone


CASES = (
    # index.md: the workload of the README's first command (bf16, the CLI default)
    Case(
        "first-result-ascend-910b2-decode-bf16",
        "ascend-910b2",
        "decode",
        "bf16",
        4,
        16384,
        (0, 2),
        optimised_only=False,
    ),
    # visualisation.md
    Case("ascend-910b2-decode-int8", "ascend-910b2", "decode", "int8", 4, 16384, (0, 2)),
    Case("h100-sxm-decode-fp8", "h100-sxm", "decode", "fp8", 4, 16384, (0, 2)),
    Case(
        "ascend-910b2-prefill-int8",
        "ascend-910b2",
        "prefill",
        "int8",
        1,
        4096,
        (0, 1),
        optimised_only=False,
    ),
)

FOOTPRINT = "footprint-llama3-70b-int8.png"


def expected_files() -> list[str]:
    """The file names this script writes (tests check each one)."""
    names = []
    for c in CASES:
        a, b = c.layers
        names.append(f"{c.stem}-compare-L{a}-{b}.png")
        if c.optimised_only:
            names.append(f"{c.stem}-optimised-L{a}-{b}.png")
    return [*names, FOOTPRINT]


def build_case(c: Case, out: Path) -> list[Path]:
    wl = pc.Workload(
        c.phase,
        batch=c.batch,
        context=c.context,
        tp=8,
        weight_dtype=c.dtype,
        act_dtype=c.dtype,
        kv_dtype=c.dtype,
    )
    g = pc.build_graph(MODEL, wl)
    r = pc.solve(g, c.hardware, time_limit_s=30, workers=2, seed=0)
    title = f"{MODEL} on {c.hardware}"
    a, b = c.layers
    paths = [
        pc.gantt(
            r, out / f"{c.stem}-compare-L{a}-{b}.png", layers=c.layers, compare=True, title=title
        )
    ]
    if c.optimised_only:
        paths.append(
            pc.gantt(r, out / f"{c.stem}-optimised-L{a}-{b}.png", layers=c.layers, title=title)
        )
    vanilla = r.baseline_makespan_s or r.makespan_s
    print(
        f"{c.stem}: vanilla {vanilla * 1e3:.4f} ms, greedy {(r.greedy_makespan_s or 0) * 1e3:.4f}"
        f" ms, optimised {r.makespan_s * 1e3:.4f} ms ({vanilla / r.makespan_s:.3f}x), "
        f"{r.status}, verified {r.verified}"
    )
    return paths


def build_footprint(out: Path) -> Path:
    rows = footprints(MODEL, [1, 2, 4, 8, 16, 32], dtype="int8", batch=8, context=16384)
    return write_figure(out / FOOTPRINT, footprint_figure(MODEL, rows))


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when it lies below it (no machine paths)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Regenerate the documentation's pictures.")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder (default docs/figures)")
    args = p.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    written: list[Path] = []
    for case in CASES:
        written += build_case(case, out)
    written.append(build_footprint(out))
    for path in written:
        print(f"wrote {_shown(path)}")
    print(f"{len(written)} figures in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
