"""Reporting periods: hours in UTC; days, months and fiscal years in the site's time zone.

A local day is not always 24 hours (23 or 25 on a DST change day), and a period's bounds are
computed from local midnights converted to UTC, never by adding hours. Every period is a
half-open range [start_ms, end_ms) of epoch milliseconds, so periods of one kind tile time
without gaps or overlaps.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from enum import StrEnum
from zoneinfo import ZoneInfo

from telemetry.timeutil import floor_ms, from_datetime, to_datetime

HOUR_MS = 3_600_000


class PeriodKind(StrEnum):
    """The kinds of period reports and live figures use."""

    HOUR = "hour"  # UTC
    DAY = "day"  # site time
    MONTH = "month"  # site time
    FISCAL_YEAR = "fiscal_year"  # site time, from the configured start month


@dataclass(frozen=True, slots=True)
class Period:
    """One period: its kind, its label and its bounds [start_ms, end_ms)."""

    kind: PeriodKind
    label: str
    start_ms: int
    end_ms: int

    def __contains__(self, ts_ms: object) -> bool:
        return isinstance(ts_ms, int) and self.start_ms <= ts_ms < self.end_ms


def _midnight_ms(day: date, zone: ZoneInfo) -> int:
    # zoneinfo resolves a local time; midnight exists in every zone lingtan supports (a zone
    # whose DST change skips midnight would map it to the first instant after the gap)
    return from_datetime(datetime.combine(day, time(0), tzinfo=zone))


def _add_months(day: date, months: int) -> date:
    m = day.month - 1 + months
    return date(day.year + m // 12, m % 12 + 1, 1)


def period_of(
    ts_ms: int, kind: PeriodKind, timezone: str = "UTC", fiscal_start_month: int = 1
) -> Period:
    """The period of `kind` that holds `ts_ms`."""
    if not 1 <= fiscal_start_month <= 12:
        raise ValueError(f"fiscal_start_month {fiscal_start_month} is not a month (1-12)")
    if kind is PeriodKind.HOUR:
        start = floor_ms(ts_ms, HOUR_MS)
        label = to_datetime(start).strftime("%Y-%m-%dT%H:00Z")
        return Period(kind, label, start, start + HOUR_MS)
    zone = ZoneInfo(timezone)
    day = to_datetime(ts_ms, zone).date()
    if kind is PeriodKind.DAY:
        first, nxt, label = day, date.fromordinal(day.toordinal() + 1), day.isoformat()
    elif kind is PeriodKind.MONTH:
        first = day.replace(day=1)
        nxt, label = _add_months(first, 1), first.strftime("%Y-%m")
    else:
        # Named after the calendar year it ends in (April 2026 - March 2027 is FY2027), as the
        # US federal and most companies' fiscal years are (Japan names by the start year: say so
        # in reports). A January start makes the fiscal year the calendar year.
        start_year = day.year if day.month >= fiscal_start_month else day.year - 1
        first = date(start_year, fiscal_start_month, 1)
        nxt = _add_months(first, 12)
        end_year = start_year if fiscal_start_month == 1 else start_year + 1
        label = f"FY{end_year}"
    return Period(kind, label, _midnight_ms(first, zone), _midnight_ms(nxt, zone))


def periods_between(
    start_ms: int,
    end_ms: int,
    kind: PeriodKind,
    timezone: str = "UTC",
    fiscal_start_month: int = 1,
) -> list[Period]:
    """The periods of `kind` that overlap [start_ms, end_ms), in order."""
    out: list[Period] = []
    t = start_ms
    while t < end_ms:
        p = period_of(t, kind, timezone, fiscal_start_month)
        out.append(p)
        t = p.end_ms
    return out
