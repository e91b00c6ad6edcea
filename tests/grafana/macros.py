"""What Grafana does to an InfluxQL target before it sends it: macros and template variables.

Follows Grafana's InfluxDB data source: $timeFilter becomes a time range in epoch ms, ${__to}
the range's end in epoch ms,
$__interval the bucket width for the time range and the panel's max data points (never below
the panel's min interval), and variables their value; a multi-value or All variable with a
custom all value is written as that value (.*), unescaped, and several values as (a|b).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Grafana's rounding of a computed interval (public/app/core/utils/kbn roundInterval, abridged)
_NICE_MS = [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 15_000, 20_000, 30_000,
            60_000, 120_000, 300_000, 600_000, 900_000, 1_200_000, 1_800_000, 3_600_000,
            7_200_000, 10_800_000, 21_600_000, 43_200_000, 86_400_000]
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_ms(text: str) -> int:
    """'5m' -> 300000."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text)
    if not m:
        raise ValueError(f"not an interval: {text!r}")
    return int(m.group(1)) * _UNITS_MS[m.group(2)]


def format_ms(ms: int) -> str:
    """300000 -> '5m' (the largest unit that divides it)."""
    for unit in ("d", "h", "m", "s"):
        if ms % _UNITS_MS[unit] == 0:
            return f"{ms // _UNITS_MS[unit]}{unit}"
    return f"{ms}ms"


def interval_ms(from_ms: int, to_ms: int, max_points: int = 1000, min_interval: str | None = None
                ) -> int:
    """$__interval for a time range, like Grafana: range / points, rounded to a nice value."""
    raw = max(1, (to_ms - from_ms) // max_points)
    nice = next((n for n in _NICE_MS if n >= raw), _NICE_MS[-1])
    if min_interval:
        nice = max(nice, parse_ms(min_interval))
    return nice


@dataclass
class Variables:
    """The selected values of the dashboards' template variables."""

    site: str
    area: str = ".*"  # the option's value (a device regex), .* for All
    devices: list[str] = field(default_factory=list)  # none: All

    def device(self) -> str:
        if not self.devices:
            return ".*"
        escaped = [re.escape(d) for d in self.devices]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(query: str, v: Variables, from_ms: int, to_ms: int,
               min_interval: str | None = None) -> str:
    """The query as Grafana would send it to InfluxDB."""
    out = query.replace("$timeFilter", f"time >= {from_ms}ms and time <= {to_ms}ms")
    out = out.replace("${__to}", str(to_ms))  # global variable: the range's end, epoch ms
    out = out.replace("$__interval", format_ms(interval_ms(from_ms, to_ms,
                                                           min_interval=min_interval)))
    out = out.replace("${area:pipe}", v.area)
    out = out.replace("$device", v.device())
    out = out.replace("$site", v.site)
    left = re.findall(r"\$\{?[A-Za-z_]+", out)
    if left:
        raise AssertionError(f"unsubstituted {left} in {out}")
    return out
