"""Devices that publish their own JSON over MQTT (Shelly, Tasmota, PLC gateways).

Fields are mapped to quantities declaratively: a path into the payload, a scale and offset to
the canonical unit, and the time from the payload or the time of receipt. A payload that does
not fit is counted and logged; it never stops the agent.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import orjson
import paho.mqtt.client as paho
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from telemetry.config import BrokerConfig
from telemetry.mqtt import connect_async, make_client
from telemetry.quantities import vocabulary
from telemetry.sample import Ident

log = logging.getLogger(__name__)

_PATH = re.compile(r"^[^.\[\]]+(\[\d+\])*(\.[^.\[\]]+(\[\d+\])*)*$")
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


class FieldMap(BaseModel):
    """One value in a device's JSON payload."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Annotated[str, Field(description="dotted path, list items as [n]: ENERGY.Power")]
    # The vocabulary quantity the value is sent as, in that quantity's unit.
    quantity: str
    # The value sent is raw x scale + offset: e.g. scale 0.001 for a power in W to kW.
    scale: float = 1.0
    # Added after scaling (raw x scale + offset).
    offset: float = 0.0

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not _PATH.match(v):
            raise ValueError(f"path {v!r} is not a dotted path such as 'ENERGY.Total' or 'a[0].b'")
        return v

    @field_validator("quantity")
    @classmethod
    def _quantity(cls, v: str) -> str:
        if v not in vocabulary():
            raise ValueError(f"quantity {v!r} is not in the vocabulary")
        return v


class TimestampMap(BaseModel):
    """Where the time of the reading is in the payload.

    Each reading needs a time of its own: InfluxDB keeps one point per device and time, so
    ingest dead-letters a reading at the time of the one before it with other values (a device
    that reports more than once a second needs `epoch_ms`, or no timestamp: then the time it is
    received is used). A message with the time and values of the device's last reading (the
    broker's retained copy after a reconnect) is that reading again, and is not passed on.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Where the time is: a dotted path as in fields; a payload without it does not fit
    # (counted and logged).
    path: str
    # iso: ISO 8601; a time without a zone is in the site's time zone (Tasmota's "Time")
    format: Literal["epoch_s", "epoch_ms", "iso"]


class MqttDeviceConfig(BaseModel):
    """A device that publishes JSON on a topic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The device's id in topics and the database; rules.meters refers to it.
    id: Ident
    # The exact topic (no wildcards) it publishes its JSON on; subscribed at QoS 1.
    topic: Annotated[str, Field(min_length=1)]
    # The payload's values, each mapped to a quantity; one a payload lacks is left out of its
    # Sample.
    fields: Annotated[list[FieldMap], Field(min_length=1)]
    # Where the payload states the reading's time; unset: the time it is received.
    timestamp: TimestampMap | None = None
    # no message for this long: the device is reported offline
    offline_after_s: Annotated[float, Field(gt=0)] = 300.0

    @field_validator("topic")
    @classmethod
    def _no_wildcards(cls, v: str) -> str:
        if "+" in v or "#" in v:
            raise ValueError(f"topic {v!r}: one topic per device, without wildcards")
        return v

    @model_validator(mode="after")
    def _unique_quantities(self) -> MqttDeviceConfig:
        seen = [f.quantity for f in self.fields]
        dup = sorted({q for q in seen if seen.count(q) > 1})
        if dup:
            raise ValueError(f"quantities mapped twice: {dup}")
        return self


class MqttSourceConfig(BaseModel):
    """The broker MQTT devices publish to (often a local one on the plant network)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # default: the site's broker
    broker: BrokerConfig | None = None
    # The agent's MQTT client id on that broker; unset: lingtan-edge-{site}-{agent_id}-devices.
    client_id: Ident | None = None
    # The devices whose JSON this agent reads from that broker.
    devices: list[MqttDeviceConfig] = Field(default_factory=list)


class PayloadError(ValueError):
    """A payload that does not fit its mapping; the message says where."""


def _lookup(data: Any, path: str) -> Any:
    node = data
    for key, index in _STEP.findall(path):
        if key:
            if not isinstance(node, dict) or key not in node:
                raise PayloadError(f"{path}: no key {key!r}")
            node = node[key]
        else:
            i = int(index)
            if not isinstance(node, list) or i >= len(node):
                raise PayloadError(f"{path}: no item [{i}]")
            node = node[i]
    return node


def extract(
    payload: bytes, device: MqttDeviceConfig, tz: str, received_ms: int
) -> tuple[int, dict[str, float]]:
    """(ts, values) of a payload, or a PayloadError naming the field and the problem.

    A mapped field that is absent from a payload is left out (a partial status message);
    a field that is present but not a finite number is an error, as is a payload with
    none of the mapped fields.
    """
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"not JSON ({exc})") from None
    values: dict[str, float] = {}
    for f in device.fields:
        try:
            raw = _lookup(data, f.path)
        except PayloadError:
            continue
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise PayloadError(f"{f.path}={raw!r}: not a number")
        value = float(f"{raw * f.scale + f.offset:.15g}")
        if not math.isfinite(value):
            raise PayloadError(f"{f.path}={raw!r}: not a finite number")
        values[f.quantity] = value
    if not values:
        raise PayloadError(f"none of {[f.path for f in device.fields]} in the payload")
    ts = received_ms
    if device.timestamp is not None:
        ts = _timestamp(_lookup(data, device.timestamp.path), device.timestamp, tz)
    return ts, values


# A Sample's ts: epoch milliseconds from 1970 up to (not including) 10**15, the year 33658.
_MAX_TS_MS = 10**15


def _timestamp(raw: Any, spec: TimestampMap, tz: str) -> int:
    where = spec.path
    if spec.format == "iso":
        if not isinstance(raw, str):
            raise PayloadError(f"{where}={raw!r}: not an ISO 8601 time")
        try:
            dt = datetime.fromisoformat(raw)
        except ValueError:
            raise PayloadError(f"{where}={raw!r}: not an ISO 8601 time") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=ZoneInfo(tz))
        ts = int(dt.timestamp() * 1000)
    else:
        if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0:
            raise PayloadError(f"{where}={raw!r}: not an epoch time")
        scaled = raw * 1000 if spec.format == "epoch_s" else raw
        if not math.isfinite(scaled):  # a float so large that in milliseconds it is infinite
            raise PayloadError(f"{where}={raw!r}: not a time after 1970 in epoch {spec.format}")
        ts = int(scaled)
    if not 0 <= ts < _MAX_TS_MS:
        # checked here, where it is counted against the device: a Sample refuses it later,
        # inside the event loop, where the reading was lost with only a traceback to show
        raise PayloadError(f"{where}={raw!r}: not a time after 1970 in epoch {spec.format}")
    return ts


class MqttDeviceListener:
    """Subscribes to the devices' topics and hands each reading to `on_reading`.

    paho calls back in its own thread; `on_reading` and `on_error` run on the event loop.
    """

    def __init__(
        self,
        broker: BrokerConfig,
        client_id: str,
        devices: list[MqttDeviceConfig],
        *,
        tz: str,
        dispatch: Callable[[Callable[[], None]], object],
        on_reading: Callable[[MqttDeviceConfig, int, dict[str, float]], None],
        on_error: Callable[[MqttDeviceConfig, str], None],
    ) -> None:
        self.broker = broker
        self.by_topic = {d.topic: d for d in devices}
        self.tz = tz
        self.dispatch = dispatch
        self.on_reading = on_reading
        self.on_error = on_error
        self.client = make_client(broker, client_id, persistent=False)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        # (ts, values) of each device's last reading: the retained message the broker resends
        # on every reconnect, or a device's repeated publish, is that reading, not a new one
        self._last: dict[str, tuple[int, dict[str, float]]] = {}
        self.repeats = 0  # readings not passed on for that

    def start(self) -> None:
        """Connect in the background."""
        connect_async(self.client, self.broker, persistent=False)

    def stop(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        for topic in self.by_topic:
            client.subscribe(topic, qos=1)

    def _on_message(self, _c: paho.Client, _ud: Any, msg: paho.MQTTMessage) -> None:
        from telemetry.timeutil import now_ms

        device = self.by_topic.get(msg.topic)
        if device is None:
            return
        received = now_ms()
        payload = bytes(msg.payload)
        try:
            ts, values = extract(payload, device, self.tz, received)
        except PayloadError as exc:
            reason = str(exc)
            self.dispatch(lambda: self.on_error(device, reason))
            return
        if device.timestamp is not None and self._last.get(device.id) == (ts, values):
            self.repeats += 1  # its own time and values again: the reading already taken
            return
        self._last[device.id] = (ts, values)
        self.dispatch(lambda: self.on_reading(device, ts, values))
