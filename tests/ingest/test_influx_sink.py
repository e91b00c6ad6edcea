"""The InfluxDB write path against a real VictoriaMetrics, with InfluxDB's refusals injected.

413 splits a request until it fits, 400 isolates the refused lines (dead-lettered, the rest
written), 429 is retried after the server's Retry-After; every value lands exactly once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from ingest.config import InfluxConfig, IngestConfig
from ingest.influx import InfluxSink, SinkUnavailable, line, retry_after_seconds
from ingest.service import IngestService
from telemetry.config import BrokerConfig, SiteInfo
from telemetry.sample import Sample, decode
from telemetry.timeutil import now_ms
from tests.ingest.harness import running
from tests.ingest.influx_faults import influx_faults
from tests.mqtt_helpers import collect, publish
from tests.servers import VictoriaMetrics, free_port, wait_until

pytestmark = pytest.mark.integration
SITE = SiteInfo(id="s1")
T0 = 1_764_000_000_000


def _samples(n: int, device: str = "m1") -> list[Sample]:
    return [Sample(site="s1", device=device, seq=i, ts=T0 + i * 1000,
                   values={"active_power_kw": float(i), "frequency_hz": 50.0 + i / 1000})
            for i in range(n)]


def _stored(vm: VictoriaMetrics, device: str = "m1") -> list[float]:
    series = vm.export(f'{{__name__="meter_active_power_kw",device="{device}"}}')
    return sorted(v for s in series for v in s["values"])  # type: ignore[attr-defined]


def test_413_splits_the_request_until_it_fits(tmp_path: Path, victoria: VictoriaMetrics) -> None:
    samples = _samples(200)
    lines = [line(s, "meter") for s in samples]
    with influx_faults(victoria.url) as (url, faults):
        faults.max_body = sum(len(x) + 1 for x in lines) // 5
        sink = InfluxSink(InfluxConfig(url=url))
        assert sink.write(lines) == []
    assert 413 in faults.statuses()
    assert sink.splits >= 4
    assert _stored(victoria) == [float(i) for i in range(200)]  # each once


def test_400_dead_letters_the_refused_lines_and_writes_the_rest(
        tmp_path: Path, victoria: VictoriaMetrics) -> None:
    lines = [line(s, "meter") for s in _samples(64)]
    lines[5] = lines[5].replace("device=m1", "device=bad")
    lines[40] = lines[40].replace("device=m1", "device=bad")
    with influx_faults(victoria.url) as (url, faults):
        faults.poison = "device=bad"
        refused = InfluxSink(InfluxConfig(url=url)).write(lines)
    assert [r.index for r in refused] == [5, 40]
    assert all("HTTP 400" in r.reason and "field type conflict" in r.reason for r in refused)
    assert _stored(victoria) == [float(i) for i in range(64) if i not in (5, 40)]
    assert _stored(victoria, "bad") == []


def test_429_raises_with_the_servers_retry_after(victoria: VictoriaMetrics) -> None:
    with influx_faults(victoria.url) as (url, faults):
        faults.throttle(1, "7")
        sink = InfluxSink(InfluxConfig(url=url))
        with pytest.raises(SinkUnavailable) as info:
            sink.write([line(_samples(1)[0], "meter")])
    assert info.value.retry_after_s == 7
    assert "HTTP 429" in str(info.value)


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert retry_after_seconds("30") == 30
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def _ingest(tmp: Path, url: str) -> IngestConfig:
    return IngestConfig(client_id="t-ingest", batch_wait_s=0.1, influxdb=InfluxConfig(url=url),
                        state_path=tmp / "state.sqlite")


def test_ingest_honours_retry_after_and_dead_letters_refused_samples(
        tmp_path: Path, broker: BrokerConfig, victoria: VictoriaMetrics) -> None:
    now = now_ms()
    good = [Sample(site="s1", device="m1", seq=i, ts=now - 5000 + i, values={
        "active_power_kw": float(i)}) for i in range(20)]
    bad = Sample(site="s1", device="bad", seq=0, ts=now, values={"active_power_kw": 1.0})
    with influx_faults(victoria.url) as (url, faults), \
            collect(broker, "lingtan/v1/s1/deadletter") as dead:
        faults.poison = "device=bad"
        faults.throttle(2, "2")
        svc = IngestService(SITE, broker, _ingest(tmp_path, url))
        with running(svc):
            publish(broker, [(f"lingtan/v1/s1/{s.device}/sample", orjson.dumps(
                s.model_dump(mode="json"))) for s in [*good, bad]])
            wait_until(lambda: svc.stats.samples_stored == 20, 30, "20 Samples stored")
            wait_until(lambda: len(dead.payloads()) == 1, 10, "the refused Sample dead-lettered")
        seen = list(faults.seen)
    statuses = [s for _, _, s in seen]
    assert statuses[:2] == [429, 429]
    # the retry came no sooner than the server asked
    assert seen[1][0] - seen[0][0] >= 1.9
    assert seen[2][0] - seen[1][0] >= 1.9
    assert svc.stats.sink_failures == 2
    assert _stored(victoria) == [float(i) for i in range(20)]
    letter = orjson.loads(dead.payloads()[0])
    assert letter["topic"] == "lingtan/v1/s1/bad/sample"
    assert "InfluxDB refused the line: HTTP 400" in letter["reason"]
    assert decode(letter["payload"].encode()) == [bad]


def test_check_says_what_answers(tmp_path: Path, broker: BrokerConfig,
                                 victoria: VictoriaMetrics) -> None:
    cfg = tmp_path / "site.yaml"
    cfg.write_text(f"site: {{id: s1}}\nbroker: {{url: '{broker.url}'}}\ningest:\n"
                   f"  influxdb: {{url: '{victoria.url}'}}\n  sqlite: {{path: ts.sqlite}}\n")
    ok = subprocess.run([sys.executable, "-m", "lingtan", "ingest", "-c", str(cfg), "--check"],
                        capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok   broker" in ok.stdout
    assert "ok   influxdb" in ok.stdout
    assert "ok   sqlite" in ok.stdout
    cfg.write_text(cfg.read_text().replace(victoria.url, f"http://127.0.0.1:{free_port()}"))
    down = subprocess.run([sys.executable, "-m", "lingtan", "ingest", "-c", str(cfg), "--check"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert down.returncode == 1
    assert "FAIL influxdb" in down.stdout
    assert "ok   broker" in down.stdout
