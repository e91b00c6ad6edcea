"""Hostile payloads: wrong types, huge, deeply nested, unicode, truncated JSON.

None crashes ingest; each is dead-lettered with a reason; nothing of it is stored.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.config import IngestConfig, SqliteConfig
from ingest.service import IngestService
from ingest.validate import Rejected, validate
from telemetry.config import BrokerConfig, SiteInfo
from telemetry.quantities import vocabulary
from telemetry.sample import MAX_PAYLOAD_BYTES
from telemetry.timeutil import now_ms
from tests.ingest.harness import running
from tests.mqtt_helpers import collect, publish
from tests.servers import wait_until

TOPIC = "lingtan/v1/s1/m1/sample"


def _good() -> dict[str, object]:
    return {"site": "s1", "device": "m1", "seq": 1, "ts": now_ms() - 1000,
            "values": {"active_power_kw": 1.5}}


_i64 = st.integers(-(2**63), 2**63 - 1)
_json = st.recursive(
    st.none() | st.booleans() | _i64 | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
_not_int = st.none() | st.booleans() | st.text() | st.lists(_i64, max_size=2) | \
    st.floats(allow_nan=False).filter(lambda f: f != int(f) if abs(f) < 1e300 else True)
_not_ident = st.none() | _i64 | st.lists(st.text(), max_size=2) | \
    st.text().filter(lambda t: t not in ("s1", "m1"))


@st.composite
def wrong_type(draw: st.DrawFn) -> bytes:
    body = _good()
    field = draw(st.sampled_from(["site", "device", "seq", "ts", "values", "quality"]))
    if field in ("seq", "ts"):
        body[field] = draw(_not_int)
    elif field in ("site", "device"):
        body[field] = draw(_not_ident)
    elif field == "values":
        body["values"] = draw(
            st.none() | st.text() | st.lists(st.floats(), max_size=2)
            | st.dictionaries(st.just("active_power_kw"), st.text() | st.lists(_i64),
                              min_size=1))
    else:
        body["quality"] = draw(st.text().filter(lambda t: t not in ("good", "estimated")))
    return orjson.dumps(body)


@st.composite
def truncated(draw: st.DrawFn) -> bytes:
    raw = orjson.dumps(_good())
    return raw[: draw(st.integers(0, len(raw) - 1))]


@st.composite
def nested(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(200, 5000))
    kind = draw(st.sampled_from(["list", "dict", "values"]))
    if kind == "list":
        return b"[" * depth + b"]" * depth
    if kind == "dict":
        return b'{"a":' * depth + b"1" + b"}" * depth
    body = _good()
    body["values"] = {"active_power_kw": 1.0, "x": None}
    raw = orjson.dumps(body).replace(b"null", b'{"a":' * 100 + b"1" + b"}" * 100)
    return raw


hostile = st.one_of(
    wrong_type(),
    truncated(),
    nested(),
    st.binary(max_size=200),                                    # not even UTF-8, mostly
    st.text(max_size=200).map(lambda t: t.encode()),            # unicode, not a Sample
    _json.map(orjson.dumps),                                    # JSON, wrong shape
    st.just(b'{"site":"s1","device":"m1","seq":1,"ts":1,"values":{"active_power_kw":NaN}}'),
    st.builds(lambda: b" " * (MAX_PAYLOAD_BYTES + 1)),         # over the size limit
)


@settings(max_examples=3000, deadline=None)
@given(hostile)
def test_validate_rejects_with_a_reason_and_nothing_else(payload: bytes) -> None:
    with pytest.raises(Rejected) as info:
        validate(TOPIC, payload, vocabulary=vocabulary(), sites={"s1"}, now=now_ms(),
                 max_future_ms=300_000, max_age_ms=10 * 86_400_000)
    assert info.value.reason


@pytest.mark.integration
@settings(max_examples=3, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(st.lists(hostile, min_size=40, max_size=40))
def test_ingest_dead_letters_every_hostile_payload(tmp_path_factory: pytest.TempPathFactory,
                                                   broker: BrokerConfig,
                                                   payloads: list[bytes]) -> None:
    tmp: Path = tmp_path_factory.mktemp("ingest")
    cfg = IngestConfig(client_id="t-hostile", batch_wait_s=0.1,
                       sqlite=SqliteConfig(path=tmp / "ts.sqlite"),
                       state_path=tmp / "state.sqlite")
    svc = IngestService(SiteInfo(id="s1"), broker, cfg)
    good = orjson.dumps(_good())
    with collect(broker, "lingtan/v1/s1/deadletter") as dead, running(svc):
        publish(broker, [(TOPIC, p) for p in payloads] + [(TOPIC, good)])
        wait_until(lambda: svc.stats.messages == len(payloads) + 1, 30, "every message")
        wait_until(lambda: len(dead.payloads()) == len(payloads), 30, "every dead letter")
    assert svc.stats.samples_stored == 1  # the good one, after all the hostile ones
    letters = [orjson.loads(p) for p in dead.payloads()]
    assert all(d["reason"] and d["topic"] == TOPIC for d in letters)
    assert [d["payload"] for d in letters] == [
        p.decode("utf-8", errors="replace") for p in payloads]
