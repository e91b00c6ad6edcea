"""The edge outbox: a Sample is on disk before it is published, and leaves only on PUBACK."""

from __future__ import annotations

import logging
from pathlib import Path

from telemetry import topics
from telemetry.sample import Quality, Sample, encode
from telemetry.storage import open_db, transaction
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

    Appends are committed in groups (`flush`): one transaction, one fsync, for every reading of
    a poll tick, however many devices. Nothing is published before it is committed: `pending`
    flushes first. Acknowledged rows are deleted in the next group.

    Bounded by `max_samples`: when full, the oldest Samples are dropped, counted (persistently)
    and logged as errors. Losing the oldest keeps the newest readings flowing after an outage
    longer than the box was sized for.
    """

    def __init__(self, path: Path, *, max_samples: int = 5_000_000) -> None:
        self.max_samples = max_samples
        self.path = path
        # synchronous=FULL: a committed Sample survives a power cut, not only a process crash.
        self._db = open_db(path)
        self._db.executescript(_SCHEMA)
        self._seq: dict[tuple[str, str], int] = {
            (site, dev): int(last) for site, dev, last in self._db.execute("SELECT * FROM seq")
        }
        self._topics: dict[tuple[str, str], str] = {}  # checked once per device, not per read
        self._rows: list[tuple[str, str, bytes, int]] = []
        self._seq_dirty: set[tuple[str, str]] = set()
        self._acked: list[int] = []
        self._depth = int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def append(
        self,
        site: str,
        device: str,
        ts: int,
        values: dict[str, float],
        quality: Quality = Quality.GOOD,
    ) -> Sample:
        """Give the read the device's next seq; it is stored at the next flush."""
        key = (site, device)
        seq = self._seq.get(key, -1) + 1
        sample = Sample(site=site, device=device, seq=seq, ts=ts, values=values, quality=quality)
        self._seq[key] = seq
        self._seq_dirty.add(key)
        topic = self._topics.get(key)
        if topic is None:
            topic = self._topics[key] = topics.sample(site, device)
        self._rows.append((device, topic, encode(sample), now_ms()))
        return sample

    def flush(self) -> int:
        """Commit appended Samples and forget acknowledged ones, in one transaction."""
        if not self._rows and not self._acked:
            return 0
        rows, acked = self._rows, self._acked
        with transaction(self._db):
            if rows:
                self._db.executemany(
                    "INSERT INTO outbox(device, topic, payload, created_ms) VALUES (?, ?, ?, ?)",
                    rows,
                )
                self._db.executemany(
                    "INSERT INTO seq(site, device, last) VALUES (?, ?, ?) "
                    "ON CONFLICT(site, device) DO UPDATE SET last=excluded.last",
                    [(site, dev, self._seq[(site, dev)]) for site, dev in self._seq_dirty],
                )
            if acked:
                cur = self._db.executemany("DELETE FROM outbox WHERE id=?", [(i,) for i in acked])
                self._depth -= cur.rowcount
            self._depth += len(rows)
            if self._depth > self.max_samples:
                self._drop_oldest(self._depth - self.max_samples)
        self._rows, self._acked = [], []
        self._seq_dirty.clear()
        return len(rows)

    @property
    def unflushed(self) -> int:
        """Appends waiting for the next flush."""
        return len(self._rows)

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
        """Committed rows after `after_id`, oldest first (flushes first)."""
        self.flush()
        return self._db.execute(
            "SELECT id, topic, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        ).fetchall()

    def delete(self, ids: list[int]) -> None:
        """Forget rows the broker acknowledged (at the next flush)."""
        self._acked.extend(ids)

    def depth(self) -> int:
        """Samples waiting for a PUBACK (flushes first)."""
        self.flush()
        return self._depth

    @property
    def cached_depth(self) -> int:
        """Samples stored or waiting to be, not yet acknowledged (no I/O)."""
        return self._depth + len(self._rows) - len(self._acked)

    def oldest_ms(self) -> int | None:
        """Creation time of the oldest waiting Sample."""
        row = self._db.execute("SELECT min(created_ms) FROM outbox").fetchone()
        return None if row[0] is None else int(row[0])

    def close(self) -> None:
        """Flush and close the database."""
        self.flush()
        self._db.close()
