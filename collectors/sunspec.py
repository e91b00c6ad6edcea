"""SunSpec: find the "SunS" marker, walk the model headers, and build a register map from the
SunSpec model definitions (pysunspec2's JSON files, used as data)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from collectors.codec import DataType, decode_string
from collectors.profile import Profile, Read, Register, ScaleFactor
from telemetry.quantities import vocabulary

log = logging.getLogger(__name__)

MARKER = [0x5375, 0x6E53]  # "SunS"
END = 0xFFFF
MAX_MODELS = 64

# SunSpec point types we read, as register layouts, with their "not implemented" patterns.
_TYPES: dict[str, tuple[DataType, list[int]]] = {
    "int16": (DataType.INT16, [0x8000]),
    "uint16": (DataType.UINT16, [0xFFFF]),
    "acc16": (DataType.UINT16, [0]),
    "count": (DataType.UINT16, [0]),
    "int32": (DataType.INT32, [0x80000000]),
    "uint32": (DataType.UINT32, [0xFFFFFFFF]),
    "acc32": (DataType.UINT32, [0]),
    "int64": (DataType.INT64, [0x8000000000000000]),
    "uint64": (DataType.UINT64, [0xFFFFFFFFFFFFFFFF]),
    "acc64": (DataType.UINT64, [0]),
    "float32": (DataType.FLOAT32, []),
    "float64": (DataType.FLOAT64, []),
}


class SunSpecProfile(BaseModel):
    """How to find and read any SunSpec device; the map itself comes from the device."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    manufacturer: str = ""
    model: str = ""
    source: Annotated[str, Field(min_length=10)]
    discovery: Literal["sunspec"]
    bases: Annotated[list[Annotated[int, Field(ge=0, le=65533)]], Field(min_length=1)]
    models: Annotated[list[int], Field(min_length=1)]
    points: dict[str, str]
    unit_scale: dict[str, float]

    @model_validator(mode="after")
    def _known(self) -> SunSpecProfile:
        for point, q in self.points.items():
            if q not in vocabulary():
                raise ValueError(f"points.{point}: quantity {q!r} is not in the vocabulary")
        for mid in self.models:
            model_definition(mid)
        return self


@cache
def model_definition(model_id: int) -> dict[str, Any]:
    """The SunSpec definition of a model (its top-level group)."""
    entry = resources.files("sunspec2").joinpath(f"models/json/model_{model_id}.json")
    if not entry.is_file():
        raise ValueError(f"no SunSpec model {model_id} in pysunspec2's definitions")
    group: dict[str, Any] = json.loads(entry.read_text("utf-8"))["group"]
    return group


@dataclass(frozen=True)
class Model:
    """A model found on a device: its id, where its header (ID) sits, and its length."""

    id: int
    address: int
    length: int


@dataclass(frozen=True)
class Discovered:
    """What discovery found on a device."""

    base: int
    models: tuple[Model, ...]
    manufacturer: str
    model: str
    serial: str
    profile: Profile


ReadFn = Any  # async (list[Read]) -> list[tuple[Read, list[int]]]


async def discover(read: ReadFn, spec: SunSpecProfile) -> Discovered:
    """Find the SunSpec map of a device through `read` (a reader bound to one unit id)."""
    base = None
    for b in spec.bases:
        try:
            [(_, words)] = await read([Read(3, b, 2, ())])
        except Exception:  # noqa: S112 - an address the device rejects: try the next base
            continue
        if words == MARKER:
            base = b
            break
    if base is None:
        raise LookupError(f"no SunSpec marker at {', '.join(map(str, spec.bases))}")
    models: list[Model] = []
    addr = base + 2
    for _ in range(MAX_MODELS):
        [(_, head)] = await read([Read(3, addr, 2, ())])
        if head[0] == END:
            break
        models.append(Model(head[0], addr, head[1]))
        addr += 2 + head[1]
        if addr > 65535:
            break
    info = {"Mn": "", "Md": "", "SN": ""}
    common = next((m for m in models if m.id == 1), None)
    if common is not None:
        [(_, words)] = await read([Read(3, common.address, min(common.length + 2, 68), ())])
        for name, (off, size) in _offsets(model_definition(1)).items():
            if name in info and off + size <= len(words):
                info[name] = decode_string(words[off : off + size])
    profile = build_profile(spec, models)
    return Discovered(base, tuple(models), info["Mn"], info["Md"], info["SN"], profile)


def _offsets(group: dict[str, Any]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    off = 0
    for p in group["points"]:
        out[p["name"]] = (off, int(p["size"]))
        off += int(p["size"])
    return out


def build_profile(spec: SunSpecProfile, models: list[Model]) -> Profile:
    """A concrete register map from the models a device has, in the spec's order of preference."""
    registers: list[Register] = []
    sfs: dict[str, ScaleFactor] = {}
    taken: set[str] = set()
    present = {m.id: m for m in reversed(models)}  # the first instance of each model id
    used: list[str] = []
    for mid in spec.models:
        m = present.get(mid)
        if m is None:
            continue
        group = model_definition(mid)
        offsets = _offsets(group)
        points = {p["name"]: p for p in group["points"]}
        added = False
        for pname, quantity in spec.points.items():
            p = points.get(pname)
            if p is None or quantity in taken or p["type"] not in _TYPES:
                continue
            off, size = offsets[pname]
            if off + size > m.length + 2:
                continue  # the device's model is shorter than the definition
            dtype, na = _TYPES[p["type"]]
            sf_name = None
            if p.get("sf"):
                sf_off, _ = offsets[p["sf"]]
                sf_name = f"m{mid}_{p['sf']}"
                sfs.setdefault(sf_name, ScaleFactor(name=sf_name, address=m.address + sf_off))
            registers.append(
                Register(
                    quantity=quantity,
                    address=m.address + off,
                    function=3,
                    type=dtype,
                    scale=spec.unit_scale.get(p.get("units") or "", 1.0),
                    scale_factor=sf_name,
                    na=na,
                )
            )
            taken.add(quantity)
            added = True
        if added:
            used.append(str(mid))
    if not registers:
        raise LookupError(
            f"none of the SunSpec models {spec.models} is on the device "
            f"(found {[m.id for m in models]})"
        )
    return Profile(
        name=spec.name,
        manufacturer=spec.manufacturer,
        model=f"SunSpec models {', '.join(used)}",
        source=spec.source,
        max_gap=125,  # a SunSpec map is contiguous: every register of it answers
        scale_factors=list(sfs.values()),
        registers=registers,
    )
