"""The demo plant without servers: its physics, its history through the accounting engine, the
config it runs with, its clock, and the live view's size."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from rich.console import Console

from lingtan.config import load
from lingtan.demo import until_accounted
from lingtan.demo_plant import config as demo_config
from lingtan.demo_plant import history
from lingtan.demo_plant.clock import SimClock
from lingtan.demo_plant.devices import quantizer, register_maps
from lingtan.demo_plant.model import PV_WRAP_KWH, Plant, day_sky, dropout_windows, load_plant
from lingtan.view import HEIGHT, WIDTH, AlertLine, DeviceRow, EventLine, Snapshot, render
from rules.accounts import open_accounts
from rules.ledger import Ledger
from rules.market import HourFlow
from rules.replay import replay
from telemetry.config import BrokerConfig, SiteInfo
from telemetry.sample import Sample

TZ = ZoneInfo("Asia/Shanghai")
SPEC = load_plant()


def _t(*args: int) -> float:
    return datetime(*args, tzinfo=TZ).timestamp()  # type: ignore[misc]


def test_shifts_weekends_and_the_sun_shape_the_load() -> None:
    plant = Plant(SPEC, "Asia/Shanghai", _t(2026, 11, 16))  # a Monday
    weekday_noon_shift = plant.at(_t(2026, 11, 16, 10), noise=False)
    lunch = plant.at(_t(2026, 11, 16, 12), noise=False)
    sunday = plant.at(_t(2026, 11, 22, 10), noise=False)
    night = plant.at(_t(2026, 11, 16, 3), noise=False)
    assert weekday_noon_shift.kw["smt-line-1"] > lunch.kw["smt-line-1"] > sunday.kw["smt-line-1"]
    assert weekday_noon_shift.site_kw > night.site_kw > sunday.site_kw * 0.9
    assert night.pv_kw == 0
    # grid = site - PV, whatever the sun does
    for f in (weekday_noon_shift, lunch, sunday, night):
        assert f.kw["grid-import"] == pytest.approx(f.site_kw - f.pv_kw)
    # the data centre's intake is IT plus UPS losses plus cooling: PUE between 1.2 and 1.8
    assert 1.2 < night.kw["dc-intake"] / night.kw["dc-it"] < 1.8


def test_clear_days_make_more_pv_than_overcast_ones() -> None:
    plant = Plant(SPEC, "Asia/Shanghai", _t(2026, 11, 1))
    by_sky: dict[str, list[float]] = {}
    for day in range(1, 29):
        noon = plant.at(_t(2026, 11, day, 12), noise=False)
        by_sky.setdefault(noon.sky, []).append(noon.pv_kw)
    assert {"clear", "overcast"} <= set(by_sky)
    assert min(by_sky["clear"]) > 3 * max(by_sky["overcast"])
    assert max(by_sky["clear"]) <= 1000  # the inverter's limit
    # the same day is the same weather, whoever asks
    assert day_sky(datetime(2026, 11, 3).date(), SPEC.weather) == day_sky(
        datetime(2026, 11, 3).date(), SPEC.weather
    )


def test_counters_integrate_power_and_only_grow() -> None:
    start = _t(2026, 11, 16)
    plant = Plant(SPEC, "Asia/Shanghai", start)
    before = {d: dict(s.counters) for d, s in plant.state.items()}
    plant.advance(start + 86_400, max_step_s=60)
    day = {
        d: plant.state[d].counters["energy_import_kwh"] - before[d]["energy_import_kwh"]
        for d in ("smt-line-1", "hvac", "dc-it")
    }
    # a weekday: a line runs two shifts, the data centre steadily
    assert 3000 < day["smt-line-1"] < 6000
    assert day["dc-it"] == pytest.approx(24 * 78, rel=0.1)
    grid = plant.state["grid-import"].counters
    assert grid["energy_import_kwh"] > before["grid-import"]["energy_import_kwh"] + 15_000
    gas = plant.state["boiler-gas"].counters["gas_volume_m3"]
    assert 500 < gas - before["boiler-gas"]["gas_volume_m3"] < 3000


def test_dropouts_are_the_same_every_time_and_one_follows_the_start() -> None:
    hvac = next(m for m in SPEC.meters if m.dropouts is not None)
    start = _t(2026, 10, 1)
    a = dropout_windows(hvac, start, start + 30 * 86_400, None)
    assert a == dropout_windows(hvac, start, start + 30 * 86_400, None)
    assert 5 <= len(a) <= 25
    assert all(20 * 60 <= b - s <= 55 * 60 for s, b in a)
    live = dropout_windows(hvac, start, start + 3600, start)
    assert (start + 4 * 60, start + 22 * 60) in live


def _history(days: float, end: float) -> tuple[Plant, list[history.Reading], list[str]]:
    base = demo_config.template()
    devices = [d["id"] for d in base["edge"]["devices"]]
    devices += [d["id"] for d in base["edge"]["mqtt"]["devices"]]
    maps = register_maps({d["id"]: d["profile"] for d in base["edge"]["devices"]})
    plant = Plant(SPEC, "Asia/Shanghai", end - days * 86_400)
    readings = history.generate(plant, devices, end, days=days, quantize=quantizer(maps))
    return plant, readings, devices


def test_history_is_what_the_meters_would_have_logged() -> None:
    end = _t(2026, 11, 25, 18, 40)
    plant, readings, devices = _history(6, end)
    per_device = {d: [r for r in readings if r.device == d] for d in devices}
    full = 6 * 96 + 1
    assert all(len(per_device[d]) in (full, full + 1) for d in devices if d != "hvac")
    assert len(per_device["hvac"]) < full  # it dropped out
    assert per_device["grid-import"][-1].ts_ms == int(end * 1000)
    # values as the registers hold them: the PM5500's energy is whole Wh
    for r in per_device["grid-import"][:50]:
        assert r.values["energy_import_kwh"] * 1000 == pytest.approx(
            round(r.values["energy_import_kwh"] * 1000), abs=1e-6
        )
    # the inverter's lifetime counter (acc32, Wh) wraps once, four days before the end
    pv = [r.values["energy_export_kwh"] for r in per_device["pv-roof"]]
    drops = [i for i in range(1, len(pv)) if pv[i] < pv[i - 1]]
    assert len(drops) == 1
    assert pv[drops[0] - 1] > 0.9 * PV_WRAP_KWH
    wrap = datetime.fromtimestamp(per_device["pv-roof"][drops[0]].ts_ms / 1000, TZ)
    assert (wrap.day, wrap.hour) == (21, 12)
    # the live meters carry on from where the history ends
    assert plant.t == end


def test_the_history_runs_only_a_second_of_the_pipelines_work_ahead() -> None:
    # the embedded broker drops a message whose PUBACK takes over 5 s: what is sent and not yet
    # taken follows what the pipeline takes, so a slow machine is sent less at a time
    now, taken = [0.0], [0]
    ahead = history.Ahead(lambda: taken[0], clock=lambda: now[0])
    assert ahead.room(999)  # before anything is measured: the least, 1000
    assert not ahead.room(1000)
    for rate in (4000, 400, 10_000):  # Samples a second: a quiet machine, a busy one, the most
        for _ in range(40):  # 4 s of taking at `rate`, the history keeping the window full
            now[0] += 0.1
            taken[0] += rate // 10
            ahead.room(taken[0])
        want = min(8000, max(1000, int(rate * 1.0)))
        assert ahead.limit == pytest.approx(want, rel=0.01), rate
        assert ahead.room(taken[0] + ahead.limit - 1)
        assert not ahead.room(taken[0] + ahead.limit)
    now[0] += 10.0  # nothing taken for 10 s: back to the least, never to nothing
    assert ahead.room(taken[0] + 999)
    assert ahead.limit == 1000


async def test_history_the_pipeline_stopped_taking_is_an_error_that_says_why() -> None:
    # a message the embedded broker dropped never arrives: the demo says so, it does not hang
    taken = iter([10, 20, 30])
    with pytest.raises(TimeoutError, match=r"30 of the 40 history Samples .* no more in 0.3 s"):
        await until_accounted(lambda: next(taken, 30), 40, stall_s=0.3)
    seen = iter(range(0, 41, 10))
    await until_accounted(lambda: next(seen), 40, stall_s=0.3)


def test_the_accounts_see_the_rollover_and_the_gaps_and_nothing_else(tmp_path: Path) -> None:
    end = _t(2026, 11, 25, 18, 40)
    _, readings, _ = _history(6, end)
    cfg, _data = demo_config.effective(
        tmp_path,
        BrokerConfig(),
        dict.fromkeys([d["id"] for d in demo_config.template()["edge"]["devices"]], 1502),
        poll_s=60,
        wall_per_poll_s=1,
    )
    seqs: dict[str, int] = {}
    samples = []
    for r in readings:
        seqs[r.device] = seqs.get(r.device, -1) + 1
        samples.append(Sample(site=cfg.site.id, device=r.device, seq=seqs[r.device],
                              ts=r.ts_ms, values=r.values))  # fmt: skip
    ledger = Ledger(tmp_path / "ledger.sqlite")
    accounts = open_accounts(cfg.site, cfg.rules, ledger, tmp_path)
    replay(accounts.engine, samples)
    kinds: dict[tuple[str, str], int] = {}
    for e in ledger.events(cfg.site.id):
        kinds[(e.kind, e.device)] = kinds.get((e.kind, e.device), 0) + 1
    assert kinds.pop(("rollover", "pv-roof")) == 1
    assert kinds.pop(("gap", "hvac")) >= 1
    kinds.pop(("manual", "chiller-2-2026-07"))  # the refrigerant top-up in the config
    assert kinds == {}  # no reset, spike or clock fault: the history is clean otherwise
    start = int((end - 5 * 86_400) * 1000)
    r = accounts.period(start, int(end * 1000))
    assert r["scope1_kgco2e"] > 0  # the boiler burns gas
    assert r["scope2_location_kgco2e"] > 0
    assert r["scope2_market_kgco2e"] >= 0
    assert 0 < r["renewable_share"] < 1
    assert 1.2 < r["pue"]["dc1"] < 1.8
    ledger.close()


def test_the_config_the_demo_runs_is_a_site_config_the_other_commands_load(
    tmp_path: Path,
) -> None:
    ports = {"grid-import": 40001, "pv-roof": 40002, "smt-line-1": 40003}
    others = ["smt-line-2", "assembly", "compressed-air", "hvac", "dc-intake", "dc-it", "office"]
    ports |= {d: 40010 + i for i, d in enumerate(others)}
    broker = BrokerConfig(url="mqtt://127.0.0.1:18830", protocol="3.1.1")
    cfg, data = demo_config.effective(tmp_path, broker, ports, poll_s=60, wall_per_poll_s=1)
    by_id = {d.id: d for d in cfg.edge.devices}
    assert by_id["grid-export"].transport.port == 40001  # the same meter as grid-import
    assert by_id["pv-roof"].interval_s == 60
    demo_config.save(tmp_path / "site.yaml", data, "test")
    loaded = load(tmp_path / "site.yaml")
    assert loaded.config == cfg
    assert loaded.config.rules.fiscal_year_start_month == 4
    assert loaded.config.site.region == "CN-HB"
    text = (Path(demo_config.DEMO_DIR) / "demo-factors.yaml").read_text()
    assert "DEMO DATA" in text


def test_a_meter_without_a_simulator_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no simulated meter"):
        demo_config.effective(tmp_path, BrokerConfig(), {"grid-import": 1}, poll_s=60,
                              wall_per_poll_s=1)  # fmt: skip


async def test_the_clock_runs_speed_times_faster_once_started() -> None:
    clock = SimClock(1_000_000.0, speed=100)
    await asyncio.sleep(0.05)
    assert clock.now() == 1_000_000.0  # stands still until started
    clock.start()
    t0 = time.monotonic()
    await clock.sleep_until(1_000_020.0)  # 20 simulated seconds
    waited = time.monotonic() - t0
    assert 0.15 < waited < 1.0
    assert clock.now() >= 1_000_020.0
    assert clock.wall_seconds(60) == pytest.approx(0.6)


def _snapshot(**kw: object) -> Snapshot:
    site = SiteInfo(id="wuhan-fab1", name="Demo Electronics (Wuhan) Fab 1",
                    timezone="Asia/Shanghai", region="CN-HB")  # fmt: skip
    now = int(_t(2026, 11, 25, 14, 30) * 1000)
    values = {
        "site_power_kw": 1234.5, "energy_today_kwh": 17_654.3, "cfe_today_ratio": 0.123,
        "target_on_track": 1.0, "target_actual_to_date_tco2e": 4321.0,
        "target_budget_to_date_tco2e": 4910.0, "target_forecast_fy_tco2e": 6789.0,
        "target_allowed_fy_tco2e": 7505.0,
    }  # fmt: skip
    for p in ("today", "month", "fy"):
        values |= {f"scope1_{p}_kgco2e": 2345.6, f"scope2_location_{p}_kgco2e": 123_456.7}
        values |= {f"scope2_market_{p}_kgco2e": 98_765.4, f"renewable_share_{p}_ratio": 0.2}
    hours = [HourFlow(now - (24 - i) * 3_600_000, 1000.0 + 10 * i, 900.0, 50.0 * (i % 7))
             for i in range(24)]  # fmt: skip
    devices = [DeviceRow(f"a-very-long-device-name-{i}", i % 4 != 0, 1234.5) for i in range(12)]
    alerts = [AlertLine("critical", "demand_near_limit", "", "firing", now,
                        "site power above 90 % of the contracted demand " * 3)] * 6  # fmt: skip
    events = [EventLine(now, "pv-roof", "rollover", "counter rolled over " * 10)] * 9
    base: dict[str, object] = dict(
        site=site, now_ms=now, speed=60.0, values=values, pue={"dc1": 1.33},
        fy_label="FY2027", data_from_ms=now - 30 * 86_400_000, hours=hours, devices=devices,
        alerts=alerts, alerts_active=6, events=events, events_total=9, power_kw=1250.0,
        status="live", pipeline="stored 41,230 readings " * 5,
    )  # fmt: skip
    base |= kw
    return Snapshot(**base)  # type: ignore[arg-type]


def _lines(snap: Snapshot, width: int = WIDTH) -> list[str]:
    console = Console(width=width, height=HEIGHT, record=True, color_system=None,
                      file=open("/dev/null", "w"))  # noqa: SIM115  # fmt: skip
    console.print(render(snap, width))
    return console.export_text().splitlines()


def test_the_view_fits_100_by_30_and_keeps_its_size() -> None:
    full = _lines(_snapshot())
    empty = _lines(_snapshot(values={}, hours=[], devices=[], alerts=[], events=[],
                             power_kw=None, pue={}))  # fmt: skip
    assert len(full) == len(empty) == HEIGHT
    assert max(len(line) for line in full + empty) == WIDTH
    text = "\n".join(full)
    labels = ["Site power", "Energy today", "Scope 1", "Scope 2 location", "Scope 2 market",
              "Renewable share", "CFE", "PUE", "Devices", "Alerts", "Ledger", "Target"]  # fmt: skip
    for label in labels:
        assert label in text, label
    assert "1,234 kW" in text  # rules' site power (the meters' own only until rules has one)
    assert "17,654 kWh" in text
    assert "dc1 1.33" in text
    assert "9 of 12 online" in text
    assert "123.46 t" in text
    assert "98.77 t" in text
    assert "12.3 %" in text
    assert "on track" in text
    assert "FY2027" in text
    assert "1,250 kW" in "\n".join(_lines(_snapshot(values={})))
    # a narrower terminal gets a narrower view, cut, not wrapped
    narrow = _lines(_snapshot(), 80)
    assert len(narrow) == HEIGHT
    assert max(len(line) for line in narrow) == 80


def test_site_power_is_not_inflated_while_a_sub_meter_lags(tmp_path: Path) -> None:
    from lingtan.config import parse
    from rules.live import Live

    loaded = parse(
        "site: {id: fab, timezone: Asia/Shanghai, region: CN-HB}\n"
        "rules:\n"
        "  meters:\n"
        "    - {device: grid, role: grid_import}\n"
        "    - {device: hvac, role: submeter}\n",
        tmp_path / "site.yaml",
    )
    cfg = loaded.config
    ledger = Ledger(tmp_path / "ledger.sqlite")
    accounts = open_accounts(cfg.site, cfg.rules, ledger, tmp_path)
    t0 = int(_t(2026, 11, 25, 10) * 1000)
    minute = 60_000

    def s(dev: str, seq: int, ts: int, kwh: float) -> Sample:
        return Sample(site="fab", device=dev, seq=seq, ts=ts, values={"energy_import_kwh": kwh})

    # 1200 kW through the grid meter, read every minute; the HVAC meter falls silent after 1 min
    samples = [s("grid", i, t0 + i * minute, 1000 + 20 * i) for i in range(6)]
    samples += [s("hvac", 0, t0, 50.0), s("hvac", 1, t0 + minute, 55.0)]
    replay(accounts.engine, sorted(samples, key=lambda x: x.ts))
    watermark = accounts.engine.watermark()
    assert watermark == t0 + minute
    figures = Live(accounts).figures(watermark)
    assert figures.site_power_kw == pytest.approx(1200, rel=0.05)
    ledger.close()
