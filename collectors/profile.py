"""Device profiles: a meter's register map as data (YAML), and decoding registers to quantities."""

from __future__ import annotations

import itertools
import math
import struct
from enum import StrEnum
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from telemetry.quantities import vocabulary

# Modbus allows at most 125 registers in one read (FC 3/4).
MAX_READ_REGISTERS = 125


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


# struct format (big-endian) and width in registers
_LAYOUT: dict[DataType, tuple[str, int]] = {
    DataType.INT16: (">h", 1),
    DataType.UINT16: (">H", 1),
    DataType.INT32: (">i", 2),
    DataType.UINT32: (">I", 2),
    DataType.INT64: (">q", 4),
    DataType.UINT64: (">Q", 4),
    DataType.FLOAT32: (">f", 2),
    DataType.FLOAT64: (">d", 4),
}


class WordOrder(StrEnum):
    """Order of the 16-bit words of a multi-register value."""

    BIG = "big"  # most significant word first (ABCD)
    LITTLE = "little"  # least significant word first (CDAB)


class Register(BaseModel):
    """One value in a device's register map."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    quantity: str
    address: Annotated[int, Field(ge=0, le=65535, description="address as on the wire, 0-based")]
    function: Literal[3, 4] = Field(
        default=4, description="3: holding registers, 4: input registers"
    )
    type: DataType
    word_order: WordOrder | None = None
    scale: float = 1.0
    offset: float = 0.0

    @property
    def width(self) -> int:
        """Number of registers the value spans."""
        return _LAYOUT[self.type][1]

    @model_validator(mode="after")
    def _known_quantity(self) -> Register:
        if self.quantity not in vocabulary():
            raise ValueError(
                f"quantity {self.quantity!r} is not in the vocabulary "
                f"(known: {', '.join(vocabulary().names())})"
            )
        if self.address + self.width - 1 > 65535:
            raise ValueError(f"a {self.type} at address {self.address} runs past register 65535")
        if self.scale == 0 or not math.isfinite(self.scale):
            raise ValueError("scale must be a finite, non-zero number")
        return self


class Profile(BaseModel):
    """A device model's register map."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    manufacturer: str = ""
    model: str = ""
    source: str = Field(description="the vendor document the register map was taken from")
    word_order: WordOrder = WordOrder.BIG
    max_read_registers: Annotated[int, Field(ge=1, le=MAX_READ_REGISTERS)] = MAX_READ_REGISTERS
    # Unmapped registers a read may span to join two values; 0 unless the device answers them.
    max_gap: Annotated[int, Field(ge=0, le=MAX_READ_REGISTERS)] = 0
    registers: Annotated[list[Register], Field(min_length=1)]

    @model_validator(mode="after")
    def _no_overlap(self) -> Profile:
        seen: dict[str, int] = {}
        spans: list[tuple[int, int, int, str]] = []
        for i, r in enumerate(self.registers):
            if r.quantity in seen:
                raise ValueError(
                    f"registers[{i}]: quantity {r.quantity!r} already mapped "
                    f"by registers[{seen[r.quantity]}]"
                )
            seen[r.quantity] = i
            spans.append((r.function, r.address, r.address + r.width, r.quantity))
        spans.sort()
        for a, b in itertools.pairwise(spans):
            if a[0] == b[0] and b[1] < a[2]:
                raise ValueError(f"registers for {a[3]!r} and {b[3]!r} overlap at address {b[1]}")
        return self

    def plan(self) -> list[Read]:
        """Coalesce the registers into the fewest contiguous reads per function code."""
        reads: list[Read] = []
        for r in sorted(self.registers, key=lambda r: (r.function, r.address)):
            last = reads[-1] if reads else None
            end = r.address + r.width
            if (
                last is not None
                and last.function == r.function
                and last.end <= r.address <= last.end + self.max_gap
                and end - last.address <= self.max_read_registers
            ):
                reads[-1] = Read(
                    last.function, last.address, end - last.address, (*last.registers, r)
                )
            else:
                reads.append(Read(r.function, r.address, r.width, (r,)))
        return reads

    def decode(self, reads: list[tuple[Read, list[int]]]) -> dict[str, float]:
        """Turn the words each read returned into quantity values in canonical units."""
        values: dict[str, float] = {}
        for read, words in reads:
            if len(words) != read.count:
                raise ValueError(
                    f"read of {read.count} registers at {read.address} returned {len(words)}"
                )
            for r in read.registers:
                start = r.address - read.address
                value = decode_value(
                    words[start : start + r.width], r.type, r.word_order or self.word_order
                )
                if value is None:
                    continue
                # 15 significant digits drop the binary noise of the scaling (0.1 * 3 etc.)
                values[r.quantity] = float(f"{value * r.scale + r.offset:.15g}")
        return values


class Read:
    """One request: `count` registers from `address` with one function code."""

    __slots__ = ("address", "count", "function", "registers")

    def __init__(
        self, function: int, address: int, count: int, registers: tuple[Register, ...]
    ) -> None:
        self.function = function
        self.address = address
        self.count = count
        self.registers = registers

    @property
    def end(self) -> int:
        """First address after this read."""
        return self.address + self.count

    def __repr__(self) -> str:
        return f"Read(fc={self.function}, address={self.address}, count={self.count})"


def decode_value(words: list[int], dtype: DataType, order: WordOrder) -> float | None:
    """Decode big-endian 16-bit words; None when the value is not a finite number."""
    fmt, width = _LAYOUT[dtype]
    if len(words) != width:
        raise ValueError(f"{dtype} needs {width} registers, got {len(words)}")
    if order is WordOrder.LITTLE:
        words = words[::-1]
    raw = struct.pack(f">{width}H", *words)
    value = struct.unpack(fmt, raw)[0]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if dtype is DataType.FLOAT32:
        # The shortest decimal that is the same float32: 0.96, not 0.9599999785423279.
        for digits in range(6, 10):
            short = float(f"{value:.{digits}g}")
            if struct.pack(">f", short) == raw:
                return short
    return float(value)


def encode_value(value: float, dtype: DataType, order: WordOrder) -> list[int]:
    """The inverse of decode_value: words a device would hold for `value` (simulators, tests)."""
    fmt, width = _LAYOUT[dtype]
    raw = struct.pack(fmt, value if dtype in (DataType.FLOAT32, DataType.FLOAT64) else int(value))
    words = list(struct.unpack(f">{width}H", raw))
    return words[::-1] if order is WordOrder.LITTLE else words


def load_profile(name_or_path: str, *, base: Path | None = None) -> Profile:
    """Load a profile shipped with lingtan (by name) or from a YAML file (by path)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_absolute() and base is not None:
            path = base / path
        return Profile.model_validate(yaml.safe_load(path.read_text("utf-8")))
    return _builtin(name_or_path)


@cache
def _builtin(name: str) -> Profile:
    folder = resources.files("collectors").joinpath("profiles")
    entry = folder.joinpath(f"{name}.yaml")
    if not entry.is_file():
        known = sorted(
            p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
        )
        raise ValueError(f"no profile named {name!r} (shipped profiles: {', '.join(known)})")
    return Profile.model_validate(yaml.safe_load(entry.read_text("utf-8")))


def builtin_profiles() -> list[str]:
    """Names of the profiles shipped with lingtan."""
    folder = resources.files("collectors").joinpath("profiles")
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )
