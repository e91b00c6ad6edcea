"""The wire model: what a Sample is, and what a bad payload is told."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from telemetry.sample import MAX_PAYLOAD_BYTES, Quality, Sample, WireError, decode, encode

GOOD = {"site": "wuhan-fab1", "device": "grid-main", "seq": 41, "ts": 1_764_000_000_000,
        "values": {"active_power_kw": 812.5, "energy_import_kwh": 48210}}


def test_one_sample_round_trips() -> None:
    [s] = decode(orjson.dumps(GOOD))
    assert s.key == ("wuhan-fab1", "grid-main", 41)
    assert s.values == {"active_power_kw": 812.5, "energy_import_kwh": 48210.0}
    assert s.quality is Quality.GOOD
    assert decode(encode(s)) == [s]


def test_a_message_may_hold_a_list() -> None:
    second = {**GOOD, "seq": 42, "quality": "estimated"}
    samples = decode(orjson.dumps([GOOD, second]))
    assert [s.seq for s in samples] == [41, 42]
    assert samples[1].quality is Quality.ESTIMATED
    assert decode(encode(samples)) == samples


def test_samples_are_frozen() -> None:
    [s] = decode(orjson.dumps(GOOD))
    with pytest.raises(ValueError, match="frozen"):
        s.seq = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"seq": -1}, r"seq=-1: Input should be greater than or equal to 0"),
        ({"seq": "7"}, r"seq='7': Input should be a valid integer"),
        ({"ts": 1_764_000_000_000_000}, r"ts=1764000000000000: Input should be less than"),
        ({"site": "wuhan/fab1"}, r"site='wuhan/fab1': String should match pattern"),
        ({"device": "+"}, r"device='\+': String should match pattern"),
        ({"values": {}}, r"values=\{\}: Dictionary should have at least 1 item"),
        ({"values": {"active_power_kw": "812.5"}},
         r"values.active_power_kw='812.5': Input should be a valid number"),
        ({"values": {"active_power_kw": True}},
         r"values.active_power_kw=True: Input should be a valid number"),
        ({"quality": "great"}, r"quality='great': Input should be 'good', 'estimated'"),
        ({"colour": "red"}, r"colour='red': Extra inputs are not permitted"),
    ],
)
def test_bad_fields_are_named_with_value_and_reason(change: dict[str, object],
                                                    expected: str) -> None:
    with pytest.raises(WireError, match=expected):
        decode(orjson.dumps({**GOOD, **change}))


def test_missing_field_is_named() -> None:
    body = {k: v for k, v in GOOD.items() if k != "ts"}
    with pytest.raises(WireError, match=r"^ts=.*Field required"):
        decode(orjson.dumps(body))


def test_nan_and_infinity_are_refused() -> None:
    # orjson will not write NaN; a hand-made payload can
    raw = orjson.dumps(GOOD).replace(b"812.5", b"NaN")
    with pytest.raises(WireError, match="not JSON"):
        decode(raw)
    # a Sample built in code (a driver's decode) gets the same rule
    with pytest.raises(ValidationError, match="finite number"):
        Sample.model_validate({**GOOD, "values": {"active_power_kw": math.inf}})


def test_position_in_a_list_is_named() -> None:
    with pytest.raises(WireError, match=r"^1\.seq=-5"):
        decode(orjson.dumps([GOOD, {**GOOD, "seq": -5}]))


@pytest.mark.parametrize(("payload", "expected"), [
    (b"", "not JSON"), (b"{", "not JSON"), (b"[]", "empty list"), (b"42", "got int"),
    (b'"x"', "got str"), (b"[1]", r"0=1: Input should be a valid dictionary"),
])
def test_payloads_that_are_not_samples(payload: bytes, expected: str) -> None:
    with pytest.raises(WireError, match=expected):
        decode(payload)


def test_oversize_payload_is_refused_before_parsing() -> None:
    with pytest.raises(WireError, match="over the"):
        decode(b" " * (MAX_PAYLOAD_BYTES + 1))


samples = st.builds(
    Sample,
    site=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True),
    device=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True),
    seq=st.integers(0, 2**53),
    ts=st.integers(0, 10**15 - 1),
    values=st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{1,20}", fullmatch=True),
                           st.floats(allow_nan=False, allow_infinity=False), min_size=1,
                           max_size=8),
    quality=st.sampled_from(list(Quality)),
)


@given(st.lists(samples, min_size=1, max_size=5))
def test_encode_decode_is_lossless(batch: list[Sample]) -> None:
    assert decode(encode(batch)) == batch
    assert decode(encode(batch[0])) == [batch[0]]


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_wire_error(payload: bytes) -> None:
    try:
        decode(payload)
    except WireError as exc:
        message = str(exc)
    else:
        return
    assert message
