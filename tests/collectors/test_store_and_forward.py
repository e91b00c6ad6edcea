"""Store and forward: the broker away for 30 s and the agent killed with SIGKILL, twice;
afterwards every Sample is at the subscriber, in order per device, none missing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collectors.profile import register_map
from lingtan.simulator import FactoryLoad, SimulatedMeter
from telemetry.config import BrokerConfig
from telemetry.sample import Sample, decode
from tests import servers

pytestmark = pytest.mark.integration
DEVICES = 3


def _config(tmp: Path, mqtt_port: int, meter_ports: list[int]) -> Path:
    devices = "\n".join(
        f"    - {{id: m{i}, profile: eastron-sdm630, interval_s: 0.2, timeout_s: 0.5,"
        f" transport: {{host: 127.0.0.1, port: {p}}}}}" for i, p in enumerate(meter_ports))
    path = tmp / "site.yaml"
    path.write_text(f"""
site: {{id: s1, timezone: Asia/Shanghai}}
broker: {{url: "mqtt://127.0.0.1:{mqtt_port}", protocol: "5"}}
edge:
  agent_id: e1
  state_dir: edge
  health_interval_s: 1
  devices:
{devices}
""")
    return path


def _edge(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "lingtan", "edge", "-c", str(cfg)],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _outbox(tmp: Path) -> tuple[int, dict[str, int]]:
    db = sqlite3.connect(tmp / "edge" / "outbox.sqlite")
    try:
        depth = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        last = dict(db.execute("SELECT device, last FROM seq").fetchall())
    finally:
        db.close()
    return int(depth), last


class Subscriber:
    """A persistent-session QoS 1 subscriber that acknowledges on receipt (a witness only)."""

    def __init__(self, broker: BrokerConfig) -> None:
        self.payloads: list[bytes] = []
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-subscriber",
                                  protocol=paho.MQTTv5)
        self.client.on_message = lambda _c, _u, m: self.payloads.append(bytes(m.payload))
        self.client.on_connect = lambda c, *_: c.subscribe("lingtan/v1/s1/+/sample", qos=1)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect(broker.host, broker.port, clean_start=False, properties=props)
        self.client.loop_start()

    def samples(self) -> list[Sample]:
        return [s for p in list(self.payloads) for s in decode(p)]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def test_broker_outage_and_kill_9_lose_nothing(tmp_path: Path) -> None:
    meters = [SimulatedMeter(register_map("eastron-sdm630"), FactoryLoad(seed=i))
              for i in range(DEVICES)]
    ports = [await m.start() for m in meters]
    mqtt_port = servers.free_port()
    broker = BrokerConfig(url=f"mqtt://127.0.0.1:{mqtt_port}", protocol="5")
    cfg = _config(tmp_path, mqtt_port, ports)
    log = tmp_path / "edge.log"
    mdir = tmp_path / "mosquitto"
    mdir.mkdir()
    broker_cm = servers.mosquitto(mdir, mqtt_port, persistent=True)
    broker_cm.__enter__()
    sub = Subscriber(broker)
    edge = _edge(cfg, log)
    try:
        await asyncio.sleep(3.0)                               # normal running
        broker_cm.__exit__(None, None, None)                   # broker away for 30 s ...
        await asyncio.sleep(12)
        edge.send_signal(signal.SIGKILL)                       # ... and the agent killed
        edge.wait(10)
        depth_at_kill, _ = _outbox(tmp_path)
        edge = _edge(cfg, log)
        await asyncio.sleep(18)
        broker_cm = servers.mosquitto(mdir, mqtt_port, persistent=True)
        broker_cm.__enter__()
        await asyncio.sleep(6.0)
        os.kill(edge.pid, signal.SIGKILL)                      # killed again, mid-stream
        edge.wait(10)
        edge = _edge(cfg, log)
        await asyncio.sleep(4.0)
        edge.send_signal(signal.SIGTERM)
        assert edge.wait(20) == 0
        await asyncio.sleep(1.0)
    finally:
        if edge.poll() is None:
            edge.kill()
        sub.stop()
        broker_cm.__exit__(None, None, None)
        for m in meters:
            await m.stop()
    received = sub.samples()
    depth, last_seq = _outbox(tmp_path)
    assert depth == 0, "the outbox drained"
    assert depth_at_kill > 100, "the outage filled the outbox"
    counts = []
    for dev in [f"m{i}" for i in range(DEVICES)] + ["e1"]:
        seqs = [s.seq for s in received if s.device == dev]
        first_seen = list(dict.fromkeys(seqs))
        assert first_seen == sorted(first_seen), f"{dev}: out of order"
        assert first_seen == list(range(last_seq[dev] + 1)), f"{dev}: missing Samples"
        counts.append((dev, len(first_seen), len(seqs) - len(first_seen)))
    print("device, Samples received, redeliveries:", counts, "outbox at kill:", depth_at_kill)
