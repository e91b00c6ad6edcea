"""The demo plant's physics: loads that follow shifts and weather, PV under clouds, a gas boiler.

Everything is a function of simulated time (epoch seconds) and the plant description
(plant.yaml); counters are the integral of power over time, stepped as time advances, so a
meter's counter and its power reading agree the way a real meter's do. Randomness is seeded:
the same start time and seed give the same plant.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cache
from importlib import resources
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

_MASK = (1 << 64) - 1
DAY_S = 86_400.0


def _mix(x: int) -> int:
    """splitmix64: a well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def unit_hash(*parts: int) -> float:
    """A number in [0, 1) that depends only on `parts`: weather and dropouts are reproducible."""
    h = 0
    for p in parts:
        h = _mix(h ^ (p & _MASK))
    return h / 2.0**64


def smooth_noise(key: int, t: float, period_s: float) -> float:
    """Value noise in [0, 1): random points every `period_s`, eased in between."""
    x = t / period_s
    i = math.floor(x)
    f = x - i
    f = f * f * (3 - 2 * f)
    a, b = unit_hash(key, i), unit_hash(key, i + 1)
    return a + (b - a) * f


# --- the plant description (plant.yaml) -------------------------------------------------------

Curve = list[tuple[str, float]]


def _minutes(hhmm: str) -> float:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DayCurves(_Frozen):
    """A share (0..1) through the day, by day type; linear between the listed times."""

    weekday: Curve
    saturday: Curve
    sunday: Curve

    @field_validator("weekday", "saturday", "sunday")
    @classmethod
    def _ordered(cls, v: Curve) -> Curve:
        times = [_minutes(t) for t, _ in v]
        if times != sorted(times) or times[0] != 0 or times[-1] != 24 * 60:
            raise ValueError("times must run in order from 00:00 to 24:00")
        if any(not 0 <= s <= 1.5 for _, s in v):
            raise ValueError("shares must be between 0 and 1.5")
        return v

    def at(self, weekday: int, minute: float) -> float:
        """The share at `minute` of a day (`weekday` 0 = Monday)."""
        curve = self.sunday if weekday == 6 else self.saturday if weekday == 5 else self.weekday
        return _interp(_points(tuple(curve)), minute)


@cache
def _points(curve: tuple[tuple[str, float], ...]) -> tuple[tuple[float, float], ...]:
    return tuple((_minutes(t), s) for t, s in curve)


def _interp(points: tuple[tuple[float, float], ...], x: float) -> float:
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


class Location(_Frozen):
    """Where the plant is, for the sun's path."""

    latitude: Annotated[float, Field(ge=-66, le=66)]
    longitude: Annotated[float, Field(ge=-180, le=180)]


class Weather(_Frozen):
    """Climate normals and how often days are clear or overcast."""

    monthly_mean_c: Annotated[list[float], Field(min_length=12, max_length=12)]
    daily_swing_c: Annotated[float, Field(ge=0, le=30)]
    clear_share: Annotated[float, Field(ge=0, le=1)]
    overcast_share: Annotated[float, Field(ge=0, le=1)]


class Load(_Frozen):
    """kW = base + production x share + office x share + per_degc x |air - 18 degC|."""

    base: float = 0.0
    production: float = 0.0
    office: float = 0.0
    per_degc: float = 0.0
    noise: Annotated[float, Field(ge=0, le=0.5)] = 0.0


class Cooling(_Frozen):
    """Cooling power as a share of the IT load, rising with the air temperature above 10 degC."""

    base: float
    per_degc_above_10: float


class GasFlow(_Frozen):
    """Line volume flow, m3/h: base + production x share + per_degc_below_18 x (18 - air)."""

    base: float
    production: float = 0.0
    per_degc_below_18: float = 0.0
    noise: Annotated[float, Field(ge=0, le=0.5)] = 0.0


class Dropouts(_Frozen):
    """When a meter's gateway stops answering."""

    per_day: Annotated[float, Field(ge=0, le=1)]
    minutes: tuple[float, float]
    after_start_min: float | None = None
    first_minutes: float = 30.0


class MeterSpec(_Frozen):
    """One simulated meter: what it measures and how that behaves."""

    device: str
    kind: Literal["load", "grid", "pv", "dc_it", "dc_intake", "gas"] = "load"
    load: Load = Load()
    power_factor: Annotated[float, Field(gt=0.5, le=1)] = 0.95
    start: dict[str, float] = Field(default_factory=dict)
    dropouts: Dropouts | None = None
    # pv
    peak_kw: float = 0.0
    inverter_kw: float = 0.0
    tilt_deg: float = 0.0
    performance_ratio: float = 0.8
    rollover_days_ago: int | None = None
    # dc_intake
    ups_loss: float = 0.0
    cooling: Cooling | None = None
    # gas
    flow_m3h: GasFlow | None = None
    pressure_kpa: float = 20.0


class Unmetered(_Frozen):
    """What no sub-meter sees: base kW plus a share of the metered loads."""

    base: float
    share: float


class PlantSpec(_Frozen):
    """The whole plant.yaml."""

    location: Location
    weather: Weather
    production: DayCurves
    office_hours: DayCurves
    meters: list[MeterSpec]
    unmetered: Unmetered

    def meter(self, kind: str) -> MeterSpec:
        """The (first) meter of a kind."""
        return next(m for m in self.meters if m.kind == kind)


def load_plant(text: str | None = None) -> PlantSpec:
    """The shipped plant description (or one given as YAML text)."""
    if text is None:
        text = resources.files("lingtan.demo_plant").joinpath("plant.yaml").read_text("utf-8")
    return PlantSpec.model_validate(yaml.safe_load(text))


# --- sun and weather ---------------------------------------------------------------------------


def clear_sky_poa(t: float, lat: float, lon: float, tilt: float) -> float:
    """Clear-sky irradiance on a south-facing plane tilted `tilt` degrees, W/m2.

    Declination (Cooper), equation of time (Spencer's short form), beam by Meinel's air-mass
    model, and a tenth of the beam as diffuse: good to a few percent, plenty for a demo.
    """
    d = datetime.fromtimestamp(t, UTC)
    n = d.timetuple().tm_yday
    decl = math.radians(23.45) * math.sin(math.radians(360 / 365 * (284 + n)))
    b = math.radians(360 / 365 * (n - 81))
    eot_min = 9.87 * math.sin(2 * b) - 7.53 * math.cos(b) - 1.5 * math.sin(b)
    solar_h = d.hour + d.minute / 60 + d.second / 3600 + lon / 15 + eot_min / 60
    ha = math.radians(15 * (solar_h - 12))
    phi = math.radians(lat)
    sin_el = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(ha)
    if sin_el <= 0.02:
        return 0.0
    air_mass = 1 / sin_el
    beam: float = 1353 * 0.7 ** (air_mass**0.678)
    beta = math.radians(tilt)
    cos_inc = math.sin(decl) * math.sin(phi - beta) + math.cos(decl) * math.cos(
        phi - beta
    ) * math.cos(ha)
    return beam * max(0.0, cos_inc) + 0.1 * beam * (1 + math.cos(beta)) / 2


def day_sky(day: date, w: Weather) -> str:
    """clear, partly or overcast: the day's weather."""
    u = unit_hash(11, day.toordinal())
    if u < w.clear_share:
        return "clear"
    if u >= 1 - w.overcast_share:
        return "overcast"
    return "partly"


def cloud_factor(t: float, sky: str) -> float:
    """Share of the clear-sky irradiance that gets through."""
    if sky == "clear":
        return 0.96 + 0.04 * smooth_noise(12, t, 1800)
    if sky == "overcast":
        return 0.12 + 0.16 * smooth_noise(13, t, 3600)
    # passing cumulus: bright gaps and shadows lasting minutes
    c = smooth_noise(14, t, 480)
    return 0.3 + 0.7 * min(1.0, max(0.0, (c - 0.25) * 2.2))


def air_temperature(t: float, local: datetime, w: Weather, sky: str) -> float:
    """Air temperature: the month's normal, the day's anomaly and the swing (warmest at 15:00)."""
    m = local.month - 1
    frac = (local.day - 1) / 31
    # normals are mid-month; interpolate towards the neighbouring month
    if frac < 0.5:
        mean = w.monthly_mean_c[m - 1] + (w.monthly_mean_c[m] - w.monthly_mean_c[m - 1]) * (
            frac + 0.5
        )
    else:
        nxt = w.monthly_mean_c[(m + 1) % 12]
        mean = w.monthly_mean_c[m] + (nxt - w.monthly_mean_c[m]) * (frac - 0.5)
    anomaly = 7.0 * (smooth_noise(21, t, 3 * DAY_S) - 0.5)
    swing = w.daily_swing_c * (0.45 if sky == "overcast" else 1.0)
    hour = local.hour + local.minute / 60
    return mean + anomaly + swing / 2 * math.cos(2 * math.pi * (hour - 15) / 24)


# --- the plant's state ---------------------------------------------------------------------------


@dataclass
class Flows:
    """Power of every meter at one instant (kW; gas in m3/h) and the conditions behind them."""

    t: float
    air_c: float
    sky: str
    production: float
    kw: dict[str, float]
    site_kw: float
    pv_kw: float
    gas_m3h: float


@dataclass
class MeterState:
    """Counters of one meter, as integrated so far."""

    counters: dict[str, float] = field(default_factory=dict)


class Plant:
    """The plant's meters through time: `advance` to a time, then read `values`."""

    def __init__(self, spec: PlantSpec, timezone: str, start_s: float, seed: int = 8) -> None:
        self.spec = spec
        self.zone = ZoneInfo(timezone)
        self.rng = random.Random(seed)  # noqa: S311 - a simulation, not a secret
        self.t = start_s
        self.meters = {m.device: m for m in spec.meters}
        self.state = {m.device: MeterState(dict(m.start)) for m in spec.meters}
        for m in spec.meters:
            c = self.state[m.device].counters
            if m.kind in ("load", "dc_it", "dc_intake"):
                c.setdefault("energy_import_kwh", 0.0)
                c.setdefault("energy_export_kwh", 0.0)
                c.setdefault("reactive_energy_import_kvarh", c["energy_import_kwh"] * 0.31)
            elif m.kind == "grid":
                c.setdefault("energy_import_kwh", 0.0)
                c.setdefault("energy_export_kwh", 0.0)
            elif m.kind == "pv":
                c.setdefault("energy_export_kwh", 0.0)
            elif m.kind == "gas":
                c.setdefault("gas_volume_m3", 0.0)
        # the PV inverter's register offset: lifetime yield before the simulation started
        self.pv_offset_kwh = 0.0
        self.flows = self.at(start_s)

    # -- instantaneous ------------------------------------------------------------------------

    def at(self, t: float, *, noise: bool = True) -> Flows:
        """Every meter's power at `t`."""
        spec = self.spec
        local = datetime.fromtimestamp(t, self.zone)
        minute = local.hour * 60 + local.minute + local.second / 60
        wd = local.weekday()
        prod = spec.production.at(wd, minute)
        office = spec.office_hours.at(wd, minute)
        sky = day_sky(local.date(), spec.weather)
        air = air_temperature(t, local, spec.weather, sky)
        rng = self.rng
        kw: dict[str, float] = {}
        metered = 0.0
        it_kw = 0.0
        pv_kw = gas = 0.0
        for m in spec.meters:
            if m.kind in ("load", "dc_it"):
                ld = m.load
                p = ld.base + ld.production * prod + ld.office * office
                p += ld.per_degc * abs(air - 18.0)
                if noise and ld.noise:
                    p *= 1 + rng.gauss(0, ld.noise)
                kw[m.device] = p = max(0.0, p)
                if m.kind == "dc_it":
                    it_kw = p
                else:
                    metered += p
            elif m.kind == "pv":
                poa = clear_sky_poa(t, spec.location.latitude, spec.location.longitude, m.tilt_deg)
                dc = m.peak_kw * m.performance_ratio * poa / 1000 * cloud_factor(t, sky)
                pv_kw = min(m.inverter_kw, dc * 0.975)
                kw[m.device] = pv_kw
            elif m.kind == "gas" and m.flow_m3h is not None:
                f = m.flow_m3h
                gas = f.base + f.production * prod + f.per_degc_below_18 * max(0.0, 18.0 - air)
                if noise and f.noise:
                    gas *= 1 + rng.gauss(0, f.noise)
                gas = max(0.0, gas)
                kw[m.device] = gas
        for m in spec.meters:
            if m.kind == "dc_intake":
                cool = m.cooling or Cooling(base=0.0, per_degc_above_10=0.0)
                share = cool.base + cool.per_degc_above_10 * max(0.0, air - 10.0)
                p = it_kw * (1 + m.ups_loss + share)
                if noise:
                    p *= 1 + rng.gauss(0, 0.01)
                kw[m.device] = p
                metered += p
        site = metered + spec.unmetered.base + spec.unmetered.share * metered
        grid = spec.meter("grid").device
        kw[grid] = site - pv_kw
        return Flows(t, air, sky, prod, kw, site, pv_kw, gas)

    # -- through time -------------------------------------------------------------------------

    def advance(self, t: float, max_step_s: float = 60.0) -> None:
        """Integrate every counter up to `t` (nothing if `t` is not later than now)."""
        while self.t < t:
            step_to = min(t, self.t + max_step_s)
            nxt = self.at(step_to)
            dt_h = (step_to - self.t) / 3600
            for m in self.spec.meters:
                c = self.state[m.device].counters
                a, b = self.flows.kw.get(m.device, 0.0), nxt.kw.get(m.device, 0.0)
                if m.kind == "grid":
                    c["energy_import_kwh"] += _positive_area(a, b) * dt_h
                    c["energy_export_kwh"] += _positive_area(-a, -b) * dt_h
                elif m.kind == "gas":
                    c["gas_volume_m3"] += (a + b) / 2 * dt_h
                elif m.kind == "pv":
                    c["energy_export_kwh"] += (a + b) / 2 * dt_h
                else:
                    e = (a + b) / 2 * dt_h
                    c["energy_import_kwh"] += e
                    c["reactive_energy_import_kvarh"] += e * _tan_phi(m.power_factor)
            self.flows, self.t = nxt, step_to

    def values(self, device: str, *, full: bool = True) -> dict[str, float]:
        """What the meter of `device` shows now (canonical units), as its registers hold it.

        `full`: every quantity the meter measures; else power and counters only (a logger's
        15-minute record, what the history is made of).
        """
        m = self.meters[device]
        f = self.flows
        c = self.state[device].counters
        p = f.kw.get(device, 0.0)
        rng = self.rng
        if m.kind == "gas":
            out = {
                "gas_volume_m3": round(c["gas_volume_m3"], 2),
                # the pipe is buried: the gas is milder than the air
                "temperature_c": round(9.0 + 0.45 * f.air_c + rng.gauss(0, 0.15), 2),
                "pressure_kpa": round(
                    m.pressure_kpa + 0.8 * (smooth_noise(31, f.t, 5400) - 0.5) + rng.gauss(0, 0.05),
                    2,
                ),
            }
            return out
        if m.kind == "pv":
            wh = (self.pv_offset_kwh + c["energy_export_kwh"]) % PV_WRAP_KWH
            out = {"active_power_kw": p, "energy_export_kwh": wh}
            if full:
                out |= _electrical(p, 1.0, rng, ll=True)
                out |= {
                    "dc_power_kw": p / 0.975 if p > 0 else 0.0,
                    "dc_voltage_v": 640.0 + 80 * min(1.0, p / max(m.inverter_kw, 1.0))
                    if p > 0
                    else 0.0,
                    "temperature_c": f.air_c + 22 * p / max(m.inverter_kw, 1.0),
                }
            return out
        if m.kind == "grid":
            out = {
                "active_power_kw": p,
                "energy_import_kwh": c["energy_import_kwh"],
                "energy_export_kwh": c["energy_export_kwh"],
            }
            if full:
                out |= _electrical(p, 0.96, rng, ll=True, voltage=231.0)
                out |= {"reactive_energy_import_kvarh": c["energy_import_kwh"] * 0.29}
            return out
        out = {"active_power_kw": p, "energy_import_kwh": c["energy_import_kwh"]}
        if full:
            out["energy_export_kwh"] = c["energy_export_kwh"]
            out["reactive_energy_import_kvarh"] = c["reactive_energy_import_kvarh"]
            out |= _electrical(p, m.power_factor, rng, ll=True)
        return out


# SunSpec acc32 lifetime yield in Wh: the register wraps at 2^32 Wh
PV_WRAP_KWH = 2**32 / 1000


def _positive_area(a: float, b: float) -> float:
    """Integral over a unit step of the positive part of a line from a to b."""
    if a >= 0 and b >= 0:
        return (a + b) / 2
    if a <= 0 and b <= 0:
        return 0.0
    hi = max(a, b)
    return hi * (hi / (abs(a) + abs(b))) / 2


def _tan_phi(pf: float) -> float:
    return math.tan(math.acos(pf))


def _electrical(
    kw: float, pf: float, rng: random.Random, *, ll: bool, voltage: float = 230.0
) -> dict[str, float]:
    """Voltages, currents, per-phase and reactive power of a three-phase load of `kw`."""
    v = [voltage + rng.gauss(0, 1.0) + d for d in (0.0, 0.7, -0.5)]
    split = (0.34, 0.335, 0.325)
    mag = abs(kw)
    amps = [mag * s * 1000 / (vi * pf) for s, vi in zip(split, v, strict=True)]
    q = mag * _tan_phi(pf)
    out = {
        "voltage_l1_v": v[0],
        "voltage_l2_v": v[1],
        "voltage_l3_v": v[2],
        "current_l1_a": amps[0],
        "current_l2_a": amps[1],
        "current_l3_a": amps[2],
        "current_n_a": abs(amps[0] - amps[2]) * 0.6,
        "active_power_l1_kw": kw * split[0],
        "active_power_l2_kw": kw * split[1],
        "active_power_l3_kw": kw * split[2],
        "reactive_power_kvar": q,
        "apparent_power_kva": mag / pf,
        "power_factor": pf if kw >= 0 else -pf,
        "frequency_hz": 50.0 + rng.gauss(0, 0.015),
    }
    if ll:
        r3 = math.sqrt(3)
        out |= {
            "voltage_l1_l2_v": (v[0] + v[1]) / 2 * r3,
            "voltage_l2_l3_v": (v[1] + v[2]) / 2 * r3,
            "voltage_l3_l1_v": (v[2] + v[0]) / 2 * r3,
        }
    return out


def dropout_windows(
    m: MeterSpec, start_s: float, end_s: float, live_from_s: float | None
) -> list[tuple[float, float]]:
    """[from, to) epoch seconds when `m`'s gateway does not answer, overlapping [start, end)."""
    d = m.dropouts
    if d is None:
        return []
    out: list[tuple[float, float]] = []
    day = math.floor(start_s / DAY_S) - 1
    while day * DAY_S < end_s:
        if unit_hash(41, day) < d.per_day:
            begin = (day + unit_hash(42, day)) * DAY_S
            minutes = d.minutes[0] + (d.minutes[1] - d.minutes[0]) * unit_hash(43, day)
            out.append((begin, begin + minutes * 60))
        day += 1
    if live_from_s is not None and d.after_start_min is not None:
        begin = live_from_s + d.after_start_min * 60
        out.append((begin, begin + d.first_minutes * 60))
    return sorted(w for w in out if w[1] > start_s and w[0] < end_s)
