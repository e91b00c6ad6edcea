"""Faults on a running plant: 50 meters polled at 1 Hz by `lingtan edge`, stored by `lingtan
ingest` in VictoriaMetrics and SQLite, accounted by `lingtan rules` with two alert rules whose
messages go to a webhook. After each fault, and a clean end of the run:

- every Sample the edge made is stored exactly once by (site, device, seq), in both stores, and
  every stored counter is one its meter served, in order;
- the ledger's energy per meter is its last applied counter minus its first;
- every alert event's message reached the webhook exactly once and is on the alert topic; the
  `hot` episode the test makes fired once and resolved once.

Each test prints the counts it checked. Runs of one to two minutes each: marked `long`.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from ingest.sqlite_store import SqliteStore
from rules.ledger import Ledger
from tests.reliability import checks
from tests.reliability.plant import SITE, Plant

pytestmark = [pytest.mark.integration, pytest.mark.long, pytest.mark.timeout(600)]

OUTAGE_S = 60
DERIVED_DEVICES = {"site", "site-15m", "alerts"}


def verify(plant: Plant, fault: str, *, silent: Sequence[str] = ()) -> None:
    """Every check, on the stopped plant; prints what was counted."""
    assert plant.edge_outbox_depth() == 0, "the edge stopped with Samples still in its outbox"
    last = plant.edge_last_seqs()
    with contextlib.closing(sqlite3.connect(plant.state / "ts.sqlite")) as db:
        seqs: dict[str, list[int]] = {}
        for device, seq in db.execute("SELECT device, seq FROM samples WHERE site=?", (SITE,)):
            seqs.setdefault(device, []).append(seq)
    # rules' own Samples (derived figures, alert counts) are stored beside the edge's
    derived = {d: seqs.pop(d) for d in list(seqs) if d in DERIVED_DEVICES}
    samples = checks.exactly_once(last, seqs)
    assert derived.get("site"), "no plant figure was stored"

    store = SqliteStore(plant.state / "ts.sqlite")
    assert plant.vm is not None
    exported = {s["metric"]["device"]: [v for _, v in sorted(zip(s["timestamps"], s["values"],
                                                                  strict=True))]
                for s in plant.vm.export(f'{{__name__="meter_energy_import_kwh",site="{SITE}"}}')}
    ledger = Ledger(plant.state / "ledger.sqlite")
    readings = in_db = 0
    kwh = 0.0
    behind = 0
    try:
        for d in plant.devices:
            rows = store.query(SITE, d, "energy_import_kwh")
            readings += checks.counters_served([v for _, _, v in rows], plant.served_counters(d))
            in_db += checks.same_readings(rows, exported.get(d, []), d)
            st = ledger.meter_state(SITE, d, "energy_import_kwh")
            assert st is not None, f"{d}: the ledger has no reading"
            got = checks.ledger_energy(d, rows, st.seq, st.value,
                                       sum(k for _, k in ledger.meter_intervals(SITE, d)))
            kwh += got.kwh
            behind += sum(1 for _, seq, _ in rows if seq > got.applied_seq)
        events = ledger.events(SITE)
        assert not events, f"the ledger recorded events: {events[:5]}"
    finally:
        store.close()
        ledger.close()
    # rules stopped a moment before the edge: its last readings wait in its broker session
    assert behind <= 5 * len(plant.devices), f"rules fell {behind} readings behind"

    assert plant.hook is not None
    assert plant.alert_watch is not None
    evs, outbox = checks.read_alerts(plant.state / "alerts.sqlite")
    counts = checks.alerts_once(evs, outbox, plant.hook.deliveries(),
                                [int(e["id"]) for e in plant.alert_watch.taken()])
    hot = [k for k in counts.by_key if k.startswith("hot{")]
    assert [counts.by_key[k] for k in hot] == [["firing", "resolved"]], counts.by_key
    went_silent = sorted(k for k in counts.by_key if k.startswith("meter_offline{"))
    assert went_silent == sorted(f"meter_offline{{device={d}}}" for d in silent), went_silent
    assert all(counts.by_key[k] == ["firing", "resolved"] for k in went_silent), counts.by_key
    print(f"\n{fault}: {samples} Samples of {len(last)} devices stored exactly once by "
          f"(site, device, seq) (and {sum(map(len, derived.values()))} of rules'); "
          f"{readings} counter readings as the meters served them, "
          f"{in_db} of them in VictoriaMetrics too; ledger = counter differences for "
          f"{len(plant.devices)} meters ({kwh:.3f} kWh; {behind} readings left in rules' "
          f"session); {counts.events} alert events ({len(went_silent)} meters silent), "
          f"{counts.deliveries} webhook deliveries, each once; {counts.on_topic} events on "
          f"the alert topic ({counts.topic_duplicates} redelivered, QoS 1); restarts "
          + ", ".join(f"{n} {p.starts}" for n, p in plant.procs.items()))


def _run(plant: Plant, seconds: float) -> None:
    time.sleep(seconds)
    for name in ("edge", "ingest", "rules"):
        assert plant.procs[name].running(), f"{name} exited: {plant.procs[name].tail()}"


def test_broker_stopped_60_s(tmp_path: Path) -> None:
    with Plant(tmp_path) as plant:
        _run(plant, 3)
        plant.hot_episode()
        _run(plant, 3)
        plant.stop_broker()
        _run(plant, OUTAGE_S)
        plant.start_broker()
        _run(plant, 20)  # the edge's backlog, then every `meter_offline` alert resolves
        plant.settle()
        verify(plant, f"broker stopped {OUTAGE_S} s", silent=plant.devices)


def test_database_stopped_60_s(tmp_path: Path) -> None:
    with Plant(tmp_path) as plant:
        _run(plant, 3)
        plant.stop_database()
        plant.hot_episode()
        _run(plant, OUTAGE_S - 5)
        plant.start_database()
        _run(plant, 15)
        plant.settle()
        verify(plant, f"database stopped {OUTAGE_S} s")
    assert "write failed" in (tmp_path / "ingest.log").read_text()


@pytest.mark.parametrize("victim", ["edge", "ingest", "rules"])
def test_kill_9_mid_stream_then_restart(tmp_path: Path, victim: str) -> None:
    with Plant(tmp_path) as plant:
        _run(plant, 5)
        proc = plant.procs[victim]
        base = plant.loads["m00"].power_kw
        plant.set_power("m00", 600.0)  # `hot` fires...
        _run(plant, 3)
        proc.kill9()  # ...and the victim dies while it is firing
        time.sleep(3)
        proc.start()
        _run(plant, 4)
        plant.set_power("m00", base)  # resolves after the restart
        _run(plant, 6)
        proc.kill9()  # and once more, mid-stream
        time.sleep(1)
        proc.start()
        _run(plant, 10)
        plant.settle()
        verify(plant, f"kill -9 of {victim}, twice")


def test_edge_network_to_the_broker_cut_and_restored(tmp_path: Path) -> None:
    with Plant(tmp_path, edge_via_proxy=True) as plant:
        _run(plant, 3)
        plant.hot_episode()
        _run(plant, 3)
        plant.set_edge_link("pause")  # packets stop; TCP connections hang, nothing is refused
        _run(plant, 30)
        plant.set_edge_link("pass")
        _run(plant, 25)  # keepalive notices, paho reconnects, the outbox drains
        plant.settle()
        verify(plant, "edge's network cut 30 s", silent=plant.devices)


def test_a_meter_answering_garbage_and_one_that_hangs(tmp_path: Path) -> None:
    bad = ("m48", "m49")
    with Plant(tmp_path, bad_meters=bad) as plant:
        _run(plant, 3)
        before = {d: len(plant.served_counters(d)) for d in plant.devices}
        started = time.time()
        plant.set_meter("m48", "garbage")
        plant.set_meter("m49", "pause")
        plant.hot_episode()
        _run(plant, 35)
        window = time.time() - started
        plant.set_meter("m48", "pass")
        plant.set_meter("m49", "pass")
        served = {d: len(plant.served_counters(d)) - before[d] for d in plant.devices}
        _run(plant, 15)
        plant.settle()
        verify(plant, "a meter answering garbage and one hanging for 40 s", silent=bad)
    healthy = [served[d] for d in plant.devices if d not in bad]
    # one slow or mad device delays nobody: every healthy meter was read on every beat
    assert min(healthy) >= int(window) - 1, (min(healthy), window)
    assert served["m48"] == served["m49"] == 0
    print(f"healthy meters read {min(healthy)}-{max(healthy)} times in {window:.0f} s while "
          f"m48 answered garbage and m49 hung")
