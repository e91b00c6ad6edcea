"""The accounting engine against a real ledger file."""

from __future__ import annotations

from pathlib import Path

import pytest

from rules.config import MeterConfig, Role, RulesConfig
from rules.engine import DERIVED_DEVICE, Engine
from rules.factors import FactorLibrary
from rules.ledger import Ledger
from telemetry.config import SiteInfo
from telemetry.sample import Sample
from telemetry.timeutil import QUARTER_HOUR_MS

# Hubei's provincial average grid factor for 2023, 0.4044 kgCO2/kWh (MEE & NBS, 公告2025年第47号,
# 表3): the newest vintage for a site in CN-HB in 2025. Written here on purpose, independently of
# the factor file.
CN_HB_2023 = 0.4044
SITE = SiteInfo(id="plant-a", timezone="Asia/Shanghai", region="CN-HB")
T0 = 1_764_000_000_000 - 1_764_000_000_000 % QUARTER_HOUR_MS


def _engine(tmp_path: Path, counter_max: float | None = None) -> Engine:
    cfg = RulesConfig(meters=[MeterConfig(device="grid", role=Role.GRID_IMPORT,
                                          counter_max=counter_max)])
    return Engine(SITE, cfg, Ledger(tmp_path / "ledger.sqlite"), FactorLibrary.load())


def _read(seq: int, ts: int, kwh: float, device: str = "grid") -> Sample:
    return Sample(site="plant-a", device=device, seq=seq, ts=ts,
                  values={"energy_import_kwh": kwh, "active_power_kw": 1.0})


def _apply(e: Engine, *samples: Sample) -> None:
    with e.ledger.transaction():
        for s in samples:
            e.apply(s)


def test_counter_readings_become_interval_energy_and_scope2(tmp_path: Path) -> None:
    e = _engine(tmp_path)
    _apply(e, _read(0, T0 + 10 * 60_000, 1000.0),    # baseline
           _read(1, T0 + 20 * 60_000, 1030.0),       # 30 kWh over 10 min, 5 before / 5 after
           _read(2, T0 + 25 * 60_000, 1040.0))       # 10 kWh, all in the second interval
    assert e.ledger.meter_intervals("plant-a", "grid") == [
        (T0, pytest.approx(15.0)), (T0 + QUARTER_HOUR_MS, pytest.approx(25.0))]
    ivs = e.ledger.site_intervals("plant-a")
    assert [i.grid_import_kwh for i in ivs] == [pytest.approx(15.0), pytest.approx(25.0)]
    assert [i.scope2_location_kgco2e for i in ivs] == [pytest.approx(15.0 * CN_HB_2023),
                                                        pytest.approx(25.0 * CN_HB_2023)]
    assert {i.grid_factor_id for i in ivs} == {"cn-mee-2023-grid-province-hubei"}


def test_redelivered_samples_are_not_counted_twice(tmp_path: Path) -> None:
    e = _engine(tmp_path)
    first = [_read(0, T0, 1000.0), _read(1, T0 + 60_000, 1001.0)]
    _apply(e, *first)
    _apply(e, *first, _read(2, T0 + 120_000, 1003.0))
    assert e.duplicates == 2
    assert sum(k for _, k in e.ledger.meter_intervals("plant-a", "grid")) == pytest.approx(3.0)


def test_a_reset_is_an_event_and_the_baseline_moves(tmp_path: Path) -> None:
    e = _engine(tmp_path)
    _apply(e, _read(0, T0, 1000.0), _read(1, T0 + 60_000, 1002.0), _read(2, T0 + 120_000, 1.0),
           _read(3, T0 + 180_000, 4.0))
    assert sum(k for _, k in e.ledger.meter_intervals("plant-a", "grid")) == pytest.approx(5.0)
    [ev] = e.ledger.events("plant-a")
    assert (ev.kind, ev.seq) == ("reset", 2)
    assert "1002 -> 1" in ev.detail


def test_a_rollover_is_counted_through_the_maximum(tmp_path: Path) -> None:
    e = _engine(tmp_path, counter_max=100_000.0)
    _apply(e, _read(0, T0, 99_990.0), _read(1, T0 + 60_000, 5.0))
    assert sum(k for _, k in e.ledger.meter_intervals("plant-a", "grid")) == pytest.approx(15.0)
    assert [ev.kind for ev in e.ledger.events("plant-a")] == ["rollover"]


def test_a_clock_going_back_is_an_event_and_nothing_is_booked(tmp_path: Path) -> None:
    e = _engine(tmp_path)
    _apply(e, _read(0, T0 + 60_000, 10.0), _read(1, T0, 12.0), _read(2, T0 + 120_000, 13.0))
    assert [ev.kind for ev in e.ledger.events("plant-a")] == ["clock"]
    assert sum(k for _, k in e.ledger.meter_intervals("plant-a", "grid")) == pytest.approx(3.0)


def test_state_survives_reopening_the_ledger(tmp_path: Path) -> None:
    e = _engine(tmp_path)
    _apply(e, _read(0, T0, 10.0), _read(1, T0 + 60_000, 12.0))
    e.ledger.close()
    e2 = _engine(tmp_path)
    _apply(e2, _read(1, T0 + 60_000, 12.0), _read(2, T0 + 120_000, 15.0))
    assert e2.duplicates == 1
    assert sum(k for _, k in e2.ledger.meter_intervals("plant-a", "grid")) == pytest.approx(5.0)


def test_unconfigured_devices_and_other_sites_are_ignored(tmp_path: Path) -> None:
    e = _engine(tmp_path)
    with e.ledger.transaction():
        assert not e.apply(_read(0, T0, 10.0, device="hvac"))
        assert not e.apply(Sample(site="other", device="grid", seq=0, ts=T0,
                                  values={"energy_import_kwh": 1.0}))
    assert e.ledger.meter_state("plant-a", "grid", "energy_import_kwh") is None


def test_derived_sample_carries_the_interval(tmp_path: Path) -> None:
    e = _engine(tmp_path)
    _apply(e, _read(0, T0, 10.0), _read(1, T0 + 60_000, 12.0))
    [iv] = e.ledger.site_intervals("plant-a")
    s = e.derived_sample(iv, seq=7)
    assert (s.device, s.ts, s.seq) == (DERIVED_DEVICE, T0, 7)
    assert s.values == {"grid_import_kwh": pytest.approx(2.0),
                        "scope2_location_kgco2e": pytest.approx(2.0 * CN_HB_2023)}


def test_a_pinned_factor_that_does_not_exist_is_a_config_error(tmp_path: Path) -> None:
    cfg = RulesConfig(grid_factor="nope", meters=[])
    with pytest.raises(ValueError, match=r"rules\.grid_factor: no factor 'nope'"):
        Engine(SITE, cfg, Ledger(tmp_path / "l.sqlite"), FactorLibrary.load())


def test_a_grid_meter_in_a_region_without_a_grid_factor_is_refused_at_start(
        tmp_path: Path) -> None:
    cfg = RulesConfig(meters=[MeterConfig(device="grid", role=Role.GRID_IMPORT)])
    nowhere = SiteInfo(id="plant-x", timezone="UTC", region="ZZ-QQ")
    with pytest.raises(ValueError, match=r"rules\.meters \(grid\): no grid electricity factor "
                       r"for region 'ZZ-QQ' valid on .*: set site\.region"):
        Engine(nowhere, cfg, Ledger(tmp_path / "l.sqlite"), FactorLibrary.load())
    # a pinned factor stands in for the region's
    pinned = cfg.model_copy(update={"grid_factor": "cn-mee-2023-grid-province-hubei"})
    Engine(nowhere, pinned, Ledger(tmp_path / "l.sqlite"), FactorLibrary.load())


def _rated(tmp_path: Path, max_power_kw: float | None = None, gap_s: float = 900) -> Engine:
    cfg = RulesConfig(meters=[MeterConfig(device="grid", role=Role.GRID_IMPORT,
                                          max_power_kw=max_power_kw, gap_s=gap_s)])
    return Engine(SITE, cfg, Ledger(tmp_path / "ledger.sqlite"), FactorLibrary.load())


def _total(e: Engine) -> float:
    return sum(k for _, k in e.ledger.meter_intervals("plant-a", "grid"))


def test_a_one_reading_glitch_is_held_out_and_the_energy_around_it_kept(tmp_path: Path) -> None:
    # rating 100 kW: at most 100 kWh/h = 1.667 kWh a minute
    e = _rated(tmp_path, max_power_kw=100)
    _apply(e, _read(0, T0, 100.0), _read(1, T0 + 60_000, 101.0),
           _read(2, T0 + 120_000, 99_999.0),       # 99898 kWh in a minute: a spike
           _read(3, T0 + 180_000, 103.0))          # continues from 101: the spike was a glitch
    # counted: 100 -> 101 (1 kWh) and 101 -> 103 over the two minutes around the glitch (2 kWh)
    assert _total(e) == pytest.approx(3.0)
    kinds = [ev.kind for ev in e.ledger.events("plant-a")]
    assert kinds == ["spike", "spike"]
    assert "held out of the totals" in e.ledger.events("plant-a")[0].detail
    assert "was a glitch" in e.ledger.events("plant-a")[1].detail


def test_a_jump_that_stays_is_held_out_and_counting_goes_on_from_it(tmp_path: Path) -> None:
    e = _rated(tmp_path, max_power_kw=100)
    _apply(e, _read(0, T0, 100.0), _read(1, T0 + 60_000, 101.0),
           _read(2, T0 + 120_000, 5000.0),         # +4899 kWh in a minute
           _read(3, T0 + 180_000, 1001.5 + 4000.0))  # 5001.5: goes on from 5000
    # counted: 1 kWh before the jump, 1.5 kWh after it; the jump of 4899 kWh is not
    assert _total(e) == pytest.approx(2.5)
    [_, decided] = e.ledger.events("plant-a")
    assert "jumped 101 -> 5000" in decided.detail
    assert "(4899)" in decided.detail


def test_silence_longer_than_the_gap_threshold_is_spread_and_flagged_estimated(
        tmp_path: Path) -> None:
    e = _rated(tmp_path, gap_s=900)
    _apply(e, _read(0, T0, 100.0), _read(1, T0 + 2 * 3_600_000, 110.0))  # 2 h of silence
    # 10 kWh over 2 h: 1.25 kWh in each of the 8 quarter hours, all of it estimated
    assert e.ledger.meter_intervals("plant-a", "grid") == [
        (T0 + i * QUARTER_HOUR_MS, pytest.approx(1.25)) for i in range(8)]
    assert e.ledger.estimated_kwh("plant-a", "grid") == pytest.approx(10.0)
    [gap] = e.ledger.events("plant-a")
    assert gap.kind == "gap"
    assert "7200 s" in gap.detail
    # readings a minute apart are not a gap
    _apply(e, _read(2, T0 + 2 * 3_600_000 + 60_000, 111.0))
    assert e.ledger.estimated_kwh("plant-a", "grid") == pytest.approx(10.0)
    assert _total(e) == pytest.approx(11.0)


def test_a_ledger_from_before_spikes_and_gaps_opens_and_keeps_its_rows(tmp_path: Path) -> None:
    import sqlite3

    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    db.executescript("""
        CREATE TABLE meter_state (site TEXT NOT NULL, device TEXT NOT NULL,
            quantity TEXT NOT NULL, last_seq INTEGER NOT NULL, last_ts INTEGER NOT NULL,
            last_value REAL NOT NULL, PRIMARY KEY (site, device, quantity));
        CREATE TABLE meter_interval (site TEXT NOT NULL, device TEXT NOT NULL,
            role TEXT NOT NULL, start_ms INTEGER NOT NULL, energy_kwh REAL NOT NULL,
            PRIMARY KEY (site, device, start_ms));
    """)
    db.execute("INSERT INTO meter_state VALUES ('plant-a', 'grid', 'energy_import_kwh', 0, ?, "
               "100.0)", (T0,))
    db.execute("INSERT INTO meter_interval VALUES ('plant-a', 'grid', 'grid_import', ?, 2.0)",
               (T0 - QUARTER_HOUR_MS,))
    db.commit()
    db.close()
    e = _engine(tmp_path)
    _apply(e, _read(1, T0 + 60_000, 101.0))
    assert e.ledger.meter_intervals("plant-a", "grid") == [
        (T0 - QUARTER_HOUR_MS, 2.0), (T0, pytest.approx(1.0))]
    assert e.ledger.estimated_kwh("plant-a", "grid") == 0


def test_a_rolled_back_batch_leaves_no_baseline_behind(tmp_path: Path) -> None:
    e = _engine(tmp_path)
    _apply(e, _read(0, T0, 1000.0))
    def failing_batch() -> None:
        with e.ledger.transaction():
            e.apply(_read(1, T0 + 60_000, 1010.0))
            raise RuntimeError("the batch fails before it commits")

    with pytest.raises(RuntimeError):
        failing_batch()
    # the baseline is the committed one, in memory as in the file
    st = e.ledger.meter_state("plant-a", "grid", "energy_import_kwh")
    assert st is not None
    assert (st.seq, st.value) == (0, 1000.0)
    _apply(e, _read(1, T0 + 60_000, 1010.0))  # redelivered after the failure: counted once
    assert sum(k for _, k in e.ledger.meter_intervals("plant-a", "grid")) == pytest.approx(10.0)
