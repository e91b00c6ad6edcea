"""The edge outbox: a Sample is on disk before it is published, and leaves only on PUBACK."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from telemetry import topics
from telemetry.sample import Quality, Sample, encode
from telemetry.timeutil import now_ms

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
-- counters that must survive restarts (samples dropped by the size bound)
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
-- seq survives restarts and outbox deletion: the last seq handed out per device.
CREATE TABLE IF NOT EXISTS seq (
    site TEXT NOT NULL,
    device TEXT NOT NULL,
    last INTEGER NOT NULL,
    PRIMARY KEY (site, device)
);
"""


class Outbox:
    """SQLite (WAL, synchronous=FULL) queue of encoded Samples, in append order.

    Bounded by `max_samples`: when full, the oldest Samples are dropped, counted (persistently)
    and logged as errors. Losing the oldest keeps the newest readings flowing after an outage
    longer than the box was sized for.
    """

    def __init__(self, path: Path, *, max_samples: int = 5_000_000) -> None:
        self.max_samples = max_samples
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed Sample survives a power cut, not only a process crash.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._depth = self.depth()

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
            self._depth += 1
            if self._depth > self.max_samples:
                self._drop_oldest(self._depth - self.max_samples)
        return sample

    def _drop_oldest(self, n: int) -> None:
        self._db.execute(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)", (n,)
        )
        self._db.execute(
            "INSERT INTO meta VALUES ('dropped', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
            (n,),
        )
        self._depth -= n
        log.error(
            "outbox full (%d Samples): dropped the %d oldest; %d dropped since install",
            self.max_samples,
            n,
            self.dropped(),
        )

    def dropped(self) -> int:
        """Samples dropped by the size bound, ever (it survives restarts)."""
        row = self._db.execute("SELECT value FROM meta WHERE key='dropped'").fetchone()
        return 0 if row is None else int(row[0])

    def pending(self, after_id: int, limit: int) -> list[tuple[int, str, bytes]]:
        """Rows not yet handed out, oldest first."""
        return self._db.execute(
            "SELECT id, topic, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        ).fetchall()

    def delete(self, ids: list[int]) -> None:
        """Forget rows the broker acknowledged."""
        with self._tx():
            cur = self._db.executemany("DELETE FROM outbox WHERE id=?", [(i,) for i in ids])
            self._depth -= cur.rowcount

    def depth(self) -> int:
        """Samples waiting for a PUBACK."""
        return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    @property
    def cached_depth(self) -> int:
        """depth() without a query (kept in step with appends, deletes and drops)."""
        return self._depth

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
