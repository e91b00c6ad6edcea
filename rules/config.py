"""The `rules:` section of a site config: meter roles, factors and the ledger."""

from __future__ import annotations

import re
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rules.factors import FUELS
from rules.market import Instruments
from rules.targets import TargetConfig
from telemetry.quantities import QuantityKind, vocabulary
from telemetry.sample import Ident


class Role(StrEnum):
    """What a meter measures for the accounts."""

    GRID_IMPORT = "grid_import"  # electricity bought from the grid (Scope 2)
    GRID_EXPORT = "grid_export"  # electricity sold to the grid (never counted as consumed)
    GENERATION = "generation"  # on-site generation: PV, wind, a CHP's output
    BATTERY_CHARGE = "battery_charge"
    BATTERY_DISCHARGE = "battery_discharge"
    SUBMETER = "submeter"  # an area, line or process: breakdown only, never added to the site
    IT_LOAD = "it_load"  # a data centre zone's IT equipment (PUE); breakdown only
    DC_FACILITY = "dc_facility"  # a data centre zone's whole intake (PUE); breakdown only
    FUEL = "fuel"  # a fuel burnt on site: natural gas, diesel, LPG, coal... (Scope 1)
    PURCHASED_HEAT = "purchased_heat"  # heat bought from a supplier (Scope 2)
    PURCHASED_STEAM = "purchased_steam"
    PURCHASED_COOLING = "purchased_cooling"
    PPA_DELIVERY = "ppa_delivery"  # a PPA's delivered volume, metered (market-based Scope 2)


# Roles whose energy is electricity flowing through the site's connection (the site balance).
THERMAL_ROLES = frozenset({Role.PURCHASED_HEAT, Role.PURCHASED_STEAM, Role.PURCHASED_COOLING})
BREAKDOWN_ROLES = frozenset({Role.SUBMETER, Role.IT_LOAD, Role.DC_FACILITY})
ZONE_ROLES = frozenset({Role.IT_LOAD, Role.DC_FACILITY})  # a data-centre zone's (PUE)


def _zone_misfit(role: str, zone: str | None) -> bool:
    """Whether a meter's role and zone disagree: a zone is for ZONE_ROLES, and only for them."""
    return (role in ZONE_ROLES) != (zone is not None)


# The counter each role reads unless the config names another: a meter's import register for
# what flows in, its export register for what flows out (an inverter's lifetime yield is an
# export counter in the profiles, e.g. SunSpec WH).
DEFAULT_QUANTITY = {
    Role.GRID_IMPORT: "energy_import_kwh",
    Role.GRID_EXPORT: "energy_export_kwh",
    Role.GENERATION: "energy_export_kwh",
    Role.BATTERY_CHARGE: "energy_import_kwh",
    Role.BATTERY_DISCHARGE: "energy_export_kwh",
    Role.SUBMETER: "energy_import_kwh",
    Role.IT_LOAD: "energy_import_kwh",
    Role.DC_FACILITY: "energy_import_kwh",
    Role.PURCHASED_HEAT: "heat_energy_kwh",
    Role.PURCHASED_STEAM: "heat_energy_kwh",
    Role.PURCHASED_COOLING: "heat_energy_kwh",
    Role.PPA_DELIVERY: "energy_import_kwh",
}
# A fuel meter's counter unless the config names another: gases by volume, liquids by litre,
# solids (and LPG, sold by weight) by mass.
FUEL_QUANTITY = {
    "natural_gas": "gas_volume_m3",
    "biogas": "gas_volume_m3",
    "diesel": "fuel_volume_l",
    "gasoline": "fuel_volume_l",
    "fuel_oil": "fuel_volume_l",
    "lpg": "fuel_mass_kg",
    "bituminous_coal": "fuel_mass_kg",
    "wood": "fuel_mass_kg",
}
FactorId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{2,80}$")]


class VolumeCorrection(BaseModel):
    """Gas metered at line conditions, corrected to standard conditions (ideal gas).

    V_std = V x (p_abs / p_std) x (T_std / T), with T in kelvin and the temperature and pressure
    read with the counter (the Sample carrying the volume). The standard conditions must be
    those the calorific value is stated at: 0 degC and 101.325 kPa (the "Nm3" of Chinese
    reporting, GB/T 32150) unless the config says otherwise (15 degC for ISO 13443).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The gas temperature in degC, read from the counter's Sample. A Sample without it (or
    # the pressure) keeps the last correction; none yet: counted uncorrected, flagged estimated.
    temperature_quantity: str = "temperature_c"
    # The gas pressure in kPa, absolute or gauge (below), read from the counter's Sample.
    pressure_quantity: str = "pressure_kpa"
    # gauge: the meter reports pressure above the atmosphere, added to `atmospheric_kpa`
    pressure: Literal["absolute", "gauge"] = "absolute"
    # The atmospheric pressure at the meter, in kPa; used only with `pressure: gauge`.
    atmospheric_kpa: Annotated[float, Field(gt=50, lt=120)] = 101.325
    # The standard temperature the volume is corrected to, in degC: the calorific value's.
    standard_temperature_c: Annotated[float, Field(ge=-10, le=30)] = 0.0
    # The standard pressure the volume is corrected to, in kPa: the calorific value's.
    standard_pressure_kpa: Annotated[float, Field(gt=50, lt=120)] = 101.325


class MeterConfig(BaseModel):
    """A meter that counts in the accounts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The device id as the edge publishes it.
    device: Ident
    # What the meter measures for the accounts (README: Accounting).
    role: Role
    # The counter (or power) quantity to read; default: the role's usual counter.
    quantity: str | None = None
    # The value at which the device's counter register wraps to zero, in the quantity's unit.
    counter_max: Annotated[float, Field(gt=0)] | None = None
    # The most power the meter can see (its rating, e.g. CT ratio x voltage): a step of the
    # counter implying more is a spike, held out of the totals until the next reading tells a
    # glitch from a jump. Unset: no spike check.
    max_power_kw: Annotated[float, Field(gt=0)] | None = None
    # Silence longer than this is a gap: the energy across it is spread by time and flagged
    # estimated.
    gap_s: Annotated[float, Field(gt=0)] = 900.0
    # Generation only: whether it is renewable (PV, wind) for the renewable share.
    renewable: bool | None = None
    # Sub-meters: the plant area, for the breakdown by area; unset: in no area's figure.
    area: str | None = None
    # Sub-meters: the production line, for the breakdown by line; unset: in no line's figure.
    line: str | None = None
    # IT load and data-centre intake: which data-centre zone (PUE = intake / IT, per zone).
    zone: Ident | None = None
    # Fuel meters: the fuel, its calorific value (pinned by id, e.g. the supplier's stated NCV
    # per m3; by default the library's for the fuel and the meter's unit) and emission factors
    # pinned by id (by default the library's for the fuel, one per gas).
    fuel: str | None = None
    # Fuel meters: the calorific value's factor id, pinned (default: the library's).
    ncv: FactorId | None = None
    # Fuel meters: emission factor ids, pinned (default: the library's per gas).
    emission_factors: list[FactorId] = Field(default_factory=list)
    # Gas meters giving actual volume: correct it to standard conditions.
    volume_correction: VolumeCorrection | None = None
    # Purchased heat, steam and cooling: the factor (by default the library's for the region).
    factor: FactorId | None = None

    @model_validator(mode="after")
    def _counter(self) -> MeterConfig:
        if self.role is Role.GENERATION and self.renewable is None:
            raise ValueError("a generation meter must say `renewable: true` or `renewable: false`")
        if self.role is not Role.GENERATION and self.renewable is not None:
            raise ValueError(f"`renewable` applies to generation meters, not {self.role}")
        if _zone_misfit(self.role, self.zone):
            raise ValueError(
                "`zone` is required for it_load and dc_facility meters, and only for them"
            )
        return self

    @model_validator(mode="after")
    def _fuel_and_quantity(self) -> MeterConfig:
        if (self.role is Role.FUEL) != (self.fuel is not None):
            raise ValueError("`fuel` is required for fuel meters, and only for them")
        if self.fuel is not None and self.fuel not in FUELS:
            raise ValueError(f"fuel {self.fuel!r} is not one of {sorted(FUELS)}")
        if self.role is not Role.FUEL and (self.ncv or self.emission_factors):
            raise ValueError("`ncv` and `emission_factors` apply to fuel meters only")
        if self.factor is not None and self.role not in THERMAL_ROLES:
            raise ValueError("`factor` applies to purchased heat, steam and cooling meters only")
        q = self.counter_quantity
        if q not in vocabulary():
            raise ValueError(f"quantity {q!r} is not in the vocabulary")
        spec = vocabulary()[q]
        if spec.kind is QuantityKind.GAUGE:
            # a meter without a counter: its power integrated over time, flagged estimated
            if spec.unit != "kW" or self.role in (Role.FUEL, *THERMAL_ROLES):
                raise ValueError(
                    f"quantity {q!r} is a gauge in {spec.unit}: energy needs a counter, or a "
                    f"power gauge in kW for an electricity meter without one"
                )
            if self.counter_max is not None or self.max_power_kw is not None:
                raise ValueError("`counter_max` and `max_power_kw` apply to counters, not power")
        elif spec.kind is not QuantityKind.COUNTER:
            raise ValueError(f"quantity {q!r} is a {spec.kind}, energy needs a counter")
        want = "m3" if self.role is Role.FUEL and self.volume_correction else None
        if self.volume_correction is not None and spec.unit != want:
            raise ValueError(f"`volume_correction` applies to gas meters counting m3, not {q!r}")
        if self.role is Role.FUEL and spec.unit not in ("m3", "L", "kg"):
            raise ValueError(f"a fuel meter counts m3, L or kg; {q!r} is in {spec.unit}")
        if self.role is not Role.FUEL and spec.unit not in ("kWh", "kW"):
            raise ValueError(f"a {self.role} meter counts kWh; {q!r} is in {spec.unit}")
        return self

    @property
    def counter_quantity(self) -> str:
        """The counter (for a meter without one, the power gauge) its energy comes from."""
        if self.quantity is not None:
            return self.quantity
        if self.fuel is not None:
            return FUEL_QUANTITY[self.fuel]
        return DEFAULT_QUANTITY[self.role]

    @property
    def integrates_power(self) -> bool:
        """True for a meter without a counter: energy from its power readings, estimated."""
        return vocabulary()[self.counter_quantity].kind is QuantityKind.GAUGE

    @property
    def unit(self) -> str:
        """The unit of the amounts this meter books: kWh, or the fuel's m3 / L / kg."""
        unit = vocabulary()[self.counter_quantity].unit
        return "kWh" if unit == "kW" else unit


class RefrigerantTopUp(BaseModel):
    """Refrigerant added to equipment (a manual entry): the kg added leaked since the last fill."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The entry's id, unique among top-ups: its ledger row is replaced when the entry changes and
    # taken out when the entry is removed.
    id: Annotated[str, Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")]
    # The day of the top-up (site time): booked in Scope 1 on that day's first 15 minutes.
    date: date
    gas: Annotated[str, Field(min_length=2)]  # as named in the GWP factors: R-410A, R-134a, SF6
    # Refrigerant added, in kg, taken as leaked: kg x the gas's GWP (rules.gwp_set) = kg CO2e.
    kg: Annotated[float, Field(gt=0)]
    # The equipment topped up: free text for the record, not used in the figures.
    equipment: str = ""
    # Free text for the record, not used in the figures.
    note: str = ""


_TERM = re.compile(r"\s*([+-])?\s*([A-Za-z0-9][A-Za-z0-9_.-]*)\s*")


class VirtualMeter(BaseModel):
    """A meter computed from others by sums and differences, for the breakdown.

    `formula` is meter device ids joined by + and - (e.g. "feeder-2 - line-a - line-b", the part
    of a feeder no line meter sees). A virtual meter is breakdown only: it is shown by area,
    line and meter but never added to the sub-metered total, which its terms are already in.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Its id in the breakdown, unique among the meters and virtual meters.
    id: Ident
    # Device ids of submeter, it_load and dc_facility meters in rules.meters, joined by + and -.
    formula: Annotated[str, Field(min_length=1, max_length=2000)]
    # Shown as a meter of this role: a sub-meter (by area and line), or a zone's IT load or
    # intake (PUE).
    role: Literal["submeter", "it_load", "dc_facility"] = "submeter"
    # Role submeter: the plant area, for the breakdown by area; unset: in no area's figure.
    area: str | None = None
    # Role submeter: the production line, for the breakdown by line; unset: in no line's figure.
    line: str | None = None
    # Roles it_load and dc_facility (and only they): the data-centre zone whose PUE it counts in.
    zone: Ident | None = None

    @property
    def terms(self) -> list[tuple[int, str]]:
        """(+1 or -1, device) for each term of the formula."""
        out: list[tuple[int, str]] = []
        pos = 0
        text = self.formula.strip()
        while pos < len(text):
            m = _TERM.match(text, pos)
            if m is None or (m.group(1) is None and out):
                raise ValueError(
                    f"virtual meter {self.id!r}: formula {self.formula!r} is not meter ids "
                    f"joined by + and - (at character {pos + 1})"
                )
            out.append((-1 if m.group(1) == "-" else 1, m.group(2)))
            pos = m.end()
        return out

    @model_validator(mode="after")
    def _parse(self) -> VirtualMeter:
        if not self.terms:
            raise ValueError(f"virtual meter {self.id!r}: empty formula")
        if _zone_misfit(self.role, self.zone):
            raise ValueError(
                f"virtual meter {self.id!r}: `zone` is required for it_load and dc_facility, "
                "and only for them (a sub-meter with a zone would count as that zone's intake)"
            )
        return self


class RulesConfig(BaseModel):
    """How rules turns readings into energy and emissions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Fixed: the broker keeps this client's session while rules is away.
    client_id: Ident = "lingtan-rules"
    # The accounting ledger (SQLite): energy, emissions, events and revisions.
    ledger: Path = Path("var/ledger.sqlite")
    # Site-specific factor files, on top of the library shipped with lingtan.
    factor_files: list[Path] = Field(default_factory=list)
    # Pin the location-based grid factor by id; by default it follows the site's region and year.
    grid_factor: str | None = None
    # The meters that count in the accounts, each with its role.
    meters: list[MeterConfig] = Field(default_factory=list)
    # How often the running figure of the open 15-minute interval is republished.
    # 0.5 s with batches closed after 0.2 s: a reading shows in the live figure within a second.
    derived_every_s: Annotated[float, Field(ge=0.1, le=900)] = 0.5
    # A batch (booked in one ledger transaction, then acknowledged) closes at this many
    # messages, or batch_wait_s after its first message.
    batch_messages: Annotated[int, Field(ge=1, le=100_000)] = 1000
    # A batch closes this long after its first message, or at batch_messages.
    batch_wait_s: Annotated[float, Field(gt=0, le=60)] = 0.2
    # The month the fiscal year starts in (4 = April); fiscal years are named for the year they
    # end in (rules/periods.py).
    fiscal_year_start_month: Annotated[int, Field(ge=1, le=12)] = 1
    # The reduction target the site reports against (rules/targets.py).
    target: TargetConfig | None = None
    # The GWP100 set CH4 and N2O (and refrigerants) are converted with. AR6 is the newest; for
    # CH4 it has a fossil and a non-fossil value, applied by the fuel's origin.
    gwp_set: Literal["AR4", "AR5", "AR6"] = "AR6"
    # Refrigerant top-ups (Scope 1), entered by hand.
    refrigerants: list[RefrigerantTopUp] = Field(default_factory=list)
    # Meters computed from sub-meters, for the breakdown.
    virtual_meters: list[VirtualMeter] = Field(default_factory=list)
    # Market-based Scope 2: certificates, PPAs, supplier-specific factors, the residual mix.
    market: Instruments = Instruments()
    # The grid's carbon-free share per hour (CSV: hour_start_utc,carbon_free_share), for the
    # Google-style CFE score; the file's first line names its source as a comment.
    grid_cfe_file: Path | None = None

    @model_validator(mode="after")
    def _unique(self) -> RulesConfig:
        seen: set[str] = set()
        for i, m in enumerate(self.meters):
            if m.device in seen:
                raise ValueError(f"meters[{i}]: device {m.device!r} is listed twice")
            seen.add(m.device)
        roles = {m.device: m.role for m in self.meters}
        for i, v in enumerate(self.virtual_meters):
            if v.id in seen:
                raise ValueError(f"virtual_meters[{i}]: id {v.id!r} is already a meter")
            for _, dev in v.terms:
                if dev not in seen:
                    raise ValueError(
                        f"virtual_meters[{i}] ({v.id}): {dev!r} is not a meter listed before it"
                    )
                # the breakdown adds up sub-meter energy: any other term would count as zero
                if dev not in roles:
                    raise ValueError(
                        f"virtual_meters[{i}] ({v.id}): {dev!r} is a virtual meter; write out "
                        "its terms instead"
                    )
                if roles[dev] not in BREAKDOWN_ROLES:
                    raise ValueError(
                        f"virtual_meters[{i}] ({v.id}): {dev!r} is a {roles[dev].value} meter; "
                        "a virtual meter is made of submeter, it_load and dc_facility meters "
                        "(the site's own consumption already has its unmetered remainder)"
                    )
            seen.add(v.id)
        ids = [r.id for r in self.refrigerants]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"refrigerants: id(s) {sorted(dup)} listed twice")
        for i, p in enumerate(self.market.ppas):
            dev = p.meter or ""
            if p.meter is not None and not any(
                m.device == dev and m.role is Role.PPA_DELIVERY for m in self.meters
            ):
                raise ValueError(
                    f"market.ppas[{i}] ({p.id}): meter {dev!r} is not a ppa_delivery meter"
                )
        return self
