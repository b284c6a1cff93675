"""Regenerate the reference of docs/cli.md from the argparse parser of ``preserve-cp``.

Usage::

    python docs/gen_cli_doc.py          # rewrite the generated block in place
    python docs/gen_cli_doc.py --check  # exit 1 when the block is out of date

Every subcommand (nested ones too) gets its one-line help, a synopsis and a table of its
arguments: each option with its metavar, its help text, its choices and its default, read from
``preserve_cp.cli._parser()``. The ``solve --json`` object is listed field by field from
``preserve_cp/schemas/solve.schema.json``. Only the text between the markers is replaced;
tests/test_docs.py fails when it differs from what this script would write.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import _docgen  # docs/_docgen.py (this folder is on sys.path when run as a script)

from preserve_cp.cli import _parser
from preserve_cp.defaults import WORKLOAD_DEFAULTS

DOC = Path(__file__).resolve().parent / "cli.md"
BEGIN = "<!-- BEGIN GENERATED CLI -->"
END = "<!-- END GENERATED CLI -->"
SCHEMA = Path(__file__).resolve().parent.parent / "preserve_cp" / "schemas" / "solve.schema.json"


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;")


def _subcommands(p: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each direct subcommand, in the parser's order."""
    out = []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sp in action.choices.items():
                out.append((name, helps.get(name, ""), sp))
    return out


def _arguments(p: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's own arguments, without -h and the --debug every subcommand repeats."""
    return [
        a
        for a in p._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
        and a.default != argparse.SUPPRESS
    ]


def _name(a: argparse.Action) -> str:
    if not a.option_strings:
        return str(a.metavar or a.dest)
    flag = ", ".join(a.option_strings)
    if a.nargs == 0:  # store_true and friends take no value
        return flag
    return f"{flag} {a.metavar or a.dest.upper()}"


def _default(a: argparse.Action) -> str:
    if a.required or not a.option_strings:
        return "required"
    if a.nargs == 0:
        return "off"
    if a.default is None or a.default == "":
        return "see the text" if "default" in (a.help or "") else "none"
    return f"`{a.default}`"


def _help(a: argparse.Action) -> str:
    text = a.help or ""
    if a.choices is not None:
        text += f" (one of: {', '.join(f'`{c}`' for c in a.choices)})"
    return _cell(text)


def _synopsis(prog: str, p: argparse.ArgumentParser) -> str:
    parts = [prog]
    for a in _arguments(p):
        if a.required or not a.option_strings:
            parts.append(_name(a))
    if any(not (a.required or not a.option_strings) for a in _arguments(p)):
        parts.append("[options]")
    return " ".join(parts)


def _command(prog: str, summary: str, p: argparse.ArgumentParser) -> list[str]:
    subs = _subcommands(p)
    lines = [f"### `{prog}`", "", f"{summary[:1].upper()}{summary[1:]}.", ""]
    if subs:
        lines += [f"Subcommands: {', '.join(f'`{n}`' for n, _, _ in subs)}.", ""]
    else:
        lines += ["```text", _synopsis(prog, p), "```", ""]
    args = _arguments(p)
    if args:
        lines += ["| argument | what it does | default |", "|---|---|---|"]
        lines += [f"| `{_name(a)}` | {_help(a)} | {_default(a)} |" for a in args]
        lines.append("")
    for name, help_text, sp in subs:
        lines += _command(f"{prog} {name}", help_text, sp)
    return lines


def _type(node: dict[str, Any]) -> str:
    if "enum" in node:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    kind = node.get("type", "any")
    return " or ".join(kind) if isinstance(kind, list) else str(kind)


def _resolve(node: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``node`` with a local ``$ref`` (``#/$defs/NAME``) replaced by what it points to."""
    ref = node.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return node
    target: Any = schema
    for part in ref[2:].split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def _fields(node: dict[str, Any], prefix: str, schema: dict[str, Any]) -> list[str]:
    """One table row per field, nested objects and list items by dotted path."""
    rows = []
    required = set(node.get("required", []))
    for key, raw in node.get("properties", {}).items():
        sub = _resolve(raw, schema)
        path = f"{prefix}{key}"
        need = "yes" if key in required else "no"
        text = _cell(sub.get("description", ""))
        rows.append(f"| `{path}` | {_cell(_type(sub))} | {need} | {text} |")
        if "properties" in sub:
            rows += _fields(sub, f"{path}.", schema)
        items = sub.get("items")
        if isinstance(items, dict):
            items = _resolve(items, schema)
            if "properties" in items:
                rows += _fields(items, f"{path}[].", schema)
    return rows


def render() -> str:
    """The generated block (without the markers)."""
    p = _parser()
    out = [
        "<!-- Written by docs/gen_cli_doc.py from preserve_cp/cli.py and "
        "preserve_cp/schemas/solve.schema.json; do not edit by hand. -->",
        "",
        "## Commands",
        "",
        "Workload options left out take the same defaults in every command and in the Python "
        "API ("
        + ", ".join(f"`--{k} {v}`" for k, v in WORKLOAD_DEFAULTS.items())
        + "; `preserve_cp/defaults.py`, [api.md](api.md#defaults)).",
        "",
        "| argument | what it does | default |",
        "|---|---|---|",
    ]
    debug = next(a for a in p._actions if "--debug" in a.option_strings)
    out += [f"| `{_name(debug)}` | {_help(debug)} | {_default(debug)} |", ""]
    for name, help_text, sp in _subcommands(p):
        out += _command(f"preserve-cp {name}", help_text, sp)
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    out += [
        "## The `solve --json` object",
        "",
        _cell(schema.get("description", "")),
        "",
        "| field | type | always there | meaning |",
        "|---|---|---|---|",
        *_fields(schema, "", schema),
        "",
    ]
    return "\n".join(out)


def splice(text: str, block: str) -> str:
    """``text`` with everything between the markers replaced by ``block``."""
    return _docgen.splice(DOC, BEGIN, END, text, block)


def main(argv: list[str] | None = None) -> int:
    return _docgen.main(DOC, BEGIN, END, render, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
