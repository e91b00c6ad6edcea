"""The ledger (SQLite): the system of record for energy, emissions and what happened to the data."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from telemetry.storage import open_db, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meter_state (
    site TEXT NOT NULL, device TEXT NOT NULL, quantity TEXT NOT NULL,
    last_seq INTEGER NOT NULL, last_ts INTEGER NOT NULL, last_value REAL NOT NULL,
    -- a reading held as a possible spike, until the next one decides
    held_ts INTEGER, held_value REAL,
    PRIMARY KEY (site, device, quantity)
);
-- energy per meter per 15-minute UTC interval
CREATE TABLE IF NOT EXISTS meter_interval (
    site TEXT NOT NULL, device TEXT NOT NULL, role TEXT NOT NULL,
    start_ms INTEGER NOT NULL, energy_kwh REAL NOT NULL,
    -- the part of energy_kwh spread across a gap in the readings
    estimated_kwh REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (site, device, start_ms)
);
-- site figures per 15-minute UTC interval; version/published_version make it its own outbox
CREATE TABLE IF NOT EXISTS site_interval (
    site TEXT NOT NULL, start_ms INTEGER NOT NULL,
    grid_import_kwh REAL NOT NULL,
    scope2_location_kgco2e REAL NOT NULL,
    grid_factor_id TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    published_version INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (site, start_ms)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    site TEXT NOT NULL, device TEXT NOT NULL, ts INTEGER NOT NULL, seq INTEGER NOT NULL,
    kind TEXT NOT NULL, detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS derived_seq (site TEXT PRIMARY KEY, last INTEGER NOT NULL);
"""


# Columns added after the first ledgers were written: (table, column, declaration).
_MIGRATIONS = [
    ("meter_state", "held_ts", "INTEGER"),
    ("meter_state", "held_value", "REAL"),
    ("meter_interval", "estimated_kwh", "REAL NOT NULL DEFAULT 0"),
]


@dataclass(frozen=True)
class MeterState:
    """The baseline reading of a counter, and a reading held as a possible spike."""

    seq: int  # the newest seq seen (a redelivery is at or below it)
    ts: int  # the baseline reading's time
    value: float  # the baseline reading
    held_ts: int | None = None
    held_value: float | None = None


@dataclass(frozen=True)
class SiteInterval:
    """Site figures of one 15-minute interval."""

    start_ms: int
    grid_import_kwh: float
    scope2_location_kgco2e: float
    grid_factor_id: str
    version: int


@dataclass(frozen=True)
class Event:
    """Something that happened to the data, and what was done about it."""

    site: str
    device: str
    ts: int
    seq: int
    kind: str
    detail: str


class Ledger:
    """All writes happen inside `transaction()`; a crash leaves the last committed state."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_db(path, threads=True)
        self._db.executescript(_SCHEMA)
        for table, column, decl in _MIGRATIONS:
            have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit of accounting."""
        with transaction(self._db):
            yield

    def meter_state(self, site: str, device: str, quantity: str) -> MeterState | None:
        """Last accounted reading of a counter."""
        row = self._db.execute(
            "SELECT last_seq, last_ts, last_value, held_ts, held_value FROM meter_state "
            "WHERE site=? AND device=? AND quantity=?",
            (site, device, quantity),
        ).fetchone()
        if row is None:
            return None
        return MeterState(int(row[0]), int(row[1]), float(row[2]), row[3], row[4])

    def set_meter_state(self, site: str, device: str, quantity: str, st: MeterState) -> None:
        """Move a counter's baseline."""
        self._db.execute(
            "INSERT INTO meter_state(site, device, quantity, last_seq, last_ts, last_value, "
            "held_ts, held_value) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(site, device, quantity) DO UPDATE SET last_seq=excluded.last_seq, "
            "last_ts=excluded.last_ts, last_value=excluded.last_value, "
            "held_ts=excluded.held_ts, held_value=excluded.held_value",
            (site, device, quantity, st.seq, st.ts, st.value, st.held_ts, st.held_value),
        )

    def add_meter_energy(
        self, site: str, device: str, role: str, start_ms: int, kwh: float, *, estimated: bool
    ) -> None:
        """Add energy to a meter's interval (`estimated`: spread across a gap)."""
        self._db.execute(
            "INSERT INTO meter_interval(site, device, role, start_ms, energy_kwh, estimated_kwh) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(site, device, start_ms) DO UPDATE SET "
            "energy_kwh = energy_kwh + excluded.energy_kwh, "
            "estimated_kwh = estimated_kwh + excluded.estimated_kwh",
            (site, device, role, start_ms, kwh, kwh if estimated else 0.0),
        )

    def add_site_grid_import(
        self, site: str, start_ms: int, kwh: float, kgco2e: float, factor_id: str
    ) -> None:
        """Add grid import and its location-based emissions to a site interval."""
        self._db.execute(
            "INSERT INTO site_interval(site, start_ms, grid_import_kwh, scope2_location_kgco2e, "
            "grid_factor_id) VALUES (?, ?, ?, ?, ?) ON CONFLICT(site, start_ms) DO UPDATE SET "
            "grid_import_kwh = grid_import_kwh + excluded.grid_import_kwh, "
            "scope2_location_kgco2e = scope2_location_kgco2e + excluded.scope2_location_kgco2e, "
            "version = version + 1",
            (site, start_ms, kwh, kgco2e, factor_id),
        )

    def record_event(self, ev: Event) -> None:
        """Append to the event log."""
        self._db.execute(
            "INSERT INTO events(site, device, ts, seq, kind, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (ev.site, ev.device, ev.ts, ev.seq, ev.kind, ev.detail),
        )

    def events(self, site: str) -> list[Event]:
        """The event log of a site, oldest first."""
        return [
            Event(*row)
            for row in self._db.execute(
                "SELECT site, device, ts, seq, kind, detail FROM events WHERE site=? ORDER BY id",
                (site,),
            )
        ]

    def meter_intervals(self, site: str, device: str) -> list[tuple[int, float]]:
        """(start_ms, kWh) of one meter, oldest first."""
        return [
            (int(a), float(b))
            for a, b in self._db.execute(
                "SELECT start_ms, energy_kwh FROM meter_interval WHERE site=? AND device=? "
                "ORDER BY start_ms",
                (site, device),
            )
        ]

    def estimated_kwh(self, site: str, device: str) -> float:
        """Energy of a meter spread across gaps (estimated), all intervals."""
        row = self._db.execute(
            "SELECT coalesce(sum(estimated_kwh), 0) FROM meter_interval WHERE site=? AND device=?",
            (site, device),
        ).fetchone()
        return float(row[0])

    def meter_energy(
        self, site: str, start_ms: int = 0, end_ms: int = 2**62
    ) -> list[tuple[str, str, int, float]]:
        """(device, role, interval start, kWh) of every meter in [start_ms, end_ms)."""
        return [
            (str(d), str(r), int(t), float(k))
            for d, r, t, k in self._db.execute(
                "SELECT device, role, start_ms, energy_kwh FROM meter_interval "
                "WHERE site=? AND start_ms>=? AND start_ms<? ORDER BY start_ms, device",
                (site, start_ms, end_ms),
            )
        ]

    def energy_by_role(
        self, site: str, start_ms: int = 0, end_ms: int = 2**62
    ) -> dict[str, tuple[float, float]]:
        """{role: (kWh, of which estimated)} over intervals starting in [start_ms, end_ms)."""
        return {
            role: (float(kwh), float(est))
            for role, kwh, est in self._db.execute(
                "SELECT role, sum(energy_kwh), sum(estimated_kwh) FROM meter_interval "
                "WHERE site=? AND start_ms>=? AND start_ms<? GROUP BY role ORDER BY role",
                (site, start_ms, end_ms),
            )
        }

    def site_intervals(
        self, site: str, start_ms: int = 0, end_ms: int = 2**62
    ) -> list[SiteInterval]:
        """Site figures in [start_ms, end_ms), oldest first."""
        return [
            SiteInterval(*row)
            for row in self._db.execute(
                "SELECT start_ms, grid_import_kwh, scope2_location_kgco2e, grid_factor_id, version "
                "FROM site_interval WHERE site=? AND start_ms>=? AND start_ms<? ORDER BY start_ms",
                (site, start_ms, end_ms),
            )
        ]

    def unpublished(self, site: str, before_ms: int) -> list[SiteInterval]:
        """Site intervals that changed since last published and start by `before_ms`."""
        return [
            SiteInterval(*row)
            for row in self._db.execute(
                "SELECT start_ms, grid_import_kwh, scope2_location_kgco2e, grid_factor_id, version "
                "FROM site_interval WHERE site=? AND version > published_version AND start_ms <= ? "
                "ORDER BY start_ms",
                (site, before_ms),
            )
        ]

    def mark_published(self, site: str, start_ms: int, version: int) -> None:
        """Record that `version` of an interval reached the broker."""
        self._db.execute(
            "UPDATE site_interval SET published_version=max(published_version, ?) "
            "WHERE site=? AND start_ms=?",
            (version, site, start_ms),
        )

    def next_derived_seq(self, site: str) -> int:
        """Allocate the next seq of the site's derived Samples."""
        row = self._db.execute("SELECT last FROM derived_seq WHERE site=?", (site,)).fetchone()
        seq = 0 if row is None else int(row[0]) + 1
        self._db.execute(
            "INSERT INTO derived_seq VALUES (?, ?) ON CONFLICT(site) "
            "DO UPDATE SET last=excluded.last",
            (site, seq),
        )
        return seq

    def close(self) -> None:
        """Close the database."""
        self._db.close()
