"""The edge agent end to end with a real broker: nothing lost while the broker is away."""

from __future__ import annotations

import asyncio
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
from tests.mqtt_helpers import collect

pytestmark = pytest.mark.integration
SITE = SiteInfo(id="s1", timezone="Asia/Shanghai")


def _edge(tmp: Path, ports: list[int]) -> EdgeConfig:
    return EdgeConfig(agent_id="e1", state_dir=tmp / "edge", devices=[
        DeviceConfig(id=f"m{i}", profile="eastron-sdm630",
                     transport=TcpTransport(host="127.0.0.1", port=p), interval_s=0.2,
                     timeout_s=0.5) for i, p in enumerate(ports)])


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
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await asyncio.sleep(3.0)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        for m in meters:
            await m.stop()
        await hang.stop()
        await garbage.stop()
    good = [agent.health[f"m{i}"] for i in range(4)]
    bad = [agent.health[f"m{i}"] for i in range(4, 7)]
    print("healthy polls/missed/max jitter ms:",
          [(h.polls, h.missed, round(h.max_jitter_ms, 1)) for h in good])
    for h in good:
        # 3 s at 0.2 s: about 15 polls, none missed, none failed, each within its tick
        assert h.polls >= 12
        assert (h.failures, h.missed) == (0, 0)
        assert h.max_jitter_ms < 200
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
