"""Market-based Scope 2 and the hourly carbon-free-energy score.

The GHG Protocol's market-based method (Scope 2 Guidance, 2015) takes the emission rate of the
contractual instruments a site holds for the electricity it bought, in this order: energy
attribute certificates (GEC, I-REC, REC, GO...) and PPAs, then a supplier-specific factor, then
the residual mix (and, where no residual mix is published, the grid average, disclosed as such).

Allocation here is deterministic and final as soon as an hour is: hours are taken in time
order, and each hour's grid import is covered first by instruments of that very hour (a
granular certificate of the hour, a PPA's metered delivery in the hour), then by pools of volume
whose claim window holds the hour, the pool expiring first first (a certificate's volume, a
PPA's monthly volume, a PPA hour's surplus). A volume is used once: what it covers is taken off
it. Volume left when its window has passed is reported, never carried over. Replaying a year in
pieces gives the same hours as replaying it in one go, and a month's figure does not move when
a later month comes in.

The carbon-free-energy score counts only what is matched within the hour (EnergyTag): on-site
renewable consumed, PPA delivery in the hour and granular certificates of the hour; volume
claimed from annual pools counts for market-based Scope 2 and the renewable share but never
for CFE, so a sunny noon never offsets a dark night.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rules.factors import Factor
from telemetry.timeutil import from_datetime

HOUR_MS = 3_600_000
_Id = Annotated[str, Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")]
_FactorId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{2,80}$")]


class Scheme(StrEnum):
    """Energy attribute certificate schemes."""

    GEC = "GEC"  # China Green Electricity Certificate (绿证)
    I_REC = "I-REC"
    REC = "REC"  # North America
    GO = "GO"  # EU Guarantee of Origin
    TIGR = "TIGR"
    OTHER = "other"


class Certificate(BaseModel):
    """A bundle of certificates retired for the site (one line of a retirement statement)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The instrument's id in the report, unique among the site's certificates and PPAs.
    id: _Id
    # The scheme that issued it; for the record: every scheme is allocated alike.
    scheme: Scheme
    # The volume retired, in MWh: the grid import it can cover, each MWh used once.
    volume_mwh: Annotated[float, Field(gt=0)]
    technology: Annotated[str, Field(min_length=2)]  # solar, wind, hydro...
    # false: non-renewable generation; it still covers grid import at its emission rate, but
    # counts for neither the renewable share nor CFE.
    renewable: bool = True
    # The generator's emission rate as the certificate states it (0 for wind and solar).
    emission_rate_kgco2e_per_kwh: Annotated[float, Field(ge=0)] = 0.0
    # The year the energy was generated, as the certificate states it (within the period below).
    vintage: Annotated[int, Field(ge=2000, le=2100)]
    # The first day of the generation period; the fiscal year holding it is the default claim
    # window (covers_from, covers_to).
    generation_from: date
    # The last day of the generation period; checked against vintage, not used in allocation.
    generation_to: date
    # A granular (hourly) certificate: the hour its energy was generated, in UTC.
    hour: datetime | None = None
    # The consumption it is claimed against, in site dates (inclusive); by default the fiscal
    # year that holds the generation period's start.
    covers_from: date | None = None
    # The claim window's last day (inclusive); give both covers_from and covers_to, or neither.
    covers_to: date | None = None
    registry_ref: str = ""  # serial range or retirement id, for the auditor

    @model_validator(mode="after")
    def _dates(self) -> Certificate:
        if self.generation_to < self.generation_from:
            raise ValueError(f"certificate {self.id}: generation_to is before generation_from")
        if not self.generation_from.year <= self.vintage <= self.generation_to.year:
            raise ValueError(
                f"certificate {self.id}: vintage {self.vintage} is outside its generation period"
            )
        if self.hour is not None:
            if self.hour.tzinfo is None:
                raise ValueError(f"certificate {self.id}: `hour` needs a time zone (e.g. Z)")
            if self.hour.minute or self.hour.second or self.hour.microsecond:
                raise ValueError(f"certificate {self.id}: `hour` must be the start of an hour")
        if (self.covers_from is None) != (self.covers_to is None):
            raise ValueError(f"certificate {self.id}: give both covers_from and covers_to")
        if self.covers_from and self.covers_to and self.covers_to < self.covers_from:
            raise ValueError(f"certificate {self.id}: covers_to is before covers_from")
        return self


class PPA(BaseModel):
    """A power purchase agreement: its delivery metered per hour, or stated per month."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The instrument's id in the report, unique among the site's certificates and PPAs.
    id: _Id
    technology: Annotated[str, Field(min_length=2)]  # solar, wind, hydro...
    # false: non-renewable supply; it still covers grid import at its emission rate, but counts
    # for neither the renewable share nor CFE.
    renewable: bool = True
    # The contracted generation's emission rate, in kg CO2e per kWh (0 for wind and solar).
    emission_rate_kgco2e_per_kwh: Annotated[float, Field(ge=0)] = 0.0
    # hourly delivery from a meter with role ppa_delivery...
    meter: str | None = None
    # ...or the delivered volume per month ("2026-10": 120.5), from the seller's statements
    monthly_mwh: dict[Annotated[str, Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")], float] | None = (
        None
    )

    @model_validator(mode="after")
    def _one_source(self) -> PPA:
        if (self.meter is None) == (self.monthly_mwh is None):
            raise ValueError(f"ppa {self.id}: give either `meter` or `monthly_mwh`")
        for month, mwh in (self.monthly_mwh or {}).items():
            if mwh < 0:
                raise ValueError(f"ppa {self.id}: monthly_mwh[{month}] is negative")
        return self


class SupplierFactor(BaseModel):
    """The supplier-specific emission rate of the site's contract, for a period."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    factor: _FactorId  # a supplier_electricity factor (in a site factor file)
    # The first site date the rate applies to (inclusive).
    valid_from: date
    # The last site date it applies to (inclusive); unset: open-ended. Where periods overlap,
    # the first one listed applies.
    valid_to: date | None = None


class Instruments(BaseModel):
    """The site's contractual instruments for market-based Scope 2."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Energy attribute certificates retired for the site (GEC, I-REC, REC, GO...).
    certificates: list[Certificate] = Field(default_factory=list)
    # Power purchase agreements, their delivery metered per hour or stated per month.
    ppas: list[PPA] = Field(default_factory=list)
    # Supplier-specific rates by period, for grid import no certificate or PPA covers; on a day
    # none applies to: the residual mix (else the grid average, disclosed).
    supplier: list[SupplierFactor] = Field(default_factory=list)
    # Pin the residual mix by id; by default the library's for the site's region and date.
    residual_mix_factor: _FactorId | None = None

    @model_validator(mode="after")
    def _unique(self) -> Instruments:
        ids = [c.id for c in self.certificates] + [p.id for p in self.ppas]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"instrument id(s) {dup} used twice")
        return self


@dataclass(frozen=True, slots=True)
class HourFlow:
    """One UTC hour of the site's electricity."""

    start_ms: int
    load_kwh: float  # consumption on site
    grid_import_kwh: float
    onsite_renewable_kwh: float  # on-site renewable consumed (exports taken out)


@dataclass(slots=True)
class Pool:
    """Volume of one instrument that may cover consumption in [start_ms, end_ms)."""

    instrument: str
    kind: str  # certificate | ppa
    renewable: bool
    rate: float  # kg CO2e per kWh
    start_ms: int
    end_ms: int
    volume_kwh: float
    used_kwh: float = 0.0


@dataclass(slots=True)
class HourResult:
    """How one hour's grid import was covered, and its market-based emissions."""

    start_ms: int
    load_kwh: float
    grid_import_kwh: float
    onsite_renewable_kwh: float
    covered: dict[str, float] = field(default_factory=dict)  # instrument -> kWh
    contracted_renewable_kwh: float = 0.0  # covered by renewable instruments
    hourly_clean_kwh: float = 0.0  # delivered or generated within this hour (for CFE)
    residual_kwh: float = 0.0
    residual_factor: str = ""
    market_kgco2e: float = 0.0


@dataclass(frozen=True, slots=True)
class Allocation:
    """Every hour's result, and what each instrument's volume did."""

    hours: list[HourResult]
    pools: list[Pool]


def _local_ms(day: date, zone: ZoneInfo) -> int:
    return from_datetime(datetime.combine(day, time(0), tzinfo=zone))


def _fiscal_year(day: date, start_month: int) -> tuple[date, date]:
    """[first day, first day of the next) of the fiscal year holding `day`."""
    y = day.year if day.month >= start_month else day.year - 1
    return date(y, start_month, 1), date(y + 1, start_month, 1)


def pools(
    inst: Instruments,
    ppa_hourly: Mapping[str, Mapping[int, float]],
    timezone: str,
    fiscal_start_month: int,
) -> tuple[list[Pool], dict[int, list[Pool]]]:
    """Windowed pools, and single-hour pools by hour (granular certificates, PPA hours)."""
    zone = ZoneInfo(timezone)
    windowed: list[Pool] = []
    hourly: dict[int, list[Pool]] = {}

    def year_end(day: date) -> int:
        return _local_ms(_fiscal_year(day, fiscal_start_month)[1], zone)

    for c in inst.certificates:
        if c.covers_from is not None and c.covers_to is not None:
            start = _local_ms(c.covers_from, zone)
            end = _local_ms(c.covers_to + timedelta(days=1), zone)
        else:
            first, nxt = _fiscal_year(c.generation_from, fiscal_start_month)
            start, end = _local_ms(first, zone), _local_ms(nxt, zone)
        pool = Pool(
            c.id,
            "certificate",
            c.renewable,
            c.emission_rate_kgco2e_per_kwh,
            start,
            end,
            c.volume_mwh * 1000,
        )
        if c.hour is not None:
            h = from_datetime(c.hour)
            # unused in its hour, a granular certificate is still good for its claim window
            pool.start_ms, pool.end_ms = h, max(end, h + HOUR_MS)
            hourly.setdefault(h, []).append(pool)
        else:
            windowed.append(pool)
    for p in inst.ppas:
        if p.monthly_mwh is not None:
            # A month's delivery covers that month's consumption only: what the seller
            # delivered in October is not November's electricity. What is left is reported.
            for month, mwh in sorted(p.monthly_mwh.items()):
                first = date(int(month[:4]), int(month[5:]), 1)
                nxt = date(first.year + first.month // 12, first.month % 12 + 1, 1)
                windowed.append(
                    Pool(
                        f"{p.id}/{month}",
                        "ppa",
                        p.renewable,
                        p.emission_rate_kgco2e_per_kwh,
                        _local_ms(first, zone),
                        _local_ms(nxt, zone),
                        mwh * 1000,
                    )
                )
        else:
            for h, kwh in sorted(ppa_hourly.get(p.id, {}).items()):
                if kwh <= 0:
                    continue
                day = datetime.fromtimestamp(h / 1000, zone).date()
                hourly.setdefault(h, []).append(
                    Pool(
                        p.id,
                        "ppa",
                        p.renewable,
                        p.emission_rate_kgco2e_per_kwh,
                        h,
                        year_end(day),
                        kwh,
                    )
                )
    return windowed, hourly


def allocate(  # noqa: PLR0917 - the inputs of the hierarchy, each plain data
    hours: Sequence[HourFlow],
    inst: Instruments,
    ppa_hourly: Mapping[str, Mapping[int, float]],
    remainder_factor: Callable[[int], Factor],
    timezone: str,
    fiscal_start_month: int = 1,
) -> Allocation:
    """Cover each hour's grid import with instruments, then the remainder with a factor.

    `hours` must be in time order and start no later than the first claim window of interest
    (allocation is first come, first served). `remainder_factor(hour_ms)` is the supplier
    factor, residual mix or (disclosed) grid average that applies to the hour.
    """
    windowed, single = pools(inst, ppa_hourly, timezone, fiscal_start_month)
    windowed.sort(key=lambda p: (p.end_ms, p.start_ms, p.instrument))
    carried: list[Pool] = []  # hour pools with volume left, good until their window ends
    out: list[HourResult] = []
    for hf in hours:
        h = hf.start_ms
        res = HourResult(h, hf.load_kwh, hf.grid_import_kwh, hf.onsite_renewable_kwh)
        need = hf.grid_import_kwh
        own = sorted(single.get(h, ()), key=lambda p: (p.kind != "ppa", p.instrument))
        for pool in own:
            if pool.renewable:
                # clean supply within the hour, for CFE, whether or not the grid import needs it
                res.hourly_clean_kwh += pool.volume_kwh
            need = _take(pool, need, res)
            if pool.used_kwh < pool.volume_kwh:
                carried.append(pool)
        open_pools = [p for p in carried if p.start_ms < h < p.end_ms] + [
            p for p in windowed if p.start_ms <= h < p.end_ms
        ]
        open_pools.sort(key=lambda p: (p.end_ms, p.start_ms, p.instrument))
        for pool in open_pools:
            if need <= 0:
                break
            need = _take(pool, need, res)
        carried = [p for p in carried if p.used_kwh < p.volume_kwh and p.end_ms > h + HOUR_MS]
        if need > 0:
            factor = remainder_factor(h)
            res.residual_kwh = need
            res.residual_factor = factor.id
            res.market_kgco2e += need * factor.kg_per_kwh
        out.append(res)
    seen: dict[int, Pool] = {}
    for p in windowed + [p for ps in single.values() for p in ps]:
        seen[id(p)] = p
    return Allocation(out, list(seen.values()))


def _take(pool: Pool, need: float, res: HourResult) -> float:
    take = min(need, pool.volume_kwh - pool.used_kwh)
    if take <= 0:
        return need
    pool.used_kwh += take
    res.covered[pool.instrument] = res.covered.get(pool.instrument, 0.0) + take
    res.market_kgco2e += take * pool.rate
    if pool.renewable:
        res.contracted_renewable_kwh += take
    return need - take


@dataclass(frozen=True, slots=True)
class Cfe:
    """Hourly carbon-free-energy scores of a set of hours."""

    load_kwh: float
    matched_kwh: float  # Σ_h min(load_h, clean supply_h)
    energytag: float | None  # matched / load
    google: float | None  # with the grid's carbon-free share counted for the unmatched load
    grid_share_hours: int  # hours with load for which the grid's share was known
    load_hours: int


def cfe(hours: Sequence[HourResult], grid_cfe: Mapping[int, float] | None = None) -> Cfe:
    """EnergyTag matching, and Google-style where the grid's hourly carbon-free share is given.

    Google-style is given only when the grid's share is known for every hour with load:
    a score over some of the hours would not be the period's score.
    """
    load = matched = google = 0.0
    known = with_load = 0
    for hr in hours:
        if hr.load_kwh <= 0:
            continue
        with_load += 1
        m = min(hr.load_kwh, hr.onsite_renewable_kwh + hr.hourly_clean_kwh)
        load += hr.load_kwh
        matched += m
        share = None if grid_cfe is None else grid_cfe.get(hr.start_ms)
        if share is not None:
            known += 1
            google += m + share * (hr.load_kwh - m)
    return Cfe(
        load_kwh=load,
        matched_kwh=matched,
        energytag=matched / load if load > 0 else None,
        google=google / load if load > 0 and known == with_load else None,
        grid_share_hours=known,
        load_hours=with_load,
    )
