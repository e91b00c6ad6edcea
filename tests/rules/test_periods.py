"""Reporting periods: UTC hours; local days, months and fiscal years, DST included."""

from __future__ import annotations

import itertools
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.periods import HOUR_MS, PeriodKind, period_of, periods_between
from telemetry.timeutil import from_datetime


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_a_local_day_in_shanghai_starts_at_16_utc() -> None:
    p = period_of(_ms("2026-10-01T15:59:59+00:00"), PeriodKind.DAY, "Asia/Shanghai")  # 23:59:59
    assert p.label == "2026-10-01"
    assert p.start_ms == _ms("2026-09-30T16:00:00+00:00")
    assert period_of(p.end_ms, PeriodKind.DAY, "Asia/Shanghai").label == "2026-10-02"
    assert p.end_ms - p.start_ms == 24 * HOUR_MS


def test_dst_days_have_23_and_25_hours() -> None:
    spring = period_of(_ms("2026-03-29T12:00:00+00:00"), PeriodKind.DAY, "Europe/Berlin")
    autumn = period_of(_ms("2026-10-25T12:00:00+00:00"), PeriodKind.DAY, "Europe/Berlin")
    assert (spring.end_ms - spring.start_ms) // HOUR_MS == 23
    assert (autumn.end_ms - autumn.start_ms) // HOUR_MS == 25
    # March 2026 in Berlin: 31 days less the hour lost
    march = period_of(_ms("2026-03-15T00:00:00+00:00"), PeriodKind.MONTH, "Europe/Berlin")
    assert march.label == "2026-03"
    assert (march.end_ms - march.start_ms) // HOUR_MS == 31 * 24 - 1


def test_fiscal_year_from_april_is_named_for_the_year_it_ends() -> None:
    tz = "Asia/Shanghai"
    p = period_of(_ms("2026-03-31T15:59:00+00:00"), PeriodKind.FISCAL_YEAR, tz, 4)  # 23:59 local
    assert p.label == "FY2026"
    assert p.start_ms == _ms("2025-03-31T16:00:00+00:00")  # 2025-04-01 00:00 in Shanghai
    q = period_of(_ms("2026-03-31T16:00:00+00:00"), PeriodKind.FISCAL_YEAR, tz, 4)
    assert q.label == "FY2027"
    assert q.start_ms == p.end_ms
    assert period_of(_ms("2026-06-01T00:00:00+00:00"), PeriodKind.FISCAL_YEAR, tz).label == \
        "FY2026"  # January start: the calendar year


def test_hours_are_utc() -> None:
    p = period_of(_ms("2026-11-25T07:42:13+00:00"), PeriodKind.HOUR, "Asia/Shanghai")
    assert (p.label, p.start_ms) == ("2026-11-25T07:00Z", _ms("2026-11-25T07:00:00+00:00"))


ZONES = st.sampled_from(["UTC", "Asia/Shanghai", "Europe/Berlin", "America/New_York",
                         "Australia/Lord_Howe", "Asia/Kolkata"])


@settings(max_examples=300, deadline=None)
@given(st.integers(_ms("2020-01-01T00:00:00+00:00"), _ms("2030-01-01T00:00:00+00:00")),
       st.integers(1, 40 * 86_400_000), st.sampled_from(list(PeriodKind)), ZONES,
       st.integers(1, 12))
def test_periods_tile_time(start: int, length: int, kind: PeriodKind, zone: str,
                           fy_start: int) -> None:
    ps = periods_between(start, start + length, kind, zone, fy_start)
    assert ps[0].start_ms <= start < ps[0].end_ms
    assert ps[-1].start_ms < start + length <= ps[-1].end_ms
    for a, b in itertools.pairwise(ps):
        assert a.end_ms == b.start_ms  # no gap, no overlap
        assert a.label != b.label
    for p in ps:
        assert period_of(p.start_ms, kind, zone, fy_start) == p
        assert period_of(p.end_ms - 1, kind, zone, fy_start) == p


@pytest.mark.parametrize(("label", "first", "nxt"), [
    ("2026-10", "2026-10-01", "2026-11-01"),
    ("2026-Q3", "2026-07-01", "2026-10-01"),
    ("2026", "2026-01-01", "2027-01-01"),
    ("FY2027", "2026-04-01", "2027-04-01"),  # April start, named for the year it ends in
    ("2026-10-05", "2026-10-05", "2026-10-06"),
])
def test_report_periods_parse_in_site_time(label: str, first: str, nxt: str) -> None:
    from rules.periods import parse_period

    p = parse_period(label, "Asia/Shanghai", 4)
    zone = ZoneInfo("Asia/Shanghai")
    assert p.start_ms == from_datetime(datetime.fromisoformat(first).replace(tzinfo=zone))
    assert p.end_ms == from_datetime(datetime.fromisoformat(nxt).replace(tzinfo=zone))
    # a period's label names the period that holds its first instant
    assert period_of(p.start_ms, p.kind, "Asia/Shanghai", 4).label == p.label


def test_a_bad_period_label_says_what_is_accepted() -> None:
    from rules.periods import parse_period

    with pytest.raises(ValueError, match=r"'2026-13' is not one of: a month \(2026-10\)"):
        parse_period("2026-13")
