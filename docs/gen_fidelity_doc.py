"""Regenerate the tables of docs/fidelity.md from `preserve-cp validate` and the hardware files.

Usage::

    python docs/gen_fidelity_doc.py          # rewrite the generated block in place
    python docs/gen_fidelity_doc.py --check  # exit 1 when the block is out of date

The block holds the summary (priors vs calibrated), every point with both errors, and the
fitted values of each calibrated device. tests/test_docs.py fails when it differs from what
this script would write, so the numbers on the page are the tool's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import _docgen  # docs/_docgen.py (this folder is on sys.path when run as a script)
import yaml

from preserve_cp.hardware import HARDWARE_DIR
from preserve_cp.validate import compare, load_points, summary

DOC = Path(__file__).resolve().parent / "fidelity.md"
BEGIN = "<!-- BEGIN GENERATED TABLES -->"
END = "<!-- END GENERATED TABLES -->"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.1f} %"


def render() -> str:
    points = load_points()
    prior, fitted = compare(points, calibrated=False), compare(points)
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
    """``text`` with everything between the markers replaced by ``block``."""
    return _docgen.splice(DOC, BEGIN, END, text, block)


def main(argv: list[str] | None = None) -> int:
    return _docgen.main(DOC, BEGIN, END, render, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
