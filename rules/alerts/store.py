"""Alert state, alert events and the outbox of messages, in one SQLite file.

A state change, its event and one outbox row per routed channel commit together, so a restart
neither sends a message twice (the state says it was sent) nor loses one (the outbox still
holds it). Delivery marks a row sent only after the channel accepted it: a crash between the
two sends that one message again, the one duplicate the design allows.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import orjson

from telemetry.storage import open_db, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alert (
    key TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    labels BLOB NOT NULL,
    state TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    pending_since_ms INTEGER,
    fired_ms INTEGER,
    resolved_ms INTEGER,
    notified INTEGER NOT NULL DEFAULT 0,
    last_notified_ms INTEGER,
    muted_by TEXT,
    value REAL,
    threshold REAL,
    unit TEXT NOT NULL DEFAULT '',
    summary TEXT NOT NULL DEFAULT '',
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS event (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    payload BLOB NOT NULL,
    published INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS event_unpublished ON event (published, id);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    event_id INTEGER NOT NULL,
    channel TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    notify_type TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending',
    last_error TEXT NOT NULL DEFAULT '',
    done_ms INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (channel, state, id);
"""


class State(StrEnum):
    """Where an alert is in its life."""

    INACTIVE = "inactive"
    PENDING = "pending"  # the condition holds, not yet for the rule's `for:`
    FIRING = "firing"
    RESOLVED = "resolved"  # fired, then cleared; inactive until it holds again


@dataclass
class AlertRow:
    """One alert (a rule and a set of labels) as stored."""

    key: str
    rule: str
    labels: tuple[tuple[str, str], ...]
    state: State
    first_seen_ms: int
    updated_ms: int
    pending_since_ms: int | None = None
    fired_ms: int | None = None
    resolved_ms: int | None = None
    notified: bool = False  # the firing message of this episode went to the outbox
    last_notified_ms: int | None = None
    muted_by: str | None = None
    value: float | None = None
    threshold: float | None = None
    unit: str = ""
    summary: str = ""


@dataclass(frozen=True)
class NewEvent:
    """An event to store with the messages it sends."""

    key: str
    kind: str
    ts_ms: int
    payload: dict[str, object]
    title: str
    body: str
    notify_type: str
    channels: tuple[str, ...]


@dataclass(frozen=True)
class OutboxRow:
    """A message waiting for its channel."""

    id: int
    event_id: int
    channel: str
    title: str
    body: str
    notify_type: str
    attempts: int


_ALERT_COLS = (
    "key, rule, labels, state, first_seen_ms, pending_since_ms, fired_ms, resolved_ms, notified, "
    "last_notified_ms, muted_by, value, threshold, unit, summary, updated_ms"
)


class AlertStore:
    """The alerts database; one connection shared by the engine and the delivery threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_db(path, threads=True)
        self._lock = threading.Lock()
        for stmt in _SCHEMA.split(";"):
            if stmt.strip():
                self._db.execute(stmt)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, transaction(self._db) as db:
            yield db

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    # --- alert state ---------------------------------------------------------------------------

    def alerts(self) -> dict[str, AlertRow]:
        """Every stored alert by key."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_ALERT_COLS} FROM alert").fetchall()  # noqa: S608
        out = {}
        for r in rows:
            labels = tuple((str(k), str(v)) for k, v in orjson.loads(r[2]))
            out[r[0]] = AlertRow(
                key=r[0],
                rule=r[1],
                labels=labels,
                state=State(r[3]),
                first_seen_ms=r[4],
                pending_since_ms=r[5],
                fired_ms=r[6],
                resolved_ms=r[7],
                notified=bool(r[8]),
                last_notified_ms=r[9],
                muted_by=r[10],
                value=r[11],
                threshold=r[12],
                unit=r[13],
                summary=r[14],
                updated_ms=r[15],
            )
        return out

    def commit(
        self, rows: Sequence[AlertRow], deleted: Sequence[str], events: Sequence[NewEvent]
    ) -> list[int]:
        """Write changed alerts, drop deleted ones, store events and queue their messages.

        One transaction; returns the events' ids in order.
        """
        ids: list[int] = []
        with self._tx() as db:
            db.executemany(
                f"INSERT OR REPLACE INTO alert ({_ALERT_COLS}) "  # noqa: S608
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        a.key,
                        a.rule,
                        orjson.dumps(a.labels),
                        a.state.value,
                        a.first_seen_ms,
                        a.pending_since_ms,
                        a.fired_ms,
                        a.resolved_ms,
                        int(a.notified),
                        a.last_notified_ms,
                        a.muted_by,
                        a.value,
                        a.threshold,
                        a.unit,
                        a.summary,
                        a.updated_ms,
                    )
                    for a in rows
                ],
            )
            db.executemany("DELETE FROM alert WHERE key = ?", [(k,) for k in deleted])
            for e in events:
                cur = db.execute(
                    "INSERT INTO event (key, kind, ts_ms, payload) VALUES (?, ?, ?, ?)",
                    (e.key, e.kind, e.ts_ms, orjson.dumps(e.payload)),
                )
                eid = cur.lastrowid
                assert eid is not None
                ids.append(eid)
                db.executemany(
                    "INSERT INTO outbox (event_id, channel, title, body, notify_type, created_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(eid, c, e.title, e.body, e.notify_type, e.ts_ms) for c in e.channels],
                )
        return ids

    # --- events for the alert topic ------------------------------------------------------------

    def unpublished(self, limit: int = 1000) -> list[tuple[int, dict[str, object]]]:
        """Events not yet confirmed published, oldest first, as (id, payload)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, payload FROM event WHERE published = 0 ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [(int(i), orjson.loads(p)) for i, p in rows]

    def mark_published(self, ids: Sequence[int]) -> None:
        """The broker has these events."""
        with self._tx() as db:
            db.executemany("UPDATE event SET published = 1 WHERE id = ?", [(i,) for i in ids])

    # --- outbox --------------------------------------------------------------------------------

    def next_message(self, channel: str) -> OutboxRow | None:
        """The channel's oldest unsent message (channels deliver in order)."""
        with self._lock:
            r = self._db.execute(
                "SELECT id, event_id, channel, title, body, notify_type, attempts FROM outbox "
                "WHERE channel = ? AND state = 'pending' ORDER BY id LIMIT 1",
                (channel,),
            ).fetchone()
        return None if r is None else OutboxRow(*r)

    def sent(self, msg_id: int, now_ms: int) -> None:
        """The channel accepted the message."""
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET state = 'sent', attempts = attempts + 1, done_ms = ? "
                "WHERE id = ?",
                (now_ms, msg_id),
            )

    def failed_attempt(self, msg_id: int, error: str, *, give_up: bool, now_ms: int) -> None:
        """An attempt failed; `give_up` ends the message's retries."""
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, state = ?, done_ms = ? "
                "WHERE id = ?",
                (error, "failed" if give_up else "pending", now_ms if give_up else None, msg_id),
            )

    def outbox(self) -> list[dict[str, object]]:
        """Every outbox row (for `lingtan alerts list` and tests)."""
        with self._lock:
            cur = self._db.execute(
                "SELECT id, event_id, channel, title, body, attempts, state, last_error "
                "FROM outbox ORDER BY id"
            )
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def prune(self, before_ms: int) -> None:
        """Forget delivered messages and published events older than `before_ms`."""
        with self._tx() as db:
            db.execute("DELETE FROM outbox WHERE state != 'pending' AND done_ms < ?", (before_ms,))
            db.execute(
                "DELETE FROM event WHERE published = 1 AND ts_ms < ? "
                "AND id NOT IN (SELECT event_id FROM outbox)",
                (before_ms,),
            )
