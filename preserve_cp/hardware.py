"""Hardware description: YAML (friendly units in the keys) -> validated, SI :class:`Hardware`.

A hardware file describes one device and the node it sits in. Every number has its unit in
its key (``hbm_bandwidth_tb_per_s``, ``l2_capacity_mib``); they are converted to SI once, here.
Each file cites its sources and lists in ``uncertain`` the fields whose value is an estimate.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from . import units
from ._yaml import (
    data_dir,
    finite_nonneg,
    finite_positive,
    fraction,
    not_bool,
    read_yaml_mapping,
    resolve_named_file,
    share,
    validate,
)
from .errors import InputError

Pos = Annotated[float, BeforeValidator(not_bool), AfterValidator(finite_positive)]
NonNeg = Annotated[float, BeforeValidator(not_bool), AfterValidator(finite_nonneg)]
Frac = Annotated[float, BeforeValidator(not_bool), AfterValidator(fraction)]
Share = Annotated[float, BeforeValidator(not_bool), AfterValidator(share)]
Dtype = Literal["fp16", "bf16", "fp8", "int8", "fp4", "nvfp4"]
Topology = Literal["ring", "full_mesh", "switch", "torus_2d", "torus_3d"]
#: where op times come from: the roofline (with calibration), or measured kernel tables where
#: the device has them (preserve_cp/measured.py; ops without a table entry keep the roofline)
TIMINGS = ("roofline", "measured")

HARDWARE_DIR = data_dir("hardware")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class SourceSpec(_Strict):
    tag: str = Field(min_length=1, description="Short label of the source, e.g. `NV-H100`.")
    url: str = Field(min_length=1, description="Where the numbers can be checked.")
    used_for: str = Field("", description="Which values this source supports.")


class ComputeSpec(_Strict):
    matmul_tflops: dict[Dtype, Pos] = Field(
        min_length=1,
        description="Dense matrix-unit peak per dtype (GEMM and attention ops): the precisions "
        "the device computes natively. A GEMM in a dtype missing here runs in the first "
        "fallback the device has (fp4/nvfp4 -> fp8 -> bf16/fp16; int8 -> bf16/fp16: weights "
        "converted on the fly) at that format's peak; with none of them it is an error.",
    )
    vector_tflops: Pos = Field(
        description="Vector-unit peak (norm, elementwise, embedding and other non-matrix ops)."
    )
    matmul_efficiency: Frac = Field(
        0.7, description="Share of the matrix peak that ops achieve (multiplies the peak)."
    )
    vector_efficiency: Frac = Field(0.5, description="Share of the vector peak that ops achieve.")
    kernel_overhead_us: NonNeg = Field(
        2.0,
        description="Fixed launch cost added to every compute op (not to collectives) when "
        "the step runs as a captured graph (CUDA graphs, compiled).",
    )
    kernel_overhead_eager_us: NonNeg | None = Field(
        None,
        description="Launch and dispatch cost per compute op when the step runs eagerly "
        "(no graph capture); none: `kernel_overhead_us`.",
    )
    matmul_full_rows: NonNeg = Field(
        0.0,
        description="GEMM efficiency vs shape: a GEMM over M < this rows (tokens) reaches "
        "`matmul_efficiency` x (M / this) ^ `matmul_rows_exponent`; 0: no shape effect.",
    )
    matmul_rows_exponent: Frac = Field(
        0.5, description="Exponent of the small-M efficiency law (see `matmul_full_rows`)."
    )
    attention_half_context: NonNeg = Field(
        0.0,
        description="Attention efficiency vs context: an attention op over C tokens runs at "
        "C / (C + this) of its compute and HBM rates; 0: no context effect.",
    )
    step_overhead_us: dict[str, NonNeg] = Field(
        default_factory=dict,
        description="Per-step cost of sampling and host-side work (scheduling, input "
        "preparation) by software stack name, added once per step after the LM head; "
        "key `default` for a stack not named; none: 0.",
    )


class MemorySpec(_Strict):
    hbm_capacity_gb: Pos | None = Field(
        None, description="HBM per device; give exactly one of `hbm_capacity_gb` / `_gib`."
    )
    hbm_capacity_gib: Pos | None = Field(
        None, description="HBM per device; give exactly one of `hbm_capacity_gb` / `_gib`."
    )
    hbm_bandwidth_tb_per_s: Pos = Field(description="Peak HBM bandwidth per device.")
    hbm_efficiency: Frac = Field(
        0.8, description="Share of the HBM peak that ops and prefetches achieve together."
    )
    hbm_half_mib: NonNeg = Field(
        0.0,
        description="Achieved HBM bandwidth vs transfer size: an op moving S bytes reaches "
        "peak x efficiency x S / (S + this); 0: no size effect.",
    )
    l2_capacity_mb: Pos | None = Field(
        None, description="On-chip L2 per device; give exactly one of `l2_capacity_mb` / `_mib`."
    )
    l2_capacity_mib: Pos | None = Field(
        None, description="On-chip L2 per device; give exactly one of `l2_capacity_mb` / `_mib`."
    )
    l2_bandwidth_tb_per_s: Pos = Field(
        description="Rate at which an op reads bytes it finds in L2 (used as is, no efficiency)."
    )
    l2_prefetch_fraction: Frac = Field(
        0.75,
        description="Share of L2 that prefetched bytes may hold at once (the usable L2).",
    )
    prefetch_share_during_ops: Share = Field(
        0.0,
        description="Share of the HBM bandwidth a running compute op leaves unused that a "
        "concurrent prefetch can take (collectives and idle time leave all of it); 0: "
        "prefetches move only while no compute kernel runs (the PRESERVE premise: HBM is "
        "free during collectives), 1: the op's average rate is all it uses (optimistic). "
        "See docs/fidelity.md.",
    )
    l2_hit_law: Literal["sum", "max"] = Field(
        "max",
        description="How an op that finds x of its H bytes in L2 takes them: `max`, both at "
        "once, max((H - x) / HBM, x / L2); `sum`, one after the other, (H - x) / HBM + x / L2 "
        "-- what the one public measurement shows (a 50 MB projection on an RTX PRO 6000 "
        "Blackwell: 28.8 us from device memory, 11 us from L2, 17.3 us with a third from "
        "device memory; docs/fidelity.md). `max` is the optimistic one.",
    )
    l2_eviction: Literal["none", "random"] = Field(
        "none",
        description="Whether the ops' own traffic evicts prefetched lines before their reader "
        "runs: `none`, they are protected (a persisting-L2 set-aside, or the PRESERVE "
        "premise); `random`, random replacement over the whole L2: a prefetched line "
        "survives V bytes of the ops' HBM traffic with probability exp(-V / L2 size). "
        "See docs/fidelity.md.",
    )
    prefetch_bandwidth_tb_per_s: Pos | None = Field(
        None,
        description="Own rate limit of the prefetch engine; none: the achievable HBM "
        "bandwidth (peak x efficiency), which also caps it when given.",
    )

    @model_validator(mode="after")
    def _one_of_each(self) -> MemorySpec:
        for stem in ("hbm_capacity", "l2_capacity"):
            given = [
                k
                for k in (f"{stem}_gb", f"{stem}_gib", f"{stem}_mb", f"{stem}_mib")
                if getattr(self, k, None) is not None
            ]
            if len(given) != 1:
                unit = "gb or gib" if stem == "hbm_capacity" else "mb or mib"
                raise ValueError(
                    f"exactly one of {stem}_{unit.replace(' or ', ' / ' + stem + '_')}"
                )
        return self


class InterconnectSpec(_Strict):
    topology: Topology = Field(
        description="How the devices of a node connect; sets the latency steps of a collective."
    )
    link_bandwidth_gb_per_s: Pos = Field(
        description="Per-device, one-direction bandwidth into the fabric (the β of α-β); on a "
        "full_mesh, the sum of the device's links to all other devices of the node, of which a "
        "group of n devices uses the n - 1 links to its members."
    )
    link_efficiency: Frac = Field(0.8, description="Share of the link bandwidth achieved.")
    collective_latency_us: NonNeg = Field(
        8.0, description="Fixed start-up latency of every collective (the α of α-β)."
    )
    hop_latency_us: NonNeg = Field(
        0.5, description="Latency added per step of a collective's algorithm."
    )
    rank_latency_us: NonNeg = Field(
        0.0,
        description="Start-up latency added per rank beyond the first (library collectives "
        "whose set-up grows with the group, e.g. NCCL).",
    )
    custom_allreduce_latency_us: NonNeg | None = Field(
        None,
        description="Latency of a custom one-shot/two-shot allreduce kernel (runs that "
        "choose `allreduce: custom`); none: `collective_latency_us`.",
    )
    custom_one_shot_max_kib: NonNeg = Field(
        256.0,
        description="Largest message the custom allreduce sends one-shot (every rank reads "
        "every peer's buffer); larger ones go two-shot.",
    )
    custom_allreduce_max_kib: NonNeg = Field(
        8192.0,
        description="Largest message the custom allreduce handles; larger ones fall back to "
        "the library (α-β) allreduce.",
    )
    devices_per_node: Annotated[int, BeforeValidator(not_bool)] = Field(
        ge=1,
        le=1_000_000,
        description="Devices in one node; the collective group size when a graph gives no tp.",
    )


class ScaleOutSpec(_Strict):
    """The network between nodes (absent: the device is priced within one node only)."""

    nic_bandwidth_gb_per_s: Pos = Field(
        description="One NIC's bandwidth, one direction (400 Gb/s InfiniBand NDR: 50)."
    )
    nics_per_node: Annotated[int, BeforeValidator(not_bool)] = Field(
        ge=1,
        le=1_000_000,
        description="Scale-out NICs per node (rail-optimised: one per device); a device's "
        "share of the node's NICs is nics_per_node / devices_per_node.",
    )
    nic_efficiency: Frac = Field(
        0.88, description="Share of the NIC bandwidth a collective achieves."
    )
    collective_latency_us: NonNeg = Field(
        20.0,
        description="Start-up latency of the inter-node part of a collective (the α across "
        "nodes; NCCL's small-message allreduce between two nodes takes ~20 µs).",
    )
    all_to_all_latency_us: NonNeg | None = Field(
        None,
        description="Start-up latency of a low-latency all-to-all (MoE dispatch/combine, "
        "DeepEP's low-latency kernels); none: collective_latency_us.",
    )
    topology: Literal["rail_optimized", "fat_tree", "single_switch"] = Field(
        "rail_optimized", description="Scale-out fabric, for people (not used in the model)."
    )


class CostSpec(_Strict):
    """Die-cost model parameters (see cost.py); every value should cite a source."""

    process: str = Field("", description="Process node, for people (not used in the model).")
    wafer_price_usd: Pos = Field(description="Price of one processed wafer.")
    wafer_diameter_mm: Pos = Field(300.0, description="Wafer diameter.")
    defect_density_per_cm2: Pos = Field(description="Defect density D0 of the yield model.")
    yield_alpha: Pos = Field(
        3.0, description="Clustering parameter α of the negative-binomial yield model."
    )
    logic_area_mm2: Pos = Field(description="Die area without the L2 SRAM.")
    sram_mb_per_mm2: Pos = Field(description="L2 SRAM density: MB of L2 per mm² of die.")
    fixed_cost_usd: NonNeg = Field(
        description="Cost per device besides the die (HBM, package, board, test)."
    )


class MeasuredSpec(_Strict):
    """Where measured kernel times of this device come from (used with ``--timing measured``).

    The tables are those NVIDIA ships in aiconfigurator-core (Apache-2.0; ``pip install
    "preserve-cp[measured]"``): ``aiconfigurator_core/systems/data/<system>/<op>/<backend>/
    <version>/*.parquet``, per-kernel latencies measured on the GPU (see docs/fidelity.md)."""

    system: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$",
        description="aiconfigurator-core system folder of this device, e.g. `h100_sxm`.",
    )
    backend: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$",
        description="Software stack whose kernels were measured: `trtllm`, `vllm` or `sglang`.",
    )
    version: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$",
        description="Version folder of that backend's tables, e.g. `1.3.0rc20`.",
    )
    stacks: dict[
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")],
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.+-]+/[A-Za-z0-9_.+-]+$")],
    ] = Field(
        default_factory=dict,
        description="Workload stack -> `backend/version` of the tables that time its kernels "
        "instead (e.g. `vllm: vllm/0.24.0`): a step run by that stack is looked up in its own "
        "backend's tables; any other stack uses `backend`/`version`.",
    )
    default: bool = Field(
        False,
        description="Time ops by these tables unless the run asks otherwise (`--timing "
        "roofline`); false: the roofline unless the run asks for `--timing measured`.",
    )


class CalibrationSpec(_Strict):
    """What was fitted to published measurements, on which points, and when (see calibrate.py)."""

    date: str = Field(min_length=1, description="Day of the fit, ISO format.")
    set: str = Field(min_length=1, description="Measurement file the points come from.")
    split: str = Field("train", description="The subset fitted (never the held-out points).")
    points: list[str] = Field(min_length=1, description="Ids of the points fitted.")
    fitted: dict[str, NonNeg] = Field(
        min_length=1,
        description="Dotted field path -> fitted value; replaces that field when the file "
        "is loaded (the value written in its section stays the prior).",
    )
    train_median_abs_error: dict[str, NonNeg] = Field(
        default_factory=dict,
        description="Median |relative error| on the fitted points, `before` and `after`.",
    )


class HardwareSpec(_Strict):
    name: str = Field(min_length=1, description="Device name shown in outputs.")
    vendor: str = Field("", description="Vendor, for people.")
    description: str = Field("", description="One-paragraph description, for people.")
    sources: list[SourceSpec] = Field(
        min_length=1, description="Where the numbers come from (at least one)."
    )
    uncertain: list[str] = Field(
        default_factory=list,
        description="Dotted paths of fields whose value is an estimate, e.g. "
        "`memory.l2_bandwidth_tb_per_s`; each must name an existing field.",
    )
    compute: ComputeSpec = Field(description="Compute peaks and efficiencies.")
    memory: MemorySpec = Field(description="HBM and L2.")
    interconnect: InterconnectSpec = Field(description="The node's fabric (collectives).")
    scale_out: ScaleOutSpec | None = Field(
        None,
        description="The network between nodes; without it a collective over more devices "
        "than `interconnect.devices_per_node` is an error.",
    )
    power_w: Pos | None = Field(None, description="Board power, for people (not used).")
    cost: CostSpec | None = Field(
        None, description="Die-cost model, needed only for performance per cost."
    )
    calibration: CalibrationSpec | None = Field(
        None, description="Values fitted to published measurements (applied on load)."
    )
    measured: MeasuredSpec | None = Field(
        None,
        description="Measured per-kernel times (aiconfigurator-core tables) that replace the "
        "roofline of the GEMMs and attention ops they cover when the timing is `measured` "
        "(`--timing measured`); none: the roofline only.",
    )

    @model_validator(mode="after")
    def _paths_name_fields(self) -> HardwareSpec:
        for path in self.uncertain:
            if not _has_path(self, path, numeric=False):
                raise ValueError(f"field paths that exist (uncertain: {path!r} does not)")
        if self.calibration is not None:
            for path in self.calibration.fitted:
                if not _has_path(self, path, numeric=True):
                    raise ValueError(
                        f"numeric field paths (calibration.fitted: {path!r} is not one)"
                    )
        return self


_MAPPING_FIELDS = {"compute.step_overhead_us"}


def _has_path(spec: BaseModel, path: str, *, numeric: bool) -> bool:
    """Whether dotted ``path`` names a field of ``spec`` (for ``numeric``: a number field, or
    a new key of a stack-keyed mapping such as ``compute.step_overhead_us.vllm``)."""
    head, _, last = path.rpartition(".")
    if numeric and head in _MAPPING_FIELDS and last:
        return True
    node: Any = spec
    for part in path.split("."):
        if isinstance(node, BaseModel) and part in type(node).model_fields:
            node = getattr(node, part)
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    if not numeric:
        return True
    if node is None:  # an optional field left unset: its type is checked when the file is
        return True  # validated again with the fitted values applied (load_hardware)
    return isinstance(node, int | float) and not isinstance(node, bool)


def apply_calibration(data: dict[str, Any], fitted: dict[str, float]) -> dict[str, Any]:
    """A copy of a hardware mapping with each dotted path of ``fitted`` set to its value."""
    out = copy.deepcopy(data)
    for path, value in fitted.items():
        node = out
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


@dataclass(frozen=True)
class MeasuredSource:
    """The measured-kernel tables of a device: aiconfigurator-core's system, backend and
    version folders (the hardware file's ``measured`` section), and per workload stack the
    (stack, backend, version) of the tables that time that stack's kernels instead."""

    system: str
    backend: str
    version: str
    stacks: tuple[tuple[str, str, str], ...] = ()

    def for_stack(self, stack: str) -> MeasuredSource:
        """The tables for a step run by ``stack`` (its own backend's, where the file names
        one; else the default).

        >>> h100 = load_hardware("h100-sxm").measured
        >>> h100.for_stack("vllm").backend, h100.for_stack("gpt-fast").backend
        ('vllm', 'trtllm')
        """
        for name, backend, version in self.stacks:
            if name == stack:
                return MeasuredSource(self.system, backend, version)
        return MeasuredSource(self.system, self.backend, self.version)

    def sources(self) -> tuple[MeasuredSource, ...]:
        """The default tables and every stack's, each once."""
        out = [self.for_stack("")]
        for name, _, _ in self.stacks:
            if (src := self.for_stack(name)) not in out:
                out.append(src)
        return tuple(out)


@dataclass(frozen=True)
class Hardware:
    """One device of a tensor-parallel node, in SI units.

    Examples
    --------
    >>> hw = load_hardware("ascend-910b2")
    >>> hw.l2_capacity_bytes == 192 * 1024**2
    True
    >>> round(hw.usable_l2_bytes / 1e6, 1)
    151.0
    """

    name: str
    matmul_flops_per_s: dict[str, float]
    vector_flops_per_s: float
    matmul_efficiency: float
    vector_efficiency: float
    kernel_overhead_s: float
    hbm_capacity_bytes: float
    hbm_bandwidth_bytes_per_s: float
    hbm_efficiency: float
    l2_capacity_bytes: float
    l2_bandwidth_bytes_per_s: float
    l2_prefetch_fraction: float
    prefetch_bandwidth_bytes_per_s: float | None
    topology: str
    link_bandwidth_bytes_per_s: float
    link_efficiency: float
    collective_latency_s: float
    hop_latency_s: float
    devices_per_node: int
    kernel_overhead_eager_s: float | None = None
    matmul_full_rows: float = 0.0
    matmul_rows_exponent: float = 0.5
    attention_half_context: float = 0.0
    step_overhead_s: dict[str, float] = dataclasses.field(default_factory=dict)
    hbm_half_bytes: float = 0.0
    prefetch_share_during_ops: float = 0.0
    l2_hit_law: str = "max"
    l2_eviction: str = "none"
    rank_latency_s: float = 0.0
    custom_allreduce_latency_s: float | None = None
    custom_one_shot_max_bytes: float = 256 * 1024.0
    custom_allreduce_max_bytes: float = 8 * 1024.0**2
    scale_out_bytes_per_s: float | None = None
    scale_out_latency_s: float = 0.0
    all_to_all_latency_s: float | None = None
    measured: MeasuredSource | None = None
    timing: str = "roofline"  # one of TIMINGS
    calibrated: bool = False
    source_file: str = ""
    uncertain: tuple[str, ...] = ()
    spec: HardwareSpec | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def usable_l2_bytes(self) -> float:
        """L2 bytes that prefetches may hold at once."""
        return self.l2_capacity_bytes * self.l2_prefetch_fraction

    @property
    def effective_hbm_bytes_per_s(self) -> float:
        """Achievable HBM bandwidth (peak x efficiency)."""
        return self.hbm_bandwidth_bytes_per_s * self.hbm_efficiency

    @property
    def effective_prefetch_bytes_per_s(self) -> float:
        """Peak rate of the prefetch engine; never above achievable HBM bandwidth."""
        cap = self.effective_hbm_bytes_per_s
        if self.prefetch_bandwidth_bytes_per_s is None:
            return cap
        return min(cap, self.prefetch_bandwidth_bytes_per_s)

    def launch_overhead_s(self, graph_capture: bool = True) -> float:
        """Fixed cost per compute op, with or without graph capture."""
        if graph_capture or self.kernel_overhead_eager_s is None:
            return self.kernel_overhead_s
        return self.kernel_overhead_eager_s

    def step_overhead_for(self, stack: str = "") -> float:
        """Per-step sampling and host cost of software ``stack`` (``default`` otherwise)."""
        return self.step_overhead_s.get(stack, self.step_overhead_s.get("default", 0.0))

    def with_timing(self, timing: str) -> Hardware:
        """A copy whose ops are timed by ``timing``: ``roofline`` (the default) or
        ``measured`` (kernel tables where the device has them, the roofline elsewhere).

        >>> load_hardware("h100-sxm").with_timing("measured").timing
        'measured'
        """
        if timing not in TIMINGS:
            raise InputError(
                f"{self.name}: timing: expected one of {', '.join(TIMINGS)}, found {timing!r}"
            )
        return dataclasses.replace(self, timing=timing)

    def with_overrides(self, **changes: Any) -> Hardware:
        """A copy with SI fields replaced (for sweeps), re-checked for sign.

        >>> load_hardware("h100-sxm").with_overrides(l2_capacity_bytes=100e6).l2_capacity_bytes
        100000000.0
        """
        known = {f.name for f in dataclasses.fields(self)}
        for key, value in changes.items():
            if key not in known:
                raise InputError(f"{self.name}: override {key!r}: unknown hardware field")
            if isinstance(value, int | float) and not value >= 0:
                raise InputError(f"{self.name}: override {key}: expected >= 0, found {value!r}")
        return dataclasses.replace(self, **changes)


def _from_spec(spec: HardwareSpec, source: str, calibrated: bool = False) -> Hardware:
    mem, comp, net = spec.memory, spec.compute, spec.interconnect
    hbm = (mem.hbm_capacity_gb or 0) * units.GB + (mem.hbm_capacity_gib or 0) * units.GIB
    l2 = (mem.l2_capacity_mb or 0) * units.MB + (mem.l2_capacity_mib or 0) * units.MIB
    pf = mem.prefetch_bandwidth_tb_per_s
    return Hardware(
        name=spec.name,
        matmul_flops_per_s={k: v * units.TFLOPS for k, v in comp.matmul_tflops.items()},
        vector_flops_per_s=comp.vector_tflops * units.TFLOPS,
        matmul_efficiency=comp.matmul_efficiency,
        vector_efficiency=comp.vector_efficiency,
        kernel_overhead_s=comp.kernel_overhead_us * units.US,
        hbm_capacity_bytes=hbm,
        hbm_bandwidth_bytes_per_s=mem.hbm_bandwidth_tb_per_s * units.TB,
        hbm_efficiency=mem.hbm_efficiency,
        l2_capacity_bytes=l2,
        l2_bandwidth_bytes_per_s=mem.l2_bandwidth_tb_per_s * units.TB,
        l2_prefetch_fraction=mem.l2_prefetch_fraction,
        prefetch_bandwidth_bytes_per_s=None if pf is None else pf * units.TB,
        topology=net.topology,
        link_bandwidth_bytes_per_s=net.link_bandwidth_gb_per_s * units.GB,
        link_efficiency=net.link_efficiency,
        collective_latency_s=net.collective_latency_us * units.US,
        hop_latency_s=net.hop_latency_us * units.US,
        devices_per_node=net.devices_per_node,
        kernel_overhead_eager_s=(
            None
            if comp.kernel_overhead_eager_us is None
            else comp.kernel_overhead_eager_us * units.US
        ),
        matmul_full_rows=comp.matmul_full_rows,
        matmul_rows_exponent=comp.matmul_rows_exponent,
        attention_half_context=comp.attention_half_context,
        step_overhead_s={k: v * units.US for k, v in comp.step_overhead_us.items()},
        hbm_half_bytes=mem.hbm_half_mib * units.MIB,
        prefetch_share_during_ops=mem.prefetch_share_during_ops,
        l2_hit_law=mem.l2_hit_law,
        l2_eviction=mem.l2_eviction,
        rank_latency_s=net.rank_latency_us * units.US,
        custom_allreduce_latency_s=(
            None
            if net.custom_allreduce_latency_us is None
            else net.custom_allreduce_latency_us * units.US
        ),
        custom_one_shot_max_bytes=net.custom_one_shot_max_kib * units.KIB,
        custom_allreduce_max_bytes=net.custom_allreduce_max_kib * units.KIB,
        scale_out_bytes_per_s=(
            None
            if spec.scale_out is None
            else spec.scale_out.nic_bandwidth_gb_per_s
            * units.GB
            * spec.scale_out.nic_efficiency
            * spec.scale_out.nics_per_node
            / net.devices_per_node
        ),
        scale_out_latency_s=0.0
        if spec.scale_out is None
        else spec.scale_out.collective_latency_us * units.US,
        all_to_all_latency_s=(
            None
            if spec.scale_out is None or spec.scale_out.all_to_all_latency_us is None
            else spec.scale_out.all_to_all_latency_us * units.US
        ),
        measured=(
            None
            if spec.measured is None
            else MeasuredSource(
                spec.measured.system,
                spec.measured.backend,
                spec.measured.version,
                tuple(
                    (stack, *bv.split("/", 1))  # type: ignore[misc]
                    for stack, bv in sorted(spec.measured.stacks.items())
                ),
            )
        ),
        calibrated=calibrated,
        source_file=source,
        uncertain=tuple(spec.uncertain),
        spec=spec,
        timing="measured" if spec.measured is not None and spec.measured.default else "roofline",
    )


def load_hardware(
    name_or_path: str | Path | Hardware, *, calibrated: bool = True, timing: str | None = None
) -> Hardware:
    """Load a shipped device by NAME or a user's YAML by path.

    A file with a ``calibration`` section has its fitted values applied unless
    ``calibrated=False`` (then the values written in the sections, the priors, are used).
    ``timing`` (``roofline`` or ``measured``) sets :attr:`Hardware.timing`; None keeps the
    file's (``roofline``, unless its ``measured`` section says ``default: true``).

    Examples
    --------
    >>> hw = load_hardware("h100-sxm")
    >>> hw.hbm_bandwidth_bytes_per_s
    3350000000000.0
    >>> load_hardware("no-such-device")
    Traceback (most recent call last):
    ...
    preserve_cp.errors.InputError: unknown hardware 'no-such-device': expected one of ...
    """
    if isinstance(name_or_path, Hardware):
        return name_or_path if timing is None else name_or_path.with_timing(timing)
    path = resolve_named_file(str(name_or_path), HARDWARE_DIR, "hardware")
    data = read_yaml_mapping(path)
    # errors name a shipped file by its file name, a user's by its path
    first = str(path.name if path.parent == HARDWARE_DIR else path)
    hw = hardware_from_mapping(data, hardware_label(path), calibrated=calibrated, where=first)
    return hw if timing is None else hw.with_timing(timing)


def hardware_from_mapping(
    data: dict[str, Any], source: str, *, calibrated: bool = True, where: str = ""
) -> Hardware:
    """Validate a hardware mapping (as read from YAML) and apply its calibration section."""
    spec = validate(HardwareSpec, data, where or source)
    if calibrated and spec.calibration is not None:
        merged = apply_calibration(data, spec.calibration.fitted)
        spec = validate(HardwareSpec, merged, f"{source} (with its calibration applied)")
        return _from_spec(spec, source, calibrated=True)
    return _from_spec(spec, source)


def hardware_label(path: Path) -> str:
    """How outputs name a hardware file: ``hardware/NAME.yaml`` when shipped, else its path."""
    return f"hardware/{path.name}" if path.resolve().parent == HARDWARE_DIR else str(path)


def list_hardware() -> list[str]:
    """Names of the shipped hardware files.

    >>> "ascend-910b2" in list_hardware()
    True
    """
    return sorted(p.stem for p in HARDWARE_DIR.glob("*.yaml"))
