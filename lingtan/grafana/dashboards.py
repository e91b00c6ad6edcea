"""The lingtan dashboards, built with grafana-foundation-sdk and queried in InfluxQL.

Four dashboards, each with the variables site, area and device:

- Plant overview (uid lingtan-site): live figures rules publishes as device `site`, emissions
  today / month / fiscal year, renewable share and CFE, the target trajectory, the alerts
  firing (the counts rules publishes as device `alerts`; the events themselves are not stored)
  and the conditions behind the default alert rules.
- Energy breakdown (lingtan-energy): energy by meter from counters; with a layout, by area and
  line, and the unmetered remainder.
- Device health (lingtan-health): polls, gaps, estimates, the edge outbox, ingest.
- Data centre (lingtan-datacentre): PUE per zone; with a layout, IT against facility power.

Panel ids are fixed (an alert rule's `panel:` links to one), listed in deploy/grafana/README.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import (
    bargauge,
    common,
    gauge,
    stat,
    statetimeline,
    table,
    text,
    timeseries,
)
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models import dashboard as dbm
from grafana_foundation_sdk.models import text as text_m

from lingtan.grafana.influxql import (
    INTERVAL,
    UNTIL_RANGE_END,
    InfluxQL,
    Select,
    alias,
    alternation,
    call,
    field,
    site,
    tag_is,
    tag_is_not,
    tag_matches,
)
from lingtan.grafana.layout import CONSUMPTION_IN, CONSUMPTION_OUT, SUBMETERED, Layout, Meter
from telemetry.quantities import QuantityOrigin, vocabulary

DATASOURCE_UID = "lingtan-influxdb"
# The derived device whose figures count the site's firing alerts (rules/service.py).
ALERTS_DEVICE = "alerts"
DATASOURCE = dbm.DataSourceRef(type_val="influxdb", uid=DATASOURCE_UID)
TAGS = ["lingtan"]
# Counter differences need readings in each bucket: a bucket much shorter than the poll interval
# is mostly empty and the chart jumps.
COUNTER_MIN_INTERVAL = "1m"
FIFTEEN_MIN = "15m"

DEVICE = "$device"
AREA = "${area:pipe}"  # a regex of device ids (custom variable), `.*` for All


# -- variables ------------------------------------------------------------------------------


def _site_variable() -> db.QueryVariable:
    return (
        db.QueryVariable("site")
        .label("Site")
        .description("Sites that have stored readings (the `site` tag ingest writes).")
        .datasource(DATASOURCE)
        .query('SHOW TAG VALUES FROM "meter" WITH KEY = "site"')
        .refresh(dbm.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dbm.VariableSort.ALPHABETICAL_ASC)
    )


def _area_variable(layout: Layout) -> db.CustomVariable:
    # Area is not a tag (ingest tags site, device, quality): each option's value is the regex
    # of the devices the site configs put in that area.
    options = ", ".join(
        f"{name} : {alternation(m.device for m in meters)}"
        for name, meters in layout.areas().items()
    )
    return (
        db.CustomVariable("area")
        .label("Area")
        .description(
            "Areas from the site configs' rules.meters (area is not stored as a tag). "
            "Dashboards generated without a site config have All only: "
            "`lingtan grafana dashboards -c site.yaml` adds them."
        )
        .values(options)
        .include_all(True)
        .all_value(".*")
        .current(dbm.VariableOption(text="All", value="$__all", selected=True))
    )


def _device_variable() -> db.QueryVariable:
    return (
        db.QueryVariable("device")
        .label("Device")
        .description("Devices of the site (the `device` tag), narrowed to the area.")
        .datasource(DATASOURCE)
        .query(
            'SHOW TAG VALUES FROM "meter" WITH KEY = "device" '
            f'WHERE "site" = \'$site\' AND "device" =~ /^({AREA})$/'
        )
        .refresh(dbm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dbm.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(dbm.VariableOption(text="All", value="$__all", selected=True))
    )


def _dashboard(uid: str, title: str, description: str, layout: Layout) -> db.Dashboard:
    return (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .editable()
        .timezone("browser")
        .time("now-24h", "now")
        .refresh("30s")
        .tooltip(dbm.DashboardCursorSync.CROSSHAIR)
        .with_variable(_site_variable())
        .with_variable(_area_variable(layout))
        .with_variable(_device_variable())
        .link(
            db.DashboardLink("lingtan")
            .type(dbm.DashboardLinkType.DASHBOARDS)
            .tags(TAGS)
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )


# -- panels ---------------------------------------------------------------------------------


def _q(statement: Select, ref: str = "A", legend: str | None = None) -> InfluxQL:
    q = InfluxQL(statement).ref_id(ref).datasource(DATASOURCE)
    return q.alias(legend) if legend else q


def _thresholds(*steps: tuple[float | None, str]) -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(dbm.ThresholdsMode.ABSOLUTE)
        .steps([dbm.Threshold(value=v, color=c) for v, c in steps])
    )


def _by_series() -> db.FieldColor:
    """A colour of Grafana's classic palette per series, so no two values of a panel share one.

    For stat, gauge and bar gauge panels, whose colour otherwise comes from the thresholds:
    panels whose colour says nothing about the value (no threshold steps to cross).
    """
    return db.FieldColor().mode(dbm.FieldColorModeId.PALETTE_CLASSIC)


def _last(*fields: str) -> common.ReduceDataOptions:
    reduce = common.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
    return reduce.fields("/" + "|".join(fields) + "/") if fields else reduce


def _derived(
    columns: Sequence[str],
    device: str = "site",
    group_time: str | None = None,
    fill: str | None = None,
) -> Select:
    """Figures rules publishes (measurement derived) of one derived device of the site."""
    return Select(
        tuple(columns),
        "derived",
        (site(), tag_is("device", device)),
        group_time=group_time,
        fill=fill,
    )


def _stat(pid: int, title: str, unit: str, targets: Iterable[InfluxQL], w: int = 6) -> stat.Panel:
    p = (
        stat.Panel()
        .id(pid)
        .title(title)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(w)
        .height(5)
        .reduce_options(_last())
        .graph_mode(common_m.BigValueGraphMode.AREA)
        .color_mode(common_m.BigValueColorMode.VALUE)
        .text_mode(common_m.BigValueTextMode.VALUE_AND_NAME)
        .color_scheme(_by_series())
    )
    for t in targets:
        p.with_target(t)
    return p


def _series(
    pid: int,
    title: str,
    unit: str,
    targets: Iterable[InfluxQL],
    *,
    w: int = 12,
    h: int = 8,
    bars: bool = False,
    stacked: bool = False,
    min_interval: str | None = None,
    description: str | None = None,
) -> timeseries.Panel:
    p = (
        timeseries.Panel()
        .id(pid)
        .title(title)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(w)
        .height(h)
        .fill_opacity(25 if bars else 10)
        .legend(
            common.VizLegendOptions()
            .display_mode(common_m.LegendDisplayMode.TABLE)
            .placement(common_m.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["sum" if bars else "mean", "max"])
        )
        .tooltip(common.VizTooltipOptions().mode(common_m.TooltipDisplayMode.MULTI))
    )
    if bars:
        p.draw_style(common_m.GraphDrawStyle.BARS)
    if stacked:
        p.stacking(common.StackingConfig().mode(common_m.StackingMode.NORMAL))
    if min_interval:
        p.interval(min_interval)
    if description:
        p.description(description)
    for t in targets:
        p.with_target(t)
    return p


def _note(pid: int, title: str, markdown: str, w: int = 24, h: int = 4) -> text.Panel:
    return (
        text.Panel()
        .id(pid)
        .title(title)
        .mode(text_m.TextMode.MARKDOWN)
        .content(markdown)
        .span(w)
        .height(h)
    )


def _counter_by_device(quantity: str, devices: str) -> Select:
    """A counter's increase per time bucket, per device (the reading closing each bucket)."""
    return Select(
        (call("non_negative_difference", call("last", field(quantity))),),
        "meter",
        (site(), tag_matches("device", devices), tag_matches("device", AREA)),
        group_time=INTERVAL,
        group_tags=("device",),
        fill="none",
    )


def _steps(quantity: str, devices: str, name: str = "kwh") -> Select:
    """Every step of a counter between two readings (resets and rollovers dropped), per device."""
    return Select(
        (call("non_negative_difference", field(quantity), name),),
        "meter",
        (site(), tag_matches("device", devices)),
        group_tags=("device",),
    )


def _readings_per_interval() -> Select:
    """Per device and time bucket, the readings of its most-read quantity (0 when none).

    One subquery per quantity a device reads (origin meter in the vocabulary): a device is
    silent in a bucket only when none of its quantities has a reading there. The edge agent's
    poll counts are published under the device's id too, so counting every Sample would hide a
    silent device behind its agent's health reports.
    """
    vocab = vocabulary()
    per_quantity = tuple(
        Select(
            (call("count", field(q), "n"),),
            "meter",
            (site(), tag_matches("device", DEVICE), tag_matches("device", AREA)),
            group_time=INTERVAL,
            group_tags=("device",),
            fill="none",
        )
        for q in vocab.names()
        if vocab[q].origin is QuantityOrigin.METER
    )
    return Select(
        (call("max", '"n"', "readings"),),
        per_quantity,
        group_time=INTERVAL,
        group_tags=("device",),
        fill="0",
    )


def _meters_sum(meters: Sequence[Meter], name: str, bucket: str | None) -> Select:
    """Energy of a set of meters, summed over time buckets (or the whole range)."""
    by_counter: dict[str, list[str]] = {}
    for m in meters:
        by_counter.setdefault(m.counter, []).append(m.device)
    subs = tuple(_steps(q, alternation(devs), name) for q, devs in sorted(by_counter.items()))
    return Select(
        (call("sum", f'"{name}"', name),),
        subs,
        group_time=bucket,
        fill="none" if bucket else None,
    )


# -- plant overview -------------------------------------------------------------------------


def overview(layout: Layout) -> db.Dashboard:
    """Plant overview: what the plant draws and emits now, and against its target."""
    d = _dashboard(
        "lingtan-site",
        "lingtan · Plant overview",
        "Live site power, energy and emissions today, this month and this fiscal year, "
        "renewable share, CFE and the reduction target, from the figures lingtan rules "
        "publishes (device `site` of the derived measurement).",
        layout,
    )
    d.with_row(db.Row("Now").id(100))
    d.with_panel(
        _stat(
            1, "Site power", "kwatt", [_q(_derived([call("last", field("site_power_kw"), "kW")]))]
        ).description("Average consumption power over the open 15-minute interval so far.")
    )
    d.with_panel(
        _stat(
            2,
            "Energy today",
            "kwatth",
            [_q(_derived([call("last", field("energy_today_kwh"), "kWh")]))],
        ).description("Site electricity consumption today (site time) so far.")
    )
    renewable = (
        gauge.Panel()
        .id(3)
        .title("Renewable share")
        .description(
            "On-site renewable consumed plus contracted renewables over consumption, hour by "
            "hour: today, this month, this fiscal year."
        )
        .datasource(DATASOURCE)
        .unit("percentunit")
        .min(0)
        .max(1)
        .span(6)
        .height(5)
        .reduce_options(_last())
        .thresholds(_thresholds((None, "red"), (0.3, "orange"), (0.6, "green")))
        .with_target(
            _q(
                _derived(
                    [
                        call("last", field("renewable_share_today_ratio"), "Today"),
                        call("last", field("renewable_share_month_ratio"), "Month"),
                        call("last", field("renewable_share_fy_ratio"), "Fiscal year"),
                    ]
                )
            )
        )
    )
    d.with_panel(renewable)
    d.with_panel(
        gauge.Panel()
        .id(4)
        .title("Carbon-free energy today (hourly)")
        .description("EnergyTag hourly matching: Σ min(load, clean supply) / Σ load, today.")
        .datasource(DATASOURCE)
        .unit("percentunit")
        .min(0)
        .max(1)
        .span(3)
        .height(5)
        .reduce_options(_last())
        .thresholds(_thresholds((None, "red"), (0.5, "orange"), (0.9, "green")))
        .with_target(_q(_derived([call("last", field("cfe_today_ratio"), "CFE")])))
    )
    d.with_panel(
        stat.Panel()
        .id(5)
        .title("Reduction target")
        .description("Whether the fiscal year's forecast at its pace so far is within allowance.")
        .datasource(DATASOURCE)
        .span(3)
        .height(5)
        .reduce_options(_last())
        .color_mode(common_m.BigValueColorMode.BACKGROUND)
        .graph_mode(common_m.BigValueGraphMode.NONE)
        .mappings(
            [
                dbm.ValueMap(
                    options={
                        "1": dbm.ValueMappingResult(text="On track", color="green", index=0),
                        "0": dbm.ValueMappingResult(text="Off track", color="red", index=1),
                    }
                )
            ]
        )
        .thresholds(_thresholds((None, "red"), (1, "green")))
        .with_target(_q(_derived([call("last", field("target_on_track"), "target")])))
    )

    d.with_row(db.Row("Emissions").id(101))
    kg = "suffix: kgCO₂e"
    t = "suffix: tCO₂e"
    for pid, name, period, unit, scale in (
        (6, "Today", "today", kg, ""),
        (7, "This month", "month", t, " / 1000"),
        (8, "This fiscal year", "fy", t, " / 1000"),
    ):
        cols = [
            alias(f"{call('last', field(f'{q}_{period}_kgco2e'))}{scale}", label)
            for q, label in (
                ("scope1", "Scope 1"),
                ("scope2_location", "Scope 2 location"),
                ("scope2_market", "Scope 2 market"),
            )
        ]
        d.with_panel(_stat(pid, f"Emissions {name.lower()}", unit, [_q(_derived(cols))], w=8))
    d.with_panel(
        bargauge.Panel()
        .id(9)
        .title("Target trajectory this fiscal year")
        .description(
            "Emissions of the target's scopes so far against what the linear trajectory allows "
            "to date; the forecast at this pace against the year's allowance."
        )
        .datasource(DATASOURCE)
        .unit(t)
        .span(12)
        .height(7)
        .min(0)
        .display_mode(common_m.BarGaugeDisplayMode.GRADIENT)
        .orientation(common_m.VizOrientation.HORIZONTAL)
        .reduce_options(_last())
        .color_scheme(_by_series())
        .with_target(
            _q(
                _derived(
                    [
                        call("last", field("target_actual_to_date_tco2e"), "Actual to date"),
                        call("last", field("target_budget_to_date_tco2e"), "Allowed to date"),
                        call("last", field("target_forecast_fy_tco2e"), "Forecast for the year"),
                        call("last", field("target_allowed_fy_tco2e"), "Allowance for the year"),
                    ]
                )
            )
        )
    )
    d.with_panel(
        _series(
            13,
            "Fiscal year to date against the trajectory",
            t,
            [
                _q(
                    _derived(
                        [
                            call("last", field("target_actual_to_date_tco2e"), "Actual"),
                            call("last", field("target_budget_to_date_tco2e"), "Trajectory"),
                        ],
                        group_time=INTERVAL,
                        fill="none",
                    )
                )
            ],
            h=7,
        )
    )

    d.with_row(db.Row("Trend").id(102))
    d.with_panel(
        _series(
            11,
            "Site power",
            "kwatt",
            [
                _q(
                    _derived(
                        [call("mean", field("site_power_kw"), "Site power")],
                        group_time=INTERVAL,
                        fill="none",
                    )
                )
            ],
        )
    )
    d.with_panel(
        _series(
            12,
            "Grid import and Scope 2 (location) per 15 minutes",
            "kwatth",
            [
                _q(
                    _derived(
                        [call("last", field("grid_import_kwh"), "Grid import")],
                        device="site-15m",
                        group_time=FIFTEEN_MIN,
                        fill="none",
                    ),
                    "A",
                ),
                _q(
                    _derived(
                        [call("last", field("scope2_location_kgco2e"), "Scope 2 location")],
                        device="site-15m",
                        group_time=FIFTEEN_MIN,
                        fill="none",
                    ),
                    "B",
                ),
            ],
            bars=True,
            description="Each closed 15-minute UTC interval as rules booked it (device "
            "site-15m); a late reading revises an interval in place.",
        ).override_by_name(
            "Scope 2 location",
            [
                dbm.DynamicConfigValue(id_val="unit", value="suffix: kgCO₂e"),
                dbm.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
            ],
        )
    )
    d.with_panel(
        _series(
            14,
            "Renewable share and CFE today",
            "percentunit",
            [
                _q(
                    _derived(
                        [
                            call("last", field("renewable_share_today_ratio"), "Renewable share"),
                            call("last", field("cfe_today_ratio"), "CFE (hourly)"),
                        ],
                        group_time=INTERVAL,
                        fill="none",
                    )
                )
            ],
            w=24,
        )
    )

    d.with_row(db.Row("Alerts").id(103))
    d.with_panel(
        stat.Panel()
        .id(18)
        .title("Active alerts")
        .description(
            "Alerts firing at the end of the time range, and how many of them are critical: "
            "the counts rules publishes (device `alerts`) each time they change, so the last "
            "one is read however long ago it was published. Which alerts they are is in "
            "`lingtan alerts list -c site.yaml` and in the events on the alert topic."
        )
        .datasource(DATASOURCE)
        .unit("none")
        .decimals(0)
        .span(8)
        .height(7)
        .reduce_options(_last())
        .graph_mode(common_m.BigValueGraphMode.NONE)
        .color_mode(common_m.BigValueColorMode.BACKGROUND)
        .text_mode(common_m.BigValueTextMode.VALUE_AND_NAME)
        .thresholds(_thresholds((None, "green"), (1, "red")))
        .with_target(
            _q(
                Select(
                    (
                        call("last", field("alerts_firing_count"), "Firing"),
                        call("last", field("alerts_critical_count"), "Critical"),
                    ),
                    "derived",
                    (site(), tag_is("device", ALERTS_DEVICE), UNTIL_RANGE_END),
                    time_filter=False,
                )
            )
        )
    )
    d.with_panel(
        _series(
            16,
            "Devices offline (edge agents)",
            "none",
            [
                _q(
                    Select(
                        (call("last", field("devices_offline_count")),),
                        "meter",
                        (site(),),
                        group_time=INTERVAL,
                        group_tags=("device",),
                        fill="none",
                    ),
                    legend="$tag_device",
                )
            ],
            w=8,
            h=7,
        ).thresholds(_thresholds((None, "green"), (1, "red")))
    )
    d.with_panel(
        _series(
            17,
            "Failed polls",
            "none",
            [
                _q(
                    _counter_by_device("poll_failed_count", DEVICE),
                    legend="$tag_device",
                )
            ],
            w=8,
            h=7,
            bars=True,
            min_interval=COUNTER_MIN_INTERVAL,
        )
    )
    d.with_panel(
        _note(
            15,
            "Alerts",
            "**Active alerts** counts what rules' alert engine has firing. The alert events "
            "themselves (which rule, which device, firing / resolved) go to "
            "`lingtan/v1/{site}/alert` and the configured channels and are not stored here: "
            "`lingtan alerts list -c site.yaml` lists them. Beside it, the conditions the "
            "default rules watch, from stored figures: devices offline per edge agent and "
            "failed polls; the reduction target is above.",
            h=3,
        )
    )
    return d


# -- energy breakdown -----------------------------------------------------------------------


def energy(layout: Layout) -> db.Dashboard:
    """Energy by meter, area and line, from counters; the unmetered remainder."""
    d = _dashboard(
        "lingtan-energy",
        "lingtan · Energy breakdown",
        "Energy from the meters' counters (differences of cumulative registers; resets and "
        "rollovers are dropped here, the ledger accounts for them). Area and line come from "
        "the site configs.",
        layout,
    )
    d.with_row(db.Row("By meter").id(100))
    d.with_panel(
        _series(
            1,
            "Energy imported by meter",
            "kwatth",
            [_q(_counter_by_device("energy_import_kwh", DEVICE), legend="$tag_device")],
            bars=True,
            stacked=False,
            min_interval=COUNTER_MIN_INTERVAL,
        )
    )
    in_range = Select(
        (call("sum", '"kwh"', "kWh"),),
        (_steps("energy_import_kwh", DEVICE),),
        (tag_matches("device", AREA),),
        group_tags=("device",),
    )
    d.with_panel(
        bargauge.Panel()
        .id(2)
        .title("Energy imported by meter in the time range")
        .datasource(DATASOURCE)
        .unit("kwatth")
        .span(12)
        .height(8)
        .min(0)
        .display_mode(common_m.BarGaugeDisplayMode.GRADIENT)
        .orientation(common_m.VizOrientation.HORIZONTAL)
        .reduce_options(_last())
        .color_scheme(_by_series())
        .with_target(_q(in_range, legend="$tag_device"))
    )
    d.with_panel(
        _series(
            3,
            "Energy exported or generated by meter",
            "kwatth",
            [_q(_counter_by_device("energy_export_kwh", DEVICE), legend="$tag_device")],
            bars=True,
            min_interval=COUNTER_MIN_INTERVAL,
            description="Export registers: what a PV inverter generated, what the grid "
            "connection exported.",
        )
    )
    d.with_panel(
        _series(
            4,
            "Gas by meter",
            "m3",
            [_q(_counter_by_device("gas_volume_m3", DEVICE), legend="$tag_device")],
            bars=True,
            min_interval=COUNTER_MIN_INTERVAL,
            description="Gas volume as metered (line conditions; rules corrects it to "
            "standard conditions for Scope 1).",
        )
    )

    areas, lines = layout.areas(), layout.lines()
    balance_in = layout.with_roles(CONSUMPTION_IN)
    balance_out = layout.with_roles(CONSUMPTION_OUT)
    submetered = layout.with_roles(SUBMETERED)
    d.with_row(db.Row("By area and line").id(101))
    if not areas and not lines and not (balance_in and submetered):
        d.with_panel(
            _note(
                5,
                "Areas, lines and the unmetered remainder",
                "Ingest stores site, device and quality as tags; which meter belongs to which "
                "area and line, and which is the grid connection, is in the site config "
                "(`rules.meters`). Generate these dashboards from it to get energy by area "
                "and line and the unmetered remainder here:\n\n"
                "`lingtan grafana dashboards -c site.yaml -o DIR` or "
                "`lingtan grafana push -c site.yaml …`",
            )
        )
        return d
    pid = 5
    for title, groups in (("area", areas), ("line", lines)):
        if not groups:
            continue
        d.with_panel(
            _series(
                pid,
                f"Electricity by {title}",
                "kwatth",
                [
                    _q(_meters_sum(ms, "kwh", INTERVAL), ref=chr(65 + i), legend=name)
                    for i, (name, ms) in enumerate(groups.items())
                ],
                bars=True,
                stacked=True,
                min_interval=COUNTER_MIN_INTERVAL,
            )
        )
        d.with_panel(
            bargauge.Panel()
            .id(pid + 1)
            .title(f"Electricity by {title} in the time range")
            .datasource(DATASOURCE)
            .unit("kwatth")
            .span(12)
            .height(8)
            .min(0)
            .display_mode(common_m.BarGaugeDisplayMode.GRADIENT)
            .orientation(common_m.VizOrientation.HORIZONTAL)
            .reduce_options(_last())
            .color_scheme(_by_series())
            .targets(
                [
                    _q(_meters_sum(ms, "kwh", None), ref=chr(65 + i), legend=name)
                    for i, (name, ms) in enumerate(groups.items())
                ]
            )
        )
        pid += 2
    if balance_in and submetered:
        d.with_panel(_remainder(pid, balance_in, balance_out, submetered))
    return d


def _remainder(
    pid: int, into: Sequence[Meter], out: Sequence[Meter], submetered: Sequence[Meter]
) -> timeseries.Panel:
    """Consumption (the site balance), what sub-meters saw, and the rest nobody meters."""
    subs: list[Select] = []
    for group, name in ((into, "plus"), (out, "minus"), (submetered, "sub")):
        by_counter: dict[str, list[str]] = {}
        for m in group:
            by_counter.setdefault(m.counter, []).append(m.device)
        subs += [_steps(q, alternation(ds), name) for q, ds in sorted(by_counter.items())]
    # Per bucket: a term whose meters sent nothing in it is null, and so is the remainder: a
    # bucket is left blank rather than shown with a term missing.
    source = tuple(subs)
    columns: list[str] = [
        alias(call("sum", '"plus"'), "In (grid, generation, discharge)"),
        alias(call("sum", '"sub"'), "Sub-metered"),
    ]
    if out:
        columns.append(alias(call("sum", '"minus"'), "Out (export, charge)"))
        rest = 'sum("plus") - sum("minus") - sum("sub")'
    else:
        rest = 'sum("plus") - sum("sub")'
    columns.append(alias(rest, "Unmetered remainder"))
    return _series(
        pid,
        "Consumption, sub-metered and the unmetered remainder",
        "kwatth",
        [_q(Select(tuple(columns), source, group_time=INTERVAL, fill="none"))],
        w=24,
        bars=True,
        min_interval=COUNTER_MIN_INTERVAL,
        description="Consumption = grid import + generation + battery discharge − export − "
        "battery charge; the remainder is consumption minus sub-meters and data-centre "
        "intakes (rules/accounts.py does the same per 15 minutes in the ledger).",
    )


# -- device health --------------------------------------------------------------------------


def health(layout: Layout) -> db.Dashboard:
    """Edge devices and agents, the outbox, ingest."""
    d = _dashboard(
        "lingtan-health",
        "lingtan · Device health",
        "Polls per device and the edge agents' own figures (published every "
        "edge.health_interval_s), gaps and estimates in the stored readings, and ingest's "
        "self-metrics (device ingest-<client_id>).",
        layout,
    )
    d.with_row(db.Row("Devices").id(100))
    polls = (
        statetimeline.Panel()
        .id(1)
        .title("Successful polls per interval (0 = offline)")
        .description(
            "From each device's poll_ok_count as its edge agent reports it; no value means "
            "the agent reported nothing (agent down or offline)."
        )
        .datasource(DATASOURCE)
        .span(24)
        .height(9)
        .interval("2m")
        .show_value(common_m.VisibilityMode.NEVER)
        .thresholds(_thresholds((None, "red"), (1, "green")))
        .color_scheme(db.FieldColor().mode(dbm.FieldColorModeId.THRESHOLDS))
        .with_target(_q(_counter_by_device("poll_ok_count", DEVICE), legend="$tag_device"))
    )
    d.with_panel(polls)
    for pid, title, q in (
        (2, "Failed polls", "poll_failed_count"),
        (3, "Missed poll ticks (overruns)", "poll_missed_count"),
    ):
        d.with_panel(
            _series(
                pid,
                title,
                "none",
                [_q(_counter_by_device(q, DEVICE), legend="$tag_device")],
                w=8,
                bars=True,
                min_interval=COUNTER_MIN_INTERVAL,
            )
        )
    d.with_panel(
        _series(
            4,
            "Poll duration",
            "ms",
            [
                _q(
                    Select(
                        (call("max", field("poll_duration_ms")),),
                        "meter",
                        (site(), tag_matches("device", DEVICE), tag_matches("device", AREA)),
                        group_time=INTERVAL,
                        group_tags=("device",),
                        fill="none",
                    ),
                    legend="$tag_device",
                )
            ],
            w=8,
        )
    )

    d.with_row(db.Row("Gaps and estimates").id(101))
    d.with_panel(
        statetimeline.Panel()
        .id(5)
        .title("Readings per interval, any quantity (0 = gap)")
        .description(
            "Readings each device sent per interval, of whichever quantity it reads most often "
            "(every quantity a device reads counts: energy and gas counters, power, "
            "temperature...; the edge agent's poll counts do not). Rules books a silence "
            "longer than the meter's gap_s as a gap and spreads the energy over it, flagged "
            "estimated (the events are in the ledger and the reports)."
        )
        .datasource(DATASOURCE)
        .span(12)
        .height(8)
        .interval("5m")
        .show_value(common_m.VisibilityMode.NEVER)
        .thresholds(_thresholds((None, "red"), (1, "green")))
        .color_scheme(db.FieldColor().mode(dbm.FieldColorModeId.THRESHOLDS))
        .with_target(_q(_readings_per_interval(), legend="$tag_device"))
    )
    d.with_panel(
        _series(
            6,
            "Samples not of good quality",
            "none",
            [
                _q(
                    Select(
                        (call("count", field("seq")),),
                        "meter",
                        (site(), tag_is_not("quality", "good"), tag_matches("device", DEVICE)),
                        group_time=INTERVAL,
                        group_tags=("device", "quality"),
                        fill="none",
                    ),
                    legend="$tag_device $tag_quality",
                )
            ],
            bars=True,
            description="Samples stored with quality estimated or questionable (e.g. imported "
            "with `lingtan replay` from a CSV export).",
        )
    )

    d.with_row(db.Row("Edge agents").id(102))
    for pid, title, unit, expr in (
        (7, "Outbox depth", "none", call("max", field("outbox_depth_count"))),
        (8, "Oldest Sample in the outbox", "s", call("max", field("outbox_age_s"))),
    ):
        d.with_panel(
            _series(
                pid,
                title,
                unit,
                [
                    _q(
                        Select(
                            (expr,),
                            "meter",
                            (site(),),
                            group_time=INTERVAL,
                            group_tags=("device",),
                            fill="none",
                        ),
                        legend="$tag_device",
                    )
                ],
                w=8,
                description="Samples waiting for the broker's PUBACK on each edge agent; "
                "grows while the broker is unreachable.",
            )
        )
    d.with_panel(
        _series(
            9,
            "Samples dropped by the outbox bound",
            "none",
            [
                _q(
                    Select(
                        (
                            call(
                                "non_negative_difference",
                                call("max", field("outbox_dropped_count")),
                            ),
                        ),
                        "meter",
                        (site(),),
                        group_time=INTERVAL,
                        group_tags=("device",),
                        fill="none",
                    ),
                    legend="$tag_device",
                )
            ],
            w=8,
            bars=True,
            min_interval=COUNTER_MIN_INTERVAL,
        ).thresholds(_thresholds((None, "green"), (1, "red")))
    )
    d.with_panel(
        _series(
            10,
            "Devices online and offline per agent",
            "none",
            [
                _q(
                    Select(
                        (
                            call("last", field("devices_online_count"), "online"),
                            call("last", field("devices_offline_count"), "offline"),
                        ),
                        "meter",
                        (site(),),
                        group_time=INTERVAL,
                        group_tags=("device",),
                        fill="none",
                    ),
                    legend="$tag_device $col",
                )
            ],
            w=24,
            h=7,
        )
    )

    d.with_row(db.Row("Ingest").id(103))
    d.with_panel(
        _series(
            11,
            "Ingest lag (oldest Sample of a batch, reading to stored)",
            "ms",
            [
                _q(
                    Select(
                        (call("max", field("ingest_lag_ms")),),
                        "meter",
                        (site(),),
                        group_time=INTERVAL,
                        group_tags=("device",),
                        fill="none",
                    ),
                    legend="$tag_device",
                )
            ],
        )
    )
    d.with_panel(
        _series(
            12,
            "Ingest: written, duplicates, rejected, sink errors",
            "none",
            [
                _q(
                    Select(
                        (call("non_negative_difference", call("max", field(q))),),
                        "meter",
                        (site(),),
                        group_time=INTERVAL,
                        group_tags=("device",),
                        fill="none",
                    ),
                    ref=chr(65 + i),
                    legend=f"$tag_device {label}",
                )
                for i, (q, label) in enumerate(
                    (
                        ("ingest_samples_written_count", "written"),
                        ("ingest_duplicates_count", "duplicates"),
                        ("ingest_rejected_count", "rejected"),
                        ("ingest_sink_errors_count", "sink errors"),
                    )
                )
            ],
            min_interval=COUNTER_MIN_INTERVAL,
        )
    )
    d.with_panel(
        table.Panel()
        .id(13)
        .title("Last health report per device")
        .description("The latest poll counts each edge agent reported (counts since it started).")
        .datasource(DATASOURCE)
        .span(24)
        .height(8)
        .with_target(
            _q(
                Select(
                    (
                        call("last", field("poll_ok_count"), "polls ok"),
                        call("last", field("poll_failed_count"), "polls failed"),
                        call("last", field("poll_missed_count"), "ticks missed"),
                        call("last", field("poll_duration_ms"), "last poll (ms)"),
                    ),
                    "meter",
                    (site(), tag_matches("device", DEVICE), tag_matches("device", AREA)),
                    group_tags=("device",),
                )
            ).table()
        )
    )
    return d


# -- data centre ----------------------------------------------------------------------------


def datacentre(layout: Layout) -> db.Dashboard:
    """PUE per zone; IT against facility power."""
    d = _dashboard(
        "lingtan-datacentre",
        "lingtan · Data centre",
        "PUE per data-centre zone (device dc-<zone>: the zone's intake over its IT energy "
        "today) and, from the site configs, the IT and facility meters of each zone.",
        layout,
    )
    pue = Select(
        (call("last", field("pue_today_ratio")),),
        "derived",
        (site(), tag_matches("device", "dc-.*")),
        group_tags=("device",),
    )
    d.with_panel(
        stat.Panel()
        .id(1)
        .title("PUE today")
        .datasource(DATASOURCE)
        .unit("none")
        .decimals(2)
        .span(8)
        .height(8)
        .reduce_options(_last())
        .thresholds(_thresholds((None, "green"), (1.5, "orange"), (2.0, "red")))
        .with_target(_q(pue, legend="$tag_device"))
    )
    d.with_panel(
        _series(
            2,
            "PUE today, as the day goes",
            "none",
            [
                _q(
                    Select(
                        (call("last", field("pue_today_ratio")),),
                        "derived",
                        (site(), tag_matches("device", "dc-.*")),
                        group_time=INTERVAL,
                        group_tags=("device",),
                        fill="none",
                    ),
                    legend="$tag_device",
                )
            ],
            w=16,
            h=8,
        )
    )
    zones = layout.zones()
    if not zones:
        d.with_panel(
            _note(
                3,
                "IT and facility power",
                "Which meters measure a zone's IT load and its intake is in the site config "
                "(`rules.meters` with role it_load / dc_facility and `zone`). Generate these "
                "dashboards from it (`lingtan grafana dashboards -c site.yaml`) to compare "
                "them here.",
            )
        )
        return d
    pid = 3
    for zone, meters in zones.items():
        it = alternation(m.device for m in meters if m.role == "it_load")
        fac = alternation(m.device for m in meters if m.role == "dc_facility")
        targets = []
        for i, (devices, label) in enumerate(((it, "IT load"), (fac, "Facility (intake)"))):
            targets.append(
                _q(
                    Select(
                        (call("sum", '"kw"', label),),
                        (
                            Select(
                                (call("mean", field("active_power_kw"), "kw"),),
                                "meter",
                                (site(), tag_matches("device", devices)),
                                group_time=INTERVAL,
                                group_tags=("device",),
                                fill="none",
                            ),
                        ),
                        group_time=INTERVAL,
                        fill="none",
                    ),
                    ref=chr(65 + i),
                )
            )
        d.with_panel(_series(pid, f"Zone {zone}: IT and facility power", "kwatt", targets, w=12))
        interval_pue = Select(
            (alias('sum("fac") / sum("it")', "PUE per hour"),),
            (
                _steps("energy_import_kwh", fac, "fac"),
                _steps("energy_import_kwh", it, "it"),
            ),
            group_time="1h",
            fill="none",
        )
        d.with_panel(
            _series(
                pid + 1,
                f"Zone {zone}: PUE per hour from the counters",
                "none",
                [_q(interval_pue)],
                w=12,
            )
        )
        pid += 2
    return d


# -- output ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Generated:
    """One dashboard as JSON, with the file name it is written to."""

    filename: str
    uid: str
    model: dict[str, object]

    def text(self) -> str:
        """The JSON as committed: sorted keys, two-space indent, newline at the end."""
        return json.dumps(self.model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


BUILDERS = (
    ("plant-overview.json", overview),
    ("energy-breakdown.json", energy),
    ("device-health.json", health),
    ("data-centre.json", datacentre),
)


def generate(layout: Layout | None = None) -> list[Generated]:
    """Every dashboard for `layout` (generic when None)."""
    layout = layout or Layout()
    out = []
    for filename, build in BUILDERS:
        model = build(layout).build()
        data = json.loads(JSONEncoder(sort_keys=True).encode(model))
        out.append(Generated(filename, str(data["uid"]), data))
    return out


def write(directory: Path, layout: Layout | None = None) -> list[Path]:
    """Write every dashboard into `directory`; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for g in generate(layout):
        path = directory / g.filename
        path.write_text(g.text(), "utf-8")
        paths.append(path)
    return paths
