"""Fuzz the wire decoder (telemetry.sample.decode): whatever arrives, it returns Samples that
every store can hold, or raises WireError with a reason. Nothing else, ever."""

from __future__ import annotations

import string
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.influx import METER_MEASUREMENT, line
from ingest.sqlite_store import SqliteStore
from ingest.state import IngestState
from telemetry.sample import MAX_PAYLOAD_BYTES, Sample, WireError, decode, encode
from tests.hostile import examples

# Numbers at and past the edges that matter: int64 (SQLite INTEGER, InfluxDB `i` fields),
# uint64 (the largest integer orjson parses), the epoch-ms bound, float extremes.
_EDGE_INTS = [0, -1, 1, 2**31 - 1, 2**31, 2**53, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1,
              -(2**63), 10**15 - 1, 10**15]
_ints = st.sampled_from(_EDGE_INTS) | st.integers(-(2**64), 2**64)
_floats = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [0.0, -0.0, 5e-324, 1.7976931348623157e308, -1.7976931348623157e308])
_scalars = st.none() | st.booleans() | _ints | _floats | st.text(max_size=20)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=6,
)
_ident = st.sampled_from(["s1", "m1", "grid-main", "a" * 64, "a" * 65, "", "a/b", "+", "#",
                          "x y", "é", "0"]) | st.text(string.ascii_letters + "-_./+#", max_size=70)
_quantity = st.sampled_from(["active_power_kw", "energy_import_kwh", "Active", "x", "",
                             "a" * 64, "a" * 65]) | st.text(max_size=10)


def _mostly(good: st.SearchStrategy[object], bad: st.SearchStrategy[object]
            ) -> st.SearchStrategy[object]:
    """Good three times in four: a Sample with one or two bad fields reaches every check."""
    return st.integers(0, 3).flatmap(lambda i: bad if i == 0 else good)


_good_ident = st.sampled_from(["s1", "m1", "grid-main", "a" * 64, "0"])
_good_seq = st.integers(0, 2**63 - 1) | st.sampled_from(_EDGE_INTS)
_good_ts = st.integers(0, 10**15 - 1) | st.sampled_from(_EDGE_INTS)
_good_values = st.dictionaries(st.sampled_from(["active_power_kw", "energy_import_kwh"]),
                               _floats, min_size=1, max_size=2)


@st.composite
def near_samples(draw: st.DrawFn) -> object:
    """Objects shaped like a Sample, each field good, at an edge, or of the wrong type."""
    body: dict[str, object] = {
        "site": draw(_mostly(_good_ident, _ident | _json)),
        "device": draw(_mostly(_good_ident, _ident | _json)),
        "seq": draw(_mostly(_good_seq, _ints | _json)),
        "ts": draw(_mostly(_good_ts, _ints | _json)),
        "values": draw(_mostly(_good_values, st.dictionaries(
            _quantity, _floats | _ints | _json, max_size=3) | _json)),
    }
    if draw(st.booleans()):
        body["quality"] = draw(st.sampled_from(["good", "estimated", "questionable", "bad", ""])
                               | _json)
    if draw(st.integers(0, 9)) == 0:
        body[draw(st.text(max_size=6))] = draw(_json)  # an extra key
    if draw(st.integers(0, 9)) == 0:
        body.pop(draw(st.sampled_from(sorted(body))))  # a missing key
    return body if draw(st.integers(0, 3)) else [body] * draw(st.integers(0, 3))


def _raw_bytes(obj: object) -> bytes:
    # orjson refuses ints past 64 bits; write those the way a hostile sender would
    try:
        return orjson.dumps(obj)
    except TypeError:
        return repr(obj).replace("'", '"').replace("None", "null").replace(
            "True", "true").replace("False", "false").encode()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A good Sample's bytes with bytes flipped, cut, repeated or inserted."""
    good = bytearray(encode(Sample(site="s1", device="m1", seq=7, ts=1_764_000_000_000,
                                   values={"active_power_kw": 812.5,
                                           "energy_import_kwh": 48210.25})))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        i = draw(st.integers(0, max(0, len(good) - 1)))
        if op == "flip" and good:
            good[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del good[i:]
        elif op == "insert":
            good[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            good[i:i] = good[i:i + draw(st.integers(1, 20))]
    return bytes(good)


payloads = st.one_of(
    near_samples().map(_raw_bytes),
    _json.map(_raw_bytes),
    mutated(),
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.integers(1, 3000).map(lambda d: b"[" * d + b"]" * d),
    st.integers(1, 3000).map(lambda d: b'{"values":' * d + b"{}" + b"}" * d),
)


def _check(payload: bytes) -> list[Sample]:
    reason = ""
    try:
        samples = decode(payload)
    except WireError as exc:
        samples, reason = [], str(exc).strip() or "(no reason given)"
    if not samples:
        assert reason, "a payload neither decoded nor refused with a reason"
        assert reason != "(no reason given)", f"refused without a reason: {payload[:80]!r}"
    assert all(isinstance(s, Sample) for s in samples)
    return samples


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[SqliteStore, IngestState]:
    tmp: Path = tmp_path_factory.mktemp("wire-fuzz")
    store, state = SqliteStore(tmp / "ts.sqlite"), IngestState(tmp / "state.sqlite",
                                                               max_ranges=1000)
    for db in (store._db, state.db):  # what is checked is what fits, not fsync: skip it here
        db.execute("PRAGMA synchronous=OFF")
    return store, state


Stores = tuple[SqliteStore, IngestState]


def _accepted_round_trips(payload: bytes, stores: Stores) -> None:
    samples = _check(payload)
    for s in samples:
        assert decode(encode(s)) == [s]  # what is accepted goes back on the wire unchanged
        line(s, METER_MEASUREMENT)  # and becomes line protocol
    _store(samples, stores)


def _store(samples: list[Sample], stores: Stores) -> None:
    # A Sample that passes the boundary but that SQLite cannot hold (a seq past int64) would
    # crash ingest on every redelivery: a poison message. Accepted must mean storable.
    store, state = stores
    store.insert(samples)
    for s in samples:
        state.window.check((s.site, s.device), s.seq)
        state.window.add((s.site, s.device), s.seq)
    state.commit_window()


@settings(max_examples=examples(600), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads)
def test_decode_returns_samples_or_a_reason(stores: Stores, payload: bytes) -> None:
    _accepted_round_trips(payload, stores)


# Every field of a Sample replaced by each of these, one at a time: the edges of each check.
_SUBSTITUTES: list[object] = [
    *_EDGE_INTS, 2**64, -(2**64), 0.5, -0.0, 1e308, 5e-324, "1.5", "", "x" * 65, True, False,
    None, [], {}, [1], {"a": 1}, {"active_power_kw": "1"}, {"active_power_kw": True},
    {"active_power_kw": None}, {"Power": 1.0}, {"a" * 65: 1.0}, {"energy_import_kwh": 2**63},
    "s1", "good", "estimated", "questionable", "bad", "lingtan/v1", "é", "\x00",
]
_FIELDS = ["site", "device", "seq", "ts", "values", "quality", "extra"]


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(near_samples())
def test_each_field_at_each_edge(stores: Stores, body: object) -> None:
    # hypothesis draws the rest of the Sample; here every field goes through every edge value
    first = (body or [{}])[0] if isinstance(body, list) else body
    assert isinstance(first, dict)
    for field in _FIELDS:
        for value in _SUBSTITUTES:
            _accepted_round_trips(_raw_bytes({**first, field: value}), stores)


def test_decode_refuses_oversize_and_str_payloads_alike() -> None:
    big = b" " * (MAX_PAYLOAD_BYTES + 1)
    for p in (big, big.decode()):
        with pytest.raises(WireError, match="over the 1048576 limit"):
            decode(p)


@settings(max_examples=examples(400), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(near_samples().map(_raw_bytes))
def test_whatever_decode_accepts_the_stores_can_hold(stores: Stores, payload: bytes) -> None:
    _store(_check(payload), stores)


@pytest.mark.parametrize("seq", [2**63, 2**64 - 1])
def test_a_seq_past_int64_is_refused_with_a_reason(seq: int) -> None:
    payload = b'{"site":"s1","device":"m1","seq":%d,"ts":1764000000000,' \
              b'"values":{"active_power_kw":1.0}}' % seq
    with pytest.raises(WireError, match=r"seq=\d+: Input should be less than or equal to"):
        decode(payload)
