"""The register codec: golden words for every type and byte order, sentinels, strings, bits."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collectors.codec import (
    DataType,
    Order,
    decode_bits,
    decode_number,
    decode_raw,
    decode_string,
    encode_number,
    scaled,
)

# Canonical (ABCD...) bytes of each value, written out by hand.
CANONICAL: list[tuple[DataType, float, bytes]] = [
    (DataType.INT16, -2, bytes.fromhex("FFFE")),
    (DataType.UINT16, 0x1234, bytes.fromhex("1234")),
    (DataType.INT32, -100000, bytes.fromhex("FFFE7960")),
    (DataType.UINT32, 100000, bytes.fromhex("000186A0")),
    (DataType.INT64, -(2**40) - 5, bytes.fromhex("FFFFFEFFFFFFFFFB")),
    (DataType.UINT64, 2**40 + 5, bytes.fromhex("0000010000000005")),
    (DataType.FLOAT32, 230.5, bytes.fromhex("43668000")),
    (DataType.FLOAT64, 1.5, bytes.fromhex("3FF8000000000000")),
]


def _wire(canonical: bytes, order: Order) -> list[int]:
    """How a device with `order` lays the canonical bytes out, spelled out per order."""
    b = list(canonical)
    if order is Order.ABCD:
        seq = b
    elif order is Order.DCBA:
        seq = b[::-1]
    elif order is Order.BADC:
        seq = [x for i in range(0, len(b), 2) for x in (b[i + 1], b[i])]
    else:  # CDAB: words reversed, bytes in each word as is
        words = [b[i:i + 2] for i in range(0, len(b), 2)][::-1]
        seq = [x for w in words for x in w]
    return [seq[i] << 8 | seq[i + 1] for i in range(0, len(seq), 2)]


@pytest.mark.parametrize("order", list(Order))
@pytest.mark.parametrize(("dtype", "value", "canonical"), CANONICAL)
def test_golden_words_every_type_and_order(dtype: DataType, value: float, canonical: bytes,
                                           order: Order) -> None:
    words = _wire(canonical, order)
    assert decode_number(words, dtype, order) == value
    assert encode_number(value, dtype, order) == words


def test_the_four_orders_of_one_float() -> None:
    # 230.5 = 0x43 0x66 0x80 0x00
    assert _wire(bytes.fromhex("43668000"), Order.ABCD) == [0x4366, 0x8000]
    assert _wire(bytes.fromhex("43668000"), Order.CDAB) == [0x8000, 0x4366]
    assert _wire(bytes.fromhex("43668000"), Order.BADC) == [0x6643, 0x0080]
    assert _wire(bytes.fromhex("43668000"), Order.DCBA) == [0x0080, 0x6643]


@pytest.mark.parametrize(("words", "dtype", "na"), [
    ([0x8000], DataType.INT16, {0x8000}),
    ([0xFFFF], DataType.UINT16, {0xFFFF}),
    ([0x7FFF], DataType.INT16, {0x7FFF}),
    ([0x8000, 0x0000], DataType.INT32, {0x80000000}),
    ([0xFFFF, 0xFFFF], DataType.UINT32, {0xFFFFFFFF}),
])
def test_not_available_sentinels_are_missing_never_zero(words: list[int], dtype: DataType,
                                                        na: set[int]) -> None:
    assert decode_number(words, dtype, Order.ABCD, frozenset(na)) is None
    # without the sentinel declared, the same words are a number
    assert decode_number(words, dtype, Order.ABCD) is not None


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_float_nan_and_infinity_are_missing(bad: float) -> None:
    words = list(struct.unpack(">2H", struct.pack(">f", bad)))
    assert decode_number(words, DataType.FLOAT32, Order.ABCD) is None


def test_float32_reads_as_its_shortest_decimal() -> None:
    words = list(struct.unpack(">2H", struct.pack(">f", 0.96)))
    assert decode_number(words, DataType.FLOAT32, Order.ABCD) == 0.96


def test_wrong_word_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="float32 needs 2 registers, got 1"):
        decode_raw([1], DataType.FLOAT32, Order.ABCD)


def test_strings() -> None:
    # "SunS" is 0x5375 0x6E53 (the SunSpec marker)
    assert decode_string([0x5375, 0x6E53]) == "SunS"
    assert decode_string([0x4142, 0x4300, 0x0000]) == "ABC"
    assert decode_string([0x4241, 0x0043], bytes_swapped=True) == "ABC"
    assert decode_string([0x2020, 0x4142, 0x2020]) == "AB"


def test_bit_fields() -> None:
    assert decode_bits(0b1010_0000_0000_0101, 0) == 1
    assert decode_bits(0b1010_0000_0000_0101, 1) == 0
    assert decode_bits(0b1010_0000_0000_0101, 13, 3) == 0b101
    with pytest.raises(ValueError, match="outside a 16-bit register"):
        decode_bits(0, 15, 2)


def test_scaling() -> None:
    assert scaled(4821012, 0.01, 0) == 48210.12
    assert scaled(812, 1, 0, sf=-1) == 81.2
    assert scaled(250, 0.1, -40) == -15.0


@given(st.integers(-(2**31), 2**31 - 1), st.sampled_from(list(Order)))
def test_int32_round_trips(v: int, order: Order) -> None:
    assert decode_number(encode_number(v, DataType.INT32, order), DataType.INT32, order) == v


@given(st.floats(width=32, allow_nan=False, allow_infinity=False), st.sampled_from(list(Order)))
def test_float32_round_trips_to_the_same_float32(v: float, order: Order) -> None:
    got = decode_number(encode_number(v, DataType.FLOAT32, order), DataType.FLOAT32, order)
    assert got is not None
    assert struct.pack(">f", got) == struct.pack(">f", v)
