"""The demo plant's meters, live: Modbus TCP servers and an MQTT gateway on loopback.

Each Modbus meter is a pymodbus server serving its shipped profile's registers (the PV inverter
a SunSpec map that lingtan discovers), with values from the plant model at the simulated time of
each request. The gas meter's gateway publishes JSON with its own (simulated) clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from collectors.mqtt_devices import MqttDeviceConfig
from collectors.profile import Profile, register_map
from lingtan.config import SiteConfig
from lingtan.demo_plant.clock import SimClock
from lingtan.demo_plant.model import DAY_S, Plant, dropout_windows
from lingtan.simulator import SimulatedMeter, as_read, sunspec_inverter
from telemetry.mqtt import connect_async, make_client

log = logging.getLogger(__name__)


@dataclass
class Meters:
    """The simulated meters: device id -> server (shared by devices that read the same meter)."""

    servers: dict[str, SimulatedMeter] = field(default_factory=dict)

    @property
    def ports(self) -> dict[str, int]:
        """The port each meter's own device is served on."""
        return {d: m.port for d, m in self.servers.items()}

    async def stop(self) -> None:
        """Stop serving."""
        for m in self.servers.values():
            await m.stop()


class Answering:
    """Whether a meter's gateway answers at simulated time `t` (its dropouts, day by day)."""

    def __init__(self, plant: Plant, device: str, live_from_s: float) -> None:
        self.spec = plant.meters[device]
        self.live_from_s = live_from_s
        self._day: int | None = None
        self._windows: list[tuple[float, float]] = []

    def __call__(self, t: float) -> bool:
        """True unless `t` is in a dropout."""
        day = math.floor(t / DAY_S)
        if day != self._day:
            self._day = day
            self._windows = dropout_windows(
                self.spec, (day - 1) * DAY_S, (day + 2) * DAY_S, self.live_from_s
            )
        return not any(a <= t < b for a, b in self._windows)


@dataclass(frozen=True)
class RegisterMap:
    """What a simulated meter serves: the map, fixed words and scale factor exponents."""

    profile: Profile
    static: dict[int, int] = field(default_factory=dict)
    scale_factors: dict[str, int] = field(default_factory=dict)


def register_maps(profiles: dict[str, str]) -> dict[str, RegisterMap]:
    """Each device's register map (`profiles`: device id -> profile name)."""
    out = {}
    for device, name in profiles.items():
        if name == "sunspec":
            prof, static, sfs = sunspec_inverter("lingtan demo", "Rooftop PV 1000 kW", "DEMO-PV-1")
            out[device] = RegisterMap(prof, static, sfs)
        else:
            out[device] = RegisterMap(register_map(name))
    return out


def quantizer(
    maps: dict[str, RegisterMap],
) -> Callable[[str, dict[str, float]], dict[str, float]]:
    """Values as a poll of each device's registers reads them back."""

    def quantize(device: str, values: dict[str, float]) -> dict[str, float]:
        m = maps.get(device)
        return values if m is None else as_read(m.profile, values, m.scale_factors)

    return quantize


async def start_meters(plant: Plant, maps: dict[str, RegisterMap], clock: SimClock) -> Meters:
    """Serve every Modbus meter of the plant (`maps`: by the device id that polls it)."""
    meters = Meters()
    live_from = clock.now()

    def source(device: str) -> Callable[[float], dict[str, float]]:
        def read(t: float) -> dict[str, float]:
            plant.advance(t)
            return plant.values(device)

        return read

    try:
        for m in plant.spec.meters:
            rmap = maps.get(m.device)
            if m.kind == "gas" or rmap is None:
                continue
            server = SimulatedMeter(
                rmap.profile,
                source(m.device),
                clock=clock.now,
                static=rmap.static,
                scale_factors=rmap.scale_factors,
                answering=Answering(plant, m.device, live_from) if m.dropouts else None,
                keep=100,  # the demo runs for days: keep the request log short
            )
            meters.servers[m.device] = server
            await server.start()
    except BaseException:
        await meters.stop()
        raise
    return meters


async def gas_gateway(
    cfg: SiteConfig, device: MqttDeviceConfig, plant: Plant, clock: SimClock, interval_s: float
) -> None:
    """Publish the gas meter's JSON every `interval_s` simulated seconds until cancelled."""
    broker = cfg.edge.mqtt.broker if cfg.edge.mqtt and cfg.edge.mqtt.broker else cfg.broker
    client = make_client(broker, f"demo-gateway-{device.id}", persistent=False)
    connect_async(client, broker, persistent=False)
    meter = next(m.device for m in plant.spec.meters if m.kind == "gas")
    try:
        tick = math.floor(clock.now() / interval_s + 1) * interval_s
        if clock.wall_seconds(tick - clock.now()) < 1.0:
            tick += interval_s  # give the edge agent's subscription a moment
        while True:
            await clock.sleep_until(tick)
            t = clock.now()
            plant.advance(t)
            v = plant.values(meter)
            body = {
                "ts": int(t * 1000),
                "meter": {
                    "volume_m3": v["gas_volume_m3"],
                    "temperature_c": v["temperature_c"],
                    "pressure_kpa": v["pressure_kpa"],
                },
            }
            client.publish(device.topic, orjson.dumps(body), qos=1)
            tick += interval_s
            if clock.now() > tick:  # fell behind: carry on from now
                tick = math.floor(clock.now() / interval_s + 1) * interval_s
    finally:
        with contextlib.suppress(Exception):
            client.disconnect()
        client.loop_stop()
        await asyncio.sleep(0)
