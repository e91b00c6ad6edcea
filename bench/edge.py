"""Edge agent throughput: devices polled at 1 Hz by one agent process, against raw pymodbus.

A separate process serves N simulated devices (one TCP port each, a 3-read register map).
In this process, first plain pymodbus clients poll them (the baseline: 3 requests per device
per second), then the lingtan edge agent polls the same devices through its outbox to a real
Mosquitto. Figures: polls per second, missed and failed polls, CPU seconds per poll, and the
agent's overhead over raw pymodbus (target: <= 25 %, 500 devices with no missed polls).

    python bench/edge.py [--devices 100 250 500] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

BENCH_PROFILE = {
    "name": "bench-three-reads",
    "source": "a benchmark map: three separate blocks, read in three requests",
    "registers": [
        {"quantity": "voltage_l1_v", "address": 0, "function": 4, "type": "float32"},
        {"quantity": "voltage_l2_v", "address": 2, "function": 4, "type": "float32"},
        {"quantity": "voltage_l3_v", "address": 4, "function": 4, "type": "float32"},
        {"quantity": "current_l1_a", "address": 6, "function": 4, "type": "float32"},
        {"quantity": "active_power_kw", "address": 100, "function": 4, "type": "float32",
         "scale": 0.001},
        {"quantity": "power_factor", "address": 102, "function": 4, "type": "float32"},
        {"quantity": "energy_import_kwh", "address": 200, "function": 4, "type": "float32"},
        {"quantity": "energy_export_kwh", "address": 202, "function": 4, "type": "float32"},
    ],
}


# ---- the device side (a separate process) -------------------------------------------------

async def _serve(n: int) -> None:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    servers = []
    for _ in range(n):
        dev = SimDevice(id=1, simdata=SimData(address=0, count=210, values=0x4366,
                                              datatype=DataType.REGISTERS))
        s = ModbusTcpServer(dev, address=("127.0.0.1", 0))
        await s.serve_forever(background=True)
        servers.append(s)
    ports = [s.transport.sockets[0].getsockname()[1] for s in servers]
    print(json.dumps(ports), flush=True)
    await asyncio.Event().wait()


# ---- the polling side ---------------------------------------------------------------------

async def _raw(ports: list[int], seconds: float) -> dict[str, float]:
    from pymodbus.client import AsyncModbusTcpClient

    clients = [AsyncModbusTcpClient("127.0.0.1", port=p, timeout=2, retries=0,
                                    reconnect_delay=0) for p in ports]
    for c in clients:
        await c.connect()
    stats = {"polls": 0, "failed": 0, "missed": 0}

    async def loop(c: AsyncModbusTcpClient, end: float) -> None:
        tick = math.floor(time.time()) + 1.0
        while tick < end:
            await asyncio.sleep(max(0.0, tick - time.time()))
            try:
                for addr, count in ((0, 8), (100, 4), (200, 4)):
                    await c.read_input_registers(addr, count=count, device_id=1)
                stats["polls"] += 1
            except Exception:
                stats["failed"] += 1
            tick += 1.0
            if time.time() > tick:
                skipped = math.floor(time.time() - tick) + 1
                stats["missed"] += skipped
                tick += skipped

    cpu0, wall0 = time.process_time(), time.time()
    end = math.floor(wall0) + 1.0 + seconds
    await asyncio.gather(*(loop(c, end) for c in clients))
    cpu = time.process_time() - cpu0
    for c in clients:
        c.close()
    return {**stats, "cpu_s": cpu, "wall_s": time.time() - wall0}


async def _agent(ports: list[int], seconds: float, mqtt_port: int, state: Path
                 ) -> dict[str, float]:
    from collectors.agent import EdgeAgent
    from collectors.config import EdgeConfig
    from telemetry.config import BrokerConfig, SiteInfo

    state.mkdir(parents=True, exist_ok=True)
    profile = state / "bench-three-reads.yaml"
    profile.write_text(yaml.safe_dump(BENCH_PROFILE))
    edge = EdgeConfig.model_validate({
        "agent_id": "bench-edge", "state_dir": str(state / "edge"), "health_interval_s": 0,
        "devices": [{"id": f"d{i}", "profile": str(profile), "interval_s": 1.0, "timeout_s": 2,
                     "retries": 0, "transport": {"host": "127.0.0.1", "port": p}}
                    for i, p in enumerate(ports)]})
    agent = EdgeAgent(SiteInfo(id="bench"), BrokerConfig(url=f"mqtt://127.0.0.1:{mqtt_port}"),
                      edge)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await asyncio.sleep(2.0)  # connect everything, first polls
    base = {k: sum(getattr(h, k) for h in agent.health.values()) for k in ("ok", "failures",
                                                                           "missed")}
    cpu0, wall0 = time.process_time(), time.time()
    await asyncio.sleep(seconds)
    cpu = time.process_time() - cpu0
    now = {k: sum(getattr(h, k) for h in agent.health.values()) for k in ("ok", "failures",
                                                                          "missed")}
    stop.set()
    await task
    return {"polls": now["ok"] - base["ok"], "failed": now["failures"] - base["failures"],
            "missed": now["missed"] - base["missed"], "cpu_s": cpu,
            "wall_s": time.time() - wall0}


def _paho(n: int, seconds: float, mqtt_port: int) -> dict[str, float]:
    """Raw paho: n QoS 1 messages of a Sample's size per second, waiting for every PUBACK."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw-paho",
                    protocol=paho.MQTTv5)
    c.connect("127.0.0.1", mqtt_port)
    c.loop_start()
    payload = b'{"site":"bench","device":"d0","seq":1,"ts":1764000000000,"values":{' + b",".join(
        b'"q%d":%d.5' % (i, i) for i in range(8)) + b"}}"
    sent = 0
    cpu0, wall0 = time.process_time(), time.time()
    end = wall0 + seconds
    while time.time() < end:
        tick = time.time()
        infos = [c.publish(f"lingtan/v1/bench/d{i}/sample", payload, qos=1) for i in range(n)]
        for info in infos:
            info.wait_for_publish(5)
        sent += n
        time.sleep(max(0.0, tick + 1.0 - time.time()))
    cpu = time.process_time() - cpu0
    c.disconnect()
    c.loop_stop()
    return {"messages": sent, "cpu_s": cpu, "wall_s": time.time() - wall0}


def _mosquitto(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from tests.servers import MOSQUITTO_CONF, free_port

    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(MOSQUITTO_CONF.format(port=port))
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc, port


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, nargs="+", default=[100, 250, 500])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="lingtan-bench-") as tmp:
        broker, mqtt_port = _mosquitto(Path(tmp))
        try:
            for n in args.devices:
                sim = subprocess.Popen([sys.executable, __file__, "--serve", str(n)],
                                       stdout=subprocess.PIPE, env={**os.environ})
                assert sim.stdout is not None
                ports = json.loads(sim.stdout.readline())
                try:
                    raw = asyncio.run(_raw(ports, args.seconds))
                    agent = asyncio.run(_agent(ports, args.seconds, mqtt_port,
                                               Path(tmp) / f"n{n}"))
                finally:
                    sim.kill()
                    sim.wait()
                rows.append((n, raw, agent, _paho(n, args.seconds, mqtt_port)))
        finally:
            broker.kill()
    print(f"edge agent vs raw pymodbus and raw paho, 3 reads per device per second, "
          f"{args.seconds:.0f} s each; CPU ms per poll (one core = 1000 ms/s)")
    print(f"{'devices':>8} {'polls/s':>8} {'missed':>7} {'failed':>7} {'agent':>7} "
          f"{'pymodbus':>9} {'paho QoS1':>10} {'vs pymodbus':>12} {'vs both':>8}")
    for n, raw, agent, pub in rows:
        a_cost = 1000 * agent["cpu_s"] / max(agent["polls"], 1)
        r_cost = 1000 * raw["cpu_s"] / max(raw["polls"], 1)
        p_cost = 1000 * pub["cpu_s"] / max(pub["messages"], 1)
        print(f"{n:>8} {agent['polls'] / agent['wall_s']:>8.1f} {agent['missed']:>7.0f} "
              f"{agent['failed']:>7.0f} {a_cost:>7.3f} {r_cost:>9.3f} {p_cost:>10.3f} "
              f"{a_cost / r_cost - 1:>12.0%} {a_cost / (r_cost + p_cost) - 1:>8.0%}")
    print("target: 500 devices at 1 Hz with no missed polls; overhead over raw pymodbus <= 25 %")
    print("'vs both': over raw pymodbus reads plus raw paho QoS 1 publishing of one message a "
          "poll, the floor for any Python agent that polls and publishes")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "edge.json").write_text(json.dumps(
        [{"devices": n, "raw_pymodbus": raw, "agent": agent, "raw_paho": pub}
         for n, raw, agent, pub in rows], indent=2))


if __name__ == "__main__":
    main()
