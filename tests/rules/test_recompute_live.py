"""Recompute after a factor is revised; live figures equal the report; meters without counters."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import orjson
import pytest

from lingtan.config import load
from rules.accounts import Accounts, open_accounts
from rules.ledger import Ledger
from rules.live import Live
from rules.market import SupplierFactor
from rules.periods import PeriodKind, period_of
from rules.recompute import recompute
from rules.replay import replay
from telemetry.sample import Sample

T0 = int(datetime(2026, 3, 30, tzinfo=UTC).timestamp() * 1000)  # before the fiscal year's turn
Q = 15 * 60_000

FACTORS = """
factors:
  - id: test-grid-xx
    kind: grid_electricity
    value: {value}
    unit: kgCO2/kWh
    gases: [CO2]
    region: XX
    year: 2025
    valid_from: 2025-01-01
    source: a grid factor written for this test ({note})
    publisher: test
    published: 2026-01-01
  - id: test-residual-xx
    kind: residual_mix
    value: 0.8
    unit: kgCO2/kWh
    gases: [CO2]
    region: XX
    year: 2025
    valid_from: 2025-01-01
    source: a residual mix written for this test
    publisher: test
    published: 2026-01-01
"""

CONFIG = """
site: {id: p, timezone: Europe/Berlin, region: XX}
rules:
  ledger: ledger.sqlite
  factor_files: [factors.yaml]
  fiscal_year_start_month: 4
  meters:
    - {device: grid, role: grid_import}
    - {device: pv, role: generation, renewable: true}
    - {device: dc-in, role: dc_facility, zone: dc1}
    - {device: dc-it, role: it_load, zone: dc1}
    - {device: dc2-in, role: dc_facility, zone: dc2}
    - {device: dc2-cooling, role: submeter, area: dc2}
  virtual_meters:  # dc2 has no IT meter: its IT load is its intake less its cooling
    - {id: dc2-it, formula: "dc2-in - dc2-cooling", role: it_load, zone: dc2}
  target: {baseline_year: 2020, baseline_tco2e: 1000, target_year: 2030, reduction: 0.5,
           scopes: [scope1, scope2_market]}
  market:
    certificates:
      - {id: go-1, scheme: GO, volume_mwh: 0.5, technology: hydro, vintage: 2026,
         generation_from: 2026-01-01, generation_to: 2026-03-31}
"""


def _site(tmp: Path, value: float = 0.5, note: str = "first publication") -> Accounts:
    (tmp / "factors.yaml").write_text(FACTORS.format(value=value, note=note))
    (tmp / "site.yaml").write_text(CONFIG)
    loaded = load(tmp / "site.yaml")
    c = loaded.config
    return open_accounts(c.site, c.rules, Ledger(tmp / "ledger.sqlite"), loaded.base_dir)


def _samples(intervals: int) -> list[Sample]:
    out = []
    for i in range(intervals + 1):
        hour = (i // 4) % 24
        out += [
            Sample(site="p", device="grid", seq=i, ts=T0 + i * Q,
                   values={"energy_import_kwh": 10.0 * i}),
            Sample(site="p", device="pv", seq=i, ts=T0 + i * Q,
                   values={"energy_export_kwh": 4.0 * sum(
                       1 for k in range(i) if 8 <= (k // 4) % 24 < 16)}),
            Sample(site="p", device="dc-in", seq=i, ts=T0 + i * Q,
                   values={"energy_import_kwh": 3.0 * i}),
            Sample(site="p", device="dc-it", seq=i, ts=T0 + i * Q,
                   values={"energy_import_kwh": 2.0 * i}),
            Sample(site="p", device="dc2-in", seq=i, ts=T0 + i * Q,
                   values={"energy_import_kwh": 1.6 * i}),
            Sample(site="p", device="dc2-cooling", seq=i, ts=T0 + i * Q,
                   values={"energy_import_kwh": 0.1 * i * (2 if hour >= 12 else 1)}),
        ]
    return out


def test_recompute_keeps_the_previous_figures_and_what_changed(tmp_path: Path) -> None:
    acc = _site(tmp_path)
    replay(acc.engine, _samples(8 * 96))  # 8 days at 40 kWh an hour
    before = acc.period()
    assert before["scope2_location_kgco2e"] == pytest.approx(8 * 96 * 10 * 0.5)
    acc.engine.ledger.close()

    # the publisher corrects the factor: 0.5 -> 0.55, from 1 April (site time) on
    acc = _site(tmp_path, 0.55, "corrected")
    cut = int(datetime(2026, 3, 31, 22, tzinfo=UTC).timestamp() * 1000)  # 1 Apr 00:00 +02
    rev = recompute(acc.engine, cut, "the publisher corrected test-grid-xx", now_ms=1)
    after = acc.period()
    kwh_after_cut = sum(k for t, k in acc.engine.ledger.meter_intervals("p", "grid") if t >= cut)
    kwh_before_cut = 8 * 96 * 10 - kwh_after_cut
    assert after["scope2_location_kgco2e"] == pytest.approx(
        kwh_before_cut * 0.5 + kwh_after_cut * 0.55)
    assert rev.id is not None
    assert rev.rows_changed == len([t for t, _ in acc.engine.ledger.meter_intervals("p", "grid")
                                    if t >= cut])
    (rid, _, from_ms, reason, b, a), = acc.engine.ledger.revisions("p")
    assert (rid, from_ms, reason) == (rev.id, cut, "the publisher corrected test-grid-xx")
    assert orjson.loads(b)["scope2_location_kgco2e"] == pytest.approx(kwh_after_cut * 0.5)
    assert orjson.loads(a)["scope2_location_kgco2e"] == pytest.approx(kwh_after_cut * 0.55)
    changes = acc.engine.ledger.revision_changes(rev.id)
    start, source, scope, method, gas, old, new, old_ids, new_ids = changes[0]
    assert (source, scope, method, gas, old_ids, new_ids) == (
        "grid", "2", "location", "CO2", "test-grid-xx", "test-grid-xx")
    assert new == pytest.approx(old * 0.55 / 0.5)
    # the published 15-minute figures are restated too
    iv = next(i for i in acc.engine.ledger.site_intervals("p", cut) if i.start_ms == start)
    assert iv.scope2_location_kgco2e == pytest.approx(new)
    # a second run finds nothing to change and records nothing
    again = recompute(acc.engine, cut, "again", now_ms=2)
    assert again.id is None
    assert len(acc.engine.ledger.revisions("p")) == 1
    with pytest.raises(ValueError, match="needs a reason"):
        recompute(acc.engine, cut, " ", now_ms=3)


def test_live_figures_equal_the_report_of_the_same_periods(tmp_path: Path) -> None:
    acc = _site(tmp_path)
    live = Live(acc)
    samples = _samples(5 * 96 + 37)  # over the fiscal year's turn, into a day
    replay(acc.engine, samples[: len(samples) // 2])
    live.figures(samples[len(samples) // 2].ts)  # fills the day cache
    replay(acc.engine, samples[len(samples) // 2:])
    assert acc.engine.touched_from is not None
    live.invalidate(acc.engine.touched_from)
    as_of = samples[-1].ts
    fig = live.figures(as_of)
    for name, kind in (("today", PeriodKind.DAY), ("month", PeriodKind.MONTH),
                       ("fy", PeriodKind.FISCAL_YEAR)):
        p = period_of(as_of - 1, kind, "Europe/Berlin", 4)
        rep = acc.period(p.start_ms, p.end_ms)
        assert fig.values[f"scope2_location_{name}_kgco2e"] == pytest.approx(
            rep["scope2_location_kgco2e"])
        assert fig.values[f"scope2_market_{name}_kgco2e"] == pytest.approx(
            rep["scope2_market_kgco2e"])
        assert fig.values[f"scope1_{name}_kgco2e"] == pytest.approx(rep["scope1_kgco2e"])
        if name == "today":
            assert fig.values["energy_today_kwh"] == pytest.approx(rep["consumption_kwh"])
            # the report rounds ratios to 6 decimals
            assert fig.values["renewable_share_today_ratio"] == pytest.approx(
                rep["renewable_share"], abs=1e-6)
            assert fig.values["cfe_today_ratio"] == pytest.approx(rep["cfe"]["energytag"],
                                                                  abs=1e-6)
            # the report rounds PUE to 4 decimals; dc2's IT load is a virtual meter
            assert fig.pue_today == {"dc1": pytest.approx(rep["pue"]["dc1"], abs=1e-4),
                                     "dc2": pytest.approx(rep["pue"]["dc2"], abs=1e-4)}
            assert fig.pue_today["dc1"] == pytest.approx(1.5)  # 3 kWh in for 2 of IT
    # the GO (0.5 MWh, claim window FY2026 = April 2025 - March 2026) was used up before the
    # fiscal year turned; from April the grid import is all at the residual mix
    fy = period_of(as_of - 1, PeriodKind.FISCAL_YEAR, "Europe/Berlin", 4)
    assert fig.values["scope2_market_fy_kgco2e"] == pytest.approx(
        acc.period(fy.start_ms)["grid_import_kwh"] * 0.8)
    # FY2027 allows 1000 t x (1 - 0.5 x 7 / 10) = 650 t; a few tonnes so far are well within it
    assert fig.target is not None
    assert fig.target.year == 2027
    assert fig.target.allowed_tco2e == pytest.approx(650)
    elapsed = (as_of - fy.start_ms) / (fy.end_ms - fy.start_ms)
    assert fig.target.forecast_tco2e == pytest.approx(fig.target.actual_to_date_tco2e / elapsed)
    assert fig.values["target_on_track"] == 1.0


def test_pue_today_spans_what_both_meters_of_the_zone_have_reported(tmp_path: Path) -> None:
    acc = _site(tmp_path)
    live = Live(acc)
    day = int(datetime(2026, 4, 2, tzinfo=UTC).timestamp() * 1000) - 2 * 3_600_000  # 00:00 +02
    minute = 60_000
    # the zone runs at PUE 1.5 (90 kW in, 60 kW of IT); its intake meter has read on 20 minutes
    # past midnight, its IT meter only to 00:05 (polled at its own pace)
    replay(acc.engine, [
        Sample(site="p", device=d, seq=i, ts=day + t * minute,
               values={"energy_import_kwh": kw * (t + 60) / 60})
        for d, kw, ts in (("dc-in", 90.0, range(-60, 21, 5)), ("dc-it", 60.0, range(-60, 6, 5)))
        for i, t in enumerate(ts)])
    # today holds 20 minutes of intake and 5 of IT: 30 / 5 = 6 over the meters' own spans;
    # both have closed no quarter hour of today, so there is no PUE today yet
    fig = live.figures(day + 5 * minute)
    assert "dc1" not in fig.pue_today
    assert acc.period(day, day + 86_400_000)["pue"]["dc1"] is None  # a report of today: the same
    # the IT meter reads on to 00:25: the quarter hour 00:00-00:15 is closed for both
    replay(acc.engine, [
        Sample(site="p", device="dc-it", seq=13 + i, ts=day + t * minute,
               values={"energy_import_kwh": 60.0 * (t + 60) / 60})
        for i, t in enumerate(range(10, 26, 5))])
    assert acc.engine.touched_from is not None
    live.invalidate(acc.engine.touched_from)
    fig = live.figures(day + 20 * minute)
    assert fig.pue_today["dc1"] == pytest.approx(1.5)
    assert acc.period(day, day + 86_400_000)["pue"]["dc1"] == pytest.approx(1.5)
    # yesterday's last hour is a finished period: both meters' whole span
    assert acc.period(day - 3_600_000, day)["pue"]["dc1"] == pytest.approx(1.5)


def test_a_meter_without_a_counter_integrates_its_power_flagged_estimated(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(
        "site: {id: p, timezone: UTC, region: CN}\n"
        "rules:\n  meters:\n"
        "    - {device: old-feeder, role: submeter, quantity: active_power_kw, gap_s: 120}\n")
    loaded = load(tmp_path / "site.yaml")
    acc = open_accounts(loaded.config.site, loaded.config.rules, Ledger(tmp_path / "l.sqlite"))
    kw = [100.0, 120.0, 80.0, -5.0, 60.0]
    t = [0, 60_000, 120_000, 180_000, 480_000]  # the last step is a 5-minute gap
    replay(acc.engine, [Sample(site="p", device="old-feeder", seq=i, ts=T0 + t[i],
                               values={"active_power_kw": kw[i]}) for i in range(5)])
    # trapezoids: (100+120)/2/60 + (120+80)/2/60 + (80+0)/2/60 + (0+60)/2 x 5/60
    expected = 110 / 60 + 100 / 60 + 40 / 60 + 30 * 5 / 60
    r = acc.period()
    assert r["breakdown_kwh"]["by_meter"]["old-feeder"] == pytest.approx(expected)
    assert acc.engine.ledger.estimated_kwh("p", "old-feeder") == pytest.approx(expected)
    assert r["data_quality"]["events"] == {"gap": 1}


def test_gas_without_temperature_and_pressure_is_counted_flagged(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(
        "site: {id: p, timezone: UTC, region: CN}\n"
        "rules:\n  meters:\n"
        "    - {device: gas, role: fuel, fuel: lpg, quantity: fuel_mass_kg}\n")
    loaded = load(tmp_path / "site.yaml")
    acc = open_accounts(loaded.config.site, loaded.config.rules, Ledger(tmp_path / "l.sqlite"))
    replay(acc.engine, [Sample(site="p", device="gas", seq=i, ts=T0 + i * Q,
                               values={"fuel_mass_kg": 2.0 * i}) for i in range(5)])
    r = acc.period()
    assert r["fuels"]["gas"] == {"fuel": "lpg", "unit": "kg", "amount": 8.0, "estimated": 0.0}
    # 8 kg LPG x 47.3 MJ/kg (IPCC 2006 Table 1.2) x 63 100 kg CO2/TJ (Table 1.4)
    assert r["scope1_by_gas_kgco2e"]["CO2"] == pytest.approx(8 * 47.3e-6 * 63_100)


def test_config_errors_name_the_meter(tmp_path: Path) -> None:
    from lingtan.config import ConfigError

    (tmp_path / "site.yaml").write_text(
        "site: {id: p, timezone: UTC, region: CN}\n"
        "rules:\n  meters:\n    - {device: a, role: submeter}\n"
        "  virtual_meters:\n    - {id: v, formula: 'a + + b'}\n")
    with pytest.raises(ConfigError, match=r"formula 'a \+ \+ b' is not meter ids"):
        load(tmp_path / "site.yaml")
    (tmp_path / "site.yaml").write_text(
        "site: {id: p, timezone: UTC, region: CN}\n"
        "rules:\n  meters:\n    - {device: a, role: submeter}\n"
        "  virtual_meters:\n    - {id: v, formula: 'a - b'}\n")
    with pytest.raises(ConfigError, match=r"'b' is not a meter listed before it"):
        load(tmp_path / "site.yaml")
    # the breakdown sums sub-meter energy: a grid meter or another virtual meter in a formula
    # would count as nothing, so they are refused
    (tmp_path / "site.yaml").write_text(
        "site: {id: p, timezone: UTC, region: CN}\n"
        "rules:\n  meters:\n    - {device: a, role: submeter}\n"
        "    - {device: g, role: grid_import}\n"
        "  virtual_meters:\n    - {id: v, formula: 'g - a'}\n")
    with pytest.raises(ConfigError, match=r"\(v\): 'g' is a grid_import meter; a virtual meter "
                       r"is made of submeter, it_load and dc_facility meters"):
        load(tmp_path / "site.yaml")
    (tmp_path / "site.yaml").write_text(
        "site: {id: p, timezone: UTC, region: CN}\n"
        "rules:\n  meters:\n    - {device: a, role: submeter}\n"
        "  virtual_meters:\n    - {id: v, formula: 'a'}\n    - {id: w, formula: 'v + a'}\n")
    with pytest.raises(ConfigError, match=r"\(w\): 'v' is a virtual meter; write out its terms"):
        load(tmp_path / "site.yaml")
    (tmp_path / "site.yaml").write_text(
        "site: {id: p, timezone: UTC, region: CN}\n"
        "rules:\n  meters:\n    - {device: g, role: fuel, fuel: natural_gas}\n")
    loaded = load(tmp_path / "site.yaml")
    with pytest.raises(ValueError, match=r"rules.meters \(g\): the meter counts m3 but calorific"):
        open_accounts(loaded.config.site, loaded.config.rules, Ledger(tmp_path / "l.sqlite"))


BIO_AND_STEAM = """
factors:
  - {id: test-biogas-ncv, kind: net_calorific_value, fuel: biogas, value: 20.0, unit: MJ/m3,
     gases: [CO2, CH4, N2O], region: XX, year: 2026, valid_from: 2026-01-01,
     source: the digester operator's analysis (test data), publisher: test, published: 2026-01-01}
  - {id: test-biogas-co2, kind: fuel_emission, fuel: biogas, value: 54600, unit: kg/TJ,
     gases: [CO2], biogenic: true, region: XX, year: 2026, valid_from: 2026-01-01,
     source: a biogenic CO2 factor written for this test, publisher: test, published: 2026-01-01}
  - {id: test-biogas-ch4, kind: fuel_emission, fuel: biogas, value: 1, unit: kg/TJ,
     gases: [CH4], region: XX, year: 2026, valid_from: 2026-01-01,
     source: a CH4 factor written for this test, publisher: test, published: 2026-01-01}
  - {id: test-biogas-n2o, kind: fuel_emission, fuel: biogas, value: 0.1, unit: kg/TJ,
     gases: [N2O], region: XX, year: 2026, valid_from: 2026-01-01,
     source: a N2O factor written for this test, publisher: test, published: 2026-01-01}
  - {id: test-steam, kind: purchased_steam, value: 0.25, unit: kgCO2/kWh, gases: [CO2],
     region: XX, year: 2026, valid_from: 2026-01-01,
     source: the steam supplier's disclosed factor (test data), publisher: test,
     published: 2026-01-01}
"""


def test_biogenic_co2_is_reported_apart_and_steam_is_scope2(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text(BIO_AND_STEAM)
    (tmp_path / "site.yaml").write_text(
        "site: {id: p, timezone: UTC, region: XX}\n"
        "rules:\n  factor_files: [f.yaml]\n  gwp_set: AR6\n  meters:\n"
        "    - {device: digester, role: fuel, fuel: biogas, ncv: test-biogas-ncv}\n"
        "    - {device: steam, role: purchased_steam}\n")
    loaded = load(tmp_path / "site.yaml")
    acc = open_accounts(loaded.config.site, loaded.config.rules, Ledger(tmp_path / "l.sqlite"),
                        tmp_path)
    ts = int(datetime(2026, 5, 1, tzinfo=UTC).timestamp() * 1000)
    replay(acc.engine, [
        *(Sample(site="p", device="digester", seq=i, ts=ts + i * Q,
                 values={"gas_volume_m3": 500.0 * i}) for i in range(3)),
        *(Sample(site="p", device="steam", seq=i, ts=ts + i * Q,
                 values={"heat_energy_kwh": 400.0 * i}) for i in range(3)),
    ])
    r = acc.period()
    tj = 1000 * 20.0 / 1e6  # 1000 m3 x 20 MJ/m3 = 0.02 TJ
    assert r["biogenic_co2_kg"] == pytest.approx(tj * 54_600)  # outside the scopes
    # CH4 from biomass at AR6's non-fossil GWP (27.0, Table 7.15), N2O at 273
    assert r["scope1_by_gas_kgco2e"] == {"CH4": pytest.approx(tj * 1 * 27.0),
                                         "N2O": pytest.approx(tj * 0.1 * 273)}
    assert r["scope2_location_by_category_kgco2e"] == {"steam": pytest.approx(800 * 0.25)}
    # no certificates for steam: market-based equals location-based for it
    assert r["scope2_market_kgco2e"] == pytest.approx(800 * 0.25)
    rows = acc.engine.ledger.emissions("p")
    assert rows
    for row in rows:  # every emission row names factors that are in the library
        for fid in row.factor_ids.split(","):
            assert fid in acc.engine.factors


def test_a_market_factor_of_the_wrong_kind_or_missing_is_refused_at_start(tmp_path: Path) -> None:
    acc = _site(tmp_path)
    cfg, site = acc.cfg, acc.site
    ledger = acc.engine.ledger
    wrong = cfg.model_copy(update={"market": cfg.market.model_copy(update={
        "supplier": [SupplierFactor(factor="test-grid-xx", valid_from=date(2026, 1, 1))]})})
    with pytest.raises(ValueError, match=r"rules.market.supplier\[0\]: factor 'test-grid-xx' is "
                       r"a grid_electricity factor, not supplier_electricity"):
        open_accounts(site, wrong, ledger, tmp_path)
    missing = cfg.model_copy(update={"market": cfg.market.model_copy(update={
        "residual_mix_factor": "no-such-mix"})})
    with pytest.raises(ValueError, match=r"residual_mix_factor: no factor 'no-such-mix'"):
        open_accounts(site, missing, ledger, tmp_path)
    right = cfg.model_copy(update={"market": cfg.market.model_copy(update={
        "residual_mix_factor": "test-residual-xx"})})
    open_accounts(site, right, ledger, tmp_path)
