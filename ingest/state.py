"""Ingest's own durable state: the dedupe window and the seq of its self-metric Samples."""

from __future__ import annotations

from pathlib import Path

from ingest.dedupe import SeenWindow
from telemetry.storage import open_db, transaction


class IngestState:
    """One SQLite file (WAL, synchronous=FULL) per ingest client id."""

    def __init__(self, path: Path, *, max_ranges: int) -> None:
        self.path = path
        self.db = open_db(path, threads=True)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)"
        )
        self.window = SeenWindow(self.db, max_ranges=max_ranges)

    def commit_window(self) -> None:
        """Persist the window's changes in one transaction."""
        with transaction(self.db):
            self.window.save()

    def next_seq(self, name: str) -> int:
        """The next seq of a Sample stream this process publishes (durable before it is used)."""
        with transaction(self.db):
            row = self.db.execute("SELECT value FROM meta WHERE key=?", (name,)).fetchone()
            seq = 0 if row is None else int(row[0]) + 1
            self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (name, seq))
        return seq

    def close(self) -> None:
        """Close the database."""
        self.db.close()
