"""Fuzz what turns a device's answers into values: the register decoder of every shipped
profile and of generated ones, SunSpec discovery against a device answering nonsense, and the
JSON mapping of MQTT devices. A value comes out finite and in its quantity, or the poll fails
with a reason (ValueError, LookupError, PayloadError); nothing else escapes."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from collectors.codec import DataType, Order, decode_bits, decode_number, decode_string, width
from collectors.mqtt_devices import MqttDeviceConfig, PayloadError, extract
from collectors.profile import (
    MAX_READ_BITS,
    Profile,
    Read,
    builtin_profiles,
    load_profile,
    register_map,
)
from collectors.sunspec import MARKER, SunSpecProfile, discover
from telemetry.quantities import vocabulary
from telemetry.sample import Sample
from tests.hostile import examples

FIXED = [n for n in builtin_profiles() if isinstance(load_profile(n), Profile)]
_word = st.integers(0, 0xFFFF)
# words that decode to the interesting numbers: sentinels, NaN and infinity patterns, extremes
_edge_word = st.sampled_from([0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF, 0x7F80, 0xFF80, 0x7FC0,
                              0x7FF0, 0xFFF0, 0x3F80, 0x0080])
_words = _word | _edge_word


def _answers(draw: st.DrawFn, plan: list[Read]) -> list[tuple[Read, list[int]]]:
    return [(r, draw(st.lists(st.integers(0, 1) if r.function in (1, 2) else _words,
                              min_size=r.count, max_size=r.count))) for r in plan]


def _decode(profile: Profile, answers: list[tuple[Read, list[int]]]) -> dict[str, float]:
    """The values, or {} when the poll fails with a reason (the agent counts it as failed)."""
    try:
        return profile.decode(answers)
    except ValueError as exc:
        reason = str(exc)
    assert reason, "a failed decode without a reason"
    return {}


def _check_values(values: dict[str, float], profile: Profile) -> None:
    mapped = {r.quantity for r in profile.registers}
    for q, v in values.items():
        assert q in mapped, q
        assert isinstance(v, float), (q, v)
        assert math.isfinite(v), (q, v)
    # a value the device answers becomes a Sample as it is
    if values:
        Sample(site="s1", device="d1", seq=0, ts=0, values=values)


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_every_shipped_profile_decodes_any_answer(data: st.DataObject) -> None:
    profile = register_map(data.draw(st.sampled_from(FIXED)))
    answers = data.draw(st.composite(lambda draw: _answers(draw, profile.plan()))())
    _check_values(_decode(profile, answers), profile)


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FIXED), st.data())
def test_an_answer_of_the_wrong_length_is_refused_with_the_read(name: str,
                                                                data: st.DataObject) -> None:
    profile = register_map(name)
    plan = profile.plan()
    i = data.draw(st.integers(0, len(plan) - 1))
    r = plan[i]
    n = data.draw(st.integers(0, r.count + 5).filter(lambda n: n != r.count))
    answers = [(p, [0] * p.count) for p in plan]
    answers[i] = (r, [0] * n)
    with pytest.raises(ValueError, match=f"read of {r.count} registers at {r.address} "
                                         f"returned {n}"):
        profile.decode(answers)


MQTT_DEVICE = MqttDeviceConfig.model_validate({
    "id": "compressor", "topic": "tele/compressor/SENSOR",
    "fields": [{"path": "ENERGY.Total", "quantity": "energy_import_kwh"},
               {"path": "ENERGY.Power", "quantity": "active_power_kw", "scale": 0.001},
               {"path": "list[1].v", "quantity": "voltage_l1_v"}],
})
TIMESTAMPS = {fmt: MqttDeviceConfig.model_validate(
    {**MQTT_DEVICE.model_dump(), "timestamp": {"path": "Time", "format": fmt}})
    for fmt in ("epoch_s", "epoch_ms", "iso")}

def test_found_by_the_fuzz() -> None:
    # a read the device cannot answer: wider than the profile lets one read be
    with pytest.raises(ValidationError, match=r"'active_power_kw' spans 2 registers, more "
                                              r"than max_read_registers \(1\)"):
        Profile.model_validate({"name": "p", "source": "the fuzz test", "max_read_registers": 1,
                                "registers": [{"quantity": "active_power_kw", "address": 0,
                                               "type": "int32", "function": 3}]})
    # a float64 near its maximum times a scale over 1 is infinity: a failed poll with the
    # reason, not a Sample the outbox refuses (that exception stopped the whole agent)
    big = Profile.model_validate({"name": "p", "source": "the fuzz test", "registers": [
        {"quantity": "energy_import_kwh", "address": 0, "type": "float64", "function": 4,
         "scale": 1000}]})
    [read] = big.plan()
    with pytest.raises(ValueError, match=r"energy_import_kwh at 0: 1e\+308 scaled by 1000 is "
                                         r"out of range"):
        big.decode([(read, [0x7FE1, 0xCCF3, 0x85EB, 0xC8A0])])  # 1e308
    # an MQTT device's time in seconds sent as milliseconds: year 33658 and beyond
    with pytest.raises(PayloadError, match=r"Time=1000000000000\.0: not a time after 1970 in "
                                           r"epoch epoch_s"):
        extract(b'{"ENERGY": {"Total": 1}, "Time": 1000000000000.0}', TIMESTAMPS["epoch_s"],
                "UTC", 0)


_types = st.sampled_from(list(DataType))
_orders = st.sampled_from(list(Order))


@st.composite
def registers(draw: st.DrawFn) -> dict[str, Any]:
    dtype = draw(_types)
    reg: dict[str, Any] = {
        "quantity": draw(st.sampled_from(vocabulary().names())),
        "address": draw(st.integers(0, 65535) | st.sampled_from([0, 65534, 65535, 65532])),
        "type": dtype.value,
        "function": draw(st.sampled_from([1, 2]) if dtype is DataType.BOOL
                         else st.sampled_from([3, 4, 1])),
    }
    if draw(st.booleans()):
        reg["order"] = draw(_orders).value
    if draw(st.booleans()):
        reg["scale"] = draw(st.sampled_from([0.001, 0.1, 10.0, 1e-300, 1e300, -1.0, 0.0]))
    if draw(st.booleans()):
        reg["offset"] = draw(st.sampled_from([0.0, -273.15, 1e308]))
    if draw(st.integers(0, 3)) == 0:
        reg["na"] = draw(st.lists(st.sampled_from([0x8000, 0xFFFF, 0x7FFF, 0xFFFFFFFF, -1]),
                                  max_size=2))
    if draw(st.integers(0, 4)) == 0:
        reg["bit"] = draw(st.integers(0, 64))
    if draw(st.integers(0, 4)) == 0:
        reg["scale_factor"] = draw(st.sampled_from(["sf1", "sf2", "missing"]))
    return reg


@st.composite
def profiles(draw: st.DrawFn) -> dict[str, Any]:
    regs = draw(st.lists(registers(), min_size=1, max_size=8,
                         unique_by=lambda r: r["quantity"]))
    return {
        "name": "fuzz-profile", "source": "generated by the fuzz test",
        "order": draw(_orders).value,
        "max_read_registers": draw(st.integers(1, 125)),
        "max_gap": draw(st.integers(0, 125)),
        "scale_factors": [{"name": n, "address": draw(st.integers(0, 65535)),
                           "function": draw(st.sampled_from([3, 4]))}
                          for n in draw(st.lists(st.sampled_from(["sf1", "sf2"]), unique=True))],
        "registers": regs,
    }


@settings(max_examples=examples(300), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(profiles(), st.data())
def test_a_generated_profile_is_refused_with_a_reason_or_plans_and_decodes(
        spec: dict[str, Any], data: st.DataObject) -> None:
    try:
        profile = Profile.model_validate(spec)
    except ValidationError as exc:
        reasons = [str(e["msg"]) for e in exc.errors()]
    else:
        reasons = []
    if reasons:
        assert all(reasons), "a refused profile without a reason"
        return
    plan = profile.plan()
    covered: list[tuple[int, int]] = []
    for r in plan:
        limit = MAX_READ_BITS if r.function in (1, 2) else profile.max_read_registers
        assert 1 <= r.count <= limit, r
        assert r.address + r.count <= 65536, r  # nothing past the last register
        for f in r.fields:
            assert r.address <= f.address, (r, f)
            assert f.address + f.width <= r.end, (r, f)
            covered.append((r.function, f.address))
    fields = [*profile.scale_factors, *profile.registers]
    assert sorted(covered) == sorted((f.function, f.address) for f in fields)  # each once
    answers = data.draw(st.composite(lambda draw: _answers(draw, plan))())
    _check_values(_decode(profile, answers), profile)


@settings(max_examples=examples(800), deadline=None)
@given(_types.filter(lambda t: t is not DataType.BOOL), _orders, st.data())
def test_codec_numbers_are_finite_or_missing(dtype: DataType, order: Order,
                                             data: st.DataObject) -> None:
    words = data.draw(st.lists(_words, min_size=width(dtype), max_size=width(dtype)))
    v = decode_number(words, dtype, order, frozenset({0x8000, 0xFFFF}))
    assert v is None or (isinstance(v, float) and math.isfinite(v))
    with pytest.raises(ValueError, match=f"{dtype} needs {width(dtype)} registers"):
        decode_number([*words, 0], dtype, order)


@settings(max_examples=examples(500), deadline=None)
@given(st.lists(_word, max_size=40), st.booleans(), _word, st.integers(-2, 18),
       st.integers(-1, 17))
def test_strings_and_bits_of_any_words(words: list[int], swapped: bool, word: int, bit: int,
                                       count: int) -> None:
    assert isinstance(decode_string(words, bytes_swapped=swapped), str)
    if 0 <= bit <= 15 and 1 <= count <= 16 - bit:
        assert 0 <= decode_bits(word, bit, count) < 2**count
    else:
        with pytest.raises(ValueError, match="outside a 16-bit register"):
            decode_bits(word, bit, count)


SUNSPEC = load_profile("sunspec")
assert isinstance(SUNSPEC, SunSpecProfile)


class HostileSunSpec:
    """A device that answers every read with whatever hypothesis draws: the marker or not,
    model headers real and invented, of any length, blocks of noise, now and then an error."""

    HEADERS: tuple[list[int], ...] = (
        [1, 66], [1, 65], [101, 50], [103, 50], [113, 60], [203, 105], [204, 105], [211, 124],
        [0xFFFF, 0], [0xFFFF, 0], [0, 0], [7, 65535], [103, 0], [65535, 65535])

    def __init__(self, data: st.DataObject) -> None:
        self.data = data
        self.reads = 0

    async def __call__(self, plan: list[Read]) -> list[tuple[Read, list[int]]]:
        self.reads += 1
        assert self.reads < 500, "discovery does not stop"
        out = []
        for r in plan:
            kind = self.data.draw(st.integers(0, 19))
            if kind == 0:
                raise ValueError("the device answered exception code 2")
            if r.count == 2 and self.reads == 1 and kind < 12:
                words = list(MARKER)
            elif r.count == 2 and kind < 16:
                words = self.data.draw(st.sampled_from(self.HEADERS))
            else:
                words = self.data.draw(st.lists(_words, min_size=r.count, max_size=r.count))
            out.append((r, list(words)))
        return out


@settings(max_examples=examples(400), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_sunspec_discovery_against_a_device_answering_nonsense(data: st.DataObject) -> None:
    device = HostileSunSpec(data)
    try:
        found = asyncio.run(discover(device, SUNSPEC))
    except (LookupError, ValueError) as exc:
        reason = str(exc)
    else:
        reason = ""
    if reason:
        return  # refused with a reason (LookupError or ValueError): a failed poll
    answers = data.draw(st.composite(lambda draw: _answers(draw, found.profile.plan()))())
    _check_values(_decode(found.profile, answers), found.profile)


_time_values = st.one_of(
    st.integers(-(2**64), 2**64), st.floats(allow_nan=False),
    st.sampled_from([0, -1, 1e15, 10**15, 10**18, 2**63, 1764000000, 1764000000000,
                     "2026-01-01T00:00:00", "2026-01-01T00:00:00+08:00", "0001-01-01T00:00:00",
                     "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59",
                     "9999-12-31T23:59:59-12:00", "1969-12-31T23:59:59", "", "yesterday", True,
                     None]),
    st.text(max_size=30))
_numbers = st.integers(-(2**64), 2**64) | st.floats(allow_nan=False) | st.sampled_from(
    [1e308, -1e308, 2**1023, True, None, "12.5", [1], {}])


@st.composite
def device_payloads(draw: st.DrawFn) -> bytes:
    body: dict[str, Any] = {}
    if draw(st.booleans()):
        body["ENERGY"] = draw(st.fixed_dictionaries(
            {}, optional={"Total": _numbers, "Power": _numbers}) | _numbers)
    if draw(st.booleans()):
        body["list"] = draw(st.lists(st.fixed_dictionaries({}, optional={"v": _numbers})
                                     | _numbers, max_size=3))
    if draw(st.booleans()):
        body["Time"] = draw(_time_values)
    try:
        return orjson.dumps(body)
    except TypeError:  # an integer past 64 bits: write it by hand, as a device might
        return repr(body).replace("'", '"').replace("None", "null").replace(
            "True", "true").encode()


@settings(max_examples=examples(800), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([MQTT_DEVICE, *TIMESTAMPS.values()]),
       device_payloads() | st.binary(max_size=60), st.sampled_from(["UTC", "Asia/Shanghai",
                                                                     "Pacific/Kiritimati"]))
# found by this test: seconds that are finite but infinite in milliseconds crashed the mapping
@example(TIMESTAMPS["epoch_s"], b'{"ENERGY":{"Total":0},"Time":1.797693134862316e+305}', "UTC")
def test_an_mqtt_device_payload_maps_to_a_sample_or_is_refused_with_a_reason(
        device: MqttDeviceConfig, payload: bytes, tz: str) -> None:
    try:
        ts, values = extract(payload, device, tz, received_ms=1_764_000_000_000)
    except PayloadError as exc:
        reason = str(exc)
    else:
        reason = ""
    if reason:
        return  # counted against the device and logged
    # what the mapping accepts, the edge must be able to store and send: a valid Sample
    Sample(site="s1", device=device.id, seq=0, ts=ts, values=values)
