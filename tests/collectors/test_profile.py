"""Device profiles: decoding registers (golden words), planning reads, validation."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from collectors.profile import (
    DataType,
    Profile,
    WordOrder,
    builtin_profiles,
    decode_value,
    encode_value,
    load_profile,
)

# Golden words: the registers a device puts on the wire, high byte first in each word.
GOLDEN = [
    # 230.5 as float32 is 0x43668000
    ([0x4366, 0x8000], DataType.FLOAT32, WordOrder.BIG, 230.5),
    ([0x8000, 0x4366], DataType.FLOAT32, WordOrder.LITTLE, 230.5),
    # -2 as int16
    ([0xFFFE], DataType.INT16, WordOrder.BIG, -2.0),
    ([0xFFFE], DataType.UINT16, WordOrder.BIG, 65534.0),
    # 100000 = 0x000186A0
    ([0x0001, 0x86A0], DataType.UINT32, WordOrder.BIG, 100000.0),
    ([0x86A0, 0x0001], DataType.UINT32, WordOrder.LITTLE, 100000.0),
    ([0xFFFF, 0xFFFF], DataType.INT32, WordOrder.BIG, -1.0),
    # 2**40 + 5
    ([0x0000, 0x0100, 0x0000, 0x0005], DataType.UINT64, WordOrder.BIG, float(2**40 + 5)),
    ([0x0005, 0x0000, 0x0100, 0x0000], DataType.INT64, WordOrder.LITTLE, float(2**40 + 5)),
    # 1.5 as float64 is 0x3FF8000000000000
    ([0x3FF8, 0, 0, 0], DataType.FLOAT64, WordOrder.BIG, 1.5),
]


@pytest.mark.parametrize(("words", "dtype", "order", "value"), GOLDEN)
def test_golden_words_decode(words: list[int], dtype: DataType, order: WordOrder,
                             value: float) -> None:
    assert decode_value(words, dtype, order) == value
    assert encode_value(value, dtype, order) == words


def test_a_float_that_is_not_a_number_is_missing_not_zero() -> None:
    nan = list(struct.unpack(">2H", struct.pack(">f", float("nan"))))
    assert decode_value(nan, DataType.FLOAT32, WordOrder.BIG) is None


def test_wrong_word_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="float32 needs 2 registers, got 1"):
        decode_value([1], DataType.FLOAT32, WordOrder.BIG)


@given(st.integers(-(2**31), 2**31 - 1), st.sampled_from(list(WordOrder)))
def test_int32_round_trips(v: int, order: WordOrder) -> None:
    assert decode_value(encode_value(v, DataType.INT32, order), DataType.INT32, order) == v


def _profile(**kw: object) -> Profile:
    base: dict[str, object] = {"name": "t", "source": "test profile, no vendor document",
                               "registers": [
                                   {"quantity": "active_power_kw", "address": 10, "type": "int32",
                                    "scale": 0.001},
                                   {"quantity": "energy_import_kwh", "address": 12,
                                    "type": "uint32", "scale": 0.1},
                                   {"quantity": "frequency_hz", "address": 20, "type": "uint16",
                                    "scale": 0.01},
                                   {"quantity": "temperature_c", "address": 0, "function": 3,
                                    "type": "int16", "scale": 0.1, "offset": -40},
                               ]}
    base.update(kw)
    return Profile.model_validate(base)


def test_plan_coalesces_contiguous_registers_per_function_code() -> None:
    plan = _profile().plan()
    assert [(r.function, r.address, r.count) for r in plan] == [(3, 0, 1), (4, 10, 4), (4, 20, 1)]


def test_plan_bridges_gaps_only_where_the_profile_allows() -> None:
    plan = _profile(max_gap=6).plan()
    assert [(r.function, r.address, r.count) for r in plan] == [(3, 0, 1), (4, 10, 11)]


def test_plan_respects_the_read_size_limit() -> None:
    plan = _profile(max_gap=6, max_read_registers=4).plan()
    assert [(r.function, r.address, r.count) for r in plan] == [(3, 0, 1), (4, 10, 4), (4, 20, 1)]


def test_decode_applies_scale_offset_and_units() -> None:
    p = _profile(max_gap=6)
    words = {10: encode_value(812_500, DataType.INT32, WordOrder.BIG),
             12: encode_value(482_101, DataType.UINT32, WordOrder.BIG),
             20: [5002], 0: [0x00FA]}
    reads = []
    for r in p.plan():
        block = [0] * r.count
        for addr, w in words.items():
            if r.address <= addr < r.end:
                block[addr - r.address:addr - r.address + len(w)] = w
        reads.append((r, block))
    assert p.decode(reads) == pytest.approx({"active_power_kw": 812.5,
                                             "energy_import_kwh": 48210.1,
                                             "frequency_hz": 50.02, "temperature_c": -15.0})


@pytest.mark.parametrize(("change", "expected"), [
    ({"registers": [{"quantity": "power_w", "address": 0, "type": "int16"}]},
     "quantity 'power_w' is not in the vocabulary"),
    ({"registers": [{"quantity": "active_power_kw", "address": 0, "type": "int32"},
                    {"quantity": "frequency_hz", "address": 1, "type": "int16"}]},
     "overlap at address 1"),
    ({"registers": [{"quantity": "active_power_kw", "address": 65535, "type": "int32"}]},
     "runs past register 65535"),
    ({"registers": [{"quantity": "active_power_kw", "address": 0, "type": "int24"}]},
     "registers.0.type"),
    ({"registers": [{"quantity": "active_power_kw", "address": 0, "type": "int16",
                     "function": 6}]}, "registers.0.function"),
    ({"max_read_registers": 126}, "max_read_registers"),
])
def test_bad_profiles_say_what_is_wrong(change: dict[str, object], expected: str) -> None:
    with pytest.raises(ValidationError, match=expected):
        _profile(**change)


def test_shipped_profiles_load_and_name_their_source() -> None:
    names = builtin_profiles()
    assert "eastron-sdm630" in names
    for name in names:
        p = load_profile(name)
        assert len(p.source) > 10
        assert all(r.count <= p.max_read_registers for r in p.plan())


def test_profile_files_load_by_path(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"name": "m", "source": "a vendor manual, rev 3",
                                    "registers": [{"quantity": "active_power_kw", "address": 3,
                                                   "type": "float32"}]}))
    assert load_profile("m.yaml", base=tmp_path).registers[0].address == 3


def test_unknown_profile_name_lists_the_shipped_ones() -> None:
    with pytest.raises(ValueError, match=r"no profile named 'sdm999'.*eastron-sdm630"):
        load_profile("sdm999")
