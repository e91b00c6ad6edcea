"""What must hold after every fault, as functions of plain data so each can be shown to fail.

- every Sample the edge made is stored exactly once by (site, device, seq): no seq missing, none
  twice, in both stores; the stored counters are values the meter served, in order;
- the ledger's energy per meter is the difference of the counters it applied;
- every alert event went to the channel exactly once, and is on the alert topic.
Each check returns the counts it verified, for the test to print.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

Rows = Sequence[tuple[int, int, float]]  # (ts, seq, value), as SqliteStore.query returns


class CheckFailed(AssertionError):
    """A property of the run that does not hold; the message says where."""


def exactly_once(last_seq: Mapping[str, int], stored_seqs: Mapping[str, Sequence[int]]) -> int:
    """Every seq 0..last of every device stored once; returns how many Samples were checked."""
    problems = []
    for device, last in sorted(last_seq.items()):
        seen = Counter(stored_seqs.get(device, []))
        missing = [s for s in range(last + 1) if s not in seen]
        doubled = sorted(s for s, n in seen.items() if n > 1)
        extra = sorted(s for s in seen if not 0 <= s <= last)
        if missing or doubled or extra:
            problems.append(f"{device}: missing {_few(missing)}, twice {_few(doubled)}, "
                            f"never made {_few(extra)}")
    strangers = sorted(set(stored_seqs) - set(last_seq))
    if strangers:
        problems.append(f"stored for devices the edge never polled: {strangers}")
    if problems:
        raise CheckFailed("; ".join(problems))
    return sum(last + 1 for last in last_seq.values())


def counters_served(stored: Sequence[float], served: Sequence[float]) -> int:
    """The stored counter readings are readings the meter served, in the order served."""
    i = 0
    for n, value in enumerate(stored):
        while i < len(served) and served[i] != pytest.approx(value, rel=1e-7, abs=1e-9):
            i += 1
        if i == len(served):
            raise CheckFailed(f"stored reading {n} ({value!r}) is not one the meter served "
                              "after the previous one")
        i += 1
    return len(stored)


def same_readings(sqlite_rows: Rows, db_values: Sequence[float], what: str) -> int:
    """The time-series database holds the same readings as the embedded store, once each."""
    if len(db_values) != len(sqlite_rows):
        raise CheckFailed(f"{what}: {len(db_values)} points in the database, "
                          f"{len(sqlite_rows)} readings in the embedded store")
    for n, ((_, seq, v), got) in enumerate(zip(sqlite_rows, db_values, strict=True)):
        if got != pytest.approx(v, rel=1e-9):
            raise CheckFailed(f"{what}: point {n} (seq {seq}) is {got!r} in the database, "
                              f"{v!r} in the embedded store")
    return len(db_values)


@dataclass(frozen=True)
class LedgerCheck:
    """What the ledger check compared for one meter."""

    device: str
    applied_seq: int
    kwh: float


def ledger_energy(device: str, rows: Rows, state_seq: int, state_value: float,
                  ledger_kwh: float) -> LedgerCheck:
    """The ledger's energy for a meter is (counter it applied last) - (first counter)."""
    if not rows:
        raise CheckFailed(f"{device}: no readings stored")
    by_seq = {seq: v for _, seq, v in rows}
    if state_seq not in by_seq:
        raise CheckFailed(f"{device}: the ledger applied seq {state_seq}, which is not stored")
    if by_seq[state_seq] != pytest.approx(state_value, rel=1e-9):
        raise CheckFailed(f"{device}: the ledger's counter at seq {state_seq} is "
                          f"{state_value!r}, the stored reading {by_seq[state_seq]!r}")
    first = rows[0][2]
    expected = state_value - first
    if ledger_kwh != pytest.approx(expected, rel=1e-9, abs=1e-9):
        raise CheckFailed(f"{device}: ledger {ledger_kwh!r} kWh, counters say {state_value!r} - "
                          f"{first!r} = {expected!r} kWh")
    return LedgerCheck(device, state_seq, ledger_kwh)


@dataclass(frozen=True)
class AlertCounts:
    """What the alert check counted."""

    events: int
    deliveries: int
    on_topic: int
    topic_duplicates: int
    by_key: dict[str, list[str]]


def alerts_once(events: Sequence[tuple[int, str, str]], outbox: Sequence[tuple[int, str, str,
                                                                                str]],
                delivered: Sequence[tuple[str, str]], on_topic: Sequence[int]) -> AlertCounts:
    """Every event's message reached the channel once; every event is on the alert topic.

    events: (id, key, kind); outbox: (event id, state, title, body); delivered: (title, body)
    as the channel received them; on_topic: event ids as published.
    """
    problems = []
    by_key: dict[str, list[str]] = {}
    for _, key, kind in sorted(events):
        by_key.setdefault(key, []).append(kind)
    for key, kinds in by_key.items():
        expect = ["firing", "resolved"] * (len(kinds) // 2) + ["firing"] * (len(kinds) % 2)
        if kinds != expect:
            problems.append(f"{key}: events {kinds} (each firing is followed by its resolve)")
    per_event = Counter(e for e, *_ in outbox)
    for eid, _, _ in events:
        if per_event[eid] != 1:
            problems.append(f"event {eid}: {per_event[eid]} messages in the outbox, not 1")
    unsent = [(e, s) for e, s, _, _ in outbox if s != "sent"]
    if unsent:
        problems.append(f"outbox rows not sent: {unsent[:5]}")
    # apprise trims the text it sends
    want = Counter((t.strip(), b.strip()) for _, _, t, b in outbox)
    got = Counter((t.strip(), b.strip()) for t, b in delivered)
    lost = want - got
    twice = got - want
    if lost:
        problems.append(f"{sum(lost.values())} messages never delivered: {list(lost)[:3]}")
    if twice:
        problems.append(f"{sum(twice.values())} deliveries too many: {list(twice)[:3]}")
    published = Counter(on_topic)
    missing = sorted(e for e, _, _ in events if e not in published)
    if missing:
        problems.append(f"events never on the alert topic: {missing[:10]}")
    if problems:
        raise CheckFailed("; ".join(problems))
    return AlertCounts(len(events), len(delivered), len(set(on_topic)),
                       sum(n - 1 for n in published.values()), by_key)


def read_alerts(path: Path) -> tuple[list[tuple[int, str, str]], list[tuple[int, str, str, str]]]:
    """(events, outbox rows) from the rules service's alert database."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        events = [(int(i), str(k), str(kd)) for i, k, kd in
                  db.execute("SELECT id, key, kind FROM event ORDER BY id")]
        outbox = [(int(e), str(s), str(t), str(b)) for e, s, t, b in
                  db.execute("SELECT event_id, state, title, body FROM outbox ORDER BY id")]
    return events, outbox


def _few(items: Sequence[Any]) -> str:
    return "none" if not items else (str(list(items[:8])) + (" ..." if len(items) > 8 else ""))
