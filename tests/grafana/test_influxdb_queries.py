"""Every panel's InfluxQL, run on a real InfluxDB holding a plant's day as ingest stores it.

The day is the readings of tests/grafana/plant.py written as ingest's own line protocol, with
the derived figures computed from them by the real rules code; each query goes to InfluxDB
with Grafana's macros and variables substituted as Grafana would (tests/grafana/macros.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lingtan.grafana.dashboards import Generated, generate
from tests.grafana.macros import Variables, substitute
from tests.grafana.plant import (
    DC_OVERHEAD,
    GAP,
    GAS_GAP,
    OTHER_SITE,
    SITE,
    UNMETERED_KW,
    PlantDay,
    layout,
    plant_day,
)
from tests.grafana.queries import Target, targets, variables
from tests.servers import InfluxDB1, influxdb

pytestmark = pytest.mark.integration

DB = "lingtan"
HOURS = 6


@dataclass
class Loaded:
    db: InfluxDB1
    day: PlantDay
    generic: list[Generated]
    plant: list[Generated]

    def run(self, t: Target, v: Variables | None = None, to_ms: int | None = None,
            from_ms: int | None = None) -> dict[str, Any]:
        q = substitute(t.query, v or Variables(SITE), from_ms or self.day.start_ms,
                       to_ms or self.day.end_ms, t.min_interval)
        result = self.db.query(q, db=DB)["results"][0]
        assert "error" not in result, f"{t.id}: {result['error']}\n{q}"
        return dict(result)

    def target(self, uid: str, panel: int, ref: str = "A") -> Target:
        return next(t for t in targets(self.plant)
                    if t.dashboard == uid and t.panel == panel and t.ref == ref)


def rows(result: dict[str, Any]) -> int:
    return sum(len(s["values"]) for s in result.get("series", []))


def values(result: dict[str, Any], column: str) -> list[float]:
    out = []
    for s in result.get("series", []):
        i = s["columns"].index(column)
        out += [r[i] for r in s["values"] if r[i] is not None]
    return out


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    tmp = tmp_path_factory.mktemp("grafana-influx")
    # 7 minutes into a 15-minute interval, in the past: the site's live figures (published every
    # 15 minutes from the start) never fall on an interval's first instant, where site power
    # has no energy to average yet and is rightly absent
    end = int(time.time() * 1000) // 900_000 * 900_000 - 8 * 60_000
    day = plant_day(tmp, end - HOURS * 3_600_000, end)
    with influxdb(tmp) as db:
        db.query(f'CREATE DATABASE "{DB}"')
        db.write(DB, day.lines)
        yield Loaded(db, day, generate(), generate(layout(tmp)))


def _all_targets() -> list[tuple[str, Target]]:
    # built from a throwaway layout only to name the parameters; the test uses `loaded`'s
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        plant = generate(layout(Path(d)))
    return [("generic", t) for t in targets(generate())] + [("plant", t) for t in targets(plant)]


@pytest.mark.parametrize(("which", "target"), _all_targets(),
                         ids=[f"{w}-{t.id}" for w, t in _all_targets()])
def test_every_panel_query_returns_rows(loaded: Loaded, which: str, target: Target) -> None:
    result = loaded.run(target)
    assert rows(result) > 0, f"{target.id} returned no rows:\n{target.query}"


def test_variable_queries_list_sites_and_devices(loaded: Loaded) -> None:
    by_name = {v["name"]: v for _, v in variables(loaded.plant)}
    sites = loaded.db.query(by_name["site"]["query"], db=DB)["results"][0]
    assert sorted(r[1] for r in sites["series"][0]["values"]) == sorted([SITE, OTHER_SITE])

    def devices(area: str) -> set[str]:
        q = by_name["device"]["query"].replace("$site", SITE).replace("${area:pipe}", area)
        res = loaded.db.query(q, db=DB)["results"][0]
        return {r[1] for r in res["series"][0]["values"]}

    every = devices(".*")
    assert {"grid-main", "line-a", "dc-intake", "edge-01", "ingest-lingtan-ingest"} <= every
    area = dict(o.split(" : ") for o in by_name["area"]["query"].split(", "))
    assert devices(area["assembly"]) == {"line-a", "line-b"}


def test_energy_by_area_adds_up_to_the_counters(loaded: Loaded) -> None:
    """The in-range totals per area are the counters' increase over the range, gap included."""
    assembly = loaded.run(loaded.target("lingtan-energy", 6, "A"))
    [kwh] = values(assembly, "kwh")  # Grafana names the series "assembly" (the alias)
    first, last = {}, {}
    for s in loaded.day.lines:
        if s.startswith("meter,site=wuhan-fab1,device=line-") and "energy_import_kwh" in s:
            device = s.split(",")[2].split("=")[1]
            value = float(s.split("energy_import_kwh=")[1].split(",")[0])
            first.setdefault(device, value)
            last[device] = value
    assert kwh == pytest.approx(sum(last[d] - first[d] for d in last), rel=1e-9)


def test_unmetered_remainder_is_what_no_sub_meter_sees(loaded: Loaded) -> None:
    result = loaded.run(loaded.target("lingtan-energy", 9))
    rest = sum(values(result, "Unmetered remainder"))
    # the plant draws UNMETERED_KW x the day's shape (0.7 + 0.3 sin(pi f)) outside the
    # sub-meters: its mean over the span is 0.7 + 0.6 / pi
    expected = UNMETERED_KW * (0.7 + 0.6 / math.pi) * HOURS
    assert rest == pytest.approx(expected, rel=0.01)


def test_pue_from_the_counters_and_from_rules(loaded: Loaded) -> None:
    per_hour = values(loaded.run(loaded.target("lingtan-datacentre", 4)), "PUE per hour")
    assert len(per_hour) >= HOURS
    assert all(p == pytest.approx(DC_OVERHEAD, rel=1e-3) for p in per_hour)
    [today] = values(loaded.run(loaded.target("lingtan-datacentre", 1)), "last")
    assert today == pytest.approx(DC_OVERHEAD, rel=1e-3)


def test_live_figures_are_the_last_rules_published(loaded: Loaded) -> None:
    site = [s for s in loaded.day.derived if s.device == "site"][-1].values
    [energy] = values(loaded.run(loaded.target("lingtan-site", 2)), "kWh")
    assert energy == pytest.approx(site["energy_today_kwh"])
    month = loaded.run(loaded.target("lingtan-site", 7))
    [s2m] = values(month, "Scope 2 market")
    assert s2m == pytest.approx(site["scope2_market_month_kgco2e"] / 1000)
    assert values(loaded.run(loaded.target("lingtan-site", 5)), "target") == [
        site["target_on_track"]]


def test_a_silent_device_shows_as_offline_and_as_a_gap(loaded: Loaded) -> None:
    polls = loaded.run(loaded.target("lingtan-health", 1))
    line_b = next(s for s in polls["series"] if s["tags"]["device"] == "line-b")
    line_a = next(s for s in polls["series"] if s["tags"]["device"] == "line-a")
    assert 0 in [r[1] for r in line_b["values"]]
    assert 0 not in [r[1] for r in line_a["values"]]
    counts = loaded.run(loaded.target("lingtan-health", 5))
    by_device = {s["tags"]["device"]: [r[1] for r in s["values"]] for s in counts["series"]}
    assert 0 in by_device["line-b"]
    # a meter without an electricity counter is covered too: the gas meter's silence is a gap,
    # the PV inverter (export counter only) reads all day; edge and ingest figures are no device
    assert 0 in by_device["gas-main"]
    assert 0 not in by_device["pv-roof"]
    assert 0 not in by_device["line-a"]
    assert not {"edge-01", "ingest-lingtan-ingest"} & set(by_device)
    offline = values(loaded.run(loaded.target("lingtan-site", 16)), "last")
    assert max(offline) == 1
    assert min(offline) == 0


def test_device_and_area_selections_narrow_the_panels(loaded: Loaded) -> None:
    t = loaded.target("lingtan-energy", 1)
    picked = loaded.run(t, Variables(SITE, devices=["line-a", "grid-main"]))
    assert {s["tags"]["device"] for s in picked["series"]} == {"line-a", "grid-main"}
    assembly = loaded.run(t, Variables(SITE, area="line-a|line-b"))
    assert {s["tags"]["device"] for s in assembly["series"]} == {"line-a", "line-b"}
    other = loaded.run(t, Variables(OTHER_SITE))
    assert {s["tags"]["device"] for s in other["series"]} == {"grid-main"}


def test_active_alerts_are_what_the_alert_engine_has_firing(loaded: Loaded) -> None:
    """line-b silent for 15 minutes fires meter_offline (critical here) until it reads again."""
    t = loaded.target("lingtan-site", 18)
    span = loaded.day.end_ms - loaded.day.start_ms
    mid_gap = loaded.day.start_ms + int(span * (GAP[0] + GAP[1]) / 2)
    during = loaded.run(t, to_ms=mid_gap)
    assert (values(during, "Firing"), values(during, "Critical")) == ([1.0], [1.0])
    after = loaded.run(t)  # the end of the day: line-b reads again, nothing fires
    assert (values(after, "Firing"), values(after, "Critical")) == ([0.0], [0.0])
    # the gas meter's silence fires nothing: it is not one of rules.meters
    assert GAS_GAP[0] > GAP[1]
    # rules publishes on change only: a range of the last 30 minutes holds no count, and the
    # panel still shows the state, from the count published hours before the range's start
    last_half_hour = loaded.run(t, from_ms=loaded.day.end_ms - 1_800_000)
    assert (values(last_half_hour, "Firing"), values(last_half_hour, "Critical")) == (
        [0.0], [0.0])
    published = [s.ts for s in loaded.day.derived if s.device == "alerts"]
    assert max(published) < loaded.day.end_ms - 2 * 3_600_000
    assert len([s for s in loaded.day.derived if s.device == "alerts"]) == 3
