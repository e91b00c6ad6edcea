"""Which Samples ingest has already stored: seq ranges per device, persisted in SQLite.

A device's seq is strictly increasing, and the edge delivers in order, so a device that is read
in order keeps one range [lo, hi]. A gap (Samples the edge dropped, or another ingest process of
a shared subscription took) starts a new range. The ranges per device are bounded: past the bound
the oldest range is forgotten, and a seq at or below it can no longer be told apart from a
duplicate. Such a Sample is neither stored (it may double a value) nor dropped (it may be new):
the caller dead-letters it.
"""

from __future__ import annotations

import bisect
import sqlite3
from enum import Enum

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dedupe_ranges (
    site TEXT NOT NULL,
    device TEXT NOT NULL,
    lo INTEGER NOT NULL,
    hi INTEGER NOT NULL,
    PRIMARY KEY (site, device, lo)
) WITHOUT ROWID;
-- the highest seq forgotten per device: anything at or below it is outside the window
CREATE TABLE IF NOT EXISTS dedupe_floor (
    site TEXT NOT NULL,
    device TEXT NOT NULL,
    floor INTEGER NOT NULL,
    PRIMARY KEY (site, device)
) WITHOUT ROWID;
"""

Key = tuple[str, str]


class Seen(Enum):
    """What the window knows of a seq."""

    NEW = "new"
    DUPLICATE = "duplicate"
    OUTSIDE = "outside"  # below the window: cannot tell


class _Device:
    """Sorted, disjoint, non-adjacent ranges of one device; `los` mirrors the range starts."""

    __slots__ = ("floor", "his", "los")

    def __init__(self) -> None:
        self.los: list[int] = []
        self.his: list[int] = []
        self.floor: int | None = None


class SeenWindow:
    """Seen seqs per (site, device); `add` marks, `save` persists the changes since the last."""

    def __init__(self, db: sqlite3.Connection, *, max_ranges: int = 1000) -> None:
        if max_ranges < 1:
            raise ValueError("max_ranges must be at least 1")
        self._db = db
        self.max_ranges = max_ranges
        db.executescript(_SCHEMA)
        self._devices: dict[Key, _Device] = {}
        for site, device, lo, hi in db.execute(
            "SELECT site, device, lo, hi FROM dedupe_ranges ORDER BY site, device, lo"
        ):
            d = self._devices.setdefault((site, device), _Device())
            d.los.append(lo)
            d.his.append(hi)
        for site, device, floor in db.execute("SELECT site, device, floor FROM dedupe_floor"):
            self._devices.setdefault((site, device), _Device()).floor = floor
        # (key, lo) of ranges written or removed since the last save
        self._dirty: set[tuple[Key, int]] = set()
        self._floors: set[Key] = set()

    def check(self, key: Key, seq: int) -> Seen:
        """Whether `seq` of the device `key` was added before."""
        d = self._devices.get(key)
        if d is None:
            return Seen.NEW
        if d.his and seq > d.his[-1]:
            return Seen.NEW  # the common case: the next Sample of an in-order device
        if d.floor is not None and seq <= d.floor:
            return Seen.OUTSIDE
        i = bisect.bisect_right(d.los, seq) - 1
        return Seen.DUPLICATE if i >= 0 and seq <= d.his[i] else Seen.NEW

    def add(self, key: Key, seq: int) -> None:
        """Mark `seq` as stored (a no-op if it already is)."""
        d = self._devices.get(key)
        if d is None:
            d = self._devices[key] = _Device()
        los, his = d.los, d.his
        if his and seq == his[-1] + 1:  # extend the newest range
            his[-1] = seq
            self._dirty.add((key, los[-1]))
            return
        if d.floor is not None and seq <= d.floor:
            return  # outside the window: nothing to learn
        i = bisect.bisect_right(los, seq) - 1
        if i >= 0 and seq <= his[i]:
            return
        joins_left = i >= 0 and his[i] + 1 == seq
        joins_right = i + 1 < len(los) and los[i + 1] == seq + 1
        if joins_left and joins_right:  # fills the gap between two ranges
            self._dirty.add((key, los[i + 1]))
            his[i] = his[i + 1]
            del los[i + 1], his[i + 1]
            self._dirty.add((key, los[i]))
        elif joins_left:
            his[i] = seq
            self._dirty.add((key, los[i]))
        elif joins_right:
            self._dirty.add((key, los[i + 1]))
            los[i + 1] = seq
            self._dirty.add((key, seq))
        else:
            los.insert(i + 1, seq)
            his.insert(i + 1, seq)
            self._dirty.add((key, seq))
        while len(los) > self.max_ranges:
            self._dirty.add((key, los[0]))
            d.floor = his[0]
            self._floors.add(key)
            del los[0], his[0]

    def save(self) -> None:
        """Write what changed since the last save (the caller commits)."""
        upserts: list[tuple[str, str, int, int]] = []
        deletes: list[tuple[str, str, int]] = []
        for key, lo in self._dirty:
            d = self._devices[key]
            i = bisect.bisect_left(d.los, lo)
            if i < len(d.los) and d.los[i] == lo:
                upserts.append((key[0], key[1], lo, d.his[i]))
            else:
                deletes.append((key[0], key[1], lo))
        if deletes:
            self._db.executemany(
                "DELETE FROM dedupe_ranges WHERE site=? AND device=? AND lo=?", deletes
            )
        if upserts:
            self._db.executemany(
                "INSERT OR REPLACE INTO dedupe_ranges(site, device, lo, hi) VALUES (?, ?, ?, ?)",
                upserts,
            )
        if self._floors:
            self._db.executemany(
                "INSERT OR REPLACE INTO dedupe_floor(site, device, floor) VALUES (?, ?, ?)",
                [(k[0], k[1], self._devices[k].floor) for k in self._floors],
            )
        self._dirty.clear()
        self._floors.clear()

    def ranges(self, key: Key) -> list[tuple[int, int]]:
        """The seen ranges of a device, oldest first (for status and tests)."""
        d = self._devices.get(key)
        return [] if d is None else list(zip(d.los, d.his, strict=True))
