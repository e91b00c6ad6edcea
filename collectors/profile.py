"""Device profiles: a device model's register map as data (YAML), and decoding it to quantities.

A user adds a meter by writing one YAML file; no Python. See collectors/profiles/ for examples.
"""

from __future__ import annotations

import itertools
import math
from functools import cache, cached_property
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeAlias

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from collectors.codec import (
    INTEGER_TYPES,
    DataType,
    NumberDecoder,
    Order,
    max_raw,
    number_decoder,
    scaled,
    width,
)
from telemetry.quantities import QuantityKind, vocabulary

if TYPE_CHECKING:
    from collectors.sunspec import SunSpecProfile

# Modbus allows at most 125 registers in one read (FC 3/4).
MAX_READ_REGISTERS = 125

RegisterFunction = Literal[3, 4]
# Modbus allows at most 2000 coils or discrete inputs in one read (FC 1/2).
MAX_READ_BITS = 2000
BIT_FUNCTIONS = (1, 2)


class ScaleFactor(BaseModel):
    """A register holding a power-of-ten exponent for others (SunSpec `*_SF`); read every poll."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,40}$")]
    address: Annotated[int, Field(ge=0, le=65535)]
    function: RegisterFunction = 3

    @property
    def width(self) -> int:
        """A scale factor is one int16."""
        return 1


class Register(BaseModel):
    """One value in a device's register map."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    quantity: str
    address: Annotated[int, Field(ge=0, le=65535, description="address as on the wire, 0-based")]
    function: Literal[1, 2, 3, 4] = Field(
        default=4,
        description="1: coils, 2: discrete inputs (type bool); 3: holding, 4: input registers",
    )
    type: DataType
    # one bit of an integer register (a status word): the value is 1.0 or 0.0
    bit: Annotated[int, Field(ge=0, le=63)] | None = None
    order: Order | None = Field(default=None, description="overrides the profile's order")
    scale: float = 1.0
    offset: float = 0.0
    # value × 10^(scale factor register), read in the same poll (SunSpec)
    scale_factor: str | None = None
    # raw register patterns that mean "not available"; added to the profile's list
    na: list[int] = Field(default_factory=list)

    @property
    def width(self) -> int:
        """Number of registers the value spans."""
        return width(self.type)

    @model_validator(mode="after")
    def _consistent(self) -> Register:
        if self.quantity not in vocabulary():
            raise ValueError(
                f"quantity {self.quantity!r} is not in the vocabulary "
                f"(known: {', '.join(vocabulary().names())})"
            )
        if self.address + self.width - 1 > 65535:
            raise ValueError(f"a {self.type} at address {self.address} runs past register 65535")
        if self.scale == 0 or not math.isfinite(self.scale):
            raise ValueError("scale must be a finite, non-zero number")
        if self.na and self.type not in INTEGER_TYPES:
            raise ValueError("na sentinels apply to integer types; floats use NaN")
        if (self.function in BIT_FUNCTIONS) != (self.type is DataType.BOOL):
            raise ValueError(
                "coils and discrete inputs (function 1, 2) are type bool, and only they"
            )
        if self.bit is not None and (self.type not in INTEGER_TYPES or self.bit >= 16 * self.width):
            raise ValueError(f"bit {self.bit} is not a bit of a {self.type} register")
        return self


class Read:
    """One request: `count` registers from `address` with one function code."""

    __slots__ = ("address", "count", "fields", "function")

    def __init__(
        self,
        function: int,
        address: int,
        count: int,
        fields: tuple[Register | ScaleFactor, ...],
    ) -> None:
        self.function = function
        self.address = address
        self.count = count
        self.fields = fields

    @property
    def end(self) -> int:
        """First address after this read."""
        return self.address + self.count

    def __repr__(self) -> str:
        return f"Read(fc={self.function}, address={self.address}, count={self.count})"


class _Slot:
    """One field of a read, ready to decode: where its words sit and how they become a number."""

    __slots__ = ("end", "field", "number", "plain", "start")

    def __init__(self, profile: Profile, read: Read, f: Register | ScaleFactor) -> None:
        self.field = f
        self.start = f.address - read.address
        self.end = self.start + f.width
        self.number: NumberDecoder | None
        if isinstance(f, ScaleFactor):
            self.number = number_decoder(DataType.INT16, profile.order, frozenset({0x8000}))
            self.plain = False
            return
        if f.type is DataType.BOOL:
            self.number = None
        else:
            na = frozenset(profile.na) | frozenset(f.na)
            self.number = number_decoder(f.type, f.order or profile.order, na)
        # Nothing to scale: scaled() would give the value back, a float32's shortest decimal
        # or an integer of at most 32 bits having fewer than its 15 significant digits.
        self.plain = (
            f.scale == 1.0
            and f.offset == 0.0
            and f.scale_factor is None
            and f.type in _UNSCALED_EXACT
        )


_UNSCALED_EXACT = frozenset(
    {
        DataType.BOOL,
        DataType.INT16,
        DataType.UINT16,
        DataType.INT32,
        DataType.UINT32,
        DataType.FLOAT32,
    }
)


class Profile(BaseModel):
    """A device model's register map."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")]
    manufacturer: str = ""
    model: str = ""
    source: Annotated[
        str, Field(min_length=10, description="the vendor document the map was taken from")
    ]
    order: Order = Order.ABCD
    max_read_registers: Annotated[int, Field(ge=1, le=MAX_READ_REGISTERS)] = MAX_READ_REGISTERS
    # Unmapped registers a read may span to join two values; 0 unless the device answers them.
    max_gap: Annotated[int, Field(ge=0, le=MAX_READ_REGISTERS)] = 0
    na: list[int] = Field(default_factory=list)
    scale_factors: list[ScaleFactor] = Field(default_factory=list)
    registers: Annotated[list[Register], Field(min_length=1)]

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        seen: dict[str, int] = {}
        for i, r in enumerate(self.registers):
            if r.quantity in seen:
                raise ValueError(
                    f"registers[{i}]: quantity {r.quantity!r} already mapped "
                    f"by registers[{seen[r.quantity]}]"
                )
            seen[r.quantity] = i
        sf_names = {s.name for s in self.scale_factors}
        if len(sf_names) != len(self.scale_factors):
            raise ValueError("scale_factors: a name is used twice")
        for i, r in enumerate(self.registers):
            if r.scale_factor is not None and r.scale_factor not in sf_names:
                raise ValueError(
                    f"registers[{i}] ({r.quantity}): scale_factor {r.scale_factor!r} is not "
                    f"in scale_factors ({', '.join(sorted(sf_names)) or 'none'})"
                )
        for f in self._fields():
            if f.function not in BIT_FUNCTIONS and f.width > self.max_read_registers:
                # the planner would ask for more in one read than the device answers
                raise ValueError(
                    f"{_label(f)} spans {f.width} registers, more than max_read_registers "
                    f"({self.max_read_registers})"
                )
        spans = sorted(
            (f.function, f.address, f.address + f.width, _label(f)) for f in self._fields()
        )
        for a, b in itertools.pairwise(spans):
            if a[0] == b[0] and b[1] < a[2]:
                raise ValueError(f"{a[3]} and {b[3]} overlap at address {b[1]}")
        return self

    def _fields(self) -> list[Register | ScaleFactor]:
        return [*self.scale_factors, *self.registers]

    def plan(self) -> list[Read]:
        """Coalesce registers into the fewest reads: per function code, within the read size
        limit, across at most `max_gap` unmapped registers."""
        return self.reads

    @cached_property
    def reads(self) -> list[Read]:
        """The read plan, computed once per profile."""
        reads: list[Read] = []
        for f in sorted(self._fields(), key=lambda f: (f.function, f.address)):
            last = reads[-1] if reads else None
            end = f.address + f.width
            limit = MAX_READ_BITS if f.function in BIT_FUNCTIONS else self.max_read_registers
            if (
                last is not None
                and last.function == f.function
                and last.end <= f.address <= last.end + self.max_gap
                and end - last.address <= limit
            ):
                reads[-1] = Read(last.function, last.address, end - last.address, (*last.fields, f))
            else:
                reads.append(Read(f.function, f.address, f.width, (f,)))
        return reads

    def decode(self, reads: list[tuple[Read, list[int]]]) -> dict[str, float]:
        """Turn the words each read returned into quantity values in canonical units.

        A value the device reports as not available (a sentinel, NaN, or a scale factor that
        is itself not available) is left out: missing, never zero.
        """
        sfs: dict[str, int | None] = {}
        raw: list[tuple[Register, bool, float]] = []
        compiled = self._compiled
        for read, words in reads:
            if len(words) != read.count:
                raise ValueError(
                    f"read of {read.count} registers at {read.address} returned {len(words)}"
                )
            for s in compiled.get(id(read)) or self._compile(read):
                f = s.field
                if isinstance(f, ScaleFactor):
                    assert s.number is not None
                    v = s.number(words[s.start : s.end])
                    sfs[f.name] = None if v is None or not -10 <= v <= 10 else int(v)
                elif s.number is None:  # a coil or discrete input
                    raw.append((f, s.plain, float(bool(words[s.start]))))
                else:
                    v = s.number(words[s.start : s.end])
                    if v is not None:
                        raw.append(
                            (f, s.plain, v if f.bit is None else float((int(v) >> f.bit) & 1))
                        )
        values: dict[str, float] = {}
        for r, plain, v in raw:
            if plain:
                values[r.quantity] = v
                continue
            sf = None
            if r.scale_factor is not None:
                sf = sfs.get(r.scale_factor)
                if sf is None:
                    continue
            value = scaled(v, r.scale, r.offset, sf)
            if not math.isfinite(value):
                # a raw value at the type's edge times a large scale: nonsense, not a reading
                raise ValueError(
                    f"{r.quantity} at {r.address}: {v:g} scaled by {r.scale:g}"
                    f"{'' if sf is None else f' x 10^{sf}'} is out of range"
                )
            values[r.quantity] = value
        return values

    @cached_property
    def _compiled(self) -> dict[int, tuple[_Slot, ...]]:
        # each planned read's fields with their decoders, built once (decode runs every poll)
        return {id(r): self._compile(r) for r in self.reads}

    def _compile(self, read: Read) -> tuple[_Slot, ...]:
        return tuple(_Slot(self, read, f) for f in read.fields)

    def counter_max(self, quantity: str) -> float | None:
        """Where a counter register wraps, in the quantity's unit (None if unknown)."""
        for r in self.registers:
            if r.quantity == quantity:
                top = max_raw(r.type)
                if top is None or r.scale_factor is not None:
                    return None
                return float((top + 1) * r.scale)
        return None

    def counters(self) -> dict[str, float | None]:
        """The counter quantities this device reports, with their register wrap points."""
        v = vocabulary()
        return {
            r.quantity: self.counter_max(r.quantity)
            for r in self.registers
            if v[r.quantity].kind is QuantityKind.COUNTER
        }


def _label(f: Register | ScaleFactor) -> str:
    return f"scale factor {f.name!r}" if isinstance(f, ScaleFactor) else f"{f.quantity!r}"


AnyProfile: TypeAlias = "Profile | SunSpecProfile"


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and the entry."""


def parse_profile(text: str, where: str) -> AnyProfile:
    """Validate profile YAML; errors name `where` and the path inside the file."""
    from collectors.sunspec import SunSpecProfile

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{where}: not valid YAML: {exc}") from None
    try:
        if isinstance(data, dict) and data.get("discovery") == "sunspec":
            return SunSpecProfile.model_validate(data)
        return Profile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "top level"
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise ProfileError(f"{where}: {loc}: {msg}") from None


def load_profile(name_or_path: str, *, base: Path | None = None) -> AnyProfile:
    """Load a profile shipped with lingtan (by name) or from a YAML file (by path)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_absolute() and base is not None:
            path = base / path
        st = path.stat()  # a changed file is read again
        return _file(str(path), st.st_mtime_ns, st.st_size)
    return _builtin(name_or_path)


@cache
def _file(path: str, _mtime_ns: int, _size: int) -> AnyProfile:
    # many devices share one profile file: parse it once
    return parse_profile(Path(path).read_text("utf-8"), path)


@cache
def _builtin(name: str) -> AnyProfile:
    entry = resources.files("collectors").joinpath("profiles").joinpath(f"{name}.yaml")
    if not entry.is_file():
        raise ProfileError(
            f"no profile named {name!r} (shipped profiles: {', '.join(builtin_profiles())})"
        )
    return parse_profile(entry.read_text("utf-8"), f"collectors/profiles/{name}.yaml")


def register_map(name_or_path: str, *, base: Path | None = None) -> Profile:
    """A profile with a fixed register map (not one discovered on the device)."""
    p = load_profile(name_or_path, base=base)
    if not isinstance(p, Profile):
        raise ProfileError(f"{name_or_path!r} is discovered on the device; it has no fixed map")
    return p


def builtin_profiles() -> list[str]:
    """Names of the profiles shipped with lingtan."""
    folder = resources.files("collectors").joinpath("profiles")
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )
