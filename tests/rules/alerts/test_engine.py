"""The state machine under an injected clock: for:, hysteresis, repeats, silences, maintenance
windows, restarts on the same database. Messages are read from the real outbox."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from rules.alerts import (
    BalanceFigures,
    Figures,
    QualityFigures,
    Reading,
    State,
    TargetFigures,
)
from tests.rules.alerts.helpers import (
    POWER_RULE,
    SITE,
    T0,
    TZ,
    Clock,
    config,
    engine,
    outbox,
    power,
)


def _state(e, key: str) -> State:  # type: ignore[no-untyped-def]
    return next(a.state for a in e.states() if a.key == key)


KEY = "compressor-power{device=compressor-1,quantity=active_power_kw}"


def test_for_delays_firing_and_hysteresis_delays_clearing(tmp_path: Path) -> None:
    clock = Clock()
    e = engine(tmp_path, config(rules=[POWER_RULE]), clock)
    assert e.evaluate(power(210, clock())) == []
    assert _state(e, KEY) is State.PENDING
    clock.advance(4)
    assert e.evaluate(power(195, clock())) == []  # under 200 before 5 min: back to inactive
    assert _state(e, KEY) is State.INACTIVE
    clock.advance(1)
    e.evaluate(power(212.5, clock()))  # pending again, from now
    clock.advance(4.9)
    assert e.evaluate(power(215, clock())) == []
    clock.advance(0.1)
    [fired] = e.evaluate(power(212.5, clock()))
    assert (fired.kind, fired.key, fired.payload["value"], fired.payload["threshold"]) == (
        "firing", KEY, 212.5, 200)
    assert fired.payload["since"] == clock()
    clock.advance(1)
    assert e.evaluate(power(185, clock())) == []  # between 180 and 200: still firing
    assert _state(e, KEY) is State.FIRING
    clock.advance(1)
    [resolved] = e.evaluate(power(179, clock()))
    assert resolved.kind == "resolved"
    assert resolved.payload["since"] == fired.payload["since"]
    assert [c for c, _ in outbox(e)] == ["ops", "ops"]
    assert [t.split("]")[0] for _, t in outbox(e)] == ["[warning", "[resolved"]


def test_below_with_clear_above_renewable_default(tmp_path: Path) -> None:
    clock = Clock()
    cfg = config(renewable_share_target=0.3)
    assert [r.name for r in cfg.effective_rules] == ["renewable_share_below_target"]
    e = engine(tmp_path, cfg, clock)
    e.evaluate(Figures(renewable_share=0.25))
    clock.advance(60)
    [fired] = e.evaluate(Figures(renewable_share=0.28))
    assert fired.kind == "firing"
    assert fired.payload["severity"] == "info"
    clock.advance(10)
    assert e.evaluate(Figures(renewable_share=0.305)) == []  # over the target, not over 0.31
    [resolved] = e.evaluate(Figures(renewable_share=0.32))
    assert resolved.kind == "resolved"


def test_a_missing_figure_neither_fires_nor_resolves(tmp_path: Path) -> None:
    clock = Clock()
    rule = POWER_RULE | {"for": 0}
    e = engine(tmp_path, config(rules=[rule]), clock)
    [_fired] = e.evaluate(power(250, clock()))
    clock.advance(30)
    assert e.evaluate(Figures()) == []
    assert _state(e, KEY) is State.FIRING


def test_repeat_interval(tmp_path: Path) -> None:
    clock = Clock()
    rule = POWER_RULE | {"for": 0, "repeat": "1h"}
    e = engine(tmp_path, config(rules=[rule], repeat="4h"), clock)
    kinds = []
    for _ in range(13):  # every 10 minutes for two hours
        kinds += [ev.kind for ev in e.evaluate(power(250, clock()))]
        clock.advance(10)
    assert kinds == ["firing", "repeat", "repeat"]
    assert len(outbox(e)) == 3


def test_no_repeat_when_zero(tmp_path: Path) -> None:
    clock = Clock()
    e = engine(tmp_path, config(rules=[POWER_RULE | {"for": 0}], repeat=0), clock)
    kinds = []
    for _ in range(30):
        kinds += [ev.kind for ev in e.evaluate(power(250, clock()))]
        clock.advance(60)
    assert kinds == ["firing"]


def test_restart_while_pending_fires_once_on_time(tmp_path: Path) -> None:
    clock = Clock()
    cfg = config(rules=[POWER_RULE])
    engine(tmp_path, cfg, clock).evaluate(power(250, clock()))
    clock.advance(3)
    e2 = engine(tmp_path, cfg, clock)  # restart: the pending time is remembered
    assert _state(e2, KEY) is State.PENDING
    assert e2.evaluate(power(250, clock())) == []
    clock.advance(2)
    assert [ev.kind for ev in e2.evaluate(power(250, clock()))] == ["firing"]
    assert len(outbox(e2)) == 1


def test_restart_while_firing_sends_no_duplicate_and_keeps_the_resolve(tmp_path: Path) -> None:
    clock = Clock()
    cfg = config(rules=[POWER_RULE | {"for": 0}])
    e1 = engine(tmp_path, cfg, clock)
    e1.evaluate(power(250, clock()))
    clock.advance(5)
    e2 = engine(tmp_path, cfg, clock)
    assert e2.evaluate(power(260, clock())) == []
    clock.advance(5)
    e3 = engine(tmp_path, cfg, clock)
    [resolved] = e3.evaluate(power(100, clock()))
    assert resolved.kind == "resolved"
    assert [t.split("]")[0] for _, t in outbox(e3)] == ["[warning", "[resolved"]


def test_a_removed_rule_resolves_what_it_paged(tmp_path: Path) -> None:
    clock = Clock()
    engine(tmp_path, config(rules=[POWER_RULE | {"for": 0}]), clock).evaluate(
        power(250, clock()))
    clock.advance(1)
    e2 = engine(tmp_path, config(rules=[]), clock)
    [resolved] = e2.evaluate(Figures())
    assert resolved.kind == "resolved"
    assert "no longer configured" in resolved.payload["summary"]
    assert len(outbox(e2)) == 2
    assert e2.states() == []


def test_silence_holds_messages_until_it_ends(tmp_path: Path) -> None:
    clock = Clock()
    cfg = config(
        rules=[POWER_RULE | {"for": 0, "device": "*"}],
        silences=[{"match": {"device": "compressor-1"}, "from": "2025-06-02T09:00:00",
                   "to": "2025-06-02T11:00:00", "comment": "valve job"}],
    )
    e = engine(tmp_path, cfg, clock)
    two = Figures(latest={("compressor-1", "active_power_kw"): Reading(T0, 250),
                          ("compressor-2", "active_power_kw"): Reading(T0, 250)})
    events = e.evaluate(two)
    assert {(ev.payload["labels"]["device"], ev.payload["muted_by"]) for ev in events} == {
        ("compressor-1", "silence 0 (valve job)"), ("compressor-2", None)}
    assert [t for _, t in outbox(e)] == [
        "[warning] Wuhan Fab 1: active_power_kw of compressor-2 above 200"]
    clock.advance(59)  # 10:59, still silenced (site-local times)
    assert e.evaluate(two) == []
    clock.advance(1)  # 11:00: the silence is over and the alert still fires
    [late] = e.evaluate(two)
    assert (late.kind, late.payload["labels"]["device"], late.payload["muted_by"]) == (
        "firing", "compressor-1", None)
    assert late.payload["since"] == T0
    assert len(outbox(e)) == 2


def test_a_planned_weekly_shutdown_pages_nobody(tmp_path: Path) -> None:
    clock = Clock()
    clock.at(datetime(2025, 6, 7, 21, 0, tzinfo=TZ))  # Saturday evening
    cfg = config(
        defaults={"data_gap": False, "demand_near_limit": False, "off_trajectory": False},
        maintenance=[{"name": "weekend-stop", "weekly": {"days": ["sat"], "from": "22:00",
                                                         "to": "06:00"}}],
    )
    e = engine(tmp_path, cfg, clock)
    last = clock()
    meter = lambda: Figures(latest={("grid-main", "energy_import_kwh"): Reading(last, 1.0)})  # noqa: E731
    e.evaluate(meter())
    clock.at(datetime(2025, 6, 7, 22, 0, tzinfo=TZ))
    last = clock()  # the plant stops at 22:00 and the meter with it
    events = []
    for _ in range(7 * 4):  # every 15 minutes until 05:00 Sunday
        clock.advance(15)
        events += e.evaluate(meter())
    assert [(ev.kind, ev.payload["muted_by"]) for ev in events] == [
        ("firing", "maintenance weekend-stop")]
    last = clock()  # back at 05:00, before the window ends
    [resolved] = e.evaluate(meter())
    assert resolved.kind == "resolved"
    assert resolved.payload["channels"] == []
    assert outbox(e) == []


def test_still_down_after_the_window_pages_then(tmp_path: Path) -> None:
    clock = Clock()
    clock.at(datetime(2025, 6, 7, 22, 0, tzinfo=TZ))
    cfg = config(
        defaults={"data_gap": False, "demand_near_limit": False, "off_trajectory": False},
        maintenance=[{"name": "weekend-stop", "weekly": {"days": ["sat"], "from": "22:00",
                                                         "to": "06:00"}}],
    )
    e = engine(tmp_path, cfg, clock)
    stopped = Figures(latest={("grid-main", "energy_import_kwh"): Reading(clock(), 1.0)})
    clock.at(datetime(2025, 6, 8, 5, 59, tzinfo=TZ))
    assert [ev.payload["muted_by"] for ev in e.evaluate(stopped)] == ["maintenance weekend-stop"]
    clock.at(datetime(2025, 6, 8, 6, 0, tzinfo=TZ))
    [paged] = e.evaluate(stopped)
    assert (paged.kind, paged.payload["muted_by"], paged.payload["channels"]) == (
        "firing", None, ["ops"])
    assert paged.payload["value"] == 8 * 3600


def test_a_dated_window_is_site_local_and_matches_rules(tmp_path: Path) -> None:
    clock = Clock()
    cfg = config(
        rules=[POWER_RULE | {"for": 0}],
        maintenance=[{"name": "overhaul", "from": "2025-06-02T10:00", "to": "2025-06-02T12:00",
                      "match": {"rule": "compressor-*"}}],
    )
    e = engine(tmp_path, cfg, clock)
    [held] = e.evaluate(power(250, clock()))  # 10:00 Wuhan = 02:00 UTC: inside
    assert held.payload["muted_by"] == "maintenance overhaul"
    clock.advance(119)
    assert e.evaluate(power(250, clock())) == []
    clock.advance(1)
    assert [ev.payload["muted_by"] for ev in e.evaluate(power(250, clock()))] == [None]


def test_an_expected_device_that_never_reported_is_absent(tmp_path: Path) -> None:
    clock = Clock()
    cfg = config(defaults={"data_gap": False, "demand_near_limit": False,
                           "off_trajectory": False})
    e = engine(tmp_path, cfg, clock)
    snap = Figures(
        latest={("grid-main", "energy_import_kwh"): Reading(T0, 1.0),
                ("site", "energy_today_kwh"): Reading(T0, 1.0)},  # derived, not a meter
        expected_devices=frozenset({"grid-main", "pv-roof"}),
    )
    assert e.evaluate(snap) == []
    clock.advance(15)
    assert e.evaluate(snap) == []  # exactly 15 minutes is not longer than 15 minutes
    clock.advance(0.5)
    fresh = Figures(latest={**snap.latest,
                            ("grid-main", "energy_import_kwh"): Reading(clock(), 2.0)},
                    expected_devices=snap.expected_devices)
    [ev] = e.evaluate(fresh)
    assert ev.key == "meter_offline{device=pv-roof}"
    assert ev.payload["summary"] == "no reading from pv-roof"


def test_a_silent_meter_goes_offline_while_its_edge_box_still_reports_on_it(
        tmp_path: Path) -> None:
    # the edge agent publishes its poll counts under the meter's id every minute, also while
    # the meter does not answer: they are not readings of the meter
    clock = Clock()
    cfg = config(defaults={"data_gap": False, "demand_near_limit": False,
                           "off_trajectory": False})
    e = engine(tmp_path, cfg, clock)

    def snap(failed_polls: float) -> Figures:
        return Figures(latest={("hvac", "energy_import_kwh"): Reading(T0, 1234.5),
                               ("hvac", "poll_ok_count"): Reading(clock(), 3.0),
                               ("hvac", "poll_failed_count"): Reading(clock(), failed_polls)},
                       expected_devices=frozenset({"hvac"}))

    assert e.evaluate(snap(0)) == []
    clock.advance(15.5)
    [ev] = e.evaluate(snap(930))
    assert (ev.key, ev.kind) == ("meter_offline{device=hvac}", "firing")
    assert ev.payload["summary"] == "no reading from hvac"
    # the agent's own figures (under its agent id) are readings of the agent: it is online
    agent = Figures(latest={("edge-1", "outbox_depth_count"): Reading(clock(), 0.0)},
                    expected_devices=frozenset({"edge-1"}))
    assert agent.last_seen("edge-1", None) == clock()


def test_routes_pick_channels_by_severity_and_site(tmp_path: Path) -> None:
    clock = Clock()
    cfg = config(
        channel_names=["dingtalk", "mail", "elsewhere"],
        rules=[POWER_RULE | {"for": 0, "severity": "critical"},
               POWER_RULE | {"for": 0, "name": "compressor-info", "severity": "info"}],
        routes=[{"severities": ["critical"], "channels": ["dingtalk"]},
                {"channels": ["mail"]},
                {"sites": ["another-site"], "channels": ["elsewhere"]}],
    )
    e = engine(tmp_path, cfg, clock)
    got = {ev.payload["rule"]: ev.payload["channels"] for ev in e.evaluate(power(250, clock()))}
    assert got == {"compressor-power": ["dingtalk", "mail"], "compressor-info": ["mail"]}
    assert sorted(c for c, _ in outbox(e)) == ["dingtalk", "mail", "mail"]


def test_each_kind_of_rule(tmp_path: Path) -> None:
    clock = Clock()
    cfg = config(
        contracted_demand_kw=1000,
        defaults={"data_gap": {"above": 1}, "demand_near_limit": {"for": 0},
                  "off_trajectory": {"for": 0}, "meter_offline": False},
        rules=[
            {"name": "forecast", "kind": "budget", "measure": "forecast", "margin": 0.05},
            {"name": "balance", "kind": "balance", "tolerance": 0.02},
            {"name": "estimated", "kind": "data_quality", "measure": "estimated_share",
             "above": 0.1},
        ],
    )
    e = engine(tmp_path, cfg, clock)
    quiet = Figures(
        target=TargetFigures(budget_to_date=100, actual_to_date=99, forecast=104, allowed=100),
        site_power_kw=899,
        balance=BalanceFigures(site_kwh=1000, submetered_kwh=700, unmetered_kwh=300),
        quality=QualityFigures(events={"grid-main": {"gap": 1}}, estimated_share=0.1),
        expected_devices=frozenset({"grid-main"}),
    )
    assert e.evaluate(quiet) == []
    loud = Figures(
        target=TargetFigures(budget_to_date=100, actual_to_date=101, forecast=105.5, allowed=100),
        site_power_kw=901,
        balance=BalanceFigures(site_kwh=1000, submetered_kwh=1030, unmetered_kwh=0),
        quality=QualityFigures(events={"grid-main": {"gap": 2}}, estimated_share=0.11),
        expected_devices=frozenset({"grid-main"}),
    )
    fired = {ev.key: ev.payload["value"] for ev in e.evaluate(loud)}
    assert fired == {
        "off_trajectory{}": 101,
        "forecast{}": 105.5,
        "demand_near_limit{}": 901,
        "balance{}": 0.03,
        "estimated{measure=estimated_share}": 0.11,
        "data_gap{device=grid-main,measure=gap}": 2,
    }
    # demand clears under 85 % of the contract, not under 90 %
    assert e.evaluate(Figures(site_power_kw=860)) == []
    assert [ev.key for ev in e.evaluate(Figures(site_power_kw=849))] == ["demand_near_limit{}"]


def test_the_message_carries_figure_threshold_site_local_time_and_link(tmp_path: Path) -> None:
    clock = Clock()
    cfg = config(rules=[POWER_RULE | {"for": 0}],
                 grafana_url="https://grafana.example.com/d/lingtan-site/site?orgId=1")
    e = engine(tmp_path, cfg, clock)
    e.evaluate(power(212.5, clock()))
    [row] = e.store.outbox()
    body = str(row["body"])
    assert "Now: 212.5 kW (threshold 200 kW)" in body
    assert "Site: Wuhan Fab 1 (wuhan-fab1)" in body
    assert "Since: 2025-06-02 10:00:00 CST (UTC+08:00)" in body
    assert (f"Grafana: https://grafana.example.com/d/lingtan-site/site?orgId=1&var-site=wuhan-fab1"
            f"&from={T0 - 3_600_000}&to={T0 + 900_000}&viewPanel=12") in body
    assert SITE.id in str(row["title"])  or "Wuhan Fab 1" in str(row["title"])


def test_the_default_data_gap_alert_clears_when_the_day_has_no_gap(tmp_path: Path) -> None:
    # it fires at the first gap (above 0); a new day's count of 0 is its all-clear
    clock = Clock()
    cfg = config(defaults={"meter_offline": False, "demand_near_limit": False,
                           "off_trajectory": False})
    e = engine(tmp_path, cfg, clock)
    def gaps(n: int) -> Figures:
        return Figures(quality=QualityFigures(events={"grid-main": {"gap": n}}),
                       expected_devices=frozenset({"grid-main"}))

    assert [ev.kind for ev in e.evaluate(gaps(1))] == ["firing"]
    clock.advance(60)
    assert e.evaluate(gaps(1)) == []
    clock.advance(24 * 60)
    [resolved] = e.evaluate(gaps(0))
    assert (resolved.key, resolved.kind) == (
        "data_gap{device=grid-main,measure=gap}", "resolved")


def test_a_demand_rule_of_the_sites_own_takes_the_sections_contracted_demand(
        tmp_path: Path) -> None:
    clock = Clock()
    cfg = config(contracted_demand_kw=1000,
                 rules=[{"name": "demand-80", "kind": "demand", "share": 0.8}])
    e = engine(tmp_path, cfg, clock)
    assert e.evaluate(Figures(site_power_kw=790)) == []
    [fired] = e.evaluate(Figures(site_power_kw=810))
    assert (fired.key, fired.kind, fired.payload["threshold"]) == (
        "demand-80{}", "firing", 800)
