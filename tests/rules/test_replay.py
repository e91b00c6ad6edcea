"""Replay: the engine over recorded Samples gives the same figures in one go or in pieces."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.config import MeterConfig, Role, RulesConfig, VirtualMeter
from rules.engine import Engine
from rules.factors import FactorLibrary
from rules.ledger import Ledger
from rules.replay import read_samples, replay, summary
from telemetry.config import SiteInfo
from telemetry.sample import Sample, encode
from telemetry.timeutil import QUARTER_HOUR_MS

# kgCO2/kWh, MEE & NBS 2023 national average (the newest vintage in 2025), written here on purpose
CN_2023 = 0.5306
SITE = SiteInfo(id="plant-a", timezone="Asia/Shanghai", region="CN")
T0 = 1_764_000_000_000 - 1_764_000_000_000 % QUARTER_HOUR_MS


def _read(seq: int, ts: int, kwh: float) -> Sample:
    return Sample(site="plant-a", device="grid", seq=seq, ts=ts,
                  values={"energy_import_kwh": kwh})


def _config(tmp: Path) -> Path:
    path = tmp / "site.yaml"
    path.write_text("site: {id: plant-a, timezone: Asia/Shanghai, region: CN}\n"
                    "rules:\n  meters:\n    - {device: grid, role: grid_import, "
                    "counter_max: 100000, max_power_kw: 1000, gap_s: 3600}\n")
    return path


def test_a_recorded_hour_with_a_rollover_and_a_spike(tmp_path: Path) -> None:
    readings = [
        _read(0, T0, 99_990.0),
        _read(1, T0 + 10 * 60_000, 99_998.0),      # +8
        _read(2, T0 + 20 * 60_000, 6.0),           # rollover at 100000: +8
        _read(3, T0 + 30 * 60_000, 900_000.0),     # a spike (far above 1000 kW): held
        _read(4, T0 + 40 * 60_000, 14.0),          # a glitch: +8 from 6, counted
        _read(5, T0 + 60 * 60_000, 30.0),          # +16
    ]
    path = tmp_path / "samples.jsonl"
    # out of order in the file, and one redelivered line: replay sorts and dedupes
    lines = [encode(s) for s in readings]
    path.write_bytes(b"\n".join([lines[1], lines[0], *lines[2:], lines[3]]) + b"\n")
    out = subprocess.run([sys.executable, "-m", "lingtan", "replay", "-c", str(_config(tmp_path)),
                          str(path), "--json"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    kwh = 8 + 8 + 8 + 16
    assert body["energy_kwh"]["grid_import"] == {"total": pytest.approx(kwh), "estimated": 0}
    assert body["scope2_location_kgco2e"] == pytest.approx(kwh * CN_2023)
    # location-based at the grid average; market-based (no instruments) at the residual mix
    assert [f["id"] for f in body["factors"]] == ["cn-mee-2023-grid-national-average",
                                                  "cn-mee-2023-grid-national-excl-market-nonfossil"]
    assert [e["kind"] for e in body["events"]] == ["rollover", "spike", "spike"]
    # from 09:00 site time on: only the readings after it count in the summary
    t1 = T0 + 30 * 60_000
    part = subprocess.run([sys.executable, "-m", "lingtan", "replay", "-c",
                           str(_config(tmp_path)), str(path), "--json", "--from",
                           _iso(t1)], capture_output=True, text=True, timeout=60, check=False)
    assert json.loads(part.stdout)["energy_kwh"]["grid_import"]["total"] == pytest.approx(
        8 * 10 / 20 + 16)  # the glitch step (20 min, from 6 to 14) half after t1, then 16


def _iso(ts: int) -> str:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    return datetime.fromtimestamp(ts / 1000, tz=ZoneInfo("Asia/Shanghai")).replace(
        tzinfo=None).isoformat()


def test_a_bad_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    path.write_bytes(encode(_read(0, T0, 1.0)) + b"\n{\"site\": 3}\n")
    out = subprocess.run([sys.executable, "-m", "lingtan", "replay", "-c", str(_config(tmp_path)),
                          str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert f"{path}:2: site=3: Input should be a valid string" in out.stderr


def _engine(folder: Path) -> Engine:
    cfg = RulesConfig(meters=[MeterConfig(device="grid", role=Role.GRID_IMPORT,
                                          counter_max=100_000, max_power_kw=1000, gap_s=900)])
    return Engine(SITE, cfg, Ledger(folder / "ledger.sqlite"), FactorLibrary.load())


steps = st.lists(st.tuples(st.integers(1, 3600), st.sampled_from(["up", "down", "spike"]),
                           st.floats(0, 50)), min_size=2, max_size=60)


@settings(max_examples=60, deadline=None)
@given(steps, st.lists(st.integers(1, 59), max_size=5))
def test_replaying_in_pieces_equals_replaying_in_one_go(
        plan: list[tuple[int, str, float]], cuts: list[int]) -> None:
    ts, value, samples = T0, 1000.0, []
    for seq, (dt, kind, kwh) in enumerate(plan):
        ts += dt * 1000
        value = value + kwh if kind == "up" else value - kwh if kind == "down" else value * 50
        samples.append(_read(seq, ts, max(value, 0.0)))
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        whole = _engine(Path(a))
        replay(whole, samples)
        pieces = _engine(Path(b))
        bounds = [0, *sorted({c for c in cuts if c < len(samples)}), len(samples)]
        for lo, hi in itertools.pairwise(bounds):
            replay(pieces, samples[lo:hi])
        replay(pieces, samples[: len(samples) // 2])  # a redelivery changes nothing
        assert summary(pieces) == summary(whole)
        # energy is conserved by the split: intervals add up to what the site rows hold
        energy = sum(k for _, k in whole.ledger.meter_intervals("plant-a", "grid"))
        assert energy == pytest.approx(summary(whole)["grid_import_kwh"], abs=1e-6)
        # every emission row names the factors it used, each one in the library
        for row in whole.ledger.emissions("plant-a"):
            assert row.factor_ids
            assert all(f in whole.factors for f in row.factor_ids.split(","))


def test_read_samples_takes_lists_and_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    two = orjson.dumps([_read(0, T0, 1.0).model_dump(mode="json"),
                        _read(1, T0 + 1000, 2.0).model_dump(mode="json")])
    path.write_bytes(two + b"\n\n" + encode(_read(2, T0 + 2000, 3.0)) + b"\n")
    assert [s.seq for s in read_samples(path)] == [0, 1, 2]


def test_renewable_share_is_matched_per_interval_and_sub_meters_balance(tmp_path: Path) -> None:
    cfg = RulesConfig(meters=[
        MeterConfig(device="grid", role=Role.GRID_IMPORT),
        MeterConfig(device="pv", role=Role.GENERATION, renewable=True),
        MeterConfig(device="bat-in", role=Role.BATTERY_CHARGE),
        MeterConfig(device="bat-out", role=Role.BATTERY_DISCHARGE),
        MeterConfig(device="line-1", role=Role.SUBMETER, area="smt"),
        MeterConfig(device="dc1-intake", role=Role.DC_FACILITY, zone="dc1"),
        MeterConfig(device="dc1-it", role=Role.IT_LOAD, zone="dc1"),
    ])
    q = 15 * 60_000
    # kWh counter readings at T0, T0 + 15 min, T0 + 30 min
    course = {
        "grid": ("energy_import_kwh", [0, 0, 10]),       # noon: none; evening: 10
        "pv": ("energy_export_kwh", [0, 60, 60]),        # noon: 60; evening: 0
        "bat-in": ("energy_import_kwh", [0, 40, 40]),    # noon: the battery takes 40
        "bat-out": ("energy_export_kwh", [0, 0, 30]),    # evening: it gives 30 back
        "line-1": ("energy_import_kwh", [0, 15, 30]),    # a line: 15 and 15
        "dc1-intake": ("energy_import_kwh", [0, 3, 5.5]),  # data centre intake: 5.5
        "dc1-it": ("energy_import_kwh", [0, 2, 4]),      # of which IT: 4
    }
    e = Engine(SITE, cfg, Ledger(tmp_path / "ledger.sqlite"), FactorLibrary.load())
    replay(e, [Sample(site="plant-a", device=d, seq=i, ts=T0 + i * q, values={qty: float(v)})
               for d, (qty, vals) in course.items() for i, v in enumerate(vals)])
    s = summary(e)
    # noon: consumed = 0 + 60 - 40 = 20, all of it from PV (renewable 20)
    # evening: consumed = 10 + 30 = 40; the battery's 30 is not counted as renewable
    assert s["consumption_kwh"] == pytest.approx(60)
    assert s["renewable_onsite_kwh"] == pytest.approx(20)
    assert s["renewable_share"] == pytest.approx(20 / 60)  # netting would claim 60/60
    # sub-meters: the line's 30 and the data centre's intake 5.5 (its IT load is inside it)
    assert s["submetered_kwh"] == pytest.approx(35.5)
    assert s["unmetered_kwh"] == pytest.approx(60 - 35.5)
    assert s["energy_kwh"]["generation"]["total"] == pytest.approx(60)
    assert s["pue"] == {"dc1": pytest.approx(5.5 / 4)}  # 1.375
    assert s["it_load_kwh"] == pytest.approx(4)


def test_a_generation_meter_must_say_whether_it_is_renewable() -> None:
    with pytest.raises(ValueError, match="renewable: true"):
        MeterConfig(device="pv", role=Role.GENERATION)
    with pytest.raises(ValueError, match="applies to generation meters"):
        MeterConfig(device="grid", role=Role.GRID_IMPORT, renewable=True)
    with pytest.raises(ValueError, match="`zone` is required"):
        MeterConfig(device="it", role=Role.IT_LOAD)
    with pytest.raises(ValueError, match="a sub-meter with a zone would count as that zone's"):
        VirtualMeter(id="v", formula="a - b", zone="dc1")
    with pytest.raises(ValueError, match="`zone` is required for it_load and dc_facility"):
        VirtualMeter(id="v", formula="a - b", role="it_load")


def test_a_csv_export_replays_like_json_lines(tmp_path: Path) -> None:
    readings = [_read(i, T0 + i * 60_000, 10.0 * i) for i in range(5)]
    jl = tmp_path / "s.jsonl"
    jl.write_bytes(b"".join(encode(s) + b"\n" for s in readings))
    rows = ["site,device,seq,ts,quantity,value"] + [
        f"plant-a,grid,{s.seq},{s.ts},energy_import_kwh,{s.values['energy_import_kwh']}"
        for s in readings
    ]
    csv_path = tmp_path / "s.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    assert list(read_samples(csv_path)) == list(read_samples(jl))
    csv_path.write_text("\n".join([*rows[:3], "plant-a,grid,9,1,energy_import_kwh,nan"]) + "\n")
    with pytest.raises(ValueError, match=r"s.csv:4: value 'nan' is not a finite number"):
        list(read_samples(csv_path))
    csv_path.write_text("site,device,ts,value\n")
    with pytest.raises(ValueError, match=r"s.csv:1: the header must be"):
        list(read_samples(csv_path))
