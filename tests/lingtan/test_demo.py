"""`lingtan demo` on the embedded default: live figures, with no server installed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import Server

pytestmark = pytest.mark.integration


def test_demo_shows_live_figures(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lingtan", "demo", "--duration", "6", "--state-dir",
         str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
        env={"COLUMNS": "100", "LINES": "30", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"Site power\s+[\d,]+\.\d kW", out), out
    m = re.search(r"demo finished: (\d+) readings stored, ([\d.]+) kWh, ([\d.]+) kg CO2", out)
    assert m is not None, out
    readings, kwh, kg = int(m[1]), float(m[2]), float(m[3])
    assert readings >= 3
    assert kwh > 0
    # Scope 2 location-based with Hubei's 2023 provincial factor (0.4044 kg/kWh, MEE & NBS
    # 公告2025年第47号): the demo plant is in Wuhan. To display rounding.
    assert kg == pytest.approx(kwh * 0.4044, abs=0.002)
    assert (tmp_path / "ledger.sqlite").exists()
    assert "Traceback" not in proc.stderr


def test_demo_runs_against_a_real_mosquitto_over_mqtt5(tmp_path: Path, mosquitto: Server) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lingtan", "demo", "--duration", "5", "--broker",
         f"mqtt://127.0.0.1:{mosquitto.port}", "--protocol", "5", "--state-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
        env={"COLUMNS": "100", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"broker mqtt://127.0.0.1:{mosquitto.port} (MQTT 5)" in proc.stdout
    m = re.search(r"demo finished: (\d+) readings stored", proc.stdout)
    assert m is not None
    assert int(m[1]) >= 3


def test_help_lists_every_command() -> None:
    out = subprocess.run([sys.executable, "-m", "lingtan", "--help"], capture_output=True,
                         text=True, timeout=60, check=True, env={"COLUMNS": "120",
                                                                 "PATH": "/usr/bin:/bin"}).stdout
    for command in ("demo", "edge", "ingest", "rules", "poll", "check-config"):
        assert re.search(rf"│ {command}\s", out), command
