"""`lingtan report` on a month of plant data: HTML, PDF, CSV and JSON a person can send on.

The HTML is opened in headless Chromium (Debian's `chromium`) and its screenshot is checked
for each chart's colours: the charts rendered, not only their markup.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from lingtan.config import load
from lingtan.report import chromium, chromium_args
from rules.accounts import open_accounts
from rules.ledger import Ledger
from rules.replay import replay
from tests.rules import test_month_scenario as month

pytestmark = pytest.mark.integration

TARGET = ("  target: {baseline_year: 2022, baseline_tco2e: 3000, target_year: 2030, "
          "reduction: 0.42}\n")

# a refrigerant top-up booked by hand in a month without readings
TOP_UP_IN_DECEMBER = ("    - {id: chiller-1-2026-12, date: 2026-12-03, gas: R-410A, kg: 2, "
                      "equipment: chiller 1}")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    (tmp / "site-factors.yaml").write_text(month.SITE_FACTORS)
    hours = [datetime.fromtimestamp((month.T_START + h * 3_600_000) / 1000, UTC)
             .strftime("%Y-%m-%dT%H:00Z") for h in range(month.DAYS * 24)]
    (tmp / "grid-cfe.csv").write_text("# source: test data\nhour_start_utc,carbon_free_share\n"
                                      + "".join(f"{h},0.3\n" for h in hours))
    (tmp / "site.yaml").write_text(
        month.CONFIG.replace("site: {id: fab,", "site: {id: fab, name: Wuhan electronics fab,")
        .replace("equipment: chiller 2}", "equipment: chiller 2}\n" + TOP_UP_IN_DECEMBER)
        + TARGET)
    loaded = load(tmp / "site.yaml")
    c = loaded.config
    acc = open_accounts(c.site, c.rules, Ledger(tmp / "ledger.sqlite"), loaded.base_dir)
    replay(acc.engine, month._samples())
    acc.engine.ledger.close()
    return tmp


def _report(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lingtan", "report", "-c", str(site / "site.yaml"),
                           *args], capture_output=True, text=True, timeout=180, check=False,
                          cwd=site)


def _count(img: Image.Image, hex_colour: str) -> int:
    rgb = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return sum(n for n, c in img.getcolors(1 << 24) or [] if c[:3] == rgb)


def test_html_renders_every_chart_in_chromium(site: Path) -> None:
    out = _report(site, "--period", "2026-10")
    assert out.returncode == 0, out.stderr
    page = site / "lingtan-fab-2026-10.html"
    html = page.read_text()
    for chart in ("chart-daily-emissions", "chart-renewable-share", "chart-hourly-load",
                  "chart-target"):
        assert f'id="{chart}"' in html
    # the figures a reader looks for, as the month's arithmetic gives them
    assert "78.40" in html  # Scope 1, tCO2e (tests/rules/test_month_scenario.py)
    assert "144.75" in html  # Scope 2 location-based
    assert "91.73" in html  # Scope 2 market-based
    assert "cn-mee-2023-grid-national-average" in html
    assert "treated as a reset" in html  # the data-quality events are listed
    # the whole month has data: every 15-minute interval of October (31 x 96)
    assert ("Data coverage: the ledger has data for 2976\n    of the period's 2976 15-minute "
            "intervals (100.0 %), from 2026-10-01 00:00\n    to 2026-11-01 00:00.") in html
    # each factor with its year, region and validity beside its source
    factors = html.split('<table id="factors"')[1].split("</table>")[0]
    assert "<th class=\"n\">year</th><th>region</th><th>valid from</th><th>valid to</th>" in factors
    assert ("<td>cn-mee-2023-grid-national-average</td><td class=\"n\">0.5306</td>"
            "<td>kgCO2/kWh</td><td class=\"n\">2023</td><td>CN</td><td>2023-01-01</td>"
            "<td>no end date</td>") in factors
    shot = site / "shot.png"
    proc = subprocess.run([chromium(), *chromium_args(), f"--user-data-dir={site}/chromium",
                           "--window-size=1100,3200", f"--screenshot={shot}", page.as_uri()],
                          capture_output=True, text=True, timeout=120, check=False)
    assert shot.exists(), proc.stderr
    img = Image.open(shot).convert("RGB")
    # each chart's own colour fills pixels: the Scope 1 bars (#e76f51), the Scope 2 bars and the
    # load line (#264653), the renewable share and clean supply lines (#2a9d8f), the target
    # trajectory (#e9c46a, only in that chart)
    for colour, at_least in (("#e76f51", 2000), ("#264653", 2000), ("#2a9d8f", 1000),
                             ("#e9c46a", 300)):
        assert _count(img, colour) >= at_least, colour


def test_pdf_is_printed(site: Path) -> None:
    out = _report(site, "--period", "2026-10", "--format", "pdf", "-o", "month.pdf")
    assert out.returncode == 0, out.stderr
    data = (site / "month.pdf").read_bytes()
    assert data.startswith(b"%PDF-")
    # A4 pages: key figures, charts, tables, events and factors take several
    assert len(re.findall(rb"/Type\s*/Page[^s]", data)) >= 3


def test_csv_and_json_carry_the_same_figures(site: Path) -> None:
    c = _report(site, "--period", "FY2027", "--format", "csv")
    assert c.returncode == 0, c.stderr
    rows = list(csv.reader(io.StringIO(c.stdout)))
    by_key = {(r[0], r[1]): r[2] for r in rows if len(r) == 4}
    j = _report(site, "--period", "FY2027", "--format", "json")
    assert j.returncode == 0, j.stderr
    body = json.loads(j.stdout)
    assert body["meta"]["from"] == "2026-04-01 00:00"  # FY2027 from April, site time
    acc = body["accounts"]
    assert float(by_key[("scope1", "total")]) == pytest.approx(acc["scope1_kgco2e"])
    assert float(by_key[("scope2", "market-based")]) == pytest.approx(acc["scope2_market_kgco2e"])
    assert acc["target"]["fiscal_year"] == "FY2027"
    days = [r for r in rows if len(r) == 7 and r[0].startswith("2026-10")]
    assert len(days) == month.DAYS


def test_bad_requests_say_what_is_wrong(site: Path, tmp_path: Path) -> None:
    out = _report(site, "--period", "2026-13")
    assert out.returncode == 2
    assert "is not one of: a month (2026-10)" in out.stderr
    (tmp_path / "site.yaml").write_text("site: {id: x, timezone: UTC, region: CN}\n")
    out = subprocess.run([sys.executable, "-m", "lingtan", "report", "-c",
                          str(tmp_path / "site.yaml"), "--period", "2026-10"],
                         capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)
    assert out.returncode == 2
    assert "no ledger at" in out.stderr


def test_coverage_says_how_much_of_a_longer_period_has_data(site: Path) -> None:
    j = _report(site, "--period", "FY2027", "--format", "json")
    assert j.returncode == 0, j.stderr
    cov = json.loads(j.stdout)["coverage"]
    # a month of readings in a fiscal year of 365 days
    assert cov == {"intervals_with_data": 2976, "intervals": 365 * 96,
                   "share": round(2976 / (365 * 96), 4), "first": "2026-10-01 00:00",
                   "last": "2026-11-01 00:00"}
    html = _report(site, "--period", "FY2027", "-o", "fy.html")
    assert html.returncode == 0, html.stderr
    assert "(8.5 %)" in (site / "fy.html").read_text()
    assert "every figure below covers\n    those intervals only" in (site / "fy.html").read_text()
    c = _report(site, "--period", "FY2027", "--format", "csv")
    rows = {(r[0], r[1]): r[2] for r in csv.reader(io.StringIO(c.stdout)) if len(r) == 4}
    assert float(rows[("coverage", "share")]) == cov["share"]


def test_a_period_without_ledger_data_is_refused(site: Path) -> None:
    """November has no readings: an error naming the period, not a report of zeros."""
    for fmt in ("html", "json"):
        out = _report(site, "--period", "2026-11", "--format", fmt, "-o", f"empty.{fmt}")
        assert out.returncode == 2
        assert "no ledger data in 2026-11 (2026-11-01 00:00 to 2026-12-01 00:00" in out.stderr
        assert not (site / f"empty.{fmt}").exists()


def test_a_period_with_only_entries_booked_by_hand_is_reported(site: Path) -> None:
    """December has no readings but a refrigerant top-up: its Scope 1, and no coverage."""
    j = _report(site, "--period", "2026-12", "--format", "json")
    assert j.returncode == 0, j.stderr
    body = json.loads(j.stdout)
    assert body["coverage"]["intervals_with_data"] == 0
    assert body["accounts"]["scope1_kgco2e"] > 0
    out = _report(site, "--period", "2026-12", "-o", "december.html")
    assert out.returncode == 0, out.stderr
    assert "no meter readings in the period (0 of its\n    2976 15-minute intervals)" in (
        site / "december.html").read_text()
