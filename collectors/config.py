"""The `edge:` section of a site config: which devices this edge box polls, and how."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from collectors.mqtt_devices import MqttSourceConfig
from collectors.profile import AnyProfile, load_profile
from telemetry.sample import Ident


class TcpTransport(BaseModel):
    """Modbus TCP to a device or gateway; `rtu-over-tcp`: a serial gateway passing RTU frames."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # tcp: Modbus TCP; rtu-over-tcp: RTU frames through a serial gateway.
    type: Literal["tcp", "rtu-over-tcp"] = "tcp"
    # The meter's or the gateway's address.
    host: str = Field(min_length=1)
    # The TCP port: 502 is Modbus TCP's; a serial gateway may use another (see its settings).
    port: Annotated[int, Field(ge=1, le=65535)] = 502

    @property
    def key(self) -> str:
        """Devices with the same key share one connection, one request at a time."""
        return f"{self.type}://{self.host}:{self.port}"


class SerialTransport(BaseModel):
    """Modbus RTU on a serial line (RS-485 adapter)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Modbus RTU on a serial line of the edge box.
    type: Literal["serial"]
    device: str = Field(min_length=1, description="e.g. /dev/ttyUSB0")
    # The line's speed in bit/s, as set on the devices (all on one line must agree).
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    # None, even or odd, as set on the devices.
    parity: Literal["N", "E", "O"] = "N"
    # Stop bits per character, as set on the devices.
    stopbits: Literal[1, 2] = 1
    # Data bits per character, as set on the devices (Modbus RTU uses 8).
    bytesize: Literal[7, 8] = 8

    @property
    def key(self) -> str:
        """Every device on one serial line shares it."""
        return f"serial://{self.device}"


def _transport_type(v: object) -> str:
    # Tags carry a space so config errors can leave them out of the YAML path they print.
    kind = v.get("type") if isinstance(v, dict) else getattr(v, "type", None)
    return "serial line" if kind == "serial" else "tcp socket"


Transport = Annotated[
    Annotated[TcpTransport, Tag("tcp socket")] | Annotated[SerialTransport, Tag("serial line")],
    Discriminator(_transport_type),
]


class DeviceConfig(BaseModel):
    """One meter polled by the edge agent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The device's id in topics and the database; rules.meters refers to it.
    id: Ident
    profile: str = Field(description="a shipped profile name, or a path to a profile YAML file")
    # How to reach it: Modbus TCP (type tcp / rtu-over-tcp) or RTU (type serial).
    transport: Transport
    # Modbus unit (slave) id; 0 only for gateways that need it.
    unit_id: Annotated[int, Field(ge=0, le=247)] = 1
    # polls happen on the interval's boundaries (every 10 s at :00, :10, ...)
    interval_s: Annotated[float, Field(ge=0.1, le=86400)] = 5.0
    # Seconds to wait for each answer.
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    # further attempts within one poll, after a short jittered pause, if the tick has room
    retries: Annotated[int, Field(ge=0, le=5)] = 1

    @field_validator("profile")
    @classmethod
    def _profile_loads(cls, v: str, info: ValidationInfo) -> str:
        base = (info.context or {}).get("base_dir")
        try:
            load_profile(v, base=base)
        except FileNotFoundError:
            raise ValueError(f"profile file {v!r} does not exist") from None
        except OSError as exc:  # a folder, a name too long, no permission
            raise ValueError(f"profile file {v!r} cannot be read: {exc.strerror}") from None
        except ValueError as exc:
            raise ValueError(f"profile {v!r}: {exc}") from None
        return v


class EdgeConfig(BaseModel):
    """Devices and state of one edge agent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # This edge box's id (its own status and health Samples go out under it).
    agent_id: Ident = "edge"
    # Where the outbox and the seq counters live; keep it on persistent storage.
    state_dir: Path = Path("var/edge")
    # consecutive failed polls before a device is reported offline
    offline_after: Annotated[int, Field(ge=1)] = 3
    # Samples handed to the MQTT client and not yet acknowledged (bounds memory)
    publish_window: Annotated[int, Field(ge=1, le=10_000)] = 500
    # the outbox keeps at most this many Samples; beyond it the oldest are dropped and counted
    max_outbox_samples: Annotated[int, Field(ge=100)] = 5_000_000
    # on a clean stop, how long to wait for the broker to acknowledge what is in the outbox
    drain_s: Annotated[float, Field(ge=0, le=300)] = 5.0
    # how often the agent reports its own health as Samples (0 turns it off)
    health_interval_s: Annotated[float, Field(ge=0, le=3600)] = 60.0
    # The Modbus meters and inverters this box polls.
    devices: list[DeviceConfig] = Field(default_factory=list)
    # devices that publish their own JSON over MQTT
    mqtt: MqttSourceConfig | None = None

    @model_validator(mode="after")
    def _unique_ids(self) -> EdgeConfig:
        seen: set[str] = {self.agent_id}
        ids = [(f"devices[{i}]", d.id) for i, d in enumerate(self.devices)]
        if self.mqtt is not None:
            ids += [(f"mqtt.devices[{i}]", d.id) for i, d in enumerate(self.mqtt.devices)]
        for where, dev_id in ids:
            if dev_id in seen:
                what = "the agent's own id" if dev_id == self.agent_id else "used twice"
                raise ValueError(f"{where}: device id {dev_id!r} is {what}")
            seen.add(dev_id)
        self._one_setting_per_line()
        if self.mqtt is not None:
            topics: dict[str, str] = {}
            for i, m in enumerate(self.mqtt.devices):
                if m.topic in topics:
                    raise ValueError(
                        f"mqtt.devices[{i}] ({m.id}): topic {m.topic!r} is also "
                        f"{topics[m.topic]}'s: a message on it would be one device's reading"
                    )
                topics[m.topic] = m.id
        return self

    def _one_setting_per_line(self) -> None:
        # devices on one serial line, or behind one gateway, share one connection (and its
        # answer timeout): the first one's settings would silently win
        first: dict[str, DeviceConfig] = {}
        for i, d in enumerate(self.devices):
            f = first.setdefault(d.transport.key, d)
            if f is d:
                continue
            pairs = [("timeout_s", d.timeout_s, f.timeout_s)]
            if isinstance(d.transport, SerialTransport):
                pairs += [
                    (k, getattr(d.transport, k), getattr(f.transport, k))
                    for k in ("baudrate", "parity", "stopbits", "bytesize")
                ]
            differ = [
                f"{k} {mine} where {f.id} has {theirs}"
                for k, mine, theirs in pairs
                if mine != theirs
            ]
            if differ:
                where = (
                    f"serial line {d.transport.device}"
                    if isinstance(d.transport, SerialTransport)
                    else d.transport.key
                )
                raise ValueError(
                    f"devices[{i}] ({d.id}): {where} is shared with {f.id}, but "
                    f"{', '.join(differ)}: the devices on one connection share its settings"
                )

    def device(self, device_id: str) -> DeviceConfig:
        """The device with this id, or a ValueError listing the known ones."""
        for d in self.devices:
            if d.id == device_id:
                return d
        raise ValueError(
            f"no device {device_id!r} in edge.devices "
            f"(known: {', '.join(d.id for d in self.devices) or 'none'})"
        )


def device_profile(device: DeviceConfig, base_dir: Path | None) -> AnyProfile:
    """The profile a device config names."""
    return load_profile(device.profile, base=base_dir)
