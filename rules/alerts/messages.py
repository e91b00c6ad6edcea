"""Alert messages: figures in words, times in the site's zone, the Grafana link, the templates."""

from __future__ import annotations

from string import Template
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from rules.alerts.config import Templates
from telemetry.timeutil import to_datetime


def format_value(value: float | None, unit: str) -> str:
    """A figure as a person reads it: 87.5 %, 17 min 30 s, 212.5 kW."""
    if value is None:
        return "no data"
    if unit == "ratio":
        return f"{value * 100:.1f} %"
    if unit == "s":
        total = round(value)
        h, rest = divmod(total, 3600)
        m, s = divmod(rest, 60)
        parts = [f"{h} h" if h else "", f"{m} min" if m else "", f"{s} s" if s or not total else ""]
        return " ".join(p for p in parts if p)
    if unit == "count":
        return f"{value:g}"
    return f"{value:.6g} {unit}".rstrip()


def format_time(ts_ms: int | None, tz: str) -> str:
    """Local time with the zone's abbreviation and offset: 2025-06-01 09:30:00 CST (UTC+08:00)."""
    if ts_ms is None:
        return "-"
    dt = to_datetime(ts_ms, tz)
    off = dt.isoformat()[-6:] if dt.utcoffset() else "+00:00"
    return f"{dt:%Y-%m-%d %H:%M:%S} {dt.tzname()} (UTC{off})"


def grafana_link(
    base: str | None, site: str, panel: int | str | None, from_ms: int, to_ms: int
) -> str:
    """The dashboard (or the rule's panel) for the site around the alert's time."""
    if base is None:
        return "(no grafana_url configured)"
    parts = urlsplit(base)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [("var-site", site), ("from", str(from_ms)), ("to", str(to_ms))]
    if panel is not None:
        query.append(("viewPanel", str(panel)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def render(templates: Templates, kind: str, fields: dict[str, str]) -> tuple[str, str]:
    """(title, body) of a firing, repeat or resolved message."""
    if kind == "resolved":
        title, body = templates.resolved_title, templates.resolved_body
    else:
        title, body = templates.firing_title, templates.firing_body
    return Template(title).safe_substitute(fields), Template(body).safe_substitute(fields)
