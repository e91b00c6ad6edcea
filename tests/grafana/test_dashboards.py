"""The dashboards as code: committed JSON is current, and every name a query uses is stored."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ingest.influx import DERIVED_MEASUREMENT, METER_MEASUREMENT, line
from lingtan.grafana.dashboards import BUILDERS, DATASOURCE_UID, generate
from lingtan.grafana.influxql import (
    MEASUREMENTS,
    TAGS,
    UNTIL_RANGE_END,
    SchemaError,
    Select,
    field,
    tag,
)
from lingtan.grafana.layout import Layout
from telemetry.quantities import QuantityOrigin, vocabulary
from telemetry.sample import Quality, Sample
from tests.grafana.plant import layout as plant_layout
from tests.grafana.queries import names, targets, variables

ROOT = Path(__file__).parents[2]
COMMITTED = ROOT / "deploy" / "grafana" / "dashboards"


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    return plant_layout(tmp_path_factory.mktemp("plant"))


def test_committed_json_is_what_the_code_generates() -> None:
    """Fails when deploy/grafana/dashboards is stale: run `lingtan grafana dashboards`."""
    generated = {g.filename: g.text() for g in generate()}
    on_disk = {p.name: p.read_text("utf-8") for p in COMMITTED.glob("*.json")}
    assert sorted(on_disk) == sorted(generated)
    for name, text in generated.items():
        assert on_disk[name] == text, f"{name} is stale: run `lingtan grafana dashboards`"


def test_the_check_command_tells_stale_from_current(tmp_path: Path) -> None:
    def check(folder: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lingtan", "grafana", "dashboards",
                               "--check", "-o", str(folder)],
                              capture_output=True, text=True, timeout=60, check=False)

    ok = check(COMMITTED)
    assert ok.returncode == 0, ok.stderr
    for p in COMMITTED.glob("*.json"):
        (tmp_path / p.name).write_text(p.read_text().replace("Site power", "Site Power"))
    stale = check(tmp_path)
    assert stale.returncode == 1
    assert "stale:" in stale.stderr
    assert "plant-overview.json" in stale.stderr


def test_ingest_writes_the_measurements_and_tags_the_queries_may_name() -> None:
    """TAGS and MEASUREMENTS are read off ingest's own line builder, not assumed."""
    s = Sample(site="s", device="d", seq=1, ts=1, values={"active_power_kw": 1.0},
               quality=Quality.ESTIMATED)
    for measurement in (METER_MEASUREMENT, DERIVED_MEASUREMENT):
        head = line(s, measurement).split(" ")[0].split(",")
        assert head[0] == measurement
        assert tuple(kv.split("=")[0] for kv in head[1:]) == TAGS
    assert set(MEASUREMENTS) == {METER_MEASUREMENT, DERIVED_MEASUREMENT}


@pytest.mark.parametrize("with_layout", [False, True], ids=["generic", "plant"])
def test_every_name_a_query_uses_is_one_ingest_writes(with_layout: bool, plant: Layout) -> None:
    vocab = vocabulary()
    dashboards = generate(plant if with_layout else None)
    queries = [(t.id, t.query) for t in targets(dashboards)]
    queries += [(f"{uid}${v['name']}", v["query"]) for uid, v in variables(dashboards)
                if v["type"] == "query"]
    assert len(queries) > 40
    for where, q in queries:
        n = names(q)
        assert not n.unclassified, f"{where}: cannot tell what {n.unclassified} are in {q}"
        assert n.measurements, f"{where}: no measurement in {q}"
        assert n.measurements <= set(MEASUREMENTS), f"{where}: {n.measurements}"
        assert n.tags <= set(TAGS), f"{where}: tags {n.tags - set(TAGS)} are not stored"
        for f in n.fields - n.aliases:
            assert f == "seq" or f in vocab, f"{where}: {f!r} is not a quantity"


def test_every_panel_queries_the_lingtan_datasource_by_site() -> None:
    for g in generate():
        ids = [p["id"] for p in g.model["panels"]]  # type: ignore[attr-defined]
        assert len(ids) == len(set(ids)), f"{g.uid}: duplicate panel ids"
        for p in g.model["panels"]:  # type: ignore[attr-defined]
            for t in p.get("targets", []):
                assert t["datasource"] == {"type": "influxdb", "uid": DATASOURCE_UID}
                assert t["rawQuery"] is True
                # the time range, or (state published only on change) up to its end
                assert "$timeFilter" in t["query"] or UNTIL_RANGE_END in t["query"], (
                    f"{g.uid}#{p['id']}: no time filter")
                assert "\"site\" = '$site'" in t["query"], f"{g.uid}#{p['id']}: not per site"
        names_ = [v["name"] for v in g.model["templating"]["list"]]  # type: ignore[index]
        assert names_ == ["site", "area", "device"]


def test_panel_ids_alert_rules_link_to_stay_put() -> None:
    """An alert rule's `panel:` is a panel id of the overview: these must not move."""
    overview = next(g for g in generate() if g.uid == "lingtan-site")
    by_id = {p["id"]: p["title"] for p in overview.model["panels"]}  # type: ignore[attr-defined]
    assert by_id[1] == "Site power"
    assert by_id[5] == "Reduction target"
    assert by_id[16] == "Devices offline (edge agents)"
    assert by_id[18] == "Active alerts"
    assert [f for f, _ in BUILDERS] == ["plant-overview.json", "energy-breakdown.json",
                                         "device-health.json", "data-centre.json"]


def test_the_layout_adds_areas_lines_remainder_and_zones(plant: Layout) -> None:
    generic = {g.uid: g.model for g in generate()}
    laid = {g.uid: g.model for g in generate(plant)}

    def titles(model: dict[str, object]) -> list[str]:
        return [p["title"] for p in model["panels"]]  # type: ignore[attr-defined]

    assert "Electricity by area" not in titles(generic["lingtan-energy"])
    assert "Areas, lines and the unmetered remainder" in titles(generic["lingtan-energy"])
    assert {"Electricity by area", "Electricity by line",
            "Consumption, sub-metered and the unmetered remainder"} <= set(
        titles(laid["lingtan-energy"]))
    assert "Zone dc1: IT and facility power" in titles(laid["lingtan-datacentre"])
    area = next(v for v in laid["lingtan-energy"]["templating"]["list"]  # type: ignore[index]
                if v["name"] == "area")
    assert area["query"] == "assembly : line-a|line-b, utilities : compressor-1"
    assert area["allValue"] == ".*"
    # the data-centre intake is sub-metered, its IT load is inside it: never both
    remainder = next(p for p in laid["lingtan-energy"]["panels"]  # type: ignore[index]
                     if p["title"].startswith("Consumption"))
    q = remainder["targets"][0]["query"]
    assert "dc-intake" in q
    assert "dc-it|" not in q
    assert "|dc-it)" not in q


def test_names_are_checked_when_a_query_is_built() -> None:
    with pytest.raises(SchemaError, match="'active_power' is not a quantity"):
        field("active_power")
    with pytest.raises(SchemaError, match="'area' is not a tag ingest writes"):
        tag("area")
    with pytest.raises(SchemaError, match="'meters' is not a measurement ingest writes"):
        Select(('last("seq")',), "meters")  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match="'line' is not a tag"):
        Select(('last("seq")',), "meter", group_tags=("line",))
    assert field("seq") == '"seq"'


# Grafana's colour mode for a panel that sets none (each panel plugin's default).
_DEFAULT_COLOUR = {"timeseries": "palette-classic", "stat": "thresholds", "gauge": "thresholds",
                   "bargauge": "thresholds", "state-timeline": "thresholds"}


def _several_series(panel: dict[str, Any]) -> bool:
    """Whether a panel's targets give more than one series (columns, targets or tag groups)."""
    ts = panel.get("targets", [])
    if len(ts) > 1:
        return True
    for t in ts:
        q = t["query"]
        head = q.split(" FROM ", 1)[0]
        tail = re.search(r"GROUP BY ((?:[^()]|time\([^)]*\))*)(?: fill\([^)]*\))?$", q)
        if head.count(", ") or (tail and '"' in tail.group(1)):
            return True
    return False


@pytest.mark.parametrize("with_layout", [False, True], ids=["generic", "plant"])
def test_no_two_series_of_a_panel_share_a_colour(with_layout: bool, plant: Layout) -> None:
    """A panel of several series colours them from a palette, never one colour for all.

    Thresholds colour by value (red beyond a limit): fine for several series when there are
    steps to cross, but a single step paints every series the same.
    """
    checked = 0
    for g in generate(plant if with_layout else None):
        for p in g.model["panels"]:  # type: ignore[attr-defined]
            # a table draws no colours unless a cell type asks for them
            if p["type"] in ("row", "text", "table") or not _several_series(p):
                continue
            checked += 1
            where = f"{g.uid}#{p['id']} {p['title']}"
            defaults = p.get("fieldConfig", {}).get("defaults", {})
            mode = defaults.get("color", {}).get("mode") or _DEFAULT_COLOUR[p["type"]]
            assert mode != "fixed", where
            if mode == "thresholds":
                steps = defaults.get("thresholds", {}).get("steps", [])
                assert len({s["color"] for s in steps}) > 1, f"{where}: one colour for all"
            fixed = [prop["value"]["fixedColor"]
                     for o in p.get("fieldConfig", {}).get("overrides", [])
                     for prop in o["properties"] if prop["id"] == "color"]
            assert len(fixed) == len(set(fixed)), f"{where}: overrides repeat {fixed}"
    assert checked > 25


def test_gaps_count_every_quantity_a_device_reads() -> None:
    """The gap panel counts readings of every meter quantity, never the poll counts."""
    health = next(g for g in generate() if g.uid == "lingtan-health")
    [gaps] = [p for p in health.model["panels"] if p["id"] == 5]  # type: ignore[attr-defined]
    n = names(gaps["targets"][0]["query"])
    vocab = vocabulary()
    meter = {q for q in vocab.names() if vocab[q].origin is QuantityOrigin.METER}
    assert n.fields - n.aliases == meter
    assert {"energy_import_kwh", "gas_volume_m3", "temperature_c"} <= meter
