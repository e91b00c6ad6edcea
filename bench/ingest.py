"""Ingest throughput and latency, against raw paho and raw line-protocol writes in the same run.

Servers: a real Mosquitto and a real VictoriaMetrics (InfluxDB line protocol at /api/v2/write).
Messages: one Sample each, --values values (20-50), from --devices devices.

  1. raw paho: a QoS 1 subscriber drains a backlog of N messages the broker holds for it;
  2. raw line protocol: the same Samples as pre-built lines, written with influxdb-client's
     synchronous write API in requests of 5000 lines;
  3. ingest -> VictoriaMetrics: ingest drains the same backlog (validate, dedupe, write,
     acknowledge), every value durably written before the acknowledgement;
  4. ingest -> embedded SQLite: the same;
  5. latency: a publisher at each --rate messages/s for --seconds; from each Sample's time (set when
     published) to its durable write: p50, p99.
Figures: values/s (and the ratio to the baselines). Target: >= 200,000 values/s, p99 < 1 s.

    python bench/ingest.py [--messages 20000] [--values 40] [--rate 1000 5000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

TOPIC = "lingtan/v1/b1/{device}/sample"


def _quantities(n: int) -> list[str]:
    from telemetry.quantities import vocabulary

    vocab = vocabulary()
    names = vocab.names()[:n]
    if len(names) < n:
        raise SystemExit(f"the vocabulary has only {len(names)} quantities; use --values <= that")
    return names


def _payload(device: int, seq: int, ts: int, names: list[str]) -> bytes:
    return orjson.dumps({"site": "b1", "device": f"d{device}", "seq": seq, "ts": ts,
                         "values": {q: 1000.0 + seq + i / 8 for i, q in enumerate(names)}})


def _session(port: int, client_id: str) -> None:
    """Create a persistent session subscribed to the bench topics, so the broker queues for it."""
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    done = threading.Event()
    c.on_subscribe = lambda *_a: done.set()
    c.loop_start()
    c.subscribe("lingtan/v1/b1/+/sample", qos=1)
    done.wait(10)
    c.disconnect()
    c.loop_stop()


def _fill(port: int, messages: int, devices: int, values: int, rate: float = 0.0) -> None:
    """Publish (in a separate process) `messages` Samples at QoS 1; `rate` 0 = as fast as it can."""
    subprocess.run([sys.executable, __file__, "--publish", str(port), str(messages),
                    str(devices), str(values), str(rate)], check=True)


def _publish(port: int, messages: int, devices: int, values: int, rate: float) -> None:
    names = _quantities(values)
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub", protocol=paho.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    seqs = [0] * devices
    last_ts = [0] * devices  # a device's reads a millisecond apart at least, as a meter's are
    infos = []
    start = time.monotonic()
    for n in range(messages):
        d = n % devices
        ts = last_ts[d] = max(time.time_ns() // 1_000_000, last_ts[d] + 1)
        infos.append(c.publish(TOPIC.format(device=f"d{d}"), _payload(d, seqs[d], ts, names),
                               qos=1))
        seqs[d] += 1
        if rate:
            time.sleep(max(0.0, start + (n + 1) / rate - time.monotonic()))
    for i in infos:
        i.wait_for_publish(60)
    c.disconnect()
    c.loop_stop()


def raw_paho(port: int, messages: int) -> float:
    """Seconds for a plain paho QoS 1 subscriber to drain `messages` held by the broker."""
    got = 0
    done = threading.Event()

    def on_message(_c: paho.Client, _u: object, _m: paho.MQTTMessage) -> None:
        nonlocal got
        got += 1
        if got == messages:
            done.set()

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=paho.MQTTv5)
    c.on_message = on_message
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = 10000
    start = time.perf_counter()
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.loop_start()
    done.wait(600)
    elapsed = time.perf_counter() - start
    c.disconnect()
    c.loop_stop()
    return elapsed


def raw_lines(url: str, messages: int, devices: int, values: int) -> float:
    """Seconds to write the Samples as pre-built lines, 5000 per synchronous request."""
    from influxdb_client.client.influxdb_client import InfluxDBClient
    from influxdb_client.client.write_api import SYNCHRONOUS
    from influxdb_client.domain.write_precision import WritePrecision

    names = _quantities(values)
    t0 = 1_700_000_000_000
    lines = []
    for n in range(messages):
        d, seq = n % devices, n // devices
        fields = ",".join(f"{q}={1000.0 + seq + i / 8!r}" for i, q in enumerate(names))
        lines.append(f"raw,site=b1,device=d{d},quality=good {fields},seq={seq}i {t0 + seq}")
    client = InfluxDBClient(url=url, token="", org="b")
    api = client.write_api(write_options=SYNCHRONOUS)
    start = time.perf_counter()
    for i in range(0, len(lines), 5000):
        api.write(bucket="b", org="b", record="\n".join(lines[i:i + 5000]),
                  write_precision=WritePrecision.MS)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - start
    client.close()  # type: ignore[no-untyped-call]
    return elapsed


def _service(port: int, tmp: Path, name: str, influx: str | None) -> object:
    from ingest.config import InfluxConfig, IngestConfig, SqliteConfig
    from ingest.service import IngestService
    from telemetry.config import BrokerConfig, SiteInfo

    cfg = IngestConfig(
        client_id=name, sites=["b1"], batch_messages=5000, batch_wait_s=0.05,
        max_pending=20000, health_interval_s=3600, state_path=tmp / f"{name}.state",
        influxdb=None if influx is None else InfluxConfig(url=influx),
        sqlite=SqliteConfig(path=tmp / f"{name}.sqlite") if influx is None else None,
    )
    return IngestService(SiteInfo(id="b1"), BrokerConfig(url=f"mqtt://127.0.0.1:{port}"), cfg)


def ingest_drain(port: int, tmp: Path, name: str, influx: str | None, messages: int,
                 values: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for ingest to store the held backlog."""
    svc = _service(port, tmp, name, influx)
    stop = threading.Event()
    t = threading.Thread(target=svc.run, args=(stop,))  # type: ignore[attr-defined]
    cpu0 = time.process_time()
    start = time.perf_counter()
    t.start()
    while svc.stats.values_stored < messages * values:  # type: ignore[attr-defined]
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    stop.set()
    t.join()
    return elapsed, cpu


def ingest_latency(port: int, tmp: Path, name: str, influx: str, rate: float, seconds: float,
                   devices: int, values: int) -> list[float]:
    """Milliseconds from each Sample's time to its durable write, under a steady load."""
    from ingest.service import IngestService

    lags: list[float] = []
    svc = _service(port, tmp, name, influx)
    assert isinstance(svc, IngestService)
    account = svc._account

    def recording(batch, stored, *rest):  # type: ignore[no-untyped-def]
        now = time.time_ns() / 1e6
        lags.extend(now - s.ts for s in stored)
        account(batch, stored, *rest)

    svc._account = recording  # type: ignore[method-assign]
    stop = threading.Event()
    t = threading.Thread(target=svc.run, args=(stop,))
    t.start()
    svc.consumer.wait_connected(10)
    messages = int(rate * seconds)
    _fill(port, messages, devices, values, rate)
    while svc.stats.samples_stored < messages:
        time.sleep(0.01)
    stop.set()
    t.join()
    return sorted(lags)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--values", type=int, default=40)
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--rate", type=float, nargs="+", default=[1000.0, 5000.0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--publish", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.publish:
        port, messages, devices, values, rate = args.publish
        _publish(int(port), int(messages), int(devices), int(values), float(rate))
        return
    from tests.servers import mosquitto, victoria_metrics

    n, v = args.messages, args.values
    with tempfile.TemporaryDirectory(prefix="lingtan-bench-") as tmpdir:
        tmp = Path(tmpdir)
        (tmp / "mq").mkdir()
        with mosquitto(tmp / "mq") as broker, victoria_metrics(tmp) as vm:
            port = broker.port
            _session(port, "bench-raw")
            _fill(port, n, args.devices, v)
            paho_s = raw_paho(port, n)
            lines_s = raw_lines(vm.url, n, args.devices, v)
            _session(port, "bench-vm")
            _fill(port, n, args.devices, v)
            vm_s, vm_cpu = ingest_drain(port, tmp, "bench-vm", vm.url, n, v)
            _session(port, "bench-sqlite")
            _fill(port, n, args.devices, v)
            sq_s, sq_cpu = ingest_drain(port, tmp, "bench-sqlite", None, n, v)
            latency = {rate: ingest_latency(port, tmp, f"bench-latency-{rate:.0f}", vm.url, rate,
                                            args.seconds, args.devices, v)
                       for rate in args.rate}

    def pct(lags: list[float], p: float) -> float:
        return lags[min(len(lags) - 1, int(p * len(lags)))]

    rows = {
        "raw paho QoS 1 (drain)": n * v / paho_s,
        "raw line protocol -> VM": n * v / lines_s,
        "ingest -> VictoriaMetrics": n * v / vm_s,
        "ingest -> embedded SQLite": n * v / sq_s,
    }
    print(f"ingest: {n} messages x {v} values from {args.devices} devices, QoS 1 "
          "(values/s; ratio to raw paho)")
    for name, rate in rows.items():
        print(f"  {name:<28} {rate:>12,.0f}   {rate / rows['raw paho QoS 1 (drain)']:>5.2f}x")
    print(f"  ingest CPU: {1e6 * vm_cpu / (n * v):.2f} us/value to VM, "
          f"{1e6 * sq_cpu / (n * v):.2f} us/value to SQLite (this process, all threads)")
    for rate, lags in latency.items():
        print(f"latency sample time -> durable write at {rate:.0f} msg/s "
              f"({rate * v:,.0f} values/s) for {args.seconds:.0f} s: "
              f"p50 {pct(lags, 0.5):.0f} ms, p99 {pct(lags, 0.99):.0f} ms, max {lags[-1]:.0f} ms")
    print("target: >= 200,000 values/s per ingest process; p99 < 1000 ms")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "ingest.json").write_text(json.dumps({
        "messages": n, "values_per_message": v, "devices": args.devices,
        "values_per_s": rows,
        "cpu_us_per_value": {"vm": 1e6 * vm_cpu / (n * v), "sqlite": 1e6 * sq_cpu / (n * v)},
        "latency_ms": [{"rate_msg_s": rate, "p50": pct(lags, 0.5), "p99": pct(lags, 0.99),
                        "max": lags[-1]} for rate, lags in latency.items()],
    }, indent=2))


if __name__ == "__main__":
    main()
