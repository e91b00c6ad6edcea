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
    QUARTER = "quarter"  # site time, calendar quarters (reports)
    YEAR = "year"  # site time, calendar year (reports)


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
    elif kind is PeriodKind.QUARTER:
        first = date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
        nxt, label = _add_months(first, 3), f"{day.year}-Q{(day.month - 1) // 3 + 1}"
    elif kind is PeriodKind.YEAR:
        first = date(day.year, 1, 1)
        nxt, label = _add_months(first, 12), str(day.year)
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


def parse_period(label: str, timezone: str = "UTC", fiscal_start_month: int = 1) -> Period:
    """A reporting period from its label, in the site's time zone.

    `2026-10` a month, `2026-Q3` a calendar quarter, `2026` a calendar year, `FY2027` the fiscal
    year named for the year it ends in, `2026-10-05` a day.
    """
    zone = ZoneInfo(timezone)
    text = label.strip()
    try:
        if text.upper().startswith("FY") and text[2:].isdigit() and len(text) == 6:
            end_year = int(text[2:])
            start_year = end_year if fiscal_start_month == 1 else end_year - 1
            first = date(start_year, fiscal_start_month, 1)
            return Period(
                PeriodKind.FISCAL_YEAR,
                f"FY{end_year}",
                _midnight_ms(first, zone),
                _midnight_ms(_add_months(first, 12), zone),
            )
        if len(text) == 7 and text[4:6].upper() == "-Q" and text[6] in "1234":
            first = date(int(text[:4]), 3 * (int(text[6]) - 1) + 1, 1)
            return Period(
                PeriodKind.QUARTER,
                text.upper(),
                _midnight_ms(first, zone),
                _midnight_ms(_add_months(first, 3), zone),
            )
        if len(text) == 4 and text.isdigit():
            first = date(int(text), 1, 1)
            return Period(
                PeriodKind.YEAR,
                text,
                _midnight_ms(first, zone),
                _midnight_ms(_add_months(first, 12), zone),
            )
        if len(text) == 7 and text[4] == "-":
            first = date(int(text[:4]), int(text[5:]), 1)
            return Period(
                PeriodKind.MONTH,
                text,
                _midnight_ms(first, zone),
                _midnight_ms(_add_months(first, 1), zone),
            )
        if len(text) == 10:
            day = date.fromisoformat(text)
            return Period(
                PeriodKind.DAY,
                text,
                _midnight_ms(day, zone),
                _midnight_ms(date.fromordinal(day.toordinal() + 1), zone),
            )
    except ValueError:
        pass
    raise ValueError(
        f"period {label!r} is not one of: a month (2026-10), a quarter (2026-Q3), a year (2026), "
        f"a fiscal year (FY2027) or a day (2026-10-05)"
    )
