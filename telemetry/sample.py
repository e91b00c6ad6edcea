"""The Sample: one read of one device, as it travels on the wire (JSON)."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

# Identifiers go into MQTT topics and database tags: no wildcards, no separators.
Ident = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]

# 1e15 ms is year 33658: anything larger is a unit mistake (µs or ns), not a time.
EpochMs = Annotated[int, Field(ge=0, lt=10**15, strict=True)]

QuantityKey = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,63}$")]

# Every store keeps seq as a signed 64-bit integer (SQLite INTEGER, InfluxDB `i` fields): a
# larger one would pass the boundary and then fail every write of its batch, on every redelivery.
Seq = Annotated[int, Field(ge=0, le=2**63 - 1, strict=True)]

MAX_PAYLOAD_BYTES = 1 << 20


class Quality(StrEnum):
    """How far a value can be trusted."""

    GOOD = "good"
    ESTIMATED = "estimated"
    QUESTIONABLE = "questionable"


class Sample(BaseModel):
    """One read of one device: `(site, device, seq)` identifies it everywhere."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    site: Ident
    device: Ident
    seq: Seq
    ts: EpochMs
    # strict: a string "1.5" or a bool is a sender's bug, not a number to coerce
    values: Annotated[dict[QuantityKey, Annotated[float, Field(strict=True)]], Field(min_length=1)]
    quality: Quality = Quality.GOOD

    @property
    def key(self) -> tuple[str, str, int]:
        """The identity that makes replays harmless."""
        return (self.site, self.device, self.seq)


class WireError(ValueError):
    """A payload that is not a valid Sample or list of Samples; the message says why."""


_MANY: TypeAdapter[list[Sample]] = TypeAdapter(list[Sample])


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "payload"
        value = repr(err.get("input"))
        if len(value) > 60:
            value = value[:57] + "..."
        parts.append(f"{loc}={value}: {err['msg']}")
    more = exc.error_count() - len(parts)
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def decode(payload: bytes | str) -> list[Sample]:
    """Decode a message holding one Sample or a list of Samples."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireError(f"payload: {len(payload)} bytes is over the {MAX_PAYLOAD_BYTES} limit")
    try:
        data: Any = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise WireError(f"payload: not JSON ({exc})") from None
    try:
        if isinstance(data, list):
            if not data:
                raise WireError("payload: an empty list holds no Sample")
            return _MANY.validate_python(data)
        if isinstance(data, dict):
            return [Sample.model_validate(data)]
    except ValidationError as exc:
        raise WireError(_describe(exc)) from None
    raise WireError(
        f"payload: expected a Sample object or a list of them, got {type(data).__name__}"
    )


def encode(samples: Sample | Sequence[Sample]) -> bytes:
    """Encode one Sample as an object, several as a list."""
    if isinstance(samples, Sample):
        return orjson.dumps(_plain(samples))
    return orjson.dumps([_plain(s) for s in samples])


def _plain(s: Sample) -> dict[str, Any]:
    out: dict[str, Any] = {
        "site": s.site,
        "device": s.device,
        "seq": s.seq,
        "ts": s.ts,
        "values": s.values,
    }
    if s.quality is not Quality.GOOD:
        out["quality"] = s.quality.value
    return out
