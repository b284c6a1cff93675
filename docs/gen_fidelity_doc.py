"""Regenerate the tables of docs/fidelity.md from `preserve-cp validate` and the hardware files.

Usage::

    python docs/gen_fidelity_doc.py          # rewrite the generated block in place
    python docs/gen_fidelity_doc.py --check  # exit 1 when the block is out of date

Two blocks: the first holds the summary (priors vs calibrated), every point of the
single-node set with both errors, and the fitted values of each calibrated device; the second
("Multi-node and MoE points") the same for the points with a ``family`` (multi-node, MoE and
all-to-all measurements), with the share within 20 % as well. tests/test_docs.py fails when
either differs from what this script would write, so the numbers on the page are the tool's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import _docgen  # docs/_docgen.py (this folder is on sys.path when run as a script)
import yaml

from preserve_cp.hardware import HARDWARE_DIR
from preserve_cp.validate import DECODE_METRICS, Comparison, compare, load_points, summary

DOC = Path(__file__).resolve().parent / "fidelity.md"
BEGIN = "<!-- BEGIN GENERATED TABLES -->"
END = "<!-- END GENERATED TABLES -->"
BEGIN_MN = "<!-- BEGIN GENERATED MULTINODE TABLES -->"
END_MN = "<!-- END GENERATED MULTINODE TABLES -->"
_SEP = "\x00multinode\x00\n"  # joins the two blocks in render()'s result (never written)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.1f} %"


def render() -> str:
    """Both generated blocks, joined by ``_SEP`` (``splice`` puts each between its markers);
    the second ends with the held-out standing of the whole set."""
    points = load_points()
    prior, fitted = compare(points, calibrated=False), compare(points)
    one = [i for i, p in enumerate(points) if not p.get("family")]
    many = [i for i, p in enumerate(points) if p.get("family")]

    def part(idx: list[int]) -> tuple[list[dict[str, Any]], list[Comparison], list[Comparison]]:
        return [points[i] for i in idx], [prior[i] for i in idx], [fitted[i] for i in idx]

    return (
        _render_single(*part(one))
        + _SEP
        + _render_multinode(*part(many))
        + _render_standing(points, fitted)
    )


#: models whose points count as MoE in the standing table
MOE_MODELS = ("mixtral-8x7b", "deepseek-r1")


def _render_standing(points: list[dict[str, Any]], fitted: list[Comparison]) -> str:
    """Every held-out point of the set (single-node, multi-node and MoE together) by group:
    the figures the fidelity targets are stated in."""
    decode = set(DECODE_METRICS)
    groups = {
        "decode (every decode metric)": lambda r: r.metric in decode,
        "decode, MoE models only": lambda r: r.metric in decode and r.model in MOE_MODELS,
        "first-token latency": lambda r: r.metric == "ttft_ms",
        "end-to-end latency": lambda r: r.metric == "e2e_latency_s",
        "every held-out point": lambda r: True,
    }
    out = [
        "",
        "Every held-out point of the set (the single-node table above and this one together):",
        "",
        "| held-out group | points | median \\|error\\| | within 10 % | within 20 % |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, keep in groups.items():
        rows = [r for r in fitted if r.split == "holdout" and r.error is not None and keep(r)]
        out.append(
            f"| {name} | {len(rows)} | {_pct(_median(rows))} | {_pct(_within(rows, 0.10))} "
            f"| {_pct(_within(rows, 0.20))} |"
        )
    skipped = sum(r.predicted is None for r in fitted)
    out += ["", f"Points of the set not modelled: {skipped} of {len(points)}."]
    return "\n".join(out) + "\n"


def _within(rows: list[Comparison], limit: float) -> float | None:
    errs = [abs(r.error) for r in rows if r.error is not None]
    return sum(e <= limit for e in errs) / len(errs) if errs else None


def _median(rows: list[Comparison]) -> float | None:
    errs = [abs(r.error) for r in rows if r.error is not None]
    return statistics.median(errs) if errs else None


def _render_multinode(
    points: list[dict[str, Any]], prior: list[Comparison], fitted: list[Comparison]
) -> str:
    """Summary by split and by family, and every point, of the multi-node and MoE points."""
    family = {str(p["id"]): str(p["family"]) for p in points}
    out = [
        "| subset | points | median \\|error\\| (priors) | median \\|error\\| (calibrated) "
        "| within 10 % | within 20 % |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    groups: list[tuple[str, list[int]]] = [
        (split, [i for i, r in enumerate(fitted) if r.split == split])
        for split in ("train", "holdout")
    ]
    for fam in dict.fromkeys(family.values()):
        groups.append(
            (
                f"holdout: {fam}",
                [i for i, r in enumerate(fitted) if r.split == "holdout" and family[r.id] == fam],
            )
        )
    for name, idx in groups:
        a, b = [prior[i] for i in idx], [fitted[i] for i in idx]
        bold = "**" if name == "holdout" else ""
        out.append(
            f"| {bold}{name}{bold} | {len(idx)} | {_pct(_median(a))} | {bold}{_pct(_median(b))}"
            f"{bold} | {_pct(_within(b, 0.10))} | {_pct(_within(b, 0.20))} |"
        )
    out += [
        "",
        "| id | family | split | hardware | metric | measured | predicted | error (priors) "
        "| error |",
        "|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for a, b in zip(prior, fitted, strict=True):
        if b.predicted is None or a.error is None or b.error is None:
            out.append(
                f"| {b.id} | {family[b.id]} | {b.split} | {b.hardware} | {b.metric} | "
                f"{b.measured:.4g} | skipped: {b.skipped} | | |"
            )
            continue
        flag = " ⚠" if abs(b.error) > 0.20 else ""
        out.append(
            f"| {b.id} | {family[b.id]} | {b.split} | {b.hardware} | {b.metric} | "
            f"{b.measured:.4g} | {b.predicted:.4g} | {a.error * 100:+.1f} % | "
            f"{b.error * 100:+.1f} %{flag} |"
        )
    return "\n".join(out) + "\n"


def _render_single(
    points: list[dict[str, Any]], prior: list[Comparison], fitted: list[Comparison]
) -> str:
    sp, sf = summary(prior), summary(fitted)
    out = [
        "| subset | points | median \\|error\\| (priors) | within 10 % (priors) "
        "| median \\|error\\| (calibrated) | within 10 % (calibrated) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("train", "holdout", "holdout_decode"):
        a, b = sp[name], sf[name]
        out.append(
            f"| {name.replace('_', ' ')} | {b['n']} | {_pct(a['median_abs_error'])} | "
            f"{_pct(a['share_within_10pct'])} | **{_pct(b['median_abs_error'])}** | "
            f"{_pct(b['share_within_10pct'])} |"
        )
    out += [
        "",
        "| id | split | hardware | metric | measured | error (priors) | predicted | error |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for a, b in zip(prior, fitted, strict=True):
        if b.predicted is None or a.error is None or b.error is None:
            out.append(f"| {b.id} | {b.split} | {b.hardware} | {b.metric} | skipped: {b.skipped} |")
            continue
        flag = " ⚠" if abs(b.error) > 0.20 else ""
        out.append(
            f"| {b.id} | {b.split} | {b.hardware} | {b.metric} | {b.measured:.4g} | "
            f"{a.error * 100:+.1f} % | {b.predicted:.4g} | {b.error * 100:+.1f} %{flag} |"
        )
    out += ["", "Fitted values per device (the priors stay written in each section):", ""]
    for f in sorted(HARDWARE_DIR.glob("*.yaml")):
        cal = (yaml.safe_load(f.read_text(encoding="utf-8")) or {}).get("calibration")
        if not cal:
            continue
        err = cal.get("train_median_abs_error", {})
        vals = ", ".join(f"`{k}` {v:g}" for k, v in cal["fitted"].items())
        out.append(
            f"* **{f.stem}** ({len(cal['points'])} training points, {cal['date']}; median "
            f"\\|error\\| {_pct(err.get('before'))} → {_pct(err.get('after'))}): {vals}"
        )
    return "\n".join(out) + "\n"


def splice(text: str, block: str) -> str:
    """``text`` with each block of ``render()`` between its markers."""
    single, multi = block.split(_SEP)
    text = _docgen.splice(DOC, BEGIN, END, text, single)
    return _docgen.splice(DOC, BEGIN_MN, END_MN, text, multi)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 when a block is stale")
    args = p.parse_args(argv)
    old = DOC.read_text(encoding="utf-8")
    new = splice(old, render())
    if args.check:
        print("up to date" if new == old else f"{DOC.name}: generated block is stale")
        return 0 if new == old else 1
    DOC.write_text(new, encoding="utf-8")
    print(f"{DOC.name}: {'unchanged' if new == old else 'rewritten'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
