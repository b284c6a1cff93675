"""Pipeline parallelism: one graph per stage, solved each, and the step time of the pipeline.

A ``pp``-stage deployment splits the layers into contiguous stages (:func:`graph.stage_layers`);
stage ``s`` runs on its own ``tp`` devices, stage 0 with the embedding, the last with the final
norm and LM head, and every stage but the first starts by receiving the previous stage's
activations (``pp.recv``, a ``p2p`` op: over the node links, or across nodes when the stages sit
in different nodes). A decode step of ``batch`` sequences is cut into ``microbatches`` of
``batch / microbatches`` sequences that follow each other through the stages (GPipe-style fill
and drain), so with stage times ``t_s`` for one micro-batch the step takes

    sum_s t_s + (microbatches - 1) x max_s t_s

(the first micro-batch crosses every stage; each further one leaves the slowest stage one
``max_s t_s`` later). Prefetch plans are solved per stage; the pipeline's step time is
computed for the vanilla and the optimised plans alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .graph import build_graph
from .hardware import Hardware, load_hardware
from .models import ModelConfig, load_model
from .workload import Workload


def pipeline_step_s(stage_times: list[float], microbatches: int) -> float:
    """Step time of ``microbatches`` micro-batches through stages taking ``stage_times`` each.

    >>> pipeline_step_s([2.0, 3.0], 4)  # 2 + 3 + 3 x 3
    14.0
    >>> pipeline_step_s([5.0], 1)
    5.0
    """
    return sum(stage_times) + (microbatches - 1) * max(stage_times)


@dataclass(frozen=True)
class PipelineResult:
    """Per-stage solve results and the pipeline step times (seconds)."""

    stages: list[Any]  # solve.Result per stage, for one micro-batch
    microbatches: int
    vanilla_step_s: float
    optimised_step_s: float
    batch: int = 1  # sequences (decode) or prompts (prefill) of the whole step
    devices: int = 1  # tp x pp
    phase: str = "decode"

    @property
    def speedup(self) -> float:
        return self.vanilla_step_s / self.optimised_step_s

    def to_dict(self) -> dict[str, Any]:
        """The ``pipeline`` object of ``solve --pp N --json``; for decode, the pipeline's
        ``tpot_s`` (its step) and tokens/s for the deployment and per device (the stages'
        own ``serving`` objects describe one stage, not the pipeline)."""
        out: dict[str, Any] = {
            "pp": len(self.stages),
            "microbatches": self.microbatches,
            "devices": self.devices,
            "vanilla_step_s": self.vanilla_step_s,
            "optimised_step_s": self.optimised_step_s,
            "speedup": self.speedup,
            "stage_vanilla_s": [r.baseline_makespan_s or r.makespan_s for r in self.stages],
            "stage_optimised_s": [r.makespan_s for r in self.stages],
        }
        if self.phase == "decode":
            tps = self.batch / self.optimised_step_s
            out.update(
                tpot_s=self.optimised_step_s,
                tokens_per_s=tps,
                tokens_per_s_per_device=tps / self.devices,
                vanilla_tokens_per_s=self.batch / self.vanilla_step_s,
            )
        return out


def stage_workloads(wl: Workload) -> list[Workload]:
    """The workload of each stage for one micro-batch (``batch / microbatches`` sequences).

    >>> [w.stage for w in stage_workloads(Workload("decode", 8, 1024, 8, pp=2, microbatches=4))]
    [0, 1]
    >>> stage_workloads(Workload("decode", 8, 1024, 8, pp=2, microbatches=4))[0].batch
    2
    """
    b = wl.batch // wl.microbatches
    return [dataclasses.replace(wl, batch=b, stage=s, microbatches=1) for s in range(wl.pp)]


def solve_pipeline(
    model: ModelConfig | str, wl: Workload, hw: Hardware | str, **solve_kw: Any
) -> PipelineResult:
    """Solve every stage of ``wl`` (each within the time limit given, split evenly) and the
    pipeline step time of the vanilla and optimised plans."""
    from .solve import solve

    m, h = load_model(model), load_hardware(hw)
    stages = stage_workloads(wl)
    if "time_limit_s" in solve_kw:
        solve_kw = {**solve_kw, "time_limit_s": solve_kw["time_limit_s"] / len(stages)}
    results = [solve(build_graph(m, w), h, **solve_kw) for w in stages]
    return PipelineResult(
        results,
        wl.microbatches,
        pipeline_step_s([r.baseline_makespan_s or r.makespan_s for r in results], wl.microbatches),
        pipeline_step_s([r.makespan_s for r in results], wl.microbatches),
        batch=wl.batch,
        devices=wl.devices,
        phase=wl.phase,
    )
