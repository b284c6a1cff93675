"""Regenerate the field tables of docs/hardware.md from the hardware schema.

Usage::

    python docs/gen_hardware_doc.py          # rewrite the generated block in place
    python docs/gen_hardware_doc.py --check  # exit 1 when the block is out of date

The tables are built from the pydantic models in ``preserve_cp/hardware.py``
(``HardwareSpec`` and the sections it nests): each field's name, type and constraints (from
its annotation and constraint metadata), unit (from its key suffix), default, whether it is
required, and its ``Field(description=...)``. Only the text between the two markers is
replaced; tests/test_docs.py fails when it differs from what this script would write.
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path
from typing import Any

import _docgen  # docs/_docgen.py (this folder is on sys.path when run as a script)
import annotated_types as at
from pydantic import AfterValidator, BaseModel, BeforeValidator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from preserve_cp import _yaml, units
from preserve_cp.hardware import (
    CalibrationSpec,
    ComputeSpec,
    CostSpec,
    HardwareSpec,
    InterconnectSpec,
    MeasuredSpec,
    MemorySpec,
    ScaleOutSpec,
    SourceSpec,
)

DOC = Path(__file__).resolve().parent / "hardware.md"
BEGIN = "<!-- BEGIN GENERATED FIELDS -->"
END = "<!-- END GENERATED FIELDS -->"

#: (heading, model, YAML path of the section); the heading is also the link anchor
SECTIONS: tuple[tuple[str, type[BaseModel], str], ...] = (
    ("top level", HardwareSpec, ""),
    ("compute", ComputeSpec, "compute"),
    ("memory", MemorySpec, "memory"),
    ("interconnect", InterconnectSpec, "interconnect"),
    ("scale_out", ScaleOutSpec, "scale_out"),
    ("cost", CostSpec, "cost"),
    ("measured", MeasuredSpec, "measured"),
    ("calibration", CalibrationSpec, "calibration"),
    ("sources entries", SourceSpec, "sources[]"),
)

#: key suffix -> (unit as written, factor to SI, SI unit); the longest matching suffix wins
UNITS: dict[str, tuple[str, float | None, str]] = {
    "_tflops": ("TFLOP/s", units.TFLOPS, "FLOP/s"),
    "_tb_per_s": ("TB/s", units.TB, "B/s"),
    "_gb_per_s": ("GB/s", units.GB, "B/s"),
    "_gb": ("GB", units.GB, "B"),
    "_gib": ("GiB", units.GIB, "B"),
    "_mb": ("MB", units.MB, "B"),
    "_mib": ("MiB", units.MIB, "B"),
    "_us": ("µs", units.US, "s"),
    "_kib": ("KiB", units.KIB, "B"),
    "_w": ("W", None, ""),
    "_usd": ("US dollars", None, ""),
    "_mm": ("mm", None, ""),
    "_mm2": ("mm²", None, ""),
    "_per_cm2": ("per cm²", None, ""),
    "_mb_per_mm2": ("MB per mm²", None, ""),
    "_efficiency": ("fraction", None, ""),
    "_fraction": ("fraction", None, ""),
}

#: after-validators of preserve_cp/_yaml.py -> the constraint they enforce
VALIDATOR_WORDS = {
    _yaml.finite_positive: "> 0",
    _yaml.finite_nonneg: "≥ 0",
    _yaml.fraction: "in (0, 1]",
    _yaml.share: "in [0, 1]",
}


POWERS = {1e3: "10³", 1e6: "10⁶", 1e9: "10⁹", 1e12: "10¹²", 1e-6: "10⁻⁶", 1e-9: "10⁻⁹"}
POWERS |= {1024.0: "2¹⁰", 1024.0**2: "2²⁰", 1024.0**3: "2³⁰"}


def unit_of(name: str) -> str:
    """The unit a key's suffix names, with its factor to SI (``_gib`` -> ``GiB (2³⁰ B)``)."""
    for suffix in sorted(UNITS, key=len, reverse=True):
        if name.endswith(suffix):
            unit, factor, si = UNITS[suffix]
            if factor is None:
                return unit
            if units.SUFFIX_TO_SI.get(suffix, factor) != factor:  # never drift from units.py
                raise RuntimeError(f"{suffix}: factor differs from preserve_cp.units")
            return f"{unit} ({POWERS.get(factor, f'{factor:g}')} {si})"
    return ""


def _constraints(metadata: list[Any], base: Any) -> list[str]:
    out = []
    for m in metadata:
        if isinstance(m, AfterValidator):
            out.append(VALIDATOR_WORDS.get(m.func, m.func.__name__))  # type: ignore[arg-type]
        elif isinstance(m, BeforeValidator):
            continue  # not_bool: a YAML true/false is rejected as a number; stated once above
        elif isinstance(m, at.Gt):
            out.append(f"> {m.gt}")
        elif isinstance(m, at.Ge):
            out.append(f"≥ {m.ge}")
        elif isinstance(m, at.Lt):
            out.append(f"< {m.lt}")
        elif isinstance(m, at.Le):
            out.append(f"≤ {m.le:,}")
        elif isinstance(m, at.MinLen) and base is str:
            out.append("non-empty" if m.min_length == 1 else f"at least {m.min_length} characters")
        elif isinstance(m, at.MinLen):
            out.append(f"at least {m.min_length} {'entry' if m.min_length == 1 else 'entries'}")
        elif isinstance(m, at.MaxLen):
            out.append(f"at most {m.max_length} entries")
        else:
            out.append(str(m))
    return out


def _anchor(model: type[BaseModel]) -> str:
    for heading, m, _ in SECTIONS:
        if m is model:
            return f"[{heading}](#{heading.replace(' ', '-')})"
    return model.__name__


def type_text(tp: Any, metadata: list[Any] | None = None) -> str:
    """Readable type and constraints of an annotation (markdown; no table pipes)."""
    origin = typing.get_origin(tp)
    extra = _constraints(metadata or [], origin or tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return type_text(args[0], [*tp.__metadata__, *(metadata or [])])
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        text = " or ".join(type_text(a) for a in rest)
        return f"{text}, or omitted" if len(rest) < len(args) else text
    if origin is typing.Literal:
        names = [f"`{a}`" for a in args]
        text = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
    elif origin is dict:
        text = f"mapping ({type_text(args[0])}) → {type_text(args[1])}"
    elif origin is list:
        text = f"list of {type_text(args[0])}"
    elif isinstance(tp, type) and issubclass(tp, BaseModel):
        text = f"mapping ({_anchor(tp)})"
    else:
        text = {float: "number", int: "integer", str: "string", bool: "boolean"}.get(
            tp, getattr(tp, "__name__", str(tp))
        )
    if not extra:
        return text
    sep = "; " if origin in (dict, list) else ", " if tp is str else " "
    return f"{text}{sep}{', '.join(extra)}"


def default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "–"
    else:
        value = field.default
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value!r}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def section_table(model: type[BaseModel]) -> str:
    rows = [
        "| field | type | unit | default | required | description |",
        "|---|---|---|---|---|---|",
    ]
    for name, field in model.model_fields.items():
        if not field.description:
            raise RuntimeError(f"{model.__name__}.{name}: add Field(description=...)")
        rows.append(
            "| "
            + " | ".join(
                _cell(x)
                for x in (
                    f"`{name}`",
                    type_text(field.annotation, field.metadata),
                    unit_of(name) or "–",
                    default_text(field),
                    "yes" if field.is_required() else "no",
                    field.description,
                )
            )
            + " |"
        )
    return "\n".join(rows)


def render() -> str:
    """The generated block (without the markers)."""
    out = [
        "<!-- Written by docs/gen_hardware_doc.py from preserve_cp/hardware.py; "
        "do not edit by hand. -->",
        "",
        "Every section rejects unknown keys (a misspelt key is an error, not a silent default), "
        "and a number field rejects `true`/`false`. `–` in the default column: no default.",
    ]
    for heading, model, path in SECTIONS:
        out += ["", f"### {heading}", ""]
        if not path:
            intro = "Keys at the top of the file."
        elif path.endswith("[]"):
            intro = f"Keys of each entry of `{path[:-2]}`."
        else:
            intro = f"Keys under `{path}:`."
        out += [intro, "", section_table(model)]
    return "\n".join(out) + "\n"


def splice(text: str, block: str) -> str:
    """``text`` with everything between the markers replaced by ``block``."""
    return _docgen.splice(DOC, BEGIN, END, text, block)


def main(argv: list[str] | None = None) -> int:
    return _docgen.main(DOC, BEGIN, END, render, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
