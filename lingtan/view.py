"""The live terminal view of the demo: figures from the store (ingest) and the ledger (rules)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ingest.sqlite_store import SqliteStore
from rules.ledger import Ledger
from telemetry.config import SiteInfo
from telemetry.timeutil import local_day_bounds, now_ms, to_datetime


@dataclass(frozen=True)
class Figures:
    """What the operator sees."""

    power_kw: float | None
    power_age_s: float | None
    energy_today_kwh: float
    scope2_location_today_kg: float
    grid_factor_ids: tuple[str, ...]
    samples_stored: int
    ledger_events: int


def read_figures(
    site: SiteInfo,
    store: SqliteStore,
    ledger: Ledger,
    grid_devices: list[str],
    now: int | None = None,
) -> Figures:
    """Current figures for `site` (power from the store; energy and emissions from the ledger)."""
    now = now_ms() if now is None else now
    power: float | None = None
    age: float | None = None
    for dev in grid_devices:
        latest = store.latest(site.id, dev, "active_power_kw")
        if latest is not None:
            power = (power or 0.0) + latest[1]
            age = max(age or 0.0, (now - latest[0]) / 1000)
    start, end = local_day_bounds(now, site.timezone)
    intervals = ledger.site_intervals(site.id, start, end)
    return Figures(
        power_kw=power,
        power_age_s=age,
        energy_today_kwh=sum(i.grid_import_kwh for i in intervals),
        scope2_location_today_kg=sum(i.scope2_location_kgco2e for i in intervals),
        grid_factor_ids=tuple(sorted({i.grid_factor_id for i in intervals})),
        samples_stored=store.count_samples(site.id),
        ledger_events=len(ledger.events(site.id)),
    )


def render(site: SiteInfo, f: Figures, extra: list[tuple[str, str]] | None = None) -> Panel:
    """A panel that fits 100x30."""
    local = to_datetime(now_ms(), site.timezone)
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold cyan", justify="right")
    t.add_column(justify="right", min_width=14)
    t.add_column(style="dim")
    power = "—" if f.power_kw is None else f"{f.power_kw:,.1f} kW"
    age = "" if f.power_age_s is None else f"read {f.power_age_s:.0f} s ago"
    t.add_row("Site power", power, age)
    t.add_row("Grid energy today", f"{f.energy_today_kwh:,.2f} kWh", "from the import counter")
    t.add_row(
        "Scope 2 today",
        f"{f.scope2_location_today_kg:,.2f} kg CO2",
        "location-based; factor " + (", ".join(f.grid_factor_ids) or "—"),
    )
    t.add_row("Readings stored", f"{f.samples_stored:,}", "embedded SQLite store")
    t.add_row("Ledger events", f"{f.ledger_events:,}", "resets, rollovers, clock faults")
    for label, value in extra or []:
        t.add_row(label, value, "")
    title = f"lingtan · {site.name or site.id} · {local:%Y-%m-%d %H:%M:%S %Z}"
    hint = Text("Ctrl-C to stop", style="dim")
    return Panel(Group(t, hint), title=title, expand=False)
