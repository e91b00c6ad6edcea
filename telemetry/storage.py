"""SQLite as every lingtan store uses it: WAL, fsync on commit, explicit transactions."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def open_db(path: Path, *, threads: bool = False) -> sqlite3.Connection:
    """Open (creating its folder) a database in WAL mode with synchronous=FULL.

    FULL: a committed transaction survives a power cut, not only a process crash. Autocommit
    mode: writes that belong together go through `transaction`. `threads` lets the connection
    be used from a thread other than the one that opened it (one at a time).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=not threads)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
