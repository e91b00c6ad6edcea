"""The edge outbox: a Sample is on disk before it is published, and leaves only on PUBACK."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from telemetry import topics
from telemetry.sample import Quality, Sample, encode
from telemetry.timeutil import now_ms

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
-- seq survives restarts and outbox deletion: the last seq handed out per device.
CREATE TABLE IF NOT EXISTS seq (
    site TEXT NOT NULL,
    device TEXT NOT NULL,
    last INTEGER NOT NULL,
    PRIMARY KEY (site, device)
);
"""


class Outbox:
    """SQLite (WAL, synchronous=FULL) queue of encoded Samples, in append order."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed Sample survives a power cut, not only a process crash.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def append(
        self,
        site: str,
        device: str,
        ts: int,
        values: dict[str, float],
        quality: Quality = Quality.GOOD,
    ) -> Sample:
        """Give the read the device's next seq and store it, in one transaction."""
        with self._tx():
            row = self._db.execute(
                "SELECT last FROM seq WHERE site=? AND device=?", (site, device)
            ).fetchone()
            seq = 0 if row is None else row[0] + 1
            sample = Sample(
                site=site, device=device, seq=seq, ts=ts, values=values, quality=quality
            )
            self._db.execute(
                "INSERT INTO seq(site, device, last) VALUES (?, ?, ?) "
                "ON CONFLICT(site, device) DO UPDATE SET last=excluded.last",
                (site, device, seq),
            )
            self._db.execute(
                "INSERT INTO outbox(device, topic, payload, created_ms) VALUES (?, ?, ?, ?)",
                (device, topics.sample(site, device), encode(sample), now_ms()),
            )
        return sample

    def pending(self, after_id: int, limit: int) -> list[tuple[int, str, bytes]]:
        """Rows not yet handed out, oldest first."""
        return self._db.execute(
            "SELECT id, topic, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        ).fetchall()

    def delete(self, ids: list[int]) -> None:
        """Forget rows the broker acknowledged."""
        with self._tx():
            self._db.executemany("DELETE FROM outbox WHERE id=?", [(i,) for i in ids])

    def depth(self) -> int:
        """Samples waiting for a PUBACK."""
        return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def oldest_ms(self) -> int | None:
        """Creation time of the oldest waiting Sample."""
        row = self._db.execute("SELECT min(created_ms) FROM outbox").fetchone()
        return None if row[0] is None else int(row[0])

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def _tx(self) -> _Tx:
        return _Tx(self._db)


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
