"""Shared glue of the docs/gen_*.py scripts: splice a generated block between two markers of a
page, and the ``--check`` command line. Each script keeps its own ``DOC``, markers and
``render()``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def splice(doc: Path, begin: str, end: str, text: str, block: str) -> str:
    """``text`` with everything between the markers replaced by ``block``."""
    try:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
    except ValueError:
        raise SystemExit(f"{doc.name}: expected the markers {begin} and {end}") from None
    return f"{head}{begin}\n{block}{end}{tail}"


def main(
    doc: Path,
    begin: str,
    end: str,
    render: Callable[[], str],
    description: str,
    argv: list[str] | None = None,
) -> int:
    """Rewrite the block in place, or with ``--check`` exit 1 when it is stale."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--check", action="store_true", help="exit 1 when the block is stale")
    args = p.parse_args(argv)
    old = doc.read_text(encoding="utf-8")
    new = splice(doc, begin, end, old, render())
    if args.check:
        print("up to date" if new == old else f"{doc.name}: generated block is stale")
        return 0 if new == old else 1
    doc.write_text(new, encoding="utf-8")
    print(f"{doc.name}: {'unchanged' if new == old else 'rewritten'}")
    return 0
