"""`lingtan rules` live against a real Mosquitto: site figures on the derived topic, and an
alert on the alert topic and at a real webhook, from readings published as a meter would."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import orjson
import pytest

from lingtan.config import load
from rules.ledger import Ledger
from rules.service import RulesService
from telemetry.config import BrokerConfig
from telemetry.sample import Sample, decode, encode
from telemetry.timeutil import now_ms
from tests.mqtt_helpers import collect, publish
from tests.servers import mosquitto

pytestmark = pytest.mark.integration

CONFIG = """
site: {{id: fab, name: Test fab, timezone: Asia/Shanghai, region: CN}}
broker: {{url: "mqtt://127.0.0.1:{port}"}}
rules:
  client_id: test-rules
  ledger: ledger.sqlite
  meters:
    - {{device: grid, role: grid_import}}
alerts:
  state: alerts.sqlite
  defaults: {{meter_offline: false, data_gap: false}}
  rules:
    - {{name: site-power-high, kind: threshold, figure: site_power_kw, above: 500,
       clear_below: 400, severity: critical}}
  channels:
    hook: {{url_env: TEST_LINGTAN_HOOK}}
  retry: {{attempts: 3, initial_s: 0.1, max_s: 0.2}}
"""


class _Hook(BaseHTTPRequestHandler):
    posts: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).posts.append(body)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    _Hook.posts = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("TEST_LINGTAN_HOOK", f"json://127.0.0.1:{server.server_address[1]}/hook")
    yield _Hook.posts
    server.shutdown()


def _wait(cond: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_site_figures_and_an_alert_go_out_live(tmp_path: Path, hook: list[bytes]) -> None:
    with mosquitto(tmp_path) as server:
        (tmp_path / "site.yaml").write_text(CONFIG.format(port=server.port))
        loaded = load(tmp_path / "site.yaml")
        c = loaded.config
        broker = BrokerConfig(url=f"mqtt://127.0.0.1:{server.port}")
        svc = RulesService(c.site, c.broker, c.rules, base_dir=tmp_path, alerts=c.alerts,
                           alerts_every_s=0.1)
        stop = threading.Event()
        t = threading.Thread(target=svc.run, args=(stop,))
        with collect(broker, "lingtan/v1/fab/derived") as derived, \
                collect(broker, "lingtan/v1/fab/alert") as alerts:
            t.start()
            try:
                svc.consumer.wait_connected(10)
                t0 = now_ms() - 60_000
                t0 -= t0 % 900_000  # the start of a 15-minute interval, a minute or more ago
                # 1 kWh a second for 30 s: 3600 kW average over the open interval
                readings = [
                    Sample(site="fab", device="grid", seq=i, ts=t0 + i * 1000,
                           values={"energy_import_kwh": 100.0 + i})
                    for i in range(31)
                ]
                publish(broker, [("lingtan/v1/fab/grid/sample", encode(s)) for s in readings])

                def site_figures() -> dict[str, float] | None:
                    for p in reversed(derived.payloads()):
                        for s in decode(p):
                            if s.device == "site" and s.ts == readings[-1].ts:
                                return dict(s.values)
                    return None

                _wait(lambda: site_figures() is not None)
                fig = site_figures()
                assert fig is not None
                # 30 kWh from the interval's start to the last reading, 30 s after it
                assert fig["site_power_kw"] == pytest.approx(30 * 3600 / 30)
                assert fig["energy_today_kwh"] == pytest.approx(30)
                # CN 2023 national average (0.5306) and residual mix (0.6096), no instruments
                assert fig["scope2_location_today_kgco2e"] == pytest.approx(30 * 0.5306)
                assert fig["scope2_market_today_kgco2e"] == pytest.approx(30 * 0.6096)
                assert fig["scope2_location_fy_kgco2e"] == pytest.approx(30 * 0.5306)

                _wait(lambda: alerts.payloads() and hook)
                event = orjson.loads(alerts.payloads()[0])
                assert event["kind"] == "firing"
                assert event["rule"] == "site-power-high"
                # what is firing is also a derived figure the database keeps (dashboards)
                def firing() -> dict[str, float] | None:
                    for p in reversed(derived.payloads()):
                        for s in decode(p):
                            if s.device == "alerts":
                                return dict(s.values)
                    return None

                _wait(lambda: firing() is not None)
                assert firing() == {"alerts_firing_count": 1.0, "alerts_critical_count": 1.0}
                assert fig["estimated_share_today_ratio"] == 0.0
                mail = orjson.loads(hook[0])
                assert "3,600" in mail["message"] or "3600" in mail["message"]
                assert "Test fab" in mail["title"]
            finally:
                stop.set()
                t.join(20)
        assert not t.is_alive()
        # the event the broker acknowledged is not offered again after a restart
        svc2 = RulesService(c.site, c.broker, c.rules, base_dir=tmp_path, alerts=c.alerts)
        assert svc2.alerts is not None
        assert svc2.alerts.unpublished() == []
        svc2.alerts.close()
        svc2.ledger.close()


def test_a_rollover_at_the_register_width_the_edge_reports(tmp_path: Path) -> None:
    """The config gives no counter_max; the edge's retained status says where the counter
    register wraps (counters_max, from the profile), and rules counts the wrap as a rollover."""
    with mosquitto(tmp_path) as server:
        (tmp_path / "site.yaml").write_text(CONFIG.format(port=server.port))
        loaded = load(tmp_path / "site.yaml")
        c = loaded.config
        broker = BrokerConfig(url=f"mqtt://127.0.0.1:{server.port}")
        publish(broker, [("lingtan/v1/fab/grid/status", orjson.dumps(
            {"state": "online", "ts": now_ms(), "counters_max": {"energy_import_kwh": 99999.99}}))],
            retain=True)
        svc = RulesService(c.site, c.broker, c.rules, base_dir=tmp_path)
        stop = threading.Event()
        t = threading.Thread(target=svc.run, args=(stop,))
        t.start()
        try:
            svc.consumer.wait_connected(10)
            _wait(lambda: svc.engine.counter_max_reported)
            t0 = now_ms() - 60_000
            # 99990 -> 99998 (8 kWh), then the register wraps: 99998 -> 99999.99 -> 0 -> 3
            publish(broker, [("lingtan/v1/fab/grid/sample", encode(Sample(
                site="fab", device="grid", seq=i, ts=t0 + i * 10_000,
                values={"energy_import_kwh": v}))) for i, v in enumerate([99990.0, 99998.0, 3.0])])
            _wait(lambda: svc.samples_applied == 3)
        finally:
            stop.set()
            t.join(20)
        ledger = Ledger(tmp_path / "ledger.sqlite")
        kwh = sum(k for _, k in ledger.meter_intervals("fab", "grid"))
        assert kwh == pytest.approx(8 + (99999.99 - 99998) + 3)  # 12.99
        assert [e.kind for e in ledger.events("fab")] == ["rollover"]
