"""A plant for fault runs: simulated meters, real servers and the three lingtan processes.

The meters (pymodbus servers serving the SDM630 map) and the TCP proxies run on an event loop
in a thread of the test process, so the test knows every counter each meter served. Mosquitto,
VictoriaMetrics, a webhook receiver for the alert channel, and `lingtan edge`, `lingtan ingest`
and `lingtan rules` run as separate processes on loopback, each of which the test can stop,
kill -9 and start again on the same state.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from collectors.profile import register_map
from lingtan.simulator import SimulatedMeter
from tests.mqtt_helpers import session_properties
from tests.reliability.proxy import Proxy
from tests.rules.alerts.servers import Http, http_server
from tests.servers import VictoriaMetrics, free_port, mosquitto, victoria_metrics, wait_until

T = TypeVar("T")
SITE = "rel"
ENERGY_ADDRESS = 0x48  # SDM630 total import kWh, float32, in the one read from address 0
HOT_KW = 600.0  # the `hot` alert fires above 500 kW on m00 and clears below 400


@dataclass
class MeterLoad:
    """What a simulated meter measures: a power the test sets; energy is its integral."""

    power_kw: float
    energy_kwh: float
    _last: float | None = None

    def __call__(self, t: float) -> dict[str, float]:
        if self._last is not None and t > self._last:
            self.energy_kwh += self.power_kw * (t - self._last) / 3600
        self._last = t
        return {"active_power_kw": self.power_kw, "energy_import_kwh": self.energy_kwh,
                "voltage_l1_v": 230.0, "voltage_l2_v": 231.0, "voltage_l3_v": 229.0,
                "current_l1_a": 100.0, "current_l2_a": 100.0, "current_l3_a": 100.0,
                "power_factor": 0.95, "frequency_hz": 50.0, "energy_export_kwh": 0.0}


class Loop:
    """An event loop in a thread: meters and proxies live here."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="plant-loop",
                                       daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Any, *args: Any) -> None:
        async def go() -> None:
            fn(*args)

        self.run(go())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Proc:
    """A `lingtan` command in its own process, restartable on the same config and state."""

    def __init__(self, name: str, command: str, config: Path, env: dict[str, str]) -> None:
        self.name = name
        self.command = command
        self.config = config
        self.env = env
        self.log = config.parent / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is running"
        with self.log.open("ab") as log:
            log.write(f"\n==== start {self.starts + 1} ====\n".encode())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lingtan", "--log-level", "info", self.command, "-c",
             str(self.config)],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env={**os.environ, **self.env})
        self.starts += 1

    def kill9(self) -> None:
        assert self.proc is not None, f"{self.name} never started"
        assert self.proc.poll() is None, f"{self.name} is not running"
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.kills += 1

    def stop(self) -> int:
        """SIGTERM and wait: the exit code (0 for a clean stop)."""
        if self.proc is None or self.proc.poll() is not None:
            return 0 if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -9

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]


@dataclass
class Webhook:
    """Every POST the alert channel made: (title, message) of apprise's json:// body."""

    server: Http

    @property
    def port(self) -> int:
        return self.server.port

    def deliveries(self) -> list[tuple[str, str]]:
        out = []
        for req in self.server.answered():
            body = orjson.loads(req.body)
            out.append((str(body.get("title", "")), str(body.get("message", ""))))
        return out


@contextmanager
def webhook_server() -> Iterator[Webhook]:
    with http_server() as server:
        yield Webhook(server)


class AlertWatch:
    """Alert events as published on lingtan/v1/{site}/alert.

    Its subscription lives in a persistent broker session, as ingest's and rules' do: when the
    broker restarts, whichever reconnects first, events published meanwhile wait for it (a
    clean session lost those rules sent the moment it was back before the watcher was).
    """

    def __init__(self, port: int) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="rel-alert-watch",
                                  protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(f"lingtan/v1/{SITE}/alert", qos=1)
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.reconnect_delay_set(0.2, 2)
        self.client.connect("127.0.0.1", port, clean_start=False,
                            properties=session_properties(3600))
        self.client.loop_start()
        assert self._ready.wait(10), "the alert watcher did not subscribe"

    def _on_message(self, _c: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
        with self._lock:
            self.events.append(orjson.loads(m.payload))

    def taken(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Plant:
    """Everything a fault run needs; `with Plant(tmp, meters=50) as plant: ...`."""

    def __init__(self, tmp: Path, *, meters: int = 50, edge_via_proxy: bool = False,
                 bad_meters: tuple[str, ...] = ()) -> None:
        self.tmp = tmp
        self.n = meters
        self.devices = [f"m{i:02d}" for i in range(meters)]
        self.edge_via_proxy = edge_via_proxy
        self.bad_meters = bad_meters
        self.loop = Loop()
        self.loads = {d: MeterLoad(power_kw=50.0 + 2 * i, energy_kwh=1000.0 + 10 * i)
                      for i, d in enumerate(self.devices)}
        profile = register_map("eastron-sdm630")
        self.meters = {d: SimulatedMeter(profile, self.loads[d]) for d in self.devices}
        self.meter_proxies: dict[str, Proxy] = {}
        self.broker_proxy: Proxy | None = None
        self.mqtt_port = free_port()
        self.vm_port = free_port()
        self._stack = contextlib.ExitStack()
        self.broker_ctx: Any = None
        self.vm_ctx: Any = None
        self.vm: VictoriaMetrics | None = None
        self.hook: Webhook | None = None
        self.alert_watch: AlertWatch | None = None
        self.procs: dict[str, Proc] = {}

    # --- set-up ------------------------------------------------------------------------------

    def __enter__(self) -> Plant:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        ports = {d: self.loop.run(m.start()) for d, m in self.meters.items()}
        for d in self.bad_meters:
            self.meter_proxies[d] = Proxy(ports[d])
            ports[d] = self.loop.run(self.meter_proxies[d].start())
        self.start_broker()
        self.start_database()
        edge_broker_port = self.mqtt_port
        if self.edge_via_proxy:
            self.broker_proxy = Proxy(self.mqtt_port)
            edge_broker_port = self.loop.run(self.broker_proxy.start())
        self.hook = self._stack.enter_context(webhook_server())
        env = {"REL_HOOK_URL": f"json://127.0.0.1:{self.hook.port}/hook"}
        site = self._config("site.yaml", self.mqtt_port, ports)
        edge = self._config("edge.yaml", edge_broker_port, ports)
        self.procs = {"ingest": Proc("ingest", "ingest", site, env),
                      "rules": Proc("rules", "rules", site, env),
                      "edge": Proc("edge", "edge", edge, env)}
        self.alert_watch = AlertWatch(self.mqtt_port)
        for name in ("ingest", "rules"):
            self.procs[name].start()
        wait_until(lambda: all(self._subscribed(n) for n in ("ingest", "rules")), 60,
                   "ingest and rules subscribed")
        time.sleep(1.0)  # the SUBACKs: from here on the broker keeps every Sample for them
        self.procs["edge"].start()
        wait_until(lambda: self.stored_count() >= self.n, 60, "a first reading of every meter")

    def _subscribed(self, name: str) -> bool:
        proc = self.procs[name]
        if not proc.running():
            raise AssertionError(f"{name} exited while starting: {proc.tail()}")
        return "subscribed to" in proc.log.read_text(errors="replace")

    def _config(self, name: str, broker_port: int, ports: dict[str, int]) -> Path:
        path = self.tmp / name
        path.write_text(yaml.safe_dump({
            "site": {"id": SITE, "timezone": "Asia/Shanghai", "region": "CN-HB"},
            "broker": {"url": f"mqtt://127.0.0.1:{broker_port}", "keepalive_s": 5},
            "edge": {"agent_id": "rel-edge", "state_dir": "state/edge", "health_interval_s": 5,
                     "devices": [{"id": d, "profile": "eastron-sdm630", "interval_s": 1.0,
                                  "timeout_s": 0.5, "transport": {"host": "127.0.0.1",
                                                                  "port": ports[d]}}
                                 for d in self.devices]},
            "ingest": {"client_id": "rel-ingest", "state_path": "state/ingest-state.sqlite",
                       "sqlite": {"path": "state/ts.sqlite"}, "health_interval_s": 3600,
                       "influxdb": {"url": f"http://127.0.0.1:{self.vm_port}", "timeout_s": 2}},
            "rules": {"client_id": "rel-rules", "ledger": "state/ledger.sqlite",
                      "meters": [{"device": d, "role": "grid_import" if d == "m00" else
                                  "submeter", "area": None if d == "m00" else "hall"}
                                 for d in self.devices]},
            "alerts": {
                "state": "state/alerts.sqlite", "repeat": 0,
                # the default meter_offline, sooner: the edge's health Samples about a meter
                # keep coming while it is silent, and must not keep it online
                "defaults": {"meter_offline": {"after": "15s"},
                             **dict.fromkeys(("data_gap", "demand_near_limit",
                                              "off_trajectory"), False)},
                "rules": [
                    {"name": "hot", "kind": "threshold", "device": "m00",
                     "quantity": "active_power_kw", "above": 500, "clear_below": 400,
                     "severity": "critical"},
                ],
                "channels": {"hook": {"url_env": "REL_HOOK_URL", "timeout_s": 5}},
                "retry": {"attempts": 20, "initial_s": 0.5, "max_s": 2},
            },
        }))
        return path

    def start_broker(self) -> None:
        (self.tmp / "broker").mkdir(exist_ok=True)
        self.broker_ctx = mosquitto(self.tmp / "broker", self.mqtt_port, persistent=True)
        self.broker_ctx.__enter__()

    def stop_broker(self) -> None:
        """SIGTERM, as systemd stops it: Mosquitto saves its sessions and queues."""
        self.broker_ctx.__exit__(None, None, None)
        self.broker_ctx = None

    def start_database(self) -> None:
        self.vm_ctx = victoria_metrics(self.tmp, self.vm_port, dedup=True)
        self.vm = self.vm_ctx.__enter__()

    def stop_database(self) -> None:
        self.vm_ctx.__exit__(None, None, None)
        self.vm_ctx = None

    def close(self) -> None:
        for p in self.procs.values():
            p.stop()
        if self.alert_watch is not None:
            self.alert_watch.close()
        for px in [*self.meter_proxies.values(), *([self.broker_proxy] if self.broker_proxy
                                                   else [])]:
            with contextlib.suppress(Exception):
                self.loop.run(px.stop())
        for m in self.meters.values():
            with contextlib.suppress(Exception):
                self.loop.run(m.stop())
        self.loop.close()
        if self.vm_ctx is not None:
            self.vm_ctx.__exit__(None, None, None)
        if self.broker_ctx is not None:
            self.broker_ctx.__exit__(None, None, None)
        self._stack.close()

    # --- what the test does ------------------------------------------------------------------

    def set_power(self, device: str, kw: float) -> None:
        self.loop.call(setattr, self.loads[device], "power_kw", kw)

    def set_meter(self, device: str, mode: str) -> None:
        """Turn a meter behind its proxy: pass, pause (hangs), garbage."""
        self.loop.call(self.meter_proxies[device].set_mode, mode)

    def set_edge_link(self, mode: str) -> None:
        """The edge's network to the broker: pass or pause (cut)."""
        assert self.broker_proxy is not None
        self.loop.call(self.broker_proxy.set_mode, mode)

    def hot_episode(self, seconds: float = 5.0) -> None:
        """m00 above the `hot` threshold for a while, then back: one firing, one resolve."""
        base = self.loads["m00"].power_kw
        self.set_power("m00", HOT_KW)
        time.sleep(seconds)
        self.set_power("m00", base)

    # --- reading back ------------------------------------------------------------------------

    @property
    def state(self) -> Path:
        return self.tmp / "state"

    def stored_count(self) -> int:
        path = self.state / "ts.sqlite"
        if not path.exists():
            return 0
        with contextlib.closing(_ro(path)) as db:
            try:
                return int(db.execute("SELECT count(*) FROM samples").fetchone()[0])
            except sqlite3.OperationalError:
                return 0

    def served_counters(self, device: str) -> list[float]:
        """The float32 energy counter of every read the meter answered, decoded here."""
        out = []
        for s in list(self.meters[device].served):
            if s.function_code == 4 and s.address == 0 and len(s.words) > ENERGY_ADDRESS + 1:
                raw = struct.pack(">2H", *s.words[ENERGY_ADDRESS:ENERGY_ADDRESS + 2])
                out.append(struct.unpack(">f", raw)[0])
        return out

    def edge_last_seqs(self) -> dict[str, int]:
        """The last seq the edge handed out per device (its outbox's own record)."""
        with contextlib.closing(_ro(self.state / "edge" / "outbox.sqlite")) as db:
            return {str(d): int(s) for d, s in
                    db.execute("SELECT device, last FROM seq WHERE site=?", (SITE,))}

    def edge_outbox_depth(self) -> int:
        with contextlib.closing(_ro(self.state / "edge" / "outbox.sqlite")) as db:
            return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def settle(self) -> None:
        """End the run cleanly: rules stop once their alerts are delivered, the edge drains to
        the broker, ingest stores the rest and stops. What rules had not applied yet stays in
        its broker session."""
        wait_until(self._alerts_delivered, 120, "every alert message delivered")
        assert self.procs["rules"].stop() == 0, self.procs["rules"].tail()
        assert self.procs["edge"].stop() == 0, self.procs["edge"].tail()
        last = self.edge_last_seqs()
        total = sum(s + 1 for s in last.values())
        wait_until(lambda: self.stored_count() >= total, 120,
                   f"ingest to store the {total} Samples the edge made")
        time.sleep(1.0)  # a batch in flight: let it end before the stop
        assert self.procs["ingest"].stop() == 0, self.procs["ingest"].tail()

    def _alerts_delivered(self) -> bool:
        path = self.state / "alerts.sqlite"
        if not path.exists():
            return False
        with contextlib.closing(_ro(path)) as db:
            pending = db.execute("SELECT count(*) FROM outbox WHERE state != 'sent'").fetchone()
            unpublished = db.execute("SELECT count(*) FROM event WHERE published = 0").fetchone()
        return int(pending[0]) == 0 and int(unpublished[0]) == 0


def _ro(path: Path) -> sqlite3.Connection:
    """A read-only connection beside the process that writes."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
