"""SQLite result store keyed by each point's input hash: a killed sweep resumes exactly.

Every result is one row written in its own transaction (WAL journal), so a crash or Ctrl-C
leaves either the whole row or nothing; points already stored are never solved again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..outputs import require_folder

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    point TEXT NOT NULL,
    result TEXT NOT NULL,
    created REAL NOT NULL
)
"""


class Store:
    """A results file. ``Store(path)`` creates it when missing.

    >>> import tempfile, os
    >>> s = Store(os.path.join(tempfile.mkdtemp(), "r.sqlite"))
    >>> s.put("k1", {"model": "m"}, {"makespan_s": 1.0})
    True
    >>> s.put("k1", {"model": "m"}, {"makespan_s": 2.0})
    False
    >>> s.keys(), s.get("k1")["makespan_s"]
    ({'k1'}, 1.0)
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists() and self.path.is_dir():
            raise InputError(f"{path}: expected a results file, found a folder")
        require_folder(self.path)  # the same policy as outputs: folders are not created
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{path}: not a preserve-cp results file ({exc})") from None

    def keys(self) -> set[str]:
        return {k for (k,) in self.db.execute("SELECT key FROM results")}

    def put(self, key: str, point: dict[str, Any], result: dict[str, Any]) -> bool:
        """Insert one result atomically; False if the key was already there (nothing done)."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO results (key, point, result, created) VALUES (?, ?, ?, ?)",
            (
                key,
                json.dumps(point, sort_keys=True),
                json.dumps(result, sort_keys=True),
                time.time(),
            ),
        )
        return cur.rowcount == 1

    def get(self, key: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT result FROM results WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def rows(self) -> Iterable[tuple[str, dict[str, Any], dict[str, Any]]]:
        for key, p, r in self.db.execute("SELECT key, point, result FROM results ORDER BY key"):
            yield key, json.loads(p), json.loads(r)

    def close(self) -> None:
        self.db.close()
