"""The demo's live terminal view: what a plant operator sees, in 100 columns and 30 lines.

`render` draws a `Snapshot` (plain data) and nothing else, so it can be tested without running
anything; the demo builds snapshots from the running services. Every line is cut, never
wrapped, and every section has a fixed height: the view keeps its size from one refresh to the
next, so rich redraws it in place without flicker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from rules.market import HourFlow
from telemetry.config import SiteInfo
from telemetry.timeutil import to_datetime

WIDTH = 100
HEIGHT = 30
_BARS = "▁▂▃▄▅▆▇█"
ALERT_LINES = 4
EVENT_LINES = 4
DEVICE_COLUMNS = 3


@dataclass(frozen=True)
class DeviceRow:
    """One device as the edge agent knows it."""

    id: str
    online: bool | None
    power_kw: float | None = None
    error: str = ""
    note: str = ""  # what to show instead of power (a gas meter's flow)


@dataclass(frozen=True)
class AlertLine:
    """An alert that is firing or pending."""

    severity: str
    rule: str
    labels: str
    state: str
    since_ms: int | None
    summary: str


@dataclass(frozen=True)
class EventLine:
    """A ledger event: something that happened to the data, and what was done about it."""

    ts_ms: int
    device: str
    kind: str
    detail: str


@dataclass(frozen=True)
class Snapshot:
    """Everything the view shows at one moment."""

    site: SiteInfo
    now_ms: int  # simulated site time
    speed: float
    values: dict[str, float] = field(default_factory=dict)  # the rules' live figures
    pue: dict[str, float] = field(default_factory=dict)
    fy_label: str = ""
    data_from_ms: int | None = None  # the first reading accounted (history start)
    hours: list[HourFlow] = field(default_factory=list)  # the last 24 hours
    devices: list[DeviceRow] = field(default_factory=list)
    alerts: list[AlertLine] = field(default_factory=list)
    alerts_active: int = 0
    events: list[EventLine] = field(default_factory=list)
    events_total: int = 0
    power_kw: float | None = None  # site consumption now: grid import + generation - export
    status: str = ""  # what the demo is doing (loading history, live)
    pipeline: str = ""


def _kw(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f} kW"


def _t(kg: float | None) -> str:
    if kg is None:
        return "—"
    return f"{kg / 1000:,.2f} t" if abs(kg) >= 1000 else f"{kg:,.0f} kg"


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v * 100:.1f} %"


def sparkline(values: list[float], top: float, width: int = 24, bottom: float = 0.0) -> str:
    """Bars for `values` (the last `width`) from `bottom` to `top`; blank where there are none."""
    out = []
    span = top - bottom
    for v in values[-width:]:
        if span <= 0:
            out.append(_BARS[0])
            continue
        i = round((v - bottom) / span * (len(_BARS) - 1))
        out.append(_BARS[min(len(_BARS) - 1, max(0, i))])
    return "".join(out).rjust(width)


def _line(*parts: tuple[str, str] | str) -> Text:
    """A one-line Text that is cut at the panel's width, never wrapped."""
    t = Text(no_wrap=True, overflow="ellipsis")
    for p in parts:
        if isinstance(p, str):
            t.append(p)
        else:
            t.append(p[0], style=p[1])
    return t


def _figures(s: Snapshot) -> Table:
    v = s.values
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold cyan", min_width=17, no_wrap=True)
    for _ in range(3):
        t.add_column(justify="right", min_width=10, no_wrap=True)
    t.add_column(style="dim", no_wrap=True, overflow="ellipsis", max_width=40)
    note = ""
    if s.data_from_ms is not None:
        note = f"the data starts {to_datetime(s.data_from_ms, s.site.timezone):%d %b %H:%M}"
    t.add_row("", Text("today", style="bold"), Text("month", style="bold"),
              Text(s.fy_label or "fiscal year", style="bold"), note)  # fmt: skip
    for label, key, fmt, remark in (
        ("Scope 1", "scope1", _t, "gas boiler, refrigerant top-ups"),
        ("Scope 2 location", "scope2_location", _t, "grid average of the province"),
        ("Scope 2 market", "scope2_market", _t, "after GECs and green power"),
        ("Renewable share", "renewable_share", _pct, "PV used, GECs, green power"),
    ):
        unit = "ratio" if key == "renewable_share" else "kgco2e"
        row = [fmt(v.get(f"{key}_{p}_{unit}")) for p in ("today", "month", "fy")]
        t.add_row(label, *row, remark)
    pue = "  ".join(f"{z} {p:.2f}" for z, p in sorted(s.pue.items())) or "—"
    t.add_row("CFE (hourly)", _pct(v.get("cfe_today_ratio")), "", "", "clean supply in the hour")
    t.add_row("PUE today", pue, "", "", "data-centre intake / IT")
    return t


def _target(s: Snapshot) -> Text:
    v = s.values
    label = ("Target        ", "bold cyan")
    if "target_on_track" not in v:
        return _line(label, ("no figures yet", "dim"))
    ok = v["target_on_track"] >= 1
    return _line(
        label,
        ("on track" if ok else "off track", "bold green" if ok else "bold red"),
        f"  {s.fy_label}: {v['target_actual_to_date_tco2e']:,.0f} t · budget to date "
        f"{v['target_budget_to_date_tco2e']:,.0f} t · forecast "
        f"{v['target_forecast_fy_tco2e']:,.0f} t of {v['target_allowed_fy_tco2e']:,.0f} t",
    )


def _power(s: Snapshot) -> list[Text]:
    v = s.values
    loads = [h.load_kwh for h in s.hours]
    clean = [h.onsite_renewable_kwh for h in s.hours]
    top = max(loads, default=0.0)
    # the load's shape: from a little under its lowest hour (a factory never drops to zero)
    low = min(loads, default=0.0)
    bottom = max(0.0, low - (top - low) * 0.3)
    # rules' figure (what the demand alert watches); the meters' own until rules has one
    kw = v.get("site_power_kw", s.power_kw)
    power = "—" if kw is None else f"{kw:,.0f} kW"
    energy = f"{v['energy_today_kwh']:,.0f} kWh" if "energy_today_kwh" in v else "—"
    return [
        _line(
            ("Site power    ", "bold cyan"),
            (f"{power:>14}", "bold"),
            "   load ",
            (sparkline(loads, top, bottom=bottom), "cyan"),
            ("  hourly, last 24 h", "dim"),
        ),
        _line(
            ("Energy today  ", "bold cyan"),
            (f"{energy:>14}", "bold"),
            "   PV   ",
            (sparkline(clean, top), "green"),
            ("  on-site renewable used", "dim"),
        ),
    ]


def _devices(s: Snapshot) -> list[Text]:
    online = sum(1 for d in s.devices if d.online)
    head = _line(("Devices", "bold cyan"), f"  {online} of {len(s.devices)} online")
    rows: list[Text] = []
    per_row = DEVICE_COLUMNS
    cell = (WIDTH - 4) // per_row  # 32: a mark, the id, the power
    for i in range(0, len(s.devices), per_row):
        t = Text(no_wrap=True, overflow="ellipsis")
        for d in s.devices[i : i + per_row]:
            mark, style = ("●", "green") if d.online else ("○", "dim")
            if d.online is False:
                style = "red"
            value = (
                "offline"
                if d.online is False
                else d.note or ("" if d.power_kw is None else f"{d.power_kw:,.0f} kW")
            )  # fmt: skip
            name = d.id[: cell - 12]
            t.append(f"{mark} ", style=style)
            t.append(f"{name:<{cell - 12}}")
            t.append(f"{value:>9} ", style="red" if d.online is False else "")
        rows.append(t)
    return [head, *rows]


_SEVERITY = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def _alerts(s: Snapshot) -> list[Text]:
    head = _line(("Alerts", "bold cyan"), f"  {s.alerts_active} active")
    lines = []
    for a in s.alerts[:ALERT_LINES]:
        since = "" if a.since_ms is None else f"{to_datetime(a.since_ms, s.site.timezone):%H:%M}"
        lines.append(
            _line(
                (f"  {a.severity:<8} ", _SEVERITY.get(a.severity, "")),
                (f"{a.state:<8} ", "bold" if a.state == "firing" else "dim"),
                (f"{since:>5}  ", "dim"),
                f"{a.rule}",
                (f" {a.labels}" if a.labels else "", "dim"),
                f"  {a.summary}",
            )
        )
    if not s.alerts:
        lines.append(_line(("  none", "dim")))
    return [head, *lines]


def _events(s: Snapshot) -> list[Text]:
    head = _line(
        ("Ledger", "bold cyan"),
        f"  {s.events_total} events: rollovers, resets, spikes, gaps (latest first)",
    )
    lines = []
    for e in s.events[:EVENT_LINES]:
        when = to_datetime(e.ts_ms, s.site.timezone)
        lines.append(
            _line(
                (f"  {when:%d %b %H:%M} ", "dim"),
                (f"{e.kind:<9}", "magenta"),
                f"{e.device:<15}",
                (e.detail, "dim"),
            )
        )
    return [head, *lines]


def _pad(lines: list[Text], n: int) -> list[Text]:
    return (lines + [Text("")] * n)[:n]


def render(s: Snapshot, width: int = WIDTH) -> RenderableType:
    """The whole view: `width` columns (at most 100) and 30 lines."""
    local: datetime = to_datetime(s.now_ms, s.site.timezone)
    speed = "real time" if s.speed == 1 else f"×{s.speed:g} simulated time"
    title = f"lingtan · {s.site.name or s.site.id} · {local:%a %d %b %Y %H:%M} {local.tzname()}"
    device_rows = (len(s.devices) + DEVICE_COLUMNS - 1) // DEVICE_COLUMNS
    body: list[RenderableType] = [
        *_power(s),
        Text(""),
        _figures(s),
        _target(s),
        Text(""),
        *_pad(_devices(s), 1 + max(device_rows, 3)),
        *_pad(_alerts(s), 1 + ALERT_LINES),
        *_pad(_events(s), 1 + EVENT_LINES),
        _line((s.pipeline, "dim")),
    ]
    return Panel(
        Group(*body),
        title=Text(title, style="bold", no_wrap=True, overflow="ellipsis"),
        title_align="left",
        subtitle=Text(f"{s.status} · {speed} · Ctrl-C to stop", no_wrap=True, overflow="ellipsis"),
        subtitle_align="right",
        width=min(width, WIDTH),
        height=HEIGHT,
        padding=(0, 1),
    )
