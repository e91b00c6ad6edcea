"""The edge agent end to end with a real broker: nothing lost while the broker is away, TLS
with the edge box's credential through a broker restart, and a broker that accepts the TCP
connection and then says nothing (paho's I/O runs on the agent's asyncio loop)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
from pathlib import Path

import orjson
import pytest

from collectors.agent import EdgeAgent
from collectors.config import DeviceConfig, EdgeConfig, TcpTransport
from collectors.outbox import Outbox
from collectors.profile import register_map
from lingtan.simulator import FactoryLoad, SimulatedMeter
from telemetry.config import BrokerConfig, SiteInfo
from telemetry.sample import decode
from tests import servers
from tests.collectors.misbehaving import BadDevice
from tests.ingest.tls_broker import OBSERVER, OBSERVER_ACL, make_certs, tls_broker
from tests.mqtt_helpers import collect

pytestmark = pytest.mark.integration
SITE = SiteInfo(id="s1", timezone="Asia/Shanghai")


def _edge(tmp: Path, ports: list[int]) -> EdgeConfig:
    return EdgeConfig(agent_id="e1", state_dir=tmp / "edge", devices=[
        DeviceConfig(id=f"m{i}", profile="eastron-sdm630",
                     transport=TcpTransport(host="127.0.0.1", port=p), interval_s=0.2,
                     timeout_s=0.5) for i, p in enumerate(ports)])


async def _run_for(agent: EdgeAgent, seconds: float, stop_within_s: float = 10) -> None:
    """Run `agent` for `seconds`, then stop it; it must have ended `stop_within_s` later."""
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await asyncio.sleep(seconds)
    finally:
        stop.set()
        await asyncio.wait_for(task, stop_within_s)


async def test_samples_polled_while_the_broker_is_down_are_delivered_in_order(
        tmp_path: Path) -> None:
    meters = [SimulatedMeter(register_map("eastron-sdm630"), FactoryLoad(seed=i))
              for i in range(2)]
    ports = [await m.start() for m in meters]
    mqtt_port = servers.free_port()
    broker = BrokerConfig(url=f"mqtt://127.0.0.1:{mqtt_port}", protocol="5")
    agent = EdgeAgent(SITE, broker, _edge(tmp_path, ports))
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        # no broker yet: polls go to the outbox
        await servers.until(lambda: agent.outbox.depth() >= 10, 20, "ten Samples in the outbox")
        with servers.mosquitto(tmp_path, port=mqtt_port), \
                collect(broker, "lingtan/v1/s1/+/sample") as got:
            await servers.until(lambda: agent.outbox.depth() == 0 and len(got.payloads()) >= 20, 40,
                         "the outbox to drain")
            stop.set()
            await asyncio.wait_for(task, 10)
            await asyncio.sleep(0.3)
            received = [s for p in got.payloads() for s in decode(p)]
    finally:
        stop.set()
        for m in meters:
            await m.stop()
    for dev in ("m0", "m1"):
        seqs = [s.seq for s in received if s.device == dev]
        # everything polled arrived, once, in order (the outbox is empty, nothing was dropped)
        assert seqs == list(range(len(seqs))), dev
        assert len(seqs) >= 5
    assert Outbox(tmp_path / "edge" / "outbox.sqlite").depth() == 0


async def test_a_dead_device_does_not_stop_the_others(tmp_path: Path, broker: BrokerConfig) -> None:
    meter = SimulatedMeter(register_map("eastron-sdm630"), FactoryLoad())
    port = await meter.start()
    agent = EdgeAgent(SITE, broker, _edge(tmp_path, [port, servers.free_port()]))
    stop = asyncio.Event()
    with collect(broker, "lingtan/v1/s1/+/status") as status:
        task = asyncio.create_task(agent.run(stop))
        try:
            await servers.until(lambda: agent.health["m1"].online is False, 20, "m1 offline")
            polls_of_live = agent.health["m0"].polls
            await asyncio.sleep(1.0)
            assert agent.health["m0"].polls - polls_of_live >= 3
            assert agent.health["m0"].failures == 0
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await meter.stop()
        await asyncio.sleep(0.3)
        states = {}
        for topic, payload in status.messages:
            states.setdefault(topic.split("/")[3], []).append(orjson.loads(payload)["state"])
    assert states["m0"] == ["online"]
    assert states["m1"] == ["offline"]
    assert states["e1"][0] == "online"
    assert states["e1"][-1] == "offline"


async def test_healthy_devices_keep_their_clock_beside_dead_hung_and_garbage_ones(
        tmp_path: Path, broker: BrokerConfig) -> None:
    meters = [SimulatedMeter(register_map("eastron-sdm630"), FactoryLoad(seed=i))
              for i in range(4)]
    healthy = [await m.start() for m in meters]
    hang, garbage = BadDevice("hang"), BadDevice("garbage")
    bad_ports = [await hang.start(), await garbage.start(), servers.free_port()]
    edge = _edge(tmp_path, healthy + bad_ports)
    edge = edge.model_copy(update={"devices": [
        d.model_copy(update={"timeout_s": 0.4}) for d in edge.devices]})
    agent = EdgeAgent(SITE, broker, edge)
    try:
        await _run_for(agent, 3.0)
    finally:
        for m in meters:
            await m.stop()
        await hang.stop()
        await garbage.stop()
    good = [agent.health[f"m{i}"] for i in range(4)]
    bad = [agent.health[f"m{i}"] for i in range(4, 7)]
    print("healthy polls/missed/max jitter ms:",
          [(h.polls, h.missed, round(h.max_jitter_ms, 1)) for h in good])
    for h in good:
        # 3 s at 0.2 s: about 15 polls, none missed (a poll that started a period late would
        # have let the next tick pass: counted missed), none failed
        assert h.polls >= 12
        assert (h.failures, h.missed) == (0, 0)
    for h in bad:
        assert h.ok == 0
        assert h.failures >= 1
        assert h.online is False


async def test_polls_are_aligned_and_health_is_reported_as_samples(
        tmp_path: Path, broker: BrokerConfig) -> None:
    meter = SimulatedMeter(register_map("eastron-sdm630"), FactoryLoad())
    port = await meter.start()
    edge = _edge(tmp_path, [port]).model_copy(update={"health_interval_s": 0.5})
    agent = EdgeAgent(SITE, broker, edge)
    stop = asyncio.Event()
    with collect(broker, "lingtan/v1/s1/+/sample") as got:
        task = asyncio.create_task(agent.run(stop))
        try:
            await servers.until(lambda: sum(1 for p in got.payloads()
                                     if decode(p)[0].device == "e1") >= 2, 20,
                         "two health reports")
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await meter.stop()
        samples = [s for p in got.payloads() for s in decode(p)]
    readings = [s for s in samples if s.device == "m0" and "active_power_kw" in s.values]
    # the read happens on the 200 ms boundary (a few ms after it), never between two
    assert readings
    assert all(s.ts % 200 < 100 for s in readings), [s.ts % 200 for s in readings]
    agent_reports = [s for s in samples if s.device == "e1"]
    assert set(agent_reports[-1].values) == {
        "outbox_depth_count", "outbox_age_s", "outbox_dropped_count", "devices_online_count",
        "devices_offline_count"}
    assert agent_reports[-1].values["devices_online_count"] == 1.0
    device_reports = [s for s in samples if s.device == "m0" and "poll_ok_count" in s.values]
    assert device_reports[-1].values["poll_ok_count"] >= 1
    assert device_reports[-1].values["poll_failed_count"] == 0
    # seq stays one sequence per device, readings and health reports alike
    seqs = [s.seq for s in samples if s.device == "m0"]
    assert seqs == list(range(len(seqs)))


async def test_over_tls_with_its_credential_nothing_is_lost_through_a_broker_restart(
        tmp_path: Path) -> None:
    meter = SimulatedMeter(register_map("eastron-sdm630"), FactoryLoad())
    port = await meter.start()
    stop = asyncio.Event()
    try:
        with tls_broker(tmp_path / "broker", edges=[("s1", "1")], extra_acl=OBSERVER_ACL) as b, \
                collect(b.config(OBSERVER, tls=False), "lingtan/v1/s1/m0/sample",
                        persistent=True) as got:
            agent = EdgeAgent(SITE, b.config("edge-s1-1"), _edge(tmp_path, [port]))
            task = asyncio.create_task(agent.run(stop))
            await servers.until(lambda: len(got.payloads()) >= 5, 30, "Samples over TLS")
            await asyncio.to_thread(b.restart)
            before = agent.publisher.acked if agent.publisher else 0
            # the agent reconnects on its own and hands over what it polled meanwhile
            await servers.until(lambda: agent.publisher is not None
                                and agent.publisher.acked >= before + 10
                                and agent.outbox.depth() == 0, 60,
                                "the agent to reconnect and drain its outbox")
            stop.set()
            await asyncio.wait_for(task, 10)
            with contextlib.closing(sqlite3.connect(tmp_path / "edge" / "outbox.sqlite")) as db:
                (last,) = db.execute("SELECT last FROM seq WHERE device='m0'").fetchone()
            await servers.until(lambda: last in {s.seq for p in got.payloads()
                                                 for s in decode(p)}, 20,
                                "the last Sample at the subscriber")
            seqs = [s.seq for p in got.payloads() for s in decode(p)]
    finally:
        stop.set()
        await meter.stop()
    # every Sample polled arrived (a resend after the restart may repeat one), in order
    assert sorted(set(seqs)) == list(range(last + 1))
    assert _in_order_but_for_resends(seqs), seqs
    print(f"{len(set(seqs))} Samples over TLS through a broker restart, "
          f"{len(seqs) - len(set(seqs))} resent")


def _in_order_but_for_resends(seqs: list[int]) -> bool:
    # after a reconnect QoS 1 may resend what the broker had already taken: a step back is
    # only ever onto a seq seen before
    seen: set[int] = set()
    top = -1
    for s in seqs:
        if s < top and s not in seen:
            return False
        seen.add(s)
        top = max(top, s)
    return True


async def test_a_broker_that_accepts_and_never_answers_does_not_stall_polling(
        tmp_path: Path) -> None:
    # a listener that never accepts: TCP connects (the kernel's backlog), the TLS handshake
    # waits for a ServerHello that never comes, for paho's connect timeout
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    make_certs(tmp_path / "certs")
    broker = BrokerConfig(url=f"mqtts://127.0.0.1:{silent.getsockname()[1]}", protocol="5",
                          ca_file=tmp_path / "certs" / "ca.crt")
    meter = SimulatedMeter(register_map("eastron-sdm630"), FactoryLoad())
    port = await meter.start()
    agent = EdgeAgent(SITE, broker, _edge(tmp_path, [port]))
    try:
        await _run_for(agent, 4.0, stop_within_s=15)
    finally:
        await meter.stop()
        silent.close()
    h = agent.health["m0"]
    print(f"polls {h.polls}, missed {h.missed}, max jitter {h.max_jitter_ms:.1f} ms")
    # 4 s at 0.2 s with the connect stuck in its handshake: every tick polled (a poll that
    # started a period late would have let the next tick pass: counted missed)
    assert h.polls >= 16
    assert (h.failures, h.missed) == (0, 0)
    assert agent.outbox.cached_depth >= h.ok  # kept for the broker, none handed over


async def test_a_stop_that_lands_as_an_answer_arrives_still_stops_the_agent(
        tmp_path: Path) -> None:
    # On Python 3.11 asyncio.wait_for, with which pymodbus waits for an answer, returns the
    # answer when a cancel comes in the same loop turn, and the poll worker would poll on:
    # `systemctl stop` (and the demo) waited for it forever. The stop is set just before the
    # agent's client takes in an answer, in that turn.
    meter = SimulatedMeter(register_map("eastron-sdm630"), FactoryLoad())
    port = await meter.start()
    nobody = BrokerConfig(url=f"mqtt://127.0.0.1:{servers.free_port()}", protocol="5")
    edge = _edge(tmp_path, [port]).model_copy(update={"drain_s": 0.0})
    agent = EdgeAgent(SITE, nobody, edge)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await servers.until(lambda: agent.health["m0"].ok >= 2, 10, "two polls answered")
        # where the answer comes in: the client of the agent's one Modbus connection
        ctx = next(iter(agent._readers.values()))._client.ctx
        take_answer = ctx.callback_data

        def stop_then_take(data: bytes, addr: tuple[str, int] | None = None) -> int:
            stop.set()
            return take_answer(data, addr)

        ctx.callback_data = stop_then_take  # type: ignore[method-assign]
        done, _ = await asyncio.wait({task}, timeout=10)
        polls = agent.health["m0"].polls
        assert done, f"the agent polled on after the stop ({polls} polls) and did not end"
        assert stop.is_set()
    finally:
        stop.set()
        if not task.done():
            task.cancel()
        await asyncio.wait({task}, timeout=5)
        await meter.stop()
