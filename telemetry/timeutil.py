"""Time helpers: epoch milliseconds in UTC, interval boundaries, site-local days."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

MINUTE_MS = 60_000
QUARTER_HOUR_MS = 15 * MINUTE_MS
HOUR_MS = 60 * MINUTE_MS


def now_ms() -> int:
    """Current wall-clock time, epoch milliseconds UTC."""
    return time.time_ns() // 1_000_000


def floor_ms(ts: int, interval_ms: int) -> int:
    """Start of the UTC interval of length `interval_ms` that holds `ts`."""
    return ts - ts % interval_ms


def to_datetime(ts: int, tz: str | ZoneInfo = "UTC") -> datetime:
    """Epoch ms to an aware datetime in `tz`."""
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    return datetime.fromtimestamp(ts / 1000, tz=UTC).astimezone(zone)


def from_datetime(dt: datetime) -> int:
    """Aware datetime to epoch ms."""
    if dt.tzinfo is None:
        raise ValueError(f"{dt.isoformat()} has no time zone")
    return int(dt.timestamp() * 1000)


def local_day_bounds(ts: int, tz: str) -> tuple[int, int]:
    """[start, end) in epoch ms of the site-local calendar day that holds `ts` (DST-aware)."""
    zone = ZoneInfo(tz)
    day = to_datetime(ts, zone).date()
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    nxt = day + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone)
    return from_datetime(start), from_datetime(end)
