"""The embedded time-series store: SQLite, one row per value; a Sample is stored once by its key."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from telemetry.sample import Quality, Sample
from telemetry.storage import open_db, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    site TEXT NOT NULL,
    device TEXT NOT NULL,
    quantity TEXT NOT NULL,
    UNIQUE (site, device, quantity)
);
-- one row per Sample: the dedupe key
CREATE TABLE IF NOT EXISTS samples (
    site TEXT NOT NULL,
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    quality TEXT NOT NULL,
    PRIMARY KEY (site, device, seq)
) WITHOUT ROWID;
-- one row per value, clustered by series and time for range queries
CREATE TABLE IF NOT EXISTS points (
    series INTEGER NOT NULL REFERENCES series(id),
    ts INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (series, ts, seq)
) WITHOUT ROWID;
"""


class SqliteStore:
    """Readings by series and time; a Sample is stored once however often it arrives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_db(path, threads=True)
        self._db.executescript(_SCHEMA)
        self._series: dict[tuple[str, str, str], int] = {
            (s, d, q): i
            for i, s, d, q in self._db.execute("SELECT id, site, device, quantity FROM series")
        }

    def insert(self, samples: Sequence[Sample]) -> int:
        """Store Samples in one transaction; return how many were new.

        Idempotent: a Sample stored before (same site, device, seq) changes nothing.
        """
        if not samples:
            return 0
        with transaction(self._db):
            cur = self._db.executemany(
                "INSERT OR IGNORE INTO samples(site, device, seq, ts, quality) "
                "VALUES (?, ?, ?, ?, ?)",
                [(s.site, s.device, s.seq, s.ts, s.quality.value) for s in samples],
            )
            new = cur.rowcount
            series = self._series_id
            self._db.executemany(
                "INSERT OR IGNORE INTO points(series, ts, seq, value) VALUES (?, ?, ?, ?)",
                [
                    (series(s.site, s.device, q), s.ts, s.seq, v)
                    for s in samples
                    for q, v in s.values.items()
                ],
            )
        return new

    def prune(self, before_ms: int) -> int:
        """Delete readings older than `before_ms` (the retention setting); return points deleted."""
        deleted = 0
        with transaction(self._db):
            for (sid,) in self._db.execute("SELECT id FROM series").fetchall():
                deleted += self._db.execute(
                    "DELETE FROM points WHERE series=? AND ts<?", (sid, before_ms)
                ).rowcount
            self._db.execute("DELETE FROM samples WHERE ts<?", (before_ms,))
        return deleted

    def _series_id(self, site: str, device: str, quantity: str) -> int:
        key = (site, device, quantity)
        sid = self._series.get(key)
        if sid is None:
            self._db.execute(
                "INSERT OR IGNORE INTO series(site, device, quantity) VALUES (?, ?, ?)", key
            )
            sid = int(
                self._db.execute(
                    "SELECT id FROM series WHERE site=? AND device=? AND quantity=?", key
                ).fetchone()[0]
            )
            self._series[key] = sid
        return sid

    def _find_series(self, site: str, device: str, quantity: str) -> int | None:
        # Another process (or connection) may have created the series since we cached.
        key = (site, device, quantity)
        if key not in self._series:
            row = self._db.execute(
                "SELECT id FROM series WHERE site=? AND device=? AND quantity=?", key
            ).fetchone()
            if row is None:
                return None
            self._series[key] = int(row[0])
        return self._series[key]

    def query(
        self, site: str, device: str, quantity: str, start: int = 0, end: int = 2**62
    ) -> list[tuple[int, int, float]]:
        """(ts, seq, value) of one series in [start, end), oldest first."""
        sid = self._find_series(site, device, quantity)
        if sid is None:
            return []
        return self._db.execute(
            "SELECT ts, seq, value FROM points WHERE series=? AND ts>=? AND ts<? ORDER BY ts, seq",
            (sid, start, end),
        ).fetchall()

    def latest(self, site: str, device: str, quantity: str) -> tuple[int, float] | None:
        """The newest (ts, value) of a series."""
        sid = self._find_series(site, device, quantity)
        if sid is None:
            return None
        row = self._db.execute(
            "SELECT ts, value FROM points WHERE series=? ORDER BY ts DESC, seq DESC LIMIT 1", (sid,)
        ).fetchone()
        return None if row is None else (int(row[0]), float(row[1]))

    def count_samples(self, site: str | None = None) -> int:
        """Number of Samples stored (for a site, or all)."""
        if site is None:
            return int(self._db.execute("SELECT count(*) FROM samples").fetchone()[0])
        return int(
            self._db.execute("SELECT count(*) FROM samples WHERE site=?", (site,)).fetchone()[0]
        )

    def quality_of(self, site: str, device: str, seq: int) -> Quality | None:
        """The quality a stored Sample was recorded with."""
        row = self._db.execute(
            "SELECT quality FROM samples WHERE site=? AND device=? AND seq=?", (site, device, seq)
        ).fetchone()
        return None if row is None else Quality(row[0])

    def writable(self) -> None:
        """Raise sqlite3.Error unless a write transaction can be opened and the file is sound."""
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("ROLLBACK")
        (result,) = self._db.execute("PRAGMA quick_check").fetchone()
        if result != "ok":
            raise sqlite3.DatabaseError(f"integrity check: {result}")

    def close(self) -> None:
        """Close the database."""
        self._db.close()
