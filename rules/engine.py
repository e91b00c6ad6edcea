"""The accounting engine: readings → interval amounts → Scope 1 and Scope 2 (location-based).

Counters give energy (or a fuel's volume or mass) as differences; a meter without a counter
gives energy by integrating its power, flagged estimated. Each amount is split over 15-minute
UTC intervals and booked in the ledger with the emissions it causes and the factor ids used:
grid import × the grid factor (Scope 2, location-based); purchased heat, steam and cooling × their
factor (Scope 2); fuel × net calorific value × CO2, CH4 and N2O factors × GWP (Scope 1, biogenic
CO2 apart). Refrigerant top-ups from the config are booked as Scope 1 by `sync_manual`.
Market-based Scope 2 is allocated per period from the booked grid import (rules/market.py).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from rules.config import THERMAL_ROLES, MeterConfig, Role, RulesConfig
from rules.energy import counter_delta, split
from rules.factors import Factor, FactorKind, FactorLibrary, GasOrigin
from rules.ledger import EmissionRow, Event, Ledger, MeterState, SiteInterval
from telemetry.config import SiteInfo
from telemetry.sample import Sample
from telemetry.timeutil import QUARTER_HOUR_MS, floor_ms, from_datetime, to_datetime

_KELVIN = 273.15
_THERMAL_KIND = {
    Role.PURCHASED_HEAT: FactorKind.PURCHASED_HEAT,
    Role.PURCHASED_STEAM: FactorKind.PURCHASED_STEAM,
    Role.PURCHASED_COOLING: FactorKind.PURCHASED_COOLING,
}
FUEL_GASES = ("CO2", "CH4", "N2O")


@dataclass(frozen=True, slots=True)
class FuelFactors:
    """The factors one fuel meter's amount is multiplied by on a day."""

    ncv: Factor
    gases: tuple[tuple[Factor, Factor], ...]  # (emission factor, GWP) per gas


DERIVED_DEVICE = "site-15m"  # a 15-minute interval's figures
SITE_DEVICE = "site"  # today, month and fiscal-year figures (rules/live.py)


def _kw(kwh: float, start_ms: int, end_ms: int) -> float:
    """Average power of `kwh` over (start_ms, end_ms]."""
    return kwh * 3_600_000 / max(1, end_ms - start_ms)


class Engine:
    """Applies Samples to the ledger; call `apply` inside a ledger transaction."""

    def __init__(
        self, site: SiteInfo, cfg: RulesConfig, ledger: Ledger, factors: FactorLibrary
    ) -> None:
        self.site = site
        self.cfg = cfg
        self.ledger = ledger
        self.factors = factors
        self.meters = {m.device: m for m in cfg.meters}
        if cfg.grid_factor is not None and cfg.grid_factor not in factors:
            raise ValueError(f"rules.grid_factor: no factor {cfg.grid_factor!r} in the library")
        self.duplicates = 0
        # where each (device, counter quantity) wraps, as the edge reports it from the register
        # map (`counters_max` in the device's retained status); the config's counter_max wins
        self.counter_max_reported: dict[tuple[str, str], float] = {}
        self._grid_cache: dict[int, Factor] = {}  # interval start -> its grid factor
        self._fuel_cache: dict[tuple[str, date], FuelFactors] = {}
        self.bookings = 0  # energy bookings so far: tells a caller whether a Sample moved a figure
        self.touched_from: int | None = None  # earliest interval booked since last reset
        self._correction: float | None = None  # the volume correction of the Sample applied
        # Every factor a meter needs must be in the library: say which one is missing now,
        # not at the first reading.
        today = date.today()
        for m in cfg.meters:
            try:
                if m.role is Role.FUEL:
                    self.fuel_factors(m, today)
                elif m.role in THERMAL_ROLES:
                    self.thermal_factor(m, today)
                elif m.role is Role.GRID_IMPORT and cfg.grid_factor is None:
                    try:
                        self.factors.grid(site.region, today)
                    except LookupError as exc:
                        raise LookupError(
                            f"{exc.args[0]}: set site.region to a region the factor library "
                            "covers, add a factor file with the grid factor of yours "
                            "(rules.factor_files), or name one with rules.grid_factor"
                        ) from None
            except (KeyError, LookupError, ValueError) as exc:
                raise ValueError(f"rules.meters ({m.device}): {exc.args[0]}") from None
        for r in cfg.refrigerants:
            try:
                factors.gwp(r.gas, cfg.gwp_set)
            except LookupError as exc:
                raise ValueError(f"rules.refrigerants ({r.id}): {exc.args[0]}") from None

    def counter_max(self, meter: MeterConfig) -> float | None:
        """Where the meter's counter rolls over: the config's, else what its edge reported."""
        if meter.counter_max is not None:
            return meter.counter_max
        return self.counter_max_reported.get((meter.device, meter.counter_quantity))

    def clear_caches(self) -> None:
        """Forget factors looked up so far (after the library changed)."""
        self._grid_cache.clear()
        self._fuel_cache.clear()

    def _day(self, start_ms: int) -> date:
        return to_datetime(start_ms, self.site.timezone).date()

    def fuel_factors(self, meter: MeterConfig, day: date) -> FuelFactors:
        """A fuel meter's calorific value, and its factor and GWP for each gas, on `day`."""
        key = (meter.device, day)
        found = self._fuel_cache.get(key)
        if found is not None:
            return found
        assert meter.fuel is not None
        lib, region = self.factors, self.site.region
        if meter.ncv is not None:
            ncv = lib[meter.ncv]
        else:
            ncv = lib.find(FactorKind.NET_CALORIFIC_VALUE, region, day, fuel=meter.fuel)
        if ncv.kind is not FactorKind.NET_CALORIFIC_VALUE or ncv.fuel != meter.fuel:
            raise ValueError(f"ncv {ncv.id!r} is not a net calorific value of {meter.fuel}")
        if ncv.fuel_unit != meter.unit:
            raise ValueError(
                f"the meter counts {meter.unit} but calorific value {ncv.id!r} is per "
                f"{ncv.fuel_unit}: give a calorific value per {meter.unit} (e.g. from the "
                f"supplier's bill) in a site factor file and name it in `ncv:`"
            )
        pinned = {lib[i].gases[0]: lib[i] for i in meter.emission_factors}
        gases: list[tuple[Factor, Factor]] = []
        for gas in FUEL_GASES:
            ef = pinned.get(gas) or lib.find(
                FactorKind.FUEL_EMISSION, region, day, fuel=meter.fuel, gas=gas
            )
            if ef.kind is not FactorKind.FUEL_EMISSION or ef.fuel != meter.fuel:
                raise ValueError(f"emission factor {ef.id!r} is not one of {meter.fuel}")
            gases.append((ef, lib.gwp(gas, self.cfg.gwp_set, self._origin(meter))))
        found = self._fuel_cache[key] = FuelFactors(ncv, tuple(gases))
        return found

    def _origin(self, meter: MeterConfig) -> GasOrigin:
        """Fossil, or non-fossil for a fuel whose CO2 the library marks biogenic."""
        assert meter.fuel is not None
        biogenic = any(
            f.biogenic
            for f in self.factors
            if f.kind is FactorKind.FUEL_EMISSION and f.fuel == meter.fuel
        )
        return GasOrigin.NON_FOSSIL if biogenic else GasOrigin.FOSSIL

    def thermal_factor(self, meter: MeterConfig, day: date) -> Factor:
        """The factor of a purchased heat, steam or cooling meter on `day`."""
        kind = _THERMAL_KIND[meter.role]
        if meter.factor is not None:
            f = self.factors[meter.factor]
            if f.kind is not kind:
                raise ValueError(f"factor {f.id!r} is a {f.kind}, not {kind}")
            return f
        return self.factors.find(kind, self.site.region, day)

    def grid_factor(self, start_ms: int) -> Factor:
        """The location-based grid factor for an interval (by the site's local date)."""
        if self.cfg.grid_factor is not None:
            return self.factors[self.cfg.grid_factor]
        found = self._grid_cache.get(start_ms)
        if found is None:
            if len(self._grid_cache) > 10_000:
                self._grid_cache.clear()
            day: date = to_datetime(start_ms, self.site.timezone).date()
            found = self._grid_cache[start_ms] = self.factors.grid(self.site.region, day)
        return found

    def apply(self, sample: Sample) -> bool:
        """Account for one Sample; False when it was already accounted for (a redelivery)."""
        meter = self.meters.get(sample.device)
        if meter is None or sample.site != self.site.id:
            return False
        q = meter.counter_quantity
        value = sample.values.get(q)
        if value is None:
            return False
        prev = self.ledger.meter_state(sample.site, sample.device, q)
        if prev is not None and sample.seq <= prev.seq:
            self.duplicates += 1
            return False
        self._correction = None
        if meter.volume_correction is not None:
            self._correction = self._volume_correction(sample, meter, prev)
        state = MeterState(sample.seq, sample.ts, value, correction=self._correction)
        if prev is None:
            self.ledger.set_meter_state(sample.site, sample.device, q, state)
            return True
        if sample.ts <= prev.ts:
            self._event(
                sample,
                "clock",
                f"ts {sample.ts} is not after the previous reading's "
                f"{prev.ts}; reading skipped, baseline kept",
            )
            self.ledger.set_meter_state(
                sample.site, sample.device, q, replace(prev, seq=sample.seq)
            )
            return True
        if meter.integrates_power:
            self._integrate(sample, meter, prev, value)
        else:
            self._step(sample, meter, prev, value)
        return True

    def _volume_correction(
        self, sample: Sample, meter: MeterConfig, prev: MeterState | None
    ) -> float | None:
        """Line volume to standard volume, from the temperature and pressure read with it."""
        vc = meter.volume_correction
        assert vc is not None
        t = sample.values.get(vc.temperature_quantity)
        p = sample.values.get(vc.pressure_quantity)
        if t is None or p is None:
            return prev.correction if prev is not None else None
        p_abs = p + vc.atmospheric_kpa if vc.pressure == "gauge" else p
        return (p_abs / vc.standard_pressure_kpa) * (
            (vc.standard_temperature_c + _KELVIN) / (t + _KELVIN)
        )

    def _integrate(self, sample: Sample, meter: MeterConfig, prev: MeterState, kw: float) -> None:
        """A meter without a counter: trapezoidal energy between two power readings, estimated.

        Negative power (the meter sees export) counts as none: this meter's role is a flow in one
        direction, and a separate meter with the export role counts the other.
        """
        kwh = (max(prev.value, 0.0) + max(kw, 0.0)) / 2 * (sample.ts - prev.ts) / 3_600_000
        if kwh > 0:
            self._count(sample, meter, prev.ts, sample.ts, kwh, integrated=True)
        self.ledger.set_meter_state(
            sample.site,
            sample.device,
            meter.counter_quantity,
            MeterState(sample.seq, sample.ts, kw),
        )

    def _step(self, sample: Sample, meter: MeterConfig, prev: MeterState, value: float) -> None:
        """Count the step from the baseline to this reading, or hold it as a spike."""
        q = meter.counter_quantity
        if prev.held_ts is not None and prev.held_value is not None:
            self._decide_held(sample, meter, prev, prev.held_ts, prev.held_value, value)
            return
        delta = counter_delta(prev.value, value, self.counter_max(meter))
        if delta.amount > 0 and self._too_fast(meter, delta.amount, prev.ts, sample.ts):
            # Hold the reading, keep the baseline: the next reading tells a glitch from a jump.
            self._event(
                sample,
                "spike",
                f"{prev.value:g} -> {value:g} in {(sample.ts - prev.ts) / 1000:g} s implies "
                f"{_kw(delta.amount, prev.ts, sample.ts):.1f} kW, above the meter's rating "
                f"{meter.max_power_kw:g} kW: held out of the totals until the next reading",
            )
            self.ledger.set_meter_state(
                sample.site,
                sample.device,
                q,
                MeterState(sample.seq, prev.ts, prev.value, sample.ts, value, self._correction),
            )
            return
        if delta.event is not None:
            self._event(sample, delta.event.value, delta.detail)
        if delta.amount > 0:
            self._count(sample, meter, prev.ts, sample.ts, delta.amount)
        self.ledger.set_meter_state(
            sample.site,
            sample.device,
            q,
            MeterState(sample.seq, sample.ts, value, correction=self._correction),
        )

    def _decide_held(  # noqa: PLR0917 - the held reading travels as two plain values
        self,
        sample: Sample,
        meter: MeterConfig,
        prev: MeterState,
        held_ts: int,
        held_value: float,
        value: float,
    ) -> None:
        """A reading was held as a spike; this one says whether it was a glitch or a jump."""
        q = meter.counter_quantity
        state = MeterState(sample.seq, sample.ts, value, correction=self._correction)
        from_base = counter_delta(prev.value, value, self.counter_max(meter))
        if from_base.event is None and not self._too_fast(
            meter, from_base.amount, prev.ts, sample.ts
        ):
            self._event(
                sample,
                "spike",
                f"the held reading {held_value:g} was a glitch: this reading {value:g} "
                f"continues from {prev.value:g}; {from_base.amount:g} counted from there, the "
                f"glitch not at all",
            )
            self._count(sample, meter, prev.ts, sample.ts, from_base.amount)
        else:
            jump = counter_delta(prev.value, held_value, None).amount
            from_held = counter_delta(held_value, value, self.counter_max(meter))
            if from_held.event is None and not self._too_fast(
                meter, from_held.amount, held_ts, sample.ts
            ):
                self._event(
                    sample,
                    "spike",
                    f"the counter jumped {prev.value:g} -> {held_value:g} and went on from "
                    f"there: the jump ({jump:g}) is held out of the totals for review; "
                    f"{from_held.amount:g} counted from the new baseline",
                )
                self._count(sample, meter, held_ts, sample.ts, from_held.amount)
            else:
                self._event(
                    sample,
                    "spike",
                    f"readings {prev.value:g} -> {held_value:g} -> {value:g} fit no "
                    f"plausible course: nothing counted between {prev.value:g} and {value:g}; "
                    f"new baseline {value:g}",
                )
        self.ledger.set_meter_state(sample.site, sample.device, q, state)

    def _too_fast(self, meter: MeterConfig, kwh: float, start: int, end: int) -> bool:
        return meter.max_power_kw is not None and _kw(kwh, start, end) > meter.max_power_kw

    def _count(
        self,
        sample: Sample,
        meter: MeterConfig,
        start: int,
        end: int,
        amount: float,
        *,
        integrated: bool = False,
    ) -> None:
        gap = end - start > meter.gap_s * 1000
        if gap:
            how = "integrated from the power at both ends" if integrated else "spread evenly"
            self._event(
                sample,
                "gap",
                f"no reading for {(end - start) / 1000:g} s (more than {meter.gap_s:g} s): "
                f"{amount:g} {meter.unit} {how} over the gap, flagged estimated",
            )
        if meter.volume_correction is not None:
            if self._correction is None:
                self._event(
                    sample,
                    "uncorrected",
                    f"no temperature and pressure read yet: {amount:g} m3 counted as if at "
                    f"standard conditions, flagged estimated",
                )
                gap = True
            else:
                amount *= self._correction
        self._book(meter, start, end, amount, estimated=gap or integrated)

    def _book(
        self, meter: MeterConfig, start: int, end: int, amount: float, *, estimated: bool
    ) -> None:
        self.bookings += 1
        site = self.site.id
        for bucket, share in split(start, end, amount, QUARTER_HOUR_MS):
            if self.touched_from is None or bucket < self.touched_from:
                self.touched_from = bucket
            self.ledger.add_meter_energy(
                site,
                meter.device,
                meter.role.value,
                bucket,
                share,
                estimated=estimated,
                unit=meter.unit,
            )
            for row in self.emission_rows(meter, bucket, share):
                self.ledger.add_emission(site, row)
            if meter.role is Role.GRID_IMPORT:
                factor = self.grid_factor(bucket)
                self.ledger.add_site_grid_import(
                    site, bucket, share, share * factor.kg_per_kwh, factor.id
                )

    def emission_rows(self, meter: MeterConfig, start_ms: int, amount: float) -> list[EmissionRow]:
        """The emissions of `amount` measured by `meter` in the interval at `start_ms`."""
        if meter.role is Role.GRID_IMPORT:
            f = self.grid_factor(start_ms)
            return [_energy_row(meter, start_ms, amount, f, "electricity")]
        if meter.role in THERMAL_ROLES:
            f = self.thermal_factor(meter, self._day(start_ms))
            return [_energy_row(meter, start_ms, amount, f, meter.role.value.split("_")[1])]
        if meter.role is not Role.FUEL:
            return []
        ff = self.fuel_factors(meter, self._day(start_ms))
        tj = amount * ff.ncv.mj_per_unit / 1e6
        rows = []
        for ef, gwp in ff.gases:
            kg = tj * ef.kg_per_tj
            rows.append(
                EmissionRow(
                    start_ms,
                    meter.device,
                    "biogenic" if ef.biogenic else "1",
                    "",
                    "stationary_combustion",
                    ef.gases[0],
                    kg,
                    kg * gwp.value,
                    f"{ff.ncv.id},{ef.id},{gwp.id}",
                )
            )
        return rows

    def manual_rows(self) -> dict[str, EmissionRow]:
        """The config's refrigerant top-ups as Scope 1 rows, by entry id.

        Each entry is one row on the first interval of its date in the site's time zone:
        kg added × the GWP of the refrigerant in the configured set.
        """
        zone = ZoneInfo(self.site.timezone)
        out: dict[str, EmissionRow] = {}
        for r in self.cfg.refrigerants:
            gwp = self.factors.gwp(r.gas, self.cfg.gwp_set)
            start = from_datetime(datetime.combine(r.date, time(0), tzinfo=zone))
            out[r.id] = EmissionRow(
                floor_ms(start, QUARTER_HOUR_MS),
                r.id,
                "1",
                "",
                "refrigerant",
                r.gas,
                r.kg,
                r.kg * gwp.value,
                gwp.id,
            )
        return out

    def sync_manual(self) -> list[str]:
        """Book the config's refrigerant top-ups (call inside a transaction).

        A new entry is booked, a changed one replaces its row, a removed one is taken out; each
        is an event. Returns the ids that changed.
        """
        site = self.site.id
        changes: list[str] = []
        wanted = self.manual_rows()
        have = {row.source: row for row in self.ledger.emissions(site, category="refrigerant")}
        for rid, row in wanted.items():
            old = have.get(rid)
            if old == row:
                continue
            self.ledger.delete_emissions(site, rid)
            self.ledger.add_emission(site, row)
            changes.append(rid)
            self.ledger.record_event(
                Event(
                    site,
                    rid,
                    row.start_ms,
                    0,
                    "manual",
                    f"refrigerant top-up {rid} {'changed' if old else 'booked'}: "
                    f"{row.gas_kg:g} kg {row.gas} x GWP {row.kgco2e / row.gas_kg:g} "
                    f"({row.factor_ids}) = {row.kgco2e:g} kgCO2e",
                )
            )
        for rid, old in have.items():
            if rid not in wanted:
                self.ledger.delete_emissions(site, rid)
                changes.append(rid)
                self.ledger.record_event(
                    Event(
                        site,
                        rid,
                        old.start_ms,
                        0,
                        "manual",
                        f"refrigerant top-up {rid} is no longer in the config: its "
                        f"{old.kgco2e:g} kgCO2e taken out",
                    )
                )
        return changes

    def _event(self, s: Sample, kind: str, detail: str) -> None:
        self.ledger.record_event(Event(s.site, s.device, s.ts, s.seq, kind, detail))

    def watermark(self, devices: Collection[str] | None = None) -> int | None:
        """Time up to which every accounted meter has reported (intervals before it are closed).

        `devices`: of these meters only (a data-centre zone's, say).
        """
        times = []
        for m in self.cfg.meters:
            if devices is not None and m.device not in devices:
                continue
            st = self.ledger.meter_state(self.site.id, m.device, m.counter_quantity)
            if st is not None:
                times.append(st.ts)
        return min(times) if times else None

    def derived_sample(self, iv: SiteInterval, seq: int) -> Sample:
        """The derived Sample for a closed site interval."""
        return Sample(
            site=self.site.id,
            device=DERIVED_DEVICE,
            seq=seq,
            ts=iv.start_ms,
            values={
                "grid_import_kwh": iv.grid_import_kwh,
                "scope2_location_kgco2e": iv.scope2_location_kgco2e,
            },
        )


def _energy_row(
    meter: MeterConfig, start_ms: int, kwh: float, f: Factor, category: str
) -> EmissionRow:
    """Scope 2 location-based: energy × factor; the gas is CO2 for a CO2-only factor."""
    gas = "CO2" if f.gases == ["CO2"] else "CO2e"
    kg = kwh * f.kg_per_kwh
    return EmissionRow(start_ms, meter.device, "2", "location", category, gas, kg, kg, f.id)
