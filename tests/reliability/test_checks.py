"""The fault runs' checks, each shown to fail on the failure it is for (default suite, fast),
and the TCP proxy that makes the network faults, against a real echo server."""

from __future__ import annotations

import asyncio

import pytest

from tests.reliability import checks
from tests.reliability.checks import CheckFailed
from tests.reliability.proxy import Proxy


def test_exactly_once_passes_a_complete_store_and_names_every_failure() -> None:
    assert checks.exactly_once({"m1": 2, "m2": 0}, {"m1": [2, 0, 1], "m2": [0]}) == 4
    with pytest.raises(CheckFailed, match=r"m1: missing \[1\], twice none"):
        checks.exactly_once({"m1": 2}, {"m1": [0, 2]})
    with pytest.raises(CheckFailed, match=r"m1: missing none, twice \[1\]"):
        checks.exactly_once({"m1": 2}, {"m1": [0, 1, 1, 2]})
    with pytest.raises(CheckFailed, match=r"never made \[3\]"):
        checks.exactly_once({"m1": 2}, {"m1": [0, 1, 2, 3]})
    with pytest.raises(CheckFailed, match=r"m2: missing \[0\]"):
        checks.exactly_once({"m1": 0, "m2": 0}, {"m1": [0]})
    with pytest.raises(CheckFailed, match=r"devices the edge never polled: \['m9'\]"):
        checks.exactly_once({"m1": 0}, {"m1": [0], "m9": [0]})


def test_stored_counters_must_be_served_ones_in_order() -> None:
    served = [1000.0, 1000.25, 1000.5, 1000.75]
    assert checks.counters_served([1000.0, 1000.5, 1000.75], served) == 3  # a poll lost: fine
    with pytest.raises(CheckFailed, match=r"reading 1 \(1000.3\) is not one the meter served"):
        checks.counters_served([1000.0, 1000.3], served)
    with pytest.raises(CheckFailed, match=r"reading 1 \(1000.0\)"):
        checks.counters_served([1000.5, 1000.0], served)  # out of order
    with pytest.raises(CheckFailed, match=r"reading 2"):
        checks.counters_served([1000.0, 1000.25, 1000.25], served)  # one read stored twice


def test_the_database_must_hold_what_the_embedded_store_holds() -> None:
    rows = [(1, 0, 5.0), (2, 1, 6.0)]
    assert checks.same_readings(rows, [5.0, 6.0], "m1") == 2
    with pytest.raises(CheckFailed, match="m1: 3 points in the database, 2 readings"):
        checks.same_readings(rows, [5.0, 6.0, 6.0], "m1")
    with pytest.raises(CheckFailed, match=r"m1: point 1 \(seq 1\) is 7.0 in the database"):
        checks.same_readings(rows, [5.0, 7.0], "m1")


def test_ledger_energy_is_the_counter_difference() -> None:
    rows = [(1, 0, 100.0), (2, 1, 100.5), (3, 2, 101.25)]
    got = checks.ledger_energy("m1", rows, 2, 101.25, 1.25)
    assert (got.applied_seq, got.kwh) == (2, 1.25)
    assert checks.ledger_energy("m1", rows, 1, 100.5, 0.5).kwh == 0.5  # rules one behind
    with pytest.raises(CheckFailed, match=r"m1: ledger 1.5 kWh, counters say 101.25 - 100.0"):
        checks.ledger_energy("m1", rows, 2, 101.25, 1.5)  # a delta counted twice
    with pytest.raises(CheckFailed, match=r"the ledger's counter at seq 2 is 101\.0"):
        checks.ledger_energy("m1", rows, 2, 101.0, 1.0)
    with pytest.raises(CheckFailed, match="applied seq 7, which is not stored"):
        checks.ledger_energy("m1", rows, 7, 101.25, 1.25)


EVENTS = [(1, "hot{device=m00}", "firing"), (2, "hot{device=m00}", "resolved")]
OUTBOX = [(1, "sent", "[critical] hot", "body 1\n"), (2, "sent", "[resolved] hot", "body 2\n")]
DELIVERED = [("[critical] hot", "body 1"), ("[resolved] hot", "body 2")]


def test_alerts_once_counts_and_names_lost_and_doubled_messages() -> None:
    got = checks.alerts_once(EVENTS, OUTBOX, DELIVERED, [1, 2, 2])
    assert (got.events, got.deliveries, got.on_topic, got.topic_duplicates) == (2, 2, 2, 1)
    assert got.by_key == {"hot{device=m00}": ["firing", "resolved"]}
    with pytest.raises(CheckFailed, match="1 messages never delivered"):
        checks.alerts_once(EVENTS, OUTBOX, DELIVERED[:1], [1, 2])
    with pytest.raises(CheckFailed, match="1 deliveries too many"):
        checks.alerts_once(EVENTS, OUTBOX, [*DELIVERED, DELIVERED[0]], [1, 2])
    with pytest.raises(CheckFailed, match=r"outbox rows not sent: \[\(2, 'pending'\)\]"):
        checks.alerts_once(EVENTS, [OUTBOX[0], (2, "pending", "t", "b")], DELIVERED, [1, 2])
    with pytest.raises(CheckFailed, match=r"events never on the alert topic: \[2\]"):
        checks.alerts_once(EVENTS, OUTBOX, DELIVERED, [1])
    with pytest.raises(CheckFailed, match=r"event 2: 0 messages in the outbox"):
        checks.alerts_once(EVENTS, OUTBOX[:1], DELIVERED[:1], [1, 2])
    twice = [*EVENTS, (3, "hot{device=m00}", "firing"), (4, "hot{device=m00}", "firing")]
    with pytest.raises(CheckFailed, match=r"events \['firing', 'resolved', 'firing', 'firing'\]"):
        checks.alerts_once(twice, OUTBOX, DELIVERED, [1, 2, 3, 4])


async def _echo_server() -> tuple[asyncio.Server, int]:
    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(100):
            w.write(data)
            await w.drain()
        w.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


async def test_the_proxy_passes_pauses_without_loss_garbles_and_resets() -> None:
    server, port = await _echo_server()
    proxy = Proxy(port)
    await proxy.start()
    try:
        r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
        w.write(b"one")
        assert await asyncio.wait_for(r.readexactly(3), 5) == b"one"
        proxy.set_mode("pause")
        w.write(b"two")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(r.readexactly(3), 0.5)  # nothing passes...
        proxy.set_mode("pass")
        assert await asyncio.wait_for(r.readexactly(3), 5) == b"two"  # ...and nothing is lost
        proxy.set_mode("garbage")
        w.write(b"three")
        junk = await asyncio.wait_for(r.read(100), 5)
        assert len(junk) == len(b"three") + 7  # the proxy answered, with noise
        assert proxy.garbage_answers == 1
        proxy.set_mode("reset")
        assert await asyncio.wait_for(r.read(100), 5) == b""  # the connection is gone
        r2, _ = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await asyncio.wait_for(r2.read(100), 5) == b""  # and new ones are closed
    finally:
        await proxy.stop()
        server.close()
        await server.wait_closed()
