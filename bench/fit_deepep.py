"""Fit the low-latency all-to-all model (costs.all_to_all_low_latency_parts) to DeepEP's
published low-latency table, and check it on the rows not used in the fit.

Source: github.com/deepseek-ai/DeepEP docs/legacy.md (also shared reference/moe.md 2): H800 with
one ConnectX-7 400 Gb/s InfiniBand NIC per GPU (~50 GB/s), 8 GPUs per node, 128 tokens per rank,
hidden 7168, top-8, fp8 dispatch (with one fp32 scale per 128 elements) and bf16 combine.

Model: ``t = α + max(local / B_local, remote / B_net)`` where every rank sends
``S = tokens x top_k x hidden x bytes`` and the share ``min(1, 8 / EP)`` of it stays in its node.
Training rows EP 8, 32, 128 (every other row, fixed before fitting); held out EP 16, 64, 256.
The fit minimises the squared relative error (grid over B_local, B_net; α in closed form).

Usage: python bench/fit_deepep.py
"""

from __future__ import annotations

import numpy as np

#: EP size: (dispatch µs, combine µs), DeepEP low-latency kernels (legacy.md)
TABLE = {
    8: (77.0, 114.0),
    16: (118.0, 195.0),
    32: (155.0, 273.0),
    64: (173.0, 314.0),
    128: (192.0, 369.0),
    256: (194.0, 360.0),
}
TRAIN = (8, 32, 128)
TOKENS, TOP_K, HIDDEN, PER_NODE = 128, 8, 7168, 8
DISPATCH_BYTES = TOKENS * TOP_K * (HIDDEN + HIDDEN / 128 * 4)  # fp8 + fp32 scale per 128
COMBINE_BYTES = TOKENS * TOP_K * HIDDEN * 2  # bf16


def rows(eps):
    """(ep, bytes, measured µs) for dispatch and combine at each ep."""
    out = []
    for ep in eps:
        d, c = TABLE[ep]
        out += [(ep, DISPATCH_BYTES, d), (ep, COMBINE_BYTES, c)]
    return out


def predict(alpha_us: float, b_local: float, b_net: float, ep: int, size: float) -> float:
    """Model time (µs) with bandwidths in bytes/s."""
    local = size * min(1.0, PER_NODE / ep)
    remote = size - local
    return alpha_us + max(local / b_local, remote / b_net) * 1e6


def fit() -> tuple[float, float, float]:
    """(α µs, B_local, B_net bytes/s) minimising squared relative error on the training rows."""
    train = rows(TRAIN)
    ep = np.array([r[0] for r in train], float)
    size = np.array([r[1] for r in train])
    t = np.array([r[2] for r in train])
    local = size * np.minimum(1.0, PER_NODE / ep)
    remote = size - local
    bl = np.arange(100e9, 400e9, 0.5e9)[:, None, None]
    bn = np.arange(20e9, 80e9, 0.05e9)[None, :, None]
    wire = np.maximum(local / bl, remote / bn) * 1e6  # µs
    # best α for relative error: minimise sum ((α + w - t) / t)^2
    w2 = 1.0 / t**2
    alpha = ((t - wire) * w2).sum(-1) / w2.sum()
    err = (((alpha[..., None] + wire - t) / t) ** 2).sum(-1)
    i, j = np.unravel_index(np.argmin(err), err.shape)
    return float(alpha[i, j]), float(bl[i, 0, 0]), float(bn[0, j, 0])


def main() -> None:
    alpha, b_local, b_net = fit()
    print(
        f"fit on EP {TRAIN}: alpha {alpha:.1f} us, local {b_local / 1e9:.1f} GB/s, "
        f"remote {b_net / 1e9:.1f} GB/s"
    )
    worst = 0.0
    for ep, size, t in rows(TABLE):
        p = predict(alpha, b_local, b_net, ep, size)
        kind = "dispatch" if size == DISPATCH_BYTES else "combine"
        held = ep not in TRAIN
        err = (p - t) / t
        worst = max(worst, abs(err)) if held else worst
        print(
            f"EP {ep:4d} {kind:8s} measured {t:6.1f} us  model {p:6.1f} us  "
            f"{err * 100:+6.1f} %{'  (held out)' if held else ''}"
        )
    print(f"worst held-out |error| {worst * 100:.1f} %")


if __name__ == "__main__":
    main()
