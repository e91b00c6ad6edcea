"""Live period figures: today, this month and this fiscal year, kept current cheaply.

A fiscal year of 15-minute intervals is too much to read from the ledger twice a second, so
figures are kept per site day: a day is read once and again only when a booking touches it
(late readings, a gap filled). The market-based allocation runs over the cached hours of the
fiscal year each time (allocation is first come, first served through the year, so a day's
market-based figure depends on the days before it). The figures are the same as a report of
the same period gives (rules/accounts.py); a test holds them to that.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from rules.accounts import Accounts, year_shares
from rules.config import BREAKDOWN_ROLES, Role
from rules.market import HourFlow, allocate, cfe, pools
from rules.periods import PeriodKind, period_of
from rules.targets import TargetStatus
from rules.targets import status as target_status


@dataclass
class DayTotals:
    """What one site day booked."""

    hours: list[HourFlow]
    ppa: dict[str, dict[int, float]]
    consumption_kwh: float
    scope1: float
    scope2_location: float  # electricity and thermal
    thermal: float  # purchased heat, steam, cooling (location = market: no instruments)
    # breakdown kWh (sub-meters, data-centre meters) by quarter-hour start and meter, for PUE
    breakdown: dict[int, dict[str, float]] = field(default_factory=dict)
    submetered_kwh: float = 0.0  # sub-meters and data-centre intakes (the breakdown)
    metered_kwh: float = 0.0  # the site's own meters (not the breakdown), for data quality
    estimated_kwh: float = 0.0  # of which spread over gaps or integrated from power


@dataclass(frozen=True)
class LiveFigures:
    """The figures `lingtan rules` publishes on the derived topic."""

    as_of_ms: int
    site_power_kw: float | None
    values: dict[str, float]  # quantity -> value, for the site's Sample
    pue_today: dict[str, float]  # zone -> PUE today
    target: TargetStatus | None
    consumption_today_kwh: float = 0.0
    submetered_today_kwh: float = 0.0
    estimated_share_today: float | None = None


class Live:
    """Keeps per-day totals of the current fiscal year and adds them up."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        self._days: dict[int, DayTotals] = {}  # day start -> totals

    def invalidate(self, from_ms: int) -> None:
        """Forget the days a booking at or after `from_ms` may have changed."""
        tz = self.accounts.site.timezone
        first = period_of(from_ms, PeriodKind.DAY, tz).start_ms
        for s in [s for s in self._days if s >= first]:
            del self._days[s]

    def _day(self, start_ms: int, end_ms: int) -> DayTotals:
        found = self._days.get(start_ms)
        if found is not None:
            return found
        acc = self.accounts
        hours, ppa = acc.hours(start_ms, end_ms)
        rows = acc.engine.ledger.emissions(acc.site.id, start_ms, end_ms)
        sub = metered = estimated = 0.0
        breakdown: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for device, role, iv, kwh, est, unit in acc.engine.ledger.meter_amounts(
            acc.site.id, start_ms, end_ms
        ):
            if unit != "kWh":
                continue
            if role in BREAKDOWN_ROLES:
                breakdown[iv][device] += kwh
            if role in (Role.SUBMETER, Role.DC_FACILITY):
                sub += kwh
            elif role not in BREAKDOWN_ROLES:
                metered, estimated = metered + kwh, estimated + est
        found = self._days[start_ms] = DayTotals(
            hours=hours,
            ppa=ppa,
            consumption_kwh=sum(h.load_kwh for h in hours),
            scope1=sum(r.kgco2e for r in rows if r.scope == "1"),
            scope2_location=sum(r.kgco2e for r in rows if r.scope == "2"),
            thermal=sum(r.kgco2e for r in rows if r.scope == "2" and r.category != "electricity"),
            breakdown={iv: dict(row) for iv, row in breakdown.items()},
            submetered_kwh=sub,
            metered_kwh=metered,
            estimated_kwh=estimated,
        )
        return found

    def figures(self, as_of_ms: int) -> LiveFigures:
        """Today, month and fiscal year to `as_of_ms` (the time every meter has reported to)."""
        acc = self.accounts
        tz, fsm = acc.site.timezone, acc.cfg.fiscal_year_start_month
        today = period_of(as_of_ms, PeriodKind.DAY, tz)
        month = period_of(as_of_ms, PeriodKind.MONTH, tz)
        fy = period_of(as_of_ms, PeriodKind.FISCAL_YEAR, tz, fsm)
        windowed, single = pools(acc.cfg.market, {}, tz, fsm)
        first = min(
            [fy.start_ms]
            + [p.start_ms for p in windowed if p.end_ms > fy.start_ms]
            + [p.start_ms for ps in single.values() for p in ps if p.end_ms > fy.start_ms]
        )
        for old in [s for s in self._days if s < first]:
            del self._days[old]
        days: list[tuple[int, DayTotals]] = []
        t = first
        while t < today.end_ms:
            p = period_of(t, PeriodKind.DAY, tz)
            days.append((p.start_ms, self._day(p.start_ms, p.end_ms)))
            t = p.end_ms
        hours = [h for _, dt in days for h in dt.hours]
        ppa: dict[str, dict[int, float]] = defaultdict(dict)
        for _, dt in days:
            for k, v in dt.ppa.items():
                ppa[k].update(v)
        alloc = allocate(hours, acc.cfg.market, ppa, acc.remainder_factor, tz, fsm)
        values: dict[str, float] = {}
        for name, period in (("today", today), ("month", month), ("fy", fy)):
            ds = [dt for s, dt in days if period.start_ms <= s < period.end_ms]
            hs = [h for h in alloc.hours if period.start_ms <= h.start_ms < period.end_ms]
            values[f"scope1_{name}_kgco2e"] = sum(x.scope1 for x in ds)
            values[f"scope2_location_{name}_kgco2e"] = sum(x.scope2_location for x in ds)
            values[f"scope2_market_{name}_kgco2e"] = sum(h.market_kgco2e for h in hs) + sum(
                x.thermal for x in ds
            )
            consumed = sum(x.consumption_kwh for x in ds)
            if consumed > 0:
                renewable = sum(h.onsite_renewable_kwh + h.contracted_renewable_kwh for h in hs)
                values[f"renewable_share_{name}_ratio"] = renewable / consumed
        todays = [h for h in alloc.hours if h.start_ms >= today.start_ms]
        day = self._days[today.start_ms]
        values["energy_today_kwh"] = day.consumption_kwh
        score = cfe(todays)
        if score.energytag is not None:
            values["cfe_today_ratio"] = score.energytag
        power = self._power()
        if power is not None:
            values["site_power_kw"] = power
        target = None
        if acc.cfg.target is not None and as_of_ms > fy.start_ms:
            t_cfg = acc.cfg.target
            actual = 0.0
            for scope, key in (
                ("scope1", "scope1_fy_kgco2e"),
                ("scope2_location", "scope2_location_fy_kgco2e"),
                ("scope2_market", "scope2_market_fy_kgco2e"),
            ):
                if scope in t_cfg.scopes:
                    actual += values[key]
            elapsed, covered = year_shares(acc.engine, fy, as_of_ms)
            target = target_status(
                t_cfg, int(fy.label[2:]), actual / 1000, elapsed, covered or elapsed
            )
            values |= {
                "target_allowed_fy_tco2e": target.allowed_tco2e,
                "target_budget_to_date_tco2e": target.budget_to_date_tco2e,
                "target_actual_to_date_tco2e": target.actual_to_date_tco2e,
                "target_forecast_fy_tco2e": target.forecast_tco2e,
                "target_on_track": 1.0 if target.on_track else 0.0,
            }
        # over the quarter hours both meters of a zone have reported past (Accounts.zone_energy)
        pue = {z: fac / it for z, (fac, it) in acc.zone_energy(day.breakdown).items() if it > 0}
        if day.metered_kwh > 0:
            values["estimated_share_today_ratio"] = day.estimated_kwh / day.metered_kwh
        return LiveFigures(
            as_of_ms,
            power,
            values,
            pue,
            target,
            consumption_today_kwh=day.consumption_kwh,
            submetered_today_kwh=day.submetered_kwh,
            estimated_share_today=day.estimated_kwh / day.metered_kwh if day.metered_kwh else None,
        )

    def _power(self) -> float | None:
        """Site consumption power now: each meter's latest average power, combined by role.

        A meter's energy is booked up to its own last reading, and meters report at their own
        pace, so each meter's power is its energy in the interval holding its last reading over
        the time that interval has run up to that reading (the whole previous interval when the
        reading is on a boundary). Dividing the site's energy by the time to the slowest meter's
        reading instead would inflate the power while one meter lags.
        """
        acc = self.accounts
        q = 15 * 60_000
        sign = {
            Role.GRID_IMPORT: 1.0,
            Role.GENERATION: 1.0,
            Role.BATTERY_DISCHARGE: 1.0,
            Role.GRID_EXPORT: -1.0,
            Role.BATTERY_CHARGE: -1.0,
        }
        buckets: dict[int, dict[str, float]] = {}
        total, seen = 0.0, False
        for m in acc.cfg.meters:
            if m.role not in sign:
                continue
            st = acc.engine.ledger.meter_state(acc.site.id, m.device, m.counter_quantity)
            if st is None:
                continue
            last = st.ts
            start = last - last % q
            if start == last:
                start -= q
            if start not in buckets:
                got: dict[str, float] = {}
                for device, _, _, kwh in acc.engine.ledger.meter_energy(
                    acc.site.id, start, start + 1
                ):
                    got[device] = got.get(device, 0.0) + kwh
                buckets[start] = got
            seen = True
            total += sign[m.role] * buckets[start].get(m.device, 0.0) * 3_600_000 / (last - start)
        return max(0.0, total) if seen else None
