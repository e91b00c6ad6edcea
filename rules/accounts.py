"""A period's accounts from the ledger: energy, Scope 1, Scope 2 both ways, renewables, CFE, PUE.

Everything here is computed from what the engine booked (rules/engine.py) and the site's
config: the same ledger and config always give the same figures, whichever way the readings
came in. Per 15-minute interval: consumption = grid import + generation + battery discharge -
grid export - battery charge; exported electricity is taken from renewable generation first,
so on-site renewable consumed = max(0, renewable generation - export), at most the interval's
consumption. Hours are then the unit of the market-based allocation and of CFE
(rules/market.py); days, months and fiscal years are in the site's time zone (rules/periods.py).
"""

from __future__ import annotations

import csv
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from rules.config import BREAKDOWN_ROLES, Role, RulesConfig
from rules.engine import Engine
from rules.factors import Factor, FactorKind, FactorLibrary
from rules.ledger import EmissionRow, Ledger
from rules.market import HOUR_MS, Allocation, HourFlow, allocate, cfe, pools
from rules.periods import Period, PeriodKind, periods_between
from rules.targets import status as target_status
from telemetry.config import SiteInfo
from telemetry.timeutil import QUARTER_HOUR_MS, floor_ms, from_datetime, to_datetime


class GridCfeError(ValueError):
    """A grid carbon-free-share file that cannot be used; names the file and line."""


def read_grid_cfe(path: Path) -> dict[int, float]:
    """Hourly carbon-free share of the grid: CSV `hour_start_utc,carbon_free_share`.

    Lines starting with # are comments (the first should name the data's source).
    """
    out: dict[int, float] = {}
    with path.open(newline="", encoding="utf-8") as f:
        rows = csv.reader(line for line in f if not line.lstrip().startswith("#"))
        header = next(rows, None)
        if header != ["hour_start_utc", "carbon_free_share"]:
            raise GridCfeError(f"{path}: the header must be hour_start_utc,carbon_free_share")
        for n, row in enumerate(rows, start=2):
            try:
                hour = datetime.fromisoformat(row[0].replace("Z", "+00:00"))
                share = float(row[1])
            except (ValueError, IndexError):
                raise GridCfeError(f"{path}: row {n}: {row!r} is not an hour and a share") from None
            if hour.tzinfo is None:
                raise GridCfeError(f"{path}: row {n}: {row[0]!r} has no time zone (add Z)")
            if not 0 <= share <= 1:
                raise GridCfeError(f"{path}: row {n}: share {share} is not between 0 and 1")
            ms = from_datetime(hour)
            if ms % HOUR_MS:
                raise GridCfeError(f"{path}: row {n}: {row[0]} is not the start of an hour")
            out[ms] = share
    return out


@dataclass
class _Interval:
    """Flows of one 15-minute interval, kWh."""

    by_role: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def consumption(self) -> tuple[float, float]:
        """(consumption, on-site renewable consumed)."""
        r = self.by_role
        inflow = (
            r[Role.GRID_IMPORT] + r["renewable"] + r["other_generation"] + r[Role.BATTERY_DISCHARGE]
        )
        used = max(0.0, inflow - r[Role.GRID_EXPORT] - r[Role.BATTERY_CHARGE])
        renewable = min(used, max(0.0, r["renewable"] - r[Role.GRID_EXPORT]))
        return used, renewable


def _r(x: float) -> float:
    return round(x, 6)


class Accounts:
    """Period figures of one site's ledger."""

    def __init__(self, engine: Engine, grid_cfe: dict[int, float] | None = None) -> None:
        self.engine = engine
        self.site = engine.site
        self.cfg = engine.cfg
        self.grid_cfe = grid_cfe
        self.residual_note = ""
        # each data-centre zone: its (0 facility | 1 IT, terms) parts and the meters behind them
        parts: dict[str, list[tuple[int, list[tuple[int, str]]]]] = defaultdict(list)
        for m in self.cfg.meters:
            if m.zone is not None:
                parts[m.zone].append((1 if m.role is Role.IT_LOAD else 0, [(1, m.device)]))
        for v in self.cfg.virtual_meters:  # a zone's IT or intake given by a formula
            if v.zone is not None:
                parts[v.zone].append((1 if v.role == "it_load" else 0, v.terms))
        self._zones = {
            z: (ps, frozenset(dev for _, terms in ps for _, dev in terms))
            for z, ps in parts.items()
        }
        # the market-based remainder's factors, checked now rather than at the first hour
        lib, market = engine.factors, self.cfg.market
        named = [
            (f"rules.market.supplier[{i}]", s.factor, FactorKind.SUPPLIER_ELECTRICITY)
            for i, s in enumerate(market.supplier)
        ]
        if market.residual_mix_factor is not None:
            named.append(
                (
                    "rules.market.residual_mix_factor",
                    market.residual_mix_factor,
                    FactorKind.RESIDUAL_MIX,
                )
            )
        for where, fid, kind in named:
            if fid not in lib:
                raise ValueError(f"{where}: no factor {fid!r} in the library")
            if lib[fid].kind is not kind:
                raise ValueError(
                    f"{where}: factor {fid!r} is a {lib[fid].kind.value} factor, not {kind.value}"
                )
        self._remainder: dict[date, Factor] = {}
        self._in_report = False
        self._read: tuple[tuple[int, int], list[tuple[str, str, int, float, float, str]]] | None = (
            None
        )

    # -- the market-based remainder ---------------------------------------------------------

    def remainder_factor(self, hour_ms: int) -> Factor:
        """Supplier-specific factor, else the residual mix, else the grid average (disclosed)."""
        day: date = to_datetime(hour_ms, self.site.timezone).date()
        found = self._remainder.get(day)
        if found is None:
            if len(self._remainder) > 1000:
                self._remainder.clear()
            found = self._remainder[day] = self._remainder_on(day, hour_ms)
        return found

    def _remainder_on(self, day: date, hour_ms: int) -> Factor:
        lib = self.engine.factors
        for s in self.cfg.market.supplier:
            if s.valid_from <= day and (s.valid_to is None or day <= s.valid_to):
                return lib[s.factor]
        if self.cfg.market.residual_mix_factor is not None:
            return lib[self.cfg.market.residual_mix_factor]
        try:
            return lib.find(FactorKind.RESIDUAL_MIX, self.site.region, day)
        except LookupError:
            self.residual_note = (
                f"no residual mix for region {self.site.region}: the remainder is at the "
                f"location-based grid factor, as the GHG Protocol allows with disclosure"
            )
            return self.engine.grid_factor(floor_ms(hour_ms, 15 * 60_000))

    # -- reading the ledger -------------------------------------------------------------------

    def _amounts(self, start_ms: int, end_ms: int) -> list[tuple[str, str, int, float, float, str]]:
        """The ledger's meter rows of a range, read once per report (`period`)."""
        key = (start_ms, end_ms)
        if not self._in_report:
            return self.engine.ledger.meter_amounts(self.site.id, start_ms, end_ms)
        if self._read is None or self._read[0] != key:
            self._read = (key, self.engine.ledger.meter_amounts(self.site.id, start_ms, end_ms))
        return self._read[1]

    def _energy(self, start_ms: int, end_ms: int) -> list[tuple[str, str, int, float]]:
        """(device, role, start, kWh) of the electricity and heat meters in a range."""
        return [(d, r, t, a) for d, r, t, a, _, u in self._amounts(start_ms, end_ms) if u == "kWh"]

    def intervals(self, start_ms: int, end_ms: int) -> dict[int, _Interval]:
        """Electricity flows by role per 15-minute interval."""
        out: dict[int, _Interval] = defaultdict(_Interval)
        meters = self.engine.meters
        for device, role, start, kwh in self._energy(start_ms, end_ms):
            key = role
            m = meters.get(device)
            if role == Role.GENERATION and m is not None:
                key = "renewable" if m.renewable else "other_generation"
            out[start].by_role[key] += kwh
        return out

    def hours(
        self, start_ms: int, end_ms: int
    ) -> tuple[list[HourFlow], dict[str, dict[int, float]]]:
        """Hourly flows in [start_ms, end_ms), and each metered PPA's delivery per hour."""
        acc: dict[int, list[float]] = {}
        for start, iv in sorted(self.intervals(start_ms, end_ms).items()):
            used, ren = iv.consumption()
            h = acc.setdefault(floor_ms(start, HOUR_MS), [0.0, 0.0, 0.0])
            h[0] += used
            h[1] += iv.by_role[Role.GRID_IMPORT]
            h[2] += ren
        ppa_meter = {p.meter: p.id for p in self.cfg.market.ppas if p.meter is not None}
        ppa: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
        if ppa_meter:
            for device, role, start, kwh in self._energy(start_ms, end_ms):
                if role == Role.PPA_DELIVERY and device in ppa_meter:
                    ppa[ppa_meter[device]][floor_ms(start, HOUR_MS)] += kwh
        flows = [HourFlow(h, v[0], v[1], v[2]) for h, v in sorted(acc.items())]
        return flows, {k: dict(v) for k, v in ppa.items()}

    def allocation(self, start_ms: int, end_ms: int) -> Allocation:
        """The market-based allocation of every hour up to `end_ms`, from the earliest open claim.

        First come, first served: an hour's result depends on the hours before it in the claim
        windows, so allocation starts at the earliest window still open at `start_ms`.
        """
        fsm = self.cfg.fiscal_year_start_month
        _, ppa_probe = self.hours(start_ms, end_ms)
        windowed, single = pools(self.cfg.market, ppa_probe, self.site.timezone, fsm)
        first = min(
            [start_ms]
            + [p.start_ms for p in windowed if p.end_ms > start_ms]
            + [p.start_ms for ps in single.values() for p in ps if p.end_ms > start_ms]
        )
        flows, ppa = self.hours(first, end_ms)
        return allocate(flows, self.cfg.market, ppa, self.remainder_factor, self.site.timezone, fsm)

    # -- the period --------------------------------------------------------------------------

    def period(self, start_ms: int = 0, end_ms: int = 2**62) -> dict[str, Any]:
        """Every figure of [start_ms, end_ms) (intervals starting in it)."""
        self._in_report, self._read = True, None
        try:
            return self._period(start_ms, end_ms)
        finally:
            self._in_report, self._read = False, None

    def _period(self, start_ms: int, end_ms: int) -> dict[str, Any]:
        site, ledger = self.site.id, self.engine.ledger
        alloc = self.allocation(start_ms, end_ms)
        hours = [h for h in alloc.hours if start_ms <= h.start_ms < end_ms]
        rows = ledger.emissions(site, start_ms, end_ms)
        flows = self.intervals(start_ms, end_ms)
        consumption = sum(iv.consumption()[0] for iv in flows.values())
        onsite = sum(iv.consumption()[1] for iv in flows.values())
        contracted = sum(h.contracted_renewable_kwh for h in hours)
        scope1 = _by_gas(r for r in rows if r.scope == "1")
        s2_loc = [r for r in rows if r.scope == "2" and r.method == "location"]
        thermal = sum(r.kgco2e for r in s2_loc if r.category != "electricity")
        s2_market = sum(h.market_kgco2e for h in hours) + thermal
        score = cfe(hours, self.grid_cfe)
        used_factors = sorted(
            {i for r in rows for part in r.factor_ids.split(";") for i in part.split(",")}
            | {h.residual_factor for h in hours if h.residual_factor}
        )
        lib = self.engine.factors
        span = [iv for iv in ledger.site_intervals(site, start_ms, end_ms)]
        times = sorted(flows)
        return {
            "site": site,
            "from_ms": times[0] if times else (span[0].start_ms if span else None),
            "to_ms": times[-1] + 15 * 60_000 if times else None,
            "energy_kwh": {
                role: {"total": _r(kwh), "estimated": _r(est)}
                for role, (kwh, est) in ledger.energy_by_role(site, start_ms, end_ms).items()
            },
            "fuels": self._fuels(start_ms, end_ms),
            "consumption_kwh": _r(consumption),
            "grid_import_kwh": _r(sum(iv.by_role[Role.GRID_IMPORT] for iv in flows.values())),
            "renewable_onsite_kwh": _r(onsite),
            "renewable_contracted_kwh": _r(contracted),
            "renewable_share": _r((onsite + contracted) / consumption) if consumption else None,
            "cfe": {
                "energytag": None if score.energytag is None else _r(score.energytag),
                "google": None if score.google is None else _r(score.google),
                "matched_kwh": _r(score.matched_kwh),
                "grid_share_hours": score.grid_share_hours,
                "load_hours": score.load_hours,
            },
            "scope1_kgco2e": _r(sum(scope1.values())),
            "scope1_by_gas_kgco2e": {g: _r(v) for g, v in sorted(scope1.items())},
            "scope1_by_category_kgco2e": _by_key(rows, "1", lambda r: r.category),
            "scope1_by_category_and_gas_kgco2e": _by_key(
                rows, "1", lambda r: f"{r.category}/{r.gas}"
            ),
            "biogenic_co2_kg": _r(sum(r.gas_kg for r in rows if r.scope == "biogenic")),
            "scope2_location_kgco2e": _r(sum(r.kgco2e for r in s2_loc)),
            "scope2_location_by_category_kgco2e": _by_key(s2_loc, "2", lambda r: r.category),
            "scope2_market_kgco2e": _r(s2_market),
            "market": self._market(alloc, hours, start_ms, end_ms),
            **self._breakdown(flows, consumption),
            "by_period": self._series(start_ms, end_ms, flows, hours, rows),
            "target": self._target(end_ms),
            "factors": [_factor(lib[i]) for i in used_factors if i in lib],
            "data_quality": self._quality(start_ms, end_ms),
            "events": [
                {"device": e.device, "ts": e.ts, "seq": e.seq, "kind": e.kind, "detail": e.detail}
                for e in ledger.events(site)
                if start_ms <= e.ts < end_ms
            ],
        }

    def _fuels(self, start_ms: int, end_ms: int) -> dict[str, Any]:
        out: dict[str, dict[str, Any]] = {}
        for device, role, _, amount, est, unit in self._amounts(start_ms, end_ms):
            if role != Role.FUEL:
                continue
            m = self.engine.meters.get(device)
            e = out.setdefault(
                device,
                {"fuel": m.fuel if m else None, "unit": unit, "amount": 0.0, "estimated": 0.0},
            )
            e["amount"] += amount
            e["estimated"] += est
        for e in out.values():
            e["amount"], e["estimated"] = _r(e["amount"]), _r(e["estimated"])
        return out

    def _market(
        self, alloc: Allocation, hours: list[Any], start_ms: int, end_ms: int
    ) -> dict[str, Any]:
        used_in: Counter[str] = Counter()
        for h in hours:
            used_in.update(h.covered)
        residual = sum(h.residual_kwh for h in hours)
        # a metered PPA has a pool per hour it delivered: one line per instrument
        instruments: dict[str, dict[str, Any]] = {}
        for p in alloc.pools:
            if p.start_ms >= end_ms or p.end_ms <= start_ms:
                continue
            v = instruments.setdefault(
                p.instrument.split("/")[0] if p.kind == "ppa" else p.instrument,
                {
                    "kind": p.kind,
                    "renewable": p.renewable,
                    "volume": 0.0,
                    "used": 0.0,
                    "expired": 0.0,
                },
            )
            v["volume"] += p.volume_kwh
            v["used"] += p.used_kwh
            if p.end_ms <= end_ms:
                v["expired"] += p.volume_kwh - p.used_kwh
        for k in list(used_in):
            if "/" in k:  # a monthly PPA volume counts for its PPA
                used_in[k.split("/")[0]] += used_in.pop(k)
        return {
            "residual_kwh": _r(residual),
            "residual_factors": sorted({h.residual_factor for h in hours if h.residual_factor}),
            "note": self.residual_note,
            "instruments": [
                {
                    "id": iid,
                    "kind": v["kind"],
                    "renewable": v["renewable"],
                    "volume_kwh": _r(v["volume"]),
                    "used_in_period_kwh": _r(used_in[iid]),
                    "used_to_date_kwh": _r(v["used"]),
                    "left_kwh": _r(v["volume"] - v["used"]),
                    # left when its claim window has passed: reported, never carried on
                    "expired_kwh": _r(v["expired"]),
                }
                for iid, v in sorted(instruments.items())
            ],
        }

    def _breakdown(self, flows: dict[int, _Interval], consumption: float) -> dict[str, Any]:
        """Sub-meters by meter, area and line; virtual meters; the unmetered rest; PUE."""
        per_meter: dict[str, float] = defaultdict(float)
        per_iv: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        meters = self.engine.meters
        for device, role, start, kwh in self._energy(
            min(flows, default=0),
            max(flows, default=-1) + 1,
        ):
            if role in BREAKDOWN_ROLES:
                per_meter[device] += kwh
                per_iv[start][device] += kwh
        for v in self.cfg.virtual_meters:
            per_meter[v.id] = sum(
                sign * row.get(dev, 0.0) for row in per_iv.values() for sign, dev in v.terms
            )
        # a data-centre zone's intake is a sub-meter of the site; its IT load is inside it
        submetered = sum(
            kwh
            for d, kwh in per_meter.items()
            if d in meters and meters[d].role in (Role.SUBMETER, Role.DC_FACILITY)
        )
        it_load = sum(
            kwh for d, kwh in per_meter.items() if d in meters and meters[d].role is Role.IT_LOAD
        )
        where: dict[str, tuple[str, str | None, str | None, str | None]] = {
            m.device: (m.role.value, m.area, m.line, m.zone)
            for m in self.cfg.meters
            if m.role in BREAKDOWN_ROLES
        }
        where.update({v.id: (v.role, v.area, v.line, v.zone) for v in self.cfg.virtual_meters})
        by_area: dict[str, float] = defaultdict(float)
        by_line: dict[str, float] = defaultdict(float)
        for d, kwh in per_meter.items():
            role, area, line, _ = where[d]
            if role == Role.SUBMETER:
                if area:
                    by_area[area] += kwh
                if line:
                    by_line[line] += kwh
        zones = self.zone_energy(per_iv)
        return {
            "submetered_kwh": _r(submetered),
            "unmetered_kwh": _r(consumption - submetered),
            "it_load_kwh": _r(it_load),
            "breakdown_kwh": {
                "by_meter": {d: _r(k) for d, k in sorted(per_meter.items())},
                "by_area": {a: _r(k) for a, k in sorted(by_area.items())},
                "by_line": {a: _r(k) for a, k in sorted(by_line.items())},
            },
            # PUE over the period: the zone's total intake over its IT energy, same intervals
            "pue": {
                zone: round(fac / it, 4) if it > 0 else None
                for zone, (fac, it) in sorted(zones.items())
            },
        }

    def zone_energy(self, per_iv: dict[int, dict[str, float]]) -> dict[str, tuple[float, float]]:
        """(facility, IT) kWh of each data-centre zone from breakdown kWh per interval and meter.

        Only the quarter hours every meter of the zone has reported past count. Each meter is
        booked up to its own last reading, so over a period still running a ratio of two meters
        over their own spans is skewed by the one that read last (just after midnight, one
        poll's worth of intake without its IT load read 1.50 or 0.92 for a zone at 1.32). A
        finished period has every meter's whole span.
        """
        booked = {dev for row in per_iv.values() for dev in row}
        out: dict[str, tuple[float, float]] = {}
        for zone, (parts, devices) in self._zones.items():
            mark = self.engine.watermark(devices)
            if mark is None or not devices & booked:
                continue
            cut = floor_ms(mark, QUARTER_HOUR_MS)
            kwh = [0.0, 0.0]
            for start, row in per_iv.items():
                if start < cut:
                    for i, terms in parts:
                        kwh[i] += sum(sign * row.get(dev, 0.0) for sign, dev in terms)
            out[zone] = (kwh[0], kwh[1])
        return out

    def _series(
        self,
        start_ms: int,
        end_ms: int,
        flows: dict[int, _Interval],
        hours: list[Any],
        rows: list[EmissionRow],
    ) -> dict[str, list[dict[str, Any]]]:
        """Day, month and fiscal-year figures of the period (site time)."""
        if not flows and not rows:
            return {}
        times = sorted(set(flows) | {r.start_ms for r in rows})
        lo, hi = max(start_ms, times[0]), min(end_ms, times[-1] + 1)
        # everything in time order once, each period a slice of it
        ivs = sorted((t, *iv.consumption()) for t, iv in flows.items())
        iv_t = [x[0] for x in ivs]
        hs_all = sorted(hours, key=lambda h: h.start_ms)
        h_t = [h.start_ms for h in hs_all]
        rows_all = sorted(rows, key=lambda r: r.start_ms)
        r_t = [r.start_ms for r in rows_all]

        def cut(ts: list[int], a: int, b: int) -> slice:
            return slice(bisect_left(ts, a), bisect_left(ts, b))

        out: dict[str, list[dict[str, Any]]] = {}
        for kind in (PeriodKind.DAY, PeriodKind.MONTH, PeriodKind.FISCAL_YEAR):
            items = []
            for p in periods_between(
                lo, hi, kind, self.site.timezone, self.cfg.fiscal_year_start_month
            ):
                part = ivs[cut(iv_t, p.start_ms, p.end_ms)]
                cons = sum(x[1] for x in part)
                ons = sum(x[2] for x in part)
                hs = hs_all[cut(h_t, p.start_ms, p.end_ms)]
                contracted = sum(h.contracted_renewable_kwh for h in hs)
                prow = rows_all[cut(r_t, p.start_ms, p.end_ms)]
                thermal = sum(
                    r.kgco2e for r in prow if r.scope == "2" and r.category != "electricity"
                )
                score = cfe(hs, self.grid_cfe)
                items.append(
                    {
                        "period": p.label,
                        "consumption_kwh": _r(cons),
                        "renewable_share": _r((ons + contracted) / cons) if cons else None,
                        "cfe_energytag": None if score.energytag is None else _r(score.energytag),
                        "scope1_kgco2e": _r(sum(r.kgco2e for r in prow if r.scope == "1")),
                        "scope2_location_kgco2e": _r(sum(r.kgco2e for r in prow if r.scope == "2")),
                        "scope2_market_kgco2e": _r(sum(h.market_kgco2e for h in hs) + thermal),
                    }
                )
            out[kind.value] = items
        return out

    def _target(self, end_ms: int) -> dict[str, Any] | None:
        t = self.cfg.target
        if t is None:
            return None
        from rules.periods import period_of

        last = min(end_ms, max(self._last_ms(), 0))
        fy = period_of(
            max(last - 1, 0),
            PeriodKind.FISCAL_YEAR,
            self.site.timezone,
            self.cfg.fiscal_year_start_month,
        )
        rows = self.engine.ledger.emissions(self.site.id, fy.start_ms, last)
        actual = 0.0
        if "scope1" in t.scopes:
            actual += sum(r.kgco2e for r in rows if r.scope == "1")
        if "scope2_location" in t.scopes:
            actual += sum(r.kgco2e for r in rows if r.scope == "2")
        if "scope2_market" in t.scopes:
            alloc = self.allocation(fy.start_ms, last)
            actual += sum(h.market_kgco2e for h in alloc.hours if h.start_ms >= fy.start_ms)
            actual += sum(r.kgco2e for r in rows if r.scope == "2" and r.category != "electricity")
        elapsed, covered = year_shares(self.engine, fy, last)
        if elapsed <= 0 or covered <= 0:
            return None
        st = target_status(t, int(fy.label[2:]), actual / 1000, elapsed, covered)
        return {
            "fiscal_year": fy.label,
            "covered_share": _r(covered),  # of the year, what the forecast is made from
            "allowed_tco2e": _r(st.allowed_tco2e),
            "budget_to_date_tco2e": _r(st.budget_to_date_tco2e),
            "actual_to_date_tco2e": _r(st.actual_to_date_tco2e),
            "forecast_tco2e": _r(st.forecast_tco2e),
            "on_track": st.on_track,
        }

    def _last_ms(self) -> int:
        mark = self.engine.watermark()
        return mark if mark is not None else 0

    def _quality(self, start_ms: int, end_ms: int) -> dict[str, Any]:
        counts = Counter(
            e.kind for e in self.engine.ledger.events(self.site.id) if start_ms <= e.ts < end_ms
        )
        total = est = 0.0
        for _, role, _, amount, e, unit in self._amounts(start_ms, end_ms):
            if unit == "kWh" and role not in BREAKDOWN_ROLES:
                total, est = total + amount, est + e
        return {
            "events": dict(sorted(counts.items())),
            "estimated_kwh": _r(est),
            "estimated_share": _r(est / total) if total else None,
        }


def _by_gas(rows: Iterable[EmissionRow]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for r in rows:
        out[r.gas] += r.kgco2e
    return out


def _by_key(rows: Iterable[EmissionRow], scope: str, key: Any) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for r in rows:
        if r.scope == scope:
            out[key(r)] += r.kgco2e
    return {k: _r(v) for k, v in sorted(out.items())}


def _factor(f: Factor) -> dict[str, Any]:
    return {
        "id": f.id,
        "kind": f.kind.value,
        "value": f.value,
        "unit": f.unit,
        "region": f.region,
        "year": f.year,
        "source": f.source,
        "published": f.published.isoformat(),
        "verification": f.verification,
    }


def year_shares(engine: Engine, fy: Period, as_of_ms: int) -> tuple[float, float]:
    """(elapsed, covered): the shares of the fiscal year gone by `as_of_ms`, and covered by data
    (from the year's first booked interval on)."""
    length = fy.end_ms - fy.start_ms
    first = engine.ledger.first_interval_ms(engine.site.id, fy.start_ms, fy.end_ms)
    since = fy.start_ms if first is None else first
    as_of = min(as_of_ms, fy.end_ms)
    return (as_of - fy.start_ms) / length, max(0.0, (as_of - since) / length)


def _resolve(path: Path, base_dir: Path | None) -> Path:
    return path if path.is_absolute() or base_dir is None else base_dir / path


def open_accounts(
    site: SiteInfo, cfg: RulesConfig, ledger: Ledger, base_dir: Path | None = None
) -> Accounts:
    """An engine on `ledger` with the site's factor files, and its accounts.

    Relative paths in the config (factor files, the grid's carbon-free share) are read from
    `base_dir`, the config file's folder. The config's refrigerant top-ups are booked.
    """
    factors = FactorLibrary.load([_resolve(p, base_dir) for p in cfg.factor_files])
    engine = Engine(site, cfg, ledger, factors)
    grid_cfe = None
    if cfg.grid_cfe_file is not None:
        grid_cfe = read_grid_cfe(_resolve(cfg.grid_cfe_file, base_dir))
    with ledger.transaction():
        engine.sync_manual()
    return Accounts(engine, grid_cfe)
