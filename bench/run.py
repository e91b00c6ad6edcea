"""The whole pipeline's figures in one command and one table: `bench/run` (see bench/README.md).

Every figure is printed beside a baseline measured in the same run (a ratio survives a busy
machine; an absolute figure does not) and beside its target from the component issues. Results
go to bench/results/run.json (and a dated copy) for run-to-run comparison: `--compare FILE`.

Sections (each reuses the component benchmark it names):
  edge    500 devices at 1 Hz polled by a real `lingtan edge` process (bench/edge.py's simulated
          devices and its raw pymodbus and raw paho baselines); its CPU per poll and peak RSS
  ingest  values/s from a broker backlog to durably stored, to VictoriaMetrics and to SQLite,
          beside raw paho and raw line-protocol writes; p50/p99 sample -> stored (bench/ingest.py)
  rules   values/s through the accounting engine beside the bare arithmetic (bench/rules.py)
  e2e     a plant of 200 simulated SDM630 meters at 1 Hz through real `lingtan edge`, `ingest`,
          `rules` processes, Mosquitto and VictoriaMetrics: p50/p99 from each meter read to the
          first plant emission figure (device `site`, scope2_location_today_kgco2e) that
          accounts for it, beside the broker hop alone; peak RSS of ingest and rules

    bench/run [--only edge,ingest,rules,e2e] [--quick] [--compare bench/results/run-....json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# run as a script, Python put bench/ first on the path, where bench/ingest.py would shadow the
# ingest package: the repository root instead
sys.path[0] = str(ROOT)

import orjson  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
import yaml  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

SECTIONS = ("edge", "ingest", "rules", "e2e")
RESULTS = ROOT / "bench" / "results"


# ---- the table ----------------------------------------------------------------------------

@dataclass
class Row:
    """One line of the table, and what it is compared with."""

    key: str  # stable name, for run-to-run comparison
    section: str
    figure: str
    value: str
    baseline: str
    ratio: str
    target: str
    met: bool | None  # None: no target
    numbers: dict[str, float] = field(default_factory=dict)


def _fmt_rate(v: float) -> str:
    return f"{v:,.0f}/s"


def _pct(lags: list[float], p: float) -> float:
    return lags[min(len(lags) - 1, int(p * len(lags)))] if lags else math.nan


def _print_table(rows: list[Row], previous: dict[str, Row] | None) -> None:
    heads = ["", "figure", "value", "baseline (same run)", "vs baseline", "target", "met"]
    if previous is not None:
        heads.append("previous run")
    cells = []
    for r in rows:
        met = "-" if r.met is None else ("yes" if r.met else "NO")
        line = [r.section, r.figure, r.value, r.baseline, r.ratio, r.target, met]
        if previous is not None:
            old = previous.get(r.key)
            line.append(old.value if old is not None else "")
        cells.append(line)
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    print("  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    last = None
    for cell in cells:
        shown = ["", *cell[1:]] if cell[0] == last else cell
        last = cell[0]
        print("  ".join(c.ljust(w) for c, w in zip(shown, widths, strict=True)).rstrip())


# ---- processes ----------------------------------------------------------------------------

def _proc_status(pid: int, key: str) -> float:
    """A kB figure from /proc/<pid>/status (VmHWM: peak resident set, VmRSS: now), in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return math.nan


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _lingtan(command: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "lingtan", "--log-level", "info", command,
                             "-c", str(config)], stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            cwd=ROOT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for(predicate: Callable[[], object], limit_s: float, what: str,
              procs: list[subprocess.Popen[bytes]] | None = None) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if predicate():
            return
        for p in procs or []:
            if p.poll() is not None:
                raise SystemExit(f"{p.args} exited with {p.returncode} while waiting for {what}")
        time.sleep(0.1)
    raise SystemExit(f"timed out after {limit_s:.0f} s waiting for {what}")


def _import_floor_mb(modules: str) -> float:
    """Peak RSS of a Python process that imports what a service imports, and does nothing."""
    code = f"import {modules}; print(open('/proc/self/status').read())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    for line in out.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


FLOOR_MODULES = {"edge": "lingtan.cli, collectors.agent", "ingest": "lingtan.cli, ingest.service",
                 "rules": "lingtan.cli, rules.service"}


class Watcher:
    """A paho subscriber that notes the time each message arrives."""

    def __init__(self, port: int, topics: list[str]) -> None:
        self.messages: list[tuple[float, str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-watcher",
                                  protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        for t in topics:
            self.client.subscribe(t, qos=1)
        if not self._subscribed.wait(10):
            raise SystemExit("the bench's own subscriber was not subscribed")

    def _on_message(self, _c: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
        now = time.time() * 1000
        with self._lock:
            self.messages.append((now, m.topic, bytes(m.payload)))

    def take(self) -> list[tuple[float, str, bytes]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def _broker_and_db(tmp: Path, *, db: bool) -> Iterator[tuple[int, str | None]]:
    from tests.servers import mosquitto, victoria_metrics

    (tmp / "mq").mkdir(exist_ok=True)
    with mosquitto(tmp / "mq") as broker:
        if not db:
            yield broker.port, None
            return
        with victoria_metrics(tmp, dedup=True) as vm:
            yield broker.port, vm.url


# ---- edge: 500 devices --------------------------------------------------------------------

def run_edge(tmp: Path, devices: int, seconds: float) -> tuple[list[Row], dict[str, Any]]:
    """A real `lingtan edge` process polling `devices` at 1 Hz, beside bench/edge.py's
    baselines: raw pymodbus doing the same reads, raw paho publishing one QoS 1 message a poll."""
    import bench.edge as be

    print(f"edge: {devices} devices, {seconds:.0f} s each for raw pymodbus, the agent, raw paho",
          flush=True)
    sim = subprocess.Popen([sys.executable, be.__file__, "--serve", str(devices)],
                           stdout=subprocess.PIPE, cwd=ROOT)
    assert sim.stdout is not None
    try:
        ports = json.loads(sim.stdout.readline())
        raw = asyncio.run(be._raw(ports, seconds))
        with _broker_and_db(tmp, db=False) as (port, _):
            agent = _edge_process(tmp, ports, port, seconds)
            pub = be._paho(devices, seconds, port)
    finally:
        sim.kill()
        sim.wait()
    a_cost = 1000 * agent["cpu_s"] / max(agent["polls"], 1)
    r_cost = 1000 * raw["cpu_s"] / max(raw["polls"], 1)
    p_cost = 1000 * pub["cpu_s"] / max(pub["messages"], 1)
    rate = agent["polls"] / seconds
    floor = _import_floor_mb(FLOOR_MODULES["edge"])
    ok_polls = agent["missed"] == 0 and agent["polls"] >= devices * seconds
    rows = [
        Row("edge.polls", "edge", f"devices polled at 1 Hz ({devices} configured)",
            f"{rate:.1f} polls/s, {agent['missed']:.0f} missed",
            f"raw pymodbus {raw['polls'] / seconds:.1f} polls/s",
            f"{rate / max(raw['polls'] / seconds, 1e-9):.2f}x",
            ">= 500 devices, 0 missed", devices >= 500 and ok_polls,
            {"polls_per_s": rate, "missed": agent["missed"]}),
        Row("edge.cpu", "edge", "CPU per poll (3 reads, publish QoS 1)", f"{a_cost:.3f} ms",
            f"raw pymodbus {r_cost:.3f} ms", f"{a_cost / r_cost - 1:+.0%}",
            "<= +25 %", a_cost / r_cost - 1 <= 0.25,
            {"agent_ms": a_cost, "pymodbus_ms": r_cost}),
        Row("edge.cpu_floor", "edge", "CPU per poll vs reads + publishing",
            f"{a_cost:.3f} ms", f"pymodbus + paho {r_cost + p_cost:.3f} ms",
            f"{a_cost / (r_cost + p_cost) - 1:+.0%}", "", None,
            {"agent_ms": a_cost, "floor_ms": r_cost + p_cost}),
        Row("edge.rss", "memory", f"peak RSS, edge agent, {devices} devices",
            f"{agent['rss_mb']:.0f} MB", f"its imports, idle {floor:.0f} MB",
            f"{agent['rss_mb'] / floor:.1f}x", "bounded (no figure set)", None,
            {"rss_mb": agent["rss_mb"], "floor_mb": floor}),
    ]
    return rows, {"devices": devices, "seconds": seconds, "raw_pymodbus": raw, "agent": agent,
                  "raw_paho": pub, "import_floor_mb": floor}


def _edge_process(tmp: Path, ports: list[int], mqtt_port: int, seconds: float) -> dict[str, Any]:
    import bench.edge as be

    profile = tmp / "bench-three-reads.yaml"
    profile.write_text(yaml.safe_dump(be.BENCH_PROFILE))
    cfg = tmp / "edge.yaml"
    cfg.write_text(yaml.safe_dump({
        "site": {"id": "bench"},
        "broker": {"url": f"mqtt://127.0.0.1:{mqtt_port}"},
        "edge": {"agent_id": "bench-edge", "state_dir": str(tmp / "edge-state"),
                 "health_interval_s": 0,
                 "devices": [{"id": f"d{i}", "profile": str(profile), "interval_s": 1.0,
                              "timeout_s": 2, "retries": 0,
                              "transport": {"host": "127.0.0.1", "port": p}}
                             for i, p in enumerate(ports)]}}))
    watcher = Watcher(mqtt_port, ["lingtan/v1/bench/+/sample"])
    proc = _lingtan("edge", cfg, tmp / "edge.log")
    try:
        _wait_for(lambda: len(watcher.take()) >= len(ports), 60, "the agent's first polls",
                  [proc])
        time.sleep(2.0)  # every connection made, polls on their beat
        t0 = math.floor(time.time()) + 1
        time.sleep(max(0.0, t0 - time.time()))
        cpu0 = _cpu_s(proc.pid)
        time.sleep(seconds)
        cpu = _cpu_s(proc.pid) - cpu0
        time.sleep(2.0)  # the window's last Samples reach the broker
        rss = _proc_status(proc.pid, "VmHWM")
    finally:
        _stop(proc)
        watcher.close()
    lo, hi = t0 * 1000, (t0 + seconds) * 1000
    seen = {(orjson.loads(p)["device"], orjson.loads(p)["seq"]): orjson.loads(p)["ts"]
            for _, _, p in watcher.take()}
    polls = sum(1 for ts in seen.values() if lo <= ts < hi)
    return {"polls": polls, "missed": max(0, len(ports) * round(seconds) - polls), "cpu_s": cpu,
            "rss_mb": rss, "wall_s": seconds}


# ---- ingest -------------------------------------------------------------------------------

def run_ingest(tmp: Path, messages: int, values: int, devices: int, rate: float,
               seconds: float) -> tuple[list[Row], dict[str, Any]]:
    """bench/ingest.py's measurements: drains of one backlog by raw paho, ingest to
    VictoriaMetrics, ingest to SQLite; raw line-protocol writes; latency under a steady rate."""
    import bench.ingest as bi

    print(f"ingest: {messages} messages x {values} values from {devices} devices; latency at "
          f"{rate:.0f} msg/s for {seconds:.0f} s", flush=True)
    with _broker_and_db(tmp, db=True) as (port, vm):
        assert vm is not None
        bi._session(port, "bench-raw")
        bi._fill(port, messages, devices, values)
        paho_s = bi.raw_paho(port, messages)
        lines_s = bi.raw_lines(vm, messages, devices, values)
        bi._session(port, "bench-vm")
        bi._fill(port, messages, devices, values)
        vm_s, vm_cpu = bi.ingest_drain(port, tmp, "bench-vm", vm, messages, values)
        bi._session(port, "bench-sqlite")
        bi._fill(port, messages, devices, values)
        sq_s, sq_cpu = bi.ingest_drain(port, tmp, "bench-sqlite", None, messages, values)
        lags = bi.ingest_latency(port, tmp, "bench-latency", vm, rate, seconds, devices, values)
    n = messages * values
    paho_rate, lines_rate, vm_rate, sq_rate = n / paho_s, n / lines_s, n / vm_s, n / sq_s
    p50, p99 = _pct(lags, 0.5), _pct(lags, 0.99)
    rows = [
        Row("ingest.vm", "ingest", "values/s, QoS 1 -> VictoriaMetrics, durable",
            _fmt_rate(vm_rate), f"raw paho drain {_fmt_rate(paho_rate)}",
            f"{vm_rate / paho_rate:.2f}x", ">= 200,000/s", vm_rate >= 200_000,
            {"values_per_s": vm_rate, "raw_paho": paho_rate}),
        Row("ingest.vm_lines", "ingest", "values/s, the same, against the database alone",
            _fmt_rate(vm_rate), f"raw line protocol {_fmt_rate(lines_rate)}",
            f"{vm_rate / lines_rate:.2f}x", "", None,
            {"values_per_s": vm_rate, "raw_lines": lines_rate}),
        Row("ingest.sqlite", "ingest", "values/s, QoS 1 -> embedded SQLite, durable",
            _fmt_rate(sq_rate), f"raw paho drain {_fmt_rate(paho_rate)}",
            f"{sq_rate / paho_rate:.2f}x", "", None,
            {"values_per_s": sq_rate, "raw_paho": paho_rate}),
        Row("ingest.latency", "ingest",
            f"sample -> stored at {rate * values:,.0f} values/s, p50 / p99",
            f"{p50:.0f} / {p99:.0f} ms", "", "", "p99 < 1000 ms", p99 < 1000,
            {"p50_ms": p50, "p99_ms": p99}),
    ]
    return rows, {"messages": messages, "values_per_message": values, "devices": devices,
                  "values_per_s": {"raw_paho": paho_rate, "raw_lines": lines_rate,
                                   "vm": vm_rate, "sqlite": sq_rate},
                  "cpu_us_per_value": {"vm": 1e6 * vm_cpu / n, "sqlite": 1e6 * sq_cpu / n},
                  "latency_ms": {"rate_msg_s": rate, "p50": p50, "p99": p99,
                                 "max": lags[-1] if lags else math.nan}}


# ---- rules --------------------------------------------------------------------------------

def run_rules(meters: int, seconds: int, values: int) -> tuple[list[Row], dict[str, Any]]:
    """bench/rules.py's replay: values/s through the engine into a SQLite ledger, beside the
    bare delta-and-split arithmetic."""
    import bench.rules as br

    print(f"rules: {meters} meters x {seconds} s x {values} values replayed", flush=True)
    samples = br._samples(meters, seconds, values)
    n = len(samples) * values
    bare = n / br.bare(samples)
    engine = n / br.engine(samples, meters)
    rows = [Row("rules.replay", "rules", "values/s through the engine (one core)",
                _fmt_rate(engine), f"bare arithmetic {_fmt_rate(bare)}",
                f"{engine / bare:.2f}x", ">= 500,000/s", engine >= 500_000,
                {"values_per_s": engine, "bare": bare})]
    return rows, {"samples": len(samples), "values_per_sample": values,
                  "values_per_s": {"bare": bare, "engine": engine}}


# ---- end to end ---------------------------------------------------------------------------

async def _serve_meters(n: int) -> None:
    """A separate process: `n` simulated SDM630 meters with running counters, one port each."""
    from collectors.profile import register_map
    from lingtan.simulator import FactoryLoad, SimulatedMeter

    profile = register_map("eastron-sdm630")
    meters = [SimulatedMeter(profile, FactoryLoad(base_kw=20 + i % 7, shift_kw=40, seed=i,
                                                  energy_kwh=1000.0 + i))
              for i in range(n)]
    ports = [await m.start() for m in meters]
    print(json.dumps(ports), flush=True)
    await asyncio.Event().wait()


def _plant_config(tmp: Path, ports: list[int], mqtt_port: int, vm: str) -> Path:
    meters: list[dict[str, Any]] = [{"device": "grid-main", "role": "grid_import"}]
    meters += [{"device": f"m{i:03d}", "role": "submeter", "area": f"area-{i % 8}"}
               for i in range(1, len(ports))]
    devices = [{"id": m["device"], "profile": "eastron-sdm630", "interval_s": 1.0,
                "timeout_s": 1.0, "transport": {"host": "127.0.0.1", "port": p}}
               for m, p in zip(meters, ports, strict=True)]
    cfg = tmp / "plant.yaml"
    # what ships: default batching, republish cadence and alert rules
    cfg.write_text(yaml.safe_dump({
        "site": {"id": "plant", "timezone": "Asia/Shanghai", "region": "CN-HB"},
        "broker": {"url": f"mqtt://127.0.0.1:{mqtt_port}"},
        "edge": {"agent_id": "plant-edge", "state_dir": str(tmp / "edge-state"),
                 "devices": devices},
        "ingest": {"client_id": "plant-ingest", "state_path": str(tmp / "ingest-state.sqlite"),
                   "influxdb": {"url": vm}},
        "rules": {"client_id": "plant-rules", "ledger": str(tmp / "ledger.sqlite"),
                  "meters": meters},
        "alerts": {"state": str(tmp / "alerts.sqlite")},
    }))
    return cfg


def run_e2e(tmp: Path, meters: int, seconds: float) -> tuple[list[Row], dict[str, Any]]:
    """The plant through every process; latencies from the meter read to what is published."""
    print(f"e2e: {meters} meters at 1 Hz through edge, broker, ingest, rules; {seconds:.0f} s "
          "measured", flush=True)
    sim = subprocess.Popen([sys.executable, __file__, "--serve-meters", str(meters)],
                           stdout=subprocess.PIPE, cwd=ROOT)
    assert sim.stdout is not None
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        ports = json.loads(sim.stdout.readline())
        with _broker_and_db(tmp, db=True) as (port, vm):
            assert vm is not None
            cfg = _plant_config(tmp, ports, port, vm)
            watcher = Watcher(port, ["lingtan/v1/plant/+/sample", "lingtan/v1/plant/derived"])
            for name in ("ingest", "rules"):
                procs[name] = _lingtan(name, cfg, tmp / f"{name}.log")
            _wait_for(lambda: all("subscribed to" in (tmp / f"{n}.log").read_text()
                                  for n in ("ingest", "rules")), 60,
                      "ingest and rules to subscribe", list(procs.values()))
            procs["edge"] = _lingtan("edge", cfg, tmp / "edge.log")

            def site_figures() -> int:
                return sum(1 for _, t, p in watcher.take()
                           if t.endswith("/derived") and b'"device":"site"' in p)

            _wait_for(lambda: site_figures() >= 3, 90, "the first plant figures",
                      list(procs.values()))
            time.sleep(5.0)  # past the start: every meter polled on its beat
            t0 = time.time() * 1000
            cpu0 = {n: _cpu_s(p.pid) for n, p in procs.items()}
            time.sleep(seconds)
            t1 = time.time() * 1000
            cpu = {n: _cpu_s(p.pid) - cpu0[n] for n, p in procs.items()}
            time.sleep(4.0)  # the figures that account for the window's last readings
            rss = {n: _proc_status(p.pid, "VmHWM") for n, p in procs.items()}
            messages = watcher.take()
            watcher.close()
            stored = _stored_readings(vm, t0, t1)
    finally:
        for p in procs.values():
            _stop(p)
        sim.kill()
        sim.wait()
    return _e2e_rows(messages, t0, t1, meters, seconds, rss, cpu, stored)


def _stored_readings(vm: str, t0: float, t1: float) -> int:
    import urllib.parse
    import urllib.request

    urllib.request.urlopen(f"{vm}/internal/force_flush", timeout=10).read()
    q = urllib.parse.urlencode({"match[]": '{__name__="meter_energy_import_kwh",site="plant"}',
                                "start": f"{t0 / 1000:.3f}", "end": f"{t1 / 1000:.3f}"})
    body = urllib.request.urlopen(f"{vm}/api/v1/export?{q}", timeout=30).read()
    return sum(len(orjson.loads(ln)["values"]) for ln in body.splitlines() if ln.strip())


def _e2e_rows(messages: list[tuple[float, str, bytes]], t0: float, t1: float, meters: int,
              seconds: float, rss: dict[str, float], cpu: dict[str, float],
              stored: int) -> tuple[list[Row], dict[str, Any]]:
    """Latencies of the grid meter's reads, the one meter Scope 2 comes from.

    A site figure accounts for a grid reading once its energy today reaches the reading's
    counter minus the day's first counter (the figure's Scope 2 is that energy times the grid
    factor): the earliest figure published that does is the reading's emission figure. The
    other meters (sub-meters) load every process the same way but move no emission figure.
    """
    grid: list[tuple[float, float, float]] = []  # (read time, arrival, counter)
    figures: list[tuple[float, float, float]] = []  # (arrival, energy today, as of)
    readings = 0
    first_counter: float | None = None
    for arrived, topic, payload in messages:
        body = orjson.loads(payload)
        values = body["values"]
        if topic.endswith("/derived"):
            if body["device"] == "site" and "scope2_location_today_kgco2e" in values:
                figures.append((arrived, values["energy_today_kwh"], body["ts"]))
            continue
        if "energy_import_kwh" not in values:
            continue  # health Samples
        if body["device"] == "grid-main":
            if first_counter is None or body["seq"] == 0:
                first_counter = values["energy_import_kwh"]
            if t0 <= body["ts"] < t1:
                grid.append((body["ts"], arrived, values["energy_import_kwh"]))
        if t0 <= body["ts"] < t1:
            readings += 1
    figures.sort()
    hop, total, rules, complete = [], [], [], []
    uncovered = 0
    for ts, arrived, counter in grid:
        assert first_counter is not None
        need = counter - first_counter
        published = next((r for r, energy, _ in figures
                          if energy >= need - 1e-6 * max(1.0, need)), None)
        as_of = next((r for r, _, a in figures if a >= ts), None)
        if published is None or as_of is None:
            uncovered += 1
            continue
        hop.append(arrived - ts)
        total.append(published - ts)
        rules.append(max(0.0, published - arrived))
        complete.append(as_of - ts)
    for lags in (hop, total, rules, complete):
        lags.sort()
    expected = meters * round(seconds)
    e2e_p99, rules_p99 = _pct(total, 0.99), _pct(rules, 0.99)
    hop_txt = f"broker hop {_pct(hop, 0.5):.0f} / {_pct(hop, 0.99):.0f} ms"
    n = f"{len(total)} grid reads"
    floors = {k: _import_floor_mb(FLOOR_MODULES[k]) for k in ("ingest", "rules")}
    rows = [
        Row("rules.live", "rules", f"sample on broker -> plant figure, p50 / p99 ({n})",
            f"{_pct(rules, 0.5):.0f} / {rules_p99:.0f} ms", "", "", "p99 < 1000 ms",
            rules_p99 < 1000, {"p50_ms": _pct(rules, 0.5), "p99_ms": rules_p99}),
        Row("e2e.latency", "end to end",
            f"meter read -> plant emission figure, p50 / p99 ({meters} meters at 1 Hz, {n})",
            f"{_pct(total, 0.5):.0f} / {e2e_p99:.0f} ms", hop_txt,
            f"{_pct(total, 0.99) / max(_pct(hop, 0.99), 1e-9):.1f}x", "p99 < 1000 ms",
            e2e_p99 < 1000, {"p50_ms": _pct(total, 0.5), "p99_ms": e2e_p99,
                             "hop_p50_ms": _pct(hop, 0.5), "hop_p99_ms": _pct(hop, 0.99)}),
        Row("e2e.count", "end to end", "readings in the window: seen / stored / expected",
            f"{readings} / {stored} / {expected}", "", "", "all",
            stored >= expected and readings >= expected,
            {"seen": readings, "stored": stored, "expected": expected}),
        Row("ingest.rss", "memory", f"peak RSS, ingest, {meters} meters at 1 Hz",
            f"{rss['ingest']:.0f} MB", f"its imports, idle {floors['ingest']:.0f} MB",
            f"{rss['ingest'] / floors['ingest']:.1f}x", "bounded (no figure set)", None,
            {"rss_mb": rss["ingest"], "floor_mb": floors["ingest"]}),
        Row("rules.rss", "memory", f"peak RSS, rules, {meters} meters at 1 Hz",
            f"{rss['rules']:.0f} MB", f"its imports, idle {floors['rules']:.0f} MB",
            f"{rss['rules'] / floors['rules']:.1f}x", "bounded (no figure set)", None,
            {"rss_mb": rss["rules"], "floor_mb": floors["rules"]}),
    ]
    return rows, {"meters": meters, "seconds": seconds, "readings": readings, "stored": stored,
                  "expected": expected, "figures": len(figures), "grid_reads": len(total),
                  "uncovered": uncovered,
                  "latency_ms": {
                      "hop": {"p50": _pct(hop, 0.5), "p99": _pct(hop, 0.99)},
                      "read_to_figure": {"p50": _pct(total, 0.5), "p99": e2e_p99},
                      "sample_to_figure": {"p50": _pct(rules, 0.5), "p99": rules_p99},
                      # the figure's own as-of time reaches the read: every meter has reported
                      # past it (the slowest meter of the next poll sets it)
                      "read_to_as_of": {"p50": _pct(complete, 0.5), "p99": _pct(complete, 0.99)}},
                  "peak_rss_mb": rss, "cpu_s_in_window": cpu}


# ---- main ---------------------------------------------------------------------------------

def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=ROOT, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _previous(path: Path) -> dict[str, Row]:
    data = json.loads(path.read_text())
    return {r["key"]: Row(**r) for r in data["rows"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections ({', '.join(SECTIONS)})")
    ap.add_argument("--quick", action="store_true", help="shorter windows: a smoke run")
    ap.add_argument("--compare", type=Path, help="a previous results JSON to print beside")
    ap.add_argument("--edge-devices", type=int, default=500)
    ap.add_argument("--plant-meters", type=int, default=200)
    ap.add_argument("--serve-meters", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_meters:
        asyncio.run(_serve_meters(args.serve_meters))
        return
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    previous = _previous(args.compare) if args.compare else None
    q = args.quick
    started = time.time()
    load0 = os.getloadavg()
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="lingtan-bench-run-") as tmpdir:
        tmp = Path(tmpdir)
        for section in SECTIONS:
            if section not in only:
                continue
            where = tmp / section
            where.mkdir()
            if section == "edge":
                r, raw["edge"] = run_edge(where, args.edge_devices, 5.0 if q else 10.0)
            elif section == "ingest":
                r, raw["ingest"] = run_ingest(where, 5000 if q else 20000, 40, 200, 5000.0,
                                              4.0 if q else 10.0)
            elif section == "rules":
                r, raw["rules"] = run_rules(200, 60 if q else 300, 40)
            else:
                r, raw["e2e"] = run_e2e(where, args.plant_meters, 15.0 if q else 60.0)
            rows += r
    order = {s: i for i, s in enumerate(("edge", "ingest", "rules", "end to end", "memory"))}
    rows.sort(key=lambda r: order[r.section])
    elapsed = time.time() - started
    print()
    print(f"lingtan bench/run, commit {_git_commit()}, {os.cpu_count()} cores, load "
          f"{load0[0]:.1f} at start, {elapsed / 60:.1f} min{' (--quick)' if q else ''}")
    _print_table(rows, previous)
    print("\nratios are against the baseline measured in this run; absolute figures move with "
          "the machine's load (see bench/README.md)")
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    result = {"when": stamp, "commit": _git_commit(), "cores": os.cpu_count(),
              "load_at_start": load0, "load_at_end": os.getloadavg(), "quick": q,
              "elapsed_s": elapsed, "rows": [asdict(r) for r in rows], "raw": raw}
    text = json.dumps(result, indent=2, default=float)
    (RESULTS / "run.json").write_text(text)
    (RESULTS / f"run-{stamp}.json").write_text(text)
    print(f"results: {RESULTS / 'run.json'} and run-{stamp}.json")


if __name__ == "__main__":
    main()
