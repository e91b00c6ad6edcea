"""Ingest through faults, as a separate process on real servers: the database away for 20 s,
`kill -9` in the middle of a batch, the broker restarted. Afterwards every Sample published is
stored exactly once, compared value by value."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from contextlib import AbstractContextManager, suppress
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.sqlite_store import SqliteStore
from telemetry.sample import Sample, encode
from telemetry.timeutil import now_ms
from tests.ingest.influx_faults import influx_faults
from tests.servers import (
    VictoriaMetrics,
    free_port,
    lingtan_process,
    mosquitto,
    victoria_metrics,
    wait_until,
)

pytestmark = pytest.mark.integration
DEVICES = [f"m{i}" for i in range(5)]


class Stream:
    """Publishes Samples of DEVICES round-robin at `rate` messages/s with a persistent session.

    paho keeps what is unacknowledged and what was published while the broker was away, and
    sends it after reconnecting: a stand-in for the edge's outbox.
    """

    def __init__(self, port: int, rate: float) -> None:
        self.rate = rate
        self.client = paho.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"stream-{uuid.uuid4().hex[:6]}",
                                  protocol=paho.MQTTv5)
        self.client.reconnect_delay_set(0.2, 1)
        self.client.max_queued_messages_set(0)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self.acked = 0
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()
        self.sent: dict[str, int] = dict.fromkeys(DEVICES, 0)
        self.last_ts: dict[str, int] = {}
        self.infos: list[paho.MQTTMessageInfo] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream")
        self._thread.start()

    def _on_publish(self, *_args: object) -> None:
        self.acked += 1  # one PUBACK per message; paho resends what was not acknowledged

    def _run(self) -> None:
        n = 0
        start = time.monotonic()
        while not self._stop.is_set():
            device = DEVICES[n % len(DEVICES)]
            seq = self.sent[device]
            # each read of a device later than its last, as a meter read takes time: after a
            # stall this thread catches up in a burst, and two Samples of a device in one
            # millisecond would be one point in the database (ingest dead-letters the second)
            ts = self.last_ts[device] = max(now_ms(), self.last_ts.get(device, 0) + 1)
            s = Sample(site="s1", device=device, seq=seq, ts=ts,
                       values={"active_power_kw": float(seq)})
            self.infos.append(self.client.publish(f"lingtan/v1/s1/{device}/sample", encode(s),
                                                  qos=1))
            self.sent[device] = seq + 1
            n += 1
            self._stop.wait(max(0.0, start + n / self.rate - time.monotonic()))

    def finish(self) -> int:
        """Stop publishing; wait until the broker acknowledged everything; return the count."""
        self._stop.set()
        self._thread.join()
        wait_until(lambda: self.acked >= len(self.infos), 60,
                   "the broker to acknowledge every Sample published")
        self.client.disconnect()
        self.client.loop_stop()
        return len(self.infos)


def _open_session(port: int) -> None:
    """Create ingest's persistent session before anything is published, as a running plant has:
    from then on the broker keeps every Sample for it."""
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="fault-ingest", protocol=paho.MQTTv5)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.loop_start()
    done = threading.Event()
    c.on_subscribe = lambda *_a: done.set()
    c.subscribe("lingtan/v1/s1/+/sample", qos=1)
    assert done.wait(10)
    c.disconnect()
    c.loop_stop()


def _config(tmp: Path, broker_port: int, influx_url: str, *, sqlite: bool = False) -> Path:
    path = tmp / "site.yaml"
    store = "  sqlite: {path: ts.sqlite}\n" if sqlite else ""
    _open_session(broker_port)
    path.write_text(
        f"site: {{id: s1}}\n"
        f"broker: {{url: 'mqtt://127.0.0.1:{broker_port}'}}\n"
        f"ingest:\n  client_id: fault-ingest\n  batch_wait_s: 0.2\n  health_interval_s: 3600\n"
        f"  influxdb: {{url: '{influx_url}', timeout_s: 2}}\n{store}"
    )
    return path


def ingest_process(config: Path) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """`lingtan ingest -c config` in its own process."""
    return lingtan_process("ingest", config, config.parent / "ingest.log")


def _tail(log: Path, lines: int = 40) -> str:
    """The end of a server's log, for a failure to show what the servers said."""
    if not log.exists():
        return ""
    text = "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    return f"\n--- the end of {log.name}:\n{text}"


def _assert_exactly_once(vm: VictoriaMetrics, sent: dict[str, int], tmp: Path) -> None:
    def stored() -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for s in vm.export('{__name__="meter_active_power_kw"}'):
            device = s["metric"]["device"]  # type: ignore[index]
            out[device] = sorted(s["values"])  # type: ignore[arg-type]
        return out

    try:
        wait_until(lambda: {d: len(v) for d, v in stored().items()} == sent, 60,
                   f"every Sample in the database: {sent}")
    except AssertionError as exc:  # say which Samples are missing or there twice
        now = stored()
        detail = {d: {"missing": sorted(set(range(n)) - {int(v) for v in now.get(d, [])}),
                      "twice": sorted({int(v) for v in now.get(d, [])
                                       if now[d].count(v) > 1})}
                  for d, n in sent.items()}
        logs = "".join(_tail(tmp / name) for name in ("ingest.log", "mosquitto.log"))
        raise AssertionError(f"{exc}; in the database: {detail}{logs}") from None
    got = stored()
    for device, n in sent.items():
        assert got[device] == [float(i) for i in range(n)], device  # none missing, none twice
    print(f"checked {sum(sent.values())} Samples of {len(sent)} devices: each stored once")


def test_database_stopped_for_20_s(tmp_path: Path) -> None:
    with mosquitto(tmp_path) as broker:
        vm_port = free_port()
        vm_ctx = victoria_metrics(tmp_path, vm_port, dedup=True)
        vm = vm_ctx.__enter__()
        config = _config(tmp_path, broker.port, f"http://127.0.0.1:{vm_port}")
        try:
            with ingest_process(config):
                stream = Stream(broker.port, rate=50)
                time.sleep(3)
                vm_ctx.__exit__(None, None, None)  # the database goes away
                time.sleep(20)
                vm_ctx = victoria_metrics(tmp_path, vm_port, dedup=True)
                vm = vm_ctx.__enter__()
                time.sleep(3)
                total = stream.finish()
                _assert_exactly_once(vm, stream.sent, tmp_path)
                assert total > 1000
        finally:
            vm_ctx.__exit__(None, None, None)
    assert "write failed" in (tmp_path / "ingest.log").read_text()


def test_kill_9_in_the_middle_of_a_batch(tmp_path: Path) -> None:
    with mosquitto(tmp_path) as broker, victoria_metrics(tmp_path, dedup=True) as vm, \
            influx_faults(vm.url) as (url, faults):
        faults.delay_s = 0.3  # a slow database: a kill lands while a batch is being written
        config = _config(tmp_path, broker.port, url, sqlite=True)
        stream = Stream(broker.port, rate=50)
        for _ in range(2):
            with ingest_process(config) as proc:
                wait_until(lambda: len(faults.seen) >= 3, 30, "ingest writing")
                requests = len(faults.seen)
                # kill while a write is in flight: after a request started, before it ended
                wait_until(lambda n=requests: len(faults.seen) > n, 10, "the next write")
                time.sleep(0.1)
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        with ingest_process(config):
            time.sleep(2)
            stream.finish()
            _assert_exactly_once(vm, stream.sent, tmp_path)
            store = SqliteStore(tmp_path / "ts.sqlite")
            wait_until(lambda: store.count_samples("s1") == sum(stream.sent.values()), 30,
                       "every Sample in the embedded store")
            for device, n in stream.sent.items():
                assert [v for _, _, v in store.query("s1", device, "active_power_kw")] == [
                    float(i) for i in range(n)]


def test_broker_restarted(tmp_path: Path) -> None:
    port = free_port()
    with victoria_metrics(tmp_path, dedup=True) as vm:
        broker_ctx = mosquitto(tmp_path, port, persistent=True)
        broker_ctx.__enter__()
        try:
            config = _config(tmp_path, port, vm.url)
            with ingest_process(config):
                stream = Stream(port, rate=50)
                time.sleep(3)
                broker_ctx.__exit__(None, None, None)  # SIGTERM: Mosquitto saves its state
                time.sleep(3)
                broker_ctx = mosquitto(tmp_path, port, persistent=True)
                broker_ctx.__enter__()
                time.sleep(4)
                stream.finish()
                _assert_exactly_once(vm, stream.sent, tmp_path)
        finally:
            with suppress(Exception):
                broker_ctx.__exit__(None, None, None)
