"""The ingest boundary: each rejection says why; nothing half-valid gets through."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from ingest.influx import line
from ingest.sqlite_store import SqliteStore
from ingest.validate import Rejected, validate
from telemetry.quantities import vocabulary
from telemetry.sample import Quality, Sample

NOW = 1_764_000_000_000
OK = {"site": "s1", "device": "m1", "seq": 3, "ts": NOW - 1000,
      "values": {"active_power_kw": 5.5}}


def _check(topic: str, body: object) -> list[Sample]:
    _, samples = validate(topic, orjson.dumps(body), vocabulary=vocabulary(), sites={"s1"},
                          now=NOW, max_future_ms=300_000, max_age_ms=86_400_000)
    return samples


def test_a_good_message_passes() -> None:
    assert [s.seq for s in _check("lingtan/v1/s1/m1/sample", OK)] == [3]
    assert len(_check("lingtan/v1/s1/m1/sample", [OK, {**OK, "seq": 4}])) == 2


@pytest.mark.parametrize(("topic", "body", "reason"), [
    ("lingtan/v1/s2/m1/sample", OK, "site 's2' is not served"),
    ("lingtan/v1/s1/m2/sample", OK, "payload.device='m1' does not match topic device 'm2'"),
    ("lingtan/v1/s1/m1/sample", {**OK, "site": "s9"}, "payload.site='s9' does not match"),
    ("lingtan/v1/s1/m1/sample", {**OK, "values": {"power_w": 1.0}},
     r"unknown quantities \['power_w'\]"),
    ("lingtan/v1/s1/m1/sample", {**OK, "ts": NOW + 3_600_000}, "3600 s in the future"),
    ("lingtan/v1/s1/m1/sample", {**OK, "ts": NOW - 2 * 86_400_000}, "older than"),
    ("lingtan/v1/s1/m1/sample", [OK, {**OK, "device": "m9"}], r"payload\[1\].device='m9'"),
    ("lingtan/v1/s1/m1/sample", {**OK, "seq": "x"}, "seq='x'"),
    ("lingtan/v1/s1/alert", OK, "carries no Samples"),
])
def test_rejections_name_the_problem(topic: str, body: object, reason: str) -> None:
    with pytest.raises(Rejected, match=reason):
        _check(topic, body)


def test_devices_not_allowed_for_a_site_are_refused() -> None:
    allowed = {"s1": ["m1"]}
    with pytest.raises(Rejected, match="device 'm2' is not allowed for site 's1'"):
        validate("lingtan/v1/s1/m2/sample", orjson.dumps({**OK, "device": "m2"}),
                 vocabulary=vocabulary(), sites={"s1"}, now=NOW, max_future_ms=0,
                 max_age_ms=86_400_000, devices=allowed)
    _, [s] = validate("lingtan/v1/s1/m1/sample", orjson.dumps(OK), vocabulary=vocabulary(),
                      sites={"s1"}, now=NOW, max_future_ms=0, max_age_ms=86_400_000,
                      devices=allowed)
    assert s.device == "m1"


def test_store_writes_a_sample_once(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "ts.sqlite")
    s = Sample(site="s1", device="m1", seq=0, ts=NOW, values={"active_power_kw": 1.0})
    again = Sample(site="s1", device="m1", seq=0, ts=NOW, values={"active_power_kw": 1.0})
    assert store.insert([s]) == 1
    assert store.insert([again]) == 0
    assert store.query("s1", "m1", "active_power_kw") == [(NOW, 0, 1.0)]


def test_store_retention_deletes_only_older_readings(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "ts.sqlite")
    store.insert([Sample(site="s1", device="m1", seq=i, ts=NOW + i * 1000,
                         values={"active_power_kw": float(i), "frequency_hz": 50.0})
                  for i in range(10)])
    assert store.prune(NOW + 4000) == 8  # seq 0-3, two values each
    assert [r[1] for r in store.query("s1", "m1", "active_power_kw")] == list(range(4, 10))
    assert store.count_samples("s1") == 6


def test_line_protocol_schema() -> None:
    s = Sample(site="s1", device="m1", seq=9, ts=NOW, quality=Quality.ESTIMATED,
               values={"active_power_kw": 812.5, "energy_import_kwh": 48210.0})
    assert line(s, "meter") == (f"meter,site=s1,device=m1,quality=estimated "
                                f"active_power_kw=812.5,energy_import_kwh=48210.0,seq=9i {NOW}")
