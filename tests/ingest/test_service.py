"""Ingest against a real Mosquitto: dead letters, dedupe, and acknowledgement only when durable."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import orjson
import pytest

from ingest.config import InfluxConfig, IngestConfig, SqliteConfig
from ingest.service import IngestService
from ingest.sqlite_store import SqliteStore
from telemetry.config import BrokerConfig, SiteInfo
from telemetry.timeutil import now_ms
from tests.ingest.harness import running
from tests.ingest.influx_faults import influx_faults
from tests.mqtt_helpers import collect, publish
from tests.servers import VictoriaMetrics, free_port, wait_until

pytestmark = pytest.mark.integration
SITE = SiteInfo(id="s1", timezone="Asia/Shanghai", region="CN")


def _sample(seq: int, device: str = "m1", **kw: object) -> bytes:
    body = {"site": "s1", "device": device, "seq": seq, "ts": now_ms() - 1000 + seq,
            "values": {"active_power_kw": float(seq)}}
    body.update(kw)
    return orjson.dumps(body)


def _cfg(tmp: Path, influx: InfluxConfig | None = None) -> IngestConfig:
    # no self-metric Samples in these counts (see test_self_metrics_...)
    return IngestConfig(client_id="t-ingest", batch_wait_s=0.1, health_interval_s=3600,
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



def test_a_sample_that_would_overwrite_a_value_at_the_same_ts_is_dead_lettered(
        tmp_path: Path, broker: BrokerConfig, victoria: VictoriaMetrics) -> None:
    # InfluxDB keeps one point per series and time: Samples of a device at one ts add to it,
    # and one giving a quantity already there another value would replace that value
    ts = now_ms() - 5000
    def at(seq: int, t: int, device: str = "m1", value: float | None = None,
           quantity: str = "active_power_kw") -> bytes:
        return _sample(seq, device=device, ts=t,
                       values={quantity: float(seq) if value is None else value})

    def message(seq: int, t: int, value: float, held: int, held_value: float) -> str:
        return (f"overwrite: seq {seq} of s1/m1 at ts {t} has active_power_kw {value!r} where "
                f"seq {held} has {held_value!r}; the database keeps one point per device and "
                "time")

    svc = IngestService(SITE, broker, _cfg(tmp_path, InfluxConfig(url=victoria.url)))
    with collect(broker, "lingtan/v1/+/deadletter") as dead, running(svc):
        publish(broker, [("lingtan/v1/s1/m1/sample", at(0, ts)),
                         ("lingtan/v1/s1/m1/sample", at(1, ts)),           # same batch
                         ("lingtan/v1/s1/m1/sample", at(2, ts + 1)),
                         ("lingtan/v1/s1/m2/sample", at(0, ts, "m2"))])    # another device
        wait_until(lambda: svc.stats.messages == 4, 10, "the first four messages")
        publish(broker, [
            ("lingtan/v1/s1/m1/sample", at(3, ts + 1, quantity="poll_ok_count")),  # adds
            ("lingtan/v1/s1/m1/sample", at(4, ts + 1, value=2.0)),  # the same value: harmless
            ("lingtan/v1/s1/m1/sample", at(5, ts + 1)),             # a later batch
            ("lingtan/v1/s1/m1/sample", at(0, ts))])                # a redelivery
        wait_until(lambda: svc.stats.messages == 8, 10, "the next four")
        wait_until(lambda: len(dead.payloads()) == 2, 10, "two dead letters")
    letters = [orjson.loads(p) for p in dead.payloads()]
    assert {str(d["reason"]) for d in letters} == {
        message(1, ts, 1.0, 0, 0.0), message(5, ts + 1, 5.0, 2, 2.0)}
    assert sorted(orjson.loads(str(d["payload"]))["seq"] for d in letters) == [1, 5]
    assert svc.stats.duplicates == 1
    assert svc.stats.rejected == {"overwrite": 2}
    def stored(name: str) -> dict[str, list[float]]:
        return {s["metric"]["device"]: sorted(s["values"])  # type: ignore[index, arg-type]
                for s in victoria.export(f'{{__name__="{name}"}}')}
    assert stored("meter_active_power_kw") == {"m1": [0, 2, 2], "m2": [0]}
    assert stored("meter_poll_ok_count") == {"m1": [3]}
    store = SqliteStore(tmp_path / "ts.sqlite")
    # by seq: 1 and 5 in neither store
    assert [r[1] for r in store.query("s1", "m1", "active_power_kw")] == [0, 2, 4]


def test_after_a_restart_a_redelivered_clash_is_still_refused(
        tmp_path: Path, broker: BrokerConfig, victoria: VictoriaMetrics) -> None:
    # ingest stored seq 0 and died before acknowledging: the broker resends seq 0 (a duplicate
    # now) and seq 1, which would overwrite seq 0's value at the same ts
    ts = now_ms() - 5000
    svc = IngestService(SITE, broker, _cfg(tmp_path, InfluxConfig(url=victoria.url)))
    with running(svc):
        publish(broker, [("lingtan/v1/s1/m1/sample", _sample(0, ts=ts))])
        wait_until(lambda: svc.stats.samples_stored == 1, 10, "seq 0 stored")
    svc2 = IngestService(SITE, broker, _cfg(tmp_path, InfluxConfig(url=victoria.url)))
    with collect(broker, "lingtan/v1/+/deadletter") as dead, running(svc2):
        publish(broker, [("lingtan/v1/s1/m1/sample", _sample(0, ts=ts)),
                         ("lingtan/v1/s1/m1/sample", _sample(1, ts=ts))])
        wait_until(lambda: len(dead.payloads()) == 1, 10, "a dead letter")
    assert svc2.stats.duplicates == 1
    [series] = victoria.export('{__name__="meter_active_power_kw"}')
    assert series["values"] == [0]


def test_a_sample_the_database_refused_does_not_hold_its_point(
        tmp_path: Path, broker: BrokerConfig, victoria: VictoriaMetrics) -> None:
    # InfluxDB refuses seq 1 (400: a field type conflict, say); it is dead-lettered and is in
    # no point, so seq 2 at the same ts, with another value, is stored, not refused as an
    # overwrite of a value the database never took
    ts = now_ms() - 5000
    with influx_faults(victoria.url) as (url, faults):
        faults.poison = "active_power_kw=7.25,"
        svc = IngestService(SITE, broker, _cfg(tmp_path, InfluxConfig(url=url)))
        with collect(broker, "lingtan/v1/+/deadletter") as dead, running(svc):
            publish(broker, [("lingtan/v1/s1/m1/sample",
                              _sample(1, ts=ts, values={"active_power_kw": 7.25}))])
            wait_until(lambda: len(dead.payloads()) == 1, 15, "seq 1 refused and dead-lettered")
            publish(broker, [("lingtan/v1/s1/m1/sample",
                              _sample(2, ts=ts, values={"active_power_kw": 3.0}))])
            wait_until(lambda: svc.stats.samples_stored == 1, 15, "seq 2 stored")
            assert 400 in faults.statuses()
    [letter] = [orjson.loads(p) for p in dead.payloads()]
    assert "InfluxDB refused the line" in str(letter["reason"])
    assert orjson.loads(str(letter["payload"]))["seq"] == 1
    assert "overwrite" not in svc.stats.rejected
    [series] = victoria.export('{__name__="meter_active_power_kw"}')
    assert series["values"] == [3.0]


def test_while_the_database_is_down_ingest_holds_no_more_than_max_pending(
        tmp_path: Path, broker: BrokerConfig, victoria: VictoriaMetrics) -> None:
    down = InfluxConfig(url=f"http://127.0.0.1:{free_port()}", timeout_s=1)
    svc = IngestService(SITE, broker, _cfg(tmp_path, down).model_copy(update={"max_pending": 10}))
    with running(svc):
        publish(broker, [("lingtan/v1/s1/m1/sample", _sample(i)) for i in range(50)])
        wait_until(lambda: svc.stats.sink_failures >= 3, 20, "writes to fail")
        # MQTT 5 Receive Maximum: the broker sent 10 and holds the other 40
        assert svc.consumer.received == 10
    up = InfluxConfig(url=victoria.url, timeout_s=5)
    svc2 = IngestService(SITE, broker, _cfg(tmp_path, up))
    with running(svc2):
        wait_until(lambda: svc2.stats.samples_stored == 50, 20, "all 50 after the database is back")
    assert [r[1] for r in SqliteStore(tmp_path / "ts.sqlite").query(
        "s1", "m1", "active_power_kw")] == list(range(50))  # in order, once


def _shared(tmp: Path, name: str, url: str) -> IngestConfig:
    return IngestConfig(client_id=name, share_group="ingest", batch_wait_s=0.1,
                        influxdb=InfluxConfig(url=url), state_path=tmp / f"{name}.state")


def test_a_shared_subscription_splits_the_load_and_keeps_an_absent_members_share(
        tmp_path: Path, broker: BrokerConfig, victoria: VictoriaMetrics) -> None:
    a = IngestService(SITE, broker, _shared(tmp_path, "ingest-a", victoria.url))
    b = IngestService(SITE, broker, _shared(tmp_path, "ingest-b", victoria.url))
    with running(a), running(b):
        publish(broker, [("lingtan/v1/s1/m1/sample", _sample(i)) for i in range(100)])
        wait_until(lambda: a.stats.samples_stored + b.stats.samples_stored == 100, 20,
                   "100 Samples between the two")
    assert a.stats.samples_stored > 0
    assert b.stats.samples_stored > 0  # both took a share
    # b goes away; its persistent session keeps receiving its share of the group's messages
    a2 = IngestService(SITE, broker, _shared(tmp_path, "ingest-a", victoria.url))
    with running(a2):
        publish(broker, [("lingtan/v1/s1/m1/sample", _sample(i)) for i in range(100, 200)])
        wait_until(lambda: a2.stats.samples_stored >= 40, 20, "a's share")
    b2 = IngestService(SITE, broker, _shared(tmp_path, "ingest-b", victoria.url))
    with running(b2):  # ... and gets it when it comes back
        wait_until(lambda: a2.stats.samples_stored + b2.stats.samples_stored == 100, 20,
                   "b's share after it came back")
    [series] = victoria.export('{__name__="meter_active_power_kw"}')
    assert sorted(series["values"]) == list(range(200))  # type: ignore[arg-type]


def test_self_metrics_for_prometheus_and_as_samples(
        tmp_path: Path, broker: BrokerConfig) -> None:
    port = free_port()
    cfg = IngestConfig(client_id="t-ingest", batch_wait_s=0.1, metrics_port=port,
                       health_interval_s=0.5, sqlite=SqliteConfig(path=tmp_path / "ts.sqlite"),
                       state_path=tmp_path / "state.sqlite")
    svc = IngestService(SITE, broker, cfg)
    with running(svc):
        publish(broker, [("lingtan/v1/s1/m1/sample", _sample(i)) for i in (0, 1, 1)]
                + [("lingtan/v1/s1/m1/sample", b"[]")])
        wait_until(lambda: svc.stats.messages == 4, 10, "four messages")
        store = SqliteStore(tmp_path / "ts.sqlite")
        # its own figures come back through the broker and are stored like any device's
        def duplicates_reported() -> bool:
            latest = store.latest("s1", "ingest-t-ingest", "ingest_duplicates_count")
            return latest is not None and latest[1] == 1.0

        wait_until(duplicates_reported, 20, "a self-metric Sample counting the duplicate")
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    metrics = {ln.split(" ")[0]: float(ln.split(" ")[1]) for ln in text.decode().splitlines()
               if ln and not ln.startswith("#")}
    assert metrics["lingtan_ingest_duplicates_total"] == 1
    assert metrics['lingtan_ingest_rejected_total{reason="payload"}'] == 1
    assert metrics["lingtan_ingest_samples_written_total"] >= 2
    assert metrics["lingtan_ingest_lag_seconds_count"] >= 2
    latest = store.latest("s1", "ingest-t-ingest", "ingest_rejected_count")
    assert latest is not None
    assert latest[1] == 1.0
