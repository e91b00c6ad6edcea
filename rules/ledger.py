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
    -- a gas meter's last volume correction factor (line to standard conditions)
    correction REAL,
    PRIMARY KEY (site, device, quantity)
);
-- what each meter measured per 15-minute UTC interval: energy in kWh, or a fuel in its unit
-- (m3 at standard conditions, L or kg): the activity data every emission is computed from
CREATE TABLE IF NOT EXISTS meter_interval (
    site TEXT NOT NULL, device TEXT NOT NULL, role TEXT NOT NULL,
    start_ms INTEGER NOT NULL, amount REAL NOT NULL,
    -- the part of amount spread across a gap in the readings, or integrated from power
    estimated REAL NOT NULL DEFAULT 0,
    unit TEXT NOT NULL DEFAULT 'kWh',
    PRIMARY KEY (site, device, start_ms)
);
-- emissions per 15-minute UTC interval, by source (a meter or a manual entry), scope, method
-- and gas, with the ids of every factor used. scope: 1, 2 or biogenic (CO2 from biomass,
-- reported outside the scopes); method: location for Scope 2 rows, empty for the others.
-- Market-based Scope 2 is allocated from grid import and the site's instruments
-- (rules/market.py) when a period is reported.
CREATE TABLE IF NOT EXISTS emission_interval (
    site TEXT NOT NULL, start_ms INTEGER NOT NULL, source TEXT NOT NULL,
    scope TEXT NOT NULL, method TEXT NOT NULL, category TEXT NOT NULL, gas TEXT NOT NULL,
    gas_kg REAL NOT NULL, kgco2e REAL NOT NULL, factor_ids TEXT NOT NULL,
    PRIMARY KEY (site, start_ms, source, scope, method, gas)
);
-- a recomputation of past emissions (lingtan recompute): when, from when, why, and the
-- period's totals before and after
CREATE TABLE IF NOT EXISTS revision (
    id INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT NOT NULL, at_ms INTEGER NOT NULL,
    from_ms INTEGER NOT NULL, reason TEXT NOT NULL, before_json TEXT NOT NULL,
    after_json TEXT NOT NULL
);
-- every emission row a revision changed: the previous figure and factors, and the new
CREATE TABLE IF NOT EXISTS revision_change (
    revision INTEGER NOT NULL REFERENCES revision(id), start_ms INTEGER NOT NULL,
    source TEXT NOT NULL, scope TEXT NOT NULL, method TEXT NOT NULL, gas TEXT NOT NULL,
    old_kgco2e REAL NOT NULL, new_kgco2e REAL NOT NULL,
    old_factor_ids TEXT NOT NULL, new_factor_ids TEXT NOT NULL
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
-- periods read every meter's intervals by time
CREATE INDEX IF NOT EXISTS meter_interval_by_time ON meter_interval(site, start_ms);
CREATE INDEX IF NOT EXISTS events_by_time ON events(site, ts);
CREATE TABLE IF NOT EXISTS derived_seq (site TEXT PRIMARY KEY, last INTEGER NOT NULL);
"""


# Columns added after the first ledgers were written: (table, column, declaration).
_MIGRATIONS = [
    ("meter_state", "held_ts", "INTEGER"),
    ("meter_state", "held_value", "REAL"),
    ("meter_interval", "estimated_kwh", "REAL NOT NULL DEFAULT 0"),
    ("meter_interval", "unit", "TEXT NOT NULL DEFAULT 'kWh'"),
    ("meter_state", "correction", "REAL"),
]
# Columns renamed since: (table, old name, new name).
_RENAMES = [
    ("meter_interval", "energy_kwh", "amount"),
    ("meter_interval", "estimated_kwh", "estimated"),
]


@dataclass(frozen=True)
class EmissionRow:
    """Emissions of one source, scope, method and gas in one 15-minute interval."""

    start_ms: int
    source: str
    scope: str  # "1", "2" or "biogenic"
    method: str  # "location" for Scope 2, "" otherwise
    category: str  # stationary_combustion, refrigerant, electricity, heat, steam, cooling
    gas: str
    gas_kg: float
    kgco2e: float
    factor_ids: str  # comma-separated ids of every factor used


@dataclass(frozen=True)
class MeterState:
    """The baseline reading of a counter, and a reading held as a possible spike."""

    seq: int  # the newest seq seen (a redelivery is at or below it)
    ts: int  # the baseline reading's time
    value: float  # the baseline reading
    held_ts: int | None = None
    held_value: float | None = None
    correction: float | None = None


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
        self._states: dict[tuple[str, str, str], MeterState | None] = {}
        self._db.executescript(_SCHEMA)
        for table, column, decl in _MIGRATIONS:
            have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in have and not any(o == column and n in have for _, o, n in _RENAMES):
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        for table, old, new in _RENAMES:
            have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            if old in have:
                self._db.execute(f"ALTER TABLE {table} RENAME COLUMN {old} TO {new}")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit of accounting."""
        try:
            with transaction(self._db):
                yield
        except BaseException:
            self._states.clear()  # rolled back: read the baselines from the file again
            raise

    def meter_state(self, site: str, device: str, quantity: str) -> MeterState | None:
        """Last accounted reading of a counter.

        Kept in memory after the first read: one engine writes a ledger's baselines (the rules
        service of its site, or a replay), so the file and the memory agree but after a
        rollback, which empties the memory.
        """
        key = (site, device, quantity)
        if key in self._states:
            return self._states[key]
        found = self._states[key] = self._read_state(site, device, quantity)
        return found

    def _read_state(self, site: str, device: str, quantity: str) -> MeterState | None:
        row = self._db.execute(
            "SELECT last_seq, last_ts, last_value, held_ts, held_value, correction "
            "FROM meter_state WHERE site=? AND device=? AND quantity=?",
            (site, device, quantity),
        ).fetchone()
        if row is None:
            return None
        return MeterState(int(row[0]), int(row[1]), float(row[2]), row[3], row[4], row[5])

    def set_meter_state(self, site: str, device: str, quantity: str, st: MeterState) -> None:
        """Move a counter's baseline."""
        self._states[(site, device, quantity)] = st
        self._db.execute(
            "INSERT INTO meter_state(site, device, quantity, last_seq, last_ts, last_value, "
            "held_ts, held_value, correction) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(site, device, quantity) DO UPDATE SET last_seq=excluded.last_seq, "
            "last_ts=excluded.last_ts, last_value=excluded.last_value, "
            "held_ts=excluded.held_ts, held_value=excluded.held_value, "
            "correction=excluded.correction",
            (
                site,
                device,
                quantity,
                st.seq,
                st.ts,
                st.value,
                st.held_ts,
                st.held_value,
                st.correction,
            ),
        )

    def add_meter_energy(
        self,
        site: str,
        device: str,
        role: str,
        start_ms: int,
        amount: float,
        *,
        estimated: bool,
        unit: str = "kWh",
    ) -> None:
        """Add to a meter's interval (`estimated`: spread across a gap or integrated)."""
        self._db.execute(
            "INSERT INTO meter_interval(site, device, role, start_ms, amount, estimated, unit) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(site, device, start_ms) DO UPDATE SET "
            "amount = amount + excluded.amount, estimated = estimated + excluded.estimated",
            (site, device, role, start_ms, amount, amount if estimated else 0.0, unit),
        )

    def add_emission(self, site: str, row: EmissionRow) -> None:
        """Add to an emission row; a row booked with other factors keeps every factor id."""
        self._db.execute(
            "INSERT INTO emission_interval(site, start_ms, source, scope, method, category, gas, "
            "gas_kg, kgco2e, factor_ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(site, start_ms, source, scope, method, gas) DO UPDATE SET "
            "gas_kg = gas_kg + excluded.gas_kg, kgco2e = kgco2e + excluded.kgco2e, "
            "factor_ids = CASE WHEN factor_ids = excluded.factor_ids THEN factor_ids "
            "ELSE factor_ids || ';' || excluded.factor_ids END",
            (
                site,
                row.start_ms,
                row.source,
                row.scope,
                row.method,
                row.category,
                row.gas,
                row.gas_kg,
                row.kgco2e,
                row.factor_ids,
            ),
        )

    def replace_emissions(
        self, site: str, start_ms: int, source: str, rows: list[EmissionRow]
    ) -> None:
        """Set a source's emission rows of one interval (a manual entry, a recomputation)."""
        self._db.execute(
            "DELETE FROM emission_interval WHERE site=? AND start_ms=? AND source=?",
            (site, start_ms, source),
        )
        for row in rows:
            self.add_emission(site, row)

    def emissions(
        self, site: str, start_ms: int = 0, end_ms: int = 2**62, *, category: str | None = None
    ) -> list[EmissionRow]:
        """Emission rows in [start_ms, end_ms), oldest first."""
        sql = (
            "SELECT start_ms, source, scope, method, category, gas, gas_kg, kgco2e, factor_ids "
            "FROM emission_interval WHERE site=? AND start_ms>=? AND start_ms<?"
        )
        args: tuple[object, ...] = (site, start_ms, end_ms)
        if category is not None:
            sql += " AND category=?"
            args += (category,)
        return [
            EmissionRow(*r) for r in self._db.execute(sql + " ORDER BY start_ms, source, gas", args)
        ]

    def delete_emissions(self, site: str, source: str) -> int:
        """Drop every row of a source (a manual entry taken out of the config)."""
        cur = self._db.execute(
            "DELETE FROM emission_interval WHERE site=? AND source=?", (site, source)
        )
        return cur.rowcount

    def meter_amounts(
        self, site: str, start_ms: int = 0, end_ms: int = 2**62
    ) -> list[tuple[str, str, int, float, float, str]]:
        """(device, role, start, amount, estimated, unit) of every meter in [start_ms, end_ms)."""
        return [
            (str(d), str(r), int(t), float(a), float(e), str(u))
            for d, r, t, a, e, u in self._db.execute(
                "SELECT device, role, start_ms, amount, estimated, unit FROM meter_interval "
                "WHERE site=? AND start_ms>=? AND start_ms<? ORDER BY start_ms, device",
                (site, start_ms, end_ms),
            )
        ]

    def set_site_location(self, site: str, start_ms: int, kgco2e: float, factor_id: str) -> None:
        """Restate an interval's location-based Scope 2 (a recomputation); republished."""
        self._db.execute(
            "UPDATE site_interval SET scope2_location_kgco2e=?, grid_factor_id=?, "
            "version=version+1 WHERE site=? AND start_ms=?",
            (kgco2e, factor_id, site, start_ms),
        )

    def add_revision(  # noqa: PLR0917 - one row's columns
        self, site: str, at_ms: int, from_ms: int, reason: str, before: str, after: str
    ) -> int:
        """Record a recomputation; returns its id."""
        cur = self._db.execute(
            "INSERT INTO revision(site, at_ms, from_ms, reason, before_json, after_json) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (site, at_ms, from_ms, reason, before, after),
        )
        return int(cur.lastrowid or 0)

    def add_revision_change(
        self, revision: int, old: EmissionRow | None, new: EmissionRow | None
    ) -> None:
        """Keep one row's previous and new figure in a revision."""
        row = new or old
        assert row is not None
        self._db.execute(
            "INSERT INTO revision_change VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                revision,
                row.start_ms,
                row.source,
                row.scope,
                row.method,
                row.gas,
                old.kgco2e if old else 0.0,
                new.kgco2e if new else 0.0,
                old.factor_ids if old else "",
                new.factor_ids if new else "",
            ),
        )

    def revisions(self, site: str) -> list[tuple[int, int, int, str, str, str]]:
        """(id, at_ms, from_ms, reason, before_json, after_json) of every revision, oldest first."""
        return [
            (int(a), int(b), int(c), str(d), str(e), str(f))
            for a, b, c, d, e, f in self._db.execute(
                "SELECT id, at_ms, from_ms, reason, before_json, after_json FROM revision "
                "WHERE site=? ORDER BY id",
                (site,),
            )
        ]

    def revision_changes(
        self, revision: int
    ) -> list[tuple[int, str, str, str, str, float, float, str, str]]:
        """(start, source, scope, method, gas, old and new kgCO2e, old and new factor ids)."""
        return [
            tuple(r)
            for r in self._db.execute(
                "SELECT start_ms, source, scope, method, gas, old_kgco2e, new_kgco2e, "
                "old_factor_ids, new_factor_ids FROM revision_change WHERE revision=? "
                "ORDER BY start_ms, source, gas",
                (revision,),
            )
        ]

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

    def event_counts(self, site: str, start_ms: int, end_ms: int) -> dict[str, dict[str, int]]:
        """{device: {kind: count}} of the events of readings in [start_ms, end_ms)."""
        out: dict[str, dict[str, int]] = {}
        for device, kind, n in self._db.execute(
            "SELECT device, kind, count(*) FROM events WHERE site=? AND ts>=? AND ts<? "
            "GROUP BY device, kind",
            (site, start_ms, end_ms),
        ):
            out.setdefault(str(device), {})[str(kind)] = int(n)
        return out

    def meter_intervals(self, site: str, device: str) -> list[tuple[int, float]]:
        """(start_ms, kWh) of one meter, oldest first."""
        return [
            (int(a), float(b))
            for a, b in self._db.execute(
                "SELECT start_ms, amount FROM meter_interval WHERE site=? AND device=? "
                "ORDER BY start_ms",
                (site, device),
            )
        ]

    def first_interval_ms(self, site: str, start_ms: int, end_ms: int) -> int | None:
        """The start of the earliest interval any meter booked in [start_ms, end_ms)."""
        row = self._db.execute(
            "SELECT min(start_ms) FROM meter_interval WHERE site=? AND start_ms>=? AND start_ms<?",
            (site, start_ms, end_ms),
        ).fetchone()
        return None if row[0] is None else int(row[0])

    def estimated_kwh(self, site: str, device: str) -> float:
        """Energy of a meter spread across gaps (estimated), all intervals."""
        row = self._db.execute(
            "SELECT coalesce(sum(estimated), 0) FROM meter_interval WHERE site=? AND device=?",
            (site, device),
        ).fetchone()
        return float(row[0])

    def meter_energy(
        self, site: str, start_ms: int = 0, end_ms: int = 2**62
    ) -> list[tuple[str, str, int, float]]:
        """(device, role, interval start, kWh) of every electricity meter in [start_ms, end_ms)."""
        return [
            (str(d), str(r), int(t), float(k))
            for d, r, t, k in self._db.execute(
                "SELECT device, role, start_ms, amount FROM meter_interval "
                "WHERE site=? AND start_ms>=? AND start_ms<? AND unit='kWh' "
                "ORDER BY start_ms, device",
                (site, start_ms, end_ms),
            )
        ]

    def energy_by_role(
        self, site: str, start_ms: int = 0, end_ms: int = 2**62
    ) -> dict[str, tuple[float, float]]:
        """{role: (kWh, of which estimated)} over intervals starting in [start_ms, end_ms).

        Fuels (metered in m3, L or kg) are not energy here: see `meter_amounts`.
        """
        return {
            role: (float(kwh), float(est))
            for role, kwh, est in self._db.execute(
                "SELECT role, sum(amount), sum(estimated) FROM meter_interval "
                "WHERE site=? AND start_ms>=? AND start_ms<? AND unit='kWh' "
                "GROUP BY role ORDER BY role",
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
