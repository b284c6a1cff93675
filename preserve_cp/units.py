"""Unit conversions, all in one place.

Public numbers are SI with the unit in the name (``*_bytes``, ``*_s``, ``*_flops``,
``*_bytes_per_s``). YAML files use friendlier units, always named in the key; they are
converted here, once, on load. Decimal (kB, MB, GB, TB) and binary (KiB, MiB, GiB)
prefixes never share a name.
"""

from __future__ import annotations

KB = 1e3
MB = 1e6
GB = 1e9
TB = 1e12
KIB = 1024
MIB = 1024**2
GIB = 1024**3

US = 1e-6
NS = 1e-9

TFLOPS = 1e12

#: bytes per element for each supported dtype. The 4-bit float formats carry their block
#: scales: ``fp4`` is OCP MXFP4 (E2M1 elements, one 8-bit E8M0 scale per 32: 4.25 bits),
#: ``nvfp4`` NVIDIA's NVFP4 (E2M1, one FP8 E4M3 scale per 16: 4.5 bits; its one FP32
#: per-tensor scale is negligible). Block-scaled FP8 (DeepSeek-V3's 128 x 128 blocks: one FP32
#: per 16,384 weights, +0.02 %) counts as ``fp8``.
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4,
    "fp16": 2,
    "bf16": 2,
    "fp8": 1,
    "int8": 1,
    "int4": 0.5,
    "fp4": 4.25 / 8,
    "nvfp4": 4.5 / 8,
}

#: when a device has no matrix peak for a dtype, the formats its kernels fall back to, in
#: order (weights are converted on the fly and the GEMM runs at that format's peak)
COMPUTE_FALLBACK: dict[str, tuple[str, ...]] = {
    "fp4": ("nvfp4", "fp8", "bf16", "fp16"),
    "nvfp4": ("fp4", "fp8", "bf16", "fp16"),
    "int4": ("int8", "bf16", "fp16"),
    "fp8": ("bf16", "fp16"),
    "int8": ("bf16", "fp16"),
    "fp16": ("bf16", "fp32"),
    "bf16": ("fp16", "fp32"),
}

#: the key suffixes a YAML number may carry, and the factor to SI
SUFFIX_TO_SI: dict[str, float] = {
    "_gb": GB,
    "_gib": GIB,
    "_mb": MB,
    "_mib": MIB,
    "_kb": KB,
    "_kib": KIB,
    "_tb_per_s": TB,
    "_gb_per_s": GB,
    "_us": US,
    "_ns": NS,
    "_tflops": TFLOPS,
}


def us_to_s(value_us: float) -> float:
    """Microseconds to seconds.

    >>> us_to_s(10.0)
    1e-05
    """
    return value_us / 1e6


def s_to_us(value_s: float) -> float:
    """Seconds to microseconds (the Chrome trace unit).

    >>> s_to_us(2.5e-06)
    2.5
    """
    return value_s * 1e6


def dtype_bytes(dtype: str) -> float:
    """Bytes per element of ``dtype``.

    >>> dtype_bytes("bf16")
    2
    """
    return DTYPE_BYTES[dtype]
