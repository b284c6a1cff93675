"""Try hard to beat ``chain_lp_bound``: no plan the simulator runs may finish before it.

The bound (preserve_cp/optimize/bounds.py) claims to be below the makespan of EVERY plan the
simulator can execute on a chain graph. These tests generate many plans -- random ones and
adversarial ones built around the ways the machine model can be gamed (chunks that wait for
an L2 release and move while the next op waits, many small chunks, chunks the size of the
usable L2, eager streaming from every preceding op, the hand-made plan of the audit that beat
the old bound) plus a local search that pushes the makespan down -- simulate each, keep those
the verifier accepts, and require ``makespan >= bound``.

A failure message names the instance and the whole plan (tensor, bytes, anchor, sync per
chunk, in stream order), so the bound can be fixed from it. Nothing here is xfail: a plan
that beats the bound is a bug in the bound (or in the simulator).
"""

from __future__ import annotations

import dataclasses
import functools
import random
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import tensor_spans

import preserve_cp as pc
from preserve_cp.costs import op_costs
from preserve_cp.errors import InputError
from preserve_cp.machine import machine_for
from preserve_cp.optimize import chain_lp_bound, chain_order
from preserve_cp.plan import Plan, Prefetch
from preserve_cp.simulate import simulate, verify

RAMP_DEVICES = ("h100-sxm", "h200-sxm", "mi300x", "gaudi3")  # hbm_half > 0: chunk latency
FLAT_DEVICES = ("ascend-910b2", "rtx-pro-6000")  # no size ramp (the second: the sum L2 law)
MODELS = ("llama3-8b", "qwen2-7b", "phi3-small", "llama2-7b")
REL = 1e-9  # the makespan may undercut the bound by this much (float noise), no more

# A plan as plain data: (tensor, bytes, anchor, sync) per chunk, in stream order.
Chunk = tuple[str, float, Any, Any]


# ---------------------------------------------------------------------------- instances


@dataclass(frozen=True)
class Key:
    """Everything that defines an instance (hashable: instances are cached)."""

    model: str
    layers: int
    phase: str
    batch: int
    context: int
    tp: int
    dtype: str
    device: str
    fraction: float | None = None  # l2_prefetch_fraction override (None: as calibrated)
    share: float | None = None  # prefetch_share_during_ops override

    def label(self) -> str:
        hw = self.device
        if self.fraction is not None:
            hw += f"[l2_prefetch_fraction={self.fraction}, share={self.share}]"
        return (
            f"{self.model} x{self.layers} layer(s) {self.phase} b{self.batch} "
            f"ctx{self.context} tp{self.tp} {self.dtype} on {hw}"
        )


@dataclass
class Instance:
    key: Key
    g: Any
    hw: pc.Hardware
    costs: dict
    machine: Any
    chain: list
    bound: float
    pos: dict
    first: dict  # tensor -> chain position of its first reader
    last: dict  # tensor -> chain position of its last reader
    size: dict  # tensor -> bytes (prefetchable tensors only)
    tensors: list  # prefetchable tensors, by first reader
    cap: float  # usable L2 bytes

    def before(self, t: str) -> list:
        """The ops that may anchor a chunk of ``t`` (every op before its first reader)."""
        return self.chain[: self.first[t]]


@functools.cache
def instance(key: Key) -> Instance:
    model = pc.load_model(key.model).model_copy(update={"num_layers": key.layers})
    wl = pc.Workload(key.phase, key.batch, key.context, key.tp, key.dtype, key.dtype, key.dtype)
    g = pc.build_graph(model, wl)
    hw = pc.load_hardware(key.device)
    if key.fraction is not None:
        hw = dataclasses.replace(
            hw, l2_prefetch_fraction=key.fraction, prefetch_share_during_ops=key.share
        )
    costs = op_costs(g, hw)
    machine = machine_for(hw)
    chain = chain_order(g)
    assert chain is not None, "LLM graphs are chains"
    bound = chain_lp_bound(chain, g, costs, machine)
    assert bound is not None and bound > 0, key.label()
    pos = {n: i for i, n in enumerate(chain)}
    first, last, size = tensor_spans(chain, g)
    tensors = sorted(size, key=lambda t: first[t])
    return Instance(
        key,
        g,
        hw,
        costs,
        machine,
        chain,
        bound,
        pos,
        {t: first[t] for t in size},
        {t: last[t] for t in size},
        size,
        tensors,
        machine.l2_capacity_bytes,
    )


def random_key(rng: random.Random, device: str | None = None) -> Key:
    """A random small instance that builds (tp divides the heads, the dtype exists)."""
    for _ in range(100):
        dev = device or rng.choice(RAMP_DEVICES + FLAT_DEVICES)
        hw = pc.load_hardware(dev)
        dtype = rng.choice([d for d in ("fp8", "bf16", "int8") if d in hw.matmul_flops_per_s])
        phase = rng.choice(("decode", "prefill"))
        if phase == "decode":
            batch = rng.choice((1, 1, 4, 16, 64))
            context = rng.choice((512, 2048, 8192, 32768))
        else:
            batch = rng.choice((1, 2))
            context = rng.choice((64, 256, 1024))
        frac = share = None
        if dev in RAMP_DEVICES and rng.random() < 0.75:  # else as calibrated (ample L2)
            frac = rng.choice((0.005, 0.01, 0.02, 0.03, 0.05, 0.1))
            share = rng.choice((0.0, 0.5, 1.0))
        key = Key(
            rng.choice(MODELS),
            rng.randint(1, 3),
            phase,
            batch,
            context,
            rng.choice((2, 4, 8)),
            dtype,
            dev,
            frac,
            share,
        )
        try:
            instance(key)
        except InputError:
            continue
        return key
    raise AssertionError("no buildable instance drawn")


AUDIT = Key("llama3-8b", 1, "decode", 1, 2048, 8, "fp8", "h100-sxm", 0.02, 1.0)
"""The audit's instance: the old bound said 116.416 us, a 7-chunk plan ran in 116.289 us."""


# ---------------------------------------------------------------------------- plans


def _split(rng: random.Random, total: float, n: int) -> list[float]:
    w = [rng.random() + 0.05 for _ in range(n)]
    s = sum(w)
    return [total * x / s for x in w]


def _room(inst: Instance, t: str) -> float:
    """The most a plan can hold of ``t``: its size, and the usable L2 (a tensor's chunks all
    stay in L2 until its reader ends, so more than the L2 deadlocks and is dropped)."""
    return min(inst.size[t], inst.cap)


def _sync_after(inst: Instance, anchor: Any, p: float, rng: random.Random) -> Any:
    """The op after ``anchor`` (the first op when anchor is None) with probability p."""
    if rng.random() >= p:
        return None
    k = 0 if anchor is None else inst.pos[anchor] + 1
    return inst.chain[k] if k < len(inst.chain) else None


def _by_consumer(inst: Instance, chunks: list[Chunk]) -> list[Chunk]:
    """Stream order: by consumer, then anchor (None first); stable otherwise."""

    def key(c: Chunk) -> tuple[int, int]:
        return inst.first[c[0]], -1 if c[2] is None else inst.pos[c[2]]

    return sorted(chunks, key=key)


def _monotone(inst: Instance, chunks: list[Chunk]) -> list[Chunk]:
    """Anchors made non-decreasing along the stream (running max; in consumer order every
    anchor stays before its consumer). Without it a sync on an early op, behind a chunk
    anchored later in the stream, deadlocks and the simulator drops chunks."""
    out, hi = [], -1
    for t, b, a, s in chunks:
        k = -1 if a is None else inst.pos[a]
        if k < hi and hi < inst.first[t]:
            a = inst.chain[hi]
            if s is not None:
                s = inst.chain[hi + 1]
        hi = max(hi, -1 if a is None else inst.pos[a])
        out.append((t, b, a, s))
    return out


def _tidy(rng: random.Random, inst: Instance, chunks: list[Chunk], p: float = 0.7) -> list[Chunk]:
    """Consumer order, and with probability ``p`` monotone anchors."""
    out = _by_consumer(inst, chunks)
    return _monotone(inst, out) if rng.random() < p else out


def gen_random(rng: random.Random, inst: Instance) -> list[Chunk]:
    """Random tensors, 1..8 chunks each, random sizes (sum <= tensor), anchors at ANY op
    before the consumer or None, random syncs, random (or consumer) stream order."""
    k = rng.randint(1, len(inst.tensors))
    out: list[Chunk] = []
    for t in rng.sample(inst.tensors, k):
        n = rng.randint(1, 8)
        total = inst.size[t] * rng.choice((1.0, rng.uniform(0.02, 1.0)))
        if rng.random() < 0.95:  # mostly what fits in L2, so that few plans are dropped
            total = min(total, _room(inst, t) * rng.choice((1.0, rng.uniform(0.1, 1.0))))
        for b in _split(rng, total, n):
            anchor = rng.choice([*inst.before(t), None])
            out.append((t, b, anchor, _sync_after(inst, anchor, 0.1, rng)))
    r = rng.random()
    if r < 0.1:  # any order (mostly deadlocks: a chunk waits behind a later anchor)
        rng.shuffle(out)
    else:
        out = _tidy(rng, inst, out, 0.5)
        for _ in range(rng.randint(0, 3) if r < 0.3 else 0):  # a few swaps
            i, j = rng.randrange(len(out)), rng.randrange(len(out))
            out[i], out[j] = out[j], out[i]
    return out


def gen_many_small(rng: random.Random, inst: Instance) -> list[Chunk]:
    """Each tensor in 8..32 small chunks, anchors spread increasingly over the ops before it."""
    out: list[Chunk] = []
    piece = inst.cap / rng.choice((8, 16, 32, 64))
    for t in inst.tensors:
        if rng.random() < 0.2:
            continue
        n = min(rng.randint(8, 32), max(1, int(_room(inst, t) // piece)))
        ops = inst.before(t)
        lo = rng.randrange(len(ops))
        anchors = sorted(rng.choice(ops[lo:]) for _ in range(n))
        anchors = [None if rng.random() < 0.1 else a for a in anchors]
        for a in anchors:
            out.append((t, min(piece, _room(inst, t) / n), a, _sync_after(inst, a, 0.02, rng)))
    return _tidy(rng, inst, out)


def gen_release_wait(rng: random.Random, inst: Instance) -> list[Chunk]:
    """Chunks anchored at the op whose END releases L2 (the last reader of an earlier
    prefetched tensor), sized so they cannot start until that release: they then move while
    the next op waits for them (sync on the op after the anchor)."""
    out: list[Chunk] = []
    releasers = {inst.chain[inst.last[t]] for t in inst.tensors}
    for t in inst.tensors:
        ops = inst.before(t)
        rel = [n for n in ops if n in releasers]
        head = _room(inst, t) * rng.uniform(0.0, 0.8)
        if head > 1:
            out.append((t, head, rng.choice([None, ops[0], ops[-1]]), None))
        rest = (_room(inst, t) - head) * rng.choice((1.0, rng.uniform(0.5, 1.0)))
        if rest > 1 and rel:
            a = rel[-1] if rng.random() < 0.8 else rng.choice(rel)
            sync = _sync_after(inst, a, 0.7, rng)
            for b in _split(rng, rest, rng.randint(1, 3)):
                out.append((t, b, a, sync))
    return _tidy(rng, inst, out, 0.8)


def gen_near_cap(rng: random.Random, inst: Instance) -> list[Chunk]:
    """Chunk sizes at (or just under) the usable L2, half of it, or a third of it."""
    out: list[Chunk] = []
    for t in inst.tensors:
        if rng.random() < 0.25:
            continue
        frac = rng.choice((1.0, 1 - 1e-6, 0.999, 0.5, 0.5 - 1e-6, 1 / 3, 0.7))
        n = rng.randint(1, 3)
        b = min(inst.size[t] / n, inst.cap * frac, inst.cap / n)
        for _ in range(n):
            a = rng.choice([*inst.before(t), None])
            out.append((t, b, a, _sync_after(inst, a, 0.2, rng)))
    return _tidy(rng, inst, out)


def gen_eager(rng: random.Random, inst: Instance) -> list[Chunk]:
    """Eager streaming: each tensor in 2..4 chunks anchored at each of the ops before its
    consumer (the m ops just before it, or spread over all of them)."""
    out: list[Chunk] = []
    per = inst.cap * rng.choice((0.25, 0.5, 1.0)) / rng.randint(1, 2)
    for t in inst.tensors:
        ops = inst.before(t)
        m = min(rng.randint(2, 4), len(ops))
        spread = [ops[(i * len(ops)) // m] for i in range(m)]
        anchors = ops[-m:] if rng.random() < 0.5 else spread
        b = min(_room(inst, t) / m, per)
        out.extend((t, b, a, None) for a in anchors)
    return _by_consumer(inst, out)


def gen_stream(rng: random.Random, inst: Instance) -> list[Chunk]:
    """The natural plan: every tensor in consumer order, chunks of cap/j, released at once
    (the simulator makes each wait for L2)."""
    out: list[Chunk] = []
    piece = inst.cap / rng.choice((1, 2, 3, 4, 8))
    for t in inst.tensors:
        total = inst.size[t] * rng.choice((1.0, rng.uniform(0.1, 1.0)))
        total = min(total, inst.cap)
        left = total
        while left > 1:
            b = min(piece, left)
            out.append((t, b, None, None))
            left -= b
    return out


def gen_handmade(rng: random.Random, inst: Instance) -> list[Chunk]:
    """The audit's style: per tensor, a first chunk anchored early and a second anchored at
    the op just before the consumer (it starts when that op's predecessor releases L2, and
    moves while the consumer waits)."""
    out: list[Chunk] = []
    grid = (0.25, 0.5, 0.75, 1.0)
    for t in inst.tensors:
        ops = inst.before(t)
        a = _room(inst, t) * rng.choice(grid)
        out.append((t, a, rng.choice([None, ops[0]]), None))
        b = (_room(inst, t) - a) * rng.choice(grid)
        if b > 1 and rng.random() < 0.7:
            out.append((t, b, ops[-1], inst.chain[inst.first[t]]))
    return out


def gen_window_fill(rng: random.Random, inst: Instance) -> list[Chunk]:
    """Aimed at the window rows: chunks sized to what one collective moves (or a share of
    it, or more), anchored at the op before a collective or at the collective itself, the
    next op often made to wait (a stall lengthens the window); several tensors per window,
    and chunks left running from one collective into the next."""
    colls = [k for k, n in enumerate(inst.chain) if inst.costs[n].fixed]
    out: list[Chunk] = []
    for t in inst.tensors:
        ks = [k for k in colls if k < inst.first[t]]
        if not ks or rng.random() < 0.15:
            continue
        left = _room(inst, t) * rng.choice((1.0, 1.0, rng.uniform(0.3, 1.0)))
        for k in sorted(rng.sample(ks[-3:], min(len(ks[-3:]), rng.randint(1, 3)))):
            if left <= 1:
                break
            c = inst.costs[inst.chain[k]]
            window = inst.machine.prefetch_bytes_per_s * c.duration_s(0.0)
            b = min(left, window * rng.choice((0.3, 0.5, 0.9, 1.0, 1.0, 1.5, 3.0)))
            a = inst.chain[k - rng.choice((0, 1))] if k > 0 else None
            sync = inst.chain[k + 1] if rng.random() < 0.4 and k + 1 < len(inst.chain) else None
            out.append((t, b, a, sync))
            left -= b
    return _tidy(rng, inst, out, 0.9)


GENERATORS = (
    gen_window_fill,
    gen_random,
    gen_random,
    gen_random,
    gen_many_small,
    gen_release_wait,
    gen_near_cap,
    gen_eager,
    gen_stream,
    gen_handmade,
)


def mutate(rng: random.Random, inst: Instance, chunks: list[Chunk]) -> list[Chunk] | None:
    """A neighbour of a plan (local search): resize, re-anchor, toggle sync, swap, split,
    merge, add or drop a chunk. None when the move does not apply."""
    new = list(chunks)
    r = rng.random()
    if not new:
        r = 0.95
    if r < 0.25:
        i = rng.randrange(len(new))
        t, b, a, s = new[i]
        new[i] = (t, max(1.0, min(inst.cap, b * rng.uniform(0.6, 1.4))), a, s)
    elif r < 0.45:
        i = rng.randrange(len(new))
        t, b, _, s = new[i]
        a = rng.choice([*inst.before(t), None])
        new[i] = (t, b, a, None if s is None else _sync_after(inst, a, 1.0, rng))
    elif r < 0.55:
        i = rng.randrange(len(new))
        t, b, a, s = new[i]
        new[i] = (t, b, a, None if s is not None else _sync_after(inst, a, 1.0, rng))
    elif r < 0.7:
        i, j = rng.randrange(len(new)), rng.randrange(len(new))
        new[i], new[j] = new[j], new[i]
    elif r < 0.8:
        i = rng.randrange(len(new))
        t, b, a, s = new[i]
        f = rng.uniform(0.2, 0.8)
        a2 = rng.choice([a, *inst.before(t)[-3:]])
        new[i : i + 1] = [(t, b * f, a, s), (t, b * (1 - f), a2, s)]
    elif r < 0.9:
        i = rng.randrange(len(new))
        same = [j for j, c in enumerate(new) if c[0] == new[i][0] and j != i]
        if not same:
            return None
        j = rng.choice(same)
        t, b, a, s = new[i]
        new[i] = (t, b + new[j][1], a, s)
        del new[j]
    elif r < 0.95 and len(new) > 1:
        del new[rng.randrange(len(new))]
    else:
        t = rng.choice(inst.tensors)
        a = rng.choice([*inst.before(t), None])
        new.insert(rng.randint(0, len(new)), (t, inst.cap * rng.uniform(0.05, 0.6), a, None))
    for t in {c[0] for c in new}:  # keep every tensor's chunks within its size and the L2
        tot = sum(c[1] for c in new if c[0] == t)
        if tot > _room(inst, t):
            f = _room(inst, t) / tot
            new = [(c[0], c[1] * f, c[2], c[3]) if c[0] == t else c for c in new]
    return new


# ---------------------------------------------------------------------------- checking


@dataclass
class Tally:
    """What the runs saw: cases checked, plans skipped, the tightest ratio, violations."""

    cases: int = 0
    failed_verify: int = 0
    dropped: int = 0
    min_ratio: float = float("inf")
    min_where: str = ""
    violations: list[str] = field(default_factory=list)

    def report(self, name: str, seconds: float) -> str:
        return (
            f"\n[{name}] {self.cases} plans checked ({self.failed_verify} failed verification, "
            f"{self.dropped} with dropped chunks, both skipped) in {seconds:.1f} s; "
            f"min makespan/bound = {self.min_ratio:.9f} ({self.min_where})"
        )


def describe(inst: Instance, chunks: list[Chunk], makespan: float, bound: float) -> str:
    lines = [
        f"{inst.key.label()}: makespan {makespan * 1e6:.6f} us < bound {bound * 1e6:.6f} us "
        f"(ratio {makespan / bound:.12f}); plan, in stream order "
        "(tensor, bytes, anchor, sync):"
    ]
    lines += [f"  ({t!r}, {b!r}, {a!r}, {s!r})" for t, b, a, s in chunks]
    return "\n".join(lines)


def check(inst: Instance, chunks: list[Chunk], tally: Tally, bound: float | None = None) -> float:
    """Simulate ``chunks`` on ``inst``; count it and record a violation of ``bound`` (the chain
    LP bound by default). Returns the makespan (inf for a skipped plan)."""
    bound = inst.bound if bound is None else bound
    chunks = [c for c in chunks if c[1] > 0]
    plan = Plan(
        "adversary",
        tuple(Prefetch(t, b, inst.chain[inst.first[t]], a, sync=s) for t, b, a, s in chunks),
    )
    s = simulate(inst.g, inst.costs, plan, inst.machine)
    if s.dropped:
        tally.dropped += 1
        return float("inf")
    if verify(inst.g, s, inst.machine):
        tally.failed_verify += 1
        return float("inf")
    tally.cases += 1
    ratio = s.makespan_s / bound
    if ratio < tally.min_ratio:
        tally.min_ratio = ratio
        tally.min_where = f"{inst.key.label()}, {len(chunks)} chunks"
    if s.makespan_s < bound * (1 - REL):
        tally.violations.append(describe(inst, chunks, s.makespan_s, bound))
    return s.makespan_s


def hill_climb(
    rng: random.Random,
    inst: Instance,
    start: list[Chunk],
    steps: int,
    tally: Tally,
    bound: float | None = None,
) -> tuple[float, list[Chunk]]:
    """Local search for a faster plan (ties accepted, to walk plateaus)."""
    best, cur = check(inst, start, tally, bound), start
    for _ in range(steps):
        new = mutate(rng, inst, cur)
        if new is None:
            continue
        v = check(inst, new, tally, bound)
        if v <= best:
            best, cur = v, new
    return best, cur


def audit_plans(inst: Instance) -> list[list[Chunk]]:
    """The audit's plan family, literally: 7 chunks -- one per tensor, L0.w_o in two, the
    second anchored at L0.attention (it starts when the KV-cache chunk's L2 is released at
    the end of attention and moves while o_proj waits) -- over a grid of sizes, anchors and
    syncs."""
    cap = inst.cap
    out = []
    for kv in (0.5, 0.75, 1.0):
        for wo1 in (0.0, 0.25, 0.5):
            for wo2 in (0.25, 0.5, 0.75, 1.0):
                for early in (None, "embedding"):
                    for sync in (None, "L0.o_proj"):
                        if wo1 == 0.0 and sync is not None:
                            continue
                        out.append(
                            [
                                ("L0.w_qkv", cap * 0.5, early, None),
                                ("L0.kv_cache", cap * kv, early, None),
                                ("L0.w_o", cap * wo1, early, None),
                                ("L0.w_o", cap * wo2, "L0.attention", sync),
                                ("L0.w_gate_up", cap, early, None),
                                ("L0.w_down", cap, early, None),
                                ("lm_head.w", cap, early, None),
                            ]
                        )
    return out


def run_campaign(seed: int, n_instances: int, plans_each: int, climb_steps: int) -> Tally:
    rng = random.Random(seed)
    tally = Tally()
    devices = list(RAMP_DEVICES + FLAT_DEVICES)
    for i in range(n_instances):
        # every device early on, whatever the count
        inst = instance(random_key(rng, devices[i] if i < len(devices) else None))
        best: tuple[float, list[Chunk]] = (float("inf"), [])
        for j in range(plans_each):
            chunks = GENERATORS[j % len(GENERATORS)](rng, inst)
            v = check(inst, chunks, tally)
            if v < best[0]:
                best = (v, chunks)
        if climb_steps and best[1]:
            hill_climb(rng, inst, best[1], climb_steps, tally)
    return tally


def assert_clean(tally: Tally) -> None:
    assert not tally.violations, (
        f"{len(tally.violations)} plan(s) beat chain_lp_bound:\n" + "\n".join(tally.violations[:5])
    )
    assert tally.min_ratio >= 1 - REL


# ---------------------------------------------------------------------------- tests


def test_audit_case_cannot_beat_bound():
    """The audit's instance and plan family, then a local search around it."""
    t0 = time.perf_counter()
    inst = instance(AUDIT)
    assert inst.cap == pytest.approx(1e6)
    tally = Tally()
    plans = audit_plans(inst)
    results = [(check(inst, p, tally), p) for p in plans]
    best = min(results, key=lambda r: r[0])
    hill_climb(random.Random(7), inst, best[1], 150, tally)
    print(tally.report("audit", time.perf_counter() - t0), f"bound {inst.bound * 1e6:.3f} us")
    assert tally.cases >= 100
    assert_clean(tally)


def test_generated_plans_never_beat_bound():
    """~200 random and adversarial plans over small real instances (every device)."""
    t0 = time.perf_counter()
    tally = run_campaign(seed=2024, n_instances=8, plans_each=27, climb_steps=12)
    print(tally.report("default", time.perf_counter() - t0))
    assert tally.cases >= 180
    assert_clean(tally)


SOLVE_KEYS = (
    AUDIT,
    Key("qwen2-7b", 2, "decode", 8, 4096, 4, "bf16", "gaudi3", 0.05, 0.5),
    Key("llama3-8b", 1, "prefill", 1, 256, 8, "fp8", "mi300x", 0.01, 0.0),
    Key("phi3-small", 1, "decode", 1, 1024, 8, "bf16", "ascend-910b2"),
)


@pytest.mark.parametrize("key", SOLVE_KEYS, ids=lambda k: f"{k.model}-{k.phase}-{k.device}")
def test_solve_bound_is_below_every_plan(key):
    """solve(...)'s lower bound is below its own makespan and below every generated plan."""
    inst = instance(key)
    r = pc.solve(inst.g, inst.hw, time_limit_s=20.0)
    assert r.verified
    assert r.lower_bound_s <= r.makespan_s
    rng = random.Random(11)
    tally = Tally()
    best = (float("inf"), [])
    for j in range(27):
        chunks = GENERATORS[j % len(GENERATORS)](rng, inst)
        v = check(inst, chunks, tally, bound=r.lower_bound_s)
        best = min(best, (v, chunks), key=lambda x: x[0])
    hill_climb(rng, inst, best[1], 40, tally, bound=r.lower_bound_s)
    print(
        tally.report(f"solve {key.label()}", 0.0),
        f"solve {r.makespan_s * 1e6:.3f} us, lower bound {r.lower_bound_s * 1e6:.3f} us",
    )
    assert_clean(tally)


@pytest.mark.slow
def test_generated_plans_never_beat_bound_slow():
    """Thousands of plans over 120 instances, each followed by a local search."""
    t0 = time.perf_counter()
    tally = run_campaign(seed=99, n_instances=120, plans_each=36, climb_steps=150)
    print(tally.report("slow", time.perf_counter() - t0))
    assert tally.cases >= 2000
    assert_clean(tally)


@pytest.mark.slow
def test_audit_case_long_search():
    """A long local search from the audit's best plan and from the solver's plan."""
    t0 = time.perf_counter()
    inst = instance(AUDIT)
    tally = Tally()
    results = [(check(inst, p, tally), p) for p in audit_plans(inst)]
    best = min(results, key=lambda r: r[0])
    for seed in range(4):
        hill_climb(random.Random(seed), inst, best[1], 1500, tally)
    r = pc.solve(inst.g, inst.hw, time_limit_s=20.0)
    sol = [(p.tensor, p.bytes, p.anchor, p.sync) for p in r.plan.prefetches]
    hill_climb(random.Random(5), inst, sol, 1500, tally)
    print(tally.report("audit-long", time.perf_counter() - t0), f"bound {inst.bound * 1e6:.3f}")
    assert_clean(tally)


WINDOW_KEYS = (  # calibrated H100 (no compute-op share, ample L2): the window rows bite
    Key("phi3-small", 3, "decode", 8, 8192, 4, "fp8", "h100-sxm"),
    Key("llama3-8b", 3, "decode", 8, 8192, 4, "fp8", "h100-sxm"),
    Key("llama2-7b", 3, "decode", 8, 2048, 4, "fp8", "h100-sxm"),
    Key("qwen2-7b", 3, "decode", 1, 2048, 4, "fp8", "h100-sxm"),
)


def window_campaign(seed: int, plans_each: int, climb_steps: int) -> tuple[Tally, list[float]]:
    """Plans aimed at the window rows on WINDOW_KEYS, each instance's best plan and the
    optimiser's plan then pushed by a local search; also each bound's lift from the rows."""
    rng = random.Random(seed)
    tally, lifts = Tally(), []
    for key in WINDOW_KEYS:
        inst = instance(key)
        plain = chain_lp_bound(inst.chain, inst.g, inst.costs, inst.machine, window_rows=False)
        assert plain is not None
        lifts.append(inst.bound / plain - 1)
        starts = []
        for j in range(plans_each):
            gen = gen_window_fill if j % 2 == 0 else GENERATORS[j % len(GENERATORS)]
            chunks = gen(rng, inst)
            starts.append((check(inst, chunks, tally), chunks))
        r = pc.solve(inst.g, inst.hw, time_limit_s=20.0)
        starts.append(
            (r.makespan_s, [(p.tensor, p.bytes, p.anchor, p.sync) for p in r.plan.prefetches])
        )
        for _, chunks in sorted(starts, key=lambda s: s[0])[:2]:
            hill_climb(rng, inst, chunks, climb_steps, tally)
    return tally, lifts


def test_window_rows_never_beaten():
    """On instances where the window rows raise the bound (by > 0.1 %), no generated plan,
    nor the optimiser's plan after a local search, finishes below it."""
    t0 = time.perf_counter()
    tally, lifts = window_campaign(seed=3, plans_each=24, climb_steps=40)
    print(tally.report("window", time.perf_counter() - t0), "lifts", [f"{x:.4%}" for x in lifts])
    assert min(lifts) > 1e-3
    assert tally.cases >= 200
    assert_clean(tally)


@pytest.mark.slow
def test_window_rows_never_beaten_slow():
    t0 = time.perf_counter()
    tally, lifts = window_campaign(seed=31, plans_each=120, climb_steps=400)
    print(
        tally.report("window-slow", time.perf_counter() - t0), "lifts", [f"{x:.4%}" for x in lifts]
    )
    assert tally.cases >= 2000
    assert_clean(tally)
