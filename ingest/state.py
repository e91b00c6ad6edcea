"""Ingest's own durable state: the dedupe window and the seq of its self-metric Samples."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ingest.dedupe import SeenWindow


class IngestState:
    """One SQLite file (WAL, synchronous=FULL) per ingest client id."""

    def __init__(self, path: Path, *, max_ranges: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)"
        )
        self.window = SeenWindow(self.db, max_ranges=max_ranges)

    def commit_window(self) -> None:
        """Persist the window's changes in one transaction."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.window.save()
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def next_seq(self, name: str) -> int:
        """The next seq of a Sample stream this process publishes (durable before it is used)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key=?", (name,)).fetchone()
            seq = 0 if row is None else int(row[0]) + 1
            self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (name, seq))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return seq

    def close(self) -> None:
        """Close the database."""
        self.db.close()
