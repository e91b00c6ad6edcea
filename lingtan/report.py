"""`lingtan report`: a period's GHG figures as HTML, PDF, CSV or JSON, for people to send on.

Everything in a report comes from the site's ledger and config through the same accounts the
live figures use (rules/accounts.py): totals by scope, method and gas; energy by role, area
and line; renewable share and hourly CFE; PUE; charts of daily emissions, hourly load against
clean supply, the renewable share and progress against the reduction target; every data-quality
event and how much energy is estimated; how much of the period the ledger has data for; and
every factor used with its year, region, validity and source. Times are in the site's time
zone; the fiscal year follows the site's start month. A period the ledger holds nothing for is
refused rather than reported as zeros.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime
from importlib import metadata, resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from lingtan.charts import PALETTE, Series, bars, lines
from lingtan.config import LoadedConfig
from rules.accounts import Accounts, open_accounts
from rules.ledger import Ledger
from rules.periods import Period, PeriodKind, parse_period, period_of, periods_between

FORMATS = ("html", "pdf", "csv", "json")
# The ledger books every meter per 15-minute interval (rules/engine.py).
INTERVAL_MS = 15 * 60_000


class ReportError(Exception):
    """A report that cannot be made; the message says why and what to do."""


def _local(ms: int, tz: str, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).strftime(fmt)


def build(loaded: LoadedConfig, label: str, *, now: datetime | None = None) -> dict[str, Any]:
    """The report's data: the period's accounts plus what the charts and tables need."""
    c = loaded.config
    tz, fsm = c.site.timezone, c.rules.fiscal_year_start_month
    try:
        period = parse_period(label, tz, fsm)
    except ValueError as exc:
        raise ReportError(str(exc)) from None
    ledger_path = (
        c.rules.ledger if c.rules.ledger.is_absolute() else loaded.base_dir / c.rules.ledger
    )
    if not ledger_path.exists():
        raise ReportError(
            f"no ledger at {ledger_path}: run `lingtan rules` or `lingtan replay "
            f"--ledger {ledger_path}` first"
        )
    ledger = Ledger(ledger_path)
    try:
        acc = open_accounts(c.site, c.rules, ledger, loaded.base_dir)
        coverage = _coverage(acc, period)
        if not coverage["intervals_with_data"] and not ledger.emissions(
            c.site.id, period.start_ms, period.end_ms
        ):
            raise ReportError(
                f"no ledger data in {period.label} ({_local(period.start_ms, tz)} to "
                f"{_local(period.end_ms, tz)}, {tz}): {ledger_path} has no meter readings "
                "booked in that period; pick a period with data, or replay the readings into "
                f"the ledger (`lingtan replay --ledger {ledger_path}`)"
            )
        r = acc.period(period.start_ms, period.end_ms)
        factors = _factors(acc, r["factors"])
        alloc = acc.allocation(period.start_ms, period.end_ms)
        hours = [h for h in alloc.hours if period.start_ms <= h.start_ms < period.end_ms]
        estimated = _estimated_by_meter(acc, period)
        target = _trajectory(acc, period)
    finally:
        ledger.close()
    generated = now or datetime.now(UTC)
    return {
        "meta": {
            "site": c.site.id,
            "site_name": c.site.name or c.site.id,
            "region": c.site.region,
            "timezone": tz,
            "period": period.label,
            "period_kind": period.kind.value,
            "from": _local(period.start_ms, tz),
            "to": _local(period.end_ms, tz),
            "fiscal_year_start_month": fsm,
            "gwp_set": c.rules.gwp_set,
            "generated": generated.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M %Z"),
            "lingtan": metadata.version("lingtan"),
        },
        "coverage": coverage,
        "accounts": r | {"factors": factors},
        "hourly": [
            {
                "hour": _local(h.start_ms, tz),
                "load_kwh": round(h.load_kwh, 6),
                "clean_kwh": round(h.onsite_renewable_kwh + h.hourly_clean_kwh, 6),
            }
            for h in hours
        ],
        "estimated_by_meter": estimated,
        "target_trajectory": target,
        "events": [dict(e, time=_local(e["ts"], tz, "%Y-%m-%d %H:%M:%S")) for e in r["events"]],
    }


def _coverage(acc: Accounts, period: Period) -> dict[str, Any]:
    """How much of the period the ledger has data for.

    An interval has data when any meter has an amount booked in it (measured, or estimated over
    a gap the meter's readings closed); the rest of the period has no readings yet or none at
    all, and every figure of the report leaves it out. Entries booked by hand (refrigerant
    top-ups) are not intervals of readings.
    """
    tz = acc.site.timezone
    starts = sorted(
        {
            start
            for _, _, start, _, _, _ in acc.engine.ledger.meter_amounts(
                acc.site.id, period.start_ms, period.end_ms
            )
        }
    )
    intervals = -(-(period.end_ms - period.start_ms) // INTERVAL_MS)
    return {
        "intervals_with_data": len(starts),
        "intervals": intervals,
        "share": round(len(starts) / intervals, 4),
        "first": _local(starts[0], tz) if starts else None,
        "last": _local(starts[-1] + INTERVAL_MS, tz) if starts else None,
    }


def _factors(acc: Accounts, used: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The factors used, each with the validity its library entry gives (valid from / to)."""
    lib = acc.engine.factors
    out = []
    for f in used:
        if f["id"] not in lib:  # booked with a factor since removed from the library
            out.append(f | {"valid_from": None, "valid_to": None})
            continue
        entry = lib[f["id"]]
        out.append(
            f
            | {
                "valid_from": entry.valid_from.isoformat(),
                "valid_to": None if entry.valid_to is None else entry.valid_to.isoformat(),
            }
        )
    return out


def _estimated_by_meter(acc: Accounts, period: Period) -> list[dict[str, Any]]:
    """Per meter: what it measured, how much of it is estimated, and the share."""
    totals: dict[str, list[Any]] = {}
    for device, role, _, amount, est, unit in acc.engine.ledger.meter_amounts(
        acc.site.id, period.start_ms, period.end_ms
    ):
        t = totals.setdefault(device, [role, unit, 0.0, 0.0])
        t[2] += amount
        t[3] += est
    return [
        {
            "device": d,
            "role": role,
            "unit": unit,
            "amount": round(a, 3),
            "estimated": round(e, 3),
            "share": round(e / a, 4) if a else None,
        }
        for d, (role, unit, a, e) in sorted(totals.items())
        if e > 0
    ]


def _trajectory(acc: Accounts, period: Period) -> dict[str, Any] | None:
    """The fiscal year of the period's end: the target's budget accrual and the actual, by day."""
    t = acc.cfg.target
    if t is None:
        return None
    tz, fsm = acc.site.timezone, acc.cfg.fiscal_year_start_month
    fy = period_of(period.end_ms - 1, PeriodKind.FISCAL_YEAR, tz, fsm)
    r = acc.period(fy.start_ms, min(fy.end_ms, period.end_ms))
    days = {d["period"]: d for d in r["by_period"].get("day", [])}
    allowed = t.allowed_tco2e(int(fy.label[2:]))
    labels: list[str] = []
    budget: list[float] = []
    actual: list[float | None] = []
    total = 0.0
    span = fy.end_ms - fy.start_ms
    first_day = min(days, default="")  # ISO dates sort as dates
    last_day = max(days, default="")
    for p in periods_between(fy.start_ms, fy.end_ms, PeriodKind.DAY, tz, fsm):
        labels.append(p.label[5:])
        budget.append(allowed * (p.end_ms - fy.start_ms) / span)
        d = days.get(p.label)
        if p.start_ms >= period.end_ms or not first_day <= p.label <= last_day:
            actual.append(None)  # no data: the line shows only days the ledger has
            continue
        if d is not None:
            if "scope1" in t.scopes:
                total += d["scope1_kgco2e"] / 1000
            if "scope2_market" in t.scopes:
                total += d["scope2_market_kgco2e"] / 1000
            if "scope2_location" in t.scopes:
                total += d["scope2_location_kgco2e"] / 1000
        actual.append(total)
    return {
        "fiscal_year": fy.label,
        "data_from": first_day,
        "data_to": last_day,
        "allowed_tco2e": allowed,
        "labels": labels,
        "budget_tco2e": budget,
        "actual_tco2e": actual,
        "status": r["target"],
    }


def _charts(data: dict[str, Any]) -> dict[str, str]:
    r = data["accounts"]
    days = r["by_period"].get("day", [])
    labels = [d["period"][5:] for d in days]
    charts = {
        "daily": bars(
            "chart-daily-emissions",
            "Emissions per day (Scope 1 + Scope 2 market-based)",
            "kgCO2e",
            labels,
            [
                Series("Scope 1", [d["scope1_kgco2e"] for d in days], PALETTE["scope1"]),
                Series(
                    "Scope 2 market-based",
                    [d["scope2_market_kgco2e"] for d in days],
                    PALETTE["scope2_market"],
                ),
            ],
        ),
        "share": lines(
            "chart-renewable-share",
            "Renewable share per day",
            "%",
            labels,
            [
                Series(
                    "renewable share",
                    [
                        None if d["renewable_share"] is None else 100 * d["renewable_share"]
                        for d in days
                    ],
                    PALETTE["share"],
                ),
                Series(
                    "hourly CFE (EnergyTag)",
                    [
                        None if d["cfe_energytag"] is None else 100 * d["cfe_energytag"]
                        for d in days
                    ],
                    PALETTE["load"],
                ),
            ],
            top=100,
        ),
    }
    hourly = data["hourly"]
    if hourly:
        charts["hourly"] = lines(
            "chart-hourly-load",
            "Hourly load against clean supply",
            "kWh per hour",
            [h["hour"][5:13] for h in hourly],
            [
                Series("load", [h["load_kwh"] for h in hourly], PALETTE["load"]),
                Series(
                    "clean supply (on-site renewable, PPA, hourly certificates)",
                    [h["clean_kwh"] for h in hourly],
                    PALETTE["clean"],
                ),
            ],
        )
    tr = data["target_trajectory"]
    if tr is not None:
        charts["target"] = lines(
            "chart-target",
            f"{tr['fiscal_year']} against the reduction trajectory",
            "tCO2e",
            tr["labels"],
            [
                Series("trajectory budget (cumulative)", tr["budget_tco2e"], PALETTE["budget"]),
                Series("actual (cumulative)", tr["actual_tco2e"], PALETTE["actual"]),
            ],
        )
    return charts


def html(data: dict[str, Any]) -> str:
    """The report as one self-contained HTML page."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("lingtan", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["num"] = lambda v, d=1: "–" if v is None else f"{v:,.{d}f}"
    env.filters["pct"] = lambda v: "–" if v is None else f"{100 * v:.1f} %"
    return str(
        env.get_template("report.html").render(
            d=data, r=data["accounts"], m=data["meta"], charts=_charts(data)
        )
    )


def csv_text(data: dict[str, Any]) -> str:
    """The report's figures as CSV: `section,item,value,unit`, then the daily series."""
    r, m = data["accounts"], data["meta"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["section", "item", "value", "unit"])
    for k in ("site", "period", "from", "to", "timezone", "gwp_set"):
        w.writerow(["meta", k, m[k], ""])
    cov = data["coverage"]
    w.writerow(["coverage", "intervals with data", cov["intervals_with_data"], "15 min"])
    w.writerow(["coverage", "intervals in period", cov["intervals"], "15 min"])
    w.writerow(["coverage", "share", cov["share"], "ratio"])
    w.writerow(["scope1", "total", r["scope1_kgco2e"], "kgCO2e"])
    for gas, v in r["scope1_by_gas_kgco2e"].items():
        w.writerow(["scope1", gas, v, "kgCO2e"])
    w.writerow(["biogenic", "CO2", r["biogenic_co2_kg"], "kg"])
    w.writerow(["scope2", "location-based", r["scope2_location_kgco2e"], "kgCO2e"])
    w.writerow(["scope2", "market-based", r["scope2_market_kgco2e"], "kgCO2e"])
    for role, e in r["energy_kwh"].items():
        w.writerow(["energy", role, e["total"], "kWh"])
    for dev, f in r["fuels"].items():
        w.writerow(["fuel", dev, f["amount"], f["unit"]])
    w.writerow(["energy", "consumption", r["consumption_kwh"], "kWh"])
    w.writerow(["renewable", "share", r["renewable_share"], "ratio"])
    w.writerow(["cfe", "energytag", r["cfe"]["energytag"], "ratio"])
    w.writerow(["cfe", "google", r["cfe"]["google"], "ratio"])
    for zone, pue in r["pue"].items():
        w.writerow(["pue", zone, pue, "ratio"])
    for f in r["factors"]:
        w.writerow(["factor", f["id"], f["value"], f["unit"]])
    w.writerow([])
    w.writerow(
        [
            "day",
            "consumption_kwh",
            "renewable_share",
            "cfe_energytag",
            "scope1_kgco2e",
            "scope2_location_kgco2e",
            "scope2_market_kgco2e",
        ]
    )
    for d in r["by_period"].get("day", []):
        w.writerow(
            [
                d["period"],
                d["consumption_kwh"],
                d["renewable_share"],
                d["cfe_energytag"],
                d["scope1_kgco2e"],
                d["scope2_location_kgco2e"],
                d["scope2_market_kgco2e"],
            ]
        )
    return buf.getvalue()


def chromium() -> str:
    """The headless browser that prints the PDF."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise ReportError(
        "a PDF is printed by headless Chromium, which is not installed: "
        "apt-get install chromium (or use --format html and print it from a browser)"
    )


def chromium_args() -> list[str]:
    """Flags for a headless run that works as root and in containers."""
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
    ]


def pdf(html_text: str, out: Path) -> None:
    """Print the HTML to `out` as A4 PDF."""
    with tempfile.TemporaryDirectory(prefix="lingtan-report-") as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html_text, encoding="utf-8")
        proc = subprocess.run(  # noqa: S603 - our own arguments, no shell
            [
                chromium(),
                *chromium_args(),
                f"--user-data-dir={tmp}/profile",
                "--no-pdf-header-footer",
                f"--print-to-pdf={out}",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    if proc.returncode != 0 or not out.exists() or out.stat().st_size == 0:
        raise ReportError(f"Chromium could not print the PDF: {proc.stderr.strip()[-500:]}")


def template_path() -> str:
    """Where the HTML template lives (for people adapting it)."""
    return str(resources.files("lingtan").joinpath("templates/report.html"))
