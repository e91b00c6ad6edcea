"""The register codec: pure functions from Modbus words to numbers, strings and bits.

Orders name where the bytes of a value sit on the wire, A being the most significant:
ABCD big-endian; CDAB words swapped (the usual "little-endian word order"); BADC bytes swapped
within each word; DCBA fully little-endian. For 64-bit values the same rules apply per word
and across the four words.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from enum import StrEnum
from functools import cache


class DataType(StrEnum):
    """How a value is laid out in registers."""

    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    # one coil or discrete input (function codes 1 and 2): 1.0 or 0.0
    BOOL = "bool"


class Order(StrEnum):
    """Byte order of a multi-byte value on the wire."""

    ABCD = "ABCD"
    CDAB = "CDAB"
    BADC = "BADC"
    DCBA = "DCBA"

    @property
    def words_swapped(self) -> bool:
        """Least significant word first."""
        return self in (Order.CDAB, Order.DCBA)

    @property
    def bytes_swapped(self) -> bool:
        """Least significant byte first within each word."""
        return self in (Order.BADC, Order.DCBA)


# struct format (big-endian) and width in registers
LAYOUT: dict[DataType, tuple[str, int]] = {
    DataType.INT16: (">h", 1),
    DataType.UINT16: (">H", 1),
    DataType.INT32: (">i", 2),
    DataType.UINT32: (">I", 2),
    DataType.INT64: (">q", 4),
    DataType.UINT64: (">Q", 4),
    DataType.FLOAT32: (">f", 2),
    DataType.FLOAT64: (">d", 4),
}

INTEGER_TYPES = frozenset(t for t in LAYOUT if not t.startswith("float"))


def width(dtype: DataType) -> int:
    """Registers (or, for bool, bits) a value of this type spans."""
    return 1 if dtype is DataType.BOOL else LAYOUT[dtype][1]


def max_raw(dtype: DataType) -> int | None:
    """The largest raw value of an unsigned type (where a counter wraps), else None."""
    if dtype in (DataType.UINT16, DataType.UINT32, DataType.UINT64):
        return int(2 ** (16 * width(dtype)) - 1)
    return None


def to_canonical(words: list[int], order: Order) -> bytes:
    """Wire words to big-endian bytes (ABCD...)."""
    if order.bytes_swapped:
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    if order.words_swapped:
        words = words[::-1]
    return struct.pack(f">{len(words)}H", *words)


def from_canonical(raw: bytes, order: Order) -> list[int]:
    """Big-endian bytes to the words a device with `order` puts on the wire."""
    words = list(struct.unpack(f">{len(raw) // 2}H", raw))
    if order.words_swapped:
        words = words[::-1]
    if order.bytes_swapped:
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    return words


def decode_raw(words: list[int], dtype: DataType, order: Order) -> int | float:
    """The raw number in `words` (no scaling, no sentinel check)."""
    fmt, n = LAYOUT[dtype]
    if len(words) != n:
        raise ValueError(f"{dtype} needs {n} registers, got {len(words)}")
    value: int | float = struct.unpack(fmt, to_canonical(words, order))[0]
    return value


_PACK_F32 = struct.Struct(">f").pack
# 9 significant digits always round-trip a float32; %g drops trailing zeros, so 6 covers fewer
_SHORT_FORMATS = ("%.6g", "%.7g", "%.8g", "%.9g")


def shortest_float32(value: float) -> float:
    """The shortest decimal that is the same float32: 0.96, not 0.9599999785423279."""
    raw = _PACK_F32(value)
    for fmt in _SHORT_FORMATS:
        short = float(fmt % value)
        if _PACK_F32(short) == raw:
            return short
    return value


NumberDecoder = Callable[[Sequence[int]], "float | None"]


@cache
def number_decoder(
    dtype: DataType, order: Order, na: frozenset[int] = frozenset()
) -> NumberDecoder:
    """`decode_number` for one type, order and sentinel set, its struct formats compiled once:
    the edge decodes every value of every poll through one of these."""
    fmt, n = LAYOUT[dtype]
    # Packing the wire words little-endian undoes a byte swap within each word; reading the
    # value little-endian undoes a reversed word order. Both at once (DCBA) cancel in the pack.
    pack = struct.Struct(("<" if order.bytes_swapped != order.words_swapped else ">") + "H" * n)
    unpack = struct.Struct(("<" if order.words_swapped else ">") + fmt[1:])
    to_bytes, from_bytes = pack.pack, unpack.unpack
    is_float32 = dtype is DataType.FLOAT32
    mask = (1 << (16 * n)) - 1  # sentinels are register patterns: compare signed ones by bits

    def decode_float(words: Sequence[int]) -> float | None:
        if len(words) != n:
            raise ValueError(f"{dtype} needs {n} registers, got {len(words)}")
        raw: float = from_bytes(to_bytes(*words))[0]
        if not math.isfinite(raw):
            return None
        return shortest_float32(raw) if is_float32 else raw

    def decode_int(words: Sequence[int]) -> float | None:
        if len(words) != n:
            raise ValueError(f"{dtype} needs {n} registers, got {len(words)}")
        raw: int = from_bytes(to_bytes(*words))[0]
        if na and (raw in na or raw & mask in na):
            return None
        return float(raw)

    return decode_int if dtype in INTEGER_TYPES else decode_float


def decode_number(
    words: Sequence[int], dtype: DataType, order: Order, na: frozenset[int] = frozenset()
) -> float | None:
    """A number, or None when the device says "not available" (a sentinel, NaN or infinity)."""
    return number_decoder(dtype, order, na)(words)


def encode_number(value: float, dtype: DataType, order: Order) -> list[int]:
    """The words a device with `order` holds for `value` (simulators, tests)."""
    fmt, _ = LAYOUT[dtype]
    raw = struct.pack(fmt, value if dtype in (DataType.FLOAT32, DataType.FLOAT64) else int(value))
    return from_canonical(raw, order)


def decode_string(words: list[int], *, bytes_swapped: bool = False) -> str:
    """ASCII/UTF-8 text packed two characters a register; NULs and padding spaces dropped."""
    if bytes_swapped:
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    raw = struct.pack(f">{len(words)}H", *words)
    return raw.split(b"\x00", 1)[0].decode("utf-8", errors="replace").strip()


def decode_bits(word: int, bit: int, count: int = 1) -> int:
    """`count` bits of a register starting at `bit` (0 = least significant)."""
    if not 0 <= bit <= 15 or not 1 <= count <= 16 - bit:
        raise ValueError(f"bits {bit}..{bit + count - 1} are outside a 16-bit register")
    return (word >> bit) & ((1 << count) - 1)


def scaled(raw: float, scale: float, offset: float, sf: int | None = None) -> float:
    """raw × scale × 10^sf + offset, without the binary noise of the multiplication."""
    value = raw * scale
    if sf is not None:
        value *= 10.0**sf
    return float(f"{value + offset:.15g}")
