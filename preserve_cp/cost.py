"""Die-cost model: what a device with a given L2 costs (for performance per cost).

    A(L2)   = logic_area_mm2 + L2_MB / sram_mb_per_mm2                   die area
    DPW     = π (d/2)² / A − π d / √(2 A)                                 dies per wafer [HP]
    Y       = (1 + A·D0 / α)^(−α)          (A in cm²)                      negative binomial
    die     = wafer_price_usd / (DPW · Y)
    device  = die + fixed_cost_usd         (HBM, package, board, test)

Defaults and their sources are in the hardware file's ``cost`` section; reference values
are in shared reference/hardware.md Part 2 (SRAM density, wafer prices, D0, yield models).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import InputError
from .hardware import Hardware
from .units import MB


@dataclass(frozen=True)
class CostModel:
    wafer_price_usd: float
    wafer_diameter_mm: float
    defect_density_per_cm2: float
    yield_alpha: float
    logic_area_mm2: float
    sram_mb_per_mm2: float
    fixed_cost_usd: float

    def die_area_mm2(self, l2_bytes: float) -> float:
        return self.logic_area_mm2 + l2_bytes / MB / self.sram_mb_per_mm2

    def dies_per_wafer(self, area_mm2: float) -> float:
        d = self.wafer_diameter_mm
        return math.pi * (d / 2) ** 2 / area_mm2 - math.pi * d / math.sqrt(2 * area_mm2)

    def yield_fraction(self, area_mm2: float) -> float:
        a_cm2 = area_mm2 / 100.0
        return (1 + a_cm2 * self.defect_density_per_cm2 / self.yield_alpha) ** -self.yield_alpha

    def die_cost_usd(self, l2_bytes: float) -> float:
        """Cost of one good die with ``l2_bytes`` of L2.

        Worked example (reference/hardware.md §2.4): 800 mm², N7 wafer $9,346, D0 0.1, α 3:
        DPW 64.8, yield 0.492, $293 per good die.

        >>> m = CostModel(9346, 300, 0.1, 3, 800, 1.0, 0)
        >>> round(m.dies_per_wafer(800), 1), round(m.yield_fraction(800), 3)
        (64.8, 0.492)
        >>> round(m.die_cost_usd(0))
        293
        """
        a = self.die_area_mm2(l2_bytes)
        dpw = self.dies_per_wafer(a)
        if dpw <= 0:
            raise InputError(
                f"die of {a:.0f} mm2 does not fit on a {self.wafer_diameter_mm:g} mm wafer"
            )
        return self.wafer_price_usd / (dpw * self.yield_fraction(a))

    def device_cost_usd(self, l2_bytes: float) -> float:
        return self.die_cost_usd(l2_bytes) + self.fixed_cost_usd


def cost_model(hw: Hardware) -> CostModel:
    """The cost model of ``hw`` (its YAML ``cost`` section)."""
    spec = hw.spec.cost if hw.spec is not None else None
    if spec is None:
        raise InputError(
            f"{hw.name}: cost: the hardware file has no cost section (needed for "
            "performance per cost)"
        )
    return CostModel(
        spec.wafer_price_usd,
        spec.wafer_diameter_mm,
        spec.defect_density_per_cm2,
        spec.yield_alpha,
        spec.logic_area_mm2,
        spec.sram_mb_per_mm2,
        spec.fixed_cost_usd,
    )
