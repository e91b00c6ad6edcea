"""`lingtan grafana push` against a local server speaking the Grafana API endpoints it uses.

Grafana itself is not installable here (see fake_grafana.py); these tests pin what push sends
and that a second push changes nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lingtan.grafana.dashboards import DATASOURCE_UID, generate
from tests.grafana.fake_grafana import fake_grafana
from tests.servers import free_port

TOKEN = "glsa_test-token-0123456789"
INFLUX_TOKEN = "influx-secret-token-abc"
UIDS = {g.uid for g in generate()}


def lingtan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lingtan", "grafana", "push", *args],
                          capture_output=True, text=True, timeout=60, check=False,
                          env=os.environ | {"COLUMNS": "200"})


@pytest.fixture
def secrets(tmp_path: Path) -> dict[str, Path]:
    token = tmp_path / "grafana-token"
    token.write_text(TOKEN + "\n")
    influx = tmp_path / "influx-token"
    influx.write_text(INFLUX_TOKEN)
    return {"token": token, "influx": influx}


def test_push_creates_then_changes_nothing(secrets: dict[str, Path]) -> None:
    with fake_grafana(TOKEN) as (url, state):
        args = ["--url", url, "--token-file", str(secrets["token"]),
                "--influxdb-url", "http://influxdb:8086",
                "--influxdb-token-file", str(secrets["influx"])]
        first = lingtan(*args)
        assert first.returncode == 0, first.stderr
        assert "folder lingtan: created" in first.stdout
        assert "data source: created" in first.stdout
        for uid in UIDS:
            assert f"dashboard {uid}: created" in first.stdout
        assert set(state.dashboards) == UIDS
        for stored in state.dashboards.values():
            assert stored["meta"]["folderUid"] == "lingtan"
            assert stored["dashboard"]["version"] == 1
        ds = state.datasources[DATASOURCE_UID]
        assert ds["type"] == "influxdb"
        assert ds["url"] == "http://influxdb:8086"
        assert ds["jsonData"]["dbName"] == "lingtan"
        assert ds["jsonData"]["version"] == "InfluxQL"
        assert ds["secureJsonData"]["httpHeaderValue1"] == f"Token {INFLUX_TOKEN}"
        assert INFLUX_TOKEN not in first.stdout + first.stderr
        assert TOKEN not in first.stdout + first.stderr

        writes = len(state.writes())
        second = lingtan(*args)
        assert second.returncode == 0, second.stderr
        assert "folder lingtan: unchanged" in second.stdout
        for uid in UIDS:
            assert f"dashboard {uid}: unchanged" in second.stdout
        # the data source is updated in place (its secrets cannot be read back to compare):
        # one PUT by uid, nothing created twice
        assert state.writes()[writes:] == [("PUT", f"/api/datasources/uid/{DATASOURCE_UID}")]
        assert len(state.datasources) == 1
        assert len(state.folders) == 1
        assert all(d["dashboard"]["version"] == 1 for d in state.dashboards.values())


def test_push_restores_a_dashboard_edited_in_grafana(secrets: dict[str, Path]) -> None:
    with fake_grafana(TOKEN) as (url, state):
        args = ["--url", url, "--token-file", str(secrets["token"])]
        assert lingtan(*args).returncode == 0
        state.dashboards["lingtan-site"]["dashboard"]["title"] = "edited by hand"
        again = lingtan(*args)
        assert again.returncode == 0, again.stderr
        assert "dashboard lingtan-site: updated" in again.stdout
        assert "data source: skipped" in again.stdout  # no --influxdb-url: left alone
        stored = state.dashboards["lingtan-site"]["dashboard"]
        assert stored["title"] == "lingtan · Plant overview"
        assert stored["version"] == 2
        assert state.datasources == {}


def test_push_with_a_site_config_sends_its_layout(secrets: dict[str, Path],
                                                  tmp_path: Path) -> None:
    from tests.grafana.plant import config

    site = config(tmp_path).path
    with fake_grafana(TOKEN) as (url, state):
        out = lingtan("--url", url, "--token-file", str(secrets["token"]), "-c", str(site))
        assert out.returncode == 0, out.stderr
        energy = state.dashboards["lingtan-energy"]["dashboard"]
        area = next(v for v in energy["templating"]["list"] if v["name"] == "area")
        assert area["query"] == "assembly : line-a|line-b, utilities : compressor-1"


def test_a_wrong_token_is_refused_clearly(secrets: dict[str, Path], tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("glsa_not-the-token")
    with fake_grafana(TOKEN) as (url, state):
        out = lingtan("--url", url, "--token-file", str(wrong))
        assert out.returncode == 1
        assert "grafana push failed at folder: Grafana answered 401: Unauthorized" in out.stderr
        assert "glsa_not-the-token" not in out.stdout + out.stderr
        assert state.folders == {}
        assert state.dashboards == {}


def test_a_data_source_of_our_name_under_another_uid_is_named(secrets: dict[str, Path]) -> None:
    # made by hand before lingtan was pushed: Grafana refuses a second data source of one name
    hand_made = {"uid": "P951FEA4DE68E13C5", "name": "lingtan InfluxDB", "type": "influxdb",
                 "url": "http://old-influx:8086", "id": 7, "version": 3}
    with fake_grafana(TOKEN) as (url, state):
        state.datasources["P951FEA4DE68E13C5"] = dict(hand_made)
        out = lingtan("--url", url, "--token-file", str(secrets["token"]),
                      "--influxdb-url", "http://influxdb:8086")
        assert out.returncode == 1
        assert ("grafana push failed at data source: Grafana already has a data source named "
                "'lingtan InfluxDB' with uid 'P951FEA4DE68E13C5'; lingtan's dashboards query uid "
                f"'{DATASOURCE_UID}'. Delete or rename that data source") in out.stderr
        assert "Traceback" not in out.stderr
        assert state.datasources == {"P951FEA4DE68E13C5": hand_made}
        assert state.dashboards == {}


def test_unreachable_grafana_and_bad_options(secrets: dict[str, Path], tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    out = lingtan("--url", f"http://127.0.0.1:{port}", "--token-file", str(secrets["token"]),
                  "--timeout-s", "2")
    assert out.returncode == 1
    assert "grafana push failed at folder: cannot reach Grafana: ConnectionError" in out.stderr

    out = lingtan("--url", "http://admin:pw@127.0.0.1:3000", "--token-file",
                  str(secrets["token"]))
    assert out.returncode == 2
    assert "put no credentials in the URL" in out.stderr
    assert "pw" not in out.stderr.replace("put", "")

    out = lingtan("--url", "http://127.0.0.1:3000", "--token-file", str(tmp_path / "none"))
    assert out.returncode == 2
    assert "grafana token: cannot read" in out.stderr

    out = lingtan("--url", "http://127.0.0.1:3000", "--token-file", str(secrets["token"]),
                  "--influxdb-token-file", str(secrets["influx"]))
    assert out.returncode == 2
    assert "--influxdb-* options need --influxdb-url" in out.stderr


def test_the_pushed_model_is_the_committed_json() -> None:
    """What push sends for no layout is byte for byte what file provisioning reads."""
    folder = Path(__file__).parents[2] / "deploy" / "grafana" / "dashboards"
    for g in generate():
        assert json.loads((folder / g.filename).read_text()) == g.model
