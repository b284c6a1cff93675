"""Write a SYNTHETIC router trace for Mixtral-8x7B: ``mixtral-8x7b-skewed.json`` next to this file.

Nothing here is measured. Each of Mixtral's 32 MoE layers gets a Zipf-skewed expert popularity
(exponent ``S`` drawn uniformly from [0.3, 1.2], popularity order a random permutation of the 8
experts); ``TOKENS`` tokens are routed through it by Gumbel top-2 (the top 2 of
``log p_i + Gumbel noise``: sequential sampling without replacement, what top-k of noisy
router logits does), and the file records how many tokens each expert received per layer.
Python's ``random.Random(SEED)`` drives everything (its ``random()`` stream is the same on
every Python version), so the file is reproducible byte for byte:

    python examples/routing/make_skewed_trace.py            # rewrites the shipped file
    python examples/routing/make_skewed_trace.py --out x.json

A measured trace has the same format (docs/models.md, "Measured routing: a router-trace file").
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

SEED = 20240613
EXPERTS, TOP_K, LAYERS, TOKENS = 8, 2, 32, 4096
S_RANGE = (0.3, 1.2)
OUT = Path(__file__).resolve().parent / "mixtral-8x7b-skewed.json"


def layer_counts(rng: random.Random) -> tuple[float, list[int]]:
    """One layer: its Zipf exponent and the per-expert counts of ``TOKENS`` top-k tokens."""
    s = S_RANGE[0] + (S_RANGE[1] - S_RANGE[0]) * rng.random()
    order = list(range(EXPERTS))
    rng.shuffle(order)  # order[r] is the expert of popularity rank r + 1
    log_p = [0.0] * EXPERTS
    for rank, expert in enumerate(order):
        log_p[expert] = -s * math.log(rank + 1)  # unnormalised: top-k does not care
    counts = [0] * EXPERTS
    for _ in range(TOKENS):
        keys = [lp - math.log(-math.log(1.0 - rng.random())) for lp in log_p]
        for e in sorted(range(EXPERTS), key=keys.__getitem__, reverse=True)[:TOP_K]:
            counts[e] += 1
    return s, counts


def make_trace(seed: int = SEED) -> dict[str, object]:
    rng = random.Random(seed)
    layers = {}
    exponents = []
    for layer in range(LAYERS):
        s, counts = layer_counts(rng)
        exponents.append(round(s, 3))
        layers[str(layer)] = counts
    return {
        "format": "preserve-cp-routing/1",
        "description": (
            "SYNTHETIC, not measured: Mixtral-8x7B shape (8 experts, top-2, 32 layers), "
            f"{TOKENS} tokens per layer sampled by Gumbel top-2 from a Zipf popularity with a "
            f"per-layer exponent drawn from {list(S_RANGE)} and a random expert order "
            f"(exponents by layer: {exponents}); written by "
            f"examples/routing/make_skewed_trace.py, seed {seed}"
        ),
        "tokens": TOKENS,
        "top_k": TOP_K,
        "experts": EXPERTS,
        "layers": layers,
    }


def dumps(trace: dict[str, object]) -> str:
    """JSON with one line per layer (readable diffs)."""
    text = json.dumps(trace, indent=2)
    # fold each counts list onto one line
    out, buf = [], None
    for line in text.splitlines():
        if buf is not None:
            buf.append(line.strip())
            if line.strip().startswith("]"):
                out.append(buf[0] + " ".join(buf[1:]).replace("[ ", "[").replace(" ]", "]"))
                buf = None
            continue
        if line.rstrip().endswith("["):
            buf = [line]
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT, help="where to write (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=SEED, help="random seed (default: %(default)s)")
    args = ap.parse_args()
    args.out.write_text(dumps(make_trace(args.seed)), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
