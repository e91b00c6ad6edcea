"""Real servers on free loopback ports, started by the tests (no mocks of things we can run)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll until `predicate()` is truthy; fail the test naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


async def until(predicate: Callable[[], object], limit_s: float, what: str) -> None:
    """wait_until for async tests: poll without blocking the event loop."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {limit_s:.0f} s waiting for {what}")


def _binary(name: str, *extra: str) -> str:
    found = shutil.which(name) or next((p for p in extra if Path(p).exists()), None)
    if found is None:
        raise RuntimeError(f"{name} is not installed; run `make servers` "
                           "(./tests/install-servers.sh)")
    return found


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Server:
    """A server process we started."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def stop(self) -> None:
        """Terminate and reap."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _start(cmd: list[str], port: int, log: Path, what: str) -> Server:
    out = log.open("wb")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    server = Server(proc, port, log)
    try:
        wait_until(lambda: proc.poll() is not None or _port_open(port), 20, f"{what} on {port}")
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text(errors='replace')[-2000:]}")
    except BaseException:
        server.stop()
        raise
    return server


# The broker config we test with carries the settings we ship (deploy/mosquitto): no QoS 1
# drops for a slow subscriber.
MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_inflight_messages 100
log_dest stdout
log_type error
log_type warning
"""


@contextmanager
def mosquitto(tmp: Path, port: int | None = None, *, persistent: bool = False,
              users: dict[str, str] | None = None) -> Iterator[Server]:
    """Mosquitto 2 on a free port (or on `port`, to restart one).

    `persistent` keeps sessions and queued messages on disk in `tmp` across a restart.
    `users` (name: password) turns anonymous access off: only they may connect.
    """
    port = port or free_port()
    conf = tmp / "mosquitto.conf"
    text = MOSQUITTO_CONF.format(port=port)
    # Started as root, Mosquitto drops to the `mosquitto` user, which cannot reach pytest's
    # private tmp folders: it then runs on WITHOUT persistence, logging only "Error: Permission
    # denied", and cannot read a password file. The test broker stays root.
    if (persistent or users) and os.geteuid() == 0:
        text += "user root\n"
    if persistent:
        data = tmp / "mosquitto-data"
        data.mkdir(exist_ok=True)
        text = text.replace("persistence false", f"persistence true\npersistence_location {data}/")
    if users:
        passwd = tmp / "mosquitto.passwd"
        passwd.write_text("")
        passwd.chmod(0o600)
        for name, password in users.items():
            subprocess.run([_binary("mosquitto_passwd", "/usr/bin/mosquitto_passwd"), "-b",
                            str(passwd), name, password], check=True, capture_output=True)
        text = text.replace("allow_anonymous true",
                            f"allow_anonymous false\npassword_file {passwd}")
    conf.write_text(text)
    server = _start([_binary("mosquitto", "/usr/sbin/mosquitto"), "-c", str(conf)], port,
                    tmp / "mosquitto.log", "mosquitto")
    try:
        yield server
    finally:
        server.stop()


@dataclass
class VictoriaMetrics:
    """VictoriaMetrics: accepts InfluxDB line protocol at /api/v2/write."""

    server: Server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def export(self, match: str) -> list[dict[str, object]]:
        """Every stored series matching `match`, after a flush (VM buffers recent samples)."""
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).read()
        query = urllib.parse.urlencode({"match[]": match})
        body = urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=10).read()
        return [orjson.loads(line) for line in body.splitlines() if line.strip()]


@contextmanager
def victoria_metrics(tmp: Path, port: int | None = None, *, dedup: bool = False,
                     basic_auth: tuple[str, str] | None = None) -> Iterator[VictoriaMetrics]:
    """VictoriaMetrics single-node on a free port (or `port`, to restart one on its data).

    Retention is long enough for any test time. `dedup` keeps one sample per series and
    millisecond, as InfluxDB keeps one point per series and timestamp: what a rewrite after a
    crash between the write and its acknowledgement relies on.
    """
    port = port or free_port()
    cmd = [_binary("victoria-metrics"), f"-httpListenAddr=127.0.0.1:{port}",
           f"-storageDataPath={tmp / 'vm-data'}", "-retentionPeriod=100y",
           "-search.latencyOffset=0s"]
    if dedup:
        cmd.append("-dedup.minScrapeInterval=1ms")
    if basic_auth:  # every HTTP request without these credentials is answered 401
        cmd += [f"-httpAuth.username={basic_auth[0]}", f"-httpAuth.password={basic_auth[1]}"]
    server = _start(cmd, port, tmp / "victoria-metrics.log", "victoria-metrics")
    try:
        yield VictoriaMetrics(server)
    finally:
        server.stop()




INFLUXDB_CONF = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{data}/meta"
[data]
  dir = "{data}/data"
  wal-dir = "{data}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
[logging]
  level = "warn"
"""


@dataclass
class InfluxDB1:
    """InfluxDB 1.x from the OS packages: /write (line protocol) and /query (InfluxQL).

    It has no /api/v2/write (that came in 1.8): what the dashboards' InfluxQL needs is the
    query side, and line protocol is the same on both write endpoints.
    """

    server: Server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def query(self, q: str, db: str | None = None) -> dict[str, object]:
        """Run InfluxQL; the decoded JSON of /query (one result per statement)."""
        params = {"q": q, "epoch": "ms"} | ({"db": db} if db else {})
        req = urllib.request.Request(f"{self.url}/query",
                                     data=urllib.parse.urlencode(params).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return dict(orjson.loads(resp.read()))

    def write(self, db: str, lines: list[str], precision: str = "ms") -> None:
        """Write line protocol; raise on any refusal (204 is the only success)."""
        query = urllib.parse.urlencode({"db": db, "precision": precision})
        for i in range(0, len(lines), 5000):
            req = urllib.request.Request(f"{self.url}/write?{query}",
                                         data="\n".join(lines[i:i + 5000]).encode(),
                                         method="POST")
            with urllib.request.urlopen(req, timeout=30) as resp:
                if resp.status != 204:
                    raise RuntimeError(f"InfluxDB /write answered {resp.status}")


@contextmanager
def influxdb(tmp: Path) -> Iterator[InfluxDB1]:
    """InfluxDB 1.x on free loopback ports (HTTP and the RPC bind-address both)."""
    port, rpc_port = free_port(), free_port()
    data = tmp / "influxdb"
    data.mkdir(exist_ok=True)
    conf = tmp / "influxdb.conf"
    conf.write_text(INFLUXDB_CONF.format(port=port, rpc_port=rpc_port, data=data))
    server = _start([_binary("influxd", "/usr/bin/influxd"), "-config", str(conf)], port,
                    tmp / "influxdb.log", "influxdb")
    try:
        # the port opens before the query engine answers
        wait_until(lambda: _ping(port), 20, "influxdb /ping")
        yield InfluxDB1(server)
    finally:
        server.stop()


def _ping(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1) as resp:
            return bool(resp.status == 204)
    except OSError:
        return False


@contextmanager
def lingtan_process(command: str, config: Path, log: Path, *, env: dict[str, str] | None = None,
                    log_level: str = "info") -> Iterator[subprocess.Popen[bytes]]:
    """`lingtan --log-level <level> <command> -c config` in its own process until the block
    ends (SIGTERM, then SIGKILL after 20 s); its output appended to `log`."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lingtan", "--log-level", log_level, command, "-c",
             str(config)], stdout=out, stderr=subprocess.STDOUT,
            env=None if env is None else os.environ | env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
