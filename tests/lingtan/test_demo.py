"""`lingtan demo` for real: simulated meters on loopback, the embedded broker (or Mosquitto over
MQTT 5), edge, ingest, rules and alerts, a history and then the live plant on a fast clock."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from lingtan.config import load
from lingtan.demo import run_demo
from lingtan.view import HEIGHT, WIDTH, Snapshot
from rules.ledger import Ledger
from tests.servers import Server

pytestmark = pytest.mark.integration

HUBEI_2023 = 0.4044  # kgCO2/kWh, MEE & NBS 2023 provincial average for Hubei: the plant is in Wuhan


async def test_the_plant_lives_its_history_and_its_first_half_hour(tmp_path: Path) -> None:
    frames: list[Snapshot] = []
    out = io.StringIO()
    # speed 300: a poll every simulated 5 minutes is one a wall second; the HVAC meter's gateway
    # drops out 4 to 22 minutes after the start (plant.yaml), 1 to 5 seconds in
    result = await run_demo(
        duration=11,
        broker_url=None,
        protocol="3.1.1",
        state_dir=tmp_path,
        console=Console(file=out, width=100, height=30),
        speed=300,
        history_days=2,
        refresh_s=0.25,
        on_snapshot=frames.append,
    )
    assert result.history_samples > 2 * 96 * 11
    assert result.history_s is not None
    assert result.full_view_s is not None
    live = [f for f in frames if f.status == "live" and f.values]
    assert len(live) >= 10
    # figures move: the fiscal year's emissions grow, the plant's clock runs ahead
    first, last = live[0], live[-1]
    assert last.values["scope2_location_fy_kgco2e"] > first.values["scope2_location_fy_kgco2e"]
    assert last.values["scope1_fy_kgco2e"] > first.values["scope1_fy_kgco2e"]
    assert last.now_ms - first.now_ms > 20 * 60_000
    for key in ("site_power_kw", "energy_today_kwh", "scope2_market_today_kgco2e",
                "renewable_share_today_ratio", "cfe_today_ratio", "target_on_track"):  # fmt: skip
        assert key in last.values, key
    # the data centre's PUE today (IT + UPS losses + cooling over IT: 1.31, + 0.012 a degC over 10
    # degC, plant.yaml); just after midnight there is none until both meters close a quarter hour
    pues = [f.pue["dc1"] for f in live if f.pue]
    assert len(pues) >= len(live) // 2
    assert all(1.2 < p < 1.8 for p in pues), pues
    assert last.hours
    assert last.power_kw is not None
    assert last.power_kw > 300
    # the HVAC meter went offline and came back; every other meter stayed online
    hvac = [next(d for d in f.devices if d.id == "hvac").online for f in live]
    assert False in hvac
    assert hvac[-1] is True
    assert all(d.online for f in live[-3:] for d in f.devices)
    assert "meter_offline{device=hvac}" in result.alerts_fired
    assert any(a.rule == "meter_offline" for f in live for a in f.alerts)
    # the ledger: the inverter's rollover (history), the HVAC gap (live); no reset or spike
    ledger = Ledger(tmp_path / "ledger.sqlite")
    try:
        events = ledger.events("wuhan-fab1")
        live_from = live[0].now_ms - 60_000
        assert any(e.kind == "rollover" and e.device == "pv-roof" for e in events)
        assert any(e.kind == "gap" and e.device == "hvac" and e.ts >= live_from for e in events)
        assert not [e for e in events if e.kind in ("reset", "spike", "clock")]
        # Scope 2 location-based with Hubei's factor, interval by interval
        ivs = ledger.site_intervals("wuhan-fab1", live_from - 86_400_000, last.now_ms)
        assert ivs
        for iv in ivs:
            assert iv.scope2_location_kgco2e == pytest.approx(iv.grid_import_kwh * HUBEI_2023)
    finally:
        ledger.close()
    # what was printed: frames of the view, none wider than the terminal
    lines = [line for line in out.getvalue().splitlines() if line.startswith(("╭", "│", "╰"))]
    assert len(lines) >= HEIGHT
    assert max(len(line) for line in lines) == WIDTH
    # the config it ran with is one the other commands load
    assert load(result.config).config.site.id == "wuhan-fab1"


def test_lingtan_demo_against_mosquitto_over_mqtt5_fits_100_by_30(
    tmp_path: Path, mosquitto: Server
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lingtan", "demo", "--duration", "6", "--speed", "300",
         "--history-days", "0.5", "--broker", f"mqtt://127.0.0.1:{mosquitto.port}",
         "--protocol", "5", "--state-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
        env={"COLUMNS": "100", "LINES": "30", "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert f"broker mqtt://127.0.0.1:{mosquitto.port} (MQTT 5)" in out
    frame = [line for line in out.splitlines() if line.startswith(("╭", "│", "╰"))]
    assert len(frame) == HEIGHT, out
    assert max(len(line) for line in frame) == WIDTH
    assert re.search(r"Site power\s+[\d,]+ kW", out), out
    m = re.search(r"history: ([\d,]+) readings accounted ([\d.]+) s after start", out)
    assert m is not None, out
    assert "config and data: " in out
    assert "Traceback" not in proc.stderr


def test_help_lists_every_command() -> None:
    out = subprocess.run([sys.executable, "-m", "lingtan", "--help"], capture_output=True,
                         text=True, timeout=60, check=True, env={"COLUMNS": "120",
                                                                 "PATH": "/usr/bin:/bin"}).stdout
    for command in ("demo", "edge", "ingest", "rules", "poll", "check-config"):
        assert re.search(rf"│ {command}\s", out), command
