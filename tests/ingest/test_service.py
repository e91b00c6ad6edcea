"""Ingest against a real Mosquitto: dead letters, dedupe, and acknowledgement only when durable."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest

from ingest.config import InfluxConfig, IngestConfig, SqliteConfig
from ingest.service import IngestService
from ingest.sqlite_store import SqliteStore
from telemetry.config import BrokerConfig, SiteInfo
from telemetry.timeutil import now_ms
from tests.mqtt_helpers import collect, publish
from tests.servers import VictoriaMetrics, free_port, wait_until

pytestmark = pytest.mark.integration
SITE = SiteInfo(id="s1", timezone="Asia/Shanghai", region="CN")


def _sample(seq: int, device: str = "m1", **kw: object) -> bytes:
    body = {"site": "s1", "device": device, "seq": seq, "ts": now_ms() - 1000 + seq,
            "values": {"active_power_kw": float(seq)}}
    body.update(kw)
    return orjson.dumps(body)


@contextmanager
def running(service: IngestService) -> Iterator[IngestService]:
    stop = threading.Event()
    t = threading.Thread(target=service.run, args=(stop,), name="ingest-under-test")
    t.start()
    try:
        assert service.consumer.wait_connected(10)
        yield service
    finally:
        stop.set()
        t.join(20)
        assert not t.is_alive()


def _cfg(tmp: Path, influx: InfluxConfig | None = None) -> IngestConfig:
    return IngestConfig(client_id="t-ingest", batch_wait_s=0.1,
                        sqlite=SqliteConfig(path=tmp / "ts.sqlite"), influxdb=influx,
                        state_path=tmp / "ingest-state.sqlite")


def test_good_stored_once_bad_dead_lettered_with_reason(tmp_path: Path,
                                                        broker: BrokerConfig) -> None:
    svc = IngestService(SITE, broker, _cfg(tmp_path))
    with collect(broker, "lingtan/v1/+/deadletter") as dead, running(svc):
        publish(broker, [
            ("lingtan/v1/s1/m1/sample", _sample(0)),
            ("lingtan/v1/s1/m1/sample", _sample(1)),
            ("lingtan/v1/s1/m1/sample", _sample(1)),                     # redelivery
            ("lingtan/v1/s1/m1/sample", b"{not json"),
            ("lingtan/v1/s1/m1/sample", _sample(2, device="m2")),        # impersonation
            ("lingtan/v1/s1/m1/sample", _sample(3, values={"power_w": 1.0})),
            ("lingtan/v1/s9/m1/sample", _sample(4)),                     # site not served
        ])
        wait_until(lambda: len(dead.payloads()) == 3, 10, "three dead letters")
        wait_until(lambda: svc.stats.messages == 6, 10, "six messages processed")
    store = SqliteStore(tmp_path / "ts.sqlite")
    assert [r[1] for r in store.query("s1", "m1", "active_power_kw")] == [0, 1]
    assert store.count_samples() == 2
    letters = [orjson.loads(p) for p in dead.payloads()]
    reasons = sorted(str(d["reason"]) for d in letters)
    assert reasons[0].startswith("payload.device='m2' does not match topic device 'm1'")
    assert reasons[1].startswith("payload.values: unknown quantities ['power_w']")
    assert reasons[2].startswith("payload: not JSON")
    assert {d["topic"] for d in letters} == {"lingtan/v1/s1/m1/sample"}
    assert any(d["payload"] == "{not json" for d in letters)
    assert svc.stats.duplicates == 1
    assert sum(svc.stats.rejected.values()) == 3


def test_nothing_is_acknowledged_while_the_database_is_down(
        tmp_path: Path, broker: BrokerConfig, victoria: VictoriaMetrics) -> None:
    down = InfluxConfig(url=f"http://127.0.0.1:{free_port()}", timeout_s=1)
    svc = IngestService(SITE, broker, _cfg(tmp_path, down))
    with running(svc):
        publish(broker, [("lingtan/v1/s1/m1/sample", _sample(i)) for i in range(5)])
        wait_until(lambda: svc.stats.sink_failures >= 2, 20, "writes to fail")
        assert svc.stats.messages == 0
    assert SqliteStore(tmp_path / "ts.sqlite").count_samples() == 0
    # The same client id comes back with a database that works: the broker's session held
    # the unacknowledged messages, and all five arrive.
    up = InfluxConfig(url=victoria.url, timeout_s=5)
    svc2 = IngestService(SITE, broker, _cfg(tmp_path, up))
    with running(svc2):
        wait_until(lambda: svc2.stats.samples_stored == 5, 20, "redelivery after restart")
    store = SqliteStore(tmp_path / "ts.sqlite")
    assert [r[1] for r in store.query("s1", "m1", "active_power_kw")] == [0, 1, 2, 3, 4]
    [series] = victoria.export('{__name__="meter_active_power_kw"}')
    assert sorted(series["values"]) == [0, 1, 2, 3, 4]  # type: ignore[arg-type]
