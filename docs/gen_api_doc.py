"""Regenerate the reference of docs/api.md from the public API of ``preserve_cp``.

Usage::

    python docs/gen_api_doc.py          # rewrite the generated block in place
    python docs/gen_api_doc.py --check  # exit 1 when the block is out of date

Every name in ``preserve_cp.__all__`` gets its signature (``inspect.signature``; for pydantic
models, the fields) and the first paragraph of its docstring; classes also list their own
public methods and properties the same way. Only the text between the markers is replaced;
tests/test_docs.py fails when it differs from what this script would write.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

import _docgen  # docs/_docgen.py (this folder is on sys.path when run as a script)
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

import preserve_cp

DOC = Path(__file__).resolve().parent / "api.md"
BEGIN = "<!-- BEGIN GENERATED API -->"
END = "<!-- END GENERATED API -->"
WIDTH = 88  # longer signatures get one parameter per line

_ROLE = re.compile(r":[a-z]+:`~?(?:[\w.]+\.)?([^`]+)`")


def first_paragraph(obj: Any) -> str:
    """The first paragraph of ``obj``'s docstring, in markdown (RST roles become code)."""
    doc = inspect.getdoc(obj) or ""
    para = doc.strip().split("\n\n")[0]
    para = " ".join(line.strip() for line in para.splitlines())
    para = _ROLE.sub(r"`\1`", para)
    return para.replace("``", "`")


def short_type(tp: Any) -> str:
    """A readable annotation: constraint metadata dropped, module prefixes removed."""
    if isinstance(tp, str):
        return tp
    if tp is type(None):
        return "None"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return short_type(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(short_type(a) for a in args)
    if origin is typing.Literal:
        return "Literal[" + ", ".join(repr(a) for a in args) + "]"
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(short_type(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp))


def _params_of_model(cls: type[BaseModel]) -> list[str]:
    out = []
    for name, f in cls.model_fields.items():
        text = f"{name}: {short_type(f.annotation)}"
        if f.default_factory is not None:
            text += f" = {f.default_factory()!r}"  # type: ignore[call-arg]
        elif f.default is not PydanticUndefined:
            text += f" = {f.default!r}"
        out.append(text)
    return ["*", *out] if out else out


def _params_of(obj: Any) -> tuple[list[str], str]:
    sig = inspect.signature(obj)
    factories = {}
    if dataclasses.is_dataclass(obj):
        factories = {
            f.name: f.default_factory
            for f in dataclasses.fields(obj)
            if f.default_factory is not dataclasses.MISSING
        }
    out: list[str] = []
    star_done = False
    for p in sig.parameters.values():
        if p.kind is p.KEYWORD_ONLY and not star_done:
            out.append("*")
            star_done = True
        prefix = "*" if p.kind is p.VAR_POSITIONAL else "**" if p.kind is p.VAR_KEYWORD else ""
        star_done |= p.kind is p.VAR_POSITIONAL
        text = prefix + p.name
        if p.annotation is not p.empty:
            text += f": {short_type(p.annotation)}"
        if p.name in factories:
            text += f" = {factories[p.name]()!r}"
        elif p.default is not p.empty:
            text += f" = {p.default!r}"
        out.append(text)
    ret = "" if sig.return_annotation in (sig.empty, None, "None") else sig.return_annotation
    return out, short_type(ret) if ret else ""


def signature_text(name: str, params: list[str], ret: str = "") -> str:
    tail = f" -> {ret}" if ret else ""
    one = f"{name}({', '.join(params)}){tail}"
    if len(one) <= WIDTH:
        return one
    body = "".join(f"    {p},\n" for p in params)
    return f"{name}(\n{body}){tail}"


def _members(cls: type) -> list[str]:
    out = []
    for name, value in cls.__dict__.items():
        if name.startswith("_"):
            continue
        if isinstance(value, property):
            ret = typing.get_type_hints(value.fget).get("return") if value.fget else None
            head = f"{name}: {short_type(ret)}" if ret is not None else name
            out.append(f"* property `{head}`: {first_paragraph(value)}".rstrip(": "))
        elif inspect.isfunction(value) or isinstance(value, staticmethod | classmethod):
            func = value.__func__ if isinstance(value, staticmethod | classmethod) else value
            params, ret = _params_of(func)
            if params and params[0] in ("self", "cls"):
                params = params[1:]
            sig = f"{name}({', '.join(params)})" + (f" -> {ret}" if ret else "")
            out.append(f"* `{sig}`: {first_paragraph(value)}".rstrip(": "))
    return out


def entry(name: str, obj: Any) -> list[str]:
    lines = [f"### `{name}`", ""]
    if inspect.isclass(obj) and issubclass(obj, BaseException):
        bases = ", ".join(b.__name__ for b in obj.__bases__)
        lines += ["```python", f"class {name}({bases})", "```"]
    elif inspect.isclass(obj) and issubclass(obj, BaseModel):
        lines += ["```python", f"class {signature_text(name, _params_of_model(obj))}", "```"]
    elif inspect.isclass(obj):
        params, _ = _params_of(obj)
        lines += ["```python", f"class {signature_text(name, params)}", "```"]
    else:
        params, ret = _params_of(obj)
        lines += ["```python", signature_text(name, params, ret), "```"]
    lines += ["", first_paragraph(obj) or "(no docstring)"]
    if inspect.isclass(obj) and not issubclass(obj, BaseException):
        members = _members(obj)
        if members:
            lines += ["", *members]
    return [*lines, ""]


def render() -> str:
    """The generated block (without the markers)."""
    names = list(preserve_cp.__all__)
    objs = {n: getattr(preserve_cp, n) for n in names}
    errors = [n for n in names if inspect.isclass(objs[n]) and issubclass(objs[n], BaseException)]
    classes = [n for n in names if inspect.isclass(objs[n]) and n not in errors]
    functions = [n for n in names if n not in errors and n not in classes]
    out = [
        "<!-- Written by docs/gen_api_doc.py from preserve_cp/__init__.py; "
        "do not edit by hand. -->",
        "",
    ]
    for title, group in (("Functions", functions), ("Classes", classes), ("Errors", errors)):
        out += [f"## {title}", ""]
        for n in group:
            out += entry(n, objs[n])
    return "\n".join(out)


def splice(text: str, block: str) -> str:
    """``text`` with everything between the markers replaced by ``block``."""
    return _docgen.splice(DOC, BEGIN, END, text, block)


def main(argv: list[str] | None = None) -> int:
    return _docgen.main(DOC, BEGIN, END, render, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
