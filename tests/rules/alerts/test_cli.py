"""`lingtan alerts test` and `lingtan alerts list`, run as the command an operator types."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lingtan.config import load
from rules.alerts import AlertEngine, AlertStore, state_path
from tests.rules.alerts.helpers import Clock, power
from tests.rules.alerts.servers import http_server, smtp_server

SITE_YAML = """\
site:
  id: wuhan-fab1
  name: Wuhan Fab 1
  timezone: Asia/Shanghai
alerts:
  state: alerts.sqlite
  defaults: {data_gap: false}
  rules:
    - {name: compressor-power, kind: threshold, device: compressor-1,
       quantity: active_power_kw, above: 200, clear_below: 180, for: 5m}
  channels:
    mail: {url_env: LT_CLI_MAIL}
    hook: {url_env: LT_CLI_HOOK, timeout_s: 5}
"""


def _lingtan(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lingtan", "alerts", *args, "-c", str(tmp_path / "site.yaml")],
        capture_output=True, text=True, timeout=60, env=os.environ | env, check=False,
    )


def test_alerts_test_reports_each_channel_and_fails_if_one_did(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(SITE_YAML)
    with smtp_server() as smtp, http_server(fail_first=100) as broken:
        out = _lingtan(tmp_path, "test", LT_CLI_MAIL=smtp.url(), LT_CLI_HOOK=broken.url())
        assert out.returncode == 1, out.stderr
        assert "mail: OK" in out.stdout
        assert "hook: FAILED" in out.stdout
        assert "500" in out.stdout
        assert "1 of 2 channel(s) took the test message; failed: hook" in out.stdout
        [mail] = smtp.messages
        assert mail["Subject"] == "[test] lingtan alerts for Wuhan Fab 1"
    with smtp_server() as smtp, http_server() as hook:
        out = _lingtan(tmp_path, "test", LT_CLI_MAIL=smtp.url(), LT_CLI_HOOK=hook.url())
        assert out.returncode == 0, out.stdout + out.stderr
        assert "2 of 2 channel(s) took the test message" in out.stdout


def test_alerts_test_names_a_missing_secret(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(SITE_YAML)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LT_CLI_")}
    out = subprocess.run(
        [sys.executable, "-m", "lingtan", "alerts", "test", "-c", str(tmp_path / "site.yaml")],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )
    assert out.returncode == 1
    assert "mail: FAILED - alerts.channels.mail: environment variable LT_CLI_MAIL is not set" in (
        out.stdout)


def test_alerts_list_shows_every_rule(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(SITE_YAML)
    loaded = load(tmp_path / "site.yaml")
    cfg = loaded.config
    clock = Clock()
    store = AlertStore(state_path(cfg.alerts, loaded.base_dir))
    e = AlertEngine(cfg.site, cfg.alerts, store, clock=clock)
    e.evaluate(power(250, clock()))
    store.close()
    out = _lingtan(tmp_path, "list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    row = next(line for line in lines if "compressor-power" in line)
    assert "pending" in row
    assert "250 kW" in row
    assert "2025-06-02 10:00:00 CST" in row
    for name in ("meter_offline", "demand_near_limit", "off_trajectory"):
        assert any(name in line and "inactive" in line for line in lines), name
    assert not any("data_gap" in line for line in lines)
